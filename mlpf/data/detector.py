"""A parametric CMS-like detector: generator particles -> Delphes-format event (X, ygen, ycand).

    det = CMS                                   # or dataclasses.replace(CMS, ecal_min_e=0.0)
    event = simulate(particles, np.random.default_rng(0), det)

The numbers follow the CMS detector and the Delphes CMS card in spirit (not byte for byte):

| part           | quantity                          | value                                  |
|----------------|-----------------------------------|----------------------------------------|
| solenoid       | field B                           | 3.8 T                                  |
| calo surface   | barrel radius R / endcap face Z   | 1.29 m / 3.15 m                        |
| tracker        | acceptance                        | abs(eta) < 2.5, pT > 0.5 GeV           |
| tracker        | efficiency, hadrons               | 95 % (abs(eta) < 1.5), 90 % (1.5-2.5)  |
| tracker        | efficiency, electrons and muons   | 99 %                                   |
| tracker        | pT resolution sigma/pT            | 1 % (+) 1.5e-4 * pT/GeV                |
| tracker        | eta / phi resolution              | 0.002 / 0.002 rad                      |
| towers         | abs(eta) < 3                      | 69 x 72 cells, 0.087 x 0.087           |
| towers         | 3 < abs(eta) < 5, each side       | 11 x 36 cells, 0.18 x 0.175            |
| ECAL, central  | sigma/E, abs(eta) < 3             | 3 %/sqrt(E) (+) 0.5 %                  |
| HCAL, central  | sigma/E, abs(eta) < 3             | 100 %/sqrt(E) (+) 5 %                  |
| forward        | sigma/E, EM and HAD parts         | 200 %/sqrt(E) (+) 10 %                 |
| towers         | noise threshold per part          | ECAL 0.5 GeV, HCAL 1.0 GeV             |

(+) is a sum in quadrature; E in GeV. Energy sharing between ECAL and HCAL: photons and
electrons deposit all their energy in ECAL; hadrons deposit an EM fraction drawn uniformly in
[0, 0.4] (the pi0 content of their showers) in ECAL and the rest in HCAL; muons leave only a
track (the minimum-ionising deposit is ignored); neutrinos leave nothing. Smearing is applied
per tower and per part (log-normal, so energies stay positive), then the noise threshold.

Charged particles follow a helix to the calorimeter surface: the transverse radius of
curvature is R_h = pT / (0.3 B) (metres, GeV, tesla); a particle reaching transverse radius r
has turned its position azimuth by asin(r / (2 R_h)) (clockwise for positive charge), which is
the track's "outer" position (eta_outer, phi_outer) and where it deposits its energy. A
particle with 2 R_h < R that leaves through neither the barrel nor the endcap curls up inside
the tracker (pT below ~0.74 GeV in the barrel) and deposits nothing. Neutral particles fly
straight. Vertices are at the origin.

Targets (ygen), as the public dataset describes them:
- track: the generator particle that made it, class from its PDG id;
- tower: the 4-vector sum of the *untracked* generator particles depositing in it, charge 0,
  class photon or neutral hadron from the larger energy share; an untracked charged particle
  (outside the tracker, below threshold, or lost to inefficiency) counts as a neutral hadron;
  a neutral-hadron tower target under 9 GeV is dropped;
- elements without a target are all zeros (class 0).

Rule-based baseline (ycand), a minimal particle flow:
- every track is a candidate: muon if is_gen_muon, electron if is_gen_electron (the generator
  flags, as Delphes' own particle flow uses them), else a charged hadron (pion mass);
- each track is linked to the tower its outer position falls in; electron track energies are
  subtracted from that tower's ECAL energy, other tracks' from its HCAL energy first and
  then from ECAL; what remains makes a photon when ECAL dominates it and is above 1 GeV, or a
  neutral hadron when HCAL dominates and it is above 9 GeV, at the tower centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlpf.data.format import (
    CLS_CH_HAD,
    CLS_ELECTRON,
    CLS_MUON,
    CLS_N_HAD,
    CLS_NONE,
    CLS_PHOTON,
    ELEM_TOWER,
    ELEM_TRACK,
    N_X,
    N_Y,
    Event,
    pdg_to_class,
)

NEUTRINOS = (12, 14, 16)
M_PION, M_ELECTRON, M_MUON = 0.13957, 0.000511, 0.10566  # GeV


@dataclass(frozen=True)
class Detector:
    """Every number of the detector model; see the module docstring for the table."""

    b_field: float = 3.8  # T
    calo_r: float = 1.29  # m, barrel calorimeter inner radius
    calo_z: float = 3.15  # m, endcap calorimeter face
    # tracker
    trk_eta_max: float = 2.5
    trk_pt_min: float = 0.5  # GeV
    trk_eff_had_barrel: float = 0.95  # abs(eta) < trk_eta_barrel
    trk_eff_had_endcap: float = 0.90
    trk_eff_lepton: float = 0.99
    trk_eta_barrel: float = 1.5
    trk_res_const: float = 0.01  # sigma(pT)/pT = const (+) slope * pT
    trk_res_slope: float = 1.5e-4  # 1/GeV
    trk_res_eta: float = 0.002
    trk_res_phi: float = 0.002  # rad
    # calorimeter grid
    calo_eta_central: float = 3.0
    calo_eta_max: float = 5.0
    n_eta_central: int = 69  # 6.0 / 69 = 0.087
    n_eta_forward: int = 11  # per side: 2.0 / 11 = 0.18
    n_phi_central: int = 72  # 2 pi / 72 = 0.087
    n_phi_forward: int = 36
    # energy sharing of hadrons: EM fraction ~ U(0, had_em_frac_max)
    had_em_frac_max: float = 0.4
    # resolution sigma/E = stoch/sqrt(E) (+) const, central (abs(eta) < 3) and forward
    ecal_stoch: float = 0.03
    ecal_const: float = 0.005
    hcal_stoch: float = 1.0
    hcal_const: float = 0.05
    fwd_stoch: float = 2.0
    fwd_const: float = 0.10
    ecal_min_e: float = 0.5  # GeV, noise threshold per tower
    hcal_min_e: float = 1.0
    # targets and baseline
    nhad_min_e: float = 9.0  # GeV, neutral-hadron targets (and candidates) below are dropped
    cand_photon_min_e: float = 1.0  # GeV

    @property
    def eta_edges(self) -> np.ndarray:
        """Tower eta bin edges, (n_eta + 1,): forward minus, central, forward plus."""
        c, m = self.calo_eta_central, self.calo_eta_max
        fwd = np.linspace(c, m, self.n_eta_forward + 1)
        return np.concatenate([-fwd[::-1], np.linspace(-c, c, self.n_eta_central + 1)[1:-1], fwd])

    @property
    def n_phi(self) -> np.ndarray:
        """Phi cells of every eta bin, (n_eta,)."""
        nf, nc = self.n_eta_forward, self.n_eta_central
        return np.array([self.n_phi_forward] * nf + [self.n_phi_central] * nc
                        + [self.n_phi_forward] * nf)


CMS = Detector()


@dataclass
class Particles:
    """Final-state generator particles of one event (vertex at the origin), all shape (n,).

    pdg: PDG id (int64); charge: in units of e; px, py, pz, e: GeV.
    """

    pdg: np.ndarray
    charge: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray

    def __len__(self) -> int:
        return len(self.pdg)

    @classmethod
    def from_rows(cls, rows) -> Particles:
        """From an (n, 6) array or list of (pdg, charge, px, py, pz, e) rows."""
        a = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
        return cls(a[:, 0].astype(np.int64), a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5])

    def select(self, mask: np.ndarray) -> Particles:
        return Particles(self.pdg[mask], self.charge[mask], self.px[mask], self.py[mask],
                         self.pz[mask], self.e[mask])


def classes_of(pdg: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Target class per particle via format.pdg_to_class, once per distinct (pdg, charge)."""
    keys, inv = np.unique(np.stack([pdg, np.sign(charge)], axis=1), axis=0, return_inverse=True)
    table = np.array([pdg_to_class(int(p), q) for p, q in keys], dtype=np.int64)
    return table[inv.reshape(-1)]


def _kinematics(px, py, pz):
    """pt, eta, phi, p of momenta (n,) each; eta is finite for pt > 0."""
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / pt)
    return pt, eta, np.arctan2(py, px), np.hypot(pt, pz)


def propagate(pt, eta, phi, charge, det: Detector = CMS):
    """Impact point of particles on the calorimeter surface (helix in the solenoid field).

    Args: pt, eta, phi, charge of shape (n,).
    Returns: eta_outer, phi_outer, reaches (bool) of shape (n,); neutral particles keep
    their direction; a charged particle that curls up inside the tracker has reaches False
    and its outer position at the largest radius of its helix.
    """
    charged = charge != 0
    r_h = np.where(charged, pt / (0.3 * det.b_field), 1e12)  # (n,) m; neutral: straight
    sinh_eta = np.sinh(eta)
    # barrel: arc length in the transverse plane to radius R, then z there
    phase_b = np.arcsin(np.minimum(det.calo_r / (2 * r_h), 1.0))  # half the turning angle
    arc_b = np.where(charged, 2 * r_h * phase_b, det.calo_r)
    z_b = arc_b * sinh_eta
    hits_barrel = (2 * r_h >= det.calo_r) & (np.abs(z_b) <= det.calo_z)
    # endcap: arc length to reach |z| = Z, the chord that makes, and the phase there
    arc_e = det.calo_z / np.maximum(np.abs(sinh_eta), 1e-12)
    phase_e = np.where(charged, arc_e / (2 * r_h), 0.0)
    r_e = np.where(charged, 2 * r_h * np.sin(np.minimum(phase_e, np.pi / 2)), arc_e)
    hits_endcap = ~hits_barrel & (np.abs(z_b) > det.calo_z) & (phase_e <= np.pi / 2)
    use_e = hits_endcap
    r = np.where(use_e, r_e, np.where(charged, 2 * r_h * np.sin(phase_b), det.calo_r))
    z = np.where(use_e, np.sign(sinh_eta) * det.calo_z, z_b)
    phase = np.where(use_e, np.minimum(phase_e, np.pi / 2), phase_b)
    eta_out = np.where(charged, np.arcsinh(z / np.maximum(r, 1e-9)), eta)
    phi_out = np.where(charged, phi - np.sign(charge) * phase, phi)
    phi_out = np.mod(phi_out + np.pi, 2 * np.pi) - np.pi
    return eta_out, phi_out, hits_barrel | hits_endcap


def tower_index(eta, phi, det: Detector = CMS):
    """Cell id of (eta, phi) points, (n,) int64: ieta * n_phi_central + iphi, -1 outside."""
    edges, n_phi = det.eta_edges, det.n_phi
    ieta = np.searchsorted(edges, eta, side="right") - 1
    inside = (ieta >= 0) & (ieta < len(n_phi))
    ieta_c = np.clip(ieta, 0, len(n_phi) - 1)
    nphi = n_phi[ieta_c]
    iphi = np.floor((phi + np.pi) / (2 * np.pi) * nphi).astype(np.int64) % nphi
    return np.where(inside, ieta_c * det.n_phi_central + iphi, -1)


def cell_centre(cell, det: Detector = CMS):
    """(eta, phi) centres of cell ids, each (n,)."""
    edges, n_phi = det.eta_edges, det.n_phi
    ieta, iphi = np.divmod(cell, det.n_phi_central)
    eta = 0.5 * (edges[ieta] + edges[ieta + 1])
    phi = -np.pi + (iphi + 0.5) * 2 * np.pi / n_phi[ieta]
    return eta, phi


def _smear_energy(e_true, stoch, const, rng):
    """Log-normal smearing with mean e_true and sigma = e (stoch/sqrt(e) (+) const)."""
    e = np.maximum(e_true, 1e-9)
    sigma = e * np.hypot(stoch / np.sqrt(e), const)
    s2 = np.log1p((sigma / e) ** 2)
    out = e * np.exp(rng.normal(size=e.shape) * np.sqrt(s2) - 0.5 * s2)
    return np.where(e_true > 0, out, 0.0)


def _target_rows(cls, charge, px, py, pz, e):
    """ygen rows (n, 7) from classes and 4-vectors; zero rows where cls == 0."""
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.where(pt > 0, pt, 1.0))
    phi = np.arctan2(py, px)
    y = np.stack([cls, charge, pt, eta, np.sin(phi), np.cos(phi), e], axis=1)
    y[cls == CLS_NONE] = 0.0
    return y


def simulate(p: Particles, rng: np.random.Generator, det: Detector = CMS,
             return_truth: bool = False):
    """Detector response, targets and rule-based candidates of one event.

    Args:
        p: final-state generator particles, n of them.
        rng: the only source of randomness (efficiency, smearing, EM fractions).
        return_truth: also return a dict of per-particle truth arrays, for tests.
    Returns:
        Event with X (n_towers + n_tracks, 12), ygen and ycand (same n, 7), float32;
        towers first (sorted by cell), then tracks (in particle order).
    """
    # visible particles with a direction: no neutrinos, not along the beam
    pt_all = np.hypot(p.px, p.py)
    keep = ~np.isin(np.abs(p.pdg), NEUTRINOS) & (pt_all > 1e-6)
    p = p.select(keep)
    n = len(p)
    pt, eta, phi, pabs = _kinematics(p.px, p.py, p.pz)
    q = np.sign(p.charge)
    cls = classes_of(p.pdg, q)  # (n,) generator class
    apdg = np.abs(p.pdg)
    is_mu, is_ele = apdg == 13, apdg == 11

    # --- tracker: acceptance x efficiency, then smearing
    in_trk = (q != 0) & (np.abs(eta) < det.trk_eta_max) & (pt > det.trk_pt_min)
    eff = np.where(np.abs(eta) < det.trk_eta_barrel, det.trk_eff_had_barrel,
                   det.trk_eff_had_endcap)
    eff = np.where(is_mu | is_ele, det.trk_eff_lepton, eff)
    tracked = in_trk & (rng.random(n) < eff)  # (n,) bool
    it = np.flatnonzero(tracked)
    rel = np.hypot(det.trk_res_const, det.trk_res_slope * pt[it])
    t_pt = pt[it] * np.exp(rng.normal(size=len(it)) * rel)  # log-normal keeps pT > 0
    t_eta = eta[it] + rng.normal(size=len(it)) * det.trk_res_eta
    t_phi = phi[it] + rng.normal(size=len(it)) * det.trk_res_phi
    t_eta_out, t_phi_out, _ = propagate(t_pt, t_eta, t_phi, q[it], det)
    t_p = t_pt * np.cosh(t_eta)

    # --- calorimeter: impact cell, EM/HAD sharing, per-tower sums, smearing, thresholds
    eta_out, phi_out, reaches = propagate(pt, eta, phi, q, det)
    cell = tower_index(eta_out, phi_out, det)
    deposits = reaches & (cell >= 0) & ~is_mu
    f_em = np.where((cls == CLS_PHOTON) | (cls == CLS_ELECTRON), 1.0,
                    rng.random(n) * det.had_em_frac_max)
    d = np.flatnonzero(deposits)
    cells, inv = np.unique(cell[d], return_inverse=True)  # (m,) touched cells
    em_true = np.bincount(inv, weights=p.e[d] * f_em[d], minlength=len(cells))
    had_true = np.bincount(inv, weights=p.e[d] * (1 - f_em[d]), minlength=len(cells))
    c_eta, c_phi = cell_centre(cells, det)
    fwd = np.abs(c_eta) > det.calo_eta_central
    em = _smear_energy(em_true, np.where(fwd, det.fwd_stoch, det.ecal_stoch),
                       np.where(fwd, det.fwd_const, det.ecal_const), rng)
    had = _smear_energy(had_true, np.where(fwd, det.fwd_stoch, det.hcal_stoch),
                        np.where(fwd, det.fwd_const, det.hcal_const), rng)
    em = np.where(em >= det.ecal_min_e, em, 0.0)
    had = np.where(had >= det.hcal_min_e, had, 0.0)
    alive = (em + had) > 0  # (m,) towers that survive the noise thresholds

    # --- tower targets: 4-vector sum of untracked depositing particles
    u = deposits[d] & ~tracked[d]  # over d: untracked
    tcls = np.where(cls == CLS_PHOTON, CLS_PHOTON, CLS_N_HAD)[d]  # untracked charged -> n.had
    w = np.where(u, 1.0, 0.0)
    sums = [np.bincount(inv, weights=w * v[d], minlength=len(cells))
            for v in (p.px, p.py, p.pz, p.e)]
    e_photon = np.bincount(inv, weights=w * p.e[d] * (tcls == CLS_PHOTON), minlength=len(cells))
    n_untracked = np.bincount(inv, weights=w, minlength=len(cells))
    y_cls = np.where(n_untracked == 0, CLS_NONE,
                     np.where(e_photon > sums[3] - e_photon, CLS_PHOTON, CLS_N_HAD))
    y_cls = np.where((y_cls == CLS_N_HAD) & (sums[3] < det.nhad_min_e), CLS_NONE, y_cls)
    ygen_tower = _target_rows(y_cls, np.zeros(len(cells)), *sums)

    # --- rule-based candidates: tracks, then what the linked tracks leave in each tower
    t_cls = np.where(is_mu[it], CLS_MUON, np.where(is_ele[it], CLS_ELECTRON, CLS_CH_HAD))
    t_mass = np.select([t_cls == CLS_MUON, t_cls == CLS_ELECTRON], [M_MUON, M_ELECTRON], M_PION)
    t_e = np.hypot(t_p, t_mass)
    t_cell = tower_index(t_eta_out, t_phi_out, det)
    t_tower = np.searchsorted(cells, t_cell)  # linked tower among touched cells (if any)
    linked = (t_cell >= 0) & (t_tower < len(cells))
    linked[linked] = cells[t_tower[linked]] == t_cell[linked]
    lt, lk = t_tower[linked], linked
    e_trk_em = np.bincount(lt, weights=t_e[lk] * (t_cls[lk] == CLS_ELECTRON),
                           minlength=len(cells))
    e_trk_had = np.bincount(lt, weights=t_e[lk] * (t_cls[lk] != CLS_ELECTRON),
                            minlength=len(cells))
    rem_had = had - e_trk_had
    rem_em = em - e_trk_em + np.minimum(rem_had, 0.0)  # hadron overflow eats ECAL energy
    rem_had, rem_em = np.maximum(rem_had, 0.0), np.maximum(rem_em, 0.0)
    rem = rem_em + rem_had
    c_cls = np.where(rem_em >= rem_had,
                     np.where(rem >= det.cand_photon_min_e, CLS_PHOTON, CLS_NONE),
                     np.where(rem >= det.nhad_min_e, CLS_N_HAD, CLS_NONE))
    c_pt = rem / np.cosh(c_eta)
    ycand_tower = np.stack([c_cls, np.zeros_like(rem), c_pt, c_eta, np.sin(c_phi),
                            np.cos(c_phi), rem], axis=1)
    ycand_tower[c_cls == CLS_NONE] = 0.0

    # --- assemble: towers (alive only), then tracks
    e_tow = em + had
    X_tower = np.zeros((len(cells), N_X))
    X_tower[:, 0] = ELEM_TOWER
    X_tower[:, 1] = e_tow / np.cosh(c_eta)
    X_tower[:, 2] = c_eta
    X_tower[:, 3], X_tower[:, 4] = np.sin(c_phi), np.cos(c_phi)
    X_tower[:, 5], X_tower[:, 6], X_tower[:, 7] = e_tow, em, had

    X_track = np.zeros((len(it), N_X))
    X_track[:, 0] = ELEM_TRACK
    X_track[:, 1], X_track[:, 2] = t_pt, t_eta
    X_track[:, 3], X_track[:, 4] = np.sin(t_phi), np.cos(t_phi)
    X_track[:, 5], X_track[:, 6] = t_p, t_eta_out
    X_track[:, 7], X_track[:, 8] = np.sin(t_phi_out), np.cos(t_phi_out)
    X_track[:, 9], X_track[:, 10], X_track[:, 11] = q[it], is_mu[it], is_ele[it]

    ygen_track = _target_rows(cls[it], q[it], p.px[it], p.py[it], p.pz[it], p.e[it])
    ycand_track = np.stack([t_cls, q[it], t_pt, t_eta, np.sin(t_phi), np.cos(t_phi), t_e],
                           axis=1)

    X = np.concatenate([X_tower[alive], X_track]).astype(np.float32)
    ygen = np.concatenate([ygen_tower[alive], ygen_track]).reshape(-1, N_Y).astype(np.float32)
    ycand = np.concatenate([ycand_tower[alive], ycand_track]).reshape(-1, N_Y)
    event = Event(X, ygen, ycand.astype(np.float32))
    if not return_truth:
        return event
    truth = {"particles": p, "cls": cls, "pt": pt, "eta": eta, "tracked": tracked,
             "in_tracker": in_trk, "efficiency": eff, "deposits": deposits,
             "em_true": em_true[alive], "had_true": had_true[alive],
             "em_true_all": em_true, "had_true_all": had_true, "tower_forward": fwd[alive]}
    return event, truth
