"""Metrics on hand-made logs whose answers are worked out by hand in the comments."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import logs as L
from analysis import tables
from analysis.metrics import (
    INCUMBENT,
    bootstrap_median,
    bootstrap_paired_ratio_of_medians,
    compute_to_target,
    default_reference,
    ended_final_losses,
    improvement_pct,
    incumbent_on_grid,
    incumbent_trace,
    per_seed_metrics,
    reference_losses,
    regret_areas,
    speedups,
    summarize,
    trial_counts,
    utilisation,
    utilisation_over_time,
)
from tests.analysis.fakelogs import write_search

# Two trials on two workers, 10 s epochs (1-based epochs; t in seconds since the search began):
#   trial 0, 1 device : epochs [0,10] [10,20] [20,30], losses 5, 4, 3
#   trial 1, 2 devices: epochs [5,15] [15,25],         losses 4.5, 2
# In order of t_end (10, 15, 20, 25, 30): device-seconds 10, 20, 10, 20, 10
#   cumulative 10, 30, 40, 60, 70; best so far 5, 4.5, 4, 2, 2.
TWO = [
    {"job_id": 0, "losses": [5.0, 4.0, 3.0], "t0": 0.0, "worker": 0, "devices": 1,
     "hp": {"lr": 0.01, "act": "relu"}},
    {"job_id": 1, "losses": [4.5, 2.0], "t0": 5.0, "worker": 1, "devices": 2,
     "hp": {"lr": 0.001, "act": "elu"}, "status": L.STOPPED},
]


@pytest.fixture
def two(tmp_path):
    write_search(tmp_path, "smoke", "asha", 0, TWO, workers=2, duration=40.0)
    return L.load_search(tmp_path / "smoke" / "asha" / "seed0")


def _trace(s):
    return incumbent_trace(s.curves, ended_final_losses(L.trial_table(s)))


def test_incumbent_by_hand(two):
    # Trial 1 ends at t 25 (cumulative 60 device-s) with final loss 2, trial 0 at t 30 with 3;
    # before t 25 no trial has ended, so there is no incumbent (min over epochs would say 5).
    inc = _trace(two)
    assert np.allclose(inc["device_hours"] * 3600, [10, 30, 40, 60, 70])
    assert np.allclose(inc["wall_hours"] * 3600, [10, 15, 20, 25, 30])
    assert np.isnan(inc[INCUMBENT][:3]).all() and inc[INCUMBENT][3:].tolist() == [2.0, 2.0]


def test_incumbent_ignores_dips_and_running_trials(tmp_path):
    # trial 0 dips to 1 at epoch 2 and ends at 3; trial 2 (still running, not in results.csv)
    # reaches 0.5; trial 3 failed. Only final losses of ended trials count: 2 (trial 1), 3.
    trials = [{**TWO[0], "losses": [5.0, 1.0, 3.0]}, TWO[1],
              {"job_id": 2, "losses": [0.5], "t0": 0.0, "seconds": 12.0, "in_results": False},
              {"job_id": 3, "losses": [0.1, float("nan")], "t0": 40.0, "objective": "F_nan",
               "status": L.FAILED}]
    d = write_search(tmp_path, "smoke", "asha", 0, trials, workers=3)
    inc = _trace(L.load_search(d))
    finite = inc[INCUMBENT].dropna()
    assert finite.min() == 2.0 and finite.iloc[0] == 2.0 and len(inc) == 8
    assert np.isnan(inc[INCUMBENT].iloc[0])  # trial 2's epoch at t 12 is not an incumbent


def test_compute_to_target_and_grid(two):
    inc = _trace(two)
    dh, wall = compute_to_target(inc, 2.5)  # trial 1 ends with 2 at t 25, 60 device-s
    assert dh * 3600 == pytest.approx(60) and wall * 3600 == pytest.approx(25)
    assert compute_to_target(inc, 2.0)[0] * 3600 == pytest.approx(60)  # inclusive
    assert compute_to_target(inc, 1.9) == (math.inf, math.inf)
    assert all(math.isnan(x) for x in compute_to_target(inc, math.nan))
    grid = np.array([5, 40, 59, 60, 1000]) / 3600
    assert incumbent_on_grid(inc, grid).tolist() == [math.inf, math.inf, math.inf, 2.0, 2.0]


def _table(tmp_path, finals, max_t=2, extra=""):
    """lctable.csv with one configuration per final loss, max_t epochs each (epoch 1: 9.0)."""
    rows = "".join(f"{i},1,9.0,9.0,10,ok,,0.01\n{i},{max_t},{x},{x},10,ok,,0.01\n"
                   for i, x in enumerate(finals))
    path = tmp_path / "lctable.csv"
    path.write_text("config_id,epoch,val_loss,train_loss,epoch_seconds,status,reason,p:lr\n"
                    + rows + extra)
    (tmp_path / "lctable.json").write_text(json.dumps({"max_t": max_t}))
    return path


def test_table_final_losses(tmp_path):
    # configuration 5 failed at max_t and 6 never got there: neither is complete
    path = _table(tmp_path, [4.0, 1.8, 2.55, 3.0, 4.5],
                  extra="5,2,,,10,failed,nan,0.01\n6,1,0.1,0.1,10,ok,,0.01\n")
    f = L.table_final_losses(path)
    assert f.to_dict() == {0: 4.0, 1: 1.8, 2: 2.55, 3: 3.0, 4: 4.5} and f.attrs["max_t"] == 2
    assert len(L.table_final_losses(tmp_path / "none.csv")) == 0


def test_reference_losses_and_per_seed_metrics_by_hand(tmp_path):
    root = tmp_path / "r"
    write_search(root, "smoke", "asha", 0, TWO, workers=2, duration=40.0)
    write_search(root, "smoke", "default", 0,
                 [{"job_id": 0, "losses": [6.0, 3.5, 4.0]}], workers=1)
    runs = L.load_scale(root / "smoke")
    assert default_reference(runs, "final") == 4.0 and default_reference(runs, "best") == 3.5
    assert improvement_pct(2.0, 4.0) == pytest.approx(50.0)
    trials, _ = L.tidy(runs)
    # table finals sorted 1.8, 2.55, 3, 4, 4.5: linear quantiles at positions 4q:
    # top 10 % 1.8 + 0.4 x 0.75 = 2.1, top 5 % 1.95, top 1 % 1.83; L_ref 1.8 (table)
    refs = reference_losses(runs, trials, L.table_final_losses(_table(tmp_path, [
        4.0, 1.8, 2.55, 3.0, 4.5])))
    assert refs["l_ref"] == 1.8 and "configuration 1 at epoch 2" in refs["l_ref_source"]
    assert [refs["targets"][q] for q in (0.01, 0.05, 0.10)] == pytest.approx([1.83, 1.95, 2.1])
    per, refs = per_seed_metrics(runs, trials, refs)
    r = per.iloc[0]
    assert r[INCUMBENT] == 2.0 and refs["default_loss"] == 4.0
    assert r["regret"] == pytest.approx(0.2) and r["improvement_pct"] == pytest.approx(50.0)
    assert r["device_hours"] * 3600 == pytest.approx(70) and r["budget_dh"] == r["device_hours"]
    # B = 70 device-s: after 35 (1/2) no trial has ended; after 70 the incumbent is 2
    assert all(math.isnan(r[f"regret_{f}"]) for f in ("1/8", "1/4", "1/2"))
    assert r["regret_1"] == pytest.approx(0.2) and r["improvement_pct_1"] == pytest.approx(50)
    assert r["dh_to_top10"] * 3600 == pytest.approx(60)
    assert r["dh_to_top5"] == math.inf and r["dh_to_top1"] == math.inf
    per_b, _ = per_seed_metrics(runs, trials, refs, default_ref="best")
    assert per_b.iloc[0]["improvement_pct"] == pytest.approx(100 * 1.5 / 3.5)
    # without a table L_ref is the best final loss of any ended trial: trial 1 of asha
    no_table = reference_losses(runs, trials, None)
    assert no_table["l_ref"] == 2.0 and "asha seed 0 trial 1" in no_table["l_ref_source"]
    assert all(math.isnan(t) for t in no_table["targets"].values())


def test_budget_from_metadata(tmp_path):
    d = write_search(tmp_path, "smoke", "asha", 0, TWO, workers=2,
                     metadata={"budget_device_s": 120.0})
    runs = {"asha": {0: L.load_search(d)}}
    trials, _ = L.tidy(runs)
    refs = {"l_ref": 1.0, "targets": {}}
    per, refs = per_seed_metrics(runs, trials, refs)
    r = per.iloc[0]
    # B = 120 device-s: 1/2 B = 60 is when trial 1 ends (incumbent 2), 1/4 B = 30 is not
    assert r["budget_dh"] * 3600 == pytest.approx(120) and refs["budget_source"] == \
        "budget_device_s"
    assert r["regret_1/2"] == pytest.approx(1.0) and math.isnan(r["regret_1/4"])


def test_regret_area_by_hand(tmp_path):
    d = write_search(tmp_path, "smoke", "asha", 0, TWO, workers=2,
                     metadata={"budget_device_s": 120.0})
    runs = {"asha": {0: L.load_search(d)}}
    trials, _ = L.tidy(runs)
    # B = 120 device-s, 4 points: 30 (no trial ended: the median sampled configuration, 6, so
    # regret 5), 60, 90, 120 (trial 1 ended, incumbent 2, regret 1): (log10 5 + 0 x 3) / 4
    a = regret_areas(runs, trials, {"l_ref": 1.0, "random_median": 6.0}, n=4)
    assert a.iloc[0]["regret_area"] == pytest.approx(math.log10(5) / 4)
    # a regret of 0 counts as 1e-3 x |L_ref|: L_ref 2 -> log10(2e-3) from 60 device-s on
    a = regret_areas(runs, trials, {"l_ref": 2.0, "random_median": 6.0}, n=4)
    assert a.iloc[0]["regret_area"] == pytest.approx((math.log10(4) + 3 * math.log10(2e-3)) / 4)


def test_missing_default_leaves_improvement_empty(tmp_path, two):
    runs = {"asha": {0: two}}
    trials, _ = L.tidy(runs)
    per, refs = per_seed_metrics(runs, trials, reference_losses(runs, trials))
    assert default_reference(runs) is None and math.isnan(refs["default_loss"])
    assert math.isnan(per.iloc[0]["improvement_pct"])
    assert math.isnan(per.iloc[0]["improvement_pct_1"])


def test_utilisation_by_hand(two):
    # sum of epoch seconds 50 over 2 workers x 40 s
    assert utilisation(two) == pytest.approx(50 / 80)
    u = utilisation_over_time(two.curves, 2, 40.0, n_bins=4)
    # [0,10]: trial 0 busy 10 s, trial 1 busy 5 s -> 15/20; [10,20]: 10+10; [20,30]: 10+5;
    # [30,40]: idle
    assert u["utilisation"].tolist() == pytest.approx([0.75, 1.0, 0.75, 0.0])
    assert u["t_hi_hours"].iloc[-1] * 3600 == pytest.approx(40)


def test_interrupted_search_duration_from_last_epoch(tmp_path):
    d = write_search(tmp_path, "smoke", "asha", 0, TWO, workers=2,
                     metadata={L.MD_END: None, L.MD_STATUS: "interrupted"})
    with pytest.warns(L.LogWarning) as caught:
        s = L.load_search(d)
    text = " ".join(str(w.message) for w in caught)
    assert "end_time" in text and "'interrupted'" in text
    assert s.duration == 30.0 and utilisation(s) == pytest.approx(50 / 60)


def _statuses(tmp_path, meta_columns):
    trials = [
        {"job_id": 0, "losses": [3.0, 2.0, 1.0]},  # reached max_t = 3: completed
        {"job_id": 1, "losses": [3.0], "status": L.STOPPED},  # cut at epoch 1
        {"job_id": 2, "losses": [3.0, float("nan")], "objective": "F_diverged",
         "status": L.FAILED},
        {"job_id": 3, "losses": [], "objective": "F_oom", "status": L.FAILED},
        {"job_id": 4, "losses": [2.5], "in_results": False},  # running when interrupted
    ]
    d = write_search(tmp_path, "smoke", "asha", 0, trials, meta_columns=meta_columns,
                     settings={"max_t": 3})
    return L.trial_table(L.load_search(d))


@pytest.mark.parametrize("meta_columns", [True, False])
def test_trial_counts(tmp_path, meta_columns):
    t = _statuses(tmp_path, meta_columns)
    assert t["status"].tolist() == [L.OK, L.STOPPED, L.FAILED, L.FAILED, L.UNFINISHED]
    assert trial_counts(t) == {"started": 5, "completed": 1, "stopped": 1, "failed": 2,
                               "unfinished": 1, "epochs": 3 + 1 + 2 + 0 + 1,
                               "reached_max_t": 1}
    assert t["final_loss"].tolist()[:2] == [1.0, 3.0] and math.isnan(t["final_loss"][2])
    assert t["best_loss"][2] == 3.0  # the failed trial's finite epochs still count


def test_bootstrap_is_deterministic_and_brackets_the_median():
    v = [1.0, 2.0, 3.0, 10.0, 4.0]
    a, b = bootstrap_median(v), bootstrap_median(v)
    assert a == b and a[0] == 3.0
    assert a[1] <= a[0] <= a[2] and a[1] >= 1.0 and a[2] <= 10.0
    med, lo, hi = bootstrap_median([2.0])
    assert med == 2.0 and math.isnan(lo) and math.isnan(hi)
    assert bootstrap_median([1.0, math.inf, math.inf])[0] == math.inf  # target never reached
    assert math.isnan(bootstrap_median([])[0])


def test_summarize_across_seeds():
    per = pd.DataFrame({"method": ["a", "a", "a", "b"], "seed": [0, 1, 2, 0],
                        **{c: [1.0, 2.0, 3.0, 5.0] for c in
                           (INCUMBENT, "regret", "improvement_pct", "regret_1/2",
                            "device_hours", "budget_dh", "utilisation", "started",
                            "completed", "stopped", "failed", "unfinished", "epochs",
                            "reached_max_t", "wall_hours", "decision_ms")},
                        "dh_to_top5": [1.0, math.inf, 3.0, 5.0]})
    s = summarize(per).set_index("method")
    assert s.loc["a", "n_seeds"] == 3 and s.loc["a", INCUMBENT] == 2.0
    assert 1.0 <= s.loc["a", "regret_1/2_lo"] <= 2.0 <= s.loc["a", "regret_1/2_hi"] <= 3.0
    assert s.loc["b", INCUMBENT] == 5.0 and math.isnan(s.loc["b", "regret_lo"])
    assert s.loc["a", "reached_top5"] == pytest.approx(2 / 3) and s.loc["a", "dh_to_top5"] == 3.0


def _speedup_table(random, other, random_total=(8.0, 8.0, 8.0)):
    return pd.DataFrame({"method": ["random"] * 3 + ["m"] * len(other),
                         "seed": [0, 1, 2] + list(range(len(other))),
                         "dh_to_top5": [*random, *other],
                         "device_hours": [*random_total, *([9.0] * len(other))]})


def test_speedup_is_paired_by_seed():
    # random takes twice the method's compute in every seed: every paired resample gives 2,
    # where resampling the two independently would not
    sp = speedups(_speedup_table([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])).set_index("method")
    assert sp.loc["m", ["speedup_top5", "speedup_top5_lo", "speedup_top5_hi"]].tolist() == \
        [2.0, 2.0, 2.0]
    assert sp.loc["random", "speedup_top5"] == 1.0 and not sp.loc["m", "speedup_top5_bound"]
    r, lo, hi = bootstrap_paired_ratio_of_medians([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert (r, lo, hi) == (2.0, 2.0, 2.0)
    assert bootstrap_paired_ratio_of_medians([1.0, 5.0, 2.0], [3.0, 1.0, 2.0]) == \
        bootstrap_paired_ratio_of_medians([1.0, 5.0, 2.0], [3.0, 1.0, 2.0])  # seeded
    assert math.isnan(bootstrap_paired_ratio_of_medians([2.0], [1.0])[1])
    # only the seeds both have: the method ran seeds 0 and 1 -> random's median 3 / 1.5
    sp2 = speedups(_speedup_table([2.0, 4.0, 6.0], [1.0, 2.0])).set_index("method")
    assert sp2.loc["m", "speedup_top5"] == 2.0


def test_speedup_never_and_lower_bound():
    # the method's median seed never reaches the target: speedup 0, shown as "never"
    sp = speedups(_speedup_table([2.0, 4.0, 6.0], [math.inf, math.inf, 1.0]))
    row = sp.set_index("method").loc["m"]
    assert row["speedup_top5"] == 0.0 and tables.speedup_cell(row, "speedup_top5") \
        .startswith("never")
    # random never reaches it in seeds 1 and 2 (totals 10 and 12 stand in): 10 / 1 = ">10"
    sp = speedups(_speedup_table([2.0, math.inf, math.inf], [1.0, 1.0, 1.0],
                                 random_total=(8.0, 10.0, 12.0))).set_index("method")
    row = sp.loc["m"]
    assert row["speedup_top5"] == 10.0 and row["speedup_top5_bound"]
    assert tables.speedup_cell(row, "speedup_top5").startswith(">10.00 [")
    assert tables.speedup_cell(sp.loc["random"], "speedup_top5").startswith("never")


def test_hyperband_jobs_budget_and_schedule_keys(tmp_path):
    # Synchronous Hyperband: job 0 trains configuration 7 for its rung budget of 3 epochs,
    # job 1 resumes it from the checkpoint for epochs 4..9. Both complete their budget; only
    # job 1 reaches max_t. p:budget and p:hb_* schedule the job, they are no hyperparameters.
    hp = {"lr": 0.01, "budget": 3, "hb_bracket": 0, "hb_rung": 0, "hb_trial": 7}
    trials = [{"job_id": 0, "losses": [3.0, 2.5, 2.2], "hp": hp},
              {"job_id": 1, "losses": [2.1] * 6, "first_epoch": 4, "t0": 30.0,
               "hp": {**hp, "budget": 9, "hb_rung": 1}}]
    d = write_search(tmp_path, "smoke", "hyperband", 0, trials, meta_columns=False,
                     settings={"max_t": 9})
    s = L.load_search(d)
    assert s.hyperparameters == ["lr"]
    t = L.trial_table(s)
    assert t["status"].tolist() == [L.OK, L.OK]  # budget from p:budget: 3 and 9 epochs
    c = trial_counts(t)
    assert (c["completed"], c["stopped"], c["reached_max_t"], c["epochs"]) == (2, 0, 1, 9)


def test_best_of_k_is_the_median_of_the_best_of_k_draws():
    from analysis.metrics import best_of_k

    v = [float(x) for x in range(1, 11)]  # 10 configurations, losses 1..10
    # one draw: the median configuration; P(best of 10 <= 1) = 1 - 0.9**10 = 0.65 >= 1/2
    assert best_of_k(v, 1) == 5.0 and best_of_k(v, 10) == 1.0
    # best of 2: P(best <= v_i) = 1 - ((10 - i) / 10)**2 >= 1/2 first at i = 3
    assert best_of_k(v, 2) == 3.0
    assert np.isnan(best_of_k([], 10))
