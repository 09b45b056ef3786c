"""The replay backend: the methods unchanged, training looked up in a learning-curve table.

    python -m experiments.search --method asha --scale small --seed 3 --backend replay
    python -m experiments.campaign --backend replay --scale small --seeds "0 1 2"

A replayed trial does not train: its epochs are those of the table's configuration nearest to
the trial's (:meth:`experiments.table.Table.replay`), run through the same per-epoch contract
as a live trial (:class:`experiments.trial.TrialRun`). The searches, stoppers and the manager
loop (:mod:`experiments.driver`) are the live ones; only the evaluator differs.

Time is simulated (:class:`ReplayEvaluator` on :class:`experiments.clock.Clock`): a job starts
when it is submitted, each epoch lasts its recorded ``epoch_seconds``, and epochs of
concurrent trials are processed in simulated-time order (ties: lower job number first), so
ASHA rungs and Hyperband barriers see the events of a live run on ideal workers. Manager
decisions take no simulated time (their real durations are still recorded). Budgets: the live
epoch budget; no time budget unless one is given (simulated seconds).

Logs are those of a live search (:mod:`experiments.logs`), by default in
``results/<scale>/replay/<method>/seed<k>/``, with every time in simulated seconds (metadata
``start_time`` 0 and ``end_time`` the simulated end); results.csv adds ``m:table_config`` and
``m:table_distance``; metadata.json adds ``"backend": "replay"`` and ``"replay"`` (table path,
sha256, held-out error, real start and duration). The same table and seed give byte-identical
results.csv and learning_curves.csv; metadata.json differs only in real times and the host.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from experiments import dhcompat, logs
from experiments.clock import Clock
from experiments.dhcompat import Evaluator, JobStatus
from experiments.provenance import iso
from experiments.table import Table
from experiments.trial import TrialRun, job_ledger, replay_epochs

BACKEND = "replay"


def replay_dir(scale: str, method: str, seed: int) -> Path:
    """Logs of a replayed search: ``results/<scale>/replay/<method>/seed<k>/``."""
    from mlpf.paths import RESULTS_DIR

    return RESULTS_DIR / scale / BACKEND / method / f"seed{seed}"


@dataclass
class ReplayContext:
    """What every replayed trial of one search shares."""

    table: Table
    max_t: int
    deadline: float | None  # simulated seconds at which the search's time budget ends
    checkpoints: bool  # Hyperband: a promoted trial continues its previous rung's epochs
    devices: int  # devices a trial holds (the table's: 1 CPU worker, or its GPUs)
    device_budget: float | None = None  # device-seconds of the search: the hard cut
    trained: dict = field(default_factory=dict)  # hb_trial -> epochs trained (its checkpoint)
    lc_lines: list = field(default_factory=list)  # learning-curve rows not yet written


def replay_trial(job, ctx: ReplayContext, clock: Clock, worker: int):
    """The run-function of a replayed trial: a generator for the clock (see
    :func:`experiments.trial.replay_epochs`) that returns what a live trial returns, with
    ``table_config`` and ``table_distance`` (the recorded configuration replayed) in its
    metadata."""
    params = dict(job.parameters)
    ckpt = params[logs.HB_TRIAL] if ctx.checkpoints and logs.HB_TRIAL in params else None

    def write_row(row: dict) -> None:
        ctx.lc_lines.append(logs.format_row(row))
        if ckpt is not None:
            ctx.trained[ckpt] = row[logs.EPOCH]

    run = TrialRun(job, ctx.max_t, clock, deadline=ctx.deadline, write_row=write_row,
                   worker=worker, devices=ctx.devices,
                   ledger=job_ledger(job) if ctx.device_budget else None,
                   device_budget=ctx.device_budget)
    entry, run.extra_meta = ctx.table.replay(run.hp)
    first = ctx.trained.get(ckpt, 0) + 1 if ckpt is not None else 1
    return (yield from replay_epochs(run, entry, first))


class _Task:
    """A replayed trial in flight: the evaluator's stand-in for an asyncio task."""

    def __init__(self, job, number: int, worker: int, steps):
        self.job, self.number, self.worker, self.steps = job, number, worker, steps
        self.t_end: float | None = None

    def done(self) -> bool:
        return self.t_end is not None

    def cancelled(self) -> bool:
        return False

    def exception(self):
        return None

    def result(self):
        return self.job


class ReplayEvaluator(Evaluator):
    """A DeepHyper evaluator that runs trials on a discrete-event simulated clock.

    ``num_workers`` simulated workers. A submitted job starts at once on the lowest free
    worker. ``gather`` advances the clock from instant to instant, resuming the trials whose
    epochs ended, until a job finishes. So ASHA rung values, ``job.stopped()`` and the
    manager's decisions happen in simulated-time order, as in a live search on ideal workers;
    the manager's own decision time is not on the clock. ``m:timestamp_submit`` and
    ``m:timestamp_gather`` are simulated seconds.
    """

    def __init__(self, ctx: ReplayContext, num_workers: int, lc_path: Path):
        super().__init__(replay_trial, num_workers=num_workers,
                         run_function_kwargs={"ctx": ctx})
        self.ctx, self.lc_path = ctx, Path(lc_path)
        self.sim = Clock(num_workers)

    def clock(self) -> float:
        """Simulated seconds since the search began (what the driver uses as time)."""
        return self.sim.now

    async def execute(self, job):  # jobs advance in gather(), never on an asyncio loop
        raise NotImplementedError

    def _on_launch(self, job):
        job.status = JobStatus.READY
        job.metadata["timestamp_submit"] = self.sim.now

    def _on_done(self, job):
        super()._on_done(job)
        job.metadata["timestamp_gather"] = self.sim.now
        dhcompat.storage(self).store_job_metadata(job.id, "timestamp_gather", self.sim.now)

    def submit(self, args_list):
        for args in args_list:
            worker = self.sim.take_worker()
            job = dhcompat.new_job(self, args)
            task = _Task(job, logs.job_number(job.id), worker,
                         self.run_function(dhcompat.running_job(self, job), clock=self.sim,
                                           worker=worker, **self.run_function_kwargs))
            dhcompat.running(self).append(task)
            self._step(task)

    def _step(self, task: _Task) -> None:
        """Run a trial to its next epoch boundary (or its end)."""
        try:
            secs = next(task.steps)
        except StopIteration as stop:
            dhcompat.set_output(self, task.job, stop.value)
            task.t_end = self.sim.now
            self.sim.release_worker(task.worker)
            return
        self.sim.schedule(secs, task.number, task)

    def gather(self, type, size: int = 1):
        tasks = dhcompat.running(self)
        want = len(tasks) if type == "ALL" else min(max(1, size), len(tasks))
        while sum(t.done() for t in tasks) < want and self.sim.pending:
            self.sim.advance(self._step)
        done = sorted((t for t in tasks if t.done()), key=lambda t: (t.t_end, t.number))
        self.flush()
        return dhcompat.collect(self, done)

    def flush(self) -> None:
        """Append the learning-curve rows of the epochs simulated so far."""
        if self.ctx.lc_lines:
            with open(self.lc_path, "a") as f:
                f.write("".join(self.ctx.lc_lines))
            self.ctx.lc_lines.clear()

    def close(self):
        self.flush()
        return super().close()


class ReplayBackend:
    """Replays a search on ``table`` with ``plan.workers`` simulated workers.

    Metadata: times in simulated seconds (start 0, no ISO dates), ``backend: "replay"`` and
    ``replay`` (the table's summary and held-out error, the real start and duration)."""

    name = BACKEND
    durable = False  # simulated: results.csv is written once, at the end

    def __init__(self, table: Table):
        self.table = table
        self.real_start = self.t0 = 0.0  # set by start()

    def start(self, plan) -> tuple[int, float]:
        self.real_start, self.t0 = time.time(), time.perf_counter()
        return plan.workers, 0.0

    def annotate(self, meta: dict) -> None:
        meta["start_iso"] = None  # simulated seconds have no date; the real one is in "replay"
        meta["backend"] = BACKEND
        meta["replay"] = {**self.table.summary(), "clock": "simulated seconds",
                          "real_start_iso": iso(self.real_start), "real_seconds": None}

    @contextmanager
    def evaluator(self, plan, meta):
        ctx = ReplayContext(self.table, plan.settings.max_t, logs.deadline(meta),
                            plan.checkpoints, self.table.devices,
                            device_budget=meta.get("budget_device_s"))
        ev = ReplayEvaluator(ctx, meta["workers"], plan.log_dir / logs.LEARNING_CURVES_CSV)
        try:
            yield ev
        finally:
            ev.flush()

    def finish(self, code: int, ev, meta: dict, plan) -> int:
        ev.flush()
        meta["end_iso"] = None
        meta["replay"]["real_seconds"] = time.perf_counter() - self.t0
        logs.write_json(plan.log_dir / logs.METADATA_JSON, meta)
        return code
