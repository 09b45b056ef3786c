"""Raw logs of one search, in ``results/<scale>/<method>/seed<k>/``.

- ``results.csv``: DeepHyper's table, one row per trial (job), with ``p:<hp>`` columns, the
  objective (``-val_loss``; ``F_<reason>`` for failures) and ``m:<name>`` metadata columns
  (``m:status``, ``m:reason``, ``m:epochs``, ``m:budget``, ...: see :data:`TRIAL_METADATA`).
- ``learning_curves.csv``: one row per trial and epoch, columns :data:`LC_COLUMNS`, appended by
  the workers as epochs finish (each row one ``write`` of a whole line, then ``fsync``), so a
  killed search leaves a consistent file.
- ``metadata.json``: the method and its settings, scale, seed, evaluator, workers, versions,
  git commit, host, start/end times and the manager's decision times.

The column names below are the contract with the analysis: they are defined here only.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS_CSV = "results.csv"
LEARNING_CURVES_CSV = "learning_curves.csv"
METADATA_JSON = "metadata.json"

# learning_curves.csv
JOB_ID = "job_id"  # int, DeepHyper's job id (the number after the dot), unique in a search
EPOCH = "epoch"  # 1-based epoch of that trial
VAL_LOSS = "val_loss"
TRAIN_LOSS = "train_loss"
EPOCH_SECONDS = "epoch_seconds"  # wall time of the epoch as measured by the trainable
T_START = "t_start"  # seconds since the search began (metadata start_time), epoch start
T_END = "t_end"  # seconds since the search began, epoch end
WORKER = "worker"  # stable id of the worker: MPI rank, or worker slot of the process pool
DEVICES = "devices"  # devices the trial held: GPUs, or CPU cores (threads) on CPU nodes
LC_COLUMNS = (JOB_ID, EPOCH, VAL_LOSS, TRAIN_LOSS, EPOCH_SECONDS, T_START, T_END, WORKER, DEVICES)

# results.csv metadata written by the run-function (DeepHyper prefixes them with "m:")
STATUS = "status"  # ok | stopped | failed
STATUS_OK, STATUS_STOPPED, STATUS_FAILED = "ok", "stopped", "failed"
REASON = "reason"  # failure reason ("diverged", "oom", "error:ValueError", ...) or ""
EPOCHS = "epochs"  # epochs this trial trained (compute of the trial = sum of its LC rows)
BUDGET = "budget"  # epochs the trial was allowed (max_t, or the Hyperband rung budget)
BEST_VAL_LOSS = "best_val_loss"
TRIAL_START = "trial_start"  # seconds since the search began, inside the worker
TRIAL_END = "trial_end"
TRIAL_WORKER = "worker"
TRIAL_METADATA = (STATUS, REASON, EPOCHS, BUDGET, BEST_VAL_LOSS, TRIAL_START, TRIAL_END,
                  TRIAL_WORKER)

# metadata.json status
RUN_RUNNING, RUN_COMPLETE, RUN_INTERRUPTED = "running", "complete", "interrupted"


def native(v):
    """A numpy scalar as the Python value (ConfigSpace and pandas hand out numpy scalars)."""
    return v.item() if isinstance(v, np.generic) else v


def clear_logs(log_dir: Path) -> None:
    """Remove the logs (and leftovers) of an unfinished search folder so that it restarts."""
    import shutil

    for name in (RESULTS_CSV, LEARNING_CURVES_CSV, METADATA_JSON, METADATA_JSON + ".tmp",
                 "results.resume.csv"):
        (log_dir / name).unlink(missing_ok=True)
    shutil.rmtree(log_dir / "checkpoints", ignore_errors=True)


def fmt_cell(v) -> str:
    """One CSV cell: floats with full precision, NaN/None as empty."""
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def format_row(values: dict, columns=LC_COLUMNS) -> str:
    """One CSV line (with its newline) of ``values`` in the order of ``columns``."""
    return ",".join(fmt_cell(values.get(c)) for c in columns) + "\n"


def write_csv(path: Path, columns, rows: list[dict]) -> None:
    """A whole CSV file at once (temp file + rename), cells formatted like the row writers."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(",".join(columns) + "\n" + "".join(format_row(r, columns) for r in rows))
    os.replace(tmp, path)


def append_row(path: Path, values: dict, columns=LC_COLUMNS) -> None:
    """Append one whole CSV line with a single ``write`` on an ``O_APPEND`` descriptor.

    Writers in several processes (or ranks on a shared file system) never interleave inside a
    line, and ``fsync`` makes the row survive a killed search.
    """
    line = format_row(values, columns)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_header(path: Path, columns=LC_COLUMNS) -> None:
    """Create ``path`` with its header line unless it exists (the manager does this first)."""
    if not path.exists() or path.stat().st_size == 0:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(",".join(columns) + "\n")
        os.replace(tmp, path)


def end_with_newline(path: Path) -> None:
    """Terminate a last line cut by a crash, so that the next row starts on a line of its own."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def read_learning_curves(log_dir: Path) -> pd.DataFrame:
    """learning_curves.csv as a DataFrame (empty with the right columns when missing)."""
    path = Path(log_dir) / LEARNING_CURVES_CSV
    if not path.exists():
        return pd.DataFrame(columns=list(LC_COLUMNS))
    # A line cut by a crash mid-write has too few fields: skip it rather than fail.
    df = pd.read_csv(path, on_bad_lines="skip")
    return df.dropna(subset=[JOB_ID, EPOCH])


def read_results(log_dir: Path) -> pd.DataFrame | None:
    """results.csv as a DataFrame, or None when there is none."""
    path = Path(log_dir) / RESULTS_CSV
    if not path.exists() or path.stat().st_size == 0:
        return None
    return pd.read_csv(path, on_bad_lines="skip")


def write_json(path: Path, obj: dict) -> None:
    """Atomic JSON write (temp file + rename): readers never see half a file."""
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def deadline(meta: dict) -> float | None:
    """When a search's time budget ends (metadata ``time_budget_s``; the time of earlier
    segments counts), in the clock of its ``start_time``; None without a time budget."""
    if not meta.get("time_budget_s"):
        return None
    segs = meta["segments"]
    used = sum(s["end_time"] - s["start_time"] for s in segs[:-1] if s.get("end_time"))
    return segs[-1]["start_time"] + meta["time_budget_s"] - used


def summarize_times(times: list[float]) -> dict:
    """Median and 95th percentile of a list of durations (seconds)."""
    if not times:
        return {"n": 0, "median": None, "p95": None, "mean": None, "max": None}
    a = np.asarray(times, dtype=float)
    return {"n": int(a.size), "median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
            "mean": float(a.mean()), "max": float(a.max())}
