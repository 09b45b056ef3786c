"""Many-seed replayed searches -> medians, ranks and speedups over compute.

    python -m analysis.replay --scale small
    python -m analysis.replay --scale small --results results/small/replay \
        --out paper_figures/small/replay --min-seeds 20

Reads results/<scale>/replay/<method>/seed<k>/ (the live log layout, metadata "backend":
"replay", simulated times) and writes to paper_figures/<scale>/replay/:
    best_vs_compute.{pdf,png}  median best-so-far val loss L*(c) over seeds vs device-hours,
                               95 % bootstrap bands; the paper's methods drawn thick
    rank_vs_compute.{pdf,png}  average rank of each method over compute
    summary.{md,tex,csv}       one row per method (definitions below)
    ranks.{md,tex,csv}         average rank at RANK_FRACTIONS of the budget
    per_seed.csv               analysis.metrics.per_seed_metrics against this target
    curves.csv                 median, band and average rank on the compute grid
    references.json            target, default loss, budget and the speedup goal as data

Definitions (compute c in device-hours = sum of epoch_seconds x devices / 3600):
    grid     GRID_POINTS log-spaced points from the first epoch of any search to the budget
             B = the largest total compute of any search; after its last epoch a search
             holds its final best loss, so at 100 % of B every search is final.
    target   random search's median final best loss over seeds (the upper of the two middle
             values for an even number of seeds: random then reaches it in at least half of
             its seeds and its median compute to target is finite).
    c_target per seed, the compute at which L*(c) first <= target; inf if never.
    speedup  median c_target(random) / median c_target(method), with a bootstrap interval
             resampling both methods' seeds; 0 when the method's median seed never reaches
             the target. Goal: asha_bo's speedup >= 4 (<= 1/4 of random's compute).
    rank     at each grid point and seed, the methods ranked by L*(c) (1 = best, ties share
             the mean rank), averaged over the seeds every method has.
The default configuration is no competitor: it gives the reference loss for the improvement
column only: --default-loss if given, else the replayed "default" run (median over its
seeds), else configuration 0 of the learning-curve table next to the replay folder
(results/<scale>/lctable.csv). Exit 2 with a one-line message when logs are missing or
partial.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import figures, tables  # noqa: E402
from analysis.logs import (  # noqa: E402
    CURVES_CSV,
    DEFAULT_METHOD,
    LCTABLE_CSV,
    MD_BACKEND,
    MD_COMPLETE,
    MD_STATUS,
    METADATA_JSON,
    REPLAY_DIR,
    RESULTS_CSV,
    SEED_DIR,
    MissingLogsError,
    load_scale,
    table_default_loss,
    tidy,
    warnings_to_stderr,
)
from analysis.metrics import (  # noqa: E402
    best_on_grid,
    best_so_far,
    bootstrap_median_band,
    bootstrap_ratio_of_medians,
    mean_rank,
    per_seed_metrics,
    summarize,
)
from mlpf.paths import FIGURES_DIR, RESULTS_DIR  # noqa: E402

REFERENCE = "random"  # the target and every speedup are relative to random search
PAPER_METHODS = ("random", "hyperband", "asha", "asha_bo")  # drawn thick
EXPECTED = (DEFAULT_METHOD, "random", "hyperband", "asha", "asha_bo", "async_hyperband",
            "bohb", "bo")  # Optuna peers (optuna_*) are optional
PEER_PREFIX = "optuna_"
MIN_SEEDS = 20
GOAL_METHOD, GOAL_SPEEDUP = "asha_bo", 4.0  # the goal: <= 1/4 of random's compute
GRID_POINTS = 200
RANK_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)  # of the budget, in ranks.md
SUMMARY_FRACTIONS = (0.25, 0.5, 1.0)  # in summary.md
BACKEND = "replay"
MAKE_HINT = "make replay SCALE={scale}"


class ReplayLogsError(MissingLogsError):
    """Replay logs missing or partial; the message names what is missing."""


# ---- checks -------------------------------------------------------------------------------
def check_logs(root: Path, required=EXPECTED, min_seeds: int = MIN_SEEDS,
               max_listed: int = 3) -> None:
    """Raise ReplayLogsError unless ``root`` holds every ``required`` method with at least
    ``min_seeds`` complete replay searches (the default configuration: at least one), every
    seed folder complete (results.csv, learning_curves.csv, metadata.json with status
    complete and backend replay). Other methods found (Optuna peers) must meet the same.
    The message names, per method, up to ``max_listed`` bad seed folders."""
    root = Path(root)
    mdirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    found = {p.name: sorted(s for s in p.iterdir() if s.is_dir() and SEED_DIR.match(s.name))
             for p in mdirs}
    found = {m: s for m, s in found.items() if s}
    if not any(m != DEFAULT_METHOD for m in found):
        raise ReplayLogsError(f"no replay logs under {root}/")
    problems = []
    missing = [m for m in required if m not in found]
    if missing:
        problems.append(f"no {', '.join(missing)}")
    for m, sdirs in found.items():
        bad = []
        for sd in sdirs:
            lacks = [f for f in (RESULTS_CSV, CURVES_CSV, METADATA_JSON) if not (sd / f).exists()]
            if lacks:
                bad.append(f"{sd.name} lacks {', '.join(lacks)}")
                continue
            try:
                md = json.loads((sd / METADATA_JSON).read_text())
            except json.JSONDecodeError:
                bad.append(f"{sd.name} has an unreadable {METADATA_JSON}")
                continue
            if md.get(MD_BACKEND) != BACKEND:
                bad.append(f"{sd.name} is not a replay log ({MD_BACKEND}={md.get(MD_BACKEND)!r})")
            elif md.get(MD_STATUS) != MD_COMPLETE:
                bad.append(f"{sd.name} status {md.get(MD_STATUS)!r}")
        need = 1 if m == DEFAULT_METHOD else min_seeds
        complete = len(sdirs) - len(bad)
        parts = [f"{complete} of {need} seeds complete"] if complete < need else []
        parts += bad[:max_listed] + ([f"{len(bad) - max_listed} more"] if
                                     len(bad) > max_listed else [])
        if parts:
            problems.append(f"{m}: {', '.join(parts)}")
    if problems:
        raise ReplayLogsError(f"replay logs under {root}/ are partial: {'; '.join(problems)}")


# ---- metrics ------------------------------------------------------------------------------
def compute_grid(first: float, budget: float, n: int = GRID_POINTS) -> np.ndarray:
    """n log-spaced device-hours from ``first`` to ``budget`` (both included)."""
    first = first if first > 0 else budget * 1e-3
    return np.geomspace(first, budget, n) if budget > first else np.array([budget])


def reference_target(final_best) -> float:
    """Random search's median final best loss, the upper middle value for an even count."""
    v = np.asarray(final_best, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.quantile(v, 0.5, method="higher")) if len(v) else math.nan


def ranks_on(on_grid: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, list[int]]:
    """Average rank (methods x grid points) over the seeds every method has, and those seeds."""
    common = sorted(set.intersection(*(set(v.index) for v in on_grid.values())))
    v = np.stack([on_grid[m].loc[common].to_numpy() for m in on_grid])  # (M, S, G)
    return pd.DataFrame(mean_rank(v), index=list(on_grid)), common


def speedups(per_seed: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """Per method: fraction of seeds reaching the target and the speedup over random
    search (median c_target ratio) with its bootstrap interval."""
    c = {m: per_seed.loc[per_seed["method"] == m, "dh_to_target"].to_numpy(float)
         for m in methods}
    rows = []
    for m in methods:
        r, lo, hi = bootstrap_ratio_of_medians(c[REFERENCE], c[m]) if REFERENCE in c \
            else (math.nan,) * 3
        rows.append({"method": m, "reached": float(np.mean(np.isfinite(c[m]))),
                     "speedup": r, "speedup_lo": lo, "speedup_hi": hi})
    return pd.DataFrame(rows)


def analyse(runs: dict, default_loss: float | None = None, n_grid: int = GRID_POINTS,
            default_source: str = "") -> dict:
    """Everything the outputs show, from the loaded replay searches ({method: {seed:
    Search}}). ``default_loss`` replaces the replayed default run's loss (``default_source``
    says where it came from). Returns a dict of tables and references."""
    methods = [m for m in runs if m != DEFAULT_METHOD]
    if REFERENCE not in methods:
        raise ReplayLogsError(f"no {REFERENCE} search: the target is defined by it")
    bsf = {(m, k): best_so_far(s.curves) for m in methods for k, s in runs[m].items()}
    totals = [float(b["device_hours"].iloc[-1]) for b in bsf.values() if len(b)]
    firsts = [float(b["device_hours"].iloc[0]) for b in bsf.values() if len(b)]
    budget = max(totals)
    grid = compute_grid(min(firsts), budget, n_grid)
    points = np.r_[grid, budget * np.asarray(RANK_FRACTIONS)]  # grid, then the fractions
    on = {m: pd.DataFrame({k: best_on_grid(bsf[(m, k)], points) for k in runs[m]}).T
          for m in methods}  # seeds x points
    ranks, common = ranks_on(on)
    g = len(grid)

    target = reference_target([bsf[(REFERENCE, k)]["best_loss"].min() for k in runs[REFERENCE]])
    trials, _ = tidy(runs)
    per_seed, refs = per_seed_metrics(runs, trials, target=target, default_loss=default_loss)
    summary = summarize(per_seed).merge(speedups(per_seed, methods), on="method")
    for f in SUMMARY_FRACTIONS:
        summary[f"rank_{f:g}"] = summary["method"].map(
            ranks.iloc[:, g + RANK_FRACTIONS.index(f)])

    curves = []
    for m in methods:
        med, lo, hi = bootstrap_median_band(on[m].iloc[:, :g].to_numpy())
        curves.append(pd.DataFrame({"method": m, "device_hours": grid, "median_best": med,
                                    "lo": lo, "hi": hi, "mean_rank": ranks.loc[m].iloc[:g]}))
    rank_table = pd.DataFrame({"method": methods, **{
        f"rank_{f:g}": ranks.iloc[:, g + i].to_numpy() for i, f in enumerate(RANK_FRACTIONS)}})

    goal = summary.set_index("method").reindex([GOAL_METHOD]).iloc[0]
    refs.update({
        "target": target, "target_rule": f"median final best loss of {REFERENCE} (upper middle)",
        "budget_device_hours": budget, "rank_seeds": len(common),
        "default_source": default_source if default_loss is not None else
        (f"replayed {DEFAULT_METHOD} run" if DEFAULT_METHOD in runs else ""),
        "goal": {"method": GOAL_METHOD, "max_compute_fraction": 1.0 / GOAL_SPEEDUP,
                 "speedup": goal["speedup"], "speedup_lo": goal["speedup_lo"],
                 "speedup_hi": goal["speedup_hi"], "reached": goal["reached"],
                 "met": bool(goal["speedup"] >= GOAL_SPEEDUP),
                 "met_at_lower_bound": bool(goal["speedup_lo"] >= GOAL_SPEEDUP)},
    })
    return {"summary": summary, "per_seed": per_seed, "curves": pd.concat(curves),
            "ranks": rank_table, "refs": refs, "methods": methods}


# ---- tables -------------------------------------------------------------------------------
SUMMARY_HEADERS = ("method", "seeds", "final best val loss", "improvement %", "device-h",
                   "device-h to target", "reached", f"speedup vs {REFERENCE}",
                   f"<= 1/{GOAL_SPEEDUP:g} of {REFERENCE}'s compute",
                   *(f"rank @{100 * f:g} %" for f in SUMMARY_FRACTIONS))


def _yes_no(x: float) -> str:
    return "" if math.isnan(x) else ("yes" if x >= GOAL_SPEEDUP else "no")


def _ratio(x: float) -> str:
    """A speedup: inf (random's median seed never reached the target) is not 'not reached'."""
    return "inf" if x == math.inf else tables.fmt(x, 2)


def _ratio_ci(r: pd.Series) -> str:
    s, lo, hi = _ratio(r["speedup"]), r["speedup_lo"], r["speedup_hi"]
    return s + (f" [{_ratio(lo)}, {_ratio(hi)}]" if s and not (math.isnan(lo) or
                                                               math.isnan(hi)) else "")


def summary_rows(summary: pd.DataFrame) -> list[list[str]]:
    return [[r["method"], str(r["n_seeds"]), tables.fmt_ci(r, "best_loss", 4),
             tables.fmt(r["improvement_pct"], 1), tables.fmt(r["device_hours"], 3, "g"),
             tables.fmt_ci(r, "dh_to_target", 3, "g"), tables.fmt(r["reached"], 2),
             _ratio_ci(r), _yes_no(r["speedup"]),
             *(tables.fmt(r[f"rank_{f:g}"], 2) for f in SUMMARY_FRACTIONS)]
            for _, r in summary.iterrows()]


def _goal_line(goal: dict) -> str:
    m = goal["method"]
    if goal["speedup"] is None or math.isnan(goal["speedup"]):
        return f"Goal ({m} reaches the target with <= 1/{GOAL_SPEEDUP:g} of {REFERENCE}'s " \
               f"compute): no {m} replay logs."
    verdict = "met" if goal["met"] else "not met"
    bound = "also" if goal["met_at_lower_bound"] else "not"
    return (f"Goal ({m} reaches the target with <= 1/{GOAL_SPEEDUP:g} of {REFERENCE}'s "
            f"compute, i.e. speedup >= {GOAL_SPEEDUP:g}): {verdict}; speedup "
            f"{_ratio(goal['speedup'])} [{_ratio(goal['speedup_lo'])}, "
            f"{_ratio(goal['speedup_hi'])}], {bound} at the interval's lower bound; "
            f"{tables.fmt(goal['reached'], 2)} of its seeds reach the target.")


def summary_notes(refs: dict, scale: str) -> list[str]:
    lines = [f"Scale {scale}, replayed searches (simulated time). Medians over seeds [95 % "
             f"bootstrap interval]. Compute in device-hours (epoch seconds x devices); "
             f"budget B = {refs['budget_device_hours']:.4g} device-h, the largest any search "
             f"spent.",
             f"Target loss {refs['target']:.4f} = {refs['target_rule']}; device-h to target "
             f"per seed (not reached = never); reached = fraction of seeds reaching it; "
             f"speedup = median device-h to target of {REFERENCE} / the method's "
             f"(0: its median seed never reaches it).",
             f"Rank: methods ranked by best loss so far per seed at a fraction of B, averaged "
             f"over {refs['rank_seeds']} common seeds (1 = best)."]
    if math.isnan(refs["default_loss"]):
        lines.append("No replayed default configuration, no --default-loss and no default in "
                     "a learning-curve table: improvement column empty.")
    else:
        lines.append(f"Improvement over the default configuration's final validation loss "
                     f"{refs['default_loss']:.4f} ({refs['default_source']}), median over "
                     f"seeds.")
    if refs.get("trainables"):
        lines.append(f"Trained: {refs['trainables']} (not MLPF results).")
    lines.append(_goal_line(refs["goal"]))
    return lines


def write_tables(res: dict, scale: str, out: Path) -> list[Path]:
    notes = summary_notes(res["refs"], scale)
    tables.write_table(list(SUMMARY_HEADERS), summary_rows(res["summary"]), out, "summary",
                       notes)
    res["summary"].to_csv(out / "summary.csv", index=False, float_format="%.6g")
    r = res["ranks"]
    cols = [f"rank_{f:g}" for f in RANK_FRACTIONS]
    tables.write_table(["method", *(f"rank @{100 * f:g} %" for f in RANK_FRACTIONS)],
                       [[row["method"], *(tables.fmt(row[c], 2) for c in cols)]
                        for _, row in r.iterrows()], out, "ranks", notes[2:3])
    r.to_csv(out / "ranks.csv", index=False, float_format="%.6g")
    res["per_seed"].to_csv(out / "per_seed.csv", index=False, float_format="%.6g")
    res["curves"].to_csv(out / "curves.csv", index=False, float_format="%.6g")
    (out / "references.json").write_text(json.dumps(_jsonable(res["refs"]), indent=1,
                                                    sort_keys=True) + "\n")
    return [out / f"{n}.{e}" for n in ("summary", "ranks") for e in ("md", "tex", "csv")] + \
        [out / n for n in ("per_seed.csv", "curves.csv", "references.json")]


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, float | np.floating):
        x = float(x)
        return None if math.isnan(x) else ("inf" if math.isinf(x) else round(x, 10))
    return x.item() if isinstance(x, np.generic) else x


# ---- figures ------------------------------------------------------------------------------
def _style(methods: list[str]) -> dict[str, dict]:
    """Paper methods first colours, thick; other DeepHyper methods thin; peers dashed."""
    order = [m for m in PAPER_METHODS if m in methods] + \
        [m for m in methods if m not in PAPER_METHODS]
    cmap = plt.get_cmap("tab10" if len(order) <= 10 else "tab20").colors
    return {m: {"color": cmap[i % len(cmap)], "lw": 2.2 if m in PAPER_METHODS else 1.0,
                "ls": "--" if m.startswith(PEER_PREFIX) else "-",
                "zorder": 3 if m in PAPER_METHODS else 2,
                "band": 0.18 if m in PAPER_METHODS else 0.06} for i, m in enumerate(order)}


def best_vs_compute(res: dict):
    """Median best-so-far val loss over seeds vs device-hours (log x), 95 % bands."""
    fig, ax = plt.subplots(figsize=figures.FIGSIZE, layout="constrained")
    style = _style(res["methods"])
    for m, c in res["curves"].groupby("method", sort=False):
        s = style[m]
        y = c["median_best"].where(np.isfinite(c["median_best"]))
        lo, hi = (c[k].where(np.isfinite(c[k])) for k in ("lo", "hi"))
        ax.fill_between(c["device_hours"], lo, hi, color=s["color"], alpha=s["band"], lw=0,
                        step="post")
        ax.step(c["device_hours"], y, where="post", color=s["color"], lw=s["lw"], ls=s["ls"],
                zorder=s["zorder"], label=m)
    refs = res["refs"]
    ax.axhline(refs["target"], color="0.4", ls=":", lw=1, label="target")
    if not math.isnan(refs["default_loss"]):
        ax.axhline(refs["default_loss"], color="k", ls="--", lw=1, label="default")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute spent [device-hours]")
    ax.set_ylabel("median best validation loss so far")
    ax.legend(fontsize="x-small", ncol=2)
    ax.grid(alpha=0.3, which="both")
    return fig


def rank_vs_compute(res: dict):
    """Average rank of every method over device-hours (log x); 1 = best."""
    fig, ax = plt.subplots(figsize=figures.FIGSIZE, layout="constrained")
    style = _style(res["methods"])
    for m, c in res["curves"].groupby("method", sort=False):
        s = style[m]
        ax.step(c["device_hours"], c["mean_rank"], where="post", color=s["color"], lw=s["lw"],
                ls=s["ls"], zorder=s["zorder"], label=m)
    for f in SUMMARY_FRACTIONS:  # where summary.md quotes the ranks
        ax.axvline(f * res["refs"]["budget_device_hours"], color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_ylim(len(res["methods"]) + 0.5, 0.5)  # best rank on top
    ax.set_xlabel("compute spent [device-hours]")
    ax.set_ylabel(f"average rank over {res['refs']['rank_seeds']} seeds")
    ax.legend(fontsize="x-small", ncol=2)
    ax.grid(alpha=0.3, which="both")
    return fig


FIGURES = {"best_vs_compute": best_vs_compute, "rank_vs_compute": rank_vs_compute}


# ---- entry point --------------------------------------------------------------------------
def build(scale: str, results: Path | None = None, out: Path | None = None,
          required=EXPECTED, min_seeds: int = MIN_SEEDS,
          default_loss: float | None = None) -> list[Path]:
    """Replay logs under ``results`` (default results/<scale>/replay) -> files under ``out``
    (default paper_figures/<scale>/replay); returns the files written. Raises
    ReplayLogsError when logs are missing or partial."""
    results = Path(results) if results else RESULTS_DIR / scale / REPLAY_DIR
    out = Path(out) if out else FIGURES_DIR / scale / REPLAY_DIR
    check_logs(results, required, min_seeds)
    runs = load_scale(results)
    source = "--default-loss"
    if default_loss is None and DEFAULT_METHOD not in runs:
        source = f"configuration 0 of {results.parent / LCTABLE_CSV}"
        default_loss = table_default_loss(results.parent / LCTABLE_CSV)
    res = analyse(runs, default_loss, default_source=source)
    out.mkdir(parents=True, exist_ok=True)
    written = write_tables(res, scale, out)
    for name, make in FIGURES.items():
        written += figures.save(make(res), out, name)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", required=True, help="smoke | small | paper")
    ap.add_argument("--results", type=Path, default=None,
                    help="replay logs (default results/<scale>/replay)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default paper_figures/<scale>/replay)")
    ap.add_argument("--min-seeds", type=int, default=MIN_SEEDS,
                    help="complete seeds each method needs (default %(default)s)")
    ap.add_argument("--methods", default=",".join(EXPECTED),
                    help="comma-separated methods that must be present (default %(default)s)")
    ap.add_argument("--default-loss", type=float, default=None,
                    help="reference loss of the default configuration when there is no "
                         "replayed default run")
    args = ap.parse_args(argv)
    if args.min_seeds < 1:
        print(f"error: --min-seeds must be >= 1, got {args.min_seeds}", file=sys.stderr)
        return 2
    required = tuple(m for m in args.methods.split(",") if m)
    with warnings_to_stderr():
        try:
            written = build(args.scale, args.results, args.out, required, args.min_seeds,
                            args.default_loss)
        except ReplayLogsError as e:
            print(f"error: {e} (run `{MAKE_HINT.format(scale=args.scale)}`)", file=sys.stderr)
            return 2
    print(f"wrote {len(written)} files to {written[0].parent}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
