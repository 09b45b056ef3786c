"""Ray Tune as a live peer: the paper's own tool on our trainable, space, budgets and logs.

    python -m experiments.peers.ray_tune --method ray_asha --scale smoke --seed 0 --workers 2
    python -m experiments.campaign --backend live --scale small --methods "ray_asha ray_hyperband"
    EXP_SYNTHETIC='{"sleep": 0.05}' python -m experiments.peers.ray_tune --method ray_hyperband \\
        --scale smoke --trainable synthetic --out /tmp/ray_hyperband

The original study (arXiv 2203.01112) ran its searches with Ray Tune. Here Ray Tune 2.60 runs
them again, live, on a local Ray cluster started for the search (``workers`` CPUs, listening on
loopback only): its own schedulers and searchers decide, our code only trains and logs.

Peers (:data:`RAY_PEERS`), with ``max_t``, grace and ``eta`` from
:func:`experiments.methods.settings_for`:

- ``ray_asha``: ``BasicVariantGenerator`` (random, seeded) + ``AsyncHyperBandScheduler``
  (``time_attr="epoch"``, ``max_t``, ``grace_period=grace``, ``reduction_factor=eta``,
  ``brackets=1``): the paper's ASHA.
- ``ray_hyperband``: ``BasicVariantGenerator`` + ``HyperBandScheduler`` (Ray's synchronous
  Hyperband, ``max_t``, ``reduction_factor=eta``; Ray derives its brackets from those two
  alone, so it has no minimum budget: at smoke and small its most aggressive bracket starts at
  1 epoch like ours, at paper at 3 epochs where ours starts at 10). Trials wait paused at a
  rung until their bracket is complete; a promoted trial continues from its checkpoint.
- ``ray_asha_tpe``, ``ray_hyperband_tpe``: the same schedulers with ``OptunaSearch`` and a
  seeded ``TPESampler`` (Optuna's TPE set as our Optuna peers set it: ``n_startup_trials`` =
  our ``n_initial_points``). Ray tells Optuna every ended trial as complete with its last
  val_loss (a trial stopped early by the scheduler included), and reports every epoch.

What runs (:func:`train_trial`, in a Ray actor, one CPU, torch threads 1): the trainable of
:mod:`experiments.trainables` (``mlpf`` or ``synthetic``), one epoch at a time, each epoch
reported to Ray Tune (``epoch``, ``val_loss``, ``epoch_seconds``, ``devices``, times). The
search space is :func:`experiments.space.problem_for` converted by :func:`ray_space` (the
Optuna peers' conversion, :func:`experiments.peers.optuna_peers.optuna_distributions`, in
Ray Tune's terms). Workers are concurrent trials: ASHA peers limit live trials to
``workers``; Hyperband peers cannot (paused trials count as live, and a bracket would wait
forever for trials that are never created), so there the cluster's ``workers`` CPUs bound
the trials running at once and at most ``workers`` trials wait for a CPU.

Budgets are ours, through the per-epoch trial contract (:class:`experiments.trial.TrialRun`,
fed by a Ray Tune ``Stopper`` that sees every reported epoch before the scheduler does):

- device-seconds (where the scale sets them): epoch_seconds x devices summed over every
  trial's reported epochs, running trials included; once reached, every running trial stops
  at the end of its current epoch (reason ``device_budget``), no trial starts or resumes, and
  the experiment ends (the Stopper's ``stop_all``) once nothing runs;
- epochs: no trial starts or resumes once the epochs of ended trials reach the budget; the
  running ones finish;
- the wall-time cap (a safety stop): running trials stop after their current epoch (reason
  ``time_budget``), nothing starts or resumes.

``metadata.json`` says which ended the search (``stopped_by``). Trials that waited paused
when the search ended are logged as stopped. The clock starts after the Ray cluster is up
(``peer.ray_init_s`` says how long that took); each trial's actor start (imports, data) is
inside its first epoch's t_start..t_end, as for our workers.

Logs: ``results/<scale>/<method>/seed<k>/`` (or ``--out``) in our raw format
(:mod:`experiments.logs`): results.csv (``p:<hp>``, objective, job_id = the trial's number
in the order trials started, the ``m:`` columns), learning_curves.csv (one row per epoch)
and metadata.json (``evaluator: "ray_tune"``, Ray's settings under ``method_settings``,
versions with ray).
Ray's own files (experiment state, session logs, Hyperband checkpoints) go to a temporary
folder that is removed at the end. A complete search is never overwritten; an unfinished one
starts again from the beginning with ``--resume`` (Ray Tune's own restore is not used).
SIGTERM/SIGINT end it cleanly: trials that ended are written, status ``interrupted``, exit 143.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from experiments import bookkeeping, logs
from experiments.bookkeeping import Books, Budget, Progress
from experiments.cli import (
    CliError,
    Parser,
    add_budget,
    add_scale,
    add_seed,
    add_workers,
    check_workers,
    run_main,
)
from experiments.methods import Settings, settings_for
from experiments.peers.optuna_peers import PEERS as OPTUNA_PEERS
from experiments.space import FLOAT, INT, INT_GRID, dimensions, problem_for
from experiments.trainables import get_trainable
from experiments.trial import Diverged, Ledger, NullJob, TrialRun, device_seconds

EVALUATOR = "ray_tune"  # metadata.json "evaluator" of these searches
META_WRITE_INTERVAL = 30.0  # seconds between metadata writes while running
# Reported with every epoch (the names of learning_curves.csv, plus the times of the epoch)
SEGMENT_START = "segment_start"  # seconds since the search began when this actor started
T_REPORT = "t_end"  # seconds since the search began when the epoch ended
FAILURE = "failure"  # a trial that failed: its reason (no epoch in that report)


# ------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class RayPeer:
    """A Ray Tune searcher composed with a Ray Tune scheduler, both set from our Settings."""

    name: str
    summary: str
    searcher: str  # "random" (BasicVariantGenerator) | "tpe" (OptunaSearch + TPESampler)
    scheduler: str  # "asha" (AsyncHyperBandScheduler) | "hyperband" (HyperBandScheduler)

    @property
    def limits_live_trials(self) -> bool:
        """ASHA never pauses a trial: live trials can be limited to the workers."""
        return self.scheduler == "asha"

    def make_scheduler(self, s: Settings, base=None):
        """Ray's scheduler (``base``: its class or a subclass of it)."""
        from ray.tune.schedulers import AsyncHyperBandScheduler, HyperBandScheduler

        if self.scheduler == "asha":
            return (base or AsyncHyperBandScheduler)(
                time_attr=logs.EPOCH, max_t=s.max_t, grace_period=s.grace,
                reduction_factor=s.eta, brackets=1)
        return (base or HyperBandScheduler)(time_attr=logs.EPOCH, max_t=s.max_t,
                                            reduction_factor=s.eta)

    def make_search(self, s: Settings, seed: int, workers: int):
        """Ray's search algorithm over :func:`ray_space` of the scale."""
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.basic_variant import BasicVariantGenerator
        from ray.tune.search.optuna import OptunaSearch

        limit = workers if self.limits_live_trials else 0
        if self.searcher == "random":
            return BasicVariantGenerator(max_concurrent=limit, random_state=seed)
        # our Optuna peers' TPE; the space comes from the Tuner's param_space (ray_space)
        sampler = OPTUNA_PEERS["optuna_tpe_sha"].make_sampler(s, seed)
        search = OptunaSearch(metric=logs.VAL_LOSS, mode="min", sampler=sampler)
        return ConcurrencyLimiter(search, max_concurrent=limit) if limit else search

    def describe(self, s: Settings, workers: int) -> dict:
        """What metadata.json records about the peer (derived from this record)."""
        if self.scheduler == "asha":
            sched = {"scheduler": "AsyncHyperBandScheduler", "time_attr": logs.EPOCH,
                     "max_t": s.max_t, "grace_period": s.grace, "reduction_factor": s.eta,
                     "brackets": 1}
        else:
            sched = {"scheduler": "HyperBandScheduler", "time_attr": logs.EPOCH,
                     "max_t": s.max_t, "reduction_factor": s.eta,
                     "brackets": ray_hyperband_brackets(s.max_t, s.eta)}
        search = ({"searcher": "BasicVariantGenerator", "random_state": "seed"}
                  if self.searcher == "random" else
                  {"searcher": "OptunaSearch", "sampler": "TPESampler",
                   "n_startup_trials": s.n_initial_points, "random_state": "seed"})
        return {"max_t": s.max_t, "grace": s.grace, "eta": s.eta,
                "budget_epochs": s.budget, "time_budget_s": s.time_budget,
                "budget_device_s": s.device_budget, **sched, **search,
                "max_concurrent_trials": workers if self.limits_live_trials else None,
                "cpus": workers, "resources_per_trial": {"cpu": 1}}


RAY_PEERS: dict[str, RayPeer] = {p.name: p for p in [
    RayPeer("ray_asha", "Ray Tune: random search + AsyncHyperBandScheduler (1 bracket)",
            "random", "asha"),
    RayPeer("ray_hyperband", "Ray Tune: random search + HyperBandScheduler (synchronous)",
            "random", "hyperband"),
    RayPeer("ray_asha_tpe", "Ray Tune: OptunaSearch (TPE) + AsyncHyperBandScheduler",
            "tpe", "asha"),
    RayPeer("ray_hyperband_tpe", "Ray Tune: OptunaSearch (TPE) + HyperBandScheduler",
            "tpe", "hyperband"),
]}


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def check_peer(name: str) -> RayPeer:
    """The record of ``name``; ValueError (one line) if unknown or Ray Tune is missing."""
    if name not in RAY_PEERS:
        raise ValueError(f"unknown Ray Tune peer {name!r}; choose one of "
                         f"{', '.join(RAY_PEERS)}")
    if not ray_installed():
        raise ValueError(f"{name} needs Ray Tune, which is not installed: make ray "
                         "(requirements-ray.txt)")
    return RAY_PEERS[name]


def ray_hyperband_brackets(max_t: int, eta: int) -> list[list[int]]:
    """Ray's HyperBandScheduler brackets as ``[n_0, r_0]`` (trials, first rung epochs), as
    Ray computes them: ``s_max + 1 = round(log_eta(max_t)) + 1`` brackets, ``n_0 =
    ceil((s_max+1) / (s+1) * eta**s)``, ``r_0 = int(max_t * eta**-s)``; ``r_0 = 0`` is skipped."""
    s_max_1 = int(round(math.log(max_t) / math.log(eta))) + 1
    out = []
    for s in range(s_max_1):
        n0 = int(math.ceil(s_max_1 / (s + 1) * eta**s))
        r0 = int(max_t * eta ** (-s))
        if r0:
            out.append([n0, r0])
    return out


# ------------------------------------------------------------------------------ space
def ray_space(problem) -> dict:
    """The DeepHyper problem as Ray Tune domains, one per hyperparameter, in its order.

    As :func:`experiments.peers.optuna_peers.optuna_distributions`: log-uniform and uniform
    floats stay floats; an integer grid with a constant step becomes an integer range with
    that step (``qrandint``; ``randint`` for step 1, whose ``qrandint`` excludes the upper
    bound), so that Ray's OptunaSearch gets the Optuna peers' distributions; other grids and
    flags/names are choices.
    """
    from ray import tune

    out = {}
    for d in dimensions(problem):
        if d.kind == FLOAT:
            out[d.name] = tune.loguniform(d.lower, d.upper) if d.log else \
                tune.uniform(d.lower, d.upper)
        elif d.kind == INT:
            out[d.name] = tune.lograndint(d.lower, d.upper + 1) if d.log else \
                tune.randint(d.lower, d.upper + 1)
        elif d.kind == INT_GRID:
            out[d.name] = tune.randint(d.lower, d.upper + 1) if d.step == 1 else \
                tune.qrandint(d.lower, d.upper, d.step)
        else:
            out[d.name] = tune.choice(list(d.values))
    return out


# ------------------------------------------------------------------------------ the trial
@dataclass(frozen=True)
class TrialContext:
    """What a Ray actor needs besides the configuration (sent once to the object store)."""

    scale: str
    trainable: str
    t0: float  # time.time() when the search began
    max_t: int
    seed: int
    names: tuple  # hyperparameter names
    checkpoints: str | None = None  # Hyperband: folder of the trials' training states
    env: dict = field(default_factory=dict)  # environment the trainable reads (EXP_SYNTHETIC)
    gpus: bool = False  # one GPU per trial


def train_trial(config: dict, ctx: TrialContext) -> None:
    """Ray Tune's function trainable: train ``config`` one epoch at a time and report each.

    A resumed Hyperband trial continues from its checkpoint (its epochs go on from there). A
    failure is one last report with its reason (``failure``), never an exception: Ray then
    stops the trial like any other and the reason reaches the logs."""
    from ray import tune

    start = time.time() - ctx.t0
    os.environ.update(ctx.env)
    first, last = [True], [0]

    def report(values: dict) -> None:
        values[SEGMENT_START] = start if first[0] else None
        first[0] = False
        tune.report(values)

    def on_epoch(m: dict) -> bool:
        last[0] = int(m["epoch"])
        report({logs.EPOCH: int(m["epoch"]), logs.VAL_LOSS: float(m["val_loss"]),
                logs.TRAIN_LOSS: float(m.get("train_loss", math.nan)),
                logs.EPOCH_SECONDS: device_seconds(m, bool(ctx.gpus)),
                logs.DEVICES: int(m.get("devices", 1)) if ctx.gpus else 1,
                # what the trainable reported of LC_EXTRA; Ray's results hold no None
                **{k: m[k] for k in logs.LC_EXTRA if m.get(k) is not None},
                T_REPORT: time.time() - ctx.t0})
        return False  # Ray Tune stops the trial itself

    trainable = None
    try:
        trainable = get_trainable(ctx.trainable)
        device = None
        if trainable.uses_torch:
            import torch

            torch.set_num_threads(1)
            device = "cuda:0" if ctx.gpus else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES
        hp = {k: logs.native(config[k]) for k in ctx.names}
        ckpt = os.path.join(ctx.checkpoints, tune.get_context().get_trial_id()) \
            if ctx.checkpoints else None
        trainable.train(ctx.scale, hp, ctx.max_t, on_epoch, device=device, seed=ctx.seed,
                        threads=1, checkpoint_dir=ckpt)
    except Exception as e:  # noqa: BLE001 - one failed trial must not end the search
        reason = trainable.failure_reason(e) if trainable else f"error:{type(e).__name__}"
        report({logs.EPOCH: last[0], logs.VAL_LOSS: math.nan, FAILURE: reason,
                T_REPORT: time.time() - ctx.t0})


# ------------------------------------------------------------------------------ the search
@dataclass
class Flight:
    """One Ray trial: its configuration, its trial contract, its worker slot, its end."""

    number: int
    config: dict
    submitted: float  # seconds since the search began when its actor first started
    run: TrialRun | None = None
    clock: float = 0.0  # the time the trial contract reads (the reported times)
    slot: int | None = None
    asked_stop: bool = False  # the contract stopped it at its last reported epoch
    failure: str | None = None
    ended: bool = False


class RaySearch:
    """The state of one search, read and written by the Stopper, the Callback and the
    scheduler's gate, all in the driver process (Ray Tune calls them from one thread)."""

    def __init__(self, peer: RayPeer, s: Settings, seed: int, workers: int, log_dir: Path,
                 t0: float, names: list[str], progress: bool = True):
        self.peer, self.s, self.seed, self.workers = peer, s, seed, workers
        self.log_dir, self.t0, self.names = log_dir, t0, list(names)
        self.flights: dict[str, Flight] = {}
        self.ledger = Ledger()
        self.rows: list[dict] = []
        self.epochs_ended = 0  # epochs of ended trials (the epoch budget)
        self.epochs = 0  # every reported epoch
        # our budgets and stop rule (experiments.bookkeeping), as every method and peer
        self.books = Books(Budget(s.budget, s.time_budget or None, s.device_budget))
        self.interrupted = False
        self.ending = False  # stop_all said yes: what ends now was ended by the search
        self.running = 0
        self.decision_times: list[float] = []
        self.bar = Progress(f"{peer.name} {s.scale} seed{seed}", s.budget,
                            device_budget=s.device_budget) if progress else None
        self.last_meta = time.monotonic()
        self.meta: dict = {}

    def now(self) -> float:
        return time.time() - self.t0

    @property
    def closed_by(self) -> str | None:
        """What closed the search (no trial starts or resumes from then on), or None."""
        return self.books.stopped_by

    def check(self) -> None:
        """Our budget rule on the search's state now (:meth:`Books.check`)."""
        self.books.check(epochs=self.epochs_ended, now=self.now(), device=self.ledger.total(),
                         trials=len(self.flights))

    # ---------------------------------------------------------------- trials
    def start(self, trial_id: str, config: dict) -> Flight:
        f = self.flights.get(trial_id)
        if f is None:
            f = self.flights[trial_id] = Flight(  # numbered in the order trials start
                len(self.flights), {k: logs.native(config[k]) for k in self.names}, self.now())
        if f.slot is None:
            busy = {g.slot for g in self.flights.values() if g.slot is not None}
            f.slot = min(set(range(len(busy) + 1)) - busy)
            if f.run is not None:
                f.run.worker = f.slot
        return f

    def release(self, f: Flight) -> None:
        f.slot = None

    def on_result(self, trial_id: str, result: dict) -> bool:
        """One reported epoch (or failure) through the trial contract; True: stop it now."""
        f = self.flights.get(trial_id) or self.start(trial_id, result.get("config", {}))
        if f.ended:
            return True
        if result.get(SEGMENT_START) is not None:
            f.clock = float(result[SEGMENT_START])
            if f.run is None:
                f.run = TrialRun(NullJob(f.number, f.config), self.s.max_t, lambda: f.clock,
                                 deadline=self.s.time_budget,
                                 write_row=lambda row: logs.append_row(
                                     self.log_dir / logs.LEARNING_CURVES_CSV, row),
                                 worker=f.slot if f.slot is not None else -1, devices=1,
                                 ledger=self.ledger, device_budget=self.s.device_budget)
            else:  # a resumed trial: its next epoch started with this actor
                f.run.t_prev = f.clock
        f.clock = float(result.get(T_REPORT, self.now()))
        if result.get(FAILURE):
            f.failure, f.asked_stop = str(result[FAILURE]), True
            return True
        self.epochs += 1
        secs = result.get(logs.EPOCH_SECONDS)
        try:
            f.asked_stop = f.run.epoch(int(result[logs.EPOCH]), float(result[logs.VAL_LOSS]),
                                       float(result.get(logs.TRAIN_LOSS, math.nan)),
                                       None if secs is None else float(secs),
                                       int(result.get(logs.DEVICES, 1)),
                                       extra={k: result.get(k) for k in logs.LC_EXTRA})
        except Diverged:
            f.failure, f.asked_stop = "diverged", True
        self.check()
        return f.asked_stop

    def end(self, trial_id: str, died: bool = False) -> None:
        """A trial ended (complete, stopped, errored, or ended with the search): its row."""
        f = self.flights.get(trial_id)
        if f is None or f.ended:
            return
        self.release(f)
        if f.run is None and f.failure is None and not died:
            return  # never trained (ended with the search before its first report)
        if self.interrupted and not f.asked_stop and f.failure is None:
            return  # cut by the interrupt: unfinished, as in our searches
        f.ended = True
        run = f.run or TrialRun(NullJob(f.number, f.config), self.s.max_t, lambda: f.clock,
                                deadline=None, write_row=lambda row: None,
                                worker=f.slot if f.slot is not None else -1)
        if died:
            outcome = run.outcome(failure=logs.REASON_WORKER_DIED)
        elif f.failure is not None:
            outcome = run.outcome(failure=f.failure)
        else:
            if not f.asked_stop:  # stopped by Ray's scheduler, or left paused at the end
                run.stopped = True
                if self.ending:
                    run.deadline_hit = self.closed_by == "time"
                    run.cut_hit = self.closed_by == "device_budget"
            outcome = run.outcome()
        meta = outcome["metadata"]
        self.rows.append(logs.results_row(f.config, outcome, f.number, f.submitted, self.now()))
        self.epochs_ended += int(meta[logs.EPOCHS])
        self.books.record(meta, outcome["objective"])
        self.check()
        self.write_results()

    # ---------------------------------------------------------------- logs
    def write_results(self) -> None:
        logs.write_csv(self.log_dir / logs.RESULTS_CSV, logs.results_columns(self.names),
                       self.rows)

    def update_meta(self, status: str) -> None:
        self.meta[logs.MD_DECISIONS] = self.decision_times
        bookkeeping.close_metadata(self.meta, status, end_time=time.time(),
                                   epochs=self.epochs, n_trials=len(self.rows),
                                   stopped_by=self.closed_by)
        logs.write_json(self.log_dir / logs.METADATA_JSON, self.meta)

    def show(self, final: str | None = None) -> None:
        if self.bar is not None:
            self.bar.update(self.books.counts, self.books.best, self.epochs, self.running,
                            final=final is not None, device=self.ledger.total(), reason=final)

    # ---------------------------------------------------------------- each step
    def step(self, trials) -> None:
        """Ray Tune's loop turned once: free the slots of trials that no longer run, count
        the running ones, check the deadline, write progress and metadata now and then."""
        self.running = 0
        for t in trials:
            f = self.flights.get(t.trial_id)
            if t.status == "RUNNING":
                self.running += 1
            elif t.status in ("PAUSED", "TERMINATED", "ERROR") and f is not None:
                self.release(f)  # its worker is free
        self.check()
        self.show()
        mono = time.monotonic()
        if mono - self.last_meta >= META_WRITE_INTERVAL:
            self.last_meta = mono
            self.update_meta(logs.RUN_RUNNING)

    def stop_all(self) -> bool:
        """End the experiment: interrupted, or closed and nothing runs any more."""
        if self.interrupted or (self.closed_by is not None and self.running == 0):
            self.ending = True
        return self.ending


def ray_classes(search: RaySearch):
    """Ray Tune's Stopper and Callback for ``search``, and its scheduler class gated by it
    (no trial starts or resumes once the search is closed; decision times are logged)."""
    from ray.tune import Callback, Stopper
    from ray.tune.schedulers import AsyncHyperBandScheduler, HyperBandScheduler

    class BudgetStopper(Stopper):
        def __call__(self, trial_id, result):
            return search.on_result(trial_id, result)

        def stop_all(self):
            return search.stop_all()

        def __getstate__(self):  # Ray saves its experiment state; ours is in our logs
            return {}

    class LogCallback(Callback):
        def on_step_begin(self, iteration, trials, **info):
            search.step(trials)

        def on_trial_start(self, iteration, trials, trial, **info):
            search.start(trial.trial_id, trial.config)

        def on_trial_complete(self, iteration, trials, trial, **info):
            search.end(trial.trial_id)

        def on_trial_error(self, iteration, trials, trial, **info):
            search.end(trial.trial_id, died=True)

    base = AsyncHyperBandScheduler if search.peer.scheduler == "asha" else HyperBandScheduler

    class Gated(base):
        def on_trial_result(self, tune_controller, trial, result):
            tic = time.perf_counter()
            try:
                return super().on_trial_result(tune_controller, trial, result)
            finally:
                search.decision_times.append(time.perf_counter() - tic)

        def choose_trial_to_run(self, tune_controller):
            if search.closed_by is not None or search.interrupted:
                return None
            return super().choose_trial_to_run(tune_controller)

    return BudgetStopper(), LogCallback(), Gated


# ------------------------------------------------------------------------------ run
def start_ray(workers: int, temp_dir: str, gpus: int = 0) -> float:
    """A local Ray cluster of ``workers`` CPUs on loopback only (the engine's switch,
    :func:`experiments.local_ray.ray_loopback_only`); returns its start seconds."""
    from experiments.local_ray import LOOPBACK, ray_loopback_only
    from mlpf.paths import ROOT

    ray_loopback_only()
    # the actors import this project: they inherit this environment from the raylet
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    import logging

    import ray

    tic = time.perf_counter()
    ray.init(address="local", num_cpus=workers, num_gpus=gpus, include_dashboard=False,
             _node_ip_address=LOOPBACK, _temp_dir=temp_dir, log_to_driver=False,
             logging_level=logging.ERROR)
    return time.perf_counter() - tic


def _gpus(trainable) -> int:
    if not trainable.uses_torch:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def new_metadata(peer: RayPeer, s: Settings, seed: int, workers: int, trainable,
                 now: float, ray_info: dict) -> dict:
    """metadata.json of a new search (:func:`experiments.bookkeeping.new_metadata`, as our
    searches), with Ray's settings under ``method_settings`` and its cluster under ``peer``."""
    meta = bookkeeping.new_metadata(
        method=peer.name, scale=s.scale, seed=seed, evaluator=EVALUATOR, workers=workers,
        trainable=trainable.name,
        method_settings={"name": peer.name, "summary": peer.summary, "settings": asdict(s),
                         **peer.describe(s, workers)},
        budget_epochs=s.budget, time_budget_s=s.time_budget, budget_device_s=s.device_budget,
        start_time=now, trainable_options=trainable.options(),
        loss=trainable.loss_spec(s.scale), versions_of=("ray",))
    meta["peer"] = ray_info
    return meta


def plan(name: str, scale: str, seed: int, workers: int, out, trainable: str,
         resume: bool, budget=None, time_budget=None, device_budget=None):
    """Check the request and the log folder; returns (peer, settings, trainable, log folder,
    already complete). A folder with logs is refused without ``resume``; with it, an
    unfinished search is cleared to start again."""
    from mlpf.paths import results_dir

    try:
        peer = check_peer(name)
        s = settings_for(scale, budget, time_budget, device_budget)
        tr = get_trainable(trainable)
        tr.check_ready(scale)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise CliError(str(e)) from None
    if workers < 1:
        raise CliError("--workers must be >= 1")
    log_dir = Path(out) if out else results_dir(scale, name, seed)
    if log_dir.exists() and not log_dir.is_dir():
        raise CliError(f"{log_dir} is not a folder; pass --out a folder")
    try:
        previous = logs.read_json(log_dir / logs.METADATA_JSON) \
            if (log_dir / logs.METADATA_JSON).is_file() else None
    except ValueError:
        raise CliError(f"{log_dir / logs.METADATA_JSON} is not valid JSON; move it aside") \
            from None
    if previous and previous.get("status") == logs.RUN_COMPLETE:
        if (previous.get("method"), previous.get("scale"), previous.get("seed")) != \
                (name, scale, seed):
            raise CliError(f"{log_dir} holds another complete search; pass another --out")
        return peer, s, tr, log_dir, True
    has_logs = previous is not None or any(
        (log_dir / f).exists() for f in (logs.RESULTS_CSV, logs.LEARNING_CURVES_CSV))
    if has_logs and not resume:
        raise CliError(f"{log_dir} already holds an unfinished search; pass --resume to "
                       "start it again or remove the folder")
    return peer, s, tr, log_dir, False


def fit(tuner) -> None:
    """``tuner.fit()``, which runs the whole experiment. Ray (2.60) then builds a ResultGrid
    of every trial, which fails (RuntimeError: "Should not access `trial_fs_path` without
    setting `trial_dir_name`") on a trial that was created but never started when the stopper
    ended the experiment. The search reads nothing from that summary (its callback has logged
    every trial), so that one failure is passed over; any other is raised."""
    try:
        tuner.fit()
    except RuntimeError as e:
        frames = traceback.extract_tb(e.__traceback__)
        if not any(f.filename.endswith(os.path.join("tune", "result_grid.py"))
                   for f in frames):
            raise


def run(peer: RayPeer, s: Settings, seed: int, workers: int, trainable, log_dir: Path,
        progress: bool = True) -> int:
    """Run one search; returns 0 (complete), 1 (ended by failed trials) or 143 (interrupted).

    The log folder is locked while it runs; its old logs are cleared first."""
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = logs.lock_folder(log_dir)
    except logs.FolderLocked as e:
        raise CliError(str(e)) from None
    tmp = tempfile.mkdtemp(prefix="ray-tune-")
    old = {}
    try:
        logs.clear_logs(log_dir)
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no Ray CSV/TBX
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # SIGINT is ours (below)
        os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(workers)
        gpus = _gpus(trainable)
        init_s = start_ray(workers, os.path.join(tmp, "ray"), gpus)
        import optuna
        import ray
        from ray import cloudpickle, tune

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Ray's OptunaSearch reports each epoch at Ray's training_iteration, which starts
        # again at 1 when Hyperband resumes a trial; TPE does not read intermediate values
        warnings.filterwarnings("ignore", message="The reported value is ignored",
                                category=UserWarning)

        # Actors get train_trial by value: they import experiments.trainables and
        # experiments.logs (0.4 s), not this package (3.6 s with Optuna and DeepHyper)
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        t0 = time.time()
        names = problem_for(s.scale).hyperparameter_names
        search = RaySearch(peer, s, seed, workers, log_dir, t0, names, progress)
        search.meta = new_metadata(peer, s, seed, workers, trainable, t0, {
            "library": "ray[tune]", "version": ray.__version__, "ray_init_s": init_s,
            "cluster": f"local, {workers} CPUs{f', {gpus} GPUs' if gpus else ''}, loopback",
            "ray_files": "a temporary folder, removed at the end"})
        logs.ensure_header(log_dir / logs.LEARNING_CURVES_CSV)
        search.update_meta(logs.RUN_RUNNING)

        def on_signal(signum, frame):
            search.interrupted = True

        old = {sg: signal.signal(sg, on_signal) for sg in (signal.SIGTERM, signal.SIGINT)}
        stopper, callback, scheduler = ray_classes(search)
        ckpt = os.path.join(tmp, "checkpoints") if peer.scheduler == "hyperband" else None
        ctx = TrialContext(s.scale, trainable.name, t0, s.max_t, seed, tuple(names), ckpt,
                           {k: v for k, v in os.environ.items() if k.startswith("EXP_")},
                           gpus > 0)
        resources = {"cpu": 1, **({"gpu": 1} if gpus else {})}
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(train_trial, ctx=ctx), resources),
            param_space=ray_space(problem_for(s.scale)),
            tune_config=tune.TuneConfig(metric=logs.VAL_LOSS, mode="min", num_samples=-1,
                                        search_alg=peer.make_search(s, seed, workers),
                                        scheduler=peer.make_scheduler(s, scheduler)),
            run_config=tune.RunConfig(name=f"{peer.name}-seed{seed}", storage_path=tmp,
                                      stop=stopper, callbacks=[callback], verbose=0))
        fit(tuner)
        search.ending = True
        for trial_id in list(search.flights):  # trials left paused or running at the end
            search.end(trial_id)
        status = bookkeeping.final_status(search.interrupted, search.closed_by)
        if status == logs.RUN_FAILED:
            search.meta["failure"] = search.books.failure_text()
        search.write_results()
        search.update_meta(status)
        search.show(final=bookkeeping.closing_reason(status, search.closed_by,
                                                     "--resume, which starts it again"))
        return bookkeeping.exit_code(status)
    finally:
        for sg, h in old.items():
            signal.signal(sg, h)
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(lock)


# ------------------------------------------------------------------------------ CLI
def build_parser() -> Parser:
    p = Parser("python -m experiments.peers.ray_tune", __doc__)
    p.add_argument("--method", required=True, help=" | ".join(RAY_PEERS))
    add_scale(p)
    add_seed(p)
    add_workers(p, "concurrent trials, one CPU each")
    p.add_argument("--out", default=None, help="log folder (default results/<scale>/...)")
    p.add_argument("--trainable", default="mlpf", help="mlpf | synthetic")
    p.add_argument("--resume", action="store_true",
                   help="start an unfinished search again (a complete one is kept)")
    add_budget(p, "the scale's")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv=None) -> int:
    def body() -> int:
        a = build_parser().parse_args(argv)
        check_workers(a.workers, allow=a.allow_oversubscribe)  # a local Ray cluster
        peer, s, tr, log_dir, complete = plan(a.method, a.scale, a.seed, a.workers, a.out,
                                              a.trainable, a.resume, a.budget,
                                              a.time_budget, a.device_budget)
        if complete:
            print(f"{log_dir}: search already complete", file=sys.stderr)
            return 0
        return run(peer, s, a.seed, a.workers, tr, log_dir, progress=not a.quiet)

    return run_main(body)


if __name__ == "__main__":
    # through the package, so that Ray's actors find train_trial by its module's name
    sys.exit(importlib.import_module("experiments.peers.ray_tune").main())
