"""One stop rule for every search: the budget check of experiments.bookkeeping, alone and
through each of its users (the driver, the simulated peers, the Ray Tune peer's books) on the
same scenario."""

from __future__ import annotations

import json

import pytest

from experiments import bookkeeping, logs
from experiments.bookkeeping import STOP_REASONS, Books, Budget

from .conftest import load


def test_reasons_tie_in_their_fixed_order():
    b = Budget(epochs=10, deadline=5.0, device_seconds=100.0, max_failures=2, max_trials=3)
    every = b.reasons(epochs=10, now=5.0, device=100.0, failures=2, trials=3)
    assert every == list(STOP_REASONS)
    assert b.reasons(epochs=9, now=4.9, device=99.0, failures=1, trials=2) == []
    assert b.reasons(epochs=10, now=6.0, device=0.0, failures=0, trials=0) == ["epochs", "time"]
    # no deadline, no device budget, failures never: those never hold
    open_ = Budget(epochs=10, max_failures=0)
    assert open_.reasons(epochs=0, now=1e9, device=1e9, failures=99, trials=0) == []
    assert open_.reasons(epochs=0, now=0, device=0, failures=0, trials=100) == ["max_trials"]


def test_the_first_stop_sticks_and_a_resume_decides_anew():
    books = Books(Budget(epochs=5, max_failures=2))
    assert books.check(epochs=1)
    assert not books.check(epochs=5) and books.stopped_by == "epochs"
    for _ in range(2):  # failures after the stop do not rename it
        books.record({logs.STATUS: logs.STATUS_FAILED, logs.REASON: "diverged"})
    assert not books.check(epochs=5) and books.stopped_by == "epochs"
    assert books.counts == {"ok": 0, "stopped": 0, "failed": 2}
    assert books.failure_text() == "2 consecutive trials failed (last: diverged)"
    books.restart()
    assert books.failures == 0 and books.check(epochs=4)


def test_books_count_statuses_best_and_consecutive_failures():
    books = Books(Budget(epochs=100))
    books.record({logs.STATUS: logs.STATUS_OK, logs.BEST_VAL_LOSS: 2.0})
    books.record({logs.STATUS: logs.STATUS_FAILED}, "F_oom")
    books.record({logs.STATUS: "nonsense", logs.BEST_VAL_LOSS: float("nan")})  # a bad cell
    assert books.failures == 2 and books.last_failure == "None"
    books.record({logs.STATUS: logs.STATUS_STOPPED, logs.BEST_VAL_LOSS: 1.5})
    assert books.failures == 0 and books.best == 1.5 and books.trials == 4


def test_status_and_exit_codes():
    assert bookkeeping.final_status(True, "failures") == logs.RUN_INTERRUPTED
    assert bookkeeping.final_status(False, "failures") == logs.RUN_FAILED
    assert bookkeeping.final_status(False, "epochs") == logs.RUN_COMPLETE
    assert [bookkeeping.exit_code(s) for s in (logs.RUN_COMPLETE, logs.RUN_FAILED,
                                                logs.RUN_INTERRUPTED)] == [0, 1, 143]


# ------------------------------------------------------------------------------ one scenario
# A learning-curve table in which every recorded training fails in its first epoch (before
# any early-stopping decision), searched with one worker. The rule says: ten consecutive
# failures, stopped_by "failures", status failed, exit 1, and exactly ten trials (one worker:
# nothing else was running).
EXPECTED = {"stopped_by": "failures", "status": logs.RUN_FAILED, "code": 1, "trials": 10}


@pytest.fixture
def failing_table(tmp_path):
    from experiments.space import sobol_configs
    from experiments.table import default_values, load_table

    from .test_replay import write_table

    configs = [default_values("smoke"), *sobol_configs("smoke", 16, seed=0)]
    path = write_table(tmp_path / "lctable.csv", [(c, [], 1.0, "error:ValueError")
                                                  for c in configs])
    return load_table(path)


def _driver(tmp_path, table) -> dict:
    from experiments.search import replay

    out = tmp_path / "driver"
    code = replay("random", "smoke", 0, table, 1, out, None, progress=False)
    res, _, meta = load(out)
    return {"stopped_by": meta["stopped_by"], "status": meta["status"], "code": code,
            "trials": len(res)}


def _simulated_peer(table) -> dict:
    from experiments.methods import settings_for
    from experiments.peers import get_peer, simulate_peer
    from experiments.peers.simulate import table_curves

    s = settings_for("smoke", time_budget=0)
    run = simulate_peer(get_peer("optuna_random_sha"), s, 0, table_curves(table), workers=1)
    return {"stopped_by": run.stopped_by, "status": run.status,
            "code": bookkeeping.exit_code(run.status), "trials": len(run.results)}


def _ray_books(tmp_path) -> dict:
    """The Ray Tune peer's search state fed the reports Ray Tune would deliver (no cluster):
    a trial starts, reports its failure, ends; the next starts while the search is open."""
    from experiments.methods import settings_for
    from experiments.peers import ray_tune
    from experiments.space import problem_for

    s = settings_for("smoke", time_budget=0)
    names = problem_for("smoke").hyperparameter_names
    search = ray_tune.RaySearch(ray_tune.RAY_PEERS["ray_asha"], s, 0, 1, tmp_path, 0.0, names,
                             progress=False)
    config = {n: 1 for n in names}
    n = 0
    while search.closed_by is None and n < 100:
        tid = f"t{n}"
        search.start(tid, config)
        search.on_result(tid, {ray_tune.SEGMENT_START: 0.0, ray_tune.FAILURE: "error:ValueError",
                               logs.EPOCH: 1, ray_tune.T_REPORT: 0.0})
        search.end(tid)
        n += 1
    status = bookkeeping.final_status(False, search.closed_by)
    return {"stopped_by": search.closed_by, "status": status,
            "code": bookkeeping.exit_code(status), "trials": len(search.rows)}


def test_driver_simulated_peer_and_ray_peer_stop_alike(tmp_path, failing_table):
    got = {"driver": _driver(tmp_path, failing_table),
           "simulated peer": _simulated_peer(failing_table), "ray peer": _ray_books(tmp_path)}
    assert got == {k: EXPECTED for k in got}


@pytest.mark.parametrize("budget", [27, 30])
def test_epoch_budget_stops_every_search_alike(tmp_path, monkeypatch, budget):
    """Full trials of 9 epochs on one worker: the search stops asking once the epochs of
    finished trials reach the budget, so ceil(budget / 9) trials, stopped_by "epochs"."""
    from experiments.backends.live import open_backend
    from experiments.driver import plan_search, run
    from experiments.methods import settings_for
    from experiments.peers import ray_tune
    from experiments.space import problem_for

    monkeypatch.setenv("EXP_SYNTHETIC", json.dumps({}))
    out = tmp_path / f"driver{budget}"
    plan = plan_search("random", "smoke", 0, evaluator="process", workers=1, out=str(out),
                       trainable="synthetic", budget=budget)
    assert run(plan, open_backend("process"), progress=False) == 0
    res, _, meta = load(out)
    want = -(-budget // 9)
    assert (meta["stopped_by"], len(res)) == ("epochs", want)

    s = settings_for("smoke", budget=budget, time_budget=0)
    names = problem_for("smoke").hyperparameter_names
    search = ray_tune.RaySearch(ray_tune.RAY_PEERS["ray_asha"], s, 0, 1, tmp_path, 0.0, names,
                             progress=False)
    n = 0
    while search.closed_by is None:
        tid = f"t{n}"
        search.start(tid, {k: 1 for k in names})
        for e in range(1, 10):
            search.on_result(tid, {ray_tune.SEGMENT_START: 0.0, logs.EPOCH: e,
                                   logs.VAL_LOSS: 1.0 / e, logs.EPOCH_SECONDS: 1.0,
                                   ray_tune.T_REPORT: float(e)})
        search.end(tid)
        n += 1
    assert (search.closed_by, len(search.rows)) == ("epochs", want)
