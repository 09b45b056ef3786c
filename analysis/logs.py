"""Raw HPO logs -> tidy pandas tables.

One search writes ``results/<scale>/<method>/seed<k>/`` with
    results.csv          DeepHyper 0.13: one row per trial (p:<hp>, objective, job_id, m:<meta>)
    learning_curves.csv  one row per trial and epoch (written by the search driver)
    metadata.json        method, settings, workers, start/end time, status, decision_times

The layout, every column and key name, their types and valid ranges are the log schema of
:mod:`experiments.logs` (the one module the analysis imports from experiments/); this module
reads it. The loader is tolerant: missing metadata columns, a missing learning_curves.csv, an
interrupted search without end_time all give a :class:`LogWarning` and the best table that can
still be built; a damaged row (a cut line, text in a numeric cell, a negative time, an
objective that is neither -val_loss nor F_<reason>) is reported by its line (or job id) and
skipped; a metadata.json key of the wrong type (workers "abc", segments not a list) is
reported and left out (the schema's pydantic model, ``experiments.logs.SearchMetadata``).

Usage:
    runs = load_scale(RESULTS_DIR / "small")     # {method: {seed: SearchLogs}}
    trials, epochs = tidy(runs)                  # two long DataFrames
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import logs
from experiments.logs import (  # noqa: F401 - the schema, re-exported for analysis modules
    DEFAULT_METHOD,
    DEVICES,
    EPOCH,
    EPOCH_SECONDS,
    FAILED_PREFIX,
    HELDOUT_COLUMNS,
    HP_PREFIX,
    JOB_ID,
    LCTABLE_CSV,
    LCTABLE_JSON,
    LEARNING_CURVES_CSV,
    LOSS,
    M_BEST_VAL_LOSS,
    M_BUDGET,
    M_EPOCHS,
    M_REASON,
    M_STATUS,
    M_TIMESTAMP_GATHER,
    M_TIMESTAMP_SUBMIT,
    M_TRIAL_END,
    M_TRIAL_START,
    MAX_T,
    MD_BACKEND,
    MD_DECISIONS,
    MD_END,
    MD_EVALUATOR,
    MD_METHOD,
    MD_SCALE,
    MD_SEED,
    MD_SEGMENTS,
    MD_SETTINGS,
    MD_SETTINGS_ALIASES,
    MD_START,
    MD_STATUS,
    MD_TRAINABLE,
    MD_WORKERS,
    META_PREFIX,
    METADATA_JSON,
    OBJECTIVE,
    REFERENCE_CSV,
    REPLAY_DIR,
    RESULTS_CSV,
    SCHEDULE_KEYS,
    SEED_DIR,
    T_END,
    T_START,
    TABLE_CONFIG_ID,
    TABLE_REPLICATE,
    TABLE_STATUS,
    TRAIN_LOSS,
    VAL_LOSS,
    WORKER,
    LogError,
    SurrogateReport,
    read_checked_csv,
    read_checked_json,
)

# Never a method of the live searches: the replay folder; neither are files beside the method
# folders (the learning-curve table lctable.csv / lctable.json).
NOT_METHOD_DIRS = (REPLAY_DIR,)
MD_COMPLETE = logs.RUN_COMPLETE  # metadata status of a search that ended as planned

# Trial status values written in m:status, plus one the loader adds for trials that have
# epochs in learning_curves.csv but no row in results.csv (an interrupted search).
OK, STOPPED, FAILED = logs.STATUS_OK, logs.STATUS_STOPPED, logs.STATUS_FAILED
UNFINISHED = "unfinished"
STATUSES = (OK, STOPPED, FAILED, UNFINISHED)
CURVE_COLUMNS = (JOB_ID, EPOCH, VAL_LOSS, TRAIN_LOSS, EPOCH_SECONDS, T_START, T_END, WORKER,
                 DEVICES)  # the columns every learning_curves.csv has (logs.LC_COLUMNS' first)

# ---- derived columns of the tidy tables ---------------------------------------------------
DEVICE_HOURS = "device_hours"  # epoch_seconds * devices / 3600
FINAL_LOSS = "final_loss"
BEST_LOSS = "best_loss"
N_EPOCHS = "epochs"  # epochs this job trained (its rows in learning_curves.csv)
LAST_EPOCH = "last_epoch"  # the highest epoch number it reached


class LogWarning(UserWarning):
    """A raw log is incomplete; the analysis goes on with what is there."""


class MissingLogsError(FileNotFoundError):
    """No HPO logs at all where they were expected."""


def warn(msg: str) -> None:
    warnings.warn(msg, LogWarning, stacklevel=2)


@contextlib.contextmanager
def warnings_to_stderr():
    """Collect the :class:`LogWarning` raised inside the block and print each as one
    ``warning: ...`` line on stderr when the block ends, also when it returns or raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LogWarning)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, LogWarning):
                    print(f"warning: {w.message}", file=sys.stderr)


@dataclass
class SearchLogs:
    """The raw logs of one search (one method, one seed), lightly normalised.

    results: one row per trial (results.csv), objective as float (NaN where failed)
    curves:  one row per (trial, epoch), sorted by t_end, with a device_hours column
    metadata: metadata.json as a dict ({} if missing)
    """

    method: str
    seed: int
    path: Path
    results: pd.DataFrame
    curves: pd.DataFrame
    metadata: dict = field(default_factory=dict)

    @property
    def settings(self) -> dict:
        """Method settings (max_t, grace, eta, ...): top-level "settings", or the "settings"
        dict inside the method's own dict (metadata["method_settings"]["settings"])."""
        found = []
        for d in (self.metadata, self.metadata.get(MD_METHOD)):
            for key in MD_SETTINGS_ALIASES:
                v = d.get(key) if isinstance(d, dict) else None
                if isinstance(v, dict):
                    found += [v[k] for k in MD_SETTINGS_ALIASES if isinstance(v.get(k), dict)]
                    found.append(v)
        return next((f for f in found if MAX_T in f), found[0] if found else {})

    @property
    def max_t(self) -> float:
        """Maximum epochs per trial (settings.max_t), NaN if unknown."""
        return float(self.settings.get(MAX_T, math.nan))

    @property
    def workers(self) -> float:
        return float(self.metadata.get(MD_WORKERS) or math.nan)

    @property
    def duration(self) -> float:
        """Wall seconds of the search: end_time - start_time, or the last epoch's t_end when
        end_time is missing (interrupted search)."""
        start, end = self.metadata.get(MD_START), self.metadata.get(MD_END)
        if start is not None and end is not None:
            return float(end) - float(start)
        if len(self.curves):
            return float(self.curves[T_END].max())
        return math.nan

    @property
    def hyperparameters(self) -> list[str]:
        """Hyperparameter names without the p: prefix, in results.csv column order."""
        return [c[len(HP_PREFIX):] for c in hp_columns(self.results)]

    @property
    def capacity(self) -> float:
        """Worker-seconds the search held: sum over run segments (a resumed search has
        several, maybe with different worker counts) of workers x (end - start); the last
        open segment ends at the last epoch. Without segments: workers x duration."""
        segs = self.metadata.get(MD_SEGMENTS) or []
        if not segs or self.metadata.get(MD_START) is None:
            return self.workers * self.duration
        last_end = float(self.metadata[MD_START]) + (
            float(self.curves[T_END].max()) if len(self.curves) else 0.0)
        total = 0.0
        for g in segs:
            start, end = g.get(MD_START), g.get(MD_END)
            if start is None:
                return self.workers * self.duration
            end = float(end) if end is not None else max(last_end, float(start))
            total += float(g.get(MD_WORKERS) or self.workers) * (end - float(start))
        return total


def hp_columns(df: pd.DataFrame) -> list[str]:
    """The p:<hyperparameter> columns of a table, schedule keys (p:budget, ...) left out."""
    return [c for c in df.columns
            if c.startswith(HP_PREFIX) and c[len(HP_PREFIX):] not in SCHEDULE_KEYS]


def _job_numbers(ids: pd.Series) -> pd.Series:
    """Job ids as logs.job_number reads them (``"<search>.<n>"`` or ``n``), NaN where a cell
    is not one or lies outside the schema's range."""
    def one(v):
        try:
            n = logs.job_number(v)
        except (TypeError, ValueError):
            return math.nan
        return math.nan if logs.out_of_range(JOB_ID, n) else n

    return ids.map(one).astype(float)


def _read_results(path: Path) -> pd.DataFrame:
    # cut lines, undecodable bytes, text or a negative count in a numeric m: column: reported
    # by line and skipped
    df = logs.read_checked_csv(path, warn=warn, optional=logs.RESULTS_NUMERIC)
    if JOB_ID not in df.columns:
        df[JOB_ID] = np.arange(len(df))
    jobs = _job_numbers(df[JOB_ID])
    if jobs.isna().any():
        warn(f"{path}: {int(jobs.isna().sum())} row(s) whose {JOB_ID} is not a job number; "
             "skipped")
    df = df[jobs.notna()].assign(**{JOB_ID: jobs[jobs.notna()].astype(int)})
    if df[JOB_ID].duplicated().any():
        warn(f"{path}: {int(df[JOB_ID].duplicated().sum())} duplicated {JOB_ID} row(s); the "
             "last of each kept")
        df = df.drop_duplicates(JOB_ID, keep="last")
    if OBJECTIVE not in df.columns:
        warn(f"{path}: no '{OBJECTIVE}' column; every trial counts as failed")
        df[OBJECTIVE] = FAILED_PREFIX
    raw = df[OBJECTIVE].astype(str)
    df["failed"] = raw.str.startswith(FAILED_PREFIX) | raw.str.lower().isin(("nan", ""))
    value = pd.to_numeric(df[OBJECTIVE].where(~df["failed"]), errors="coerce")
    # -val_loss, so never above 0 (logs.RANGES); text that is no F_<reason> is no result
    bad = ~df["failed"] & (value.isna() | value.map(lambda v: logs.out_of_range(OBJECTIVE, v)))
    for job, v in zip(df.loc[bad, JOB_ID], raw[bad]):
        warn(f"{path}, {JOB_ID} {job}: {OBJECTIVE}={v!r} is neither -val_loss (a number <= 0) "
             f"nor {FAILED_PREFIX}_<reason>; skipped")
    df[OBJECTIVE] = value
    return df[~bad]


def _read_curves(path: Path) -> pd.DataFrame:
    # A line cut by a killed search, text in a numeric cell, a value outside the schema's
    # range (a negative time or loss): reported by line and skipped, as the resume does.
    try:
        df = logs.read_checked_csv(path, (JOB_ID, EPOCH), (VAL_LOSS, EPOCH_SECONDS, T_END),
                                   warn=warn, optional=tuple(logs.LC_TYPES))
    except logs.LogError as e:
        warn(f"{e}; learning curves ignored")
        return _empty_curves()
    key = [JOB_ID, EPOCH]
    if df.duplicated(key).any():
        warn(f"{path}: {int(df.duplicated(key).sum())} duplicated ({JOB_ID}, {EPOCH}) row(s); "
             "the first of each kept")
        df = df.drop_duplicates(key, keep="first")
    if DEVICES not in df.columns:
        warn(f"{path}: no '{DEVICES}' column; assuming 1 device per trial")
        df[DEVICES] = 1
    if T_START not in df.columns:
        df[T_START] = df[T_END] - df[EPOCH_SECONDS]
    for c in (TRAIN_LOSS, WORKER):
        if c not in df.columns:
            df[c] = np.nan
    df[VAL_LOSS] = pd.to_numeric(df[VAL_LOSS], errors="coerce")
    df[DEVICE_HOURS] = df[EPOCH_SECONDS] * df[DEVICES] / 3600.0
    # Order of completion across all trials: the order compute was spent in.
    return df.sort_values([T_END, JOB_ID, EPOCH], kind="mergesort").reset_index(drop=True)


def _empty_curves() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float) for c in (*CURVE_COLUMNS, DEVICE_HOURS)})


def read_metadata(path: Path, quiet: bool = False) -> dict:
    """A search's metadata.json checked against its schema (:class:`experiments.logs.
    SearchMetadata`): a key of the wrong type or range (workers "abc", a segments entry
    without numbers, an end before the start) is reported, unless ``quiet``, and left out, so
    that what needs it falls back as when it is missing. {} when there is no file; raises
    :class:`experiments.logs.LogError` when it is not UTF-8 JSON holding an object."""
    return logs.read_checked_json(path, logs.SearchMetadata,
                                  (lambda msg: None) if quiet else warn) or {}


def load_search(path: Path, method: str | None = None, seed: int | None = None) -> SearchLogs:
    """Read one ``<method>/seed<k>/`` folder. Raises MissingLogsError if it holds no log."""
    path = Path(path)
    method = method or path.parent.name
    if seed is None:
        m = SEED_DIR.match(path.name)
        seed = int(m.group(1)) if m else 0
    files = {n: path / n for n in (RESULTS_CSV, LEARNING_CURVES_CSV, METADATA_JSON)}
    if not any(f.exists() for f in files.values()):
        raise MissingLogsError(f"no HPO logs in {path}")
    metadata = {}
    if files[METADATA_JSON].exists():
        try:
            metadata = read_metadata(files[METADATA_JSON])
        except logs.LogError as e:
            warn(f"{e}; metadata ignored")
    else:
        warn(f"{path}: no {METADATA_JSON}; workers, times and settings unknown")
    curves = _read_curves(files[LEARNING_CURVES_CSV]) \
        if files[LEARNING_CURVES_CSV].exists() else _empty_curves()
    if not files[LEARNING_CURVES_CSV].exists():
        warn(f"{path}: no {LEARNING_CURVES_CSV}; compute and best-so-far curves unavailable")
    results = None
    if files[RESULTS_CSV].exists():
        try:
            results = _read_results(files[RESULTS_CSV])
        except logs.LogError as e:
            warn(f"{e}; trials taken from {LEARNING_CURVES_CSV}")
    if results is None:
        if not files[RESULTS_CSV].exists():
            warn(f"{path}: no {RESULTS_CSV}; trials taken from {LEARNING_CURVES_CSV}")
        results = pd.DataFrame({JOB_ID: pd.Series(dtype=curves[JOB_ID].dtype),
                                OBJECTIVE: pd.Series(dtype=float),
                                "failed": pd.Series(dtype=bool)})
    if metadata and metadata.get(MD_END) is None:
        warn(f"{path}: metadata has no {MD_END} (interrupted search?); "
             f"duration taken from the last epoch")
    if metadata.get(MD_STATUS) not in (None, MD_COMPLETE):
        warn(f"{path}: search status is {metadata.get(MD_STATUS)!r}")
    return SearchLogs(method, seed, path, results, curves, metadata)


def _method_order(name: str) -> tuple:
    known = ("default", "random", "hyperband", "asha", "asha_bo", "asha_deephyper",
             "async_hyperband", "bohb", "bo")
    return (known.index(name) if name in known else len(known), name)


def load_scale(scale_dir: Path) -> dict[str, dict[int, SearchLogs]]:
    """All searches under ``results/<scale>/``: {method: {seed: SearchLogs}}, methods in the
    paper's order, seeds ascending. Raises MissingLogsError if there are none. The replay
    folder (:data:`NOT_METHOD_DIRS`) and plain files are not methods and are skipped."""
    scale_dir = Path(scale_dir)
    runs: dict[str, dict[int, SearchLogs]] = {}
    if scale_dir.is_dir():
        for mdir in sorted(p for p in scale_dir.iterdir()
                           if p.is_dir() and p.name not in NOT_METHOD_DIRS):
            seeds = {}
            for sdir in sorted(p for p in mdir.iterdir() if p.is_dir()):
                m = SEED_DIR.match(sdir.name)
                if not m:
                    continue
                try:
                    seeds[int(m.group(1))] = load_search(sdir, mdir.name, int(m.group(1)))
                except MissingLogsError:
                    warn(f"{sdir}: empty search folder skipped")
            if seeds:
                runs[mdir.name] = dict(sorted(seeds.items()))
    if not any(m != DEFAULT_METHOD for m in runs):
        raise MissingLogsError(f"no HPO logs under {scale_dir}")
    return dict(sorted(runs.items(), key=lambda kv: _method_order(kv[0])))


def _read_lctable(path: Path, what: str) -> pd.DataFrame | None:
    """A learning-curve table's rows of each configuration's first training (replicate 0;
    the other replicates measure training noise), or None (with a warning when the file is
    not a table)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:  # a cut line, text in a numeric cell, a negative loss or time: reported and skipped
        df = logs.read_checked_csv(path, (TABLE_CONFIG_ID, EPOCH), (VAL_LOSS,), warn,
                                   optional=tuple(logs.TABLE_TYPES), types=logs.TABLE_TYPES)
    except logs.LogError as e:
        warn(f"{e}: not a learning-curve table; no {what} taken from it")
        return None
    if TABLE_REPLICATE in df.columns:
        df = df[pd.to_numeric(df[TABLE_REPLICATE], errors="coerce") == 0]
    return df


def table_default_loss(path: Path) -> float | None:
    """The default configuration's final validation loss in a learning-curve table
    (lctable.csv: configuration 0, its last epoch with status ok); None if the table or
    the configuration is missing."""
    df = _read_lctable(path, "default loss")
    if df is None:
        return None
    d = df[df[TABLE_CONFIG_ID] == 0]
    if TABLE_STATUS in d.columns:
        d = d[d[TABLE_STATUS].astype(str) == OK]
    d = d.dropna(subset=[VAL_LOSS]).sort_values(EPOCH, kind="mergesort")
    return float(d[VAL_LOSS].iloc[-1]) if len(d) else None


def table_final_losses(path: Path) -> pd.Series:
    """Final validation losses of the complete configurations of a learning-curve table:
    {config_id: val_loss at epoch == max_t} (configuration 0, the default, included), with
    max_t from lctable.json next to the table, else the table's largest epoch. A
    configuration counts when its row at max_t has status ok and a finite loss. Empty Series
    if the table is missing or unreadable."""
    path = Path(path)
    df = _read_lctable(path, "reference losses")
    if df is None:
        return pd.Series(dtype=float, name=VAL_LOSS)
    meta = {}
    try:  # lctable.csv -> lctable.json; a damaged max_t is reported and left out
        meta = logs.read_checked_json(path.with_suffix(".json"), logs.TableMetadata, warn) or {}
    except logs.LogError as e:
        warn(f"{e}; max_t taken from the table")
    max_t = meta.get(MAX_T)
    if max_t is None and not len(df):
        return pd.Series(dtype=float, name=VAL_LOSS)
    if max_t is None:
        max_t = int(df[EPOCH].max())
    d = df[df[EPOCH] == max_t]
    if TABLE_STATUS in d.columns:
        d = d[d[TABLE_STATUS].astype(str) == OK]
    d = d.assign(**{VAL_LOSS: pd.to_numeric(d[VAL_LOSS], errors="coerce")})
    d = d[np.isfinite(d[VAL_LOSS])].drop_duplicates(TABLE_CONFIG_ID, keep="last")
    out = d.set_index(TABLE_CONFIG_ID)[VAL_LOSS].sort_index()
    out.attrs[MAX_T] = max_t
    out.attrs[LOSS] = loss_name(meta)  # the loss its trainings used, None if unrecorded
    return out


def loss_name(meta: dict) -> str | None:
    """The name of the loss recorded in a metadata.json or lctable.json (None: unrecorded)."""
    x = meta.get(LOSS)
    return x.get("name") if isinstance(x, dict) else None


def loss_names(runs: dict) -> set:
    """The loss each search's trainings used (metadata ``loss``, None where unrecorded)."""
    return {loss_name(s.metadata) for seeds in runs.values() for s in seeds.values()}


def table_for(runs: dict, path: Path) -> tuple[pd.Series, str]:
    """The final losses of the table at ``path`` (:func:`table_final_losses`) and its name for
    the outputs, when the table has the searches' max_t and loss; a table of another design
    (other max_t) or trained on another loss (lctable.json's ``loss`` is not the one every
    search recorded; a replayed search without one counts as the table's) gives an empty
    Series (a warning; L_ref and targets then come from the searches)."""
    path = Path(path)
    name = f"{path.parent.name}/{path.name}"
    finals = table_final_losses(path)
    t_max = finals.attrs.get(MAX_T)
    searched = {s.max_t for seeds in runs.values() for s in seeds.values()
                if math.isfinite(s.max_t)}
    if len(finals) and t_max is not None and searched and t_max not in searched:
        warn(f"{name}: max_t {t_max}, the searches' {sorted(searched)[0]:g}: a table of "
             "another design, not used for L_ref and the targets")
        return pd.Series(dtype=float, name=VAL_LOSS), f"{name} (another design, not used)"
    # a replayed search that recorded no loss (a peer's, before peers recorded the table's)
    # used the table it was replayed on
    losses = {loss_name(s.metadata) for seeds in runs.values() for s in seeds.values()
              if loss_name(s.metadata) is not None or s.metadata.get(MD_BACKEND) != "replay"}
    if len(finals) and losses and losses != {finals.attrs.get(LOSS)}:
        def said(x):
            return x or "unrecorded"
        warn(f"{name}: trained on loss {said(finals.attrs.get(LOSS))}, the searches on "
             f"{', '.join(sorted(map(said, losses)))}: not used for L_ref and the targets")
        return pd.Series(dtype=float, name=VAL_LOSS), f"{name} (another loss, not used)"
    return finals, name


def trial_table(s: SearchLogs) -> pd.DataFrame:
    """One row per trial (job) of one search: method, seed, job_id, status, final_loss,
    best_loss (min over its epochs), epochs (trained), last_epoch, device_hours, t_start,
    t_end, reason, budget, max_t and every p:<hp> column.

    Status comes from m:status when present; otherwise failed = objective "F..." (or a trial
    whose curve has no finite loss), completed = reached its budget (m:budget, else max_t),
    stopped = fewer epochs. Trials that only appear in learning_curves.csv are 'unfinished'.
    """
    res = s.results.copy()
    c = s.curves
    per = pd.DataFrame({JOB_ID: pd.Series(dtype=res[JOB_ID].dtype)})
    if len(c):
        g = c.groupby(JOB_ID, sort=False)
        per = pd.DataFrame({
            N_EPOCHS: g.size(),
            BEST_LOSS: g[VAL_LOSS].min(),
            "curve_final_loss": g[VAL_LOSS].last(),  # curves are sorted by t_end
            LAST_EPOCH: g[EPOCH].max(),  # > epochs when a job resumed from a checkpoint
            DEVICE_HOURS: g[DEVICE_HOURS].sum(),
            T_START: g[T_START].min(),
            T_END: g[T_END].max(),
        }).reset_index()
    df = res.merge(per, on=JOB_ID, how="outer", indicator=True)
    in_results = df["_merge"] != "right_only"
    df[FINAL_LOSS] = -df[OBJECTIVE]
    if "curve_final_loss" in df.columns:
        df[FINAL_LOSS] = df[FINAL_LOSS].fillna(df["curve_final_loss"].where(~in_results))
        df[BEST_LOSS] = df[BEST_LOSS].fillna(df[FINAL_LOSS])
    else:
        df[BEST_LOSS] = df[FINAL_LOSS]
    for col in (N_EPOCHS, DEVICE_HOURS, T_START, T_END, LAST_EPOCH):
        if col not in df.columns:
            df[col] = np.nan
    if M_EPOCHS in df.columns:  # the writer's count wins only where no curve exists
        df[N_EPOCHS] = df[N_EPOCHS].fillna(pd.to_numeric(df[M_EPOCHS], errors="coerce"))
    df[N_EPOCHS] = df[N_EPOCHS].fillna(0).astype(int)
    df[DEVICE_HOURS] = df[DEVICE_HOURS].fillna(0.0)

    # Status: trust the writer, derive it where missing.
    budget_col = M_BUDGET if M_BUDGET in df.columns else HP_PREFIX + "budget"
    budget = pd.to_numeric(df[budget_col], errors="coerce") if budget_col in df.columns else None
    if budget is None or budget.isna().all():
        budget = pd.Series(s.max_t, index=df.index)
    budget = budget.fillna(s.max_t)
    failed = df["failed"].fillna(False).astype(bool) | df[FINAL_LOSS].isna()
    # The budget counts epochs from the first one: a resumed job reaches it at its last epoch.
    df[LAST_EPOCH] = df[LAST_EPOCH].fillna(df[N_EPOCHS])
    derived = np.where(failed, FAILED,
                       np.where(budget.isna() | (df[LAST_EPOCH] >= budget), OK, STOPPED))
    status = pd.Series(derived, index=df.index, dtype=object)
    if M_STATUS in df.columns:
        given = df[M_STATUS].astype(object).where(df[M_STATUS].notna())
        odd = given.notna() & ~given.isin(STATUSES)
        if odd.any():
            warn(f"{s.path}: {int(odd.sum())} trial(s) whose {M_STATUS} is none of "
                 f"{', '.join(STATUSES[:3])}; their status is derived from the curves")
        status = given.where(given.isin(STATUSES), status)
    status[~in_results] = UNFINISHED
    df["status"] = status
    df[M_BUDGET] = budget
    if M_REASON not in df.columns:
        df[M_REASON] = ""
    df["method"], df["seed"] = s.method, s.seed
    hps = [c for c in df.columns if c.startswith(HP_PREFIX)]
    df["max_t"] = s.max_t
    cols = ["method", "seed", JOB_ID, "status", FINAL_LOSS, BEST_LOSS, N_EPOCHS, LAST_EPOCH,
            DEVICE_HOURS, T_START, T_END, M_REASON, M_BUDGET, "max_t", *hps]
    return df[cols].sort_values(JOB_ID, kind="mergesort").reset_index(drop=True)


def tidy(runs: dict[str, dict[int, SearchLogs]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trials, epochs): all trials and all epoch rows of every search, with method and seed
    columns. Hyperparameter columns keep their p: prefix."""
    trials, epochs = [], []
    for method, seeds in runs.items():
        for seed, s in seeds.items():
            trials.append(trial_table(s))
            e = s.curves.copy()
            e.insert(0, "seed", seed)
            e.insert(0, "method", method)
            epochs.append(e)
    return (pd.concat(trials, ignore_index=True) if trials else pd.DataFrame(),
            pd.concat(epochs, ignore_index=True) if epochs else pd.DataFrame())


def read_json_object(path: Path) -> dict | None:
    """A JSON object from ``path``; None when it is missing, unreadable or not an object."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None
