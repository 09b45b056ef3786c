"""The run-function every live worker executes: one trial, one learning-curve row per epoch.

``run_trial(job, ctx)`` trains ``job.parameters`` for its budget (``max_t``, or the Hyperband
rung budget in ``job["budget"]``; a promoted Hyperband trial continues from the checkpoint of
its previous rung, so its learning-curve rows start after that rung's epochs), appends each
epoch to ``learning_curves.csv`` as it happens,
reports ``-val_loss`` to the stopper (DeepHyper maximises) and returns the objective with
metadata. It never raises: a failure becomes ``"F_<reason>"`` (a raising run-function would end
the whole search).

One device per worker: a worker takes a stable slot (MPI: its rank; process pool: the first
free lock file of the search), binds to GPU ``slot % torch.cuda.device_count()`` when there
are GPUs, and uses ``cores // local workers`` threads (``EXP_THREADS=n`` overrides it: on a
machine shared with other jobs, one thread per worker avoids OpenMP threads waiting on each
other, which can slow an epoch down several times).
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from experiments import logs
from experiments.trainables import get_trainable
from experiments.trial import (
    Diverged,
    NullJob,
    TrialRun,
    checkpoint_dir,
    device_seconds,
    job_ledger,
)

LOCAL_RANK_ENV = "EXP_LOCAL_WORKER"  # index of an MPI worker among the workers of its node
LOCAL_WORKERS_ENV = "EXP_LOCAL_WORKERS"  # MPI workers on this node
THREADS_ENV = "EXP_THREADS"  # torch threads per worker (set at start-up under MPI)


@dataclass(frozen=True)
class RunContext:
    """What a worker needs besides the job (pickled with every job: keep it small)."""

    scale: str
    trainable: str
    log_dir: str
    t0: float  # time.time() when the search began: learning-curve times are relative to it
    max_t: int
    seed: int
    workers: int
    evaluator: str = "process"  # process | mpi | serial
    slot_dir: str | None = None  # lock files of the process-pool slots
    checkpoints: bool = False  # Hyperband: a promoted trial continues from its checkpoint
    deadline: float | None = None  # time.time() when the search's wall-time budget ends
    device_budget: float | None = None  # device-seconds of the search: the hard cut


_WORKER: dict = {}  # per-process state: slot, threads, device, trainable


def _claim_slot(slot_dir: str, workers: int) -> int:
    """Lowest free slot of the search; the lock is held until this process exits."""
    for i in range(4 * workers):  # room for replaced worker processes
        fd = os.open(os.path.join(slot_dir, f"slot{i}.lock"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _WORKER["slot_fd"] = fd  # keep it open: closing would free the slot
            return i
        except BlockingIOError:
            os.close(fd)
    return os.getpid()


def _exit_with_parent(ppid: int) -> None:
    while os.getppid() == ppid:
        time.sleep(1.0)
    os._exit(1)


def _setup(ctx: RunContext) -> dict:
    """Once per worker process: slot, threads, device, trainable."""
    if _WORKER.get("ctx_log_dir") == ctx.log_dir:
        return _WORKER
    if ctx.evaluator == "process":
        # Pool processes are forked from the manager and inherit its SIGTERM handler; a worker
        # must simply die on SIGTERM (the manager handles the search's shutdown) ...
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # ... and when the manager is killed (SIGKILL) it must not go on training for nobody.
        threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    if ctx.evaluator == "serial":  # the manager process itself
        slot = local = 0
        local_workers = 1
    elif ctx.evaluator == "mpi":  # rank 0 is the manager
        from mpi4py import MPI

        slot = MPI.COMM_WORLD.Get_rank()
        local = int(os.environ.get(LOCAL_RANK_ENV, slot - 1))
        local_workers = int(os.environ.get(LOCAL_WORKERS_ENV, ctx.workers))
    else:
        slot = local = _claim_slot(ctx.slot_dir, ctx.workers)
        local_workers = ctx.workers
    if os.environ.get(THREADS_ENV):  # the user's, or MPI's from the ranks' CPU masks
        threads = int(os.environ[THREADS_ENV])
    else:
        threads = max(1, len(os.sched_getaffinity(0)) // max(1, local_workers))
    trainable = get_trainable(ctx.trainable)
    device, devices = None, 1
    if trainable.uses_torch:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{local % torch.cuda.device_count()}"
        else:
            device = "cpu"  # one device = one worker, whatever its thread count
        torch.set_num_threads(threads)
    _WORKER.update(pid=os.getpid(), ctx_log_dir=ctx.log_dir, slot=slot, threads=threads,
                   device=device, devices=devices, trainable=trainable)
    return _WORKER


def run_trial(job, ctx: RunContext) -> dict:
    """Train one job; return ``{"objective": -val_loss | "F_<reason>", "metadata": {...}}``.

    The per-epoch logic is :class:`experiments.trial.TrialRun`'s; this function only trains.
    """
    w = _setup(ctx)
    lc_path = Path(ctx.log_dir) / logs.LEARNING_CURVES_CSV
    run = TrialRun(job, ctx.max_t, lambda: time.time() - ctx.t0,
                   deadline=None if ctx.deadline is None else ctx.deadline - ctx.t0,
                   write_row=lambda row: logs.append_row(lc_path, row), worker=w["slot"],
                   devices=w["devices"], ledger=job_ledger(job) if ctx.device_budget else None,
                   device_budget=ctx.device_budget)
    on_gpu = w["device"] not in (None, "cpu")

    def on_epoch(m: dict) -> bool:
        # A device is one worker: on CPU the trial holds 1 whatever its threads; on GPUs
        # trust the trainable (data-parallel training reports several).
        return run.epoch(int(m["epoch"]), float(m["val_loss"]),
                         float(m.get("train_loss", math.nan)), device_seconds(m, on_gpu),
                         int(m.get("devices", 1)) if on_gpu else None,
                         extra={k: m.get(k) for k in logs.LC_EXTRA})

    params = dict(job.parameters)
    ckpt = checkpoint_dir(ctx.log_dir, params[logs.HB_TRIAL]) \
        if ctx.checkpoints and logs.HB_TRIAL in params else None
    try:
        history = w["trainable"].train(ctx.scale, run.hp, run.budget, on_epoch,
                                       device=w["device"], seed=ctx.seed, threads=w["threads"],
                                       checkpoint_dir=ckpt)
    except Diverged:
        return run.outcome(failure="diverged")
    except Exception as e:  # noqa: BLE001 - any failure of one trial must not end the search
        return run.outcome(failure=w["trainable"].failure_reason(e))
    # a promoted trial whose checkpoint already had every epoch of its budget
    return run.outcome(last_known=float(history[-1]["val_loss"]) if history else None)


def lost_trial(job, ctx: RunContext, reason: str) -> dict:
    """The outcome of a trial whose worker died: failed with ``reason``, its epochs those
    its worker logged before dying (they were trained: their compute counts)."""
    lc = logs.read_learning_curves(ctx.log_dir, warn=lambda msg: None)
    rows = lc[lc[logs.JOB_ID] == logs.job_number(job.id)].sort_values(logs.EPOCH)
    times = iter([float(t) for t in rows[logs.T_START][:1]] + [float(t) for t in
                                                                rows[logs.T_END]])
    now = time.time() - ctx.t0
    run = TrialRun(NullJob(job.id, job.parameters), ctx.max_t, lambda: next(times, now),
                   deadline=None, write_row=lambda row: None,
                   worker=int(rows[logs.WORKER].iloc[0]) if len(rows) else -1)
    for _, r in rows.iterrows():
        try:
            run.epoch(int(r[logs.EPOCH]), float(r[logs.VAL_LOSS]))
        except Diverged:
            break
    return run.outcome(failure=reason)


async def run_trial_async(job, ctx: RunContext) -> dict:
    """``run_trial`` for DeepHyper's serial evaluator (runs in the manager process)."""
    return run_trial(job, ctx)
