"""Raw logs of one search, in ``results/<scale>/<method>/seed<k>/``.

- ``results.csv``: DeepHyper's table, one row per trial (job), with ``p:<hp>`` columns, the
  objective (``-val_loss``; ``F_<reason>`` for failures) and ``m:<name>`` metadata columns
  (``m:status``, ``m:reason``, ``m:epochs``, ``m:budget``, ...: see :data:`TRIAL_METADATA`).
- ``learning_curves.csv``: one row per trial and epoch, columns :data:`LC_COLUMNS`, appended by
  the workers as epochs finish (each row one ``write`` of a whole line, then ``fsync``), so a
  killed search leaves a consistent file.
- ``metadata.json``: the method and its settings, scale, seed, evaluator, workers, versions,
  git commit, host, start/end times and the manager's decision times.

This module is the log schema, written once: file names, the columns of every CSV with their
types and valid ranges (:data:`LC_TYPES`, :data:`RANGES`), the prefixed columns of results.csv
(``p:``, ``m:``), the keys of metadata.json (``MD_*``), the learning-curve table's columns
(``TABLE_*``) and how a job id reads (:func:`job_number`). Every writer (the driver, the
workers, the simulated and Ray Tune peers, the table builder) and the analysis' reader
(:mod:`analysis.logs`) import their names from here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

RESULTS_CSV = "results.csv"
LEARNING_CURVES_CSV = "learning_curves.csv"
METADATA_JSON = "metadata.json"
# results/<scale>/<method>/seed<k>/: one search; results/<scale>/replay/<method>/seed<k>/: the
# same searches replayed on a learning-curve table in simulated time
SEED_DIR = re.compile(r"^seed(\d+)$")
REPLAY_DIR = "replay"
DEFAULT_METHOD = "default"  # the untuned reference configuration, one trial trained to max_t

# learning_curves.csv
JOB_ID = "job_id"  # int, DeepHyper's job id (the number after the dot), unique in a search
EPOCH = "epoch"  # 1-based epoch of that trial
VAL_LOSS = "val_loss"
TRAIN_LOSS = "train_loss"
EPOCH_SECONDS = "epoch_seconds"  # the device's seconds of the epoch: wall seconds of a GPU,
# CPU seconds of the training process on a CPU worker (trial.device_seconds); a table's wall
# seconds; replays: the table's CPU seconds where it records them. t_start/t_end are wall time.
T_START = "t_start"  # seconds since the search began (metadata start_time), epoch start
T_END = "t_end"  # seconds since the search began, epoch end
WORKER = "worker"  # stable id of the worker: MPI rank, or worker slot of the process pool
DEVICES = "devices"  # devices the trial held: GPUs, or CPU cores (threads) on CPU nodes
# Validation loss components (mlpf/loss.py COMPONENTS, unweighted per-element means) and the
# weighted regression part: recorded per epoch where the trainable reports them (empty where it
# does not), so that any other weighting of the loss can be recomputed from the logs.
VAL_COMPONENTS = ("val_loss_cls", "val_loss_charge", "val_loss_pt", "val_loss_eta",
                  "val_loss_sin_phi", "val_loss_cos_phi", "val_loss_energy")
VAL_LOSS_REG = "val_loss_reg"
EPOCH_CPU_SECONDS = "epoch_cpu_seconds"  # CPU seconds of the training process in the epoch
LOSS = "loss"  # metadata.json / lctable.json: the loss the trainings used (mlpf.train.loss_spec)
# what a trainable may report beside val_loss, train_loss and epoch_seconds (empty when not)
LC_EXTRA = (EPOCH_CPU_SECONDS, VAL_LOSS_REG, *VAL_COMPONENTS)
LC_COLUMNS = (JOB_ID, EPOCH, VAL_LOSS, TRAIN_LOSS, EPOCH_SECONDS, T_START, T_END, WORKER, DEVICES,
              *LC_EXTRA)

# results/<scale>/claim1/: the claim-1 references (experiments.claim1), one row per training in
# runs.csv, one per (training, epoch) in learning_curves.csv
CLAIM1_DIR = "claim1"
REFERENCE = "reference"  # default | default_lr | converged | paper_best
LR = "lr"
SEED = "seed"  # training seed
CLAIM1_KEY = (REFERENCE, LR, SEED)
CLAIM1_RUN_COLUMNS = (REFERENCE, LR, SEED, "epochs", VAL_LOSS, VAL_LOSS_REG, *VAL_COMPONENTS,
                      TRAIN_LOSS, "wall_seconds", "cpu_seconds", "status", "reason")
CLAIM1_LC_COLUMNS = (REFERENCE, LR, SEED, EPOCH, VAL_LOSS, VAL_LOSS_REG, *VAL_COMPONENTS,
                     TRAIN_LOSS, EPOCH_SECONDS, EPOCH_CPU_SECONDS)

# ---- results.csv (DeepHyper 0.13's layout): one row per trial
HP_PREFIX = "p:"  # p:<hyperparameter>, and p:<schedule key> for scheduled jobs
META_PREFIX = "m:"  # m:<trial metadata>
OBJECTIVE = "objective"  # -final val_loss, or "F_<reason>" for a failed trial
FAILED_PREFIX = "F"
JOB_STATUS = "job_status"  # DeepHyper's: DONE
# Keys a scheduled job carries next to the hyperparameters (p:<key> in results.csv): never
# hyperparameters of the model.
BUDGET_KEY = "budget"  # epochs to train this job for (a Hyperband rung's budget)
HB_BRACKET, HB_RUNG, HB_TRIAL = "hb_bracket", "hb_rung", "hb_trial"  # Hyperband's bracket
HB_KEYS = (HB_BRACKET, HB_RUNG, HB_TRIAL)  # number, rung index, trial number (its checkpoint)
SCHEDULE_KEYS = (BUDGET_KEY, *HB_KEYS)


def job_number(job_id) -> int:
    """A job id as DeepHyper writes it (``"<search>.<n>"``) or as the logs keep it (``n``)
    -> n."""
    return int(str(job_id).rpartition(".")[2])


def job_search(job_id) -> str:
    """The search part of a DeepHyper job id: ``"0.17"`` -> ``"0"``."""
    return str(job_id).partition(".")[0]


# the trial metadata the run-function writes (DeepHyper prefixes them with "m:")
STATUS = "status"  # ok | stopped | failed
STATUS_OK, STATUS_STOPPED, STATUS_FAILED = "ok", "stopped", "failed"
REASON = "reason"  # failure reason ("diverged", "oom", "error:ValueError", ...) or ""
EPOCHS = "epochs"  # epochs this trial trained (compute of the trial = sum of its LC rows)
BUDGET = "budget"  # epochs the trial was allowed (max_t, or the Hyperband rung budget)
BEST_VAL_LOSS = "best_val_loss"
TRIAL_START = "trial_start"  # seconds since the search began, inside the worker
TRIAL_END = "trial_end"
TRIAL_WORKER = "worker"
TRIAL_METADATA = (STATUS, REASON, EPOCHS, BUDGET, BEST_VAL_LOSS, TRIAL_START, TRIAL_END,
                  TRIAL_WORKER)


def meta_column(name: str) -> str:
    """The results.csv column of trial metadata ``name``: ``status`` -> ``m:status``."""
    return META_PREFIX + name


M_STATUS, M_REASON, M_EPOCHS, M_BUDGET = map(meta_column, (STATUS, REASON, EPOCHS, BUDGET))
M_BEST_VAL_LOSS, M_TRIAL_START, M_TRIAL_END = map(meta_column, (BEST_VAL_LOSS, TRIAL_START,
                                                                TRIAL_END))
M_TIMESTAMP_SUBMIT = meta_column("timestamp_submit")  # DeepHyper's: when the job was sent
M_TIMESTAMP_GATHER = meta_column("timestamp_gather")  # and when its result was gathered


def results_columns(names, extra=()) -> list[str]:
    """results.csv columns in DeepHyper's order: p:<hyperparameter> sorted, the objective,
    job id and status, the submit time, m:<trial metadata> (:data:`TRIAL_METADATA`, then
    ``extra``), the gather time."""
    return ([HP_PREFIX + n for n in sorted(names)] + [OBJECTIVE, JOB_ID, JOB_STATUS,
                                                      M_TIMESTAMP_SUBMIT]
            + [meta_column(k) for k in (*TRIAL_METADATA, *extra)] + [M_TIMESTAMP_GATHER])


def results_row(config: dict, outcome: dict, number: int, submitted: float,
                gathered: float) -> dict:
    """One results.csv row (:func:`results_columns`) of a finished trial: its configuration,
    the outcome its trial contract returned (``objective`` and ``metadata``), its job number
    and the times it was sent and gathered."""
    return {**{HP_PREFIX + k: v for k, v in config.items()}, OBJECTIVE: outcome["objective"],
            JOB_ID: number, JOB_STATUS: "DONE", M_TIMESTAMP_SUBMIT: submitted,
            **{meta_column(k): v for k, v in outcome["metadata"].items()},
            M_TIMESTAMP_GATHER: gathered}


# ---- types and valid ranges of the numeric columns: a reader skips a row (with a warning
# naming its line) whose cell is not of the type or outside the range; empty cells are NaN
INT, FLOAT = "int", "float"
LC_TYPES = {JOB_ID: INT, EPOCH: INT, VAL_LOSS: FLOAT, TRAIN_LOSS: FLOAT, EPOCH_SECONDS: FLOAT,
            T_START: FLOAT, T_END: FLOAT, DEVICES: FLOAT,
            **{c: FLOAT for c in LC_EXTRA}}
MAX_JOB_ID = 10**9  # far above any search: a larger id is a damaged cell, not a trial
# Job ids are handed out one by one from 0 and every one is logged but those of trials that
# were running, before their first epoch, when a segment ended (at most its workers): ids past
# the logged trials' count + this gap are damaged cells (a resume would reserve every id).
MAX_JOB_ID_GAP = 10_000
# (low, high), None for no limit; losses may be +inf or empty (a diverged epoch)
RANGES = {JOB_ID: (0, MAX_JOB_ID), EPOCH: (1, 10**6), VAL_LOSS: (0.0, None),
          TRAIN_LOSS: (0.0, None), EPOCH_SECONDS: (0.0, None), DEVICES: (0.0, None),
          EPOCH_CPU_SECONDS: (0.0, None), VAL_LOSS_REG: (0.0, None),
          **{c: (0.0, None) for c in VAL_COMPONENTS},
          # results.csv: the objective is -val_loss (or F_<reason>, text); counts never < 0
          OBJECTIVE: (None, 0.0), M_EPOCHS: (0, 10**6), M_BUDGET: (0, None),
          M_BEST_VAL_LOSS: (0.0, None)}
# results.csv's numeric trial metadata: numbers (empty: NaN), checked as the curves' columns
RESULTS_NUMERIC = (M_EPOCHS, M_BUDGET, M_BEST_VAL_LOSS, M_TRIAL_START, M_TRIAL_END,
                   M_TIMESTAMP_SUBMIT, M_TIMESTAMP_GATHER)


def out_of_range(column: str, value: float) -> bool:
    """Whether a (non-NaN) ``value`` of ``column`` lies outside :data:`RANGES`."""
    low, high = RANGES.get(column, (None, None))
    return (low is not None and value < low) or (high is not None and value > high)


# ---- metadata.json keys
MD_METHOD = "method"
MD_SCALE = "scale"
MD_SEED = "seed"
MD_EVALUATOR = "evaluator"
MD_WORKERS = "workers"
MD_TRAINABLE = "trainable"  # what was trained: "mlpf", or "synthetic" (a test function)
MD_SETTINGS = "method_settings"  # the method's record; its "settings": max_t, grace, eta, ...
MD_SETTINGS_ALIASES = ("settings", "method_settings", "method_config")  # older layouts
MD_START = "start_time"  # seconds since 1970 (0 in simulated time)
MD_END = "end_time"
MD_STATUS = "status"  # running | complete | interrupted | failed
MD_STOPPED_BY = "stopped_by"  # what ended it: experiments.bookkeeping.STOP_REASONS
MD_BACKEND = "backend"  # "replay" for replayed searches (simulated time); absent when live
MD_DECISIONS = "decision_times"  # seconds the manager spent per decision
MD_SEGMENTS = "segments"  # one dict per run of a resumed search: start_time, end_time, workers
MD_N_TRIALS = "n_trials"  # finished trials; written after results.csv holds them, so a
# results.csv with fewer rows lost some (a resume refuses it rather than drop them)
MD_BUDGET_EPOCHS = "budget_epochs"
MAX_T = "max_t"

# metadata.json status (a segment that ended without writing its end says "crashed")
RUN_RUNNING, RUN_COMPLETE, RUN_INTERRUPTED = "running", "complete", "interrupted"
RUN_FAILED, RUN_CRASHED = "failed", "crashed"
REASON_WORKER_DIED = "worker_died"  # m:reason of a trial whose worker process died


# ---- the JSON files' schemas (pydantic, strict: a number written as text is damage). Only the
# keys a reader uses are typed; others pass as they are. A reader (:func:`read_checked_json`)
# reports a key of the wrong type or range and leaves it out, as if it were missing.
Number = Annotated[float, Field(allow_inf_nan=False)]  # finite; an int is a number too
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Span(_Record):
    """A time span (start_time .. end_time, seconds) that cannot end before it starts."""

    start_time: Number | None = None
    end_time: Number | None = None

    @field_validator("end_time")
    @classmethod
    def _not_before_start(cls, end, info):
        start = info.data.get("start_time")
        if end is not None and start is not None and end < start:
            raise ValueError(f"ends before its start_time {start}")
        return end


class Segment(Span):
    """One run of a (resumed) search: metadata ``segments``."""

    workers: Positive | None = None
    status: str | None = None


class MethodSettings(_Record):
    """A method's record or its settings (metadata ``method_settings`` and the older layouts
    of :data:`MD_SETTINGS_ALIASES`, nested as they were written)."""

    max_t: Positive | None = None
    grace: Positive | None = None
    eta: Positive | None = None
    budget_device_s: Seconds | None = None
    settings: MethodSettings | None = None
    method_settings: MethodSettings | None = None
    method_config: MethodSettings | None = None


class ReplayRecord(_Record):
    """metadata ``replay`` of a replayed search: the table it replayed (its sha256) and how."""

    sha256: str | None = None
    lookup: str | None = None


class SearchMetadata(Span):
    """metadata.json of one search (the ``MD_*`` keys)."""

    method: str | MethodSettings | None = None
    scale: str | None = None
    seed: int | None = None
    evaluator: str | None = None
    workers: Positive | None = None
    trainable: str | None = None
    status: str | None = None
    backend: str | None = None
    method_settings: MethodSettings | None = None
    settings: MethodSettings | None = None
    method_config: MethodSettings | None = None
    decision_times: list[Seconds] | None = None
    segments: list[Segment] | None = None
    budget_device_s: Seconds | None = None
    time_budget_s: Seconds | None = None
    replay: ReplayRecord | None = None
    budget_epochs: Annotated[int, Field(gt=0)] | None = None
    n_trials: Annotated[int, Field(ge=0)] | None = None

# ---- lctable.csv: the learning-curve table (experiments.lctable writes it, experiments.table
# reads it). One row per (configuration, replicate, epoch). A failed training adds one row with
# status "failed" at the epoch it failed in: val_loss and train_loss empty, epoch_seconds the
# time that epoch ran until the failure. A configuration is complete when it has ok rows for
# epochs 1..max_t, or ok rows 1..k-1 and a failed row at epoch k. Losses are recorded to 7
# significant digits, seconds to 0.1 ms (experiments.lctable.rounded; lctable.json "precision").
LCTABLE_CSV = "lctable.csv"
LCTABLE_JSON = "lctable.json"  # its metadata: "max_t" = epochs every configuration trains
TABLE_CONFIG_ID = "config_id"  # 0 = untuned default, 1..N = sampled
TABLE_REPLICATE = "replicate"  # training seed index: 0 for every configuration, 1.. replicates
TABLE_STATUS = STATUS  # ok | failed
TABLE_REASON = REASON  # failed rows: diverged | oom | error:<Exception>; empty otherwise
TABLE_BASE_COLUMNS = (TABLE_CONFIG_ID, TABLE_REPLICATE, EPOCH, VAL_LOSS, TRAIN_LOSS,
                      EPOCH_SECONDS, TABLE_STATUS, TABLE_REASON, *LC_EXTRA)
# then one column p:<hyperparameter> (HP_PREFIX) per searched hyperparameter. Tables from
# before replicates lack TABLE_REPLICATE (all replicate 0); tables from before the loss
# components lack LC_EXTRA (read as empty). epoch_seconds: wall seconds of the epoch; a table
# that records EPOCH_CPU_SECONDS replays those instead.


class TableMetadata(_Record):
    """lctable.json (and reference.json beside a surrogate's reference.csv)."""

    scale: str | None = None
    seed: int | None = None
    max_t: Annotated[int, Field(gt=0)] | None = None
    n_configs: Annotated[int, Field(ge=0)] | None = None
    replicates: list[Annotated[int, Field(ge=0)]] | None = None
    devices: Annotated[int, Field(gt=0)] | None = None
    threads: Annotated[int, Field(gt=0)] | None = None
    n_train: Annotated[int, Field(gt=0)] | None = None
    status: str | None = None
    trainable: str | None = None
    sampler: str | None = None


# <table>.surrogate_heldout.csv: one row per held-out configuration and rung (its ids, then the
# recorded and predicted val_loss, then the recorded and predicted median epoch seconds)
HELDOUT_COLUMNS = ("fold", TABLE_CONFIG_ID, EPOCH, "true", "pred", "true_seconds",
                   "pred_seconds")


class SurrogateReport(_Record):
    """<table>.surrogate.json, the surrogate's validation report (experiments.surrogate)."""

    table_sha256: str | None = None
    accepted: bool | None = None
    folds: int | None = None
    n_configs: int | None = None
    rungs: dict[str, dict] | None = None
    variants: dict[str, dict] | None = None


TABLE_TYPES = {TABLE_CONFIG_ID: INT, TABLE_REPLICATE: INT, EPOCH: INT, VAL_LOSS: FLOAT,
               TRAIN_LOSS: FLOAT, EPOCH_SECONDS: FLOAT, **{c: FLOAT for c in LC_EXTRA}}
RANGES.update({TABLE_CONFIG_ID: (0, MAX_JOB_ID), TABLE_REPLICATE: (0, 10**6)})


class FolderLocked(RuntimeError):
    """Another search holds the log folder."""


_HELD_LOCKS: dict[int, tuple[int, int]] = {}  # folder-lock descriptor -> (device, inode)


def _drop_inherited_locks() -> None:
    """In a forked child: close its copies of the parent's folder-lock descriptors. A flock
    lasts until the last descriptor of its open file is closed, so a child's copy would keep
    the folder locked after the manager died (a storage server orphaned by SIGKILL did); closing
    a copy does not unlock the parent's."""
    for fd, folder in _HELD_LOCKS.items():
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == folder:  # not a number reused after a plain close
                os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited_locks)


def lock_folder(log_dir: Path, warn=None) -> int:
    """An exclusive lock on a log folder for as long as the process that took it runs (its
    forked children do not keep it: :func:`_drop_inherited_locks`); a second search into the
    same folder gets :class:`FolderLocked`. Returns the descriptor that holds the lock.

    A stale lock, held only by leftovers of a search whose locking process is gone (processes
    of this project that inherited the descriptor before this rule), is taken over: they are
    killed, with a ``warning:`` line naming them (:func:`_stale_holders`)."""
    import fcntl

    fd = os.open(log_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        stale = _stale_holders(Path(log_dir))
        if not (stale and _take_over(fd, stale)):
            os.close(fd)
            raise FolderLocked(f"{log_dir} is in use by another search (a running process "
                               "holds its lock); wait for it or pass another --out") from None
        (warn or _warn)(f"{log_dir}: took over its lock from processes "
                        f"{', '.join(map(str, stale))} left by a search that is gone")
    st = os.fstat(fd)
    _HELD_LOCKS[fd] = (st.st_dev, st.st_ino)
    return fd


def unlock_folder(fd: int) -> None:
    """Release a lock of :func:`lock_folder`."""
    _HELD_LOCKS.pop(fd, None)
    os.close(fd)


def _stale_holders(log_dir: Path) -> list[int]:
    """The processes holding a stale lock on ``log_dir``, or [] when the lock is live or
    unknown (not Linux, or taken on another host of a shared file system).

    The kernel (``/proc/locks``) names the process that took the lock. If it is gone, every
    process that still holds an open descriptor of the folder inherited it from that one
    (only a lock holder keeps the folder itself open); they are returned when each of them runs
    a module of this project (its command line names ``experiments.``), else []."""
    try:
        st = log_dir.stat()
        key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        lockers = [int(f[4]) for f in (line.split() for line in
                                       Path("/proc/locks").read_text().splitlines())
                   if len(f) > 5 and f[1] == "FLOCK" and f[5] == key]
    except (OSError, ValueError):
        return []
    real = os.path.realpath(log_dir)
    holders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd) == real for fd in (proc / "fd").iterdir()):
                holders.append(int(proc.name))
        except OSError:
            continue
    if not lockers or any(pid in holders for pid in lockers):
        return []  # the process that took the lock still holds it: a live search
    for pid in holders:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if b"experiments." not in cmd:
            return []
    return holders


def _take_over(fd: int, pids: list[int], timeout: float = 5.0) -> bool:
    """Kill ``pids`` (leftovers holding a stale lock) and lock ``fd`` once they are gone."""
    import fcntl
    import signal
    import time

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    t0 = time.monotonic()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() - t0 > timeout:
                return False
            time.sleep(0.05)


def native(v):
    """A numpy scalar as the Python value (ConfigSpace and pandas hand out numpy scalars)."""
    return v.item() if isinstance(v, np.generic) else v


def copy_logs(src: Path, dest: Path, meta: dict) -> None:
    """A finished search's logs in ``src`` as the search in ``dest``: its old logs cleared,
    results.csv and learning_curves.csv copied byte for byte, then ``meta`` as its
    metadata.json, last (the search counts as complete only once the whole copy is there)."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    clear_logs(dest)
    for name in (RESULTS_CSV, LEARNING_CURVES_CSV):
        shutil.copyfile(Path(src) / name, dest / name)
    write_json(dest / METADATA_JSON, meta)


def clear_logs(log_dir: Path) -> None:
    """Remove the logs (and leftovers) of an unfinished search folder so that it restarts."""
    import shutil

    for name in (RESULTS_CSV, LEARNING_CURVES_CSV, METADATA_JSON, METADATA_JSON + ".tmp",
                 "results.resume.csv"):
        (log_dir / name).unlink(missing_ok=True)
    shutil.rmtree(log_dir / "checkpoints", ignore_errors=True)


def fmt_cell(v) -> str:
    """One CSV cell: floats with full precision, NaN/None as empty."""
    v = native(v)
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def format_row(values: dict, columns=LC_COLUMNS) -> str:
    """One CSV line (with its newline) of ``values`` in the order of ``columns``."""
    return ",".join(fmt_cell(values.get(c)) for c in columns) + "\n"


def write_csv(path: Path, columns, rows: list[dict]) -> None:
    """A whole CSV file at once (:func:`write_atomic`), cells formatted like the row writers."""
    write_atomic(path, ",".join(columns) + "\n" + "".join(format_row(r, columns) for r in rows))


def append_row(path: Path, values: dict, columns=LC_COLUMNS) -> None:
    """Append one whole CSV line on an ``O_APPEND`` descriptor, then ``fsync``.

    Writers in several processes (or ranks on a shared file system) never interleave inside a
    line, and ``fsync`` makes the row survive a killed search. A short write is continued; a
    write that fails (disk full, file size limit) raises ``OSError``.
    """
    data = format_row(values, columns).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace ``path`` by ``data`` all at once: temp file, fsync, rename. Readers and a
    crash see the old file or the new one, never half of either; a failed write (disk full)
    raises ``OSError`` and leaves the old file as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    data = data.encode() if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def ensure_header(path: Path, columns=LC_COLUMNS) -> None:
    """Create ``path`` with its header line unless it exists (the manager does this first)."""
    if not path.exists() or path.stat().st_size == 0:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(",".join(columns) + "\n")
        os.replace(tmp, path)


def end_with_newline(path: Path) -> None:
    """Terminate a last line cut by a crash, so that the next row starts on a line of its own."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


class LogError(ValueError):
    """A log that cannot be used as it is (one line naming the file and the problem)."""


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def read_checked_csv(path: Path, ints: tuple[str, ...] = (), floats: tuple[str, ...] = (),
                     warn=_warn, optional: tuple[str, ...] = (), types: dict | None = None,
                     **read_kw) -> pd.DataFrame | None:
    """A log CSV whose damaged rows are reported by line number and skipped.

    A row is damaged when it has another number of fields than the header, or a cell of
    ``ints`` that is not an integer, or of ``floats`` that is not a number (empty is NaN), or
    a cell of either outside its valid range (:data:`RANGES`: a negative time or loss, a job
    id past :data:`MAX_JOB_ID`).
    Columns of ``optional`` are checked by their type in ``types`` (default :data:`LC_TYPES`;
    a column it lacks is a float) where the header has them. ``read_kw`` go to
    ``pandas.read_csv`` of the good lines. Returns None when the file is missing; raises
    :class:`LogError` when it exists but has no header (empty, or not text), or lacks a column
    of ``ints``/``floats``.
    """
    path = Path(path)
    if not path.exists():
        return None
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or not lines[0].strip():
        raise LogError(f"{path}: empty file, no header")
    header = next(csv.reader([lines[0]]))
    missing = [c for c in (*ints, *floats) if c not in header]
    if missing:
        raise LogError(f"{path}: not a log of this format (no column {', '.join(missing)})")
    types = LC_TYPES if types is None else types
    present = [c for c in optional if c in header and c not in (*ints, *floats)]
    idx_i = [header.index(c) for c in (*ints, *(c for c in present if types.get(c) == INT))]
    idx_f = [header.index(c) for c in (*floats, *(c for c in present if types.get(c) != INT))]
    good = [lines[0]]
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            row = next(csv.reader([line]))
        except csv.Error as e:
            warn(f"{path}, line {n}: unreadable ({e}); skipped")
            continue
        problem = None
        if len(row) != len(header):
            problem = f"{len(row)} fields instead of {len(header)} (a cut or merged line)"
        else:
            for i in idx_i:
                if not re.fullmatch(r"-?\d+", row[i].strip()):
                    problem = f"{header[i]}={row[i]!r} is not an integer"
                elif out_of_range(header[i], int(row[i])):
                    problem = f"{header[i]}={row[i]!r} is outside {_range_text(header[i])}"
                if problem:
                    break
            for i in idx_f if problem is None else ():
                try:
                    v = float(row[i]) if row[i].strip() else math.nan
                except ValueError:
                    problem = f"{header[i]}={row[i]!r} is not a number"
                    break
                if not math.isnan(v) and out_of_range(header[i], v):
                    problem = f"{header[i]}={row[i]!r} is outside {_range_text(header[i])}"
                    break
        if problem:
            warn(f"{path}, line {n}: {problem}; skipped")
            continue
        good.append(line)
    return pd.read_csv(io.StringIO("\n".join(good) + "\n"), **read_kw)


def _range_text(column: str) -> str:
    low, high = RANGES[column]
    return f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"


def read_learning_curves(log_dir: Path, warn=_warn) -> pd.DataFrame:
    """learning_curves.csv as a DataFrame (empty with the right columns when missing);
    damaged rows (a line cut by a kill, a merged line after a full disk) are reported and
    skipped (:func:`read_checked_csv`)."""
    path = Path(log_dir) / LEARNING_CURVES_CSV
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=list(LC_COLUMNS))
    df = read_checked_csv(path, (JOB_ID, EPOCH), (VAL_LOSS,), warn, optional=tuple(LC_TYPES))
    return df.astype({JOB_ID: int, EPOCH: int})


def read_results(log_dir: Path, warn=_warn) -> pd.DataFrame | None:
    """results.csv as a DataFrame, or None when there is none; damaged rows are reported and
    skipped; :class:`LogError` when the file exists but is empty or not a results table."""
    return read_checked_csv(Path(log_dir) / RESULTS_CSV, ("job_id",), (), warn)


def write_json(path: Path, obj: dict) -> None:
    """Atomic JSON write (:func:`write_atomic`): readers never see half a file."""
    write_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def native_json(obj):
    """``obj`` as it reads back from JSON (tuples as lists, numpy scalars as numbers): what a
    recorded value is compared with."""
    return json.loads(json.dumps(obj, default=_json_default))


def read_checked_json(path: Path, schema: type[BaseModel], warn=_warn,
                      strict: bool = False) -> dict | None:
    """A JSON log file checked against its ``schema`` (:class:`SearchMetadata`,
    :class:`TableMetadata`, ...): None when the file is missing; :class:`LogError` when it is not
    UTF-8 JSON holding an object. A key of the wrong type or range is reported (``warn``, one
    line naming the file and the key) and left out, as if it were missing (``strict``: a
    :class:`LogError` instead); a damaged item of a list leaves out the whole list. Returns the
    file's own values, the damaged ones removed."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LogError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise LogError(f"{path}: not a JSON object")
    while True:
        try:
            schema.model_validate(data)
            return data
        except ValidationError as e:
            errors = e.errors()
        # the keys the errors point at, down to the first list (or union member's name)
        paths = {_key_path(data, err["loc"]): err["msg"].removeprefix("Value error, ")
                 for err in errors}
        paths = {p: m for p, m in paths.items() if p and not any(
            q[:len(p)] == p and q != p for q in paths)}  # the deepest of nested ones
        if not paths:
            raise LogError(f"{path}: {errors[0]['msg']}")
        for keys, msg in paths.items():
            parent = data
            for k in keys[:-1]:
                parent = parent[k]
            value = repr(parent.pop(keys[-1]))
            value = value if len(value) <= 60 else value[:57] + "..."
            if strict:
                raise LogError(f"{path}: {'.'.join(keys)}={value}: {msg}")
            warn(f"{path}: {'.'.join(keys)}={value}: {msg}; ignored")


def _key_path(data: dict, loc: tuple) -> tuple[str, ...]:
    """The keys of ``data`` that a pydantic error location walks, up to a list; the names
    of union members it holds (``"str"``, ``"MethodSettings"``) are skipped."""
    keys, node = [], data
    for k in loc:
        if not isinstance(node, dict) or not isinstance(k, str):
            break
        if k in node:
            keys.append(k)
            node = node[k]
    return tuple(keys)


def read_json(path: Path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


# A replay campaign on a surrogate writes, next to its <method>/seed<k>/ folders, the final
# losses of a large sample of the surrogate's configurations in the learning-curve table's
# format: the reference distribution (targets, best known loss) of that benchmark.
REFERENCE_CSV = "reference.csv"


# What makes two searches comparable (metadata method_settings.settings): the fidelities and
# the budgets. A search of other fidelities is never resumed (a resume keeps the budgets the
# search recorded); a complete search of another design is never reused in its place.
FIDELITY_KEYS = ("max_t", "grace", "eta")
DESIGN_KEYS = (*FIDELITY_KEYS, "budget", "device_budget")


def recorded_design(meta: dict | None) -> dict | None:
    """The design a search's metadata.json records (:data:`DESIGN_KEYS` of its method
    settings), or None when it records none (an older format)."""
    ms = meta.get("method_settings") if isinstance(meta, dict) else None
    settings = ms.get("settings") if isinstance(ms, dict) else None
    if not isinstance(settings, dict) or not all(k in settings for k in DESIGN_KEYS):
        return None
    return {k: settings[k] for k in DESIGN_KEYS}


def design_difference(meta: dict | None, want: dict, keys=DESIGN_KEYS) -> str | None:
    """None when the search recorded in ``meta`` has the design ``want`` on ``keys`` (of
    :data:`DESIGN_KEYS`), else what differs, e.g. ``max_t 27, not 16``."""
    have = recorded_design(meta)
    if have is None:
        return "no recorded design (an older log format)"
    diff = [f"{k} {have[k]!r}, not {want[k]!r}" for k in keys if have[k] != want[k]]
    return "; ".join(diff) or None


def last_activity(log_dir: Path, meta: dict) -> float | None:
    """The time of the last epoch logged in ``log_dir`` (in the clock of the metadata's
    ``start_time``), None when there is none."""
    path = Path(log_dir) / LEARNING_CURVES_CSV
    if not path.exists() or meta.get("start_time") is None:
        return None
    try:
        lc = read_learning_curves(log_dir, warn=lambda msg: None)
        ends = pd.to_numeric(lc[T_END], errors="coerce").dropna()
    except (LogError, KeyError, ValueError):
        return None
    return float(meta["start_time"]) + float(ends.max()) if len(ends) else None


def close_crashed_segments(meta: dict, last_seen: float | None) -> None:
    """Segments a crash left open (no end, or still "running") end at the last moment they
    are known to have been alive: the later of their last metadata write and ``last_seen``
    (the last logged epoch). Their time then counts against the time budget."""
    for seg in meta.get("segments", []):
        if seg.get("end_time") is None or seg.get("status") == RUN_RUNNING:
            ends = [t for t in (seg.get("end_time"), last_seen, seg.get("start_time"))
                    if t is not None]
            seg["end_time"], seg["status"] = max(ends), RUN_CRASHED


def deadline(meta: dict) -> float | None:
    """When a search's time budget ends (metadata ``time_budget_s``; the time of earlier
    segments counts), in the clock of its ``start_time``; None without a time budget."""
    if not meta.get("time_budget_s"):
        return None
    segs = meta["segments"]
    used = sum(s["end_time"] - s["start_time"] for s in segs[:-1] if s.get("end_time"))
    return segs[-1]["start_time"] + meta["time_budget_s"] - used


def summarize_times(times: list[float]) -> dict:
    """Median and 95th percentile of a list of durations (seconds)."""
    if not times:
        return {"n": 0, "median": None, "p95": None, "mean": None, "max": None}
    a = np.asarray(times, dtype=float)
    return {"n": int(a.size), "median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "mean": float(a.mean()), "max": float(a.max())}


# ---- runs of experiments.speed: this machine's CPU seconds against a table's ------------------
SPEED_DIR = "speed"  # beside the table: one JSON file per run
SPEED_BOOTSTRAP = 2000


def speed_summary(rows: list[dict], seed: int = 0) -> dict:
    """Per-epoch rows (config_id, cpu_seconds, table_cpu_seconds) -> the factor: median over
    configurations of sum(cpu) / sum(table), 95 % bootstrap interval over configurations."""
    per: dict[int, list[float]] = {}
    for r in rows:
        try:  # a row of a file on disk: anything may stand in it
            a, b = float(r["cpu_seconds"]), float(r["table_cpu_seconds"])
            cid = int(r["config_id"])
        except (KeyError, TypeError, ValueError):
            continue
        if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b <= 0:
            continue
        s = per.setdefault(cid, [0.0, 0.0])
        s[0] += a
        s[1] += b
    ratios = np.array([a / b for a, b in per.values() if b > 0])
    if len(ratios) == 0:
        return {"factor": math.nan, "low": math.nan, "high": math.nan, "n_configs": 0}
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(ratios, (SPEED_BOOTSTRAP, len(ratios))), axis=1)
    return {"factor": float(np.median(ratios)), "low": float(np.quantile(boots, 0.025)),
            "high": float(np.quantile(boots, 0.975)), "n_configs": int(len(ratios)),
            "per_config": {str(c): round(a / b, 4) for c, (a, b) in sorted(per.items())}}


def speed_factor(folder: Path, cpu_model: str | None, table_sha256: str | None) -> dict | None:
    """The factor of ``cpu_model`` against the table ``table_sha256``, every run in
    ``folder`` on that model pooled (:func:`speed_summary`); None without one. A file that is not
    a run of this command is skipped."""
    rows, files = [], []
    for f in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []:
        try:
            doc = read_json(f)
        except (ValueError, OSError):
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            continue
        machine = doc.get("machine")
        if not isinstance(machine, dict) or machine.get("cpu_model") != cpu_model:
            continue
        if table_sha256 is not None and doc.get("table_sha256") != table_sha256:
            continue
        good = [r for r in doc["rows"] if isinstance(r, dict) and "config_id" in r]
        # the same configuration timed in two runs is two samples of it
        rows += [{**r, "config_id": f"{len(files)}:{r['config_id']}"} for r in good]
        files.append(f.name)
    if not rows:
        return None
    per = {}
    for r in rows:
        per.setdefault(r["config_id"], len(per))
    res = speed_summary([{**r, "config_id": per[r["config_id"]]} for r in rows])
    return {**res, "runs": files, "cpu_model": cpu_model,
            "same_loss": sum(bool(r.get("same_loss")) for r in rows), "epochs": len(rows)}
