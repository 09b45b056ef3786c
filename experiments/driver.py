"""The search driver: plan, run metadata, budgets and deadline, progress, the manager loop.

The driver is HANDED a backend (:mod:`experiments.backends`): an object that opens an
evaluator (live workers, or a replay on a simulated clock) and says how the search's time is
read. It never imports a backend, so a live, an MPI and a replayed search run the same loop.

The manager loop is DeepHyper's (ask -> submit -> gather -> tell) written out so that it can
(a) stop submitting when the search's epoch or wall-time budget is spent, (b) time every
decision, (c) stop cleanly on SIGTERM/SIGINT (finished trials written, metadata status
"interrupted"; exit code 143) and (d) resume from the logs (``--resume``): finished trials are
kept and told to the method (surrogate, Hyperband rungs, ASHA rung values), job ids continue
after the largest logged one, trials that were running are not counted as finished.

A backend is a :class:`Backend` (a ``typing.Protocol``: what the driver calls, checked by
``tests/experiments/test_search.py`` for every backend). An evaluator with a ``clock()`` method
(the replay's) gives the search's time; otherwise it is ``time.time()``.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from experiments import bookkeeping, dhcompat, logs
from experiments.bookkeeping import Books, Budget, Progress
from experiments.methods import build, get_method, method_metadata, settings_for
from experiments.schedulers import ASHAStopper
from experiments.space import problem_for
from experiments.trainables import get_trainable
from experiments.trial import StorageLedger

RESUME_SEED_STRIDE = 7919  # a resumed segment reseeds its sampler: no replay of old configs
META_WRITE_INTERVAL = 30.0  # seconds between metadata writes while running (survive SIGKILL)
MAX_FAILURES = bookkeeping.MAX_FAILURES  # consecutive failed trials that end a search


class PlanError(ValueError):
    """A search that cannot run as asked (one line for the user)."""


@dataclass
class Plan:
    """Everything decided before any evaluator exists (identical on every MPI rank)."""

    method: str
    scale: str
    seed: int
    evaluator: str
    workers: int
    trainable: str
    log_dir: Path
    settings: object
    resume: bool = False
    previous: dict | None = None  # metadata.json of the interrupted search
    meta: dict = field(default_factory=dict)
    checkpoints: bool = False  # trials continue from checkpoints (Hyperband promotions)
    max_failures: int = MAX_FAILURES  # consecutive failed trials that end the search

    @property
    def complete(self) -> bool:
        """The folder already holds this search, complete."""
        return bool(self.previous) and self.previous.get("status") == logs.RUN_COMPLETE


@runtime_checkable
class Backend(Protocol):
    """What the driver needs of a backend (:mod:`experiments.backends`). Optional:
    ``is_manager`` (False on MPI worker ranks: they take no folder lock), ``share(value)``
    (every MPI rank learns the manager's value) and ``durable`` (False: results.csv is written
    once, at the end, as in simulated time)."""

    name: str  # what metadata records as the evaluator

    def start(self, plan: Plan) -> tuple[int, float]:
        """(workers, start time): ``time.time()`` live (shared by every MPI rank), 0 in
        simulated time."""

    def annotate(self, meta: dict) -> None:
        """Add the backend's own metadata."""

    def evaluator(self, plan: Plan, meta: dict) -> AbstractContextManager:
        """A context manager giving the DeepHyper evaluator, or None on a process that only
        serves trials (an MPI worker rank)."""

    def finish(self, code: int, ev, meta: dict, plan: Plan) -> int:
        """After the loop: stop the workers, final metadata; returns the exit code."""


# ------------------------------------------------------------------------------ plan
def plan_search(method: str, scale: str, seed: int, *, evaluator: str = "process",
                workers: int = 2, out: str | Path | None = None, resume: bool = False,
                trainable: str = "mlpf", budget: int | None = None,
                time_budget: float | None = None, check_ready: bool = True,
                device_budget: float | None = None) -> Plan:
    """Validate the request and look at existing logs; raise :class:`PlanError` if unusable.

    ``check_ready=False``: do not ask the trainable for its data (replayed searches)."""
    from mlpf.paths import results_dir

    try:
        checkpoints = get_method(method).checkpoints
        settings = settings_for(scale, budget, time_budget, device_budget)
        tr = get_trainable(trainable)
        if check_ready:
            tr.check_ready(scale)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise PlanError(str(e)) from None
    if workers < 1:
        raise PlanError("--workers must be >= 1")
    log_dir = Path(out) if out else results_dir(scale, method, seed)
    _check_folder(log_dir)
    try:
        previous = logs.read_json(log_dir / logs.METADATA_JSON)
    except ValueError:
        raise PlanError(f"{log_dir / logs.METADATA_JSON} is not valid JSON; move it aside "
                        "to resume from the CSV logs") from None
    lc_path = log_dir / logs.LEARNING_CURVES_CSV
    has_logs = previous is not None or (log_dir / logs.RESULTS_CSV).exists() or \
        (lc_path.exists() and lc_path.stat().st_size > 0)
    if has_logs and not resume:
        raise PlanError(f"{log_dir} already holds a search; pass --resume to continue it or "
                        "remove the folder")
    if previous is not None:
        for key, want in (("method", method), ("scale", scale), ("seed", seed)):
            if previous.get(key) != want:
                raise PlanError(f"{log_dir} holds {key}={previous.get(key)!r}, not {want!r}")
        # a resume keeps the budgets the search recorded; other fidelities would mix trials
        diff = logs.design_difference(previous, design(method, settings), logs.FIDELITY_KEYS)
        if diff:
            raise PlanError(f"{log_dir} holds a search of other fidelities ({diff}); move it "
                            "aside to run this one")
    if resume and has_logs:
        _check_resumable(log_dir)
    return Plan(method, scale, seed, evaluator, workers, trainable, log_dir, settings,
                resume=resume and has_logs, previous=previous,
                meta={"trainable_options": tr.options(), logs.LOSS: tr.loss_spec(scale)},
                checkpoints=checkpoints)


def _check_resumable(log_dir: Path) -> None:
    """Refuse to resume from a results.csv that lost its trials (empty, no header) while the
    learning curves record some: resuming would drop them without a word."""
    try:
        lc = logs.read_learning_curves(log_dir, warn=lambda msg: None)
    except logs.LogError as e:
        raise PlanError(f"{e}; move it aside to resume without the epochs it records") \
            from None
    try:
        logs.read_results(log_dir, warn=lambda msg: None)
    except logs.LogError as e:
        if len(lc):
            raise PlanError(f"{e}, but learning_curves.csv records {lc[logs.JOB_ID].nunique()} "
                            "trials: resuming would drop them; restore results.csv, or move "
                            "it aside to resume without them") from None


def _check_folder(log_dir: Path) -> None:
    """The log folder exists (or is created) and is a writable folder."""
    if log_dir.exists() and not log_dir.is_dir():
        raise PlanError(f"{log_dir} is not a folder; pass --out a folder")
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PlanError(f"cannot create the log folder {log_dir}: {e.strerror}") from None
    if not os.access(log_dir, os.W_OK | os.X_OK):
        raise PlanError(f"the log folder {log_dir} is not writable")
    for name in (logs.RESULTS_CSV, logs.LEARNING_CURVES_CSV, logs.METADATA_JSON):
        f = log_dir / name
        if f.exists() and not f.is_file():
            raise PlanError(f"{f} is not a regular file")


def design(method: str, settings) -> dict:
    """The design (:data:`experiments.logs.DESIGN_KEYS`) a search of ``method`` with these
    settings records in its metadata."""
    s = method_metadata(method, settings)["settings"]
    return {k: s[k] for k in logs.DESIGN_KEYS}


def new_metadata(plan: Plan, workers: int, now: float) -> dict:
    """metadata.json of a new search, or of a new segment of a resumed one."""
    if plan.previous is not None:  # resume: keep the search's start, add a segment
        meta = dict(plan.previous)
        meta["segments"] = [dict(sg) for sg in meta.get("segments", [])]
        # a segment that crashed still spent its time: charge it against the time budget
        logs.close_crashed_segments(meta, logs.last_activity(plan.log_dir, meta))
        meta["segments"].append({"start_time": now, "end_time": None,
                                 "status": logs.RUN_RUNNING, "workers": workers,
                                 "evaluator": plan.evaluator, "host": socket.gethostname()})
        meta.update(status=logs.RUN_RUNNING, workers=workers, evaluator=plan.evaluator)
        return meta
    described = method_metadata(plan.method, plan.settings)
    return bookkeeping.new_metadata(
        method=plan.method, scale=plan.scale, seed=plan.seed, evaluator=plan.evaluator,
        workers=workers, trainable=plan.trainable, method_settings=described,
        budget_epochs=described["budget_epochs"], time_budget_s=described["time_budget_s"],
        budget_device_s=described["budget_device_s"], start_time=now,
        trainable_options=plan.meta.get("trainable_options", {}),
        loss=plan.meta.get(logs.LOSS))


def finish_meta(meta: dict, status: str, epochs: int, n_trials: int, now: float) -> None:
    bookkeeping.close_metadata(meta, status, end_time=now, epochs=epochs, n_trials=n_trials,
                               stopped_by=meta.get(logs.MD_STOPPED_BY))


# ------------------------------------------------------------------------------ restore
def _objective(v):
    """results.csv objective cell -> float, or the failure string ``F_<reason>``."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return float(v)


def restore(search, ev, results_df, lc_df) -> int:
    """Put logged trials back into the evaluator's storage, the history and the method.

    Returns the epochs already trained.
    """
    ids = []
    if results_df is not None and len(results_df):
        ids.append(int(results_df["job_id"].max()))
    if len(lc_df):
        ids.append(int(lc_df[logs.JOB_ID].max()))
    dhcompat.reserve_job_ids(ev, max(ids) + 1 if ids else 0)
    if len(lc_df):  # compute already spent, trial by trial, for the device budget's ledger
        ledger = StorageLedger(dhcompat.storage(ev), dhcompat.search_id(ev))
        spent = (lc_df[logs.EPOCH_SECONDS].astype(float) * lc_df[logs.DEVICES].astype(float))
        for jid, s in spent.groupby(lc_df[logs.JOB_ID]).sum().items():
            ledger.add(f"{dhcompat.search_id(ev)}.{int(jid)}", float(s))

    stopper = dhcompat.stopper(search)
    if isinstance(stopper, ASHAStopper):
        sid = dhcompat.search_id(ev)
        for jid, g in lc_df.groupby(logs.JOB_ID):
            curve = dict(zip(g[logs.EPOCH].astype(int), -g[logs.VAL_LOSS].astype(float)))
            stopper.restore(dhcompat.storage(ev), f"{sid}.{int(jid)}", curve)

    jobs, pairs = [], []
    if results_df is not None:
        # a row cut by a kill while DeepHyper appended it: that trial counts as unfinished
        results_df = results_df.dropna(subset=["job_id", "objective", "job_status"])
        p_cols = [c for c in results_df.columns if c.startswith("p:")]
        m_cols = [c for c in results_df.columns if c.startswith("m:")]
        for _, row in results_df.iterrows():
            args = {c[2:]: logs.native(row[c]) for c in p_cols}
            obj = _objective(row["objective"])
            meta = {c[2:]: logs.native(row[c]) for c in m_cols}
            meta = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in meta.items()}
            jobs.append(dhcompat.logged_job(ev, int(row["job_id"]), args,
                                            {"objective": obj, "metadata": meta},
                                            row.get("job_status", "DONE")))
            pairs.append((args, obj))
    search.history.extend(jobs)
    if hasattr(search, "restore"):
        search.restore(pairs)
    elif pairs:
        search.tell(pairs)  # CBO fits its surrogate on them; random search ignores them
    return int(len(lc_df))


# ------------------------------------------------------------------------------ the loop
class Interrupted(Exception):
    """SIGTERM or SIGINT reached the manager."""


class Manager:
    """One segment of a search: prepare, loop, harvest (after an interrupt), finish.

    ``durable``: rewrite results.csv (atomically) after every finished batch of trials, so
    that a kill loses nothing finished; a simulated search writes it once, at its end.
    """

    def __init__(self, plan: Plan, ev, workers: int, meta: dict, progress: bool = True,
                 durable: bool = True):
        self.plan, self.ev, self.workers, self.meta = plan, ev, workers, meta
        self.durable = durable
        self.clock = getattr(ev, "clock", time.time)
        self.log_dir = plan.log_dir
        self.pending: list = []
        self.stop_requested = self.waiting = False
        self.books: Books | None = None  # after prepare
        self.write_error: OSError | None = None  # a log write failed (disk full)
        self.bar = Progress(f"{plan.method} {plan.scale} seed{plan.seed}",
                            meta["budget_epochs"], device_budget=meta.get("budget_device_s"),
                            time_budget=None if getattr(ev, "clock", None) else
                            meta.get("time_budget_s")) \
            if progress else None

    # ---------------------------------------------------------------- prepare
    def prepare(self) -> None:
        """Build the method's search, restore logged trials, set budgets.

        Nothing on disk changes here but the learning curves' last line (terminated when a
        kill cut it): results.csv is replaced only by a complete new file, later."""
        plan, log_dir = self.plan, self.log_dir
        results_df, lc_df = None, logs.read_learning_curves(Path("/nonexistent"))
        if plan.resume:
            lc_df = logs.read_learning_curves(log_dir)
            try:
                results_df = logs.read_results(log_dir)
            except logs.LogError as e:  # checked by plan_search: no trial in the curves
                print(f"warning: {e}; starting without it", file=sys.stderr)
        logs.ensure_header(log_dir / logs.LEARNING_CURVES_CSV)
        logs.end_with_newline(log_dir / logs.LEARNING_CURVES_CSV)  # after a kill mid-line

        segment = len(self.meta["segments"]) - 1
        self.search = build(plan.method, problem_for(plan.scale), plan.settings,
                            plan.seed + RESUME_SEED_STRIDE * segment, str(log_dir))
        self.search.check_evaluator(self.ev)
        dhcompat.attach(self.ev, self.search)
        self.epochs = restore(self.search, self.ev, results_df, lc_df)

        self.ledger = StorageLedger(dhcompat.storage(self.ev), dhcompat.search_id(self.ev))
        self.books = Books(Budget(self.meta["budget_epochs"], logs.deadline(self.meta),
                                  self.meta.get("budget_device_s"), self.plan.max_failures))
        self.meta.pop(logs.MD_STOPPED_BY, None)
        for job in self.search.history.jobs:
            self.books.record(job.metadata, job.objective)
        self.books.restart()  # a resume is a new attempt: its stop and failures count anew

    # ---------------------------------------------------------------- loop
    def _budget_left(self) -> bool:
        left = self.books.check(epochs=self.epochs, now=self.clock(),
                                device=self.ledger.total(),
                                trials=self.books.trials + len(dhcompat.running(self.ev)))
        self.meta[logs.MD_STOPPED_BY] = self.books.stopped_by
        return left

    def loop(self) -> None:
        """tell -> ask -> submit -> gather until no trial runs and the budget is spent."""
        ev, search = self.ev, self.search
        decision_times = self.meta["decision_times"]
        last_meta_write = time.monotonic()
        while True:
            if self.stop_requested:
                raise Interrupted()
            t = time.perf_counter()
            if self.pending:
                search.tell([(job.args, job.objective) for job in self.pending])
            n_free = self.workers - len(dhcompat.running(ev))
            left = self._budget_left()
            configs = search.ask(n_free) if n_free > 0 and left else []
            if self.pending or configs:
                decision_times.append(time.perf_counter() - t)
            if configs:
                ev.submit(configs)
            if self.pending:
                search.history.extend(self.pending)
                self.pending = []
                if self.durable:
                    write_results(search, self.log_dir)
            if not dhcompat.running(ev):
                return
            self.waiting = True
            try:
                got = ev.gather("BATCH", 1)
            finally:
                self.waiting = False
            self.pending = got[0] + got[1] if isinstance(got, tuple) else got
            for job in self.pending:
                self.epochs += int(job.metadata.get(logs.EPOCHS) or 0)
                self.books.record(job.metadata, job.objective)
            if self.bar and self.bar.due():
                self.bar.update(self.books.counts, self.books.best, self.epochs,
                                len(dhcompat.running(ev)), device=self.ledger.total())
            if self.durable and time.monotonic() - last_meta_write > META_WRITE_INTERVAL:
                finish_meta(self.meta, logs.RUN_RUNNING, self.epochs,
                            len(search.history) + len(self.pending), self.clock())
                logs.write_json(self.log_dir / logs.METADATA_JSON, self.meta)
                last_meta_write = time.monotonic()

    # ---------------------------------------------------------------- harvest
    def harvest(self) -> None:
        """After an interrupt: collect trials that finished but were not gathered yet.

        A trial whose worker died meanwhile was killed by the same signal: it is left out
        (it did not finish) and runs again when the search resumes."""
        dhcompat.reset_storage_connection(self.ev)
        harvested = [job for job in dhcompat.finished_unharvested(self.ev)
                     if job.metadata.get(logs.REASON) != logs.REASON_WORKER_DIED]
        self.epochs += sum(int(job.metadata.get(logs.EPOCHS) or 0) for job in harvested)
        self.pending = self.pending + harvested

    # ---------------------------------------------------------------- finish
    def finish(self, status: str) -> int:
        """Write results.csv and metadata.json; returns the exit code (0 complete, 1 ended
        by failed trials, 143 interrupted)."""
        search = self.search
        if self.pending:
            search.history.extend(self.pending)
        status = bookkeeping.final_status(status == logs.RUN_INTERRUPTED,
                                          self.meta.get(logs.MD_STOPPED_BY))
        if status == logs.RUN_FAILED:
            self.meta["failure"] = self.books.failure_text()
        if status != logs.RUN_INTERRUPTED:
            self.ev.close()
        if status == logs.RUN_COMPLETE:
            # Training states of Hyperband trials are only needed to continue a search.
            shutil.rmtree(self.log_dir / "checkpoints", ignore_errors=True)
        try:
            write_results(search, self.log_dir)
            finish_meta(self.meta, status, self.epochs, len(search.history), self.clock())
            logs.write_json(self.log_dir / logs.METADATA_JSON, self.meta)
        except OSError as e:
            self.write_error = self.write_error or e
        if self.bar and self.books is not None:
            self.bar.update(self.books.counts, self.books.best, self.epochs, 0, final=True,
                            device=self._spent(),
                            reason=bookkeeping.closing_reason(status,
                                                              self.meta.get(logs.MD_STOPPED_BY)))
        if self.write_error is not None:
            print(f"error: cannot write the logs in {self.log_dir} ({self.write_error}); the "
                  "files there hold everything up to their last complete write: free space "
                  "and continue with --resume", file=sys.stderr)
            return bookkeeping.exit_code(logs.RUN_FAILED)
        if status == logs.RUN_FAILED:
            print(f"error: {self.plan.log_dir}: search stopped: {self.meta['failure']}",
                  file=sys.stderr)
        return bookkeeping.exit_code(status)

    def _spent(self) -> float:
        try:
            return float(self.ledger.total())
        except Exception:  # noqa: BLE001 - the storage is gone after a crash: no number
            return 0.0

    def on_signal(self, signum, frame) -> None:
        self.stop_requested = True
        if self.waiting:
            raise Interrupted()


def write_results(search, log_dir: Path) -> None:
    """The complete results.csv (all columns of all trials), replacing the old one at once."""
    if len(search.history) == 0:
        return
    logs.write_atomic(log_dir / logs.RESULTS_CSV,
                      search.history.to_dataframe().to_csv(index=False))


def drive(plan: Plan, ev, workers: int, meta: dict, progress: bool = True,
          durable: bool = True) -> int:
    """Run the manager on ``ev``. Returns the exit code (0 complete, 1 ended by failed
    trials, 143 interrupted). A signal that arrives while the logs are restored stops the
    search as cleanly as one that arrives later."""
    m = Manager(plan, ev, workers, meta, progress, durable)
    manager_pid = os.getpid()

    def on_signal(signum, frame):
        if os.getpid() != manager_pid:  # a forked worker before it reset its handlers
            os._exit(128 + signum)
        m.on_signal(signum, frame)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    status = logs.RUN_COMPLETE
    try:
        m.prepare()
        m.loop()
    except Interrupted:
        status = logs.RUN_INTERRUPTED
        m.harvest()
    except OSError as e:  # a log write failed (disk full, file size limit): stop resumable
        status, m.write_error = logs.RUN_INTERRUPTED, e
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return m.finish(status)


def run(plan: Plan, backend: Backend, progress: bool = True) -> int:
    """Run the search of ``plan`` on ``backend``; returns the exit code (0 on worker ranks).

    The manager holds an exclusive lock on the log folder while the search runs: a second
    search into the same folder is refused (:class:`PlanError`)."""
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    lock, problem = None, None
    if getattr(backend, "is_manager", True):
        try:
            lock = logs.lock_folder(plan.log_dir)
        except logs.FolderLocked as e:
            problem = str(e)
    share = getattr(backend, "share", None)  # every MPI rank must learn of the refusal
    problem = share(problem) if share else problem
    if problem:
        raise PlanError(problem)
    try:
        workers, now = backend.start(plan)
        meta = new_metadata(plan, workers, now)
        backend.annotate(meta)
        with backend.evaluator(plan, meta) as ev:
            if ev is None:  # an MPI worker rank: it served trials until the manager finished
                return 0
            logs.write_json(plan.log_dir / logs.METADATA_JSON, meta)
            code = drive(plan, ev, workers, meta, progress, getattr(backend, "durable", True))
            return backend.finish(code, ev, meta, plan)
    finally:
        if lock is not None:
            os.close(lock)
