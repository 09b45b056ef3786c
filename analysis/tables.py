"""Summary tables in Markdown and LaTeX (tabulate), plus their machine-readable CSVs.

    summary.{md,tex,csv}       one row per method: trials, epochs, compute, best loss,
                               improvement over the default, per device-hour, compute to target
    best_configs.{md,tex,csv}  the best trial's hyperparameters per method
Numbers are formatted with fixed precision so that a rerun on the same logs gives the same
bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from analysis.logs import DEFAULT_METHOD, HP_PREFIX, JOB_ID, hp_columns


def fmt(x: float, digits: int = 3, kind: str = "f") -> str:
    """A number for a table: '' for NaN, 'not reached' for +inf."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "not reached"
    return f"{x:.{digits}{kind}}"


def fmt_ci(row: pd.Series, col: str, digits: int = 3, kind: str = "f") -> str:
    """'median [lo, hi]' across seeds, or just the value with one seed."""
    s = fmt(row[col], digits, kind)
    lo, hi = row.get(col + "_lo", math.nan), row.get(col + "_hi", math.nan)
    if s and not (math.isnan(lo) or math.isnan(hi)):
        s += f" [{fmt(lo, digits, kind)}, {fmt(hi, digits, kind)}]"
    return s


SUMMARY_HEADERS = ("method", "seeds", "trials", "completed", "stopped", "failed",
                   "reached max_t", "epochs",
                   "device-h", "wall h", "best val loss", "improvement %", "impr. % / device-h",
                   "device-h to target", "utilisation")


def summary_rows(summary: pd.DataFrame) -> list[list[str]]:
    rows = []
    for _, r in summary.iterrows():
        rows.append([
            r["method"], str(r["n_seeds"]), fmt(r["started"], 0), fmt(r["completed"], 0),
            fmt(r["stopped"], 0), fmt(r["failed"], 0), fmt(r["reached_max_t"], 0),
            fmt(r["epochs"], 0),
            fmt_ci(r, "device_hours", 3, "g"), fmt(r["wall_hours"], 3, "g"),
            fmt_ci(r, "best_loss", 4), fmt_ci(r, "improvement_pct", 1),
            fmt_ci(r, "improvement_per_dh", 3, "g"), fmt_ci(r, "dh_to_target", 3, "g"),
            fmt_ci(r, "utilisation", 2),
        ])
    return rows


def summary_notes(refs: dict, scale: str) -> list[str]:
    lines = [f"Scale {scale}. Medians across seeds, [95 % bootstrap interval] where several. "
             f"Best val loss: the lowest validation loss of any epoch of any trial; device-h: "
             f"sum of epoch seconds x devices; utilisation: epoch seconds / (workers x wall)."]
    if math.isnan(refs["default_loss"]):
        lines.append("No default-configuration log (results/<scale>/default/): improvement "
                     "columns are empty.")
    else:
        lines.append(f"Improvement relative to the default configuration's {refs['default_ref']} "
                     f"validation loss {refs['default_loss']:.4f}.")
    if refs.get("trainables"):
        lines.append(f"Trained: {refs['trainables']} (logs of a synthetic test function are not "
                     f"MLPF results).")
    if not math.isnan(refs["target"]):
        how = ("given" if math.isnan(refs["target_tol"]) else
               f"= best loss of any method + {100 * refs['target_tol']:g} %")
        lines.append(f"Target loss {refs['target']:.4f} {how}.")
    return lines


def best_configs(trials: pd.DataFrame) -> pd.DataFrame:
    """The trial with the lowest best_loss per method (ties: lowest seed, then job_id).
    Columns: method, seed, job_id, best_loss, epochs, status, then the hyperparameters."""
    t = trials[(trials["method"] != DEFAULT_METHOD) & trials["best_loss"].notna()]
    t = t.sort_values(["best_loss", "seed", JOB_ID], kind="mergesort")
    best = t.groupby("method", sort=False).head(1)
    order = list(dict.fromkeys(trials["method"]))
    best = best.set_index("method").loc[[m for m in order if m in set(best["method"])]]
    best = best.reset_index()
    hps = [c for c in hp_columns(best) if best[c].notna().any()]
    return best[["method", "seed", JOB_ID, "best_loss", "epochs", "status", *hps]]


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


def write_summary(summary: pd.DataFrame, refs: dict, scale: str, out: Path) -> None:
    headers, rows = list(SUMMARY_HEADERS), summary_rows(summary)
    if (summary["unfinished"] > 0).any():  # an interrupted search: trials cut mid-training
        i = headers.index("failed") + 1
        headers.insert(i, "unfinished")
        for row, u in zip(rows, summary["unfinished"]):
            row.insert(i, fmt(u, 0))
    write_table(headers, rows, out, "summary", summary_notes(refs, scale))
    summary.to_csv(out / "summary.csv", index=False, float_format="%.6g")


def write_best_configs(trials: pd.DataFrame, out: Path) -> pd.DataFrame:
    """best_configs.{md,tex} transposed (one column per method, one row per hyperparameter:
    16 hyperparameters read better down a page) and best_configs.csv (one row per method)."""
    best = best_configs(trials)
    headers = ["", *best["method"]]
    rows = []
    for c in best.columns[1:]:
        name = c[len(HP_PREFIX):] if c.startswith(HP_PREFIX) else c.replace("_", " ")
        rows.append([name, *(fmt(v, 4) if c == "best_loss" else fmt_value(v)
                             for v in best[c])])
    write_table(headers, rows, out, "best_configs",
                ["Best trial per method (lowest validation loss over all epochs and seeds)."])
    best.to_csv(out / "best_configs.csv", index=False, float_format="%.6g")
    return best
