"""Summary tables in Markdown and LaTeX (tabulate), plus their machine-readable CSVs.

    summary.{md,tex,csv}       one row per method: trials, epochs, compute, budget, the final
                               incumbent's loss, its regret and improvement over the default
    fractions.{md,tex}         regret and improvement at 1/8, 1/4, 1/2 and all of the budget
    targets.{md,tex}           compute to the top 1 / 5 / 10 % targets and speedup vs random
    best_configs.{md,tex,csv}  each method's incumbent (lowest final loss) and its hyperparameters
fractions and targets are views of summary.csv. The notes under each table define its
columns, one line each (symbols of :mod:`analysis.metrics`). Numbers are formatted with fixed
precision so that a rerun on the same logs gives the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from analysis.logs import (
    DEFAULT_METHOD,
    FAILED,
    FINAL_LOSS,
    HP_PREFIX,
    JOB_ID,
    UNFINISHED,
    hp_columns,
)
from analysis.metrics import BUDGET_FRACTIONS, INCUMBENT, REFERENCE, frac_name, top_name


def fmt(x: float, digits: int = 3, kind: str = "f") -> str:
    """A number for a table: '' for NaN, 'never' for +inf (a target not reached)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "never"
    return f"{x:.{digits}{kind}}"


def fmt_ci(row: pd.Series, col: str, digits: int = 3, kind: str = "f", fmt=fmt) -> str:
    """'median [lo, hi]' across seeds, or just the value with one seed."""
    s = fmt(row[col], digits, kind)
    lo, hi = row.get(col + "_lo", math.nan), row.get(col + "_hi", math.nan)
    if s and not (math.isnan(lo) or math.isnan(hi)):
        s += f" [{fmt(lo, digits, kind)}, {fmt(hi, digits, kind)}]"
    return s


def fmt_speedup(x: float, digits: int = 2, kind: str = "f") -> str:
    """A speedup: 0 -> 'never' (the method's median seed never reaches the target), inf ->
    'inf' (the reference never does; only a censored bound avoids it)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if x == 0:
        return "never"
    return "inf" if math.isinf(x) else f"{x:.{digits}{kind}}"


def speedup_cell(row: pd.Series, col: str) -> str:
    """'x [lo, hi]', prefixed by '>' where x is a lower bound."""
    s = fmt_ci(row, col, 2, "f", fmt=fmt_speedup)
    return (">" + s) if s and bool(row.get(col + "_bound", False)) and s != "never" else s


SUMMARY_HEADERS = ("method", "seeds", "trials", "completed", "stopped", "failed",
                   "reached max_t", "epochs", "device-h", "budget B device-h", "wall h",
                   "final loss", "regret", "improvement %", "utilisation")


def summary_rows(summary: pd.DataFrame) -> list[list[str]]:
    return [[r["method"], str(r["n_seeds"]), fmt(r["started"], 0), fmt(r["completed"], 0),
             fmt(r["stopped"], 0), fmt(r["failed"], 0), fmt(r["reached_max_t"], 0),
             fmt(r["epochs"], 0), fmt_ci(r, "device_hours", 3, "g"),
             fmt_ci(r, "budget_dh", 3, "g"), fmt(r["wall_hours"], 3, "g"),
             fmt_ci(r, INCUMBENT, 4), fmt_ci(r, "regret", 4), fmt_ci(r, "improvement_pct", 1),
             fmt_ci(r, "utilisation", 2)]
            for _, r in summary.iterrows()]


def _intro(refs: dict, scale: str, what: str) -> str:
    return (f"Scale {scale}{what}. One row per method: median over seeds, [95 % bootstrap "
            f"interval of the median] where there are several seeds.")


def _lref_line(refs: dict) -> str:
    if not np.isfinite(refs.get("l_ref", math.nan)):
        return "No reference loss L_ref (no learning-curve table, no ended trial)."
    return f"L_ref = {refs['l_ref']:.4f}, the best loss known: {refs['l_ref_source']}."


def _random_refs_line(refs: dict) -> str | None:
    """The table's random references: how good a configuration drawn at random is."""
    if not np.isfinite(refs.get("random_median", math.nan)):
        return None
    return (f"References from the table's sampled configurations: the median one's final loss "
            f"{refs['random_median']:.4f}; the best of 10 drawn at random (median over draws) "
            f"{refs['best_of_10']:.4f}.")


def _default_line(refs: dict) -> str:
    if math.isnan(refs["default_loss"]):
        return ("No default-configuration loss (no default run, no --default-loss, no table "
                "default): improvement columns are empty.")
    src = refs.get("default_source") or f"default run, {refs['default_ref']} loss"
    return f"L_default = {refs['default_loss']:.4f} ({src})."


def _budget_line(refs: dict) -> str:
    return (f"Budget B per search = {refs.get('budget_source') or 'total compute'} "
            f"(metadata budget_device_s / 3600 where logged, else the search's total compute).")


def summary_notes(refs: dict, scale: str, what: str = "") -> list[str]:
    lines = [_intro(refs, scale, what),
             "device-h: compute spent, sum over epochs of epoch seconds x devices / 3600.",
             _budget_line(refs),
             "final loss: the incumbent's loss at the end of the search; the incumbent is the "
             "ended trial with the lowest loss at its last trained epoch (a stopped trial "
             "counts with its last epoch; epochs of a still-running trial never count).",
             "regret: final loss - L_ref.",
             "improvement %: 100 (L_default - final loss) / L_default (negative: worse than "
             "the default).",
             "utilisation: epoch seconds / (workers x wall time).",
             _lref_line(refs), _default_line(refs)]
    if _random_refs_line(refs):
        lines.append(_random_refs_line(refs))
    if refs.get("trainables"):
        lines.append(f"Trained: {refs['trainables']} (logs of a synthetic test function are not "
                     f"MLPF results).")
    return lines


def fractions_table(summary: pd.DataFrame, refs: dict, scale: str, what: str = ""):
    fr = [frac_name(f) for f in BUDGET_FRACTIONS]
    headers = ["method", "seeds", *(f"regret @{f} B" for f in fr),
               *(f"improvement % @{f} B" for f in fr)]
    rows = [[r["method"], str(r["n_seeds"]), *(fmt_ci(r, f"regret_{f}", 4) for f in fr),
             *(fmt_ci(r, f"improvement_pct_{f}", 1) for f in fr)]
            for _, r in summary.iterrows()]
    notes = [_intro(refs, scale, what),
             "regret @f B: incumbent loss after f x B device-hours of the search's own "
             "compute - L_ref (empty: no trial had ended by then).",
             "improvement % @f B: 100 (L_default - incumbent loss after f x B) / L_default.",
             _budget_line(refs), _lref_line(refs), _default_line(refs),
             "No improvement per device-hour: all methods get the same budget, so the "
             "improvement at fixed fractions of it is the accuracy-per-compute comparison; "
             "dividing a final improvement (often negative) by the compute is not a rate."]
    return headers, rows, notes


def targets_table(summary: pd.DataFrame, refs: dict, scale: str, what: str = "",
                  extra_notes=()):
    qs = list(refs["targets"])
    headers = ["method", "seeds"]
    for q in qs:
        p = f"top {100 * q:g} %"
        headers += [f"reached {p}", f"device-h to {p}", f"speedup {p}"]
    rows = []
    for _, r in summary.iterrows():
        row = [r["method"], str(r["n_seeds"])]
        for q in qs:
            t = top_name(q)
            row += [fmt(r.get(f"reached_{t}", math.nan), 2), fmt_ci(r, f"dh_to_{t}", 3, "g"),
                    speedup_cell(r, f"speedup_{t}")]
        rows.append(row)
    if refs.get("target_source"):
        tl = ", ".join(f"top {100 * q:g} % = {v:.4f}" for q, v in refs["targets"].items())
        tline = (f"Targets: q-quantiles (linear interpolation) of the final losses of "
                 f"{refs['target_source']}: {tl}.")
    else:
        tline = "No learning-curve table at this scale: no targets, columns empty."
    notes = [_intro(refs, scale, what), tline,
             "reached top q: fraction of seeds whose incumbent reaches the target.",
             "device-h to top q: compute until the incumbent's loss <= target (never: not "
             "within the search; the median is never when half the seeds or more never do).",
             f"speedup top q: median device-h to target of {REFERENCE} / the method's, over "
             f"the seeds both have, interval by paired bootstrap over seeds; never: the "
             f"method's median seed never reaches it; >x: a lower bound, {REFERENCE} never "
             f"reached it in some seeds and its whole compute stands in.",
             *extra_notes]
    return headers, rows, notes


def write_summary(summary: pd.DataFrame, refs: dict, scale: str, out: Path, what: str = "",
                  target_notes=()) -> list[Path]:
    """summary.{md,tex,csv}, fractions.{md,tex} and targets.{md,tex}; returns the paths."""
    headers, rows = list(SUMMARY_HEADERS), summary_rows(summary)
    if (summary["unfinished"] > 0).any():  # an interrupted search: trials cut mid-training
        i = headers.index("failed") + 1
        headers.insert(i, "unfinished")
        for row, u in zip(rows, summary["unfinished"]):
            row.insert(i, fmt(u, 0))
    write_table(headers, rows, out, "summary", summary_notes(refs, scale, what))
    write_csv(summary, out / "summary.csv")
    headers, rows, notes = fractions_table(summary, refs, scale, what)
    write_table(headers, rows, out, "fractions", notes)
    headers, rows, notes = targets_table(summary, refs, scale, what, target_notes)
    write_table(headers, rows, out, "targets", notes)
    return [out / f"{n}.{e}" for n in ("summary", "fractions", "targets") for e in ("md", "tex")] \
        + [out / "summary.csv"]


def best_configs(trials: pd.DataFrame) -> pd.DataFrame:
    """Each method's incumbent: the ended trial with the lowest final loss (loss at its last
    trained epoch) over all seeds (ties: lowest seed, then job_id). Columns: method, seed,
    job_id, final_loss, best_loss (the lowest loss of any of its epochs, for information),
    epochs, status, then the hyperparameters."""
    t = trials[(trials["method"] != DEFAULT_METHOD) & trials[FINAL_LOSS].notna()
               & ~trials["status"].isin((FAILED, UNFINISHED))]
    t = t.sort_values([FINAL_LOSS, "seed", JOB_ID], kind="mergesort")
    best = t.groupby("method", sort=False).head(1)
    order = list(dict.fromkeys(trials["method"]))
    best = best.set_index("method").loc[[m for m in order if m in set(best["method"])]]
    best = best.reset_index()
    hps = [c for c in hp_columns(best) if best[c].notna().any()]
    return best[["method", "seed", JOB_ID, FINAL_LOSS, "best_loss", "epochs", "status", *hps]]


def fmt_value(v) -> str:
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return ""
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e6 else f"{v:.4g}"
    return str(v)


def write_table(headers, rows, out: Path, name: str, notes: list[str]) -> None:
    """name.md (pipe table + notes) and name.tex (booktabs tabular + notes as comments)."""
    md = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)
    (out / f"{name}.md").write_text(md + "\n\n" + "\n".join(notes) + "\n")
    tex = tabulate(rows, headers=headers, tablefmt="latex_booktabs", disable_numparse=True)
    (out / f"{name}.tex").write_text("".join(f"% {n}\n" for n in notes) + tex + "\n")


def write_best_configs(trials: pd.DataFrame, out: Path) -> pd.DataFrame:
    """best_configs.{md,tex} transposed (one column per method, one row per hyperparameter:
    16 hyperparameters read better down a page) and best_configs.csv (one row per method)."""
    best = best_configs(trials)
    headers = ["", *best["method"]]
    rows = []
    for c in best.columns[1:]:
        name = c[len(HP_PREFIX):] if c.startswith(HP_PREFIX) else c.replace("_", " ")
        rows.append([name, *(fmt(v, 4) if c in (FINAL_LOSS, "best_loss") else fmt_value(v)
                             for v in best[c])])
    write_table(headers, rows, out, "best_configs",
                ["Incumbent per method over all seeds: the ended trial with the lowest final "
                 "loss (its loss at its last trained epoch); best loss: the lowest loss of any "
                 "of its epochs, for information."])
    write_csv(best, out / "best_configs.csv")
    return best


# A cell a spreadsheet would run as a formula: text that starts with one of these
# (OWASP, "CSV injection"). Numbers (a negative regret) start with "-" and stay numbers.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _formula(v) -> bool:
    if not isinstance(v, str) or not v.startswith(FORMULA_STARTS):
        return False
    try:
        float(v)
    except ValueError:
        return True
    return False


def safe_cells(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every text cell (and column name) that would be a spreadsheet formula
    prefixed by a single quote; numbers and other text as they were (``df`` itself when
    nothing needs it). Text comes from the logs (a hyperparameter value, a method folder)."""
    out = df
    for c in df.columns:
        if pd.api.types.is_numeric_dtype(df[c]) or not df[c].map(_formula).any():
            continue
        out = out.copy() if out is df else out
        out[c] = df[c].map(lambda v: "'" + v if _formula(v) else v)
    if any(_formula(c) for c in out.columns):
        out = out.rename(columns=lambda c: "'" + c if _formula(c) else c)
    return out


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Every CSV output of the analysis: :func:`safe_cells`, numbers to 6 significant digits,
    no index."""
    safe_cells(df).to_csv(path, index=False, float_format="%.6g")


class PerSeedError(Exception):
    """A per_seed.csv that cannot be read (one line for the user)."""


def read_per_seed(path: Path, make: str) -> pd.DataFrame:
    """A ``per_seed.csv`` of :mod:`analysis.replay`; PerSeedError naming the file when it is
    missing (``make``: the command that writes it), unreadable or without rows."""
    path = Path(path)
    if not path.is_file():
        raise PerSeedError(f"{path}: no per-seed metrics; run `{make}` first")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise PerSeedError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None
    if df.empty:
        raise PerSeedError(f"{path}: no rows")
    return df


def jsonable(x):
    """References as JSON: NaN -> null, inf -> "inf", numpy scalars -> Python numbers rounded
    to 10 digits, dict keys (target quantiles) -> str."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, float | np.floating):
        x = float(x)
        return None if math.isnan(x) else ("inf" if math.isinf(x) else round(x, 10))
    return x.item() if isinstance(x, np.generic) else x
