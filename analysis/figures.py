"""Every figure of the study, one function each, from the loaded logs (Agg backend).

    best_vs_compute       the incumbent's final val loss vs cumulative device-hours (log x):
                          the key figure (analysis.metrics.incumbent_trace)
    best_vs_wall          the same against wall-clock hours
    learning_curves       every trial's val loss per epoch; where early stopping cut trials
    budget_per_trial      histogram of epochs per trial (the rungs a stopper uses)
    utilisation           worker utilisation over time
    best_hyperparameters  parallel coordinates of the trials with the lowest final loss
    regret_vs_compute     median regret I(c) - L_ref over seeds (log y) vs device-hours, 95 %
                          bootstrap band, targets labelled (analysis.summary_plots)
    critical_difference   mean ranks of the methods over seeds, Friedman test and Nemenyi
                          critical difference (analysis.summary_plots)

Log axes take their limits from robust quantiles (analysis.summary_plots.robust_log_limits):
a diverged trial (loss 1e24 or inf) never stretches one.

Each function takes ``runs`` ({method: {seed: SearchLogs}}) and the tidy ``trials`` table and
returns a Figure; :func:`save` writes it as PDF and PNG with fixed metadata (no dates, no
software string) so that reruns give the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from analysis import summary_plots  # noqa: E402
from analysis.logs import (  # noqa: E402
    DEFAULT_METHOD,
    EPOCH,
    FAILED,
    FINAL_LOSS,
    HP_PREFIX,
    JOB_ID,
    OK,
    STOPPED,
    VAL_LOSS,
    hp_columns,
)
from analysis.metrics import (  # noqa: E402
    INCUMBENT,
    per_seed_metrics,
    reference_losses,
    search_trace,
    utilisation_over_time,
)
from analysis.summary_plots import log_axis, robust_log_limits  # noqa: E402

FIGSIZE = (6.4, 4.0)  # inches, one column of a two-column paper at 2x
PALETTE = plt.get_cmap("tab10").colors
TOP_K = 5  # trials per method in the hyperparameter plot


def color(method: str, methods: list[str]) -> tuple:
    return PALETTE[methods.index(method) % len(PALETTE)]


def _searches(runs: dict) -> dict:
    return {m: s for m, s in runs.items() if m != DEFAULT_METHOD}


def save(fig, out: Path, name: str) -> list[Path]:
    """Write out/name.pdf and out/name.png without timestamps; close the figure."""
    paths = [out / f"{name}.pdf", out / f"{name}.png"]
    fig.savefig(paths[0], metadata={"CreationDate": None, "ModDate": None, "Producer": None,
                                    "Creator": None})
    fig.savefig(paths[1], dpi=150, metadata={"Software": None})
    plt.close(fig)
    return paths


def time_unit(hours: float) -> tuple[float, str]:
    """(factor, name) to show a wall time span of ``hours`` in readable units."""
    if not np.isfinite(hours) or hours >= 2:
        return 1.0, "hours"
    return (60.0, "minutes") if hours >= 2 / 60 else (3600.0, "seconds")


TARGET_STYLES = ((0, (1, 1)), (0, (3, 2)), (0, (6, 2)))  # top 1 %, 5 %, 10 %: dots to dashes


def reference_lines(ax, refs: dict) -> None:
    """Horizontal lines: L_default (black, thick dashed, above everything), the targets
    (thin grey, by quantile: dots to dashes)."""
    if refs and np.isfinite(refs.get("default_loss", np.nan)):
        ax.axhline(refs["default_loss"], color="k", ls=(0, (5, 2)), lw=1.8, zorder=5,
                   label=f"untuned default ({refs.get('default_ref', 'final')})")
    for (q, t), ls in zip((refs or {}).get("targets", {}).items(), TARGET_STYLES):
        if np.isfinite(t):
            ax.axhline(t, color="0.55", ls=ls, lw=0.8, zorder=1,
                       label=f"target: top {100 * float(q):g} % of the table")


def _title(runs: dict, what: str) -> str:
    """``<scale>: <what>, <n> seeds, <budget> device-s per search`` from the logs."""
    searches = [s for m in _searches(runs).values() for s in m.values()]
    scale = next((s.metadata.get("scale") for s in searches if s.metadata.get("scale")), "")
    seeds = max((len(m) for m in _searches(runs).values()), default=0)
    budgets = {s.metadata.get("budget_device_s") for s in searches} - {None}
    b = f", {max(budgets):.0f} device-s per search" if budgets else ""
    return f"{scale}: {what}, {seeds} seed{'s' if seeds != 1 else ''} per method{b}"


def _zoom(refs: dict, values: np.ndarray) -> tuple[float, float] | None:
    """Linear y range from just below the best loss to just above the default's (at least
    15 % above the best loss)."""
    lo = np.nanmin([refs.get("l_ref", np.nan), np.nanmin(values) if len(values) else np.nan])
    hi = refs.get("default_loss", np.nan)
    if not np.isfinite(lo):
        return None
    hi = max(hi if np.isfinite(hi) else -np.inf, lo * 1.15)  # at least 15 % of the loss
    pad = 0.06 * (hi - lo)
    return lo - pad, hi + 2 * pad


def _best_vs(runs: dict, trials: pd.DataFrame, refs: dict, x: str, xlabel: str,
             logx: bool):
    """Left: every search's incumbent on log axes (the whole descent); right: the same on a
    linear scale zoomed between the best loss and the default's, where methods differ."""
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11.0, 4.2), layout="constrained")
    methods = list(_searches(runs))
    factor, unit = 1.0, None
    if x == "wall_hours":
        factor, unit = time_unit(max(s.duration / 3600 for m in methods
                                     for s in runs[m].values()))
        xlabel = f"wall time [{unit}]"
    finals, steps = [], []
    for m in methods:
        for i, s in enumerate(runs[m].values()):
            inc = search_trace(s, trials).dropna(subset=[INCUMBENT])
            inc[x] = inc[x] * factor
            # Only the steps matter: rows where the incumbent improves, and the last row.
            keep = inc[INCUMBENT].diff().ne(0).to_numpy().copy()
            keep[-1:] = True
            inc = inc[keep]
            if logx:
                inc = inc[inc[x] > 0]
            if len(inc) == 0:
                continue
            finals.append(float(inc[INCUMBENT].iloc[-1]))
            steps.append(inc[INCUMBENT].to_numpy(float))
            for a in (ax, zoom):
                a.step(inc[x], inc[INCUMBENT], where="post", color=color(m, methods),
                       lw=1.6, alpha=0.9 if len(runs[m]) == 1 else 0.65,
                       label=m if i == 0 else None)
    for a in (ax, zoom):
        reference_lines(a, refs)
        if logx:
            a.set_xscale("log")
        a.set_xlabel(xlabel)
        a.grid(alpha=0.3, which="both")
    ax.set_yscale("log")  # first-epoch losses are orders of magnitude above the best ones
    refs = refs or {}
    d = refs.get("default_loss", np.nan)
    ylim = robust_log_limits(np.concatenate(steps) if steps else [], quantiles=(0.0, 1.0),
                             include=[refs.get("l_ref", np.nan), d,
                                      *refs.get("targets", {}).values()],
                             scale=d if np.isfinite(d) else None)
    if ylim:
        ax.set_ylim(*ylim)
        log_axis(ax.yaxis, *ylim)
    if logx:
        for a in (ax, zoom):
            log_axis(a.xaxis, *a.get_xlim())
    ax.set_ylabel("incumbent's final validation loss")
    ax.set_title("whole search (log scale)", fontsize="medium")
    limits = _zoom(refs, np.array(finals))
    if limits:
        zoom.set_ylim(*limits)
    zoom.set_title("zoom near the best loss (linear)", fontsize="medium")
    zoom.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(_title(runs, "incumbent (best final loss so far) per search"),
                 fontsize="medium")
    return fig


def best_vs_compute(runs: dict, trials: pd.DataFrame, refs: dict):
    """The incumbent's final val loss against cumulative device-hours (log x), one line per
    search."""
    return _best_vs(runs, trials, refs, "device_hours", "compute spent [device-hours]", logx=True)


def best_vs_wall(runs: dict, trials: pd.DataFrame, refs: dict):
    """The incumbent's final val loss against wall-clock hours since the search began."""
    return _best_vs(runs, trials, refs, "wall_hours", "wall time", logx=False)


def _grid(n: int, sharey: bool = True):
    """A figure with n panels, up to 3 per row; returns (fig, flat axes)."""
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False,
                             sharey=sharey, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def learning_curves(runs: dict, trials: pd.DataFrame, refs: dict):
    """Val loss per epoch of every trial, one panel per method (first seed's search in
    colour, others grey); x marks where a trial ended before max_t (stopped at a rung or
    given a low Hyperband budget), o where it failed."""
    searches = _searches(runs)
    methods = list(searches)
    fig, axes = _grid(len(methods))
    values = []  # every epoch's loss, for the shared y range
    for ax, m in zip(axes, methods):
        cut, failed, losses = [], [], []
        for k, s in searches[m].items():
            first = k == next(iter(searches[m]))
            status = trials[(trials["method"] == m) & (trials["seed"] == k)] \
                .set_index(JOB_ID)["status"]
            lines = []
            for jid, c in s.curves.groupby(JOB_ID, sort=True):
                c = c.sort_values(EPOCH)
                xy = c[[EPOCH, VAL_LOSS]].to_numpy(float)  # (epochs, 2)
                lines.append(xy)
                losses.append(xy[:, 1])
                st = status.get(jid, OK)
                if st == FAILED:
                    failed.append(xy[-1])
                elif st == STOPPED or (st == OK and xy[-1, 0] < s.max_t):
                    cut.append(xy[-1])  # stopped at a rung, or given a low Hyperband budget
            # One collection per search: thousands of trials draw in a fraction of a second.
            ax.add_collection(LineCollection(lines, lw=0.8, alpha=0.7,
                                             colors=[color(m, methods) if first else "0.7"]))
        if cut:
            ax.plot(*np.array(cut).T, "x", ms=4, color="C3", ls="none")
        if failed:
            ax.plot(*np.array(failed).T, "o", ms=3, mfc="none", color="k", ls="none")
        ax.autoscale_view()
        ax.set_yscale("log")
        values.append(np.concatenate(losses) if losses else np.empty(0))
        ax.set_title(m, fontsize="medium")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if refs and np.isfinite(refs.get("default_loss", np.nan)):
            ax.axhline(refs["default_loss"], color="k", ls="--", lw=0.8)
    # Every loss in view but a diverged one (> DIVERGED x the median loss): the y axis is shared
    ylim = robust_log_limits(np.concatenate(values) if values else [], quantiles=(0.0, 1.0))
    if ylim:
        axes[0].set_ylim(*ylim)
        for ax, v in zip(axes, values):
            log_axis(ax.yaxis, *ylim)
            above = int((v > ylim[1]).sum())  # inf included
            if above:
                ax.text(0.98, 0.97, f"{above} epoch loss{'es' if above > 1 else ''} above "
                        f"{ylim[1]:.3g} (diverged)", transform=ax.transAxes, ha="right",
                        va="top", fontsize="x-small", color="C3")
    axes[0].set_ylabel("validation loss")
    fig.suptitle("learning curves (x: ended before max_t, o: failed, dashed: default)",
                 fontsize="medium")
    return fig


def budget_per_trial(runs: dict, trials: pd.DataFrame, refs: dict):
    """Histogram of epochs per trial, one panel per method: the rungs where stoppers cut."""
    methods = list(_searches(runs))
    fig, axes = _grid(len(methods))
    top = int(max(trials["epochs"].max(), 1))
    bins = np.arange(0.5, top + 1.5)
    for ax, m in zip(axes, methods):
        e = trials.loc[trials["method"] == m, "epochs"]
        ax.stairs(np.histogram(e, bins=bins)[0], bins, fill=True, color=color(m, methods))
        n_seeds = len(runs[m])
        over = f" in {n_seeds} seeds" if n_seeds > 1 else ""
        ax.set_title(f"{m} ({len(e)} trials, {int(e.sum())} epochs{over})", fontsize="medium")
        ax.set_xlabel("epochs trained")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("trials")
    return fig


def utilisation(runs: dict, trials: pd.DataFrame, refs: dict, n_bins: int = 40):
    """Fraction of workers busy training, in n_bins windows of each search's wall time."""
    fig, ax = plt.subplots(figsize=FIGSIZE, layout="constrained")
    methods = list(_searches(runs))
    factor, unit = time_unit(max(s.duration / 3600 for m in methods for s in runs[m].values()))
    for m in methods:
        for i, s in enumerate(runs[m].values()):
            u = utilisation_over_time(s.curves, s.workers, s.duration, n_bins)
            if len(u) == 0:
                continue
            edges = np.r_[u["t_lo_hours"], u["t_hi_hours"].iloc[-1]] * factor
            ax.stairs(u["utilisation"], edges, color=color(m, methods), lw=1.2,
                      label=m if i == 0 else None)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"wall time [{unit}]")
    ax.set_ylabel("worker utilisation")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def _hp_axis(v: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Map one hyperparameter column to [0, 1] (log scale if positive over > 2 decades;
    categories by sorted code) and return tick labels (min, max)."""
    num = pd.to_numeric(v, errors="coerce")
    if num.notna().all():
        x = num.to_numpy(float)
        if (x > 0).all() and x.max() / x.min() > 100:
            x = np.log10(x)
            labels = [f"{num.min():.2g}", f"{num.max():.2g}"]
        else:
            labels = [f"{num.min():.3g}", f"{num.max():.3g}"]
    else:
        cats = sorted(v.astype(str).unique())
        x = np.array([cats.index(c) for c in v.astype(str)], float)
        labels = [cats[0], cats[-1]]
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.full_like(x, 0.5), labels


def best_hyperparameters(runs: dict, trials: pd.DataFrame, refs: dict, top_k: int = TOP_K):
    """Parallel coordinates of the top_k ended trials (lowest final loss) per method, each
    hyperparameter scaled to its range among those trials; thicker line = better."""
    methods = list(_searches(runs))
    t = trials[trials["method"].isin(methods) & trials[FINAL_LOSS].notna()
               & trials["status"].isin((OK, STOPPED))]
    t = t.sort_values([FINAL_LOSS, "seed", JOB_ID], kind="mergesort")
    top = t.groupby("method", sort=False).head(top_k).reset_index(drop=True)
    hps = [c for c in hp_columns(top) if top[c].notna().all()]
    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(hps) + 1), 4.0), layout="constrained")
    if not hps or len(top) == 0:
        ax.text(0.5, 0.5, "no hyperparameter columns", ha="center", transform=ax.transAxes)
        return fig
    cols = {h: _hp_axis(top[h]) for h in hps}
    y = np.stack([cols[h][0] for h in hps], axis=1)  # (n_trials, n_hps)
    for i, r in top.iterrows():
        rank = (top["method"].iloc[: i + 1] == r["method"]).sum()  # 1 = best of its method
        ax.plot(range(len(hps)), y[i], color=color(r["method"], methods), alpha=0.8,
                lw=2.5 if rank == 1 else 0.8, label=r["method"] if rank == 1 else None)
    ax.set_xticks(range(len(hps)))
    ax.set_xticklabels([f"{h[len(HP_PREFIX):]}\n{cols[h][1][0]}..{cols[h][1][1]}" for h in hps],
                       fontsize="x-small", rotation=30, ha="right")
    ax.set_yticks([0, 1])
    ax.set_yticklabels(["min", "max"])
    ax.set_title(f"hyperparameters of the {top_k} lowest final losses per method "
                 f"(thick: incumbent)",
                 fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3, axis="x")
    return fig


def _with_references(runs: dict, trials: pd.DataFrame, refs: dict) -> dict:
    """``refs`` when it has L_ref and the targets, else those of the logs alone
    (:func:`analysis.metrics.reference_losses` without a table: no targets)."""
    refs = refs or {}
    return refs if "l_ref" in refs and "targets" in refs else \
        {**reference_losses(runs, trials), **refs}


def regret_vs_compute(runs: dict, trials: pd.DataFrame, refs: dict):
    """Median regret I(c) - L_ref over seeds (log y) vs device-hours (log x), with the 95 %
    bootstrap band of the median; targets labelled. The medians are taken at every epoch end
    of every search, where some I(c) can change: the step curves exactly, no grid."""
    refs = _with_references(runs, trials, refs)
    traces = {m: [search_trace(s, trials) for s in seeds.values()]
              for m, seeds in _searches(runs).items()}
    ends = [t["device_hours"].to_numpy(float) for ts in traces.values() for t in ts]
    grid = np.unique(np.concatenate(ends)) if ends else np.empty(0)
    curves = summary_plots.median_curves(traces, grid) if len(grid) else pd.DataFrame()
    return summary_plots.regret_vs_compute(
        curves, refs, list(traces), _title(runs, "regret of the incumbent, median over seeds"))


def critical_difference(runs: dict, trials: pd.DataFrame, refs: dict):
    """Mean ranks of the methods over seeds on final regret and on device-hours to the top
    5 % and 1 % targets, with the Nemenyi critical difference."""
    per_seed, _ = per_seed_metrics(runs, trials, _with_references(runs, trials, refs))
    return summary_plots.critical_difference(per_seed, _title(runs, "ranks over seeds"))


FIGURES = {
    "best_vs_compute": best_vs_compute,
    "best_vs_wall": best_vs_wall,
    "learning_curves": learning_curves,
    "budget_per_trial": budget_per_trial,
    "utilisation": utilisation,
    "best_hyperparameters": best_hyperparameters,
    "regret_vs_compute": regret_vs_compute,
    "critical_difference": critical_difference,
}


def surrogate_heldout(rows: pd.DataFrame, report: dict):
    """Held-out predicted vs recorded val_loss of the learning-curve surrogate, one panel
    per rung (log axes): the diagonal, the band of +-2 seed-noise standard deviations around
    it (log scale: the noise the table's replicates measured), Spearman and MAE in the title.
    ``rows``: <table>.surrogate_heldout.csv; ``report``: <table>.surrogate.json."""
    rungs = sorted(rows["epoch"].unique())
    fig, axes = plt.subplots(1, len(rungs), figsize=(3.2 * len(rungs), 3.4), squeeze=False)
    lo = float(min(rows["true"].min(), rows["pred"].min())) * 0.9
    hi = float(max(rows["true"].max(), rows["pred"].max())) * 1.1
    line = np.geomspace(lo, hi, 50)
    for ax, r in zip(axes[0], rungs):
        d = rows[rows["epoch"] == r]
        info = report.get("rungs", {}).get(str(int(r)), {})
        sd = info.get("seed_noise_log")
        if sd:
            ax.fill_between(line, line * np.exp(-2 * sd), line * np.exp(2 * sd), color="0.85",
                            lw=0, label="±2 seed-noise SD")
        ax.plot(line, line, color="k", lw=0.8)
        ax.scatter(d["true"], d["pred"], s=9, color=PALETTE[0], alpha=0.8, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        rho, mae = info.get("spearman"), info.get("mae")
        ax.set_title(f"epoch {int(r)}: Spearman {rho:.2f}, MAE {mae:.3f}" if rho is not None
                     and mae is not None else f"epoch {int(r)}", fontsize=9)
        ax.set_xlabel("recorded val_loss (held out)")
        if ax is axes[0][0]:
            ax.set_ylabel("surrogate val_loss")
            if sd:
                ax.legend(fontsize=7, loc="upper left")
    verdict = "accepted" if report.get("accepted") else "not accepted"
    fig.suptitle(f"learning-curve surrogate, {report.get('folds', '?')}-fold held out, "
                 f"{report.get('n_configs', '?')} configurations: {verdict}", fontsize=10)
    fig.tight_layout()
    return fig
