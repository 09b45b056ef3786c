"""How many workers one manager keeps busy: the study's methods from 2 to 1,024 simulated
workers with the manager's decision time on the clock, and decentralised search beside them.

    python -m experiments.scaling measure            # decision times on this machine (minutes)
    python -m experiments.scaling simulate --table results/small/lctable.csv --processes 2
    make scaling                                     # both (measure only when its file is
                                                     # missing), then analysis.scaling

``measure`` times the manager's real work per decision for every method: tell the finished
trials and ask for new ones (the model fit included; each timed apart) at histories of n = 16,
32, ... told results, for k = 1, 4 and 16 trials per decision, plus what the driver does after
each decision whatever the method (rewrite results.csv, :func:`experiments.driver.write_results`;
read the device ledger from the process evaluator's shared storage). Output, measured on this
machine: ``results/<scale>/scaling/decision_times.csv`` and ``.json`` (machine, load, versions).

``simulate`` replays searches of every study variant (:data:`VARIANTS`) x workers x seeds on a
learning-curve table and writes ``runs.csv`` (one row per search), ``incumbents.csv`` (every
improvement of the incumbent: time, device-seconds, loss), ``decisions.csv`` (charged decision
time by trials so far) and ``cost_curve.csv`` (the fitted curve it charged) in the same
folder; :mod:`analysis.scaling` turns them into ``paper_figures/<scale>/scaling/``.

The model, and what it assumes:

1. Trials are the table's: a trial's epochs are those of the nearest table configuration, run
   through the per-epoch trial contract (:class:`experiments.trial.TrialRun`: ASHA rungs, the
   device cut) on the discrete-event clock (:class:`experiments.clock.Clock`), as in
   ``make replay``. Their seconds are scaled to the paper: every epoch x ``s``, with
   ``s = PAPER_MAX_T x PAPER_EPOCH_S / (the table's median full training)``, so the median
   configuration trains to max_t in 200 epochs of :data:`PAPER_EPOCH_S` seconds (ASSUMED: the
   study does not report its epoch time) and relative costs and the rungs' shape (1/16, 1/4,
   1 of a training) stay the table's. Utilisation depends on that choice only through
   ``W x D / (trial length)``: halve the epoch time and every saturation point moves to half
   the workers. The study runs both :data:`EPOCHS_S`: the assumed 60 s and 10 times shorter
   trials (6 s).
2. The manager is one serial resource. A decision tells the trials that ended, checks the
   budget, asks for one configuration per free worker and rewrites results.csv; it takes
   ``D(n, k)`` real seconds (n: results told so far, k: configurations told or asked), read
   from the curve fitted to ``decision_times.csv`` (:class:`CostModel`), and the simulated
   clock advances by it: trials that end meanwhile wait for the next decision, and the
   configurations asked start when the decision ends. Workers wait; a busy manager delays
   dispatch. The simulated results depend on the measured times only through that curve: the
   same curve and table give byte-identical CSVs.
3. The model fits are capped: a model-based method (CBO, the study's GP or TPE) is told its
   first :data:`N_STEER` results and proposes its first N_STEER configurations with its real
   model, as ``make replay`` does; after that its model is frozen and proposals are random
   configurations, while its decisions are still charged at the fitted cost of refitting on
   every result (refitting 1,024-worker searches for real would take days). At 48 workers
   and more the first wave of configurations is random anyway (every method asks its first W
   configurations before any result), so the model steers few of a large search's trials in
   either case.
4. Decentralised search as DeepHyper 0.13 does it (it dropped its MPI DBO class): k CBO
   replicas, one evaluator each, all on one storage under one search id (``Evaluator(...,
   storage=shared, search_id=shared)``). Each replica has its share of the workers (one node
   of :data:`WORKERS_PER_NODE`), its own model and its own decisions; job ids, ASHA rung
   values and the device ledger are shared. A replica decides when one of its own trials ends
   (DeepHyper's ``gather`` waits for a job of its own evaluator) and then tells every result
   published since its last decision, its own and the others' (what ``gather`` reads from the
   shared storage); it is charged the same curve at the n it has been told.
5. Budget: an allocation of W workers. Device-seconds ``max(MIN_TRAININGS, TRAININGS_PER_WORKER
   x W)`` median full trainings (32 at 2 and 8 workers: the replay's 3,700 s at small; two
   per worker from 16 workers on), the hard cut of every search; a walltime of
   :data:`WALLTIME_FACTOR` times the budget's duration at full utilisation (a saturated manager
   ends there, with budget left).

Utilisation (what the manager controls) = 1 - (worker-seconds spent waiting for a trial) /
(W x the time the search stopped dispatching: its budget spent or its walltime over); a worker
waits from the end of its trial (or from 0) until the decision that gives it the next one has
ended. ``allocation_use`` = device-seconds trained / (W x the end of the last trial): the share
of the booked GPU time that trained, the tail after the stop and failed epochs included.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from experiments import dhcompat, logs
from experiments.bookkeeping import Books, Budget
from experiments.cli import CliError, Parser, add_seeds, positive_int, run_main
from experiments.clock import Clock
from experiments.dhcompat import Evaluator
from experiments.methods import build, get_method, settings_for
from experiments.schedulers import ASHAStopper
from experiments.space import problem_for
from experiments.trial import SPENT_KEY, Ledger, Recorded, TrialRun, replay_epochs

# ----------------------------------------------------------------------------- the design
PAPER_MAX_T = 200  # epochs of a full training in the study (mlpf.scales "paper")
PAPER_EPOCH_S = 60.0  # ASSUMED seconds of one paper-scale epoch of a trial (not reported)
EPOCHS_S = (PAPER_EPOCH_S, PAPER_EPOCH_S / 10)  # the study: assumed, and 10x shorter trials
WORKERS = (2, 8, 48, 192, 1024)
SEEDS = (0, 1, 2)
MIN_TRAININGS = 32  # device budget floor in median full trainings (the replay's at small)
TRAININGS_PER_WORKER = 2  # "a few trainings per worker" from 16 workers on
WALLTIME_FACTOR = 2.0  # walltime = this x the budget's duration at full utilisation
N_STEER = 32  # results a model is told, and proposals it makes, for real (see 3. above)
RANDOM_BLOCK = 64  # random configurations sampled at a time (Steered)
WORKERS_PER_NODE = 4  # decentralised: one CBO replica per node of this many workers
STEER_SEED_OFFSET = 104729  # the random proposals after the models: another stream
WAKE = 1 << 40  # clock tie order: a manager acts after every trial event of its instant
UNLIMITED_EPOCHS = 10**9  # the epoch budget of a scaling search: the device budget binds

# measure
MEASURE_K = (1, 4, 16)  # trials told and asked per measured decision
MEASURE_GRID = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
MEASURE_REPS = 3  # decisions timed per point (their median is kept)
MAX_MEASURED_DECISION_S = 2.0  # a method's grid ends after its first decision this slow
MEASURE_SECONDS = 90.0  # ... or after this much measuring (growth included)
TELL, ASK, OVERHEAD = "tell", "ask", "overhead"  # the parts of a decision
LOG_WHAT = "results_csv"  # the results.csv rewrite after a decision (every method)
STORAGE_WHAT = "ledger_read"  # the device ledger read from the shared storage (every method)
OVERHEADS = (LOG_WHAT, STORAGE_WHAT)

# file names and columns (analysis.scaling reads them; tests/experiments/test_scaling.py checks
# that both sides name the same columns)
DECISION_TIMES_CSV = "decision_times.csv"
DECISION_TIMES_JSON = "decision_times.json"
RUNS_CSV = "runs.csv"
INCUMBENTS_CSV = "incumbents.csv"
DECISIONS_CSV = "decisions.csv"
COST_CURVE_CSV = "cost_curve.csv"
MANIFEST_JSON = "scaling.json"
DT_COLUMNS = ("what", "part", "n", "k", "seconds", "reps")
RUN_COLUMNS = ("epoch_s", "variant", "method", "managers", "workers", "seed", "budget_device_s",
               "walltime_s", "trials", "epochs", "device_s", "stop_s", "end_s", "utilisation",
               "allocation_use", "stopped_by", "decisions", "decision_s", "decision_max_s",
               "manager_busy", "wait_s", "best", "told")
INCUMBENT_COLUMNS = ("epoch_s", "variant", "workers", "seed", "t_s", "device_s", "loss")
DECISION_COLUMNS = ("epoch_s", "variant", "workers", "seed", "n_lo", "decisions", "asked", "told",
                    "seconds")
CURVE_COLUMNS = ("what", "part", "n", "k", "seconds")


@dataclass(frozen=True)
class Variant:
    """A row of the study: a registered method (:mod:`experiments.methods`) under a manager
    layout. ``workers_per_manager``: None for one central manager, else one replica per that
    many workers (decentralised)."""

    name: str
    method: str
    summary: str
    workers_per_manager: int | None = None

    def managers(self, workers: int) -> int:
        if self.workers_per_manager is None:
            return 1
        return max(1, math.ceil(workers / self.workers_per_manager))


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("random", "random", "random search, one central manager"),
    Variant("hyperband", "hyperband", "synchronous Hyperband, one central manager"),
    Variant("asha", "asha", "random search + ASHA, one central manager"),
    Variant("asha_bo", "asha_bo", "ASHA + BO (DeepHyper CBO), one central manager"),
    Variant("asha_gp", "asha_gp", "ASHA + BO (the study's GP), one central manager"),
    Variant("asha_tpe", "asha_tpe", "ASHA + BO (the study's TPE), one central manager"),
    Variant("asha_bo_dec", "asha_bo", f"ASHA + BO decentralised: one CBO replica per node of "
            f"{WORKERS_PER_NODE} workers, all on one storage", WORKERS_PER_NODE),
]}
# longest first, so that parallel processes finish together
COST_ORDER = ("asha_gp", "asha_tpe", "asha_bo_dec", "asha_bo", "asha", "hyperband", "random")


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}") \
            from None


def model_based(method: str) -> bool:
    """Whether a method's proposals come from a model fitted on its results."""
    return get_method(method).search in ("cbo", "skopt_gp", "hyperopt_tpe")


def scaling_dir(scale: str) -> Path:
    """Raw inputs and outputs of the study: ``results/<scale>/scaling/``."""
    from mlpf.paths import RESULTS_DIR

    return RESULTS_DIR / scale / "scaling"


# ----------------------------------------------------------------------------- time and budget
def median_training(table) -> float:
    """Device-seconds of the table's median full training (configurations trained to max_t)."""
    full = [sum(float(c[2]) for c in e.curve) for e in table.entries
            if len(e.curve) >= table.max_t and e.failure is None]
    return float(statistics.median(full))


def time_scale(table, paper_epoch_s: float = PAPER_EPOCH_S) -> float:
    """``s``: paper seconds per table second (the median training lasts PAPER_MAX_T epochs)."""
    return PAPER_MAX_T * paper_epoch_s / median_training(table)


def allocation(workers: int, training_s: float) -> tuple[float, float]:
    """(device-seconds budget, walltime) of a search on ``workers`` workers, in the clock's
    seconds; ``training_s``: the median full training in the same seconds."""
    trainings = max(MIN_TRAININGS, TRAININGS_PER_WORKER * workers)
    budget = trainings * training_s
    return budget, WALLTIME_FACTOR * budget / workers


# ----------------------------------------------------------------------------- cost model
@dataclass(frozen=True)
class Curve:
    """Seconds against history size n, piecewise linear in log-log between measured points;
    flat below the first, continued with the last segment's slope (at least 0) above the last:
    an underestimate where the cost grows faster than measured (a GP's n^3 fit)."""

    n: tuple[float, ...]
    seconds: tuple[float, ...]

    def __post_init__(self):
        object.__setattr__(self, "_xy", ([math.log(v) for v in self.n],
                                         [math.log(max(v, 1e-9)) for v in self.seconds]))

    def __call__(self, n: float) -> float:
        x = math.log(max(float(n), 1.0))
        xs, ys = self._xy
        if len(xs) == 1 or x <= xs[0]:
            return float(self.seconds[0])
        i = min(bisect.bisect_left(xs, x), len(xs) - 1)  # the segment (i - 1, i), or the last
        slope = (ys[i] - ys[i - 1]) / (xs[i] - xs[i - 1])
        if x > xs[-1]:
            slope = max(0.0, slope)
        return math.exp(ys[i - 1] + slope * (x - xs[i - 1]))


class CostModel:
    """Real seconds of one manager decision after n told results that tells ``told`` results
    and asks ``asked`` configurations: ``T(n, told) + A(n, asked) + O(n)``.

    T and A are the method's tell and ask, each measured at k = :data:`MEASURE_K` and
    interpolated linearly in k (beyond the largest measured k: the last slope, at least 0), so
    the curve keeps what each method's cost does with k: a CBO fits once per tell whatever k
    and answers a batch ask from one prediction, the study's GP fits once per told result and
    once per asked configuration after the first (constant liar), TPE runs one suggestion per
    configuration. O is what the driver does after every decision whatever the method
    (:data:`OVERHEADS`); a decision that neither tells nor asks costs nothing."""

    def __init__(self, rows: list[dict]):
        pts: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
        for r in rows:
            pts.setdefault((str(r["what"]), str(r["part"]), int(r["k"])), []).append(
                (float(r["n"]), float(r["seconds"])))
        self.curves = {key: Curve(tuple(n for n, _ in sorted(v)), tuple(x for _, x in sorted(v)))
                       for key, v in pts.items()}
        self.ks: dict[tuple[str, str], list[int]] = {}  # measured k of each (what, part)
        for w, p, k in sorted(self.curves):
            self.ks.setdefault((w, p), []).append(k)

    @classmethod
    def read(cls, path: Path) -> CostModel:
        import pandas as pd

        if not Path(path).exists():
            raise FileNotFoundError(f"no decision times at {path}; measure them with "
                                    "`python -m experiments.scaling measure`")
        return cls(pd.read_csv(path).to_dict("records"))

    def part(self, what: str, part: str, n: float, k: int) -> float:
        """Seconds of ``part`` (tell | ask | overhead) of ``what`` for k trials at n."""
        if k <= 0:
            return 0.0
        ks = self.ks.get((what, part))
        if not ks:
            raise ValueError(f"{what}: no measured {part} times")
        ys = [self.curves[(what, part, kk)](n) for kk in ks]
        if k <= ks[0] or len(ks) == 1:
            return ys[0] if k <= ks[0] else ys[0] * k / ks[0]
        if k <= ks[-1]:
            return float(np.interp(k, ks, ys))
        return ys[-1] + max(0.0, (ys[-1] - ys[-2]) / (ks[-1] - ks[-2])) * (k - ks[-1])

    def overhead(self, n: float) -> float:
        return sum(self.part(w, OVERHEAD, n, 1) for w in OVERHEADS
                   if (w, OVERHEAD, 1) in self.curves)

    def seconds(self, method: str, n: float, told: int, asked: int) -> float:
        if not told and not asked:
            return 0.0
        return self.part(method, TELL, n, told) + self.part(method, ASK, n, asked) + \
            self.overhead(n)

    def table(self, methods, ns=(1, 10, 100, 1000, 10_000, 100_000),
              ks=(1, 4, 16, 64)) -> list[dict]:
        """The charged curve on a grid (``cost_curve.csv``)."""
        out = []
        for n in ns:
            for m in methods:
                for part in (TELL, ASK):
                    out += [{"what": m, "part": part, "n": n, "k": k,
                             "seconds": self.part(m, part, n, k)} for k in ks]
            out += [{"what": w, "part": OVERHEAD, "n": n, "k": 1,
                     "seconds": self.part(w, OVERHEAD, n, 1)} for w in OVERHEADS
                    if (w, OVERHEAD, 1) in self.curves]
        return out


class ConstantCost:
    """``D = seconds`` for every decision that tells or asks (tests; 0: a free manager, as
    in ``make replay``)."""

    def __init__(self, seconds: float = 0.0):
        self.value = float(seconds)

    def seconds(self, method: str, n: float, told: int, asked: int) -> float:
        return self.value if told or asked else 0.0


# ----------------------------------------------------------------------------- simulation parts
class RunningLedger(Ledger):
    """The device ledger with its total kept as it changes (O(1) per epoch instead of a sum
    over every trial of the search: 10^4-trial searches would be quadratic)."""

    def __init__(self):
        super().__init__()
        self._total = 0.0

    def add(self, job_id, device_s: float) -> float:
        self._total += float(device_s) - self.spent.get(job_id, 0.0)
        self.spent[job_id] = float(device_s)
        return self._total

    def total(self) -> float:
        return self._total


def indexed_storage():
    """DeepHyper's in-memory storage with an index per metadata key, so that reading one
    ASHA rung's values costs the values of that rung, not a scan of every job (same answers)."""
    from deephyper.evaluator.storage import MemoryStorage

    class IndexedStorage(MemoryStorage):
        def __init__(self):
            super().__init__()
            self._index: dict[tuple, dict] = {}

        def store_job_metadata(self, job_id, key, value):
            super().store_job_metadata(job_id, key, value)
            self._index.setdefault((logs.job_search(job_id), key), {})[job_id] = value

        def load_metadata_from_all_jobs(self, search_id, key):
            return list(self._index.get((search_id, key), {}).values())

    return IndexedStorage()


class SimEvaluator(Evaluator):
    """A replica's DeepHyper evaluator: it creates the replica's jobs in the shared storage and
    search (what decentralised DeepHyper searches share); the simulation runs them."""

    async def execute(self, job):  # jobs run on the simulated clock, never on asyncio
        raise NotImplementedError


class RandomPool:
    """Random configurations of a search's space, ``block`` sampled at a time and handed out
    in order: the same distribution at a fraction of ConfigSpace's cost per configuration
    (``block`` 1: exactly the search's own stream, one ``ask`` per request)."""

    def __init__(self, search, block: int = 1):
        self.search, self.block = search, max(1, int(block))
        self.ready: list[dict] = []

    def take(self, n: int) -> list[dict]:
        if n <= 0:
            return []
        if self.block == 1:
            return self.search.ask(n)
        while len(self.ready) < n:
            self.ready += self.search.ask(max(self.block, n - len(self.ready)))
        out, self.ready = self.ready[:n], self.ready[n:]
        return out


class Steered:
    """A method's search as the simulation asks it. Model-based: the real search is told its
    first ``n_steer`` results and proposes its first ``n_steer`` configurations (what the
    model costs for real stays bounded however many results a busy manager tells at once);
    then it is frozen and proposals come from ``pool`` (random). Random search: its own
    configurations through ``pool``. Other methods (Hyperband): the real search throughout."""

    def __init__(self, search, model: bool, n_steer: int, pool: RandomPool | None):
        self.search, self.model, self.n_steer, self.pool = search, model, n_steer, pool
        self.told = self.asked = 0

    @property
    def steering(self) -> bool:
        return not self.model or (self.told < self.n_steer and self.asked < self.n_steer)

    def tell(self, results: list) -> None:
        if not self.model:
            self.search.tell(results)
        elif self.steering:
            self.search.tell(results[:self.n_steer - self.told])
        self.told += len(results)

    def ask(self, n: int) -> list[dict]:
        if n <= 0:
            return []
        if self.model and self.steering:
            m = min(n, self.n_steer - self.asked)
            self.asked += m
            return self.search.ask(m) + self.pool.take(n - m)
        return self.pool.take(n) if self.pool is not None else self.search.ask(n)


def fast_rungs(stopper):
    """``stopper`` (an :class:`experiments.schedulers.ASHAStopper`, or None) as the
    simulation runs it: the same rule and rungs, its rung values read without a Python
    ``isinstance(v, numbers.Number)`` per value (quadratic at 10^4 trials), which every value
    passes: they are floats that the stopper itself stored."""
    if not isinstance(stopper, ASHAStopper):
        return stopper

    args = dict(max_steps=stopper.max_steps, grace=stopper.grace, eta=stopper.eta,
                brackets=stopper.brackets, rule=stopper.rule)

    class FastRungs(ASHAStopper):
        def _get_competiting_objectives(self) -> list:  # DeepHyper's name
            return list(self.job.storage.load_metadata_from_all_jobs(
                logs.job_search(self.job.id), self.rung_key(self.bracket, self._rung)))

        def __deepcopy__(self, memo):  # each job's copy of the (never used) template: a new one
            return FastRungs(**args)

    return FastRungs(**args)


@dataclass
class _Trial:
    """A trial of the simulation: its job, owner, worker and epoch generator."""

    number: int
    job: object  # DeepHyper's job (its output is set when the trial ends)
    rjob: object  # the running job the trial reports to (record/stopped: the stopper)
    config: dict
    replica: int
    worker: int
    freed: float  # when its worker became free (dispatch wait = start - freed)
    steps: object = None
    run: TrialRun | None = None


@dataclass
class _Replica:
    """One manager: its search, evaluator, free workers, busy time and what it has seen."""

    index: int
    search: Steered
    ev: SimEvaluator
    stopper: object  # its jobs' stopper (None, or ASHA's rungs in the shared storage)
    workers: tuple  # its worker ids (a node's, decentralised: consecutive)
    free: list  # heap of its free worker ids
    done: list = field(default_factory=list)  # its trials that ended, not gathered yet
    seen: int = 0  # results of the shared feed it has been told
    busy_until: float = 0.0
    wake_pending: bool = False
    decision_s: float = 0.0
    decisions: int = 0


@dataclass(frozen=True)
class _Wake:
    replica: int


@dataclass
class Outcome:
    """One simulated search: its runs.csv row, incumbent improvements, decisions by n."""

    row: dict
    incumbents: list[dict]
    decisions: list[dict]
    trials: list[dict] = field(default_factory=list)  # per trial (tests): number, replica, ...


class Simulation:
    """One search of a :class:`Variant` on ``workers`` simulated workers (see the module
    docstring). ``curve(config) -> Recorded`` gives a trial's recorded training in the clock's
    seconds; ``cost.seconds(method, n, told, asked)`` a decision's seconds."""

    def __init__(self, variant: Variant, workers: int, seed: int, settings, curve, cost, *,
                 scale: str, n_steer: int = N_STEER, block: int = 1,
                 log_dir: str | None = None, keep_trials: bool = False):
        self.v, self.workers, self.seed, self.s = variant, workers, seed, settings
        self.curve, self.cost, self.keep_trials = curve, cost, keep_trials
        self.method = get_method(variant.method)
        self.clock = Clock(workers)
        self.ledger = RunningLedger()
        self.books = Books(Budget(settings.budget, settings.time_budget, settings.device_budget,
                                  max_failures=0))
        self.storage = indexed_storage()
        self.search_id = self.storage.create_new_search()
        self.feed: list[tuple[dict, object]] = []  # every gathered result, in order
        self.freed = [0.0] * workers
        self.gaps: list[tuple[float, float]] = []  # (worker freed, its next trial's start)
        self.t_stop: float | None = None  # when the search stopped dispatching
        self.trained: dict[int, int] = {}  # Hyperband trial -> epochs in its checkpoint
        self.epochs = self.running = self.decisions = 0
        self.decision_max = 0.0
        self.best, self.t_last = math.inf, 0.0
        self.incumbents: list[dict] = []
        self.bins: dict[int, list] = {}  # log2(n) -> [decisions, asked, told, seconds]
        self.trial_rows: list[dict] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="scaling-") if log_dir is None else None
        log_dir = log_dir or self._tmp.name
        problem = problem_for(scale)
        k = variant.managers(workers)
        share = [[int(w) for w in ws] for ws in np.array_split(np.arange(workers), k)]
        model = model_based(variant.method)
        pool = None  # model-based: one random stream after the models, shared by the replicas
        if model:
            from deephyper.hpo import RandomSearch

            pool = RandomPool(RandomSearch(problem, random_state=seed + STEER_SEED_OFFSET,
                                           log_dir=log_dir, checkpoint_history_to_csv=False),
                              block)
        self.replicas = []
        for r in range(k):
            search = build(variant.method, problem, settings, seed + 7919 * r, log_dir)
            ev = SimEvaluator(None, num_workers=len(share[r]), storage=self.storage,
                              search_id=self.search_id)
            search.check_evaluator(ev)
            dhcompat.attach(ev, search)
            own = pool if model else RandomPool(search, block) \
                if get_method(variant.method).search == "random" else None
            self.replicas.append(_Replica(r, Steered(search, model, n_steer, own), ev,
                                          fast_rungs(dhcompat.stopper(search)),
                                          tuple(share[r]), list(share[r])))

    # ---------------------------------------------------------------- events
    def run(self) -> Outcome:
        for rep in self.replicas:
            self._wake(rep, 0.0)
        while self.clock.pending:
            self.clock.advance(self._handle)
        if self._tmp is not None:
            self._tmp.cleanup()
        return self._outcome()

    def _handle(self, item) -> None:
        if isinstance(item, _Wake):
            self._decide(self.replicas[item.replica])
        else:
            self._step(item)

    def _wake(self, rep: _Replica, delay: float) -> None:
        rep.wake_pending = True
        self.clock.schedule(delay, WAKE + rep.index, _Wake(rep.index))

    def _steps(self, tr: _Trial):
        """The trial from its start (the end of the decision that asked it): its epochs
        through the trial contract, as :func:`experiments.backends.replay.replay_trial`."""
        params = dict(tr.rjob.parameters)
        ckpt = params.get(logs.HB_TRIAL) if self.method.checkpoints else None

        def write_row(row: dict) -> None:
            if ckpt is not None:
                self.trained[ckpt] = row[logs.EPOCH]

        tr.run = run = TrialRun(tr.rjob, self.s.max_t, self.clock, deadline=self.s.time_budget,
                                write_row=write_row, worker=tr.worker, ledger=self.ledger,
                                device_budget=self.s.device_budget)
        rec = self.curve(run.hp)
        run.extra_meta = dict(rec.meta)
        first = self.trained.get(ckpt, 0) + 1 if ckpt is not None else 1
        return (yield from replay_epochs(run, rec, first))

    def _step(self, tr: _Trial) -> None:
        try:
            self.clock.schedule(next(tr.steps), tr.number, tr)
        except StopIteration as stop:
            self._finish(tr, stop.value)

    def _finish(self, tr: _Trial, outcome: dict) -> None:
        now = self.clock.now
        meta, obj = outcome["metadata"], outcome["objective"]
        # DeepHyper's job takes the metadata out of the dict it is given: give it a copy
        dhcompat.set_output(self.replicas[tr.replica].ev, tr.job, {**outcome, "metadata": {**meta}})
        if meta.get(logs.STATUS) in (logs.STATUS_OK, logs.STATUS_STOPPED) and \
                isinstance(obj, (int, float)) and -obj < self.best:
            self.best = -float(obj)
            self.incumbents.append({"variant": self.v.name, "workers": self.workers,
                                    "seed": self.seed, "t_s": now,
                                    "device_s": self.ledger.total(), "loss": self.best})
        if self.keep_trials:
            self.trial_rows.append({"number": tr.number, "replica": tr.replica,
                                    "worker": tr.worker, "start": tr.run.t_start, "end": now,
                                    "objective": obj, "config": tr.config,
                                    "epochs": meta.get(logs.EPOCHS)})
        self.t_last = max(self.t_last, now)
        self.running -= 1
        self.freed[tr.worker] = now
        rep = self.replicas[tr.replica]
        heapq.heappush(rep.free, tr.worker)
        rep.done.append((tr, outcome))
        if not rep.wake_pending:
            self._wake(rep, 0.0)

    # ---------------------------------------------------------------- a manager's decision
    def _decide(self, rep: _Replica) -> None:
        """Gather, tell, check the budget, ask, submit; the clock charges the decision.

        A manager decides when one of its own trials has ended (or at the start), as
        DeepHyper's ``gather`` waits for a job of its own evaluator; it then also tells what
        the other replicas published meanwhile."""
        rep.wake_pending = False
        if not rep.done and rep.decisions:
            return
        rep.decisions += 1
        now = self.clock.now
        for tr, outcome in rep.done:  # gather: its own trials (their results are published)
            self.epochs += int(outcome["metadata"].get(logs.EPOCHS) or 0)
            self.books.record(outcome["metadata"], outcome["objective"])
            self.feed.append((tr.config, outcome["objective"]))
        rep.done = []
        results = self.feed[rep.seen:]  # every result published since it last looked
        rep.seen = len(self.feed)
        if results:
            rep.search.tell(results)
        left = self.books.check(epochs=self.epochs, now=now, device=self.ledger.total(),
                                trials=self.books.trials + self.running)
        if not left and self.t_stop is None:
            self.t_stop = now
        configs = rep.search.ask(len(rep.free)) if rep.free and left else []
        if not results and not configs:
            return
        d = float(self.cost.seconds(self.v.method, rep.search.told, len(results),
                                    len(configs)))
        rep.busy_until, rep.decision_s = now + d, rep.decision_s + d
        self.decisions += 1
        self.decision_max = max(self.decision_max, d)
        b = self.bins.setdefault(int(math.log2(max(rep.search.told, 1))), [0, 0, 0, 0.0])
        b[0], b[1], b[2], b[3] = b[0] + 1, b[1] + len(configs), b[2] + len(results), b[3] + d
        for cfg in configs:
            worker = heapq.heappop(rep.free)
            job = dhcompat.new_job(rep.ev, cfg)
            tr = _Trial(logs.job_number(job.id), job, job.create_running_job(rep.stopper), cfg,
                        rep.index, worker, self.freed[worker])
            tr.steps = self._steps(tr)
            self.gaps.append((self.freed[worker], now + d))
            self.running += 1
            self.clock.schedule(d, tr.number, tr)  # it starts when the decision ends
        self._wake(rep, d)  # then it gathers what ended meanwhile

    # ---------------------------------------------------------------- results
    def _outcome(self) -> Outcome:
        end = self.t_last
        device = self.ledger.total()
        stop = min(x for x in (self.t_stop, self.s.time_budget, end) if x is not None)
        idle = [(f, math.inf) for rep in self.replicas for f in
                (self.freed[w] for w in rep.free)]  # workers without a trial at the end
        wait = sum(max(0.0, min(b, stop) - min(a, stop)) for a, b in self.gaps + idle)
        row = {"variant": self.v.name, "method": self.v.method, "managers": len(self.replicas),
               "workers": self.workers, "seed": self.seed,
               "budget_device_s": self.s.device_budget, "walltime_s": self.s.time_budget,
               "trials": self.books.trials, "epochs": self.epochs, "device_s": device,
               "stop_s": stop, "end_s": end,
               "utilisation": 1.0 - wait / (self.workers * stop) if stop else 0.0,
               "allocation_use": device / (self.workers * end) if end else 0.0,
               "stopped_by": self.books.stopped_by or "", "decisions": self.decisions,
               "decision_s": sum(r.decision_s for r in self.replicas),
               "decision_max_s": self.decision_max,
               "manager_busy": max(r.decision_s for r in self.replicas) / end if end else 0.0,
               "wait_s": wait, "best": self.best if math.isfinite(self.best) else None,
               "told": max(r.search.told for r in self.replicas)}
        dec = [{"variant": self.v.name, "workers": self.workers, "seed": self.seed,
                "n_lo": 2 ** b, "decisions": v[0], "asked": v[1], "told": v[2], "seconds": v[3]}
               for b, v in sorted(self.bins.items())]
        return Outcome(row, self.incumbents, dec, self.trial_rows)


def table_curve(table, scale_s: float = 1.0):
    """A trial's recorded training from the table (nearest configuration), its seconds x
    ``scale_s``; ``m:table_config``/``m:table_distance`` as trial metadata."""
    cache: dict[int, Recorded] = {}

    def curve(config: dict) -> Recorded:
        entry, meta = table.replay(config)
        rec = cache.get(entry.config_id)
        if rec is None:
            rec = cache[entry.config_id] = Recorded(
                tuple((v, t, s * scale_s) for v, t, s in entry.curve), entry.failure,
                float(entry.failure_seconds) * scale_s)
        return Recorded(rec.curve, rec.failure, rec.failure_seconds, meta)

    return curve


def study_settings(table, workers: int, scale_s: float):
    """The settings of one search of the study: the table's scale, the allocation's device
    budget and walltime (clock seconds = paper seconds), no binding epoch budget."""
    budget, walltime = allocation(workers, median_training(table) * scale_s)
    return settings_for(table.scale, UNLIMITED_EPOCHS, walltime, budget)


def simulate(variant: str, table, workers: int, seed: int, cost, *, scale_s: float | None = None,
             n_steer: int | None = None, block: int = RANDOM_BLOCK, settings=None,
             keep_trials: bool = False) -> Outcome:
    """One search of ``variant`` (:data:`VARIANTS`) on ``table`` with ``workers`` simulated
    workers; times in paper seconds (``scale_s``: :func:`time_scale` unless given)."""
    v = get_variant(variant)
    scale_s = time_scale(table) if scale_s is None else scale_s
    s = settings or study_settings(table, workers, scale_s)
    sim = Simulation(v, workers, seed, s, table_curve(table, scale_s), cost, scale=table.scale,
                     n_steer=N_STEER if n_steer is None else n_steer, block=block,
                     keep_trials=keep_trials)
    return sim.run()


# ----------------------------------------------------------------------------- the campaign
_SIM: dict = {}


def _init(table_path: str, scale: str, cost_path: str) -> None:
    import logging
    import warnings

    from experiments.table import load_table

    warnings.filterwarnings("ignore")  # skopt/sklearn chatter of the frozen models
    logging.disable(logging.WARNING)
    _SIM.update(table=load_table(table_path, scale), cost=CostModel.read(Path(cost_path)))


def _one(task: tuple[float, str, int, int]) -> Outcome:
    epoch_s, name, workers, seed = task
    t0 = time.perf_counter()
    out = simulate(name, _SIM["table"], workers, seed, _SIM["cost"],
                   scale_s=time_scale(_SIM["table"], epoch_s))
    for r in (out.row, *out.incumbents, *out.decisions):
        r["epoch_s"] = epoch_s
    print(f"  epoch {epoch_s:g} s {name:12s} W={workers:5d} seed {seed}: {out.row['trials']:6d} "
          f"trials, utilisation {out.row['utilisation']:.3f} "
          f"({time.perf_counter() - t0:.0f} s real)", file=sys.stderr, flush=True)
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def manifest_for(table, table_path: Path, cost_path: Path, *, variants, workers, seeds,
                 epochs_s) -> dict:
    """What a study's outputs were made from and with (``scaling.json``)."""
    from mlpf.paths import shown

    train = median_training(table)
    return {
        "table": shown(table_path), "table_sha256": table.summary().get("sha256"),
        "decision_times_sha256": sha256(cost_path), "scale": table.scale,
        "paper_max_t": PAPER_MAX_T, "paper_epoch_s": list(epochs_s),
        "assumed_paper_epoch_s": PAPER_EPOCH_S, "median_training_table_s": train,
        "time_scale": {f"{e:g}": time_scale(table, e) for e in epochs_s},
        "min_trainings": MIN_TRAININGS, "trainings_per_worker": TRAININGS_PER_WORKER,
        "walltime_factor": WALLTIME_FACTOR, "n_steer": N_STEER, "random_block": RANDOM_BLOCK,
        "workers_per_node": WORKERS_PER_NODE, "measure_k": list(MEASURE_K),
        "variants": {n: asdict(get_variant(n)) for n in variants},
        "workers": list(workers), "seeds": list(seeds),
        "budgets": {f"{e:g}": {str(w): dict(zip(("device_s", "walltime_s"),
                                                allocation(w, train * time_scale(table, e))))
                               for w in workers} for e in epochs_s},
    }


def run_study(table_path: Path, scale: str, out: Path, *, variants, workers, seeds,
              epochs_s=EPOCHS_S, processes: int = 1, force: bool = False) -> Path:
    """Every paper epoch time x variant x workers x seed; writes the CSVs and the manifest in
    ``out``. Skipped when the manifest says the same inputs (table, decision times, design)
    made them."""
    from experiments.table import load_table
    from mlpf.paths import shown

    cost_path = out / DECISION_TIMES_CSV
    cost = CostModel.read(cost_path)
    table = load_table(table_path, scale)
    manifest = manifest_for(table, table_path, cost_path, variants=variants, workers=workers,
                            seeds=seeds, epochs_s=epochs_s)
    old = logs.read_json(out / MANIFEST_JSON)
    if not force and old == json.loads(json.dumps(manifest)) and \
            all((out / f).exists() for f in (RUNS_CSV, INCUMBENTS_CSV, DECISIONS_CSV)):
        print(f"{shown(out)}: complete for these inputs (--force reruns it)", file=sys.stderr)
        return out
    order = {n: i for i, n in enumerate(COST_ORDER)}
    tasks = [(e, n, w, sd) for e in epochs_s for n in variants for w in workers for sd in seeds]
    run_order = sorted(tasks, key=lambda t: (-t[2], order.get(t[1], 99), t[0], t[3]))
    init = (str(table_path), scale, str(cost_path))
    t0 = time.time()
    if processes > 1:
        with mp.get_context("fork").Pool(processes, initializer=_init, initargs=init) as pool:
            done = dict(zip(run_order, pool.map(_one, run_order, chunksize=1)))
    else:
        _init(*init)
        done = {t: _one(t) for t in run_order}
    results = [done[t] for t in tasks]  # written in design order, whatever ran first
    out.mkdir(parents=True, exist_ok=True)
    logs.write_csv(out / RUNS_CSV, RUN_COLUMNS, [r.row for r in results])
    logs.write_csv(out / INCUMBENTS_CSV, INCUMBENT_COLUMNS,
                   [i for r in results for i in r.incumbents])
    logs.write_csv(out / DECISIONS_CSV, DECISION_COLUMNS, [d for r in results for d in r.decisions])
    logs.write_csv(out / COST_CURVE_CSV, CURVE_COLUMNS,
                   cost.table(list(dict.fromkeys(get_variant(n).method for n in variants))))
    logs.write_json(out / MANIFEST_JSON, manifest)
    print(f"{len(tasks)} searches in {time.time() - t0:.0f} s -> {shown(out)}", file=sys.stderr)
    return out


# ----------------------------------------------------------------------------- measure
def _growth(search, method: str, problem, table, seed: int, max_t: int):
    """Results to grow ``search`` with: ``(config, objective)`` of random configurations told
    without asking (model-based methods), or of its own asks (the others: Hyperband's
    brackets need their own jobs). Objectives: the table's final loss of the nearest
    configuration, ``F_<reason>`` where its training failed."""
    from deephyper.hpo import RandomSearch

    from experiments.trial import split_parameters

    pool = RandomSearch(problem, random_state=seed + 1, log_dir=tempfile.gettempdir(),
                        checkpoint_history_to_csv=False) if model_based(method) else None

    def objective(cfg: dict):
        hp, budget = split_parameters(cfg, max_t)
        entry, _ = table.replay(hp)
        if len(entry.curve) < budget:
            return f"F_{entry.failure or 'no_epoch'}"
        return -float(entry.curve[budget - 1][0])

    def take(k: int) -> list:
        cfgs = pool.ask(k) if pool is not None else search.ask(k)
        return [(c, objective(c)) for c in cfgs]

    return take


def measure_method(method: str, table, *, grid=MEASURE_GRID, ks=MEASURE_K,
                   reps: int = MEASURE_REPS, seconds: float = MEASURE_SECONDS,
                   max_decision: float = MAX_MEASURED_DECISION_S, seed: int = 0) -> list[dict]:
    """Real seconds of ``method``'s tell of k results and its ask of k configurations, timed
    apart, at each history size of ``grid`` and each k of ``ks`` (the median of ``reps``).
    A larger k is skipped once a decision at the smaller one took a quarter of
    ``max_decision``; the grid ends after a k = 1 decision of ``max_decision`` or ``seconds``
    of measuring."""
    s = settings_for(table.scale)
    problem = problem_for(table.scale)
    rows = []
    with tempfile.TemporaryDirectory(prefix="scaling-measure-") as tmp:
        search = build(method, problem, s, seed, tmp)
        take = _growth(search, method, problem, table, seed, s.max_t)
        t_start, told = time.perf_counter(), 0
        for n in grid:
            while told < n:  # grow in a few large tells (one fit each for a CBO)
                b = min(n - told, max(1, n // 4))
                search.tell(take(b))
                told += b
            slow = False
            for k in ks:
                if slow:  # the next k would take k / previous k times as long
                    break
                tell, ask = [], []
                for _ in range(reps):
                    res = take(k)
                    t0 = time.perf_counter()
                    search.tell(res)
                    t1 = time.perf_counter()
                    search.ask(k)
                    tell.append(t1 - t0)
                    ask.append(time.perf_counter() - t1)
                    told += k
                for part, times in ((TELL, tell), (ASK, ask)):
                    rows.append({"what": method, "part": part, "n": n, "k": k,
                                 "seconds": float(statistics.median(times)), "reps": reps})
                d = rows[-1]["seconds"] + rows[-2]["seconds"]
                slow = d > max_decision / 4
                print(f"  {method:10s} n={n:6d} k={k:3d}: tell {rows[-2]['seconds'] * 1e3:9.1f} "
                      f"ms, ask {rows[-1]['seconds'] * 1e3:9.1f} ms", file=sys.stderr, flush=True)
                if k == ks[0] and slow:
                    break
            first = [r for r in rows if r["n"] == n and r["k"] == ks[0]]
            if sum(r["seconds"] for r in first) > max_decision or \
                    time.perf_counter() - t_start > seconds:
                break
    return rows


def measure_overheads(grid=MEASURE_GRID, reps: int = MEASURE_REPS, scale: str = "small",
                      storage_server: bool = True) -> list[dict]:
    """What the driver does after every decision whatever the method, against the trials so
    far: rewrite results.csv (:func:`experiments.driver.write_results`, durable live searches)
    and read the device ledger from the process evaluator's shared storage (a server process)."""
    from deephyper.evaluator.storage import SharedMemoryStorage
    from deephyper.hpo import RandomSearch

    from experiments.driver import write_results
    from experiments.trial import StorageLedger

    problem = problem_for(scale)
    rows = []
    with tempfile.TemporaryDirectory(prefix="scaling-overheads-") as tmp:
        search = RandomSearch(problem, random_state=0, log_dir=tmp,
                              checkpoint_history_to_csv=False)
        storage = SharedMemoryStorage() if storage_server else indexed_storage()
        ev = SimEvaluator(None, storage=storage)
        sid = dhcompat.search_id(ev)
        ledger = StorageLedger(storage, sid)
        have = 0
        meta = {logs.STATUS: logs.STATUS_STOPPED, logs.REASON: "", logs.EPOCHS: 1,
                logs.BUDGET: 16, logs.BEST_VAL_LOSS: 0.5, logs.TRIAL_START: 0.0,
                logs.TRIAL_END: 1.0, logs.TRIAL_WORKER: 0, "table_config": 1,
                "table_distance": 0.1}
        for n in grid:
            jobs = []
            for i, c in enumerate(search.ask(n - have)):
                storage.create_new_job(sid)
                jobs.append(dhcompat.logged_job(ev, have + i, c,
                                                {"objective": -0.5, "metadata": dict(meta)},
                                                "DONE"))
                storage.store_job_metadata(jobs[-1].id, SPENT_KEY, 100.0)
            search.history.extend(jobs)
            have = n
            for what, fn in ((LOG_WHAT, lambda: write_results(search, Path(tmp))),
                             (STORAGE_WHAT, ledger.total)):
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                rows.append({"what": what, "part": OVERHEAD, "n": n, "k": 1,
                             "seconds": float(statistics.median(times)), "reps": reps})
            print(f"  overheads n={n:6d} results.csv {rows[-2]['seconds'] * 1e3:8.1f} ms  "
                  f"ledger {rows[-1]['seconds'] * 1e3:8.1f} ms", file=sys.stderr, flush=True)
    return rows


def run_measure(table_path: Path, scale: str, out: Path, methods) -> Path:
    """``decision_times.csv`` and ``.json`` (what was measured where) in ``out``."""
    import logging
    import warnings

    from experiments.provenance import machine_info, versions
    from experiments.table import load_table
    from mlpf.paths import shown

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    table = load_table(table_path, scale)
    load0, t0 = os.getloadavg(), time.time()
    rows = measure_overheads(scale=scale)
    for m in methods:
        rows += measure_method(m, table)
    out.mkdir(parents=True, exist_ok=True)
    logs.write_csv(out / DECISION_TIMES_CSV, DT_COLUMNS, rows)
    logs.write_json(out / DECISION_TIMES_JSON, {
        "what": "real seconds of one manager decision, MEASURED ON THIS MACHINE (they vary "
                "from run to run and machine to machine); the simulations use them only "
                "through the fitted curve (experiments.scaling.CostModel)",
        "decision": "tell k results, then ask k configurations, timed apart (the model fit is "
                    f"in the tell), median of {MEASURE_REPS}; overheads: results_csv = "
                    "experiments.driver.write_results, ledger_read = StorageLedger.total() on "
                    "DeepHyper's SharedMemoryStorage (a server process)",
        "table": shown(table_path), "methods": list(methods), "k": list(MEASURE_K),
        "machine": machine_info(), "versions": versions(),
        "load_average_before": load0, "load_average_after": os.getloadavg(),
        "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "seconds": round(time.time() - t0, 1)})
    print(f"decision times -> {shown(out / DECISION_TIMES_CSV)}", file=sys.stderr)
    return out / DECISION_TIMES_CSV


# ----------------------------------------------------------------------------- command line
def build_parser() -> Parser:
    p = Parser("python -m experiments.scaling", __doc__)
    p.add_argument("step", choices=("measure", "simulate", "all"),
                   help="measure decision times, simulate the study, or both (all: measure "
                   "only when decision_times.csv is missing)")
    p.add_argument("--scale", default="small", choices=("smoke", "small", "paper"))
    p.add_argument("--table", default=None,
                   help="learning-curve table (default results/<scale>/lctable.csv)")
    p.add_argument("--out", default=None, help="folder (default results/<scale>/scaling)")
    p.add_argument("--variants", default=" ".join(VARIANTS),
                   help=f"study variants (default: all of {', '.join(VARIANTS)})")
    p.add_argument("--workers", default=" ".join(map(str, WORKERS)),
                   help='simulated worker counts, e.g. "2 8 48 192 1024"')
    add_seeds(p)
    p.set_defaults(seeds=list(SEEDS))
    p.add_argument("--processes", type=positive_int, default=1,
                   help="searches simulated at once (default 1)")
    p.add_argument("--paper-epoch-seconds", default=" ".join(f"{e:g}" for e in EPOCHS_S),
                   help="assumed seconds of one paper-scale epoch, one or more (default "
                   f"\"{' '.join(f'{e:g}' for e in EPOCHS_S)}\")")
    p.add_argument("--force", action="store_true", help="simulate even if complete")
    return p


def main(argv=None) -> int:
    def body() -> int:
        from experiments.table import TableError, table_path

        a = build_parser().parse_args(argv)
        table = Path(a.table) if a.table else table_path(a.scale)
        out = Path(a.out) if a.out else scaling_dir(a.scale)
        try:
            variants = [get_variant(n).name for n in a.variants.split()]
            workers = [int(w) for w in a.workers.replace(",", " ").split()]
        except ValueError as e:
            raise CliError(str(e)) from None
        if not variants or not workers or min(workers) < 1 or max(workers) > 4096:
            raise CliError("give variants and worker counts from 1 to 4096")
        try:
            epochs_s = [float(e) for e in a.paper_epoch_seconds.replace(",", " ").split()]
        except ValueError:
            epochs_s = []
        if not epochs_s or not all(math.isfinite(e) and e > 0 for e in epochs_s):
            raise CliError("--paper-epoch-seconds: give one or more positive numbers")
        try:
            if a.step == "measure" or (a.step == "all" and
                                       not (out / DECISION_TIMES_CSV).exists()):
                run_measure(table, a.scale, out,
                            list(dict.fromkeys(get_variant(n).method for n in variants)))
            if a.step in ("simulate", "all"):
                run_study(table, a.scale, out, variants=variants, workers=workers,
                          seeds=a.seeds, epochs_s=epochs_s, processes=a.processes,
                          force=a.force)
        except (TableError, FileNotFoundError) as e:
            raise CliError(str(e)) from None
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
