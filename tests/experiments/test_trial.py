"""The per-epoch trial contract and the simulated clock, on tiny hand-made jobs."""

from __future__ import annotations

import math

import pytest

from experiments import logs
from experiments.clock import Clock
from experiments.trial import Diverged, Recorded, TrialRun, replay_epochs


class Job:
    """A job that stops after epoch ``stop_at`` (None: never)."""

    def __init__(self, params=None, stop_at=None, number=7):
        self.parameters, self.id, self.stop_at = dict(params or {}), f"0.{number}", stop_at
        self.recorded = []

    def record(self, epoch, objective):
        self.recorded.append((epoch, objective))

    def stopped(self):
        return self.stop_at is not None and self.recorded[-1][0] >= self.stop_at


def _trial(job, max_t=5, deadline=None, now=None):
    rows = []
    clock = now or (lambda: 0.0)
    return TrialRun(job, max_t, clock, deadline=deadline, write_row=rows.append, worker=3,
                    devices=2), rows


def test_ok_trial_runs_to_its_budget_and_logs_every_epoch():
    job = Job({"lr": 1e-3, "budget": 3, "hb_trial": 1})
    run, rows = _trial(job)
    assert run.hp == {"lr": 1e-3} and run.budget == 3 and run.number == 7
    assert [run.epoch(e, 1.0 / e, 2.0, 1.5) for e in (1, 2, 3)] == [False, False, True]
    out = run.outcome()
    assert out["objective"] == -1 / 3 and out["metadata"][logs.STATUS] == logs.STATUS_OK
    assert out["metadata"][logs.EPOCHS] == 3 and out["metadata"][logs.BUDGET] == 3
    assert job.recorded == [(1, -1.0), (2, -0.5), (3, -1 / 3)]
    assert [r[logs.EPOCH] for r in rows] == [1, 2, 3] and {r[logs.WORKER] for r in rows} == {3}
    assert {r[logs.DEVICES] for r in rows} == {2} and rows[0][logs.JOB_ID] == 7


def test_stopper_deadline_and_divergence():
    run, _ = _trial(Job(stop_at=2))
    assert not run.epoch(1, 1.0) and run.epoch(2, 0.9)
    assert run.outcome()["metadata"][logs.STATUS] == logs.STATUS_STOPPED
    t = {"now": 0.0}
    run, _ = _trial(Job(), deadline=1.5, now=lambda: t["now"])
    t["now"] = 1.0
    assert not run.epoch(1, 1.0)
    t["now"] = 2.0
    assert run.epoch(2, 0.9)
    meta = run.outcome()["metadata"]
    assert (meta[logs.STATUS], meta[logs.REASON]) == (logs.STATUS_STOPPED, "time_budget")
    run, rows = _trial(Job())
    with pytest.raises(Diverged):
        run.epoch(1, math.nan)
    out = run.outcome(failure="diverged")
    assert out["objective"] == "F_diverged" and len(rows) == 1
    assert out["metadata"][logs.EPOCHS] == 1 and out["metadata"][logs.BEST_VAL_LOSS] is None


def test_no_epoch_fails_unless_a_checkpoint_held_them():
    run, _ = _trial(Job())
    assert run.outcome()["objective"] == "F_no_epoch"
    run, _ = _trial(Job())
    assert run.outcome(last_known=0.25)["objective"] == -0.25


def test_clock_orders_events_by_time_then_number_and_keeps_workers():
    clock = Clock(workers=2)
    assert (clock.take_worker(), clock.take_worker()) == (0, 1)
    with pytest.raises(RuntimeError):
        clock.take_worker()
    clock.release_worker(1)
    assert clock.take_worker() == 1
    seen = []
    clock.schedule(2.0, 5, "b")
    clock.schedule(2.0, 1, "a")
    clock.schedule(1.0, 9, "first")

    def handle(item):
        seen.append((clock.now, item))
        if item == "a":
            clock.schedule(0.0, 0, "same instant")  # processed at 2.0 too

    assert clock.advance(handle) == 1.0
    assert clock.advance(handle) == 2.0 and not clock.pending
    assert seen == [(1.0, "first"), (2.0, "a"), (2.0, "same instant"), (2.0, "b")]


def test_replay_epochs_fails_where_the_recording_failed():
    clock = Clock(1)
    run, rows = _trial(Job(), max_t=5, now=clock)
    steps = replay_epochs(run, Recorded([(0.5, 0.6, 1.0)], "oom", 0.25))
    assert next(steps) == 1.0
    clock.now = 1.0
    assert next(steps) == 0.25
    clock.now = 1.25
    with pytest.raises(StopIteration) as stop:
        next(steps)
    assert stop.value.value["objective"] == "F_oom" and len(rows) == 1
    assert stop.value.value["metadata"][logs.TRIAL_END] == 1.25


def test_device_seconds_are_cpu_seconds_on_a_cpu_worker_wall_on_a_gpu():
    from experiments.trial import device_seconds

    m = {"epoch_seconds": 6.8, "epoch_cpu_seconds": 3.4}
    assert device_seconds(m, on_gpu=False) == 3.4  # a loaded CPU: its own CPU time counts
    assert device_seconds(m, on_gpu=True) == 6.8  # a GPU's wall time
    assert device_seconds({"epoch_seconds": 2.0}, on_gpu=False) == 2.0  # no CPU seconds
    assert device_seconds({"epoch_seconds": 2.0, "epoch_cpu_seconds": None}, False) == 2.0
    assert device_seconds({"epoch_seconds": 2.0, "epoch_cpu_seconds": 0.0}, False) == 2.0
    assert device_seconds({}, on_gpu=False) is None
