"""THE per-epoch trial contract: what happens after every epoch of every trial, written once.

A live worker (:mod:`experiments.backends.worker`), a replayed trial
(:mod:`experiments.backends.replay`) and every peer adapter (:mod:`experiments.peers`) run a
trial through :class:`TrialRun`, so that budgets, stop decisions and the logged outcome cannot
differ between them. After each epoch, :meth:`TrialRun.epoch`:

1. writes the learning-curve row (``learning_curves.csv``: epoch, losses, seconds, start/end
   since the search began, worker, devices) and counts the epoch as trained;
2. fails the trial (``diverged``) if the validation loss is not finite;
3. reports ``-val_loss`` at step ``epoch`` to the job (DeepHyper maximises; a peer adapter
   passes it on to its own library);
4. stops the trial when ``epoch`` reaches its budget (``ok``), when the job's stopper says so
   (``stopped``: an ASHA rung, a pruner), when the search's deadline has passed (``stopped``,
   reason ``time_budget``), or when the device-seconds of every trial of the search, running
   ones included, reach its device budget (``stopped``, reason ``device_budget``: the hard
   cut; a :class:`Ledger` adds them up across workers).

:meth:`TrialRun.outcome` is what the run-function returns: ``{"objective": -val_loss of the
last epoch | "F_<reason>", "metadata": {status, reason, epochs, budget, best_val_loss,
trial_start, trial_end, worker, ...}}`` (the ``m:`` columns of results.csv).

A job is anything with ``parameters`` (dict), ``id`` (``"<search>.<number>"`` or a number),
``record(step, objective)`` and ``stopped()``: DeepHyper's running job, or a peer's adapter.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from experiments import logs

SPENT_KEY = "_device_s"  # job metadata in the evaluator's storage: device-seconds so far


class Ledger:
    """Device-seconds spent by every trial of a search, each trial's total under its job id.

    The base keeps them in a dict (one process: peers); :class:`StorageLedger` in the
    evaluator's storage, shared by worker processes and MPI ranks."""

    def __init__(self):
        self.spent: dict = {}

    def add(self, job_id, device_s: float) -> float:
        """Set job ``job_id``'s device-seconds so far; returns the search's total."""
        self.spent[job_id] = float(device_s)
        return self.total()

    def total(self) -> float:
        return float(sum(self.spent.values()))


class StorageLedger(Ledger):
    """A :class:`Ledger` in a DeepHyper storage (job metadata ``_device_s``)."""

    def __init__(self, storage, search_id: str):
        self.storage, self.search_id = storage, search_id

    def add(self, job_id, device_s: float) -> float:
        self.storage.store_job_metadata(str(job_id), SPENT_KEY, float(device_s))
        return self.total()

    def total(self) -> float:
        values = self.storage.load_metadata_from_all_jobs(self.search_id, SPENT_KEY)
        return float(sum(v for v in values if isinstance(v, (int, float))))


def job_ledger(job) -> StorageLedger:
    """The ledger of the search a DeepHyper running job belongs to."""
    return StorageLedger(job.storage, logs.job_search(job.id))


class Diverged(Exception):
    """A non-finite validation loss: the trial fails with reason ``diverged``."""


@dataclass(frozen=True)
class Recorded:
    """A recorded training that a simulated trial replays (from a table, or synthetic).

    ``curve``: ``[(val_loss, train_loss, epoch_seconds), ...]`` for epochs 1..k: k = max_t, or
    the epochs before a failure; then ``failure`` is its reason and ``failure_seconds`` the
    time the failing epoch ran. ``meta`` goes to results.csv as ``m:<key>`` columns.
    """

    curve: tuple | list
    failure: str | None = None
    failure_seconds: float = 0.0
    meta: dict = field(default_factory=dict)


def device_seconds(metrics: dict, on_gpu: bool) -> float | None:
    """What an epoch costs the device that trained it (docs: compute accounting): the wall
    seconds of a GPU, the CPU seconds of the training process on a CPU worker (the same on a
    busy or an idle machine; a worker of n torch threads is charged up to n times its wall
    time), its wall seconds where a trainable reports no CPU seconds; None when it reports
    neither (the trial contract then measures the wall time itself)."""
    cpu = metrics.get(logs.EPOCH_CPU_SECONDS)
    if not on_gpu and cpu is not None and math.isfinite(float(cpu)) and float(cpu) > 0:
        return float(cpu)
    wall = metrics.get(logs.EPOCH_SECONDS)
    return None if wall is None else float(wall)


def checkpoint_dir(log_dir: str, trial) -> str:
    """Where Hyperband trial ``trial`` keeps its training state between rungs."""
    return os.path.join(log_dir, "checkpoints", f"trial{int(trial)}")


def split_parameters(params: dict, max_t: int) -> tuple[dict, int]:
    """A job's parameters -> (hyperparameters, epoch budget): scheduler keys removed, the
    budget is the Hyperband rung's (``budget``) or ``max_t``."""
    return ({k: v for k, v in params.items() if k not in logs.SCHEDULE_KEYS},
            int(params.get(logs.BUDGET_KEY, max_t)))


class NullJob:
    """A job of the trial contract that records nothing and is never stopped by it: the
    trial's stopper decided elsewhere (Ray Tune's scheduler), or its epochs are only counted
    again (a trial whose worker died)."""

    def __init__(self, job_id, parameters: dict):
        self.id, self.parameters = job_id, parameters

    def record(self, epoch, objective) -> None:
        pass

    def stopped(self) -> bool:
        return False


class TrialRun:
    """One trial's epochs as they end, and its outcome.

    Args:
        job: the job (see the module docstring).
        max_t: epochs of a full training (the budget unless the job carries one).
        now: seconds since the search began (wall time live, simulated in a replay).
        deadline: the search's deadline in the same seconds, None without one.
        write_row: takes each learning-curve row (a dict of :data:`logs.LC_COLUMNS`).
        worker: the worker's stable id; devices: devices the trial holds.
    """

    def __init__(self, job, max_t: int, now: Callable[[], float], *, deadline: float | None,
                 write_row: Callable[[dict], None], worker: int, devices: int = 1,
                 extra_meta: dict | None = None, ledger: Ledger | None = None,
                 device_budget: float | None = None):
        self.job, self.now, self.deadline = job, now, deadline
        self.ledger, self.device_budget = ledger, device_budget
        self.device_s = 0.0  # this trial's compute so far
        self.write_row, self.worker, self.devices = write_row, worker, devices
        self.hp, self.budget = split_parameters(dict(job.parameters), max_t)
        self.number = logs.job_number(job.id)
        self.extra_meta = dict(extra_meta or {})
        self.epochs = 0  # epochs trained by this job
        self.best, self.last = math.inf, None
        self.stopped = self.deadline_hit = self.cut_hit = False
        self.t_start = self.t_prev = now()

    def epoch(self, epoch: int, val_loss: float, train_loss: float = math.nan,
              seconds: float | None = None, devices: int | None = None, *,
              extra: dict | None = None) -> bool:
        """Log epoch ``epoch`` that just ended; True when the trial must stop now.

        ``extra``: what the trainable reported of :data:`logs.LC_EXTRA` (CPU seconds, the
        validation components), logged as they are.

        Raises :class:`Diverged` for a non-finite validation loss (after logging it)."""
        t_end = self.now()
        seconds = t_end - self.t_prev if seconds is None else seconds
        devices = self.devices if devices is None else devices
        self.write_row({
            logs.JOB_ID: self.number, logs.EPOCH: epoch, logs.VAL_LOSS: val_loss,
            logs.TRAIN_LOSS: train_loss, logs.EPOCH_SECONDS: seconds,
            logs.T_START: round(self.t_prev, 4), logs.T_END: round(t_end, 4),
            logs.WORKER: self.worker, logs.DEVICES: devices,
            **{k: v for k, v in (extra or {}).items() if k in logs.LC_EXTRA}})
        self.t_prev = t_end
        self.epochs += 1
        self.device_s += seconds * devices
        total = self.ledger.add(self.job.id, self.device_s) if self.ledger else 0.0
        if not math.isfinite(val_loss):
            raise Diverged(f"val_loss={val_loss} at epoch {epoch}")
        self.last, self.best = val_loss, min(self.best, val_loss)
        self.job.record(epoch, -val_loss)
        if epoch >= self.budget:
            return True
        if self.job.stopped():  # the stopper's decision (ASHA rung, pruner)
            self.stopped = True
            return True
        if self.deadline is not None and t_end >= self.deadline:
            self.stopped = self.deadline_hit = True  # the search's time is up
            return True
        if self.device_budget is not None and total >= self.device_budget:
            self.stopped = self.cut_hit = True  # the search's compute is spent
            return True
        return False

    def outcome(self, failure: str | None = None, last_known: float | None = None) -> dict:
        """The run-function's return value.

        ``failure``: the reason the training failed (``diverged``, ``oom``, ...), None if it
        did not. ``last_known``: the validation loss of the last epoch trained before this
        job, for a promoted trial whose checkpoint already held every epoch of its budget.
        """
        status, reason = logs.STATUS_OK, ""
        if failure is not None:
            status, reason = logs.STATUS_FAILED, failure
        else:
            if self.last is None and last_known is not None:
                self.last = self.best = float(last_known)
            if self.stopped:
                status = logs.STATUS_STOPPED
                reason = "time_budget" if self.deadline_hit else \
                    "device_budget" if self.cut_hit else ""
            elif self.last is None:
                status, reason = logs.STATUS_FAILED, "no_epoch"
        meta = {logs.STATUS: status, logs.REASON: reason, logs.EPOCHS: self.epochs,
                logs.BUDGET: self.budget,
                logs.BEST_VAL_LOSS: self.best if math.isfinite(self.best) else None,
                logs.TRIAL_START: round(self.t_start, 4),
                logs.TRIAL_END: round(self.now(), 4), logs.TRIAL_WORKER: self.worker,
                **self.extra_meta}
        objective = f"F_{reason}" if status == logs.STATUS_FAILED else -self.last
        return {"objective": objective, "metadata": meta}


def replay_epochs(run: TrialRun, rec: Recorded, first: int = 1) -> Generator[float, None, dict]:
    """A simulated trial: epochs ``first..budget`` of a recorded training.

    A generator for :class:`experiments.clock.Clock`: it yields the seconds of its next epoch
    and, resumed when the epoch has ended, passes it to ``run``; it returns ``run``'s outcome.
    Where the recorded training failed, the trial fails after the failing epoch's seconds,
    without a learning-curve row for it. ``first > 1``: a promoted trial that continues the
    epochs its checkpoint holds.
    """
    for epoch in range(first, run.budget + 1):
        if epoch > len(rec.curve):  # the recorded training failed in this epoch
            yield rec.failure_seconds
            return run.outcome(failure=rec.failure or "no_epoch")
        val, train, secs = (float(x) for x in rec.curve[epoch - 1])
        yield secs
        try:
            if run.epoch(epoch, val, train, secs):
                break
        except Diverged:
            return run.outcome(failure="diverged")
    last_known = rec.curve[min(first - 1, len(rec.curve)) - 1][0] \
        if first > 1 and rec.curve else None
    return run.outcome(last_known=last_known)
