"""The registry of search methods: ``METHODS = {name: Method}``.

Every method composes a DeepHyper search (random sampling, a Bayesian model (CBO), or a
Hyperband scheduler) with a stopper (none, or ASHA). Settings depend on the scale:

| scale | max_t | grace | eta | budget per search: epochs | and wall time |
|-------|-------|-------|-----|---------------------------|---------------|
| smoke |     9 |     1 |   3 |   9 x max_t =   81        |  50 s         |
| small |    27 |     1 |   3 |  16 x max_t =  432        |   9 min       |
| paper |   200 |    10 |   4 |  32 x max_t = 6400        |   none        |

``max_t`` is ``mlpf.scales.get_scale(scale).max_epochs``. The budget is the same for every
method (fair comparison). Epochs: a search submits new trials until the epochs trained by its
finished trials reach it; trials running at that moment finish (the overshoot is logged like
any compute). Wall time (smoke and small only, so that ``make benchmark`` ends in about 5 and
45 minutes on a 2-core laptop): at the deadline no trial is submitted and running trials stop
after their current epoch (``m:status`` "stopped", ``m:reason`` "time_budget"). On a fast
machine the epoch budget ends the search, on a slow one the deadline; ``metadata.json`` says
which (``stopped_by``).

Hyperband promotions continue from checkpoints, so one Hyperband iteration costs
``sum n_i (r_i - r_{i-1})`` epochs: 69 at smoke, 357 at small, 1556 at paper; the epoch
budgets hold about 1.2 iterations at smoke and small, 4 at paper.

Paper methods: ``random``, ``hyperband``, ``asha``, ``asha_bo``. Beyond the paper:
``async_hyperband``, ``bohb``, ``bo``. ``default`` trains the untuned configuration once to
``max_t``: the reference the analysis measures improvement against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from deephyper.hpo import CBO, RandomSearch

from experiments.schedulers import ASHAStopper, FixedSearch, HyperbandSearch, hyperband_brackets
from mlpf.scales import get_scale

PAPER_METHODS = ("random", "hyperband", "asha", "asha_bo")


@dataclass(frozen=True)
class Settings:
    """Per-scale settings shared by all methods (epochs unless stated)."""

    scale: str
    max_t: int  # epochs of a full training
    grace: int  # ASHA grace period = first rung; Hyperband's minimum budget
    eta: int  # reduction factor
    budget: int  # epochs per search, the same for every method
    time_budget: float | None = None  # seconds per search (None: no deadline)
    n_initial_points: int = 10  # random configurations before a Bayesian model is used


_SCALE = {  # scale -> (grace, eta, budget in units of max_t, seconds per search)
    "smoke": (1, 3, 9, 50.0),
    "small": (1, 3, 16, 540.0),
    "paper": (10, 4, 32, None),
}


def settings_for(scale: str, budget: int | None = None,
                 time_budget: float | None = None) -> Settings:
    """Settings of ``scale``; ``budget`` (epochs) and ``time_budget`` (seconds, 0 = none)
    override the defaults."""
    max_t = get_scale(scale).max_epochs  # ValueError for an unknown scale
    grace, eta, units, seconds = _SCALE[scale]
    if time_budget is not None:
        seconds = time_budget or None
    return Settings(scale, max_t, grace, eta, budget if budget else units * max_t, seconds)


# CBO so that the manager never holds workers idle: sampled acquisition optimisation (~55 ms per
# decision instead of ~0.7 s for "mixedga"), qUCBd for batches without refitting on lies, and a
# failed trial replaced by the worst objective seen instead of ending the search.
CBO_KWARGS = dict(surrogate_model="ET", acq_func="UCBd", acq_optimizer="sampling",
                  acq_optimizer_kwargs={"n_points": 10_000, "max_total_failures": -1},
                  multi_point_strategy="qUCBd")


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    make: Callable  # (problem, settings, seed, log_dir) -> deephyper Search
    describe: Callable  # settings -> dict of method settings for metadata.json


def _ckpt(log_dir: str):
    from experiments.worker import checkpoint_dir

    return lambda trial: checkpoint_dir(log_dir, trial)


def uses_checkpoints(name: str) -> bool:
    """Whether a method's trials continue from checkpoints (Hyperband promotions)."""
    return METHODS[name].describe(settings_for("smoke")).get("promotion") == "continue"


def _asha(s: Settings, brackets: int = 1) -> ASHAStopper:
    return ASHAStopper(max_steps=s.max_t, grace=s.grace, eta=s.eta, brackets=brackets)


def _n_async_brackets(s: Settings) -> int:
    return int(math.floor(math.log(s.max_t / s.grace) / math.log(s.eta) + 1e-9)) + 1


def _base(s: Settings, **extra) -> dict:
    return {"max_t": s.max_t, "budget_epochs": s.budget, "time_budget_s": s.time_budget,
            **extra}


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("random", "random search, every trial to max_t",
           lambda p, s, seed, d: RandomSearch(p, random_state=seed, log_dir=d),
           lambda s: _base(s, search="RandomSearch", stopper=None)),
    Method("hyperband", "synchronous Hyperband (Li et al. 2018), random proposals",
           lambda p, s, seed, d: HyperbandSearch(p, s.max_t, s.eta, s.grace, random_state=seed,
                                                 log_dir=d, checkpoint_dir=_ckpt(d)),
           lambda s: _base(s, search="HyperbandSearch", stopper=None, eta=s.eta, min_t=s.grace,
                           brackets=hyperband_brackets(s.max_t, s.eta, s.grace),
                           promotion="continue")),
    Method("asha", "random search + asynchronous successive halving (1 bracket)",
           lambda p, s, seed, d: RandomSearch(p, random_state=seed, log_dir=d, stopper=_asha(s)),
           lambda s: _base(s, search="RandomSearch", stopper="ASHA", grace=s.grace, eta=s.eta,
                           brackets=1)),
    Method("asha_bo", "Bayesian optimisation (CBO) + ASHA",
           lambda p, s, seed, d: CBO(p, random_state=seed, log_dir=d, stopper=_asha(s),
                                     n_initial_points=s.n_initial_points, **CBO_KWARGS),
           lambda s: _base(s, search="CBO", stopper="ASHA", grace=s.grace, eta=s.eta,
                           brackets=1, n_initial_points=s.n_initial_points, cbo=CBO_KWARGS)),
    Method("async_hyperband", "random search + ASHA brackets by hashed job id",
           lambda p, s, seed, d: RandomSearch(p, random_state=seed, log_dir=d,
                                              stopper=_asha(s, _n_async_brackets(s))),
           lambda s: _base(s, search="RandomSearch", stopper="ASHA", grace=s.grace, eta=s.eta,
                           brackets=_n_async_brackets(s))),
    Method("bohb", "Hyperband with model-based proposals (BOHB-style)",
           lambda p, s, seed, d: HyperbandSearch(p, s.max_t, s.eta, s.grace, random_state=seed,
                                                 log_dir=d, sampler="model",
                                                 checkpoint_dir=_ckpt(d)),
           lambda s: _base(s, search="HyperbandSearch", sampler="model", stopper=None,
                           eta=s.eta, min_t=s.grace,
                           brackets=hyperband_brackets(s.max_t, s.eta, s.grace),
                           promotion="continue", random_fraction=1 / 3)),
    Method("bo", "Bayesian optimisation (CBO), every trial to max_t",
           lambda p, s, seed, d: CBO(p, random_state=seed, log_dir=d,
                                     n_initial_points=s.n_initial_points, **CBO_KWARGS),
           lambda s: _base(s, search="CBO", stopper=None, n_initial_points=s.n_initial_points,
                           cbo=CBO_KWARGS)),
    Method("default", "the untuned default configuration, trained once to max_t",
           lambda p, s, seed, d: FixedSearch(p, [{}], random_state=seed, log_dir=d),
           lambda s: {"max_t": s.max_t, "budget_epochs": s.max_t, "time_budget_s": None,
                      "search": "FixedSearch", "config": {}, "stopper": None}),
]}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")\
            from None


def method_metadata(name: str, s: Settings) -> dict:
    return {"name": name, "summary": METHODS[name].summary, "settings": asdict(s),
            **METHODS[name].describe(s)}
