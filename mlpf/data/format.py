"""The Delphes particle-flow dataset format (Zenodo record 4559324), defined once.

A file is a bz2-compressed pickle of ``{"X": [...], "ygen": [...], "ycand": [...]}``:
one array per event in each list.

X, shape (n_elements, 12), by element type in column 0:
    tower (1): [1, Et, eta, sin phi, cos phi, E, E_em, E_had, 0, 0, 0, 0]
    track (2): [2, pt, eta, sin phi, cos phi, p, eta_outer, sin phi_outer,
                cos phi_outer, charge, is_gen_muon, is_gen_electron]
ygen / ycand, shape (n_elements, 7): [class, charge, pt, eta, sin phi, cos phi, E],
    all zeros where the element has no target particle.
Classes: 0 none, 1 charged hadron, 2 neutral hadron, 3 photon, 4 electron, 5 muon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

X_COLUMNS = (
    "type", "pt_or_et", "eta", "sin_phi", "cos_phi", "p_or_e",
    "f6", "f7", "f8", "f9", "f10", "f11",
)  # fmt: skip
# Column meaning of f6..f11: tower (E_em, E_had, 0, 0, 0, 0);
# track (eta_outer, sin phi_outer, cos phi_outer, charge, is_gen_muon, is_gen_electron).
Y_COLUMNS = ("cls", "charge", "pt", "eta", "sin_phi", "cos_phi", "energy")
N_X = len(X_COLUMNS)
N_Y = len(Y_COLUMNS)
KEYS = ("X", "ygen", "ycand")

ELEM_TOWER = 1
ELEM_TRACK = 2
ELEM_TYPES = (ELEM_TOWER, ELEM_TRACK)

CLASS_NAMES = ("none", "ch.had", "n.had", "photon", "electron", "muon")
N_CLASSES = len(CLASS_NAMES)
CLS_NONE, CLS_CH_HAD, CLS_N_HAD, CLS_PHOTON, CLS_ELECTRON, CLS_MUON = range(N_CLASSES)
CHARGED_CLASSES = (CLS_CH_HAD, CLS_ELECTRON, CLS_MUON)


@dataclass(frozen=True)
class Event:
    """One event: X (n, 12), ygen (n, 7), ycand (n, 7), all float32."""

    X: np.ndarray
    ygen: np.ndarray
    ycand: np.ndarray

    def __len__(self) -> int:
        return self.X.shape[0]


def pdg_to_class(pdg: int, charge: float) -> int:
    """Target class of a generator particle from its PDG id and charge (as in the dataset).

    Photons, electrons and muons keep their identity; any other charged particle is a charged
    hadron, any other neutral one a neutral hadron. The caller turns charged particles outside
    the tracker into neutral hadrons.
    """
    a = abs(int(pdg))
    if a == 22:
        return CLS_PHOTON
    if a == 11:
        return CLS_ELECTRON
    if a == 13:
        return CLS_MUON
    return CLS_CH_HAD if charge != 0 else CLS_N_HAD
