"""The search driver: plan, run metadata, budgets and deadline, progress, the manager loop.

The driver is HANDED a backend (:mod:`experiments.backends`): an object that opens an
evaluator (live workers, or a replay on a simulated clock) and says how the search's time is
read. It never imports a backend, so a live, an MPI and a replayed search run the same loop.

The manager loop is DeepHyper's (ask -> submit -> gather -> tell) written out so that it can
(a) stop submitting when the search's epoch or wall-time budget is spent, (b) time every
decision, (c) stop cleanly on SIGTERM/SIGINT (finished trials written, metadata status
"interrupted"; exit code 143) and (d) resume from the logs (``--resume``): finished trials are
kept and told to the method (surrogate, Hyperband rungs, ASHA rung values), job ids continue
after the largest logged one, trials that were running are not counted as finished (they run
again; their epochs count). A resume never drops a finished trial without a word: logs that
lost some (results.csv holding fewer trials than metadata.json counts) are refused
(:func:`_check_resumable`), a damaged or tampered row is reported and skipped (:func:`usable`),
metadata.json of the wrong types is refused. results.csv is written from the manager's own
history, so a killed storage server stops the search resumably with every trial it reported.

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

import pandas as pd

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
    previous = _read_metadata(log_dir, resume)
    lc_path = log_dir / logs.LEARNING_CURVES_CSV
    has_logs = previous is not None or (log_dir / logs.RESULTS_CSV).exists() or \
        (lc_path.exists() and lc_path.stat().st_size > 0)
    if has_logs and not resume:
        raise PlanError(f"{log_dir} already holds a search; pass --resume to continue it or "
                        "remove the folder")
    if previous is not None:
        same = [(logs.MD_METHOD, method), (logs.MD_SCALE, scale), (logs.MD_SEED, seed)]
        if check_ready and logs.MD_TRAINABLE in previous:  # live (a replay's is its table's)
            same.append((logs.MD_TRAINABLE, trainable))
        for key, want in same:
            if previous.get(key) != want:
                raise PlanError(f"{log_dir} holds {key}={previous.get(key)!r}, not {want!r}")
        # a resume keeps the budgets the search recorded; other fidelities would mix trials
        diff = logs.design_difference(previous, design(method, settings), logs.FIDELITY_KEYS)
        if diff:
            raise PlanError(f"{log_dir} holds a search of other fidelities ({diff}); move it "
                            "aside to run this one")
    if resume and has_logs:
        _check_resumable(log_dir, previous, searched(method, scale), settings.max_t)
    return Plan(method, scale, seed, evaluator, workers, trainable, log_dir, settings,
                resume=resume and has_logs, previous=previous,
                meta={"trainable_options": tr.options(), logs.LOSS: tr.loss_spec(scale)},
                checkpoints=checkpoints)


# metadata.json keys a resumed segment builds on (the schema types them: logs.SearchMetadata)
RESUME_KEYS = (logs.MD_START, logs.MD_SEGMENTS, logs.MD_DECISIONS, logs.MD_BUDGET_EPOCHS)


def _read_metadata(log_dir: Path, resume: bool) -> dict | None:
    """The folder's metadata.json, checked against its schema (:class:`logs.SearchMetadata`):
    a key of the wrong type, or (to resume) a missing one, is a :class:`PlanError`."""
    path = log_dir / logs.METADATA_JSON
    aside = "; move it aside to resume from the CSV logs"
    try:
        previous = logs.read_json(path)
    except ValueError:
        raise PlanError(f"{path} is not valid JSON{aside}") from None
    if previous is None:
        return None
    try:
        logs.read_checked_json(path, logs.SearchMetadata, strict=True)
    except logs.LogError as e:
        raise PlanError(f"{e}{aside}") from None
    missing = [k for k in RESUME_KEYS if k not in previous]
    if resume and (missing or not previous[logs.MD_SEGMENTS]):
        raise PlanError(f"{path} has no {(missing or [logs.MD_SEGMENTS])[0]}{aside}")
    return previous


@dataclass
class Logged:
    """A folder's logs as a resume reads them (damaged rows reported and left out)."""

    results: pd.DataFrame | None  # results.csv (None: no such file)
    curves: pd.DataFrame  # learning_curves.csv
    damaged: int = 0  # lines of results.csv left out as damaged

    @property
    def accounted(self) -> int:
        """Trials results.csv accounts for: its distinct job ids and its damaged lines."""
        n = 0 if self.results is None else self.results[logs.JOB_ID].nunique()
        return n + self.damaged


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def _quiet(msg: str) -> None:
    pass


def read_logged(log_dir: Path, warn=_warn) -> Logged:
    """results.csv and learning_curves.csv of ``log_dir``, damaged rows reported (``warn``)
    and left out; :class:`logs.LogError` when one is not a log of this format."""
    damaged: list[str] = []

    def on_damaged(msg: str) -> None:
        damaged.append(msg)
        warn(msg)

    curves = logs.read_learning_curves(log_dir, warn=warn)
    return Logged(logs.read_results(log_dir, warn=on_damaged), curves, len(damaged))


def searched(method: str, scale: str) -> list:
    """The hyperparameters (:class:`experiments.space.Dimension`) the trials of ``method``
    log in results.csv: the scale's space, or none for the untuned default."""
    from experiments.space import dimensions

    return [] if get_method(method).search == "fixed" else dimensions(problem_for(scale))


def _check_resumable(log_dir: Path, previous: dict | None, dims: list, max_t: int) -> None:
    """Refuse to resume from logs that would lose finished trials without a word.

    Finished trials live in results.csv only (learning_curves.csv has no configurations, so
    a trial cannot be rebuilt from it). results.csv is rewritten whole before metadata.json
    counts a trial (``n_trials``), so results.csv accounting for fewer trials than that (cut
    to its header, deleted, replaced by an older copy) lost some. Without that count, an
    empty or missing results.csv beside curves of a trial trained to ``max_t`` lost it too.
    A results.csv of another search space is refused as well."""
    try:
        lc = logs.read_learning_curves(log_dir, warn=_quiet)
    except logs.LogError as e:
        raise PlanError(f"{e}; move it aside to resume without the epochs it records") \
            from None
    try:
        logged = read_logged(log_dir, warn=_quiet)  # the resume itself reports them
    except logs.LogError as e:
        if len(lc):
            raise PlanError(f"{e}, but learning_curves.csv records "
                            f"{lc[logs.JOB_ID].nunique()} trials: resuming would drop them; "
                            "restore results.csv, or move the folder aside to start again") \
                from None
        return
    results, lc = logged.results, logged.curves
    path = log_dir / logs.RESULTS_CSV
    counted = (previous or {}).get(logs.MD_N_TRIALS)
    lost = None
    if counted is not None and logged.accounted < counted:
        lost = f"metadata.json counts {counted} finished trials"
    elif counted is None and logged.accounted == 0 and len(lc) and \
            (lc.groupby(logs.JOB_ID)[logs.EPOCH].max() >= max_t).any():
        lost = "learning_curves.csv records trials trained to max_t"
    if lost:
        raise PlanError(f"{path} holds {logged.accounted} trials but {lost}: resuming would "
                        "drop them; restore results.csv, or move the folder aside to start "
                        "again")
    if results is not None and len(results.columns) > 1:
        names = {d.name for d in dims}
        have = {c[len(logs.HP_PREFIX):] for c in results.columns
                if c.startswith(logs.HP_PREFIX)}
        odd = sorted(names - have) + sorted(have - names - set(logs.SCHEDULE_KEYS))
        if odd:
            raise PlanError(f"{path} is not a log of this search space (column "
                            f"{logs.HP_PREFIX}{odd[0]}); move the folder aside to start again")


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
DONE = "DONE"  # the job status of every row of results.csv (DeepHyper's; a finished job)


@dataclass(frozen=True)
class LoggedTrial:
    """One finished trial of results.csv, checked: its job number, configuration (schedule
    keys included), objective (-val_loss, or ``F_<reason>``) and trial metadata."""

    number: int
    args: dict
    objective: float | str
    metadata: dict


def _objective(v):
    """results.csv objective cell -> float, or the failure string ``F_<reason>``; ValueError
    for anything else (text, NaN, a positive number: it is -val_loss)."""
    if isinstance(v, str) and v.startswith(logs.FAILED_PREFIX):
        return v
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{v!r} is neither -val_loss nor {logs.FAILED_PREFIX}_<reason>") \
            from None
    if math.isnan(v) or logs.out_of_range(logs.OBJECTIVE, v):
        raise ValueError(f"{v!r} is not a -val_loss")
    return v


def _schedule(cfg: dict, number: int, search, max_t: int) -> dict:
    """The schedule keys of a logged job (a Hyperband rung: :data:`logs.SCHEDULE_KEYS`) as
    integers that fit the search's brackets; ValueError when they do not."""
    out = {}
    for k in logs.SCHEDULE_KEYS:
        if k not in cfg:
            continue
        v = logs.native(cfg[k])  # a column with a damaged cell is read as text
        try:
            f = math.nan if isinstance(v, bool) else float(v)
        except (TypeError, ValueError):
            f = math.nan
        if not (math.isfinite(f) and f == int(f) and f >= 0):
            raise ValueError(f"{logs.HP_PREFIX}{k}={v!r} is not an integer >= 0")
        out[k] = int(f)
    if logs.BUDGET_KEY in out and not 1 <= out[logs.BUDGET_KEY] <= max_t:
        raise ValueError(f"{logs.HP_PREFIX}{logs.BUDGET_KEY}={out[logs.BUDGET_KEY]} is outside "
                         f"[1, {max_t}]")
    table = getattr(search, "table", None)  # Hyperband's brackets
    if table is None:
        return out
    if set(logs.SCHEDULE_KEYS) - set(out):
        raise ValueError(f"no {logs.HP_PREFIX}{sorted(set(logs.SCHEDULE_KEYS) - set(out))[0]}")
    b, r = out[logs.HB_BRACKET], out[logs.HB_RUNG]
    # brackets open in order, each after the previous ones handed out a job: b <= job number
    rungs = table[b % len(table)] if b <= number else []
    if r >= len(rungs) or rungs[r][1] != out[logs.BUDGET_KEY]:
        raise ValueError(f"bracket {b}, rung {r}, budget {out[logs.BUDGET_KEY]} is no rung of "
                         "this search's brackets")
    return out


def usable(logged: Logged, dims: list, search, max_t: int, log_dir: Path,
           warn=_warn) -> tuple[list[LoggedTrial], pd.DataFrame]:
    """The finished trials and learning-curve rows a resume builds on; every row left out is
    reported (``warn``): a job id past the logged trials' count + :data:`logs.MAX_JOB_ID_GAP`
    (restoring it would reserve every id up to it), a repeated job id (or job and epoch: the
    first row is kept), a job status other than DONE, an objective that is no -val_loss or
    ``F_<reason>``, a hyperparameter of ``dims`` (:func:`searched`) outside the space or of
    another type (:func:`experiments.space.logged_value`), schedule keys that fit none of the
    brackets."""
    from experiments.space import logged_value

    res, lc = logged.results, logged.curves
    res_path, lc_path = log_dir / logs.RESULTS_CSV, log_dir / logs.LEARNING_CURVES_CSV
    ids = set(lc[logs.JOB_ID].astype(int)) | (set() if res is None else
                                              set(res[logs.JOB_ID].astype(int)))
    bound = len(ids) + logs.MAX_JOB_ID_GAP
    far = lc[logs.JOB_ID] > bound
    for j in sorted(set(lc.loc[far, logs.JOB_ID])):
        warn(f"{lc_path}: job_id {j} is past {bound} (its {len(ids)} logged trials + "
             f"{logs.MAX_JOB_ID_GAP}): a damaged cell; its rows skipped")
    twice = lc.duplicated([logs.JOB_ID, logs.EPOCH]) & ~far
    for j, e in zip(lc.loc[twice, logs.JOB_ID], lc.loc[twice, logs.EPOCH]):
        warn(f"{lc_path}: job_id {j} epoch {e} is logged again; the first row kept")
    lc = lc[~far & ~twice]

    trials: list[LoggedTrial] = []
    if res is None:
        return trials, lc
    seen: set[int] = set()
    for _, row in res.iterrows():
        number = int(row[logs.JOB_ID])
        try:
            if number > bound:
                raise ValueError(f"the job id is past {bound} (its {len(ids)} logged trials + "
                                 f"{logs.MAX_JOB_ID_GAP}): a damaged cell")
            if number in seen:
                raise ValueError("the job id is logged again (its first row is kept)")
            status = logs.native(row.get(logs.JOB_STATUS, DONE))
            if status != DONE:
                raise ValueError(f"{logs.JOB_STATUS}={status!r} is not {DONE}")
            objective = _objective(logs.native(row[logs.OBJECTIVE]))
            args = {}
            for d in dims:
                try:
                    args[d.name] = logged_value(d, row.get(logs.HP_PREFIX + d.name))
                except ValueError as e:
                    raise ValueError(f"{logs.HP_PREFIX}{d.name}: {e}") from None
            args.update(_schedule({k: row[logs.HP_PREFIX + k] for k in logs.SCHEDULE_KEYS
                                   if logs.HP_PREFIX + k in row.index}, number, search, max_t))
        except ValueError as e:
            warn(f"{res_path}: job_id {number}: {e}; skipped")
            continue
        seen.add(number)
        meta = {c[len(logs.META_PREFIX):]: logs.native(row[c]) for c in res.columns
                if c.startswith(logs.META_PREFIX)}
        meta = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in meta.items()}
        trials.append(LoggedTrial(number, args, objective, meta))
    return trials, lc


def restore(search, ev, trials: list[LoggedTrial], lc_df: pd.DataFrame) -> int:
    """Put logged trials (:func:`usable`) back into the evaluator's storage, the history and
    the method.

    Returns the epochs already trained.
    """
    ids = [t.number for t in trials] + [int(j) for j in lc_df[logs.JOB_ID]]
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

    jobs = [dhcompat.logged_job(ev, t.number, t.args,
                                {"objective": t.objective, "metadata": t.metadata}, DONE)
            for t in trials]
    dhcompat.settle(jobs)
    pairs = [(t.args, t.objective) for t in trials]
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
        self.storage_error: Exception | None = None  # the evaluator's storage server is gone
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
        logged = Logged(None, logs.read_learning_curves(Path("/nonexistent")))
        if plan.resume:
            try:
                logged = read_logged(log_dir)
            except logs.LogError as e:  # checked by plan_search: no trial in the curves
                _warn(f"{e}; starting without it")
                logged = Logged(None, logs.read_learning_curves(log_dir, warn=_quiet))
        logs.ensure_header(log_dir / logs.LEARNING_CURVES_CSV)
        logs.end_with_newline(log_dir / logs.LEARNING_CURVES_CSV)  # after a kill mid-line

        segment = len(self.meta["segments"]) - 1
        self.search = build(plan.method, problem_for(plan.scale), plan.settings,
                            plan.seed + RESUME_SEED_STRIDE * segment, str(log_dir))
        self.search.check_evaluator(self.ev)
        dhcompat.attach(self.ev, self.search)
        trials, curves = usable(logged, searched(plan.method, plan.scale), self.search,
                                plan.settings.max_t, log_dir)
        self.epochs = restore(self.search, self.ev, trials, curves)
        if plan.resume and self.durable:  # rows left out: results.csv will hold fewer
            self.meta[logs.MD_N_TRIALS] = len(self.search.history)
            logs.write_json(log_dir / logs.METADATA_JSON, self.meta)

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
            if self.bar and self.bar.due():
                # drawn after the free workers got their trials, so "running" counts busy ones
                self.bar.update(self.books.counts, self.books.best, self.epochs,
                                len(dhcompat.running(ev)), device=self.ledger.total())
            if not dhcompat.running(ev):
                return
            self.waiting = True
            try:
                got = ev.gather("BATCH", 1)
            finally:
                self.waiting = False
            self.pending = got[0] + got[1] if isinstance(got, tuple) else got
            dhcompat.settle(self.pending)  # results.csv no longer needs the storage for them
            for job in self.pending:
                self.epochs += int(job.metadata.get(logs.EPOCHS) or 0)
                self.books.record(job.metadata, job.objective)
            if self.durable and time.monotonic() - last_meta_write > META_WRITE_INTERVAL:
                # n_trials: those results.csv holds (pending ones are written next round)
                finish_meta(self.meta, logs.RUN_RUNNING, self.epochs, len(search.history),
                            self.clock())
                logs.write_json(self.log_dir / logs.METADATA_JSON, self.meta)
                last_meta_write = time.monotonic()

    # ---------------------------------------------------------------- harvest
    def harvest(self) -> None:
        """After an interrupt: collect trials that finished but were not gathered yet.

        A trial whose worker died meanwhile was killed by the same signal: it is left out
        (it did not finish) and runs again when the search resumes; so are all of them when
        the storage server is gone too."""
        dhcompat.reset_storage_connection(self.ev)
        try:
            harvested = [job for job in dhcompat.finished_unharvested(self.ev)
                         if job.metadata.get(logs.REASON) != logs.REASON_WORKER_DIED]
            dhcompat.settle(harvested)
        except (OSError, EOFError):
            harvested = []
        self.epochs += sum(int(job.metadata.get(logs.EPOCHS) or 0) for job in harvested)
        self.pending = self.pending + harvested

    def salvage(self) -> None:
        """After the storage server died: collect the trials that finished without it (the
        workers returned them; only marking them done needed the server)."""
        try:
            jobs = dhcompat.finished_without_storage(self.ev)
        except Exception:  # noqa: BLE001 - nothing more to collect; what is gathered is kept
            return
        self.epochs += sum(int(job.metadata.get(logs.EPOCHS) or 0) for job in jobs)
        self.pending = [*self.pending, *(j for j in jobs if j not in self.pending)]

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
        if self.storage_error is not None:
            print(f"error: {self.log_dir}: the storage server of the search's workers is gone "
                  f"({type(self.storage_error).__name__}); every trial it had reported is "
                  "written: continue with --resume", file=sys.stderr)
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
    trials, a failed log write or a lost storage server, 143 interrupted). A signal
    (:func:`bookkeeping.stop_signals`) that arrives while the logs are restored stops the
    search as cleanly as one that arrives later; once the search is shutting down, further
    ones are ignored (Slurm and ``timeout`` signal the whole process group, and a campaign
    passes its own signal on: the manager gets two), so that nothing cuts the writing of the
    logs short; :func:`run` restores the handlers."""
    m = Manager(plan, ev, workers, meta, progress, durable)
    manager_pid = os.getpid()

    def on_signal(signum, frame):
        if os.getpid() != manager_pid:  # a forked worker before it reset its handlers
            os._exit(128 + signum)
        m.on_signal(signum, frame)

    def while_closing(signum, frame):
        if os.getpid() != manager_pid:
            os._exit(128 + signum)

    watched = bookkeeping.stop_signals()
    for s in watched:
        signal.signal(s, on_signal)
    status = logs.RUN_COMPLETE
    try:
        m.prepare()
        m.loop()
    except Interrupted:
        status = logs.RUN_INTERRUPTED
        m.harvest()
    except (OSError, EOFError) as e:  # stop resumable: a log write failed (disk full, file
        status = logs.RUN_INTERRUPTED  # size limit), or the storage server is gone
        if isinstance(e, OSError) and dhcompat.storage_alive(ev):
            m.write_error = e
        else:
            m.storage_error = e
            m.salvage()
    finally:
        for s in watched:
            signal.signal(s, while_closing)
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
    handlers = {s: signal.getsignal(s) for s in bookkeeping.stop_signals()}
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
        for s, h in handlers.items():
            if h is not None:
                signal.signal(s, h)
        if lock is not None:
            logs.unlock_folder(lock)
