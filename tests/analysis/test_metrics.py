"""Metrics on hand-made logs whose answers are worked out by hand in the comments."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import logs as L
from analysis.metrics import (
    best_so_far,
    bootstrap_median,
    compute_to_target,
    default_reference,
    improvement_pct,
    per_seed_metrics,
    summarize,
    target_loss,
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


def test_best_so_far_by_hand(two):
    bsf = best_so_far(two.curves)
    assert np.allclose(bsf["device_hours"] * 3600, [10, 30, 40, 60, 70])
    assert np.allclose(bsf["wall_hours"] * 3600, [10, 15, 20, 25, 30])
    assert bsf["best_loss"].tolist() == [5.0, 4.5, 4.0, 2.0, 2.0]


def test_best_so_far_failed_epochs_cost_compute_but_give_no_loss():
    c = pd.DataFrame({L.VAL_LOSS: [np.nan, 3.0, np.nan], L.DEVICE_HOURS: [1.0, 1.0, 1.0],
                      L.T_END: [1.0, 2.0, 3.0]})
    bsf = best_so_far(c)
    assert bsf["device_hours"].tolist() == [1.0, 2.0, 3.0]
    assert math.isnan(bsf["best_loss"][0]) and bsf["best_loss"][1:].tolist() == [3.0, 3.0]


def test_compute_to_target(two):
    bsf = best_so_far(two.curves)
    dh, wall = compute_to_target(bsf, 4.2)  # first best <= 4.2: loss 4 at t_end 20
    assert dh * 3600 == pytest.approx(40) and wall * 3600 == pytest.approx(20)
    assert compute_to_target(bsf, 2.0)[0] * 3600 == pytest.approx(60)  # inclusive
    assert compute_to_target(bsf, 1.9) == (math.inf, math.inf)
    assert target_loss([2.0, 3.0, math.nan]) == pytest.approx(2.1)  # 5 % above the best
    assert target_loss([2.0, 3.0], tol=0.5) == pytest.approx(3.0)


def test_improvement_over_default(tmp_path):
    write_search(tmp_path, "smoke", "asha", 0, TWO, workers=2, duration=40.0)
    write_search(tmp_path, "smoke", "default", 0,
                 [{"job_id": 0, "losses": [6.0, 3.5, 4.0]}], workers=1)
    runs = L.load_scale(tmp_path / "smoke")
    assert default_reference(runs, "final") == 4.0 and default_reference(runs, "best") == 3.5
    assert improvement_pct(2.0, 4.0) == pytest.approx(50.0)
    trials, _ = L.tidy(runs)
    per, refs = per_seed_metrics(runs, trials)
    r = per.iloc[0]
    assert r["best_loss"] == 2.0 and refs["default_loss"] == 4.0
    assert r["improvement_pct"] == pytest.approx(50.0)
    assert r["device_hours"] * 3600 == pytest.approx(70)
    assert r["improvement_per_dh"] == pytest.approx(50.0 / (70 / 3600))
    assert r["dh_to_target"] * 3600 == pytest.approx(60)  # target 2.1, reached at loss 2
    per_t, refs_t = per_seed_metrics(runs, trials, target=4.0)  # an absolute target
    assert refs_t["target"] == 4.0 and per_t.iloc[0]["dh_to_target"] * 3600 == pytest.approx(40)
    per_b, _ = per_seed_metrics(runs, trials, default_ref="best")
    assert per_b.iloc[0]["improvement_pct"] == pytest.approx(100 * 1.5 / 3.5)


def test_missing_default_leaves_improvement_empty(tmp_path, two):
    runs = {"asha": {0: two}}
    trials, _ = L.tidy(runs)
    per, refs = per_seed_metrics(runs, trials)
    assert default_reference(runs) is None and math.isnan(refs["default_loss"])
    assert math.isnan(per.iloc[0]["improvement_pct"])
    assert math.isnan(per.iloc[0]["improvement_per_dh"])


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
                           ("best_loss", "improvement_pct", "improvement_per_dh",
                            "dh_to_target", "device_hours", "utilisation", "started",
                            "completed", "stopped", "failed", "unfinished", "epochs",
                            "reached_max_t",
                            "wall_hours", "wall_h_to_target", "decision_ms")}})
    s = summarize(per).set_index("method")
    assert s.loc["a", "n_seeds"] == 3 and s.loc["a", "best_loss"] == 2.0
    assert 1.0 <= s.loc["a", "best_loss_lo"] <= 2.0 <= s.loc["a", "best_loss_hi"] <= 3.0
    assert s.loc["b", "best_loss"] == 5.0 and math.isnan(s.loc["b", "best_loss_lo"])


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
