"""The pre-registered claim-2 test (analysis/claim2.py) on per-seed metrics made up here."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import claim2
from tests.analysis.fakelogs import per_seed_metrics


def test_holm_matches_the_step_down_by_hand():
    # sorted p: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.04 (x1, monotone 0.06)
    assert claim2.holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert claim2.holm([0.9, 0.9]) == [1.0, 1.0]


def test_log_ratios_censor_at_the_budget_and_tie_double_misses():
    ref = pd.Series([1.0, np.inf, np.inf, 2.0])
    fl = pd.Series([0.5, 1.0, np.inf, np.inf])
    b = pd.Series([4.0] * 4)
    r, cens = claim2.log_ratios(ref, fl, b, b)
    assert r == pytest.approx([math.log(2), math.log(4), 0.0, math.log(0.5)])
    assert list(cens) == [False, True, True, True]
    assert claim2.sign_test(r)[:2] == (2, 1)


def _per_seed(factor: dict[str, float], n=200, seed=0) -> pd.DataFrame:
    return per_seed_metrics(factor, n, seed)


def test_a_flavour_twice_as_fast_as_every_method_is_supported():
    res, v = claim2.analyse(_per_seed({"asha_bo": 0.5, "random": 1, "hyperband": 1, "asha": 1}))
    assert v == {"asha_bo": "supported"}
    assert (res["outcome"] == "faster").all() and len(res) == 6
    assert res["speedup"].between(1.8, 2.2).all()


def test_slower_than_one_method_refutes_and_equal_is_equivalent():
    _, v = claim2.analyse(_per_seed({"asha_gp": 1, "random": 2, "hyperband": 2, "asha": 0.5}))
    assert v == {"asha_gp": "refuted"}
    res, v = claim2.analyse(_per_seed({"asha_tpe": 1, "random": 2, "hyperband": 2, "asha": 1},
                                      n=2000))
    eq = res[res["versus"] == "asha"]
    assert (eq["outcome"] == "equivalent").all() and v == {"asha_tpe": "refuted"}


def test_a_target_no_seed_reached_is_not_a_tie_of_every_seed():
    """Replays without targets (no table beside them) write empty compute-to-target columns:
    read as "both never reached" every comparison would be an exact tie, "equivalent", and the
    verdict "refuted". It is an error instead; a target some seeds reach is still tested."""
    ps = _per_seed({"asha_bo": 0.5, "random": 1, "hyperband": 1, "asha": 1})
    with pytest.raises(claim2.Claim2Error, match="top 1 %"):
        claim2.analyse(ps.assign(dh_to_top1=np.nan))
    some = ps.assign(dh_to_top1=np.where(ps["seed"] == 0, ps["dh_to_top1"], np.nan))
    assert set(claim2.analyse(some)[0]["target"]) == {"top 5 %", "top 1 %"}


def test_few_seeds_cannot_tell():
    # 5 seeds: the smallest two-sided sign-test p is 2 / 2**5 = 0.0625, never below 0.05
    _, v = claim2.analyse(_per_seed({"asha_bo": 0.5, "random": 1, "hyperband": 1, "asha": 1},
                                    n=5))
    assert v == {"asha_bo": "inconclusive"}


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert claim2.main(["--per-seed", str(tmp_path / "nope.csv")]) == 2
    (tmp_path / "x.csv").write_text("method,seed\nasha_bo,0\n")
    assert claim2.main(["--per-seed", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err)


def test_report_is_written_next_to_the_input(tmp_path, capsys):
    p = tmp_path / "per_seed.csv"
    _per_seed({"asha_bo": 0.5, "random": 1, "hyperband": 1, "asha": 1}).to_csv(p, index=False)
    assert claim2.main(["--per-seed", str(p)]) == 0
    assert "Verdict (asha_bo): supported" in (tmp_path / "claim2.md").read_text()
    assert len(pd.read_csv(tmp_path / "claim2.csv")) == 6


def test_baselines_are_secondary_rows_outside_the_verdict():
    ps = _per_seed({"asha_bo": 0.5, "random": 1, "hyperband": 1, "asha": 1, "epoch1": 0.25})
    res, v = claim2.analyse(ps)
    sec = res[res["versus"] == "epoch1"]
    assert len(sec) == 2 and sec["p_holm"].isna().all()
    assert sec["outcome"].str.startswith("secondary (unadjusted): slower").all()
    assert v == {"asha_bo": "supported"}  # the baseline, faster, does not change the verdict
    assert len(res[res["p_holm"].notna()]) == 6
    # the pre-registered baselines: both BOHBs and PriorBand are rows too, never in the family
    ps = _per_seed({"asha_bo": 0.5, "random": 1, "hyperband": 1, "asha": 1, "syne_bohb": 1,
                    "neps_priorband": 1, "bohb": 1})
    res, v = claim2.analyse(ps)
    for m in ("bohb", "syne_bohb", "neps_priorband"):
        rows = res[res["versus"] == m]
        assert len(rows) == 2 and rows["p_holm"].isna().all()
    assert len(res[res["p_holm"].notna()]) == 6 and v == {"asha_bo": "supported"}


def test_a_median_a_censored_seed_could_move_is_a_bound():
    r = np.array([1.0, 2.0, 3.0])
    none = np.zeros(3, bool)
    mid = np.array([False, True, False])
    assert claim2.median_bound(r, none, none) == ""
    assert claim2.median_bound(r, mid, none) == ">"  # its true value could be higher
    assert claim2.median_bound(r, none, mid) == "<"
    assert claim2.median_bound(r, np.array([True, False, False]),
                               np.array([False, False, True])) == "~"
    # a lower bound above the median cannot move it
    assert claim2.median_bound(r, np.array([False, False, True]), none) == ""


def test_secondary_endpoints_are_paired_and_outside_the_verdict(tmp_path):
    ps = _per_seed({"asha_bo": 0.5, "random": 1, "hyperband": 1, "asha": 1})
    rng = np.random.default_rng(1)
    ps["dh_to_top10"] = ps["dh_to_top5"] / 2
    # final regret: the flavour's a tenth of the others' (L_ref 1), seed noise shared
    base = rng.uniform(0.01, 0.1, ps["seed"].nunique())
    ps["regret"] = base[ps["seed"]] * np.where(ps["method"] == "asha_bo", 0.1, 1.0)
    ps["incumbent_loss"] = 1.0 + ps["regret"]
    areas = ps[["method", "seed"]].assign(regret_area=np.where(ps["method"] == "asha_bo",
                                                               -2.0, -1.5))
    sec, notes = claim2.secondary_endpoints(ps, areas)
    assert not notes and set(sec["endpoint"]) == set(claim2.SECONDARY_ENDPOINTS)
    assert len(sec) == 9 and (sec["outcome"] == "better").all()
    reg = sec[sec["endpoint"] == "final regret"]
    assert reg["ratio"].to_numpy() == pytest.approx(10.0)
    assert sec[sec["endpoint"] == "regret area"]["ratio"].to_numpy() == pytest.approx(10 ** 0.5)
    # the primary numbers do not change with the secondary endpoints beside them
    res, v = claim2.analyse(ps)
    res0, _ = claim2.analyse(ps.drop(columns=["dh_to_top10", "regret", "incumbent_loss"]))
    pd.testing.assert_frame_equal(res, res0)
    p = tmp_path / "per_seed.csv"
    ps.to_csv(p, index=False)
    areas.to_csv(tmp_path / "regret_area.csv", index=False)
    assert claim2.main(["--per-seed", str(p)]) == 0
    text = (tmp_path / "claim2.md").read_text()
    assert "## Secondary endpoints" in text and "| asha_bo | asha | regret area |" in text
    assert len(pd.read_csv(tmp_path / "claim2_secondary.csv")) == 9
    (tmp_path / "regret_area.csv").write_text("method,seed\nasha_bo,0\n")
    assert claim2.main(["--per-seed", str(p)]) == 2  # a damaged regret_area.csv: one line
