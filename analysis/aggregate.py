"""Scores over seeds as rliable reports them (Agarwal et al., NeurIPS 2021), from per-seed metrics.

    python -m analysis.aggregate --per-seed paper_figures/small/replay_power/per_seed.csv

Reads a ``per_seed.csv`` of :mod:`analysis.replay` (one row per method and seed). The score of a
search is its incumbent's improvement over the untuned default (%) at 1/8, 1/4, 1/2 and all of
the budget (``improvement_pct_<f>``; higher is better). Per method and budget fraction:

- the interquartile mean (IQM: the mean of the middle 50 % of seeds, ``scipy.stats.trim_mean``
  cutting 25 % at each end) with a 95 % percentile bootstrap interval over seeds (rliable's
  ``get_interval_estimates`` with one task, where its stratified bootstrap is a bootstrap over
  runs);
- the probability of improvement of ASHA + BO over the method (rliable's: P(X > Y) + P(X = Y) / 2
  for a seed of each, the Mann-Whitney U over n m), with an interval from resampling the two
  methods' seeds independently, as rliable does; seeds are not paired here (the paired test is
  :mod:`analysis.claim2`'s);
- performance profiles: the share of seeds whose score exceeds tau (figure).

rliable 1.2.0 itself does not run beside pandas 3 (it needs arch < 8, whose 7.2.0 fails on
import against pandas 3.1; arch 8.0.0 rejects the ``random_state=None`` rliable passes), so the
definitions are computed here. Checked against rliable 1.2.0 in an environment with pandas
2.3.3, on the shipped replays: the same point estimates (to the 6 significant digits written);
intervals that differ as other random draws do (at most 0.05 points of IQM and 0.005 of
probability at 200 seeds, 0.29 and 0.012 at 50). Exploratory: outside the pre-registered test.

Writes ``aggregate.md``, ``aggregate.csv`` and ``performance_profile.{pdf,png}`` next to the
input (or to ``--out``). Exit 2 with one line when the input is missing or unusable.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata, trim_mean

from analysis.tables import PerSeedError, read_per_seed, write_csv

FRACTIONS = ("1/8", "1/4", "1/2", "1")
REFERENCE = "asha_bo"
N_BOOT = 2_000
BOOT_SEED = 20211206
ALPHA = 0.05
PROFILE_FRACTIONS = ("1/4", "1")  # the panels of the performance-profile figure


def _of_budget(f: str) -> str:
    return "all of the budget" if f == "1" else f"{f} of the budget"


class AggregateError(Exception):
    """Unusable input (one line, exit 2)."""


def iqm(x) -> float:
    """Interquartile mean: the mean of the middle 50 % (rliable's ``aggregate_iqm``)."""
    x = np.asarray(x, float)
    return float(trim_mean(x, 0.25)) if len(x) else math.nan


def probability_of_improvement(x, y) -> float:
    """P(X > Y) + P(X = Y) / 2 for X a value of ``x`` and Y one of ``y``, drawn independently
    (rliable's ``probability_of_improvement`` on one task)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if not len(x) or not len(y):
        return math.nan
    return float(_poi(x[None, :], y[None, :])[0])


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise :func:`probability_of_improvement` of two (reps, n) and (reps, m) arrays: the
    Mann-Whitney U of x from the ranks of the pooled row, over n m."""
    n, m = x.shape[1], y.shape[1]
    ranks = rankdata(np.concatenate([x, y], axis=1), axis=1)  # ties: average ranks
    u = ranks[:, :n].sum(axis=1) - n * (n + 1) / 2
    return u / (n * m)


def _interval(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.quantile(values, [ALPHA / 2, 1 - ALPHA / 2])
    return float(lo), float(hi)


def iqm_interval(x, rng: np.random.Generator, reps: int = N_BOOT) -> tuple[float, float]:
    """95 % percentile bootstrap interval of :func:`iqm` over resampled seeds."""
    x = np.asarray(x, float)
    samples = x[rng.integers(0, len(x), size=(reps, len(x)))]
    return _interval(trim_mean(samples, 0.25, axis=1))


def poi_interval(x, y, rng: np.random.Generator, reps: int = N_BOOT) -> tuple[float, float]:
    """95 % percentile bootstrap interval of :func:`probability_of_improvement`, the seeds of
    ``x`` and of ``y`` resampled independently."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    xs = x[rng.integers(0, len(x), size=(reps, len(x)))]
    ys = y[rng.integers(0, len(y), size=(reps, len(y)))]
    return _interval(_poi(xs, ys))


def performance_profile(x, taus) -> np.ndarray:
    """The share of ``x`` above each tau of ``taus``."""
    x = np.asarray(x, float)
    return (x[None, :] > np.asarray(taus, float)[:, None]).mean(axis=1)


def scores(per_seed: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """{fraction: {method: finite scores over seeds}} from per_seed.csv's columns."""
    need = {"method", "seed", *(f"improvement_pct_{f}" for f in FRACTIONS)}
    missing = need - set(per_seed.columns)
    if missing:
        raise AggregateError(f"lacks the columns {', '.join(sorted(missing))}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for f in FRACTIONS:
        col = pd.to_numeric(per_seed[f"improvement_pct_{f}"], errors="coerce")
        out[f] = {str(m): v[np.isfinite(v)] for m, v in
                  ((m, col[per_seed["method"] == m].to_numpy(float))
                   for m in dict.fromkeys(per_seed["method"]))}
    return out


def analyse(per_seed: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """One row per method and budget fraction: seeds, median, IQM [95 %], and the probability
    that ``reference`` improves on the method [95 %] (NaN for the reference itself, or when
    it is absent)."""
    rng = np.random.default_rng(BOOT_SEED)
    rows = []
    for f, by_method in scores(per_seed).items():
        ref = by_method.get(reference)
        for m, x in by_method.items():
            row = {"fraction": f, "method": m, "seeds": len(x),
                   "median": float(np.median(x)) if len(x) else math.nan,
                   "iqm": iqm(x), "iqm_lo95": math.nan, "iqm_hi95": math.nan,
                   "poi_reference": math.nan, "poi_lo95": math.nan, "poi_hi95": math.nan}
            if len(x):
                row["iqm_lo95"], row["iqm_hi95"] = iqm_interval(x, rng)
            if ref is not None and len(ref) and len(x) and m != reference:
                row["poi_reference"] = probability_of_improvement(ref, x)
                row["poi_lo95"], row["poi_hi95"] = poi_interval(ref, x, rng)
            rows.append(row)
    return pd.DataFrame(rows)


def report(res: pd.DataFrame, reference: str = REFERENCE) -> str:
    """aggregate.md: IQM per method and budget fraction, then the probability of improvement."""
    methods = list(dict.fromkeys(res["method"]))
    cell = res.set_index(["method", "fraction"])
    n = int(res["seeds"].max()) if len(res) else 0
    lines = ["# Scores over seeds, as rliable reports them", "",
             "From `per_seed.csv` (`python -m analysis.aggregate`). Score: the incumbent's "
             "improvement over the untuned default (%), higher is "
             "better, at a fraction of the budget. IQM: the mean of the middle 50 % of seeds, "
             f"with a 95 % bootstrap interval over seeds ({N_BOOT:,} resamples). Exploratory, "
             "outside the pre-registered test (`claim2.md`).", "",
             "| method | seeds | " + " | ".join(f"IQM at {_of_budget(f)}" for f in FRACTIONS)
             + " |", "|---|---|" + "---|" * len(FRACTIONS)]
    for m in methods:
        cells = []
        for f in FRACTIONS:
            r = cell.loc[(m, f)]
            cells.append("-" if not r["seeds"] else
                         f"{r['iqm']:.2f} [{r['iqm_lo95']:.2f}, {r['iqm_hi95']:.2f}]")
        lines.append(f"| {m} | {int(cell.loc[(m, FRACTIONS[-1])]['seeds'])} | "
                     + " | ".join(cells) + " |")
    others = [m for m in methods if m != reference]
    if reference in methods and others:
        lines += ["", f"Probability of improvement of {reference} over each method: "
                  f"P({reference}'s score > the method's) for a seed of each drawn "
                  "independently, ties counting half (0.5: neither ahead), with a 95 % "
                  "bootstrap interval (each method's seeds resampled on their own).", "",
                  "| versus | " + " | ".join(f"at {_of_budget(f)}" for f in FRACTIONS) + " |",
                  "|---|" + "---|" * len(FRACTIONS)]
        for m in others:
            cells = []
            for f in FRACTIONS:
                r = cell.loc[(m, f)]
                cells.append("-" if not np.isfinite(r["poi_reference"]) else
                             f"{r['poi_reference']:.2f} [{r['poi_lo95']:.2f}, "
                             f"{r['poi_hi95']:.2f}]")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if n:
        lines += ["", f"Performance profiles (share of seeds scoring above tau) at "
                  f"{' and '.join(_of_budget(f) for f in PROFILE_FRACTIONS)}: "
                  "`performance_profile.png`."]
    return "\n".join(lines) + "\n"


def profile_figure(per_seed: pd.DataFrame):
    """Performance profiles at :data:`PROFILE_FRACTIONS` of the budget (columns), one row of
    panels per group of methods (the paper's, ours, other libraries), as the regret figure."""
    import matplotlib.pyplot as plt

    from analysis.summary_plots import method_groups, styles  # noqa: I001 - Agg first

    data = scores(per_seed)
    methods = list(dict.fromkeys(str(m) for m in per_seed["method"]))
    groups, style = method_groups(methods), styles(methods)
    fig, axes = plt.subplots(len(groups), len(PROFILE_FRACTIONS),
                             figsize=(5 * len(PROFILE_FRACTIONS), 2.8 * len(groups) + 0.6),
                             sharey=True, sharex="col", squeeze=False)
    for j, f in enumerate(PROFILE_FRACTIONS):
        pooled = np.concatenate([v for v in data[f].values() if len(v)] or [np.zeros(1)])
        lo, hi = np.quantile(pooled, [0.01, 1.0])
        taus = np.linspace(lo - 0.02 * (hi - lo or 1), hi, 200)
        for i, (title, group) in enumerate(groups):
            ax = axes[i][j]
            for m in group:
                if len(data[f].get(m, ())):
                    ax.plot(taus, performance_profile(data[f][m], taus), label=m,
                            color=style[m]["color"], lw=style[m]["lw"])
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("share of seeds above")
                ax.set_title(title, fontsize=9, loc="left")
            if j == len(PROFILE_FRACTIONS) - 1:
                ax.legend(fontsize=7, loc="lower left")
        axes[-1][j].set_xlabel(f"improvement over the default (%) at {_of_budget(f)}")
    fig.tight_layout()
    return fig


def write(per_seed: pd.DataFrame, out: Path) -> str:
    """aggregate.csv, aggregate.md and the performance-profile figure in ``out``; returns the
    report's text."""
    from analysis.figures import save

    res = analyse(per_seed)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(res, out / "aggregate.csv")
    text = report(res)
    (out / "aggregate.md").write_text(text)
    import matplotlib.pyplot as plt

    fig = profile_figure(per_seed)
    save(fig, out, "performance_profile")
    plt.close(fig)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.aggregate",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--per-seed", required=True, help="per_seed.csv of analysis.replay")
    p.add_argument("--out", default=None, help="aggregate.md/csv and the figure go there "
                   "(default: the input's folder)")
    a = p.parse_args(argv)
    try:
        ps = read_per_seed(Path(a.per_seed), "make replay")
        scores(ps)  # the columns, checked before anything is written
    except (PerSeedError, AggregateError) as e:
        where = "" if isinstance(e, PerSeedError) else f"{a.per_seed}: "
        print(f"error: {where}{e}", file=sys.stderr)
        return 2
    print(write(ps, Path(a.out) if a.out else Path(a.per_seed).parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
