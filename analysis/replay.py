"""Many-seed replayed searches -> medians, ranks and speedups over compute.

    python -m analysis.replay --scale small
    python -m analysis.replay --scale small --results results/small/replay \
        --out paper_figures/small/replay --min-seeds 20
    python -m analysis.replay --scale small --results results/small/replay_surrogate \
        --out paper_figures/small/replay_surrogate --compare paper_figures/small/replay

Reads results/<scale>/replay/<method>/seed<k>/ (the live log layout, metadata "backend":
"replay", simulated times) and writes to paper_figures/<scale>/replay/:
    best_vs_compute.{pdf,png}  median incumbent loss I(c) over seeds vs device-hours, 95 %
                               bootstrap bands; the paper's methods drawn thick
    rank_vs_compute.{pdf,png}  average rank of each method over compute
    regret_vs_compute.{pdf,png}  median regret I(c) - L_ref (log y) vs device-hours, 95 %
                               bootstrap bands, per group of methods, targets labelled
    critical_difference.{pdf,png}  mean ranks over seeds (Friedman, Nemenyi critical
                               difference) on final regret and device-h to the top 5 / 1 %
    summary.{md,tex,csv}       one row per method (analysis.tables: final loss, regret,
    fractions.{md,tex}         improvement; regret and improvement at 1/8 .. 1 of the budget;
    targets.{md,tex}           compute to the top 1 / 5 / 10 % targets, speedup vs random)
    ranks.{md,tex,csv}         average rank at RANK_FRACTIONS of the grid's end
    head_to_head.{md,tex}      each method's speedup over each of the paper's four methods to
                               the top 5 % target, paired by seed, with intervals and the
                               verdict on the paper's claim 2 (asha_bo vs the other three)
    head_to_head_top1.{md,tex} the same to the top 1 % target (the hardest the table gives)
    per_seed.csv               analysis.metrics.per_seed_metrics
    aggregate.{md,csv}         IQM and probability of improvement over seeds, as rliable
    performance_profile.{pdf,png}  reports them (analysis.aggregate; exploratory)
    regret_area.csv            analysis.metrics.regret_areas (claim 2's secondary endpoint)
    curves.csv                 median, band and average rank on the compute grid
    references.json            L_ref, targets, default loss, grid end and the speedup goal
    surrogate_heldout.{pdf,png}  the surrogate's held-out predicted vs recorded val_loss per
                               rung with the seed-noise band (when python -m
                               experiments.surrogate has validated it on the table)
    lookups.{md,tex}           with --compare <another replay's output folder>: do the two
                               replays (nearest-row lookup, surrogate) rank the methods alike

The metrics (incumbent by final loss, L_ref, regret, budget fractions, quantile targets,
paired speedups) are those of analysis.metrics, the same as for live searches; L_ref and the
targets come from the learning-curve table next to the replay folder
(results/<scale>/lctable.csv), or for replays on a surrogate from the sample of the
surrogate's own configurations the campaign wrote into the replay folder (reference.csv).
For the figures and ranks (compute c in device-hours):
    grid     GRID_POINTS log-spaced points from the first epoch of any search to C = the
             largest total compute of any search; after its last epoch a search holds its
             final incumbent, so at 100 % of C every search is final.
    rank     at each grid point and seed, the methods ranked by I(c) (1 = best, ties share the
             mean rank; no ended trial yet = worst), averaged over the seeds every method has.
    goal     asha_bo's speedup to the top GOAL_QUANTILE target >= 4 (<= 1/4 of random's
             compute), at the point estimate and at the interval's lower bound.
The default configuration is no competitor: it gives L_default for the improvement columns
only: --default-loss if given, else the replayed "default" run (median over its seeds), else
configuration 0 of the learning-curve table. Exit 2 with a one-line message when logs are
missing or partial, or were made on another version of the table (the sha256 in their
metadata).
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

from analysis import aggregate, figures, summary_plots, tables  # noqa: E402
from analysis.logs import (  # noqa: E402
    DEFAULT_METHOD,
    HELDOUT_COLUMNS,
    LCTABLE_CSV,
    LEARNING_CURVES_CSV,
    MD_BACKEND,
    MD_COMPLETE,
    MD_STATUS,
    METADATA_JSON,
    REFERENCE_CSV,
    REPLAY_DIR,
    RESULTS_CSV,
    SEED_DIR,
    LogError,
    MissingLogsError,
    SurrogateReport,
    load_scale,
    loss_names,
    read_checked_csv,
    read_checked_json,
    read_json_object,
    read_metadata,
    table_default_loss,
    table_for,
    tidy,
    warn,
    warnings_to_stderr,
)
from analysis.metrics import (  # noqa: E402
    REFERENCE,
    bootstrap_median_band,
    compute_to_target,
    incumbent_on_grid,
    mean_rank,
    per_seed_metrics,
    reference_losses,
    regret_areas,
    search_trace,
    speedups,
    summarize,
    top_name,
)
from analysis.summary_plots import (  # noqa: E402
    PAPER_METHODS,
    label_lines,
    log_axis,
    method_groups,
    styles,
)
from mlpf.paths import FIGURES_DIR, RESULTS_DIR  # noqa: E402
from mlpf.scales import SCALES

EXPECTED = (DEFAULT_METHOD, "random", "hyperband", "asha", "asha_bo", "async_hyperband",
            "bohb", "bo")  # asha_deephyper and Optuna peers (optuna_*) are optional
MIN_SEEDS = 20
GOAL_METHOD, GOAL_SPEEDUP = "asha_bo", 4.0  # the goal: <= 1/4 of random's compute
GOAL_QUANTILE = 0.05  # ... to reach the top 5 % target
HEAD_TO_HEAD = {"head_to_head": GOAL_QUANTILE, "head_to_head_top1": 0.01}  # file -> target
GRID_POINTS = 200
RANK_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)  # of the grid's end C, in ranks.md
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
            lacks = [f for f in (RESULTS_CSV, LEARNING_CURVES_CSV,
                                        METADATA_JSON) if not (sd / f).exists()]
            if lacks:
                bad.append(f"{sd.name} lacks {', '.join(lacks)}")
                continue
            try:  # its keys are reported when the searches are loaded
                md = read_metadata(sd / METADATA_JSON, quiet=True)
            except LogError:
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


def ranks_on(on_grid: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, list[int]]:
    """Average rank (methods x grid points) over the seeds every method has, and those seeds."""
    common = sorted(set.intersection(*(set(v.index) for v in on_grid.values())))
    v = np.stack([on_grid[m].loc[common].to_numpy() for m in on_grid])  # (M, S, G)
    return pd.DataFrame(mean_rank(v), index=list(on_grid)), common


def analyse(runs: dict, default_loss: float | None = None, n_grid: int = GRID_POINTS,
            default_source: str = "", table: pd.Series | None = None,
            table_name: str = "lctable.csv") -> dict:
    """Everything the outputs show, from the loaded replay searches ({method: {seed:
    SearchLogs}}). ``default_loss`` replaces the replayed default run's loss (``default_source``
    says where it came from); ``table``: the learning-curve table's final losses
    (:func:`analysis.logs.table_final_losses`) for L_ref and the targets. Returns a dict of
    tables and references."""
    methods = [m for m in runs if m != DEFAULT_METHOD]
    if REFERENCE not in methods:
        raise ReplayLogsError(f"no {REFERENCE} search: speedups are relative to it")
    trials, _ = tidy(runs)
    trace = {(m, k): search_trace(s, trials) for m in methods for k, s in runs[m].items()}
    totals = [float(b["device_hours"].iloc[-1]) for b in trace.values() if len(b)]
    firsts = [float(b["device_hours"].iloc[0]) for b in trace.values() if len(b)]
    end = max(totals)
    grid = compute_grid(min(firsts), end, n_grid)
    points = np.r_[grid, end * np.asarray(RANK_FRACTIONS)]  # grid, then the fractions
    on = {m: pd.DataFrame({k: incumbent_on_grid(trace[(m, k)], points) for k in runs[m]}).T
          for m in methods}  # seeds x points
    ranks, common = ranks_on(on)
    g = len(grid)

    refs = reference_losses(runs, trials, table, table_name=table_name)
    per_seed, refs = per_seed_metrics(runs, trials, refs, default_loss=default_loss)
    # real seconds of the decisions differ from one run of the same replay to the next: kept
    # in each search's metadata.json, not in the (tracked, reproducible) tables
    per_seed = per_seed.drop(columns=["decision_ms"], errors="ignore")
    summary = summarize(per_seed)

    curves = []
    for m in methods:
        med, lo, hi = bootstrap_median_band(on[m].iloc[:, :g].to_numpy())
        curves.append(pd.DataFrame({"method": m, "device_hours": grid,
                                    "median_incumbent": med, "lo": lo, "hi": hi,
                                    "mean_rank": ranks.loc[m].iloc[:g]}))
    rank_table = pd.DataFrame({"method": methods, **{
        f"rank_{f:g}": ranks.iloc[:, g + i].to_numpy() for i, f in enumerate(RANK_FRACTIONS)}})

    sp = f"speedup_{top_name(GOAL_QUANTILE)}"
    goal = summary.set_index("method").reindex([GOAL_METHOD]).iloc[0]
    reached = goal.get(f"reached_{top_name(GOAL_QUANTILE)}", math.nan)
    refs.update({
        "grid_end_device_hours": end, "rank_seeds": len(common),
        "default_source": default_source if default_loss is not None else
        (f"replayed {DEFAULT_METHOD} run, median over its seeds" if DEFAULT_METHOD in runs
         else ""),
        "goal": {"method": GOAL_METHOD, "max_compute_fraction": 1.0 / GOAL_SPEEDUP,
                 "target_quantile": GOAL_QUANTILE,
                 "speedup": goal.get(sp, math.nan), "speedup_lo": goal.get(sp + "_lo", math.nan),
                 "speedup_hi": goal.get(sp + "_hi", math.nan),
                 "lower_bound_only": goal.get(sp + "_bound", False) in (True,),  # NaN: no row
                 "reached": reached,
                 "met": bool(goal.get(sp, math.nan) >= GOAL_SPEEDUP),
                 "met_at_lower_bound": bool(goal.get(sp + "_lo", math.nan) >= GOAL_SPEEDUP)},
    })
    return {"summary": summary, "per_seed": per_seed, "curves": pd.concat(curves),
            "ranks": rank_table, "refs": refs, "methods": methods,
            "regret_area": regret_areas(runs, trials, refs, traces=trace)}


# ---- tables -------------------------------------------------------------------------------
def _goal_line(goal: dict) -> str:
    m, q = goal["method"], f"top {100 * goal['target_quantile']:g} %"
    head = (f"Goal ({m} reaches the {q} target with <= 1/{GOAL_SPEEDUP:g} of {REFERENCE}'s "
            f"compute, i.e. speedup >= {GOAL_SPEEDUP:g})")
    if goal["speedup"] is None or math.isnan(goal["speedup"]):
        return f"{head}: no {m} replay logs or no target."
    verdict = "met" if goal["met"] else "not met"
    bound = "also" if goal["met_at_lower_bound"] else "not"
    f = tables.fmt_speedup
    return (f"{head}: {verdict}; speedup {'>' if goal['lower_bound_only'] else ''}"
            f"{f(goal['speedup'])} [{f(goal['speedup_lo'])}, {f(goal['speedup_hi'])}], "
            f"{bound} at the interval's lower bound; {tables.fmt(goal['reached'], 2)} of its "
            f"seeds reach the target.")


def head_to_head(per_seed: pd.DataFrame, quantile: float = GOAL_QUANTILE) -> pd.DataFrame:
    """Each method's speedup over each of the paper's methods to the top ``quantile`` target
    (:func:`analysis.metrics.speedups` with that method as the reference, paired by seed):
    rows = methods, one group of columns ``<ref>``, ``<ref>_lo``, ``<ref>_hi``, ``<ref>_bound``
    per paper method present."""
    name = f"speedup_{top_name(quantile)}"
    refs = [m for m in PAPER_METHODS if m in set(per_seed["method"])]
    out = pd.DataFrame({"method": list(dict.fromkeys(per_seed["method"]))})
    for ref in refs:
        sp = speedups(per_seed, reference=ref).set_index("method")
        for suffix in ("", "_lo", "_hi", "_bound"):
            out[ref + suffix] = out["method"].map(sp[name + suffix])
    return out


def _verdict(lo: float, hi: float, bound: bool = False) -> str:
    """faster / slower where the interval excludes 1 (a lower bound never says slower)."""
    if lo > 1:
        return "faster"
    if hi < 1 and not bound:
        return "slower"
    return "cannot tell"


def head_to_head_notes(h2h: pd.DataFrame, quantile: float = GOAL_QUANTILE) -> list[str]:
    q = f"top {100 * quantile:g} %"
    notes = [f"Speedup of the row's method over the column's to the {q} target: median over "
             f"seeds of the column's device-h to the target / the row's, paired by seed, [95 % "
             "paired bootstrap interval]; > 1: the row's method gets there with less compute "
             "(faster, where the whole interval is above 1; slower, below 1; otherwise the "
             "seeds cannot tell). never: the row's median seed never reaches it; >x: a lower "
             "bound (the column's method never reached it in some seeds)."]
    g = h2h.set_index("method")
    if GOAL_METHOD in g.index:
        parts = []
        for ref in (m for m in PAPER_METHODS if m != GOAL_METHOD and m in g.columns):
            r = g.loc[GOAL_METHOD]
            flag = r[ref + "_bound"]
            bound = isinstance(flag, (bool, np.bool_)) and bool(flag) and r[ref] != 0
            parts.append(f"vs {ref} {'>' if bound else ''}{tables.fmt_speedup(r[ref])} "
                         f"[{tables.fmt_speedup(r[ref + '_lo'])}, "
                         f"{tables.fmt_speedup(r[ref + '_hi'])}]: "
                         f"{_verdict(r[ref + '_lo'], r[ref + '_hi'], bound)}")
        if parts:
            notes.append(f"The paper's claim 2 ({GOAL_METHOD} gives the most per device-hour) "
                         f"head to head, to the {q} target: " + "; ".join(parts) + ".")
    return notes


def rank_notes(refs: dict) -> list[str]:
    return [f"Rank @x %: methods ranked by their incumbent's loss after x % of C = "
            f"{refs['grid_end_device_hours']:.4g} device-h (the largest compute of any "
            f"search), per seed, averaged over {refs['rank_seeds']} common seeds (1 = best; "
            f"no ended trial yet = worst)."]


def write_tables(res: dict, scale: str, out: Path) -> list[Path]:
    written = tables.write_summary(res["summary"], res["refs"], scale, out,
                                   what=", replayed searches (simulated time)",
                                   target_notes=[_goal_line(res["refs"]["goal"])])
    r = res["ranks"]
    cols = [f"rank_{f:g}" for f in RANK_FRACTIONS]
    tables.write_table(["method", *(f"rank @{100 * f:g} %" for f in RANK_FRACTIONS)],
                       [[row["method"], *(tables.fmt(row[c], 2) for c in cols)]
                        for _, row in r.iterrows()], out, "ranks", rank_notes(res["refs"]))
    tables.write_csv(r, out / "ranks.csv")
    for name, q in HEAD_TO_HEAD.items():
        h2h = head_to_head(res["per_seed"], q)
        ref_cols = [c for c in h2h.columns if c in PAPER_METHODS]
        tables.write_table(["method", *(f"vs {c}" for c in ref_cols)],
                           [[row["method"], *(tables.speedup_cell(row, c) for c in ref_cols)]
                            for _, row in h2h.iterrows()], out, name,
                           head_to_head_notes(h2h, q))
    tables.write_csv(res["per_seed"], out / "per_seed.csv")
    # from the file as written, so that python -m analysis.aggregate on it gives the same
    aggregate.write(pd.read_csv(out / "per_seed.csv"), out)
    if "regret_area" in res:
        tables.write_csv(res["regret_area"], out / "regret_area.csv")
    tables.write_csv(res["curves"], out / "curves.csv")
    (out / "references.json").write_text(json.dumps(tables.jsonable(res["refs"]), indent=1,
                                                    sort_keys=True) + "\n")
    return written + [out / f"{n}.{e}" for n in ("ranks", *HEAD_TO_HEAD)
                      for e in ("md", "tex")] + \
        [out / n for n in ("ranks.csv", "per_seed.csv", "curves.csv", "references.json",
                           "aggregate.md", "aggregate.csv", "performance_profile.pdf",
                           "performance_profile.png")] + \
        ([out / "regret_area.csv"] if "regret_area" in res else [])


def check_table_version(runs: dict, table: Path) -> None:
    """Raise ReplayLogsError when the replays were made on another version of ``table``
    (the sha256 each search's metadata records) or on several: the targets, the best known
    loss and the default would come from a table the searches never saw."""
    import hashlib

    shas = {(s.metadata.get("replay") or {}).get("sha256") for seeds in runs.values()
            for s in seeds.values()} - {None}
    if not shas:
        return  # replays on synthetic curves, or logs that predate the record
    name = f"{table.parent.name}/{table.name}"
    if len(shas) > 1:
        raise ReplayLogsError(f"the replay logs were made on {len(shas)} versions of {name}")
    if table.is_file() and hashlib.sha256(table.read_bytes()).hexdigest() not in shas:
        raise ReplayLogsError(f"the replay logs were made on another version of {name} (sha256 "
                              f"{next(iter(shas))[:12]}...)")


# ---- live vs replay -------------------------------------------------------------------------
def live_agreement(live_dir: Path, runs: dict, targets: dict | None = None) -> dict:
    """Method ranking of the live searches under ``live_dir`` (results/<scale>/) against the
    replayed ones at the live budget, over the methods both have; Kendall's tau of the two
    rankings for each of two statistics per method:

    - the pre-registered one (analysis/preregistration.md, "Live runs"): the median over seeds
      of the device-hours to the top-5 % target of ``targets`` ({quantile: loss}), a seed that
      does not reach it within the live budget counted as never (+inf, ranked last);
    - the incumbent's final loss: the median over seeds, live at its end, replayed at the live
      device budget (the replay budget is larger).

    ``{"status": ...}`` says why there is no comparison (no live logs, another max_t or loss,
    no common device budget)."""
    from scipy.stats import kendalltau

    try:
        live = {m: v for m, v in load_scale(live_dir).items() if m != DEFAULT_METHOD}
    except MissingLogsError:
        return {"status": f"no live logs under {live_dir.name}/"}
    common = [m for m in live if m in runs]
    if len(common) < 2:
        return {"status": "fewer than 2 methods both live and replayed"}
    any_live = next(iter(live[common[0]].values()))
    any_replay = next(iter(runs[common[0]].values()))
    if any_live.max_t != any_replay.max_t:
        return {"status": f"live logs of another design (max_t {any_live.max_t:g} vs "
                f"{any_replay.max_t:g}): not compared"}
    live_loss = loss_names({m: live[m] for m in common})
    replay_loss = loss_names({m: runs[m] for m in common})
    if live_loss != replay_loss or len(live_loss) != 1:
        def names(x):
            return ", ".join(sorted(str(n or "unrecorded") for n in x))
        return {"status": f"live logs on another loss ({names(live_loss)} vs the replays' "
                f"{names(replay_loss)}): not compared"}
    budgets = {s.metadata.get("budget_device_s") for m in common for s in live[m].values()}
    if None in budgets or len(budgets) != 1:
        return {"status": "live searches without one common device budget: not compared"}
    at = float(budgets.pop()) / 3600.0
    live_trials, _ = tidy({m: live[m] for m in common})
    replay_trials, _ = tidy({m: runs[m] for m in common})
    target = (targets or {}).get(GOAL_QUANTILE, math.nan)
    speed = live_speed(live_dir, {m: live[m] for m in common}, runs)
    f = speed.get("factor", math.nan)
    matched = math.isfinite(f) and f > 0

    def median(group, trials, point):
        v = [incumbent_on_grid(search_trace(s, trials), [point])[0] for s in group.values()]
        v = [x for x in v if np.isfinite(x)]
        return (float(np.median(v)) if v else math.nan), len(v)

    def to_target(group, trials, budget=at, scale=1.0):
        if not np.isfinite(target):
            return math.nan
        c = [compute_to_target(search_trace(s, trials), target)[0] / scale
             for s in group.values()]
        return float(np.median([x if x <= budget else math.inf for x in c]))

    rows = []
    for m in common:
        lv, ln = median(live[m], live_trials, np.inf)
        rv, rn = median(runs[m], replay_trials, at)
        row = {"method": m, "live": lv, "live_seeds": ln, "replay": rv, "replay_seeds": rn,
               "live_dh_to_target": to_target(live[m], live_trials),
               "replay_dh_to_target": to_target(runs[m], replay_trials)}
        if matched:  # the live work in the table's device-hours, the replay at that budget
            row.update(live_dh_to_target_matched=to_target(live[m], live_trials, at / f, f),
                       replay_dh_to_target_matched=to_target(runs[m], replay_trials, at / f),
                       replay_matched=median(runs[m], replay_trials, at / f)[0])
        rows.append(row)
    df = pd.DataFrame(rows)
    df["live_rank"] = df["live"].rank(method="average")
    df["replay_rank"] = df["replay"].rank(method="average")

    def tau(a, b):
        x, y = df[a].rank(method="average"), df[b].rank(method="average")  # +inf: last
        if len(df) < 3 or x.isna().any() or y.isna().any():
            return math.nan, math.nan
        t, p = kendalltau(x, y)
        return float(t), float(p)

    tau_final, p_final = tau("live", "replay")
    tau_target, p_target = tau("live_dh_to_target", "replay_dh_to_target")
    if matched:
        t_f, p_f = tau("live", "replay_matched")
        t_t, p_t = tau("live_dh_to_target_matched", "replay_dh_to_target_matched")
        speed.update(budget_device_h=at / f, kendall_tau=t_f, p_value=p_f,
                     kendall_tau_target=t_t, p_value_target=p_t)
    return {"status": "compared", "budget_device_h": at, "kendall_tau": tau_final,
            "p_value": p_final, "target_quantile": GOAL_QUANTILE,
            "target_loss": float(target), "kendall_tau_target": tau_target,
            "p_value_target": p_target, "loss": next(iter(live_loss)),
            "n_methods": len(df), "speed": speed, "rows": df.to_dict("records")}


def live_speed(live_dir: Path, live: dict, runs: dict) -> dict:
    """How the live searches' device-seconds compare with the replays': the CPU model(s) the
    live searches recorded, the table's, and, when every live search ran on one model that
    ``python -m experiments.speed`` timed against the replays' table (its runs in
    ``live_dir/speed/``), ``factor`` (this model's CPU seconds per table second for the same
    training), ``low``, ``high`` and the runs it pools (:func:`experiments.logs.speed_factor`)."""
    from experiments.logs import SPEED_DIR
    from experiments.logs import speed_factor as factor

    models = sorted({str((s.metadata.get("machine") or {}).get("cpu_model") or "unrecorded")
                     for seeds in live.values() for s in seeds.values()})
    shas = {(s.metadata.get("replay") or {}).get("sha256") for seeds in runs.values()
            for s in seeds.values()} - {None}
    table_machine = (read_json_object(Path(live_dir) / "lctable.json") or {}).get("machine")
    out = {"live_cpu_models": models, "table_cpu_model": table_machine.get("cpu_model")
           if isinstance(table_machine, dict) else None}
    if len(models) != 1 or models[0] == "unrecorded" or len(shas) != 1:
        return out
    got = factor(Path(live_dir) / SPEED_DIR, models[0], shas.pop())
    if got is not None and math.isfinite(got["factor"]):
        out.update({k: got[k] for k in ("factor", "low", "high", "n_configs", "runs",
                                        "same_loss", "epochs")})
    return out


def write_agreement(agree: dict, out: Path) -> list[Path]:
    notes = [f"Live vs replay: {agree['status']}."]
    rows = []
    if agree["status"] == "compared":
        q = f"top {100 * agree['target_quantile']:g} %"
        notes = [f"Medians over seeds, live at the end of each search and replayed at the live "
                 f"device budget ({3600 * agree['budget_device_h']:.0f} device-seconds). "
                 f"Pre-registered: Kendall's tau of the rankings by device-hours to the {q} "
                 f"target (val_loss {tables.fmt(agree['target_loss'], 4)}; 'never' when the "
                 f"median seed does not reach it within the live budget): "
                 f"{tables.fmt(agree['kendall_tau_target'], 2)} over {agree['n_methods']} "
                 f"methods (p = {tables.fmt(agree['p_value_target'], 2)}).",
                 f"Secondary, by the incumbent's final val_loss: Kendall's tau of the two "
                 f"rankings: {tables.fmt(agree['kendall_tau'], 2)} over "
                 f"{agree['n_methods']} methods (p = {tables.fmt(agree['p_value'], 2)})."]

        notes += speed_notes(agree.get("speed") or {}, agree["budget_device_h"], q)

        def dh(x):
            return "never" if x == math.inf else tables.fmt(x, 4)
        matched = "replay_matched" in (agree["rows"][0] if agree["rows"] else {})
        rows = [[r["method"], dh(r["live_dh_to_target"]), dh(r["replay_dh_to_target"]),
                 f"{tables.fmt(r['live'], 4)} ({r['live_seeds']})",
                 f"{tables.fmt(r['replay'], 4)} ({r['replay_seeds']})",
                 tables.fmt(r["live_rank"], 1), tables.fmt(r["replay_rank"], 1)]
                + ([dh(r["live_dh_to_target_matched"]), dh(r["replay_dh_to_target_matched"]),
                    tables.fmt(r["replay_matched"], 4)] if matched else [])
                for r in agree["rows"]]
    else:
        matched = False
    tables.write_table(["method", "live device-h to target", "replay device-h to target",
                        "live final (seeds)", "replay at live budget (seeds)",
                        "live rank (final)", "replay rank (final)"]
                       + (["live to target, table device-h", "replay to target, matched",
                           "replay final, matched"] if matched else []),
                       rows, out, "agreement", notes)
    return [out / "agreement.md", out / "agreement.tex"]


def speed_notes(speed: dict, budget_h: float, q: str) -> list[str]:
    """What the live and the replayed device-seconds are (:func:`live_speed`), and the
    speed-matched comparison when the live machine was timed against the table."""
    models = speed.get("live_cpu_models") or []
    table = speed.get("table_cpu_model") or "not recorded"
    where = (f"the live searches ran on {', '.join(models)}; the table on {table}"
             if models else f"the table ran on {table}")
    f = speed.get("factor")
    if not isinstance(f, (int, float)) or not math.isfinite(f):
        why = ("the live searches ran on several CPU models" if len(models) > 1 else
               "a live search did not record its CPU model" if "unrecorded" in models else
               "no `make speed` run of that CPU model against this table")
        return [f"Device-seconds: {where}; {why}, so live and replayed device-seconds may be "
                "of machines of different speed (not matched)."]
    b = speed["budget_device_h"]
    return [f"Device-seconds: {where}; the same trainings cost {tables.fmt(f, 3)} "
            f"[{tables.fmt(speed['low'], 3)}, {tables.fmt(speed['high'], 3)}] times the "
            f"table's CPU seconds there (`make speed`: {speed['n_configs']} timed configuration "
            f"runs, {speed['same_loss']} of {speed['epochs']} epochs with the table's loss "
            f"digits; median over configurations, 95 % bootstrap interval).",
            f"Speed-matched (not pre-registered): the live budget of "
            f"{3600 * budget_h:.0f} device-seconds is {3600 * b:.0f} of the table's; the last "
            f"three columns give the live compute in the table's device-hours and the replays "
            f"at that budget. Kendall's tau by device-hours to the {q} target "
            f"{tables.fmt(speed['kendall_tau_target'], 2)} (p = "
            f"{tables.fmt(speed['p_value_target'], 2)}), by final val_loss "
            f"{tables.fmt(speed['kendall_tau'], 2)} (p = {tables.fmt(speed['p_value'], 2)})."]


# ---- two lookups compared -----------------------------------------------------------------
# What the two replays are compared on: (summary.csv column, name, lower is better).
LOOKUP_METRICS = (("incumbent_loss", "final loss", True),
                  ("regret_1/4", "regret at 1/4 of the budget", True),
                  ("dh_to_top5", "device-h to top 5 %", True),
                  ("speedup_top5", "speedup top 5 % vs random", False))


def lookup_agreement(a: pd.DataFrame, b: pd.DataFrame) -> dict:
    """Do two replays of the same methods (two summary.csv tables, e.g. nearest-row lookup
    and surrogate) rank the methods alike? Per metric of :data:`LOOKUP_METRICS`, Kendall's tau
    of the per-method medians over the methods both have with finite values (random's
    speedup, 1 by definition, left out of the speedup's ranking), and the method each ranks
    first. ``{"status": ...}`` says why there is no comparison."""
    from scipy.stats import kendalltau

    common = [m for m in a["method"] if m in set(b["method"])]
    if len(common) < 3:
        return {"status": f"{len(common)} methods in both replays: at least 3 are needed"}
    a, b = a.set_index("method").loc[common], b.set_index("method").loc[common]
    out = {"status": "compared", "n_methods": len(common), "metrics": []}
    for col, name, lower in LOOKUP_METRICS:
        if col not in a or col not in b:
            continue
        x, y = a[col].astype(float), b[col].astype(float)
        keep = np.isfinite(x) & np.isfinite(y)
        if col.startswith("speedup"):
            keep &= x.index != "random"
        x, y = x[keep], y[keep]
        if len(x) < 3:
            out["metrics"].append({"metric": name, "n": len(x), "tau": math.nan,
                                   "p_value": math.nan, "best_a": "", "best_b": ""})
            continue
        tau, p = kendalltau(x, y)
        pick = (lambda s: s.idxmin()) if lower else (lambda s: s.idxmax())
        out["metrics"].append({"metric": name, "n": len(x), "tau": float(tau),
                               "p_value": float(p), "best_a": pick(x), "best_b": pick(y)})
    return out


def write_lookup_agreement(agree: dict, out: Path, name_a: str, name_b: str) -> list[Path]:
    rows, notes = [], [f"{name_b} vs {name_a}: {agree['status']}."]
    if agree["status"] == "compared":
        notes = [f"Method rankings of two replays of the same table: {name_a} vs {name_b} "
                 f"({agree['n_methods']} methods in both; medians over seeds, as in "
                 "summary.csv and targets.csv). Kendall's tau per metric over the methods with "
                 "finite values in both (random left out of the speedup's ranking); tau near "
                 "1: the conclusions do not hang on how a trial's curve is looked up."]
        rows = [[r["metric"], str(r["n"]), tables.fmt(r["tau"], 2), tables.fmt(r["p_value"], 2),
                 r["best_a"], r["best_b"]] for r in agree["metrics"]]
    tables.write_table(["metric", "methods", "Kendall tau", "p", f"best ({name_a})",
                        f"best ({name_b})"], rows, out, "lookups", notes)
    return [out / "lookups.md", out / "lookups.tex"]


# ---- figures ------------------------------------------------------------------------------
def _zoom(res: dict) -> tuple[float, float] | None:
    """Linear y range where the differences live: from just below the best known loss to
    just above the default's (or the 90th percentile of the medians at 1/8 of the grid)."""
    refs, c = res["refs"], res["curves"]
    med = c["median_incumbent"].to_numpy(float)
    med = med[np.isfinite(med)]
    lo = float(np.nanmin([refs.get("l_ref", np.nan), med.min() if len(med) else np.nan]))
    if not np.isfinite(lo):
        return None
    hi = refs.get("default_loss", math.nan)
    if not np.isfinite(hi) or hi <= lo:
        early = c[(c["device_hours"] >= c["device_hours"].max() / 8)
                  & np.isfinite(c["median_incumbent"])]
        hi = float(np.quantile(early["median_incumbent"], 0.9)) if len(early) else lo
    pad = 0.06 * (hi - lo) if hi > lo else 0.05 * abs(lo) + 1e-3
    return lo - pad, hi + 2 * pad


def _references(ax, refs: dict) -> None:
    """The default (black, thick dashed) and the targets (thin grey; named by
    :func:`_target_labels` once the y range is set)."""
    d = refs.get("default_loss", math.nan)
    if np.isfinite(d):
        ax.axhline(d, color="k", ls=(0, (5, 2)), lw=1.6, zorder=4,
                   label=f"untuned default ({refs.get('default_ref', 'final')})")
    for t in refs.get("targets", {}).values():
        if np.isfinite(t):
            ax.axhline(t, color="0.55", ls=":", lw=0.9, zorder=1)


def _target_labels(ax, refs: dict) -> None:
    """The targets named at the right of ``ax``, apart however close their losses."""
    label_lines(ax, {f"top {100 * float(q):g} %": t for q, t in refs.get("targets", {}).items()},
                log=False, color="0.4")


def _title(res: dict, what: str) -> str:
    refs = res["refs"]
    budget = refs.get("budget_device_s")
    b = f", {budget:.0f} device-s per search" if budget and np.isfinite(budget) else ""
    return (f"{res.get('scale', '')} replay: {what}, {refs.get('rank_seeds', '?')} seeds{b}"
            f" ({refs.get('lookup', 'table')} lookup)")


def best_vs_compute(res: dict):
    """Median incumbent loss over seeds vs device-hours (log x), 95 % bands, one panel per
    group of methods, linear y zoomed between the best known loss and the default."""
    groups = method_groups(res["methods"])
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 4.2), sharey=True,
                             squeeze=False, layout="constrained")
    style = styles(res["methods"])
    curves = {m: c for m, c in res["curves"].groupby("method", sort=False)}
    limits = _zoom(res)
    for ax, (title, group) in zip(axes[0], groups):
        for m in group:
            c, s = curves[m], style[m]
            y = c["median_incumbent"].where(np.isfinite(c["median_incumbent"]))
            b_lo, b_hi = (c[k2].where(np.isfinite(c[k2])) for k2 in ("lo", "hi"))
            ax.fill_between(c["device_hours"], b_lo, b_hi, color=s["color"], alpha=s["band"],
                            lw=0, step="post")
            ax.step(c["device_hours"], y, where="post", color=s["color"], lw=s["lw"],
                    zorder=s["zorder"], label=m)
        _references(ax, res["refs"])
        ax.set_xscale("log")
        if limits:
            ax.set_ylim(*limits)
        log_axis(ax.xaxis, *_compute_range(res))
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("compute spent [device-hours]")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="x-small", loc="best")
    _target_labels(axes[0][-1], res["refs"])
    axes[0][0].set_ylabel("median incumbent's final val_loss\n(95 % bootstrap band)")
    fig.suptitle(_title(res, "best configuration so far"), fontsize="medium")
    return fig


def rank_vs_compute(res: dict):
    """Average rank of every method over device-hours (log x); 1 = best; one panel per
    group of methods, all ranked together."""
    groups = method_groups(res["methods"])
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 4.0), sharey=True,
                             squeeze=False, layout="constrained")
    style = styles(res["methods"])
    curves = {m: c for m, c in res["curves"].groupby("method", sort=False)}
    for ax, (title, group) in zip(axes[0], groups):
        for m in group:
            c, s = curves[m], style[m]
            ax.step(c["device_hours"], c["mean_rank"], where="post", color=s["color"],
                    lw=s["lw"], label=m)
        for f in RANK_FRACTIONS:  # where ranks.md quotes the ranks
            ax.axvline(f * res["refs"]["grid_end_device_hours"], color="0.75", lw=0.8, ls=":")
        ax.set_xscale("log")
        log_axis(ax.xaxis, *_compute_range(res))
        ax.set_ylim(len(res["methods"]) + 0.5, 0.5)  # best rank on top
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("compute spent [device-hours]\n(dotted: where ranks.md reads them)")
        ax.legend(fontsize="x-small", loc="lower right")
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel(f"average rank among all {len(res['methods'])} (1 = best)")
    fig.suptitle(_title(res, "rank of the best configuration so far"), fontsize="medium")
    return fig


def _compute_range(res: dict) -> tuple[float, float]:
    x = res["curves"]["device_hours"].to_numpy(float)
    x = x[np.isfinite(x) & (x > 0)]
    return (float(x.min()), float(x.max())) if len(x) else (1e-3, 1.0)


def regret_vs_compute(res: dict):
    """Median regret I(c) - L_ref over seeds (log y) vs device-hours (log x), 95 % bands,
    per group of methods, the targets labelled: where claim 2 is decided
    (:func:`analysis.summary_plots.regret_vs_compute`, on the curves of curves.csv)."""
    return summary_plots.regret_vs_compute(res["curves"], res["refs"], res["methods"],
                                           _title(res, "regret of the best configuration so far"))


def critical_difference(res: dict):
    """Mean ranks over seeds with the Nemenyi critical difference, on final regret and on
    device-hours to the top 5 % and 1 % targets (:func:`analysis.summary_plots.critical_difference`,
    on per_seed.csv)."""
    return summary_plots.critical_difference(res["per_seed"], _title(res, "ranks over seeds"))


FIGURES = {"best_vs_compute": best_vs_compute, "rank_vs_compute": rank_vs_compute,
           "regret_vs_compute": regret_vs_compute, "critical_difference": critical_difference}


# ---- entry point --------------------------------------------------------------------------
def build(scale: str, results: Path | None = None, out: Path | None = None,
          required=EXPECTED, min_seeds: int = MIN_SEEDS,
          default_loss: float | None = None, compare: Path | None = None,
          live: Path | None = None) -> list[Path]:
    """Replay logs under ``results`` (default results/<scale>/replay) -> files under ``out``
    (default paper_figures/<scale>/replay); returns the files written. Raises
    ReplayLogsError when logs are missing or partial. ``compare``: the output folder of
    another replay of the same table (its summary.csv): lookups.{md,tex} compare the two
    method rankings. ``live``: the folder of the live searches the replays are compared
    with (default: the folder above ``results``)."""
    results = Path(results) if results else RESULTS_DIR / scale / REPLAY_DIR
    out = Path(out) if out else FIGURES_DIR / scale / REPLAY_DIR
    check_logs(results, required, min_seeds)
    runs = load_scale(results)
    source = "--default-loss"
    # the benchmark's own configuration distribution when the campaign wrote one (replays
    # on a surrogate), else the learning-curve table next to the replay folder
    lctable, reference = results.parent / LCTABLE_CSV, results / REFERENCE_CSV
    table = reference if reference.is_file() else lctable
    label = f"{table.parent.name}/{table.name}"  # no machine-specific path in the outputs
    if default_loss is None and DEFAULT_METHOD not in runs:
        source = f"configuration 0 of {label}"
        default_loss = table_default_loss(table)
    check_table_version(runs, lctable)
    finals, label = table_for(runs, table)  # no machine-specific path in the outputs
    res = analyse(runs, default_loss, default_source=source, table=finals, table_name=label)
    res["scale"] = scale
    metas = [s.metadata for seeds in runs.values() for s in seeds.values()]
    budgets = {(m.get("budget_device_s") or (m.get("method_settings") or {}).get(
        "budget_device_s")) for m in metas} - {None}
    res["refs"]["budget_device_s"] = max(budgets) if budgets else math.nan
    lookups = {(m.get("replay") or {}).get("lookup", "nearest") for m in metas}
    res["refs"]["lookup"] = "/".join(sorted(lookups))
    agree = live_agreement(Path(live) if live else results.parent, runs,
                           res["refs"].get("targets"))
    res["refs"]["live_vs_replay"] = {k: v for k, v in agree.items() if k != "rows"}
    out.mkdir(parents=True, exist_ok=True)
    written = write_tables(res, scale, out)
    written += write_agreement(agree, out)
    for name, make in FIGURES.items():
        written += figures.save(make(res), out, name)
    validation = _surrogate_validation(lctable)
    if validation is not None:  # python -m experiments.surrogate wrote it
        fig = figures.surrogate_heldout(*validation)
        written += figures.save(fig, out, "surrogate_heldout")
    if compare is not None:
        other = _read_summary(Path(compare) / "summary.csv")
        if other is not None:
            agree = lookup_agreement(other, pd.read_csv(out / "summary.csv"))
            written += write_lookup_agreement(agree, out, _lookup_name(Path(compare)),
                                              res["refs"]["lookup"])
    return written


def _surrogate_validation(lctable: Path) -> tuple[pd.DataFrame, dict] | None:
    """The surrogate's held-out rows and report next to ``lctable`` (their schemas:
    ``HELDOUT_COLUMNS``, :class:`SurrogateReport`), None when there are none or they are
    unusable (a warning); damaged rows are reported and skipped."""
    heldout = lctable.with_name(lctable.stem + ".surrogate_heldout.csv")
    report = lctable.with_suffix(".surrogate.json")
    if not (heldout.exists() and report.exists()):
        return None
    try:
        rep = read_checked_json(report, SurrogateReport, warn)
        rows = read_checked_csv(heldout, HELDOUT_COLUMNS[:3], HELDOUT_COLUMNS[3:5], warn)
    except LogError as e:
        warn(f"{e}; no surrogate_heldout figure")
        return None
    return (rows, rep) if len(rows) else None


def _read_summary(path: Path) -> pd.DataFrame | None:
    """Another replay's summary.csv for --compare: rows whose metrics are not numbers are
    reported and skipped; None (a warning) when it is no summary."""
    try:
        df = read_checked_csv(path, (), (), warn, optional=[c for c, _, _ in LOOKUP_METRICS])
    except LogError as e:
        warn(f"{e}; no lookups table")
        return None
    if "method" not in df.columns:
        warn(f"{path}: no method column; no lookups table")
        return None
    return df


def _lookup_name(folder: Path) -> str:
    """The lookup a replay output folder was made with (its references.json), else its name."""
    try:
        return json.loads((folder / "references.json").read_text())["lookup"]
    except (OSError, ValueError, KeyError, TypeError):
        return folder.name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", required=True, choices=tuple(SCALES), help="smoke | small | paper")
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
    ap.add_argument("--compare", type=Path, default=None,
                    help="output folder of another replay of the same table (e.g. "
                         "paper_figures/small/replay): lookups.md compares the method rankings")
    ap.add_argument("--live", type=Path, default=None,
                    help="folder of the live searches to compare with (<method>/seed<k>/; "
                         "default: the folder above --results)")
    args = ap.parse_args(argv)
    if args.compare is not None and not (args.compare / "summary.csv").is_file():
        print(f"error: --compare {args.compare}: no summary.csv there (run make replay "
              "first)", file=sys.stderr)
        return 2
    if args.min_seeds < 1:
        print(f"error: --min-seeds must be >= 1, got {args.min_seeds}", file=sys.stderr)
        return 2
    required = tuple(m for m in args.methods.split(",") if m)
    with warnings_to_stderr():
        try:
            written = build(args.scale, args.results, args.out, required, args.min_seeds,
                            args.default_loss, args.compare, args.live)
        except ReplayLogsError as e:
            print(f"error: {e} (run `{MAKE_HINT.format(scale=args.scale)}`)", file=sys.stderr)
            return 2
    print(f"wrote {len(written)} files to {written[0].parent}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
