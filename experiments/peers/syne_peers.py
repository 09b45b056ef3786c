"""Syne Tune peers: Syne Tune's schedulers on the same recorded learning curves, through its
simulator backend, with our budgets and logs (:mod:`experiments.peers.simulate`).

    python -m experiments.campaign --backend replay --scale small --methods "syne_asha_stop"

Syne Tune 0.16.0 (``requirements-peers.txt``, ``make peers``). Its schedulers, set like our
methods at the scale (:func:`experiments.methods.settings_for`: ``max_t`` = max resource,
``grace`` = grace period, ``eta`` = reduction factor; metric ``val_loss``, mode min, resource
attribute ``epoch``; random seed = our seed):

| peer             | Syne Tune                                 | ours, nearest        |
|------------------|-------------------------------------------|----------------------|
| syne_random      | RandomSearch, every trial to max_t        | random               |
| syne_asha_stop   | ASHA, stopping type, 1 bracket            | asha                 |
| syne_async_hb    | ASHA with Hyperband's brackets (stopping) | async_hyperband      |
| syne_bohb        | BOHB (ASHA + KDE), Hyperband's brackets   | bohb                 |

Not available (:data:`UNAVAILABLE`): promotion-type ASHA, synchronous Hyperband, MOBSTER and
HyperTune. Syne Tune 0.15 removed its legacy schedulers (``HyperbandScheduler`` with
``type="promotion"``/``"hypertune"``, ``SynchronousHyperbandScheduler``, the GP searchers
behind MOBSTER); 0.14.2, the last with them, requires ``numpy<1.27`` (and its GP searchers
``scipy<1.15.3``), which conflicts with our pins (numpy 2.4.6, scipy 1.17.1).

How a search runs. A :class:`CurveBackend` (a :class:`SimulatorBackend`, the simulator that
Syne Tune's ``BlackboxRepositoryBackend`` and ``UserBlackboxBackend`` build on) takes each
trial's learning curve from our curve function (``curve_fn(config) -> Recorded``: a table
lookup, synthetic curves, a surrogate) and reports one result per epoch at the recorded epoch
seconds; a recorded failure reports the epochs before it and fails after the failing epoch's
seconds. Syne Tune's ``Tuner`` runs the scheduler on ``n_workers`` simulated workers. Three
settings make its timeline that of our replays: no simulated delays (``SimulatorConfig`` all
0), the scheduler's real compute time does not advance simulated time (ours neither; its real
seconds are logged), and the tuner's sleep jumps to the next event instead of a fixed step.

Budgets and logs. Syne Tune runs until our budgets are surely spent on its timeline (its stop
criterion: the epoch, device-second or time budget reached, every trial started before then
ended). Its trials and decisions (configurations in start order, and for each the epoch where
the scheduler stopped it) are then replayed on our clock and trial contract
(:func:`experiments.peers.simulate.simulate`), which applies our budgets exactly as for every
method: the epoch budget (no trial started once finished trials hold it), the device-second
budget (the hard cut of :class:`experiments.trial.Ledger`: running trials stop after their
current epoch and it counts) and a deadline, and writes results.csv, learning_curves.csv and
metadata.json (``backend: "replay"``; ``peer``: library, version, scheduler real seconds, and
``timeline_drift_s``: the largest difference between a trial's start on Syne Tune's clock and
on ours, 0 up to rounding).

How the peers differ from our methods (:mod:`experiments.methods`):
- Proposals: Syne Tune 0.16's ``RandomSearcher`` draws from numpy's global generator, which is
  seeded with our seed for the run (and restored after it). No initial points
  (``points_to_evaluate=[]``): every configuration is drawn. ASHA's searcher draws with its own
  generator for the first 5 trials, then with the global one.
- ASHA's rule (Syne Tune's ``Bracket.on_result``, adapted from Ray Tune): at a rung a trial
  continues if the share of values recorded there (its own included) strictly better than its
  own is at most ``1/eta``; ours (``rule="ray"``) compares with the ``1 - 1/eta`` quantile of the
  values recorded before it. See "Decisions" below.
- Brackets: Syne Tune draws a trial's bracket at random, weighted by ``e**(rungs of the
  bracket)`` (most trials in the most aggressive bracket); ours hashes the job number
  uniformly over brackets.
- BOHB (Syne Tune): asynchronous (ASHA) brackets, and a KDE model fitted on the last value of
  every trial, whatever epoch it reached; random proposals until 36 trials have results (a
  "good" set of d + 1 = 18, :func:`kde_min_points`, and as many others), then a third of them;
  ours is synchronous Hyperband with a model fitted on the largest budget with d + 1 results.
  When the model starts is in the logs: metadata.json ``peer.model`` counts the replayed trials
  whose configuration the KDE proposed (:func:`_watch_model`), ``method_settings`` holds the
  searcher's settings as constructed (:func:`bohb_settings`).

Why BOHB needs 36 trials here, and why Syne Tune's defaults never start the model within our
budgets (Syne Tune 0.16.0, ``optimizer/schedulers/searchers/``). ``BOHB`` is ASHA with the
searcher ``"kde"``, which ASHA wraps in ``LastValueMultiFidelitySearcher``: random draws until
``num_init_random_draws`` = 5 trials have a result (not exposed by ``BOHB``), then at every
new result a fresh ``KernelDensityEstimator`` fitted on each trial's last value. That KDE
proposes from its model only when ``_check_data_shape_and_good_size`` passes: with N trials,
``n_good = max(num_min_data_points, top_n_percent * N // 100)`` and both ``n_good`` and
``N - n_good`` must exceed the number of hyperparameters d = 17 (its comment: "to meet the
input constraints of statsmodels.KDEMultivariate"); otherwise it draws at random.
``num_min_data_points`` defaults to d and may not be lower (an assert), so with the default
``n_good > d`` waits for ``15 % of N >= 18``: N >= 120 trials with a result, more than a
search holds within the pre-registered budget (50 to 90). With ``num_min_data_points = d + 1``
(HpBandSter's ``min_points_in_model``, ours) the model starts at N = 2 (d + 1) = 36
(:func:`kde_first_fit`), the earliest any setting ``BOHB`` exposes allows: no
``top_n_percent`` can make both sets exceed d with fewer trials, and ``points_to_evaluate``
only replaces random draws by fixed ones.

Decisions of the ASHA rules on the same recorded rung arrivals (``python
benchmarks/asha_decisions.py``: both rules decide every arrival given the values recorded
earlier at that rung). At small (eta 4, rungs at 1 and 4 epochs), of 5,545 arrivals (20
replayed ``asha`` and 20 replayed ``random`` searches on ``results/small/lctable.csv``, the
live ``asha`` search, 20 random searches on synthetic curves), Syne Tune continues 86 (1.6 %)
that ours stops and stops 21 (0.4 %) that ours continues; at smoke (eta 3, 400 arrivals on
synthetic curves) 14 (3.5 %) and none. The cause is the cutoff. With ``m`` values recorded
earlier at the rung, ``k`` of them strictly better than the arriving one, Syne Tune continues
iff ``k <= (m + 1) / eta`` (its own value counted among the ``m + 1``); ours iff the value is at
least as good as the ``1 - 1/eta`` quantile (numpy's linear interpolation) of the ``m`` earlier
values, which lies between their ``floor((m-1)/eta)``-th and ``ceil((m-1)/eta)``-th best
(counting from 0). So
Syne Tune is the more lenient by up to one rank for most ``m`` (eta 4, earlier losses 1, 2, 3,
then 1.8: one of four better, continues; ours: worse than the quantile 1.5, stops), ours where
``ceil((m-1)/eta) > floor((m+1)/eta)`` (eta 4, earlier 1, 3, then 1.4: ours continues below the
quantile 1.5, Syne Tune stops with one of three better), which never happens at eta 3. Ties
(63 of the 107 differences, all on the 11-configuration table, whose nearest-configuration
lookup repeats curves) go the same way: Syne Tune counts only strictly better values, so a
value tied with earlier ones ranks at the top of its group (earlier 1, 2, 2, then 2: Syne
Tune continues, ours stops). What counts as recorded at a rung is the same in both: every
trial of the bracket that reached it, stopped or not, in arrival order.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import logging
import math
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import syne_tune
import syne_tune.config_space as sp
from syne_tune import Tuner
from syne_tune.backend.simulator_backend.events import CompleteEvent, StopEvent
from syne_tune.backend.simulator_backend.simulator_backend import (
    SimulatorBackend,
    SimulatorConfig,
)
from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
from syne_tune.backend.simulator_backend.time_keeper import SimulatedTimeKeeper
from syne_tune.backend.trial_status import Status
from syne_tune.optimizer.baselines import ASHA, BOHB, RandomSearch
from syne_tune.optimizer.scheduler import SchedulerDecision
from syne_tune.tuner_logger import TunerLogger

from experiments import logs
from experiments.bookkeeping import MAX_TRIALS_PER_EPOCH
from experiments.methods import Settings
from experiments.peers.simulate import DEVICES, CurveFn, Run, simulate
from experiments.space import FLOAT, GRID, INT, INT_GRID, dimensions, problem_for
from experiments.trial import Recorded

VERSION = syne_tune.__version__
METRIC = "val_loss"  # minimised
RESOURCE = "epoch"  # Syne Tune's time_attr
ELAPSED = "elapsed_seconds"  # seconds since the trial started, at the end of each epoch
EPOCH_SECONDS = "epoch_seconds"
NO_DELAYS = SimulatorConfig(delay_on_trial_result=0.0, delay_complete_after_final_report=0.0,
                            delay_complete_after_stop=0.0, delay_start=0.0, delay_stop=0.0)
UNAVAILABLE = {
    "syne_asha_promote": "promotion-type ASHA (HyperbandScheduler type='promotion')",
    "syne_hyperband": "synchronous Hyperband (SynchronousHyperbandScheduler)",
    "syne_mobster": "MOBSTER (HyperbandScheduler with a GP searcher)",
    "syne_hypertune": "HyperTune (HyperbandScheduler type='hypertune')",
}
WHY_UNAVAILABLE = ("removed in Syne Tune 0.15; 0.14.2 has it but requires numpy<1.27, which "
                   "conflicts with numpy 2.4.6 of requirements.txt")


# ------------------------------------------------------------------------------ space
def syne_space(problem) -> dict:
    """The DeepHyper problem as a Syne Tune config space, one entry per hyperparameter, in its
    order (as :func:`experiments.peers.optuna_peers.optuna_distributions`).

    Log-uniform and uniform floats stay floats (``loguniform``/``uniform``); integer ranges
    become ``randint``/``lograndint``; an integer grid with a constant step (``16, 32, ...,
    128``) a ``finrange`` of its values; other numeric grids (``3, 6, 10, 13, 16``) an
    ``ordinal`` (kind "equal": drawn uniformly like ours, encoded in order); flags and names a
    ``choice``; a single value a constant.
    """
    out: dict = {}
    for d in dimensions(problem):
        if d.kind == FLOAT:
            out[d.name] = sp.loguniform(d.lower, d.upper) if d.log else \
                sp.uniform(d.lower, d.upper)
        elif d.kind == INT:
            out[d.name] = sp.lograndint(d.lower, d.upper) if d.log else \
                sp.randint(d.lower, d.upper)
        elif len(d.values) == 1:
            out[d.name] = d.values[0]
        elif d.kind == INT_GRID:
            out[d.name] = sp.finrange(d.lower, d.upper, len(d.values), cast_int=True)
        elif d.kind == GRID:
            out[d.name] = sp.ordinal(list(d.values), kind="equal")
        else:
            out[d.name] = sp.choice(list(d.values))
    return out


def domain_values(d) -> set | None:
    """The values a finite Syne Tune domain (or a constant) takes; None for a continuous one."""
    if isinstance(d, sp.FiniteRange):
        return set(d.values)
    if isinstance(d, sp.Categorical):
        return set(d.categories)
    if isinstance(d, sp.Domain):
        return None
    return {d}


# ------------------------------------------------------------------------------ registry
def hyperband_brackets(s: Settings) -> int:
    """Brackets of a Hyperband over ``grace * eta**k`` up to ``max_t`` (our async_hyperband's)."""
    return int(math.floor(math.log(s.max_t / s.grace) / math.log(s.eta) + 1e-9)) + 1


def kde_min_points(space: dict) -> int:
    """BOHB's smallest "good" set: d + 1 for d hyperparameters (Falkner et al. 2018; our
    ModelSampler's ``n_min``). Syne Tune's default, d, never fits its KDE (it needs more than
    d points on each side) until 15 % of the trials exceed d, about 120 trials here."""
    return sum(isinstance(d, sp.Domain) for d in space.values()) + 1


def kde_first_fit(d: int, num_min_data_points: int | None, top_n_percent: int = 15,
                  num_init_random_draws: int = 5) -> int:
    """The number of trials with a result from which Syne Tune's BOHB proposes from its KDE:
    the smallest N >= ``num_init_random_draws`` where ``n_good = max(num_min_data_points,
    top_n_percent * N // 100)`` and ``N - n_good`` both exceed d (its
    ``KernelDensityEstimator._check_data_shape_and_good_size``; ``None``: its default, d)."""
    n_min = d if num_min_data_points is None else num_min_data_points
    n = max(num_init_random_draws, 1)
    while True:
        good = max(n_min, top_n_percent * n // 100)
        if min(good, n - good) > d:
            return n
        n += 1


def bohb_settings(scheduler) -> dict:
    """What a Syne Tune BOHB scheduler was built with (read back from it, so the log says
    what ran): its KDE's settings, the wrapper's random draws, and when the model can start
    (:func:`kde_first_fit`)."""
    searcher = scheduler.searcher  # LastValueMultiFidelitySearcher around the KDE
    kw = {k: v for k, v in searcher.searcher_kwargs.items() if k != "points_to_evaluate"}
    d = sum(isinstance(v, sp.Domain) for v in scheduler.config_space.values())
    return {"searcher": "kde", "multi_fidelity": type(searcher).__name__,
            "num_init_random_draws": searcher.num_init_random_draws,
            "update_frequency": searcher.update_frequency, **kw, "hyperparameters": d,
            "model_from_trials": kde_first_fit(d, kw.get("num_min_data_points"),
                                               kw.get("top_n_percent", 15),
                                               searcher.num_init_random_draws)}


@dataclass(frozen=True)
class SynePeer:
    """A Syne Tune scheduler, set from our ``Settings``."""

    name: str
    summary: str
    scheduler: str  # "random" | "asha" | "bohb"
    brackets: str = "one"  # "one" | "hyperband": one per Hyperband bracket

    def n_brackets(self, s: Settings) -> int:
        return 1 if self.brackets == "one" else hyperband_brackets(s)

    def make_scheduler(self, space: dict, s: Settings, seed: int):
        common = dict(random_seed=int(seed), points_to_evaluate=[])
        if self.scheduler == "random":
            return RandomSearch(space, metrics=[METRIC], do_minimize=True, **common)
        multi = dict(metric=METRIC, do_minimize=True, time_attr=RESOURCE, max_t=s.max_t,
                     grace_period=s.grace, reduction_factor=s.eta,
                     brackets=self.n_brackets(s), **common)
        if self.scheduler == "asha":
            return ASHA(space, **multi)
        if self.scheduler == "bohb":
            return BOHB(space, num_min_data_points=kde_min_points(space), **multi)
        raise ValueError(f"peer {self.name}: unknown scheduler {self.scheduler!r}")

    def simulate(self, s: Settings, seed: int, curve_fn: CurveFn, workers: int = 2,
                 devices: int = DEVICES) -> tuple[Run, dict]:
        """Syne Tune runs its own simulator (:func:`simulate_syne`); the peer protocol of
        :func:`experiments.peers.simulate_with_info` for a record without a session."""
        return simulate_syne(self, s, seed, curve_fn, workers, devices)

    def describe(self, s: Settings) -> dict:
        out = {"max_t": s.max_t, "budget_epochs": s.budget, "time_budget_s": s.time_budget,
               "library": "syne_tune", "metric": METRIC, "mode": "min", "time_attr": RESOURCE,
               "points_to_evaluate": []}
        if self.scheduler == "random":
            return {**out, "scheduler": "RandomSearch"}
        out.update(scheduler="ASHA" if self.scheduler == "asha" else "BOHB", type="stopping",
                   grace_period=s.grace, reduction_factor=s.eta, brackets=self.n_brackets(s))
        if self.scheduler == "bohb":
            with _seeded_and_quiet(0):  # building it draws nothing that a run would see
                out.update(bohb_settings(self.make_scheduler(syne_space(problem_for(
                    s.scale)), s, 0)))
        return out


PEERS: dict[str, SynePeer] = {p.name: p for p in [
    SynePeer("syne_random", "Syne Tune RandomSearch, every trial to max_t", "random"),
    SynePeer("syne_asha_stop", "Syne Tune ASHA (stopping), random proposals, 1 bracket",
             "asha"),
    SynePeer("syne_async_hb", "Syne Tune ASHA with Hyperband's brackets (stopping)", "asha",
             brackets="hyperband"),
    SynePeer("syne_bohb", "Syne Tune BOHB: ASHA brackets + KDE proposals", "bohb",
             brackets="hyperband"),
]}


# ------------------------------------------------------------------------------ backend
class _DecisionFreeClock(SimulatedTimeKeeper):
    """Simulated time that the scheduler's real compute does not advance."""

    def real_time_since_last_recent_exit(self) -> float:
        return 0.0


class CurveBackend(SimulatorBackend):
    """Syne Tune's simulator backend over a curve function: a trial "runs" its recorded
    training, one result per epoch (``epoch``, ``val_loss``, ``train_loss``, ``epoch_seconds``,
    ``elapsed_seconds``) at the recorded epoch seconds, up to ``max_t`` epochs. A recorded
    failure reports the epochs before it and fails ``failure_seconds`` after the last one; a
    non-finite loss ends the curve the same way (the epoch runs, its value is not reported).
    """

    def __init__(self, curve_fn: CurveFn, max_t: int):
        super().__init__(entry_point=__file__, elapsed_time_attr=ELAPSED,
                         simulator_config=NO_DELAYS)
        self._time_keeper = _DecisionFreeClock()
        self.curve_fn, self.max_t = curve_fn, int(max_t)
        self.records: dict[int, Recorded] = {}  # trial id -> its recorded training
        self._fail_after: dict[int, float] = {}  # trial id -> seconds after its last result

    def _run_job_and_collect_results(self, trial_id: int, config: dict | None = None):
        config = self._trial_dict[trial_id].config if config is None else config
        rec = self.curve_fn({k: logs.native(v) for k, v in config.items()})
        self.records[trial_id] = rec
        results, elapsed = [], 0.0
        status, extra = Status.completed, None
        for epoch, (val, train, secs) in enumerate(list(rec.curve)[: self.max_t], 1):
            if not math.isfinite(float(val)):  # diverged in this epoch
                status, extra = Status.failed, float(secs)
                break
            elapsed += float(secs)
            results.append({RESOURCE: epoch, METRIC: float(val), "train_loss": float(train),
                            EPOCH_SECONDS: float(secs), ELAPSED: elapsed})
        if extra is None and len(results) < self.max_t:  # the recorded training failed
            status, extra = Status.failed, float(rec.failure_seconds)
        if extra:
            self._fail_after[trial_id] = extra
        return status, results

    def _process_start_event(self, trial_id: int, time_event: float, config: dict | None = None):
        super()._process_start_event(trial_id, time_event, config)
        extra = self._fail_after.pop(trial_id, 0.0)
        if extra:  # the failing epoch runs its seconds before the trial ends
            heap = self._simulator_state.event_heap
            for i, (t, n, event) in enumerate(heap):
                if isinstance(event, CompleteEvent) and event.trial_id == trial_id:
                    heap[i] = (t + extra, n, event)
            heapq.heapify(heap)

    def _stop_or_pause_trial(self, trial_id: int, status: str) -> None:
        # Syne Tune's, less its 1 ms clock advance after each stop and its completion (there
        # for stop delays, of which this simulator has none): otherwise every stop would push
        # the rest of the search 2 ms later than our clock.
        self._simulator_state.push(StopEvent(trial_id=trial_id), self._time_keeper.time())
        self._process_events_until_now()
        self._simulator_state.push(CompleteEvent(trial_id=trial_id, status=status),
                                   self._time_keeper.time())
        self._process_events_until_now()
        self._time_keeper.mark_exit()

    def next_event_time(self) -> float | None:
        heap = self._simulator_state.event_heap
        return heap[0][0] if heap else None


# ------------------------------------------------------------------------------ tuner
@dataclass
class Trace:
    """What Syne Tune's run decided, by trial id (= start order)."""

    configs: list[dict] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)  # Syne Tune's simulated seconds
    stop_after: dict[int, int] = field(default_factory=dict)  # epoch the scheduler stopped at
    ended: dict[int, float] = field(default_factory=dict)
    epochs: dict[int, int] = field(default_factory=dict)  # epochs reported so far
    spent: float = 0.0  # device-seconds of the epochs reported so far
    exhausted_at: float | None = None  # when our budgets are spent on Syne Tune's clock
    suggest_seconds: list[float] = field(default_factory=list)  # real seconds per trial
    scheduler_seconds: dict[str, list[float]] = field(default_factory=dict)
    from_model: list[bool] = field(default_factory=list)  # BOHB: trial proposed by its KDE


class _Callback(SimulatorCallback):
    """Syne Tune's simulator callback that records the trace, jumps to the next event when the
    tuner sleeps, and keeps no results file (our logs are written from the trace)."""

    def __init__(self, backend: CurveBackend, s: Settings, workers: int, devices: int):
        super().__init__()
        self.backend, self.s, self.workers, self.devices = backend, s, workers, devices
        self.trace = Trace()
        self.max_trials = MAX_TRIALS_PER_EPOCH * s.budget

    def _modify_stop_criterion(self, tuner) -> None:
        pass  # our stop criterion reads simulated time itself

    def store_results(self) -> None:
        pass

    def now(self) -> float:
        return self.backend.time_keeper.time()

    def on_tuning_sleep(self, sleep_time: float) -> None:
        t = self.backend.next_event_time()
        if t is not None and t > self.now():
            self.backend.time_keeper.advance_to(t)
        elif t is None:
            self.backend.time_keeper.advance(self._tuner_sleep_time)

    def on_start_trial(self, trial) -> None:
        assert trial.trial_id == len(self.trace.configs)
        self.trace.configs.append({k: logs.native(v) for k, v in trial.config.items()})
        self.trace.starts.append(self.now())

    def on_fetch_status_results(self, trial_status_dict, new_results) -> None:
        for tid, (_, status) in trial_status_dict.items():
            if status in (Status.completed, Status.failed, Status.stopped):
                self.trace.ended.setdefault(tid, self.now())

    def on_trial_result(self, trial, status, result, decision) -> None:
        tid, epoch = trial.trial_id, int(result[RESOURCE])
        self.trace.epochs[tid] = epoch
        self.trace.spent += float(result[EPOCH_SECONDS]) * self.devices
        if decision == SchedulerDecision.STOP:
            if epoch < self.backend.max_t:
                self.trace.stop_after[tid] = epoch
            self.trace.ended.setdefault(tid, self.now())

    def on_loop_end(self) -> None:
        t, s = self.trace, self.s
        if t.exhausted_at is None and (
                sum(t.epochs.get(i, 0) for i in t.ended) >= s.budget
                or (s.device_budget is not None and t.spent >= s.device_budget)
                or (s.time_budget is not None and self.now() >= s.time_budget)
                or len(t.starts) >= self.max_trials):
            t.exhausted_at = self.now()

    def done(self, status=None) -> bool:
        """The stop criterion: our budgets are spent, every trial started until then has
        ended, and ``workers`` more have started (slack for our clock)."""
        t = self.trace
        if t.exhausted_at is None:
            return False
        before = [i for i, t0 in enumerate(t.starts) if t0 <= t.exhausted_at]
        return (all(i in t.ended for i in before)
                and len(t.starts) - len(before) >= self.workers) \
            or len(t.starts) >= self.max_trials


class _Quiet(TunerLogger):
    """No console output from the tuner (a simulated search prints nothing)."""

    def __getattribute__(self, name):
        if name.startswith("print_"):
            return lambda *args, **kwargs: None
        return super().__getattribute__(name)


def _timed(scheduler, trace: Trace) -> None:
    """Measure the real seconds of every scheduler call the tuner makes."""
    for name in ("suggest", "on_trial_add", "on_trial_result", "on_trial_complete",
                 "on_trial_error", "on_trial_remove"):
        method, times = getattr(scheduler, name), trace.scheduler_seconds.setdefault(name, [])

        def call(*args, _method=method, _times=times, **kwargs):
            tic = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                _times.append(time.perf_counter() - tic)

        setattr(scheduler, name, call)


def _watch_model(scheduler, trace: Trace) -> None:
    """Note for every trial of a BOHB scheduler whether its KDE proposed it: the KDE sets
    ``good_kde`` only on the model's branch of its ``suggest`` (cleared before each call; a
    refit builds a new KDE without one), random draws leave it None."""
    outer = scheduler.searcher
    suggest = outer.suggest

    def call(*args, **kwargs):
        if outer.searcher is not None:
            outer.searcher.good_kde = None
        config = suggest(*args, **kwargs)
        if config is not None:
            trace.from_model.append(getattr(outer.searcher, "good_kde", None) is not None)
        return config

    outer.suggest = call


@contextlib.contextmanager
def _seeded_and_quiet(seed: int):
    """numpy's global generator seeded (Syne Tune's random searcher and bracket draws use it)
    and restored afterwards; Syne Tune's logging, prints and warnings silenced."""
    state = np.random.get_state()
    log = logging.getLogger("syne_tune")
    level = log.level
    np.random.seed(int(seed) % 2**32)
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # pandas' notice about Syne Tune's random_state arguments; statsmodels' KDE on a
            # one-level category
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        log.setLevel(level)
        np.random.set_state(state)


def run_tuner(peer: SynePeer, s: Settings, seed: int, curve_fn: CurveFn, workers: int = 2,
              devices: int = DEVICES) -> tuple[Trace, CurveBackend]:
    """Run ``peer`` in Syne Tune's simulator until our budgets are surely spent."""
    space = syne_space(problem_for(s.scale))
    backend = CurveBackend(curve_fn, s.max_t)
    callback = _Callback(backend, s, workers, devices)
    with _seeded_and_quiet(seed), tempfile.TemporaryDirectory(prefix="syne-") as tmp:
        scheduler = peer.make_scheduler(space, s, seed)
        _timed(scheduler, callback.trace)
        if peer.scheduler == "bohb":
            _watch_model(scheduler, callback.trace)
        tuner = Tuner(trial_backend=backend, scheduler=scheduler, stop_criterion=callback.done,
                      n_workers=workers, sleep_time=0, callbacks=[callback],
                      max_failures=callback.max_trials + 1, save_tuner=False,
                      tuner_name=f"{peer.name}-seed{seed}", suffix_tuner_name=False,
                      trial_backend_path=tmp, output_logger=_Quiet())
        tuner.tuner_path = Path(tmp)  # its metadata.json, not under ~/syne-tune
        tuner.run()
    t = callback.trace
    t.suggest_seconds = [a + b for a, b in zip(t.scheduler_seconds["suggest"],
                                               t.scheduler_seconds["on_trial_add"])]
    return t, backend


# ------------------------------------------------------------------------------ replay
class _Job:
    """A Syne Tune trial as a job of the trial contract: stopped where the scheduler stopped."""

    def __init__(self, number: int, config: dict, stop_after: int | None):
        self.id, self.parameters, self.stop_after = number, config, stop_after
        self.epoch = 0

    def record(self, epoch: int, objective: float) -> None:
        self.epoch = epoch

    def stopped(self) -> bool:
        return self.epoch == self.stop_after


class TraceSession:
    """Syne Tune's trials, in start order, as a session of
    :func:`experiments.peers.simulate.simulate` (its ``ask`` hands out the next one)."""

    def __init__(self, trace: Trace, records: dict[int, Recorded]):
        self.trace, self.records, self.next = trace, records, 0

    def ask(self) -> tuple[int, dict]:
        i = self.next
        if i >= len(self.trace.configs):
            raise RuntimeError(f"Syne Tune's run ended after {i} trials, before our budgets")
        self.next += 1
        return i, self.trace.configs[i]

    def curve(self, config: dict) -> Recorded:
        return self.records[self.next - 1]  # the trial just asked for

    def job(self, handle: int, number: int, config: dict) -> _Job:
        return _Job(number, config, self.trace.stop_after.get(handle))

    def tell(self, handle: int, outcome: dict) -> None:
        pass  # Syne Tune was told in its own run


def simulate_syne(peer: SynePeer, s: Settings, seed: int, curve_fn: CurveFn, workers: int = 2,
                  devices: int = DEVICES) -> tuple[Run, dict]:
    """Simulate ``peer`` for one seed: Syne Tune's run, replayed on our clock and budgets.
    Returns the :class:`experiments.peers.simulate.Run` and the peer's metadata."""
    tic = time.perf_counter()
    trace, backend = run_tuner(peer, s, seed, curve_fn, workers, devices)
    tuner_seconds = time.perf_counter() - tic
    session = TraceSession(trace, backend.records)
    run = simulate(session, s, session.curve, workers, devices)
    # decision time per trial: Syne Tune's suggest (+ on_trial_add), not our replay's ask
    run.decision_times = trace.suggest_seconds[: len(run.decision_times)]
    drift = max((abs(r["m:trial_start"] - trace.starts[r["job_id"]]) for r in run.results),
                default=0.0)
    per_call = {k: logs.summarize_times(v) for k, v in trace.scheduler_seconds.items()}
    info = {"library": "syne_tune", "version": VERSION, "backend": type(backend).__name__,
            "simulator_delays": 0.0, "trials_simulated": len(trace.configs),
            "tuner_real_seconds": tuner_seconds,
            "scheduler_real_seconds": float(sum(map(sum, trace.scheduler_seconds.values()))),
            "scheduler_calls": per_call, "timeline_drift_s": drift}
    if peer.scheduler == "bohb":  # of the trials replayed on our clock and budgets
        asked = trace.from_model[: len(run.decision_times)]
        info["model"] = {"trials": len(asked), "from_model": int(sum(asked)),
                         "first_from_model": asked.index(True) if any(asked) else None}
    return run, info
