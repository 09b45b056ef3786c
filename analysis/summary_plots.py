"""Figures that show the decision of claim 2: regret against compute, and ranks over seeds.

    regret_vs_compute    median regret I(c) - L_ref over seeds (log y) against device-hours
                         (log x), 95 % bootstrap band of the median, one panel per group of
                         methods (:func:`method_groups`), the targets as labelled lines
    critical_difference  mean rank of each method over seeds (1 = best) on final regret and on
                         device-hours to the top 5 % and 1 % targets: Friedman test, Nemenyi
                         critical difference, Demsar's diagram (J. Demsar, "Statistical
                         comparisons of classifiers over multiple data sets", JMLR 7, 2006)

Symbols as in :mod:`analysis.metrics` (I(c), L_ref, targets). Both functions take tables the
analyses already made, never the logs: ``curves`` with columns method, device_hours,
median_incumbent, lo, hi (``curves.csv`` of :mod:`analysis.replay`, or :func:`median_curves`
for live searches) and ``per_seed`` (:func:`analysis.metrics.per_seed_metrics`).

The axis helpers are shared with :mod:`analysis.figures` and :mod:`analysis.replay`:
:func:`robust_log_limits` (a diverged trial, loss 1e24 or inf, never sets a limit),
:func:`log_axis` (few, non-colliding log tick labels), :func:`spread_labels` (labels of nearby
lines kept apart).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

from analysis.metrics import (  # noqa: E402
    bootstrap_median_band,
    incumbent_on_grid,
    mean_rank,
    top_name,
)

PAPER_METHODS = ("random", "hyperband", "asha", "asha_bo")  # the four the paper compares
PEER_PREFIXES = ("optuna_", "syne_", "ray_", "neps_")  # other libraries' methods
LABEL_SEP = 0.06  # least vertical distance between two line labels [axes fraction]
MIN_DECADES = 1.0  # a log axis spans at least this: (1, 2, 5) x 10^k then gives >= 2 labels
DIVERGED = 1e3  # a value this many times the scale of the problem is off the axis
CD_ALPHA = 0.05
CD_COLUMNS = (("regret", "final regret"),  # per_seed column, what it is
              (f"dh_to_{top_name(0.05)}", "device-hours to the top 5 % target"),
              (f"dh_to_{top_name(0.01)}", "device-hours to the top 1 % target"))


# ---- groups and styles --------------------------------------------------------------------
def method_groups(methods: list[str]) -> list[tuple[str, list[str]]]:
    """(title, methods) panels: the paper's four, our other methods, other libraries."""
    peers = [m for m in methods if m.startswith(PEER_PREFIXES)]
    paper = [m for m in PAPER_METHODS if m in methods]
    others = [m for m in methods if m not in peers and m not in paper]
    return [(t, g) for t, g in (("the paper's methods", paper), ("other methods", others),
                                ("other libraries", peers)) if g]


def styles(methods: list[str]) -> dict[str, dict]:
    """A distinct colour per method within its group (tab10), paper methods thick."""
    out = {}
    for _, group in method_groups(methods):
        for i, m in enumerate(group):
            out[m] = {"color": plt.get_cmap("tab10").colors[i % 10],
                      "lw": 2.0 if m in PAPER_METHODS else 1.4, "ls": "-",
                      "zorder": 3, "band": 0.15}
    return out


# ---- axes ---------------------------------------------------------------------------------
def robust_log_limits(values, *, include=(), scale: float | None = None,
                      quantiles=(0.02, 0.98), min_decades: float = MIN_DECADES,
                      pad: float = 0.05) -> tuple[float, float] | None:
    """(lo, hi) of a log axis for ``values``: their ``quantiles`` (in log space) over the
    finite positive values at most DIVERGED x ``scale`` (the problem's scale, e.g. the
    default's loss; without one, the median of the values), widened to hold every finite
    positive value of ``include`` (the targets, L_ref), at least ``min_decades`` wide (below
    the cap), padded by ``pad`` of the span on each side. None when there is no finite
    positive value. A diverged trial's 1e24 or inf therefore never sets a limit: with a
    ``scale`` however many values diverged, without one while fewer than half did."""
    v = np.asarray(values, float).ravel()
    v = np.log10(v[np.isfinite(v) & (v > 0)])
    inc = np.asarray(include, float).ravel()
    inc = np.log10(inc[np.isfinite(inc) & (inc > 0)])
    ref = math.log10(scale) if scale is not None and np.isfinite(scale) and scale > 0 else (
        float(np.median(v)) if len(v) else None)
    if ref is not None:
        cap = max(ref + math.log10(DIVERGED), inc.max() if len(inc) else -np.inf)
        v = v[v <= cap]
    if len(v) == 0 and len(inc) == 0:
        return None
    lo, hi = np.quantile(v, quantiles) if len(v) else (inc.min(), inc.max())
    if len(inc):
        lo, hi = min(lo, inc.min()), max(hi, inc.max())
    if hi - lo < min_decades:  # widen about the middle, below the cap
        mid = (hi + lo) / 2
        lo, hi = mid - min_decades / 2, mid + min_decades / 2
        if ref is not None and hi > cap:
            lo, hi = lo - (hi - cap), cap
    span = hi - lo
    return 10 ** (lo - pad * span), 10 ** (hi + pad * span)


def _tick_label(v: float, _pos=None) -> str:
    return f"{v:g}"  # 0.005, 0.01, 1e-05: short, never 5x10^-3 beside 10^-2


def log_axis(axis, lo: float, hi: float, max_ticks: int = 6) -> None:
    """Log ticks on ``axis`` (ax.xaxis or ax.yaxis) of range [lo, hi] that cannot collide:
    at most ``max_ticks`` labelled major ticks (1, 2, 5 x 10^k within 1.2 decades, 1, 3 x 10^k
    within 2.5, powers of 10 beyond, thinned by LogLocator; about 3 evenly spaced ones
    within 0.8 decades), unlabelled minor ticks."""
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    if decades < 0.8:  # (1, 2, 5) x 10^k may leave one tick: a few evenly spaced ones
        axis.set_major_locator(MaxNLocator(nbins=3, steps=[1, 2, 2.5, 5, 10]))
    else:
        subs = (1.0, 2.0, 5.0) if decades <= 1.2 else (1.0, 3.0) if decades <= 2.5 else (1.0,)
        axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=max_ticks))
    axis.set_major_formatter(FuncFormatter(_tick_label))
    axis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10) / 1.0, numticks=12))
    axis.set_minor_formatter(NullFormatter())


def spread_labels(positions, min_sep: float = LABEL_SEP, top: float = 1.0) -> np.ndarray:
    """Label heights (axes fraction) near ``positions`` with at least ``min_sep`` between any
    two, in the same order as the positions (the lowest line keeps the lowest label): pushed
    up from the lowest, then down from ``top``, only where two would collide."""
    p = np.asarray(positions, float)
    order = np.argsort(p, kind="stable")
    y = p[order].copy()
    for i in range(1, len(y)):
        y[i] = max(y[i], y[i - 1] + min_sep)
    if len(y):
        y[-1] = min(y[-1], max(top, p.max()))
    for i in range(len(y) - 2, -1, -1):
        y[i] = min(y[i], y[i + 1] - min_sep)
    out = np.empty_like(y)
    out[order] = y
    return out


def label_lines(ax, values: dict[str, float], *, log: bool, color="0.35",
                fontsize="x-small") -> list:
    """Text labels right of ``ax`` for horizontal lines at data ``values`` ({label: y}),
    spread apart (:func:`spread_labels`) and tied to their line by a short leader."""
    lo, hi = ax.get_ylim()
    f = (lambda v: (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))) \
        if log else (lambda v: (v - lo) / (hi - lo))
    items = [(k, f(v)) for k, v in values.items()
             if np.isfinite(v) and (v > 0 or not log) and 0.0 <= f(v) <= 1.0]
    if not items:
        return []
    ys = spread_labels([y for _, y in items])
    return [ax.annotate(k, xy=(1.0, y0), xycoords="axes fraction", xytext=(1.03, y1),
                        textcoords="axes fraction", va="center", ha="left", fontsize=fontsize,
                        color=color, annotation_clip=False,
                        arrowprops={"arrowstyle": "-", "lw": 0.6, "color": color,
                                    "shrinkA": 0, "shrinkB": 0})
            for (k, y0), y1 in zip(items, ys)]


# ---- regret against compute ----------------------------------------------------------------
def median_curves(traces: dict[str, list[pd.DataFrame]], grid) -> pd.DataFrame:
    """The median over seeds of I(c) on ``grid`` (device-hours) with its 95 % bootstrap band,
    per method: traces {method: [analysis.metrics.incumbent_trace of each seed]}. Columns
    method, device_hours, median_incumbent, lo, hi (the layout of the replay's curves.csv)."""
    parts = []
    for m, ts in traces.items():
        v = np.stack([incumbent_on_grid(t, grid) for t in ts])  # (seeds, grid)
        med, lo, hi = bootstrap_median_band(v)
        parts.append(pd.DataFrame({"method": m, "device_hours": grid, "median_incumbent": med,
                                   "lo": lo, "hi": hi}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["method", "device_hours", "median_incumbent", "lo", "hi"])


def _finite(x) -> np.ndarray:
    x = np.asarray(x, float)
    return np.where(np.isfinite(x), x, np.nan)


def regret_limits(curves: pd.DataFrame, refs: dict) -> tuple[float, float] | None:
    """Log y range of the regret figure: robust quantiles of the finite positive regrets of
    the medians and bands, holding every target's regret, capped at DIVERGED x the largest
    reference regret (the untuned default's, a median configuration's of the table, the
    targets')."""
    l_ref = refs.get("l_ref", math.nan)
    vals = np.concatenate([_finite(curves[c]) - l_ref for c in ("median_incumbent", "lo", "hi")])
    targets = [t - l_ref for t in refs.get("targets", {}).values()]
    scale = [x - l_ref for x in (refs.get("default_loss", math.nan),
                                 refs.get("random_median", math.nan))] + targets
    scale = [x for x in scale if np.isfinite(x) and x > 0]
    return robust_log_limits(vals, include=targets, scale=max(scale) if scale else None)


def regret_vs_compute(curves: pd.DataFrame, refs: dict, methods: list[str], title: str):
    """Median regret I(c) - L_ref over seeds (log y) against device-hours (log x), with the
    95 % bootstrap band of the median; one panel per group of methods (shared axes); the
    targets' regrets as grey lines labelled apart at the right, the untuned default's as a
    black dashed line. Regrets at or below the axis's floor (the best known configuration
    found: regret 0) are drawn on the floor. ``refs``: l_ref, targets, default_loss."""
    groups = method_groups(methods) or [("", [])]
    fig, axes = plt.subplots(1, len(groups), figsize=(max(4.6 * len(groups) + 0.8, 8.0), 4.2),
                             sharey=True, sharex=True, squeeze=False, layout="constrained")
    axes = list(axes[0])
    l_ref = refs.get("l_ref", math.nan)
    ylim = regret_limits(curves, refs) if np.isfinite(l_ref) and len(curves) else None
    if ylim is None:
        axes[0].text(0.5, 0.5, "no regret: no best known loss or no ended trial",
                     ha="center", transform=axes[0].transAxes)
        return fig
    x = curves["device_hours"].to_numpy(float)
    x = x[np.isfinite(x) & (x > 0)]
    xlim = (x.min(), x.max()) if len(x) else (1e-3, 1.0)
    style = styles(methods)
    by = {m: c for m, c in curves.groupby("method", sort=False)}
    floor = ylim[0]
    for ax, (name, group) in zip(axes, groups):
        for m in (g for g in group if g in by):
            c, s = by[m], style[m]
            reg = [np.clip(_finite(c[k]) - l_ref, floor, None)  # (grid,)
                   for k in ("median_incumbent", "lo", "hi")]
            ax.fill_between(c["device_hours"], reg[1], reg[2], color=s["color"],
                            alpha=s["band"], lw=0, step="post")
            ax.step(c["device_hours"], reg[0], where="post", color=s["color"], lw=s["lw"],
                    zorder=s["zorder"], label=m)
        d = refs.get("default_loss", math.nan) - l_ref
        if np.isfinite(d) and d > 0:
            ax.axhline(d, color="k", ls=(0, (5, 2)), lw=1.4, zorder=4,
                       label=f"untuned default ({d:.3g})")
        for t in refs.get("targets", {}).values():
            if np.isfinite(t - l_ref) and t - l_ref > 0:
                ax.axhline(t - l_ref, color="0.55", ls=":", lw=1.0, zorder=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        log_axis(ax.xaxis, *xlim)
        log_axis(ax.yaxis, *ylim)
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("compute spent [device-hours]")
        ax.grid(alpha=0.3, which="major")
        ax.grid(alpha=0.12, which="minor")
        ax.legend(fontsize="x-small", loc="lower left")
    label_lines(axes[-1], {f"top {100 * float(q):g} % ({t - l_ref:.2g})": t - l_ref
                           for q, t in refs.get("targets", {}).items()}, log=True)
    axes[0].set_ylabel(f"regret = incumbent - L_ref (L_ref = {l_ref:.4g})\n"
                       "median over seeds, 95 % bootstrap band")
    fig.suptitle(title, fontsize="medium")
    return fig


# ---- ranks over seeds ---------------------------------------------------------------------
@dataclass(frozen=True)
class RankSummary:
    """Mean ranks of methods over seeds (blocks), best first, with the Friedman test and the
    Nemenyi critical difference: two methods whose mean ranks differ by less than ``cd`` are
    not told apart at level ``alpha``; ``cliques``: maximal runs (first, last index into
    ``methods``) of such methods."""
    methods: tuple[str, ...]
    mean_ranks: tuple[float, ...]
    n_seeds: int
    cd: float
    p_value: float  # Friedman chi-square test, with the correction for ties
    alpha: float
    cliques: tuple[tuple[int, int], ...]


def nemenyi_cd(k: int, n: int, alpha: float = CD_ALPHA) -> float:
    """Critical difference of mean ranks for k methods over n blocks: q_alpha sqrt(k (k + 1)
    / (6 n)), q_alpha the studentised range quantile for k means / sqrt(2) (Demsar 2006,
    eq. after (2); 2.569 for k = 4)."""
    from scipy.stats import studentized_range

    q = studentized_range.ppf(1.0 - alpha, k, np.inf) / math.sqrt(2.0)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * n)))


def rank_summary(per_seed: pd.DataFrame, column: str, alpha: float = CD_ALPHA,
                 ) -> RankSummary | None:
    """Ranks of the methods of ``per_seed`` (rows method, seed) on ``column`` (lower is
    better; NaN and inf, e.g. a target never reached, tie as the worst) per seed, over the
    seeds every method has (:func:`analysis.metrics.mean_rank`). None with fewer than 2
    methods or seeds, or when the column is all NaN."""
    if column not in per_seed or per_seed[column].isna().all():
        return None
    wide = per_seed.pivot_table(index="method", columns="seed", values=column,
                                aggfunc="first", dropna=False, sort=False)
    wide = wide.reindex(list(dict.fromkeys(per_seed["method"])))  # first-seen order
    have = per_seed.groupby("seed")["method"].nunique()
    seeds = sorted(have.index[have == len(wide)])
    if len(wide) < 2 or len(seeds) < 2:
        return None
    v = wide[seeds].to_numpy(float)  # (methods, seeds)
    r = mean_rank(v)
    order = np.argsort(r, kind="stable")
    methods, ranks = [str(wide.index[i]) for i in order], r[order]
    k, n = len(methods), len(seeds)
    p = math.nan
    if k >= 3:
        from scipy.stats import friedmanchisquare

        with np.errstate(all="ignore"):
            p = float(friedmanchisquare(*np.where(np.isnan(v), np.inf, v)).pvalue)
    cd = nemenyi_cd(k, n, alpha)
    cliques, last = [], -1
    for i in range(k):
        j = i
        while j + 1 < k and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and j > last:
            cliques.append((i, j))
            last = j
    return RankSummary(tuple(methods), tuple(float(x) for x in ranks), n, cd, p, alpha,
                       tuple(cliques))


def _cd_panel(ax, s: RankSummary, what: str) -> None:
    """Demsar's diagram on ``ax``: the rank axis (1 = best, on the left), the CD bar, every
    method's mean rank tied to its name (better half left, worse half right), thick bars
    joining methods not told apart."""
    k = len(s.methods)
    ax.set_axis_off()
    row, y_axis = 0.32, 0.0
    ax.plot([1, k], [y_axis, y_axis], color="k", lw=1.0)
    for r in range(1, k + 1):
        ax.plot([r, r], [y_axis, y_axis - 0.1], color="k", lw=0.8)
        ax.text(r, y_axis - 0.15, str(r), ha="center", va="bottom", fontsize="x-small")
    ax.plot([1, 1 + s.cd], [-0.55, -0.55], color="k", lw=1.4)
    for x in (1, 1 + s.cd):
        ax.plot([x, x], [-0.5, -0.6], color="k", lw=1.0)
    ax.text(1 + s.cd / 2, -0.62, f"CD = {s.cd:.2f}", ha="center", va="bottom",
            fontsize="x-small")
    for c, (i, j) in enumerate(s.cliques):
        y = 0.12 + 0.09 * c
        ax.plot([s.mean_ranks[i] - 0.03, s.mean_ranks[j] + 0.03], [y, y], color="k", lw=3.0,
                solid_capstyle="butt")
    top = 0.12 + 0.09 * len(s.cliques) + 0.12
    half = math.ceil(k / 2)
    for i, (m, r) in enumerate(zip(s.methods, s.mean_ranks)):
        left = i < half
        y = top + row * (i if left else k - 1 - i)
        end = 0.7 if left else k + 0.3
        ax.plot([r, r, end], [y_axis, y, y], color="0.2", lw=0.8)
        ax.text(end + (-0.08 if left else 0.08), y, f"{m} ({r:.2f})", va="center",
                ha="right" if left else "left", fontsize="small")
    ax.set_xlim(0.7, max(k, 1 + s.cd) + 0.3)  # with few seeds the CD outgrows the axis
    ax.set_ylim(top + row * half + 0.05, -0.75)  # y grows downwards
    p = f"{s.p_value:.2g}" if np.isfinite(s.p_value) else \
        "n/a (< 3 methods)" if k < 3 else "n/a (all tied)"
    ax.set_title(f"{what}: {s.n_seeds} seeds, Friedman p = {p}", fontsize="small")


def critical_difference(per_seed: pd.DataFrame, title: str, columns=CD_COLUMNS):
    """Critical-difference diagrams (:func:`rank_summary`) of the methods, one panel per
    (column, name) of ``columns`` that has values: by default final regret and device-hours
    to the top 5 % and top 1 % targets (never reached: tied worst)."""
    summaries = [(rank_summary(per_seed, c), name) for c, name in columns]
    summaries = [(s, name) for s, name in summaries if s is not None]
    k = max((len(s.methods) for s, _ in summaries), default=2)
    height = 0.9 + 0.16 * math.ceil(k / 2) + 0.12 * max(
        (len(s.cliques) for s, _ in summaries), default=0)
    fig, axes = plt.subplots(max(len(summaries), 1), 1, squeeze=False, layout="constrained",
                             figsize=(8.0, 0.4 + height * max(len(summaries), 1)))
    if not summaries:
        axes[0][0].set_axis_off()
        axes[0][0].text(0.5, 0.5, "no ranks: fewer than 2 methods or 2 common seeds",
                        ha="center", transform=axes[0][0].transAxes)
    for ax, (s, name) in zip(axes[:, 0], summaries):
        _cd_panel(ax, s, name)
    fig.suptitle(f"{title}\nmean rank over seeds (1 = best); bars join methods the Nemenyi "
                 f"test does not tell apart at alpha {CD_ALPHA:g}", fontsize="medium")
    return fig
