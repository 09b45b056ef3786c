"""The registry of search methods: ``METHODS = {name: Method}``.

Every method composes a DeepHyper search (random sampling, a Bayesian model (CBO), or a
Hyperband scheduler) with a stopper (none, or ASHA). Settings depend on the scale:

| scale | max_t | grace | eta | device-seconds per search   | epochs            | wall cap |
|-------|-------|-------|-----|-----------------------------|-------------------|----------|
| smoke |     9 |     1 |   3 | none                        |  9 x max_t =   81 | 50 s     |
| small |    16 |     1 |   4 | 1350 (16 trainings, ~82 s)  | 64 x max_t = 1024 | 24 min   |
| paper |   200 |    10 |   4 | none yet (to measure)       | 32 x max_t = 6400 | none     |

Replayed searches (simulated time) get ``REPLAY_DEVICE_BUDGET`` where set: 2700 device-seconds
at small, 32 full trainings of the median of the table's configurations 1..512 (81.8 s on
upstream's loss; ``python -m experiments.table --scale small --replay-budget 32`` prints it), the
budget of the pre-registered claim-2 test (analysis/preregistration.md); the live budget is its
first half.

``max_t`` is ``mlpf.scales.get_scale(scale).max_epochs``; small's and paper's rungs have the
paper's shape (grace x 4^k: 1/4/16 and 10/40/160). Budgets are the same for every method (a
fair comparison). Device-seconds (``--device-budget``) are the primary budget where set: a
hard cut that counts running trials (at the cut they stop after their current epoch, reason
``device_budget``, and their epochs count); a device is one worker (a CPU worker whatever
its threads, or one GPU). Epochs: a search submits new trials until the epochs trained by
its finished trials reach the epoch budget; trials running at that moment finish. The wall
time cap is a safety stop (``m:reason`` "time_budget"). ``metadata.json`` says which ended
the search (``stopped_by``).

Hyperband promotions continue from checkpoints, so one Hyperband iteration costs
``sum n_i (r_i - r_{i-1})`` epochs: 69 at smoke, 124 at small, 1556 at paper.

Paper methods: ``random``, ``hyperband``, ``asha``, ``asha_bo``. ASHA + BO in the study's own
flavours (:mod:`experiments.bayes`): ``asha_gp`` (scikit-optimize GP), ``asha_tpe`` (HyperOpt
TPE). Beyond the paper: ``async_hyperband``, ``bohb``, ``bo``, and the i-Epoch baselines
``epoch1``, ``epoch4`` (Egele et al. 2024). ``default`` trains the untuned
configuration once to ``max_t``: the reference the analysis measures improvement against.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from deephyper.hpo import CBO, RandomSearch

from experiments.bayes import GP_FIT, GP_SETTINGS, PROPOSERS, TPE_SETTINGS, ModelSearch
from experiments.schedulers import (
    ASHAStopper,
    FixedSearch,
    HyperbandSearch,
    hyperband_brackets,
    i_epoch_bracket,
)
from experiments.trial import checkpoint_dir
from mlpf.scales import get_scale


@dataclass(frozen=True)
class Settings:
    """Per-scale settings shared by all methods (epochs unless stated)."""

    scale: str
    max_t: int  # epochs of a full training
    grace: int  # ASHA grace period = first rung; Hyperband's minimum budget
    eta: int  # reduction factor
    budget: int  # epochs per search, the same for every method
    time_budget: float | None = None  # seconds per search (None: no deadline)
    # device-seconds per search, a hard cut that counts running trials (None: none); a device
    # is one worker: one CPU thread, or one GPU
    device_budget: float | None = None
    n_initial_points: int = 10  # random configurations before a Bayesian model is used


# scale -> (grace, eta, epoch budget in units of max_t, wall-time cap in seconds,
#           device-seconds per search)
_SCALE = {
    "smoke": (1, 3, 9, 50.0, None),
    "small": (1, 4, 64, 1440.0, 1350.0),
    "paper": (10, 4, 32, None, None),
}


# scale -> device-seconds per replayed search (simulated time costs nothing real: a budget of
# at least 32 median full trainings, twice the live one, so that its first half is the live run)
REPLAY_DEVICE_BUDGET = {"small": 2700.0}


def replay_device_budget(scale: str, given: float | None = None) -> float | None:
    """The device budget of a replayed search: ``given`` if set (0 = none), else the scale's
    replay budget, else the live one (None)."""
    return given if given is not None else REPLAY_DEVICE_BUDGET.get(scale)


def settings_for(scale: str, budget: int | None = None, time_budget: float | None = None,
                 device_budget: float | None = None) -> Settings:
    """Settings of ``scale``; ``budget`` (epochs), ``time_budget`` (seconds, 0 = none) and
    ``device_budget`` (device-seconds, 0 = none) override the defaults."""
    max_t = get_scale(scale).max_epochs  # ValueError for an unknown scale
    grace, eta, units, seconds, device_seconds = _SCALE[scale]
    if time_budget is not None:
        seconds = time_budget or None
    if device_budget is not None:
        device_seconds = device_budget or None
    return Settings(scale, max_t, grace, eta, budget if budget else units * max_t, seconds,
                    device_budget=device_seconds)


# CBO so that the manager never holds workers idle: sampled acquisition optimisation (~55 ms per
# decision instead of ~0.7 s for "mixedga"), qUCBd for batches without refitting on lies, and a
# failed trial replaced by the worst objective seen instead of ending the search. 2,000
# acquisition samples, not DeepHyper's 10,000: sampling, transforming and scoring them is
# linear in their number and was 90 % of a replayed asha_bo search (11.8 s -> 3.6 s per search
# at small); on the 50-seed replays of the small table the two settings reach the top 5 %
# target with the same compute (ratio 0.97 [0.88, 1.26], paired bootstrap), the top 1 % alike.
CBO_KWARGS = dict(surrogate_model="ET", acq_func="UCBd", acq_optimizer="sampling",
                  acq_optimizer_kwargs={"n_points": 2_000, "max_total_failures": -1,
                                        "filter_duplicated": False},
                  multi_point_strategy="qUCBd")


@dataclass(frozen=True)
class Method:
    """A method as data: what it composes. Construction (:func:`build`) and the metadata
    logged with every search (:func:`method_metadata`) both derive from this record.

    search: ``random`` (DeepHyper RandomSearch), ``cbo`` (DeepHyper CBO, a Bayesian model),
        ``hyperband`` (synchronous Hyperband, :class:`experiments.schedulers.HyperbandSearch`)
        ``skopt_gp`` / ``hyperopt_tpe`` (the study's GP or TPE,
        :class:`experiments.bayes.ModelSearch`) or ``fixed`` (the untuned default, once).
    stopper: None or ``asha`` (:class:`experiments.schedulers.ASHAStopper`).
    brackets: ASHA brackets: ``one``, or ``async`` (one per minimum early-stopping rate:
        asynchronous Hyperband).
    rule: ASHA's cutoff: ``ray`` (Ray Tune's AsyncHyperBandScheduler, the paper's) or
        ``deephyper`` (DeepHyper's SuccessiveHalvingStopper).
    sampler: Hyperband's proposals: ``random``, or ``model`` (BOHB-style).
    """

    name: str
    summary: str
    search: str
    stopper: str | None = None
    brackets: str = "one"
    rule: str = "ray"
    sampler: str = "random"
    i_epoch: int = 0  # > 0: the i-Epoch baseline's bracket instead of Hyperband's
    paper: bool = False  # one of the four methods of the paper

    @property
    def checkpoints(self) -> bool:
        """Whether trials continue from checkpoints (Hyperband promotions)."""
        return self.search == "hyperband"


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("random", "random search, every trial to max_t", "random", paper=True),
    Method("hyperband", "synchronous Hyperband (Li et al. 2018), random proposals",
           "hyperband", paper=True),
    Method("asha", "random search + asynchronous successive halving (1 bracket)", "random",
           stopper="asha", paper=True),
    Method("asha_bo", "Bayesian optimisation (CBO) + ASHA", "cbo", stopper="asha", paper=True),
    Method("asha_deephyper", "random search + ASHA with DeepHyper's cutoff (1 bracket)",
           "random", stopper="asha", rule="deephyper"),
    Method("async_hyperband", "random search + ASHA brackets by hashed job id", "random",
           stopper="asha", brackets="async"),
    Method("bohb", "Hyperband with model-based proposals (BOHB-style)", "hyperband",
           sampler="model"),
    Method("bo", "Bayesian optimisation (CBO), every trial to max_t", "cbo"),
    Method("asha_gp", "the study's GP (scikit-optimize) + ASHA: ASHA + BO, the paper's flavour",
           "skopt_gp", stopper="asha"),
    Method("asha_tpe", "the study's TPE (HyperOpt) + ASHA: ASHA + BO, the paper's flavour",
           "hyperopt_tpe", stopper="asha"),
    Method("epoch1", "1-Epoch baseline: eta^2 configurations x 1 epoch, the best continued to "
           "max_t, round after round", "hyperband", i_epoch=1),
    Method("epoch4", "4-Epoch baseline: eta^2 configurations x 4 epochs, the best continued to "
           "max_t, round after round", "hyperband", i_epoch=4),
    Method("default", "the untuned default configuration, trained once to max_t", "fixed"),
]}
PAPER_METHODS = tuple(m.name for m in METHODS.values() if m.paper)

_SEARCH_CLASS = {"random": "RandomSearch", "cbo": "CBO", "hyperband": "HyperbandSearch",
                 "fixed": "FixedSearch", "skopt_gp": "ModelSearch(skopt GP)",
                 "hyperopt_tpe": "ModelSearch(HyperOpt TPE)"}
BOHB_RANDOM_FRACTION = 1 / 3  # configurations a BOHB-style sampler still draws at random


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")\
            from None


def n_brackets(m: Method, s: Settings) -> int:
    """ASHA brackets of ``m``: 1, or one per minimum early-stopping rate (rungs below max_t)."""
    if m.brackets == "one":
        return 1
    return int(math.floor(math.log(s.max_t / s.grace) / math.log(s.eta) + 1e-9)) + 1


def brackets_of(m: Method, s: Settings) -> list[list[tuple[int, int]]]:
    """The brackets a Hyperband-search method cycles through: Hyperband's, or for an i-Epoch
    baseline one bracket of eta^2 configurations at i epochs, the best continued to max_t."""
    if m.i_epoch:
        return i_epoch_bracket(m.i_epoch, s.max_t, s.eta**2)
    return hyperband_brackets(s.max_t, s.eta, s.grace)


def build(name: str, problem, s: Settings, seed: int, log_dir: str):
    """The DeepHyper search of method ``name``: its search composed with its stopper.

    The search does not write results.csv itself (the driver writes it, atomically)."""
    m = get_method(name)
    stopper = ASHAStopper(max_steps=s.max_t, grace=s.grace, eta=s.eta,
                          brackets=n_brackets(m, s), rule=m.rule) if m.stopper == "asha" \
        else None
    common = dict(random_state=seed, log_dir=log_dir, checkpoint_history_to_csv=False)
    if m.search == "random":
        return RandomSearch(problem, stopper=stopper, **common)
    if m.search == "cbo":
        return CBO(problem, stopper=stopper, n_initial_points=s.n_initial_points, **common,
                   **CBO_KWARGS)
    if m.search == "hyperband":
        return HyperbandSearch(problem, s.max_t, s.eta, s.grace, sampler=m.sampler,
                               checkpoint_dir=lambda trial: checkpoint_dir(log_dir, trial),
                               random_fraction=BOHB_RANDOM_FRACTION, table=brackets_of(m, s),
                               **common)
    if m.search == "fixed":
        return FixedSearch(problem, [{}], **common)
    if m.search in PROPOSERS:
        return ModelSearch(problem, PROPOSERS[m.search], stopper=stopper,
                           n_initial_points=s.n_initial_points, **common)
    raise ValueError(f"method {name}: unknown search {m.search!r}")


def method_metadata(name: str, s: Settings) -> dict:
    """What metadata.json records about the method (derived from its record)."""
    m = get_method(name)
    if m.search == "fixed":
        s = replace(s, budget=s.max_t, time_budget=None, device_budget=None)
    out = {"name": name, "summary": m.summary, "settings": asdict(s), "max_t": s.max_t,
           "budget_epochs": s.budget, "time_budget_s": s.time_budget,
           "budget_device_s": s.device_budget,
           "search": _SEARCH_CLASS[m.search], "stopper": m.stopper.upper() if m.stopper else None}
    if m.stopper == "asha":
        out.update(grace=s.grace, eta=s.eta, brackets=n_brackets(m, s), rule=m.rule)
    if m.search == "cbo":
        out.update(n_initial_points=s.n_initial_points, cbo=CBO_KWARGS)
    if m.search == "skopt_gp":
        out.update(n_initial_points=s.n_initial_points, skopt=GP_SETTINGS, gp_fit=GP_FIT)
    if m.search == "hyperopt_tpe":
        out.update(n_initial_points=s.n_initial_points, hyperopt=TPE_SETTINGS)
    if m.search == "hyperband":
        out.update(eta=s.eta, min_t=s.grace, brackets=brackets_of(m, s),
                   promotion="continue", sampler=m.sampler)
        if m.i_epoch:
            out["i_epoch"] = m.i_epoch
        if m.sampler == "model":
            out["random_fraction"] = BOHB_RANDOM_FRACTION
    if m.search == "fixed":
        out["config"] = {}
    return out
