"""analysis.summary_plots: label spreading, robust log limits, log ticks and ranks, by hand."""

import itertools
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from analysis import summary_plots as sp


def test_spread_labels_by_hand():
    # apart already: unchanged; three within 0.02: pushed up from the lowest, 0.06 apart
    y = sp.spread_labels([0.52, 0.50, 0.9, 0.51, 0.995], min_sep=0.06)
    assert y == pytest.approx([0.62, 0.50, 0.9, 0.56, 0.995])  # order of the lines kept
    # crowded at the top: the highest stays at 1, the others go down
    assert sp.spread_labels([0.99, 0.97, 0.98], min_sep=0.06) == pytest.approx([1.0, 0.88, 0.94])


def test_robust_log_limits_ignore_diverged_values():
    v = np.r_[np.geomspace(0.01, 1.0, 60), [1e24] * 30, [np.inf] * 10, [0.0, -1.0, np.nan]]
    lo, hi = sp.robust_log_limits(v)  # 40 % diverged: the median (0.5) sets the cap
    assert 0.005 < lo < 0.011 and hi <= 1.1 * sp.DIVERGED * 0.6
    lo, hi = sp.robust_log_limits([1e24] * 9 + [0.3], scale=0.6)  # 90 %: the scale caps it
    assert hi <= 1.2 * sp.DIVERGED * 0.6 and lo < 0.3
    lo, hi = sp.robust_log_limits([0.2, 0.21], include=[0.05])  # the targets are in view
    assert lo < 0.05 and hi > 0.21 and math.log10(hi / lo) >= sp.MIN_DECADES
    assert sp.robust_log_limits([np.inf, np.nan, 0.0]) is None


def tick_label_boxes(axis, renderer) -> list:
    """Window boxes of the visible, non-empty tick labels of ``axis`` within its view."""
    lo, hi = sorted(axis.get_view_interval())
    return [tk.label1.get_window_extent(renderer)
            for tk in axis.get_major_ticks() + axis.get_minor_ticks()
            if tk.label1.get_visible() and tk.label1.get_text() and lo <= tk.get_loc() <= hi]


def tick_label_overlaps(ax, fig) -> list:
    """Pairs of tick labels of ``ax`` (either axis) whose boxes intersect."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    return [(a, b) for axis in (ax.xaxis, ax.yaxis)
            for a, b in itertools.combinations(tick_label_boxes(axis, r), 2) if a.overlaps(b)]


# (0.0027, 0.021) and (0.25, 9): matplotlib's own log ticks collide there (labelled minors)
@pytest.mark.parametrize("lo,hi", [(0.0027, 0.021), (0.25, 9.0), (1e-3, 10.0), (0.27, 920.0),
                                   (1e-6, 1e4), (0.004, 0.0062), (0.1, 0.63), (0.0055, 0.0174)])
def test_log_tick_labels_do_not_collide(lo, hi):
    fig, ax = plt.subplots(figsize=(3.2, 2.4))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    sp.log_axis(ax.xaxis, lo, hi)
    sp.log_axis(ax.yaxis, lo, hi)
    assert tick_label_overlaps(ax, fig) == []
    r = fig.canvas.get_renderer()
    assert all(len(tick_label_boxes(a, r)) >= 2 for a in (ax.xaxis, ax.yaxis))
    plt.close(fig)


def test_nemenyi_cd_matches_demsar_table():
    # Demsar (2006), table 5(a): q_0.05 = 2.569 for k = 4, 3.164 for k = 10
    for k, q in ((4, 2.569), (10, 3.164)):
        assert sp.nemenyi_cd(k, 7) / math.sqrt(k * (k + 1) / 42) == pytest.approx(q, abs=1e-3)


def test_rank_summary_by_hand():
    # seed 0: a 1, b 2, c 3 -> ranks 1, 2, 3; seed 1: 1, 3, 2; seed 2: 2, 1, 3;
    # seed 3: a 1, b and c never (inf), tied -> 1, 2.5, 2.5.
    # Mean ranks a 5/4, b 8.5/4 = 2.125, c 10.5/4 = 2.625. d lacks seed 3 and is left out of
    # nothing: it is ranked over the seeds every method has -> here without d.
    rows = {"a": [1, 1, 2, 1], "b": [2, 3, 1, np.inf], "c": [3, 2, 3, np.inf]}
    per = pd.DataFrame([{"method": m, "seed": k, "x": v} for m, vs in rows.items()
                        for k, v in enumerate(vs)])
    s = sp.rank_summary(per, "x")
    assert s.methods == ("a", "b", "c") and s.n_seeds == 4
    assert s.mean_ranks == pytest.approx((1.25, 2.125, 2.625))
    # Friedman: 12 N / (k (k + 1)) (sum R^2 - k (k + 1)^2 / 4) = 4 (12.96875 - 12) = 3.875,
    # over the tie correction 1 - (2^3 - 2) / (N k (k^2 - 1)) = 0.9375; chi2 with 2 dof
    assert s.p_value == pytest.approx(math.exp(-3.875 / 0.9375 / 2))
    assert s.cd == pytest.approx(sp.nemenyi_cd(3, 4)) and s.cliques == ((0, 2),)  # 1.375 < cd
    # a fourth method with seeds 0-2 only: the blocks shrink to the 3 common seeds
    per = pd.concat([per, pd.DataFrame({"method": "d", "seed": [0, 1, 2], "x": 0.5})])
    s = sp.rank_summary(per, "x")
    assert s.n_seeds == 3 and s.methods[0] == "d" and s.mean_ranks[0] == 1.0
    assert sp.rank_summary(per[per["method"] == "a"], "x") is None


def test_critical_difference_figure_shows_the_ranks():
    per = pd.DataFrame({"method": ["a", "b"] * 3, "seed": [0, 0, 1, 1, 2, 2],
                        "regret": [0.1, 0.2, 0.3, 0.1, 0.1, 0.4]})
    fig = sp.critical_difference(per, "t", columns=(("regret", "final regret"),))
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"a (1.33)", "b (1.67)"} <= texts  # a better in 2 of 3 seeds
    plt.close(fig)
