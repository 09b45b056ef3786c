"""Peers: other teams' HPO tools on the same problem, budgets and logs as our methods.

Each adapter (:mod:`experiments.peers.optuna_peers`, :mod:`experiments.peers.syne_peers`,
:mod:`experiments.peers.neps_peers`) runs its library in simulated time on a learning-curve
table, through the same trial contract and clock as our replayed searches
(:mod:`experiments.peers.simulate`). :data:`PEERS` holds every peer whose library is installed
(the Syne Tune peers need ``make peers``, the NePS peer ``make neps``); :func:`run_peer` runs
one peer and seed; ``python -m experiments.campaign --backend replay`` runs them with our
methods.

The field's newer methods, and whether they run here (beside the pins of requirements.txt,
requirements-peers.txt and requirements-ray.txt; checked with ``pip install --dry-run``):
- PriorBand (neural-pipeline-search 0.17.0): runs, ``neps_priorband``. Installed with
  ``--no-deps`` (requirements-neps.txt): its declared pins would pull torch 2.14.1 with CUDA
  wheels, torchvision 0.29.1 and pandas 2.3.3, and it declares pandas<3.0 and networkx<3.0
  (we have 3.1.1 and 3.6.1); it imports and runs beside ours without torchvision.
- ifBO (ifbo 0.4.1, and NePS's ``neps.algorithms.ifbo``): installs (NePS imports it) but cannot
  run here (:data:`UNAVAILABLE`): the wheel ships no FT-PFN weights; the first ``ask``
  downloads them from api.figshare.com (ifbo/download.py, through NePS's
  ``models/ftpfn.py``), which fails with ``requests.exceptions.ConnectionError`` on these
  machines (no internet).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from experiments import logs
from experiments.methods import settings_for
from experiments.peers import optuna_peers
from experiments.peers.simulate import DEVICES, CurveFn, Run, simulate, write_logs
from experiments.space import problem_for

# Syne Tune is optional (requirements-peers.txt): its peers exist only where it is installed.
if importlib.util.find_spec("syne_tune") is not None:
    from experiments.peers import syne_peers
else:
    syne_peers = None

# NePS is optional (requirements-neps.txt); neps_peers imports it only when a peer runs.
if importlib.util.find_spec("neps") is not None:
    from experiments.peers import neps_peers
else:
    neps_peers = None

PEERS: dict = {**optuna_peers.PEERS, **(syne_peers.PEERS if syne_peers else {}),
               **(neps_peers.PEERS if neps_peers else {})}
UNAVAILABLE = {  # peers of the field that cannot run here, and why
    "neps_ifbo": "ifBO's FT-PFN weights are downloaded at first use from api.figshare.com "
                 "(ifbo/download.py); these machines have no internet",
}

__all__ = ["PEERS", "UNAVAILABLE", "get_peer", "run_peer", "simulate_peer"]


def get_peer(name: str):
    """The registry record of peer ``name``."""
    try:
        return PEERS[name]
    except KeyError:
        hint = ""
        if name in UNAVAILABLE:
            hint = f" ({UNAVAILABLE[name]})"
        elif name.startswith("neps_") and neps_peers is None:
            hint = " (NePS is not installed: make neps)"
        elif name.startswith("syne_"):
            hint = " (Syne Tune is not installed: make peers)" if syne_peers is None else \
                f" ({syne_peers.UNAVAILABLE[name]}: {syne_peers.WHY_UNAVAILABLE})" \
                if name in syne_peers.UNAVAILABLE else ""
        raise ValueError(f"unknown peer {name!r}{hint}; choose one of {', '.join(PEERS)}")\
            from None


def simulate_with_info(peer, s, seed: int, curve_fn: CurveFn, workers: int = 2,
                       devices: int = DEVICES) -> tuple[Run, dict]:
    """Simulate ``peer`` (a name or a record) for one seed, with its library's info
    (name, version, real seconds of its decisions) for metadata.json.

    The peer protocol, by duck typing: a record with ``simulate(s, seed, curve_fn, workers,
    devices) -> (Run, info)`` runs its library's own simulator (Syne Tune); any other has
    ``session(s, seed)``, an ask/tell session that :func:`simulate` runs on our clock and
    whose ``info()`` is the library's info (Optuna, NePS, a new library)."""
    peer = get_peer(peer) if isinstance(peer, str) else peer
    own = getattr(peer, "simulate", None)
    if own is not None:
        return own(s, seed, curve_fn, workers, devices)
    session = peer.session(s, seed)
    return simulate(session, s, curve_fn, workers, devices), session.info()


def simulate_peer(peer, s, seed: int, curve_fn: CurveFn, workers: int = 2,
                  devices: int = DEVICES) -> Run:
    """Simulate ``peer`` for one seed; returns the :class:`experiments.peers.simulate.Run`."""
    return simulate_with_info(peer, s, seed, curve_fn, workers, devices)[0]


def peer_dir(scale: str, name: str, seed: int) -> Path:
    """Logs of a peer: ``results/<scale>/replay/<peer>/seed<k>/`` (beside replayed methods)."""
    from mlpf.paths import RESULTS_DIR

    return RESULTS_DIR / scale / "replay" / name / f"seed{seed}"


def run_peer(name: str, scale: str, seed: int, curve_fn: CurveFn, log_dir: Path, *,
             workers: int = 2, table: dict | None = None, budget: int | None = None,
             time_budget: float | None = None, devices: int = DEVICES,
             device_budget: float | None = None, loss: dict | None = None) -> dict | None:
    """Simulate one peer and seed and write its logs; None when they are already complete
    on the same table (``table["sha256"]``). The epoch budget is the scale's unless
    ``budget``; a simulated deadline only with ``time_budget`` (seconds). ``loss``: the loss
    the table's trainings used (its lctable.json ``loss``), recorded in metadata.json as a
    search of ours records it."""
    peer = get_peer(name)
    table = table or {}
    previous = logs.read_json(log_dir / logs.METADATA_JSON)
    # a search that ended (complete, or stopped by its failed trials) on the same table
    ended = (logs.RUN_COMPLETE, logs.RUN_FAILED)
    if previous is not None and previous.get("status") in ended and \
            previous.get("replay", {}).get("sha256") == table.get("sha256"):
        return None
    logs.clear_logs(log_dir)
    s = settings_for(scale, budget, time_budget or 0, device_budget)  # 0: no deadline
    tic = time.perf_counter()
    run, info = simulate_with_info(peer, s, seed, curve_fn, workers, devices)
    real = time.perf_counter() - tic
    described = {"name": peer.name, "summary": peer.summary, **peer.describe(s)}
    return write_logs(run, log_dir, method_settings=described, s=s, seed=seed, workers=workers,
                      table=table, real_seconds=real,
                      names=problem_for(scale).hyperparameter_names, peer_info=info, loss=loss)
