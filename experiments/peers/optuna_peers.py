"""Optuna peers: Optuna's samplers and pruners on the same recorded learning curves, in
simulated time (:mod:`experiments.peers.simulate`).

    python -m experiments.campaign --backend replay --scale small --methods "optuna_tpe_hb"

Each peer is an Optuna 5 study (ask/tell) with a sampler (TPE or random) and a pruner
(Hyperband or successive halving) set like our methods at that scale
(:func:`experiments.methods.settings_for`: ``max_t``, grace = minimum resource, ``eta``). A
trial does not train: its learning curve is looked up in a replay table
(``results/<scale>/lctable.csv``, :mod:`experiments.table`), the curve of the nearest recorded
configuration, every epoch with its val_loss, train_loss and measured seconds.

At each epoch's end the trial reports ``val_loss`` at step ``epoch`` and, below max_t, asks
``should_prune()`` (through :class:`experiments.trial.TrialRun`, the contract of every trial).

How the peers differ from our methods (:mod:`experiments.methods`):
- ``SuccessiveHalvingPruner`` is asynchronous successive halving like our ``asha``: rungs at
  ``grace * eta**k`` epochs, but its cutoff is a rank, not a quantile
  (:func:`optuna_continues`): of the n values recorded at the rung, the arriving one
  included, the best ``max(1, n // eta)`` continue, so only the best while n < 2 eta; ours
  continues a value above the linearly interpolated ``(1 - 1/eta)`` quantile of the earlier
  values. Optuna's is stricter at small n: on the same rung arrivals it never continues one
  that ours stops and stops 4 % that ours continues (``benchmarks/asha_decisions.py``).
- ``HyperbandPruner`` is asynchronous too, like our ``async_hyperband`` (successive-halving
  brackets with ``min_early_stopping_rate`` 0, 1, ...), not our synchronous ``hyperband``,
  which promotes whole rungs from checkpoints. Optuna draws a trial's bracket by hashing the
  study name and trial number, weighted by Hyperband's bracket sizes (most trials in the most
  aggressive bracket); ours hashes the job number uniformly over brackets.
- ``TPESampler`` (Optuna 5 defaults: multivariate, constant liar) fills its "good" set with
  completed trials first, then pruned ones by epochs reached and last value; running trials
  count as "bad"; failed ones are left out. Our CBO fits every finished trial's last objective
  (stopped ones alike; a failure as the worst value seen). ``n_startup_trials`` is our
  ``n_initial_points``.
- A pruned trial's learning curve stops at its rung; nothing continues it later.

Logs: ``results/<scale>/replay/<peer>/seed<k>/``, as our replayed searches.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from experiments import logs
from experiments.methods import Settings
from experiments.space import FLOAT, INT, INT_GRID, dimensions, problem_for


def optuna_continues(loss: float, earlier: list[float], eta: int) -> bool:
    """Optuna's ``SuccessiveHalvingPruner`` decision (bootstrap_count 0, minimising), as its
    source states it: among the n = len(earlier) + 1 values at the rung, the arriving one
    included, the best ``max(1, n // eta)`` continue, a value equal to the last of them too."""
    competing = sorted([*earlier, loss])
    return loss <= competing[max(1, len(competing) // eta) - 1]


# ------------------------------------------------------------------------------ space
def optuna_distributions(problem) -> dict[str, BaseDistribution]:
    """The DeepHyper problem as Optuna distributions, one per hyperparameter, in its order.

    Log-uniform and uniform floats stay floats; an integer grid with a constant step (``4, 8,
    ..., 32``; ``1, 2, 3``) becomes an integer range with that step, so that TPE keeps its
    order; other grids (``16, 32, 64``) and flags/names become categorical
    (:func:`experiments.space.dimensions` classifies them).
    """
    out: dict[str, BaseDistribution] = {}
    for d in dimensions(problem):
        if d.kind == FLOAT:
            out[d.name] = FloatDistribution(d.lower, d.upper, log=d.log)
        elif d.kind == INT:
            out[d.name] = IntDistribution(d.lower, d.upper, log=d.log)
        elif d.kind == INT_GRID:
            out[d.name] = IntDistribution(d.lower, d.upper, step=d.step)
        else:
            out[d.name] = CategoricalDistribution(list(d.values))
    return out


# ------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Peer:
    """An Optuna sampler composed with an Optuna pruner, both set from our ``Settings``."""

    name: str
    summary: str
    sampler: str  # "tpe" | "random"
    pruner: str  # "hyperband" | "sha"

    def make_sampler(self, s: Settings, seed: int) -> optuna.samplers.BaseSampler:
        if self.sampler == "tpe":
            # n_startup_trials: random configurations before the model, like our CBO
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_initial_points)
        return optuna.samplers.RandomSampler(seed=seed)

    def make_pruner(self, s: Settings) -> optuna.pruners.BasePruner:
        if self.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=s.grace, max_resource=s.max_t,
                                                  reduction_factor=s.eta)
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=s.grace,
                                                      reduction_factor=s.eta,
                                                      min_early_stopping_rate=0)

    def session(self, s: Settings, seed: int) -> Session:
        """An ask/tell session of this peer on the scale's space (the peer protocol of
        :func:`experiments.peers.simulate_with_info`)."""
        return Session(self, s, seed, optuna_distributions(problem_for(s.scale)))

    def describe(self, s: Settings) -> dict:
        sampler = ({"sampler": "TPESampler", "n_startup_trials": s.n_initial_points,
                    "multivariate": "default (True)", "constant_liar": "default (True)"}
                   if self.sampler == "tpe" else {"sampler": "RandomSampler"})
        if self.pruner == "hyperband":
            n = int(math.floor(math.log(s.max_t / s.grace, s.eta))) + 1  # as Optuna computes it
            pruner = {"pruner": "HyperbandPruner", "min_resource": s.grace,
                      "max_resource": s.max_t, "reduction_factor": s.eta, "brackets": n}
        else:
            pruner = {"pruner": "SuccessiveHalvingPruner", "min_resource": s.grace,
                      "reduction_factor": s.eta, "min_early_stopping_rate": 0}
        return {"max_t": s.max_t, "budget_epochs": s.budget,
                "time_budget_s": s.time_budget, **sampler, **pruner}


PEERS: dict[str, Peer] = {p.name: p for p in [
    Peer("optuna_tpe_hb", "Optuna TPE + HyperbandPruner", "tpe", "hyperband"),
    Peer("optuna_tpe_sha", "Optuna TPE + SuccessiveHalvingPruner", "tpe", "sha"),
    Peer("optuna_random_hb", "Optuna random sampling + HyperbandPruner", "random", "hyperband"),
    Peer("optuna_random_sha", "Optuna random sampling + SuccessiveHalvingPruner", "random",
         "sha"),
]}


def get_peer(name: str) -> Peer:
    try:
        return PEERS[name]
    except KeyError:
        raise ValueError(f"unknown peer {name!r}; choose one of {', '.join(PEERS)}") from None


# ------------------------------------------------------------------------------ session
class _Job:
    """An Optuna trial as a job of the trial contract: record -> report, stopped -> prune."""

    def __init__(self, trial: optuna.Trial, number: int, config: dict, prune_times: list):
        self.trial, self.id, self.parameters = trial, number, config
        self.prune_times = prune_times

    def record(self, epoch: int, objective: float) -> None:
        tic = time.perf_counter()
        self.trial.report(-objective, epoch)
        self.prune_times.append(time.perf_counter() - tic)

    def stopped(self) -> bool:
        tic = time.perf_counter()
        prune = self.trial.should_prune()
        self.prune_times[-1] += time.perf_counter() - tic
        return prune


class Session:
    """One Optuna study (ask/tell) for :func:`experiments.peers.simulate.simulate`."""

    def __init__(self, peer: Peer, s: Settings, seed: int,
                 distributions: dict[str, BaseDistribution]):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # A fixed study name: HyperbandPruner hashes it with the trial number to pick a bracket.
        self.study = optuna.create_study(study_name=f"{peer.name}-seed{seed}",
                                         direction="minimize",
                                         sampler=peer.make_sampler(s, seed),
                                         pruner=peer.make_pruner(s))
        self.dists = distributions
        self.prune_times: list[float] = []  # real seconds: report + should_prune per epoch

    def ask(self) -> tuple[optuna.Trial, dict]:
        trial = self.study.ask(self.dists)  # samples every parameter now
        return trial, {k: logs.native(trial.params[k]) for k in self.dists}

    def job(self, trial: optuna.Trial, number: int, config: dict) -> _Job:
        return _Job(trial, number, config, self.prune_times)

    def tell(self, trial: optuna.Trial, outcome: dict) -> None:
        status = outcome["metadata"][logs.STATUS]
        if status == logs.STATUS_OK:
            self.study.tell(trial, -outcome["objective"])
        elif status == logs.STATUS_STOPPED:
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)

    def info(self) -> dict:
        return {"library": "optuna", "version": optuna.__version__,
                "prune_summary": logs.summarize_times(self.prune_times)}
