"""NePS peer: PriorBand (Mallik et al., NeurIPS 2023, arXiv 2306.12370) from
neural-pipeline-search 0.17.0 on the same recorded learning curves, in simulated time
(:mod:`experiments.peers.simulate`), with our budgets and logs.

    make neps     # requirements-neps.txt into .venv, --no-deps (why: that file)
    python -m experiments.campaign --backend replay --scale small --methods "neps_priorband"

PriorBand is Hyperband whose new configurations are drawn from a mix of the uniform
distribution, a prior (a user's guess of a good configuration) and a perturbation of the
incumbent, weighted by how well prior and incumbent samples have done at each rung. It runs
through NePS's ask-and-tell interface (``neps.AskAndTell``) as a *session* of
:func:`experiments.peers.simulate.simulate`: a free worker asks; a NePS trial is a
configuration and a fidelity z (epochs); it trains epochs 1..z on our trial contract and its
val_loss at z is told back (a failed training is told as an error, which NePS never promotes).

Settings, as our methods at the scale (:func:`experiments.methods.settings_for`):
- fidelity ``epochs`` from grace to max_t, ``eta`` our reduction factor, ``base="hyperband"``
  (the paper's PriorBand), so NePS's rungs are ``grace * eta**k`` up to max_t as ours;
- the prior: the untuned default configuration (config 0 of the tables,
  :func:`experiments.table.default_values`) projected onto the searched space (a range
  clipped to its bounds, a grid to its nearest value, a flag as it is), at NePS's default
  confidence ``low``: the default is the study's starting point, not a tuned guess;
- no configuration first (``sample_prior_first=False``), no BO (``bayesian_optimization_
  kick_in_point=None``), both NePS's defaults.

How it differs from our Hyperband (:mod:`experiments.methods`):
- Checkpoints, as our Hyperband: NePS promotes a configuration by asking it again at the next
  rung's fidelity (``previous_trial_id``) and leaves continuing it to the pipeline; the peer
  continues it from the epoch the previous trial reached (:meth:`Session.first_epoch`, the
  ``first_epoch`` hook of :func:`experiments.peers.simulate.simulate`), so a promotion from z
  to z' pays z' - z epochs, not z'. Its logs show it as a new trial whose curve starts at
  epoch z + 1, with ``m:budget`` = z' (as a resumed trial of ours); ``peer.promotions`` and
  ``peer.continued_epochs`` in metadata.json count them.
- Synchronous brackets as ours; with several workers NePS starts another bracket while a rung
  waits for running trials.
- Randomness: NePS draws from numpy's, torch's and Python's global generators; they are seeded
  with our seed for the run and restored after it (same seed, byte-identical logs).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import random
import time
import warnings
from dataclasses import dataclass

import numpy as np

from experiments import logs
from experiments.methods import Settings
from experiments.schedulers import BUDGET_KEY
from experiments.space import FLOAT, GRID, INT, INT_GRID, dimensions, problem_for

DIST = "neural-pipeline-search"
FIDELITY = "epochs"  # NePS's fidelity parameter: epochs of a trial
PRIOR_CONFIDENCE = "low"  # NePS's default
BASE = "hyperband"


def version() -> str:
    return importlib.metadata.version(DIST)


# ------------------------------------------------------------------------------ space
def prior_values(problem, default: dict) -> dict:
    """The default configuration projected onto the searched space: a range clipped to its
    bounds, a grid to its nearest value (log distance on a log grid), a name or flag as it is
    (None where it is not a value of the space); a single value has no prior."""
    out = {}
    for d in dimensions(problem):
        v = default.get(d.name)
        if v is None or (d.kind not in (FLOAT, INT) and len(d.values) == 1):
            out[d.name] = None
        elif d.kind in (FLOAT, INT):
            x = min(max(float(v), d.lower), d.upper)
            out[d.name] = int(round(x)) if d.kind == INT else x
        elif d.kind in (INT_GRID, GRID) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in d.values):
            pos = [float(x) for x in d.values]
            out[d.name] = d.values[int(np.argmin([abs(p - float(v)) for p in pos]))]
        else:
            out[d.name] = v if v in d.values else None
    return out


def neps_space(problem, s: Settings, prior: dict | None = None):
    """The DeepHyper problem as a NePS search space (one entry per hyperparameter, in its
    order) and the fidelity ``epochs`` from grace to max_t. Floats and integer ranges keep
    their bounds and log scale; grids and names become categoricals of their values (NePS
    has no ordinal type); a single value a constant. ``prior``: {name: value or None}."""
    from neps.space import HPOCategorical, HPOConstant, HPOFloat, HPOInteger, SearchSpace

    prior = prior or {}
    out = {}
    for d in dimensions(problem):
        p = prior.get(d.name)
        conf = {"prior": p, "prior_confidence": PRIOR_CONFIDENCE} if p is not None else {}
        if d.kind == FLOAT:
            out[d.name] = HPOFloat(float(d.lower), float(d.upper), log=d.log, **conf)
        elif d.kind == INT:
            out[d.name] = HPOInteger(int(d.lower), int(d.upper), log=d.log, **conf)
        elif len(d.values) == 1:
            out[d.name] = HPOConstant(d.values[0])
        else:
            out[d.name] = HPOCategorical(list(d.values), **conf)
    out[FIDELITY] = HPOInteger(int(s.grace), int(s.max_t), is_fidelity=True)
    return SearchSpace(out)


# ------------------------------------------------------------------------------ registry
@contextlib.contextmanager
def _seeded_and_quiet(seed: int):
    """numpy's, torch's and Python's global generators seeded (NePS draws from them) and
    restored afterwards; NePS's logging and warnings silenced."""
    import torch

    states = np.random.get_state(), torch.get_rng_state(), random.getstate()
    log = logging.getLogger("neps")
    level = log.level
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))
    random.seed(int(seed))
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)
        np.random.set_state(states[0])
        torch.set_rng_state(states[1])
        random.setstate(states[2])


@dataclass(frozen=True)
class NepsPeer:
    """A NePS optimizer, set from our ``Settings``."""

    name: str
    summary: str
    algorithm: str  # neps.algorithms.<algorithm>

    def prior(self, s: Settings) -> dict:
        from experiments.table import default_values

        return prior_values(problem_for(s.scale), default_values(s.scale))

    def make_optimizer(self, s: Settings):
        import neps

        space = neps_space(problem_for(s.scale), s, self.prior(s))
        if self.algorithm != "priorband":
            raise ValueError(f"peer {self.name}: unknown NePS algorithm {self.algorithm!r}")
        return neps.algorithms.priorband(space, eta=int(s.eta), base=BASE,
                                         sample_prior_first=False,
                                         bayesian_optimization_kick_in_point=None)

    def describe(self, s: Settings) -> dict:
        with _seeded_and_quiet(0):
            opt = self.make_optimizer(s)
        prior = {k: logs.native(v) for k, v in self.prior(s).items() if v is not None}
        return {"max_t": s.max_t, "budget_epochs": s.budget, "time_budget_s": s.time_budget,
                "library": "neps", "algorithm": self.algorithm, "base": BASE,
                "eta": int(s.eta), "fidelity": FIDELITY,
                "rungs": {str(k): logs.native(v) for k, v in sorted(opt.rung_to_fid.items())},
                "prior": prior, "prior_confidence": PRIOR_CONFIDENCE,
                "sample_prior_first": False, "bayesian_optimization_kick_in_point": None,
                "checkpoints": True}

    def session(self, s: Settings, seed: int) -> Session:
        return Session(self, s, seed)


PEERS: dict[str, NepsPeer] = {p.name: p for p in [
    NepsPeer("neps_priorband", "NePS PriorBand: Hyperband with prior-, incumbent- and "
             "uniform-weighted sampling; the default as its prior", "priorband"),
]}


# ------------------------------------------------------------------------------ session
class _Job:
    """A NePS trial as a job of the trial contract: trains to its fidelity, never pruned."""

    def __init__(self, number: int, config: dict, budget: int):
        self.id, self.parameters = number, {**config, BUDGET_KEY: int(budget)}

    def record(self, epoch: int, objective: float) -> None:
        pass  # NePS hears only the value at the trial's fidelity

    def stopped(self) -> bool:
        return False


class Session:
    """One NePS ask-and-tell run for :func:`experiments.peers.simulate.simulate`; every call
    into NePS runs with the run's seeded generators (restored between calls)."""

    def __init__(self, peer: NepsPeer, s: Settings, seed: int):
        import neps
        import torch

        self.names = problem_for(s.scale).hyperparameter_names
        with _seeded_and_quiet(seed):
            self.at = neps.AskAndTell(peer.make_optimizer(s), worker_id=f"{peer.name}-{seed}")
            self._rng = (np.random.get_state(), torch.get_rng_state(), random.getstate())
        self.ask_seconds: list[float] = []
        self.promotions = self.continued = 0
        self._reached: dict[str, int] = {}  # NePS trial id -> the last epoch it trained

    @contextlib.contextmanager
    def _rngs(self):
        """The run's generators, continued from the last call."""
        import torch

        with _seeded_and_quiet(0):
            np.random.set_state(self._rng[0])
            torch.set_rng_state(self._rng[1])
            random.setstate(self._rng[2])
            try:
                yield
            finally:
                self._rng = (np.random.get_state(), torch.get_rng_state(), random.getstate())

    def ask(self) -> tuple[object, dict]:
        tic = time.perf_counter()
        with self._rngs():
            trial = self.at.ask()
        self.ask_seconds.append(time.perf_counter() - tic)
        if trial.metadata.previous_trial_id is not None:  # a promotion
            self.promotions += 1
            self.continued += self.first_epoch(trial) - 1
        return trial, {k: logs.native(trial.config[k]) for k in self.names}

    def first_epoch(self, trial) -> int:
        """The epoch a trial starts at: 1, or for a promotion the epoch after the last one its
        previous trial trained (its checkpoint). NePS promotes only trials told a value."""
        prev = trial.metadata.previous_trial_id
        return 1 if prev is None else self._reached.get(prev, 0) + 1

    def job(self, trial, number: int, config: dict) -> _Job:
        return _Job(number, config, int(trial.config[FIDELITY]))

    def tell(self, trial, outcome: dict) -> None:
        status = outcome["metadata"][logs.STATUS]
        self._reached[trial.metadata.id] = self.first_epoch(trial) - 1 + \
            int(outcome["metadata"][logs.EPOCHS])
        with self._rngs():
            if status == logs.STATUS_FAILED or not isinstance(outcome["objective"],
                                                              (int, float)):
                reason = outcome["metadata"].get(logs.REASON) or "failed"
                self.at.tell(trial, RuntimeError(f"training failed: {reason}"))
            else:  # ok, or cut by our budgets: the last val_loss it reached
                self.at.tell(trial, float(-outcome["objective"]))

    def info(self) -> dict:
        return {"library": "neps", "version": version(),
                "ask_summary": logs.summarize_times(self.ask_seconds),
                "promotions": self.promotions, "continued_epochs": self.continued}
