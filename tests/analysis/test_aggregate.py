"""IQM, probability of improvement and performance profiles over seeds (analysis/aggregate.py)
on scores made up here, checked against their definitions computed by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis import aggregate


def _per_seed(scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for m, vals in scores.items():
        for seed, v in enumerate(vals):
            rows.append({"method": m, "seed": seed,
                         **{f"improvement_pct_{f}": v + i for i, f in
                            enumerate(aggregate.FRACTIONS)}})
    return pd.DataFrame(rows)


def test_iqm_is_the_mean_of_the_middle_half():
    x = [9.0, 1.0, 5.0, 100.0, 3.0, 4.0, 2.0, -50.0]  # sorted: -50 1 2 3 4 5 9 100
    assert aggregate.iqm(x) == pytest.approx(np.mean([2.0, 3.0, 4.0, 5.0]))
    assert np.isnan(aggregate.iqm([]))


def test_probability_of_improvement_counts_pairs_and_half_ties():
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 17).astype(float)
    pairs = [(a > b) + 0.5 * (a == b) for a, b in itertools.product(x, y)]
    p = aggregate.probability_of_improvement(x, y)
    assert p == pytest.approx(np.mean(pairs))
    assert p + aggregate.probability_of_improvement(y, x) == pytest.approx(1.0)
    assert aggregate.probability_of_improvement([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert aggregate.probability_of_improvement(x, x) == pytest.approx(0.5)


def test_performance_profile_is_the_share_above_tau():
    prof = aggregate.performance_profile([1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 2.5, 4.0])
    assert prof.tolist() == [1.0, 0.5, 0.5, 0.0]


def test_analyse_gives_intervals_around_the_estimates_and_is_repeatable():
    rng = np.random.default_rng(0)
    ps = _per_seed({"random": list(rng.normal(60, 3, 40)),
                    "asha_bo": list(rng.normal(66, 1, 40)),
                    "asha": list(rng.normal(66, 1, 40))})
    res = aggregate.analyse(ps)
    assert len(res) == 3 * len(aggregate.FRACTIONS)
    assert (res["iqm_lo95"] <= res["iqm"]).all() and (res["iqm"] <= res["iqm_hi95"]).all()
    ref = res[res["method"] == "asha_bo"]
    assert ref["poi_reference"].isna().all()  # not compared with itself
    vs_random = res[res["method"] == "random"]
    assert (vs_random["poi_lo95"] > 0.9).all()  # 6 points ahead with SD 3: nearly always
    vs_asha = res[(res["method"] == "asha") & (res["fraction"] == "1")].iloc[0]
    assert 0.25 < vs_asha["poi_reference"] < 0.75  # the same distribution: near 0.5
    pd.testing.assert_frame_equal(res, aggregate.analyse(ps))
    text = aggregate.report(res)
    assert "| random | 40 |" in text and "| versus |" in text


def test_cli_refuses_bad_input_with_one_line(tmp_path, capsys):
    assert aggregate.main(["--per-seed", str(tmp_path / "none.csv")]) == 2
    assert "no per-seed metrics" in capsys.readouterr().err
    bad = tmp_path / "per_seed.csv"
    bad.write_text("method,seed\nasha,0\n")
    assert aggregate.main(["--per-seed", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks the columns improvement_pct_1" in err
    assert not (tmp_path / "aggregate.md").exists()
    good = tmp_path / "good" / "per_seed.csv"
    good.parent.mkdir()
    _per_seed({"asha_bo": [1.0, 2.0, 3.0, 4.0], "asha": [0.0, 1.0, 2.0, 3.0]}).to_csv(
        good, index=False)
    assert aggregate.main(["--per-seed", str(good)]) == 0
    for name in ("aggregate.md", "aggregate.csv", "performance_profile.png"):
        assert (good.parent / name).is_file()
