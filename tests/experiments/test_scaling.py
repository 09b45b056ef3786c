"""The scaling study (experiments/scaling.py, analysis/scaling.py) on tiny tables: a free
manager replays exactly as the driver does, a busy one delays dispatch by its decision time,
decentralised replicas share one storage, the cost curve, and the pipeline end to end."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from experiments import scaling
from experiments.search import replay
from experiments.table import load_table
from experiments.trial import Recorded

from .conftest import tiny_table

MAX_T = 9  # smoke


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return load_table(tiny_table(tmp_path_factory.mktemp("scaling") / "lctable.csv"), "smoke")


def settings(epochs=60, device=0):
    from experiments.methods import settings_for

    return settings_for("smoke", epochs, 0, device)


def run(variant, table, workers, cost=None, s=None, curve=None, seed=0, n_steer=10**9):
    """A Simulation run to its end (returned, with its replicas and storage to inspect)."""
    sim = scaling.Simulation(scaling.get_variant(variant), workers, seed, s or settings(),
                             curve or scaling.table_curve(table), cost or scaling.ConstantCost(0),
                             scale="smoke", n_steer=n_steer, keep_trials=True)
    sim.out = sim.run()
    return sim


@pytest.mark.parametrize("method", ["random", "asha", "hyperband", "asha_bo"])
def test_a_free_manager_replays_exactly_as_the_driver(tmp_path, table, method):
    """Decisions that cost nothing: the same trials, tables rows, epochs and times as
    ``make replay``'s driver and evaluator (3 workers, so that decisions batch)."""
    out = tmp_path / method
    assert replay(method, "smoke", 0, table, workers=3, out=out, budget=60, progress=False,
                  device_budget=0) == 0
    res = pd.read_csv(out / "results.csv").sort_values("job_id")
    want = [(int(r["job_id"]), int(r["m:epochs"]), round(r["m:trial_start"], 4),
             round(r["m:trial_end"], 4)) for _, r in res.iterrows()]
    sim = run(method, table, 3)
    got = sorted((t["number"], t["epochs"], round(t["start"], 4), round(t["end"], 4))
                 for t in sim.out.trials)
    assert got == want
    assert sim.out.row["best"] == pytest.approx(res["m:best_val_loss"].min())
    assert sim.out.row["utilisation"] == pytest.approx(1.0)


def constant_curve(seconds=10.0):
    """Every trial: max_t epochs of ``seconds`` each."""
    return lambda config: Recorded(tuple((0.5, 0.5, seconds) for _ in range(MAX_T)))


@pytest.mark.parametrize("d", [0.0, 30.0, 90.0])
def test_a_busy_manager_delays_dispatch_by_its_decision_time(table, d):
    """W trials of length L end together; one decision of d seconds gives them their next
    trials: every worker waits d per trial, so utilisation = L / (L + d), exactly."""
    workers, cycles, length = 4, 3, 10.0 * MAX_T
    sim = run("random", table, workers, scaling.ConstantCost(d),
              settings(epochs=workers * MAX_T * cycles), constant_curve())
    starts = sorted(t["start"] for t in sim.out.trials)
    assert starts == [d + c * (length + d) for c in range(cycles) for _ in range(workers)]
    assert sim.out.row["utilisation"] == pytest.approx(length / (length + d))
    assert sim.out.row["stop_s"] == pytest.approx(cycles * (length + d))


def test_trials_that_end_while_the_manager_decides_wait_for_its_next_decision(table):
    """Staggered trials and a slow manager: each trial starts when a decision ends, after
    its worker became free, and no two decisions of one manager overlap."""
    curve = table_curve_stretched(table)
    sim = run("asha", table, 4, scaling.ConstantCost(5.0), settings(epochs=80), curve)
    by_worker: dict[int, list] = {}
    for t in sorted(sim.out.trials, key=lambda t: t["start"]):
        by_worker.setdefault(t["worker"], []).append(t)
    for trials in by_worker.values():
        for prev, nxt in zip(trials, trials[1:]):
            assert nxt["start"] >= prev["end"] + 5.0 - 1e-9
    assert sim.out.row["decisions"] * 5.0 == pytest.approx(sim.out.row["decision_s"])
    assert sim.out.row["utilisation"] < 1.0


def table_curve_stretched(table):
    return scaling.table_curve(table, 3.0)


def test_decentralised_replicas_share_one_storage_and_see_every_result(table):
    """asha_bo_dec on 8 workers: 2 CBO replicas of 4 workers each, one search id in one
    storage (unique job ids), ASHA rungs compared across replicas, every replica told the
    other's results, each trial on a worker of its own replica."""
    sim = run("asha_bo_dec", table, 8, scaling.ConstantCost(1.0), settings(epochs=120),
              n_steer=16)
    assert len(sim.replicas) == 2 == sim.out.row["managers"]
    numbers = [t["number"] for t in sim.out.trials]
    assert sorted(numbers) == list(range(len(numbers)))  # one job counter for both
    owners = {r.index: set(r.workers) for r in sim.replicas}
    assert owners == {0: {0, 1, 2, 3}, 1: {4, 5, 6, 7}}
    for t in sim.out.trials:
        assert t["worker"] in owners[t["replica"]]
    ran = {r.index: sum(t["replica"] == r.index for t in sim.out.trials) for r in sim.replicas}
    assert all(ran.values())
    for r in sim.replicas:  # told its own trials and the other's
        assert r.search.told > ran[r.index]
    rung = sim.storage.load_metadata_from_all_jobs(
        sim.search_id, scaling.ASHAStopper.rung_key(0, 0))
    assert len(rung) == len(sim.out.trials) - sum(
        t["epochs"] == 0 for t in sim.out.trials)  # both replicas' trials, one rung


def test_one_replica_is_the_central_manager(table):
    a = run("asha_bo_dec", table, 4, scaling.ConstantCost(2.0))
    b = run("asha_bo", table, 4, scaling.ConstantCost(2.0))
    assert a.out.row["managers"] == 1
    key = [(t["number"], t["start"], t["end"], t["objective"]) for t in a.out.trials]
    assert key == [(t["number"], t["start"], t["end"], t["objective"]) for t in b.out.trials]


def test_the_cost_curve_interpolates_in_log_log_and_extrapolates_the_last_slope():
    rows = [{"what": "m", "part": "tell", "n": 16, "k": 1, "seconds": 0.1},
            {"what": "m", "part": "tell", "n": 64, "k": 1, "seconds": 0.4},
            {"what": "m", "part": "ask", "n": 16, "k": 1, "seconds": 0.01},
            {"what": "m", "part": "ask", "n": 16, "k": 4, "seconds": 0.04},
            {"what": "results_csv", "part": "overhead", "n": 16, "k": 1, "seconds": 0.01}]
    c = scaling.CostModel(rows)
    assert c.part("m", "tell", 4, 1) == pytest.approx(0.1)  # flat below the grid
    assert c.part("m", "tell", 32, 1) == pytest.approx(0.2)  # log-log between points
    assert c.part("m", "tell", 256, 1) == pytest.approx(1.6)  # the last slope (1) beyond
    assert c.part("m", "tell", 16, 8) == pytest.approx(0.8)  # one measured k: linear in k
    assert c.part("m", "ask", 16, 16) == pytest.approx(0.16)  # the last slope in k
    assert c.seconds("m", 64, 1, 4) == pytest.approx(0.4 + 0.04 + 0.01)
    assert c.seconds("m", 64, 0, 0) == 0.0


def test_measuring_gives_tell_and_ask_at_every_k(table):
    rows = scaling.measure_method("asha", table, grid=(4, 8), reps=1)
    assert {(r["part"], r["n"], r["k"]) for r in rows} == {
        (p, n, k) for p in ("tell", "ask") for n in (4, 8) for k in scaling.MEASURE_K}
    over = scaling.measure_overheads(grid=(4, 8), reps=1, scale="smoke", storage_server=False)
    assert {r["what"] for r in over} == set(scaling.OVERHEADS)
    assert all(r["seconds"] >= 0 for r in rows + over)


def test_the_study_end_to_end_and_the_columns_both_sides_name(tmp_path, table, monkeypatch):
    """run_study -> analysis.scaling: every output, the same CSVs on a rerun, and the columns
    the analysis reads are the ones the simulation writes."""
    from analysis import scaling as report

    monkeypatch.setattr(scaling, "N_STEER", 12)  # a couple of real CBO fits, not 54
    monkeypatch.setattr(scaling, "MIN_TRAININGS", 8)  # short searches
    out = tmp_path / "scaling"
    out.mkdir()
    rows = [{"what": m, "part": p, "n": n, "k": k, "seconds": 0.01 * k * n / 16, "reps": 1}
            for m in ("asha", "asha_bo") for p in ("tell", "ask") for n in (16, 64)
            for k in (1, 4)]
    rows += [{"what": w, "part": "overhead", "n": n, "k": 1, "seconds": 0.001 * n, "reps": 1}
             for w in scaling.OVERHEADS for n in (16, 64)]
    pd.DataFrame(rows, columns=scaling.DT_COLUMNS).to_csv(out / scaling.DECISION_TIMES_CSV,
                                                           index=False)
    kw = dict(variants=["asha", "asha_bo_dec"], workers=[2, 8], seeds=[0], epochs_s=[6.0])
    scaling.run_study(table.path, "smoke", out, **kw)
    first = {f: (out / f).read_bytes() for f in (scaling.RUNS_CSV, scaling.INCUMBENTS_CSV,
                                                 scaling.DECISIONS_CSV)}
    scaling.run_study(table.path, "smoke", out, force=True, **kw)
    assert first == {f: (out / f).read_bytes() for f in first}
    assert set(report.RUN_COLUMNS) <= set(scaling.RUN_COLUMNS)
    assert set(report.INCUMBENT_COLUMNS) <= set(scaling.INCUMBENT_COLUMNS)
    assert set(report.DECISION_COLUMNS) <= set(scaling.DECISION_COLUMNS)
    figs = tmp_path / "figs"
    written = report.build(out, figs)
    for name in ("scaling.md", "scaling.csv", "decision_times.csv", "utilisation.png",
                 "time_to_target.png"):
        assert (figs / name) in written and (figs / name).stat().st_size > 0
    summary = pd.read_csv(figs / "scaling.csv")
    assert set(summary["variant"]) == {"asha", "asha_bo_dec"}
    assert summary["utilisation"].between(0, 1).all()
    assert str(tmp_path) not in (figs / "scaling.md").read_text()


def test_unknown_variant_is_one_line(capsys):
    assert scaling.main(["simulate", "--variants", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_budgets_give_each_worker_a_few_trainings():
    for w in scaling.WORKERS:
        budget, walltime = scaling.allocation(w, 100.0)
        assert budget / 100.0 == max(scaling.MIN_TRAININGS, scaling.TRAININGS_PER_WORKER * w)
        assert walltime == pytest.approx(scaling.WALLTIME_FACTOR * budget / w)
    assert math.isclose(scaling.allocation(1024, 1.0)[0] / 1024, scaling.TRAININGS_PER_WORKER)
