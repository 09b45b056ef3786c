"""Metrics of a search from its tidy logs: accuracy, compute, accuracy per compute.

Symbols (compute c in device-hours = sum over epochs of epoch_seconds x devices / 3600, the
epochs of all trials taken in order of t_end):
    final loss  a trial's validation loss at its last trained epoch (ASHA's stop at epoch 4
                counts with its epoch-4 loss); failed and unfinished trials have none
    I(c)        incumbent after c device-hours: the lowest final loss among trials that had
                ended by then. A still-running trial's epochs never count, however low.
    L_ref       the best loss known on the problem: min of the final (max_t) losses of the
                learning-curve table (results/<scale>/lctable.csv) and of every ended trial of
                every search at the scale
    regret(c)   = I(c) - L_ref                                               [loss]
    L_default   the untuned default configuration's final validation loss
    improvement(c) = 100 (L_default - I(c)) / L_default                      [%]
    B           a search's budget: metadata "budget_device_s" / 3600, else its total compute
    target_q    the q-quantile (linear interpolation) of the table's final losses: the loss
                of the top q of the configuration distribution, q = 1 %, 5 %, 10 %
    c(target)   device-hours until I(c) <= target; inf ("never") if not within the search
    speedup     median over seeds of c(target) of random search / the method's, paired by seed
    utilisation = sum(epoch_seconds) / (workers x (end_time - start_time))

Across seeds every metric is summarised by its median and a 95 % bootstrap interval of the
median (paired by seed for speedups), with a fixed RNG seed so that the tables are
byte-identical on rerun.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.logs import (
    DEFAULT_METHOD,
    DEVICE_HOURS,
    EPOCH_SECONDS,
    FAILED,
    FINAL_LOSS,
    JOB_ID,
    LAST_EPOCH,
    MAX_T,
    MD_DECISIONS,
    MD_TRAINABLE,
    N_EPOCHS,
    OK,
    STOPPED,
    T_END,
    T_START,
    UNFINISHED,
    VAL_LOSS,
    SearchLogs,
)

BUDGET_FRACTIONS = (0.125, 0.25, 0.5, 1.0)  # of each search's budget B
TARGET_QUANTILES = (0.01, 0.05, 0.10)  # top 1 %, 5 %, 10 % of the configuration distribution
REFERENCE = "random"  # speedups are relative to random search
MD_BUDGET_DEVICE_S = "budget_device_s"  # metadata.json: the search's budget, device-seconds
N_BOOT = 2000
CI_LEVEL = 0.95
BOOT_SEED = 0  # fixed: tables must be byte-identical on rerun
INCUMBENT = "incumbent_loss"


def frac_name(f: float) -> str:
    """Column suffix of a budget fraction: 0.125 -> '1/8', 1.0 -> '1'."""
    return "1" if f == 1 else f"1/{round(1 / f)}"


def top_name(q: float) -> str:
    """Column suffix of a target quantile: 0.05 -> 'top5'."""
    return f"top{100 * q:g}"


def ended_final_losses(trials: pd.DataFrame) -> pd.Series:
    """{job_id: final loss} of the trials of one search that ended with a loss (status ok or
    stopped). trials: :func:`analysis.logs.trial_table` rows of that search."""
    t = trials[trials["status"].isin((OK, STOPPED)) & np.isfinite(trials[FINAL_LOSS])]
    return t.set_index(JOB_ID)[FINAL_LOSS]


def incumbent_trace(curves: pd.DataFrame, final_losses: pd.Series) -> pd.DataFrame:
    """The incumbent I(c) against cumulative compute and wall time.

    curves: epoch rows of one search (job_id, device_hours, t_end), any order.
    final_losses: {job_id: final loss} of the ended trials (:func:`ended_final_losses`).
    Returns one row per epoch, in order of t_end: device_hours (cumulative), wall_hours
    (t_end / 3600), incumbent_loss (NaN until the first trial ends with a loss). A trial
    enters at the end of its last epoch, with its final loss; every epoch spends compute.
    """
    c = curves.sort_values(T_END, kind="mergesort")
    ends = ~c[JOB_ID].duplicated(keep="last").to_numpy()  # (n_epochs,): a trial's last epoch
    enter = np.where(ends, c[JOB_ID].map(final_losses).to_numpy(float), np.nan)
    inc = np.minimum.accumulate(np.where(np.isnan(enter), np.inf, enter)) if len(c) else enter
    return pd.DataFrame({
        "device_hours": c[DEVICE_HOURS].cumsum().to_numpy(),
        "wall_hours": (c[T_END] / 3600.0).to_numpy(),
        INCUMBENT: np.where(np.isinf(inc), np.nan, inc),
    })


def search_trace(s: SearchLogs, trials: pd.DataFrame) -> pd.DataFrame:
    """:func:`incumbent_trace` of search ``s``; ``trials``: the tidy trial table (any
    searches; the rows of s are picked by method and seed)."""
    t = trials[(trials["method"] == s.method) & (trials["seed"] == s.seed)]
    return incumbent_trace(s.curves, ended_final_losses(t))


def compute_to_target(trace: pd.DataFrame, target: float) -> tuple[float, float]:
    """(device-hours, wall hours) until the incumbent first reaches ``target`` (inclusive);
    (inf, inf) if it never does; (NaN, NaN) for a NaN target. trace: :func:`incumbent_trace`."""
    if not np.isfinite(target):
        return math.nan, math.nan
    hit = trace.index[trace[INCUMBENT] <= target]
    if len(hit) == 0:
        return math.inf, math.inf
    row = trace.loc[hit[0]]
    return float(row["device_hours"]), float(row["wall_hours"])


def incumbent_on_grid(trace: pd.DataFrame, grid) -> np.ndarray:
    """I(c) at each compute ``c`` of ``grid`` (device-hours): the incumbent after the last
    epoch that ended within c. +inf before the first trial ends; after the search's last
    epoch its final incumbent is held (a finished search cannot improve).
    trace: :func:`incumbent_trace`. Returns shape (len(grid),)."""
    cum = trace["device_hours"].to_numpy(float)  # (n_epochs,), non-decreasing
    inc = trace[INCUMBENT].to_numpy(float)
    inc = np.append(np.inf, np.where(np.isnan(inc), np.inf, inc))  # index 0: nothing yet
    return inc[np.searchsorted(cum, np.asarray(grid, dtype=float), side="right")]


def search_budget(s: SearchLogs) -> tuple[float, str]:
    """(B in device-hours, where it came from): metadata "budget_device_s", else the
    search's total compute."""
    b = s.metadata.get(MD_BUDGET_DEVICE_S)
    if b is not None and np.isfinite(float(b)) and float(b) > 0:
        return float(b) / 3600.0, MD_BUDGET_DEVICE_S
    return float(s.curves[DEVICE_HOURS].sum()), "total compute"


def reference_losses(runs: dict, trials: pd.DataFrame, table: pd.Series | None = None,
                     table_name: str = "lctable.csv",
                     quantiles=TARGET_QUANTILES) -> dict:
    """L_ref and the targets of a scale.

    table: final losses of the learning-curve table's complete configurations
    (:func:`analysis.logs.table_final_losses`), or None/empty. L_ref is the lowest of the
    table's and of every ended trial's final loss in ``runs`` (the default run included);
    the targets are quantiles of the table only (NaN without one). Returns {"l_ref",
    "l_ref_source", "targets": {q: loss}, "target_source", "n_configs"}."""
    table = table if table is not None else pd.Series(dtype=float)
    ended = trials[trials["status"].isin((OK, STOPPED)) & np.isfinite(trials[FINAL_LOSS])]
    best_trial = ended.sort_values([FINAL_LOSS, "method", "seed", JOB_ID],
                                   kind="mergesort").head(1)
    cands = []
    if len(table):
        cands.append((float(table.min()), f"{table_name}, configuration "
                      f"{table.idxmin()} at epoch {table.attrs.get(MAX_T, '?')}"))
    if len(best_trial):
        r = best_trial.iloc[0]
        cands.append((float(r[FINAL_LOSS]), f"{r['method']} seed {r['seed']} trial "
                      f"{r[JOB_ID]} (final loss)"))
    l_ref, src = min(cands, key=lambda x: x[0]) if cands else (math.nan, "")
    v = table.to_numpy(float)
    targets = {q: float(np.quantile(v, q)) if len(v) else math.nan for q in quantiles}
    sampled = table[table.index != 0].to_numpy(float)  # configuration 0 is the default
    return {"l_ref": l_ref, "l_ref_source": src, "targets": targets,
            "target_source": (f"{table_name}: {len(v)} complete configurations at epoch "
                              f"{table.attrs.get(MAX_T, '?')}") if len(v) else "",
            "n_configs": int(len(v)),
            "random_median": float(np.median(sampled)) if len(sampled) else math.nan,
            "best_of_10": best_of_k(sampled, 10)}


def best_of_k(losses, k: int) -> float:
    """Median of the best of ``k`` configurations drawn at random (with replacement) from
    ``losses``: the smallest loss v_(i) (i-th smallest of n) with P(best <= v_(i)) =
    1 - ((n - i) / n)**k >= 1/2. Exact for the empirical distribution; NaN when empty."""
    v = np.sort(np.asarray(losses, float))
    n = len(v)
    for i in range(1, n + 1):
        if 1.0 - ((n - i) / n) ** k >= 0.5:
            return float(v[i - 1])
    return math.nan


def improvement_pct(best: float, reference: float) -> float:
    """Relative reduction of the loss in percent: 100 (reference - best) / reference."""
    if reference is None or not np.isfinite(reference) or reference == 0:
        return math.nan
    return 100.0 * (reference - best) / abs(reference)


def default_reference(runs: dict, which: str = "final") -> float | None:
    """L_default: the default configuration's final (or best) val loss, median over its
    seeds; None if results/<scale>/default/ is missing (improvements are then left empty)."""
    if which not in ("final", "best"):
        raise ValueError(f"which must be 'final' or 'best', not {which!r}")
    values = []
    for s in runs.get(DEFAULT_METHOD, {}).values():
        loss = s.curves[VAL_LOSS].dropna()
        if len(loss):
            values.append(loss.iloc[-1] if which == "final" else loss.min())
        elif s.results["objective"].notna().any():  # no curve: the trial's objective
            values.append(-s.results["objective"].dropna().iloc[-1])
    return float(np.median(values)) if values else None


def utilisation(s: SearchLogs) -> float:
    """Busy fraction of the workers: sum(epoch_seconds) / (workers x duration), with the
    worker-seconds summed over the segments of a resumed search."""
    denom = s.capacity
    if not np.isfinite(denom) or denom <= 0:
        return math.nan
    return float(s.curves[EPOCH_SECONDS].sum() / denom)


def utilisation_over_time(curves: pd.DataFrame, workers: float, duration: float,
                          n_bins: int = 50) -> pd.DataFrame:
    """Utilisation in ``n_bins`` equal windows of [0, duration] seconds.

    Each epoch occupies one worker over [t_start, t_end]; a window's utilisation is the
    occupied time inside it / (workers x window). Returns columns t_lo_hours, t_hi_hours,
    utilisation (one row per window).
    """
    if not (np.isfinite(duration) and duration > 0 and np.isfinite(workers) and workers > 0):
        return pd.DataFrame(columns=["t_lo_hours", "t_hi_hours", "utilisation"])
    edges = np.linspace(0.0, duration, n_bins + 1)  # (n_bins + 1,)
    lo, hi = edges[:-1, None], edges[1:, None]  # (n_bins, 1)
    a = curves[T_START].to_numpy()[None, :]  # (1, n_epochs)
    b = curves[T_END].to_numpy()[None, :]
    busy = np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None).sum(axis=1)  # (n_bins,)
    return pd.DataFrame({"t_lo_hours": edges[:-1] / 3600.0, "t_hi_hours": edges[1:] / 3600.0,
                         "utilisation": busy / (workers * np.diff(edges))})


def trial_counts(trials: pd.DataFrame) -> dict[str, int]:
    """Trials started / completed / stopped early / failed / unfinished, epochs consumed, and
    trials that reached max_t (Hyperband's low-rung jobs complete their budget yet stop short).
    trials: :func:`analysis.logs.trial_table` rows of one search."""
    st = trials["status"]
    full = (trials[LAST_EPOCH] >= trials["max_t"]).sum() if trials["max_t"].notna().any() \
        else math.nan
    return {"started": int(len(trials)), "completed": int((st == OK).sum()),
            "stopped": int((st == STOPPED).sum()), "failed": int((st == FAILED).sum()),
            "unfinished": int((st == UNFINISHED).sum()),
            "epochs": int(trials[N_EPOCHS].sum()), "reached_max_t": full}


def bootstrap_median(values, n_boot: int = N_BOOT, level: float = CI_LEVEL,
                     seed: int = BOOT_SEED) -> tuple[float, float, float]:
    """(median, lo, hi): the median of ``values`` and a ``level`` percentile-bootstrap
    interval of it. Deterministic for a given ``seed``. Infinite values (e.g. "target not
    reached") are allowed; NaNs are dropped. One value -> (v, NaN, NaN)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    med = float(np.median(v))
    if len(v) == 1:
        return med, math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))  # (n_boot, n_seeds)
    meds = np.sort(np.median(v[idx], axis=1))
    alpha = (1.0 - level) / 2.0
    # inverted_cdf picks sample values, no interpolation: exact and safe with inf.
    lo, hi = np.quantile(meds, [alpha, 1.0 - alpha], method="inverted_cdf")
    return med, float(lo), float(hi)


def bootstrap_median_band(values, n_boot: int = N_BOOT, level: float = CI_LEVEL,
                          seed: int = BOOT_SEED, chunk: int = 64,
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`bootstrap_median` of every column of ``values`` (n_seeds, n_points) at once,
    e.g. best-so-far losses of the seeds of one method on a compute grid. The same seed
    resamples serve every column (a band, not independent intervals); column j equals
    ``bootstrap_median(values[:, j])`` when the column has no NaN. Returns (median, lo, hi),
    each (n_points,); lo/hi NaN with a single seed."""
    v = np.asarray(values, dtype=float)
    n, g = v.shape
    med = np.median(v, axis=0) if n else np.full(g, np.nan)
    lo, hi = np.full(g, np.nan), np.full(g, np.nan)
    if n < 2:
        return med, lo, hi
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # (n_boot, n_seeds)
    alpha = (1.0 - level) / 2.0
    for j in range(0, g, chunk):  # bounds memory: (n_boot, n_seeds, chunk) at a time
        meds = np.median(v[:, j:j + chunk][idx], axis=1)  # (n_boot, chunk)
        lo[j:j + chunk], hi[j:j + chunk] = np.quantile(meds, [alpha, 1.0 - alpha], axis=0,
                                                       method="inverted_cdf")
    return med, lo, hi


def bootstrap_paired_ratio_of_medians(num, den, n_boot: int = N_BOOT,
                                      level: float = CI_LEVEL, seed: int = BOOT_SEED,
                                      ) -> tuple[float, float, float]:
    """(r, lo, hi): r = median(num) / median(den) over seeds and a ``level`` percentile
    bootstrap interval that resamples the seeds, keeping each pair (num[i], den[i]) together.
    num, den: (n_seeds,), aligned by seed; pairs with a NaN are dropped. inf is allowed
    ("never reached": x / inf = 0, inf / x = inf); replicates with inf / inf are undefined and
    left out. Fewer than two pairs -> (r, NaN, NaN)."""
    a, b = (np.asarray(x, dtype=float) for x in (num, den))
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    if len(a) == 0:
        return math.nan, math.nan, math.nan

    def ratio(x, y):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.divide(x, y)

    r = float(ratio(np.median(a), np.median(b)))
    if len(a) < 2:
        return r, math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))  # pairs
    reps = ratio(np.median(a[idx], axis=1), np.median(b[idx], axis=1))  # (n_boot,)
    reps = np.sort(reps[~np.isnan(reps)])
    if len(reps) == 0:
        return r, math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha], method="inverted_cdf")
    return r, float(lo), float(hi)


def mean_rank(values) -> np.ndarray:
    """Average rank of each method: values (n_methods, n_seeds, ...) of a loss (lower is
    better; NaN counts as +inf, i.e. no result yet). Within each seed (and grid point) the
    methods are ranked 1..n_methods, ties sharing the mean of their ranks; the ranks are then
    averaged over seeds. Returns (n_methods, ...)."""
    v = np.asarray(values, dtype=float)
    v = np.where(np.isnan(v), np.inf, v)
    below = (v[None, :] < v[:, None]).sum(axis=1)  # (M, S, ...): methods strictly better
    tied = (v[None, :] == v[:, None]).sum(axis=1)  # including itself
    return (1.0 + below + 0.5 * (tied - 1)).mean(axis=1)


def per_seed_metrics(runs: dict, trials: pd.DataFrame, refs: dict,
                     default_ref: str = "final", default_loss: float | None = None,
                     ) -> tuple[pd.DataFrame, dict]:
    """One row per (method, seed) with every summary metric, and the scale-wide references:
    ``refs`` (:func:`reference_losses`) completed with default_loss (L_default) and the
    budget sources. The default method itself is not a row. ``default_loss`` overrides
    L_default from the default method's logs.

    Columns: counts (:func:`trial_counts`), device_hours, budget_dh, wall_hours,
    incumbent_loss (final I), regret (final), regret_<f> and improvement_pct_<f> at f x B for f
    in BUDGET_FRACTIONS (suffix '1/8' ...), improvement_pct (final), dh_to_<top q> and
    wall_h_to_<top q> for each target, utilisation, decision_ms, workers."""
    ref = default_loss if default_loss is not None else default_reference(runs, default_ref)
    l_ref, targets = refs["l_ref"], refs["targets"]
    rows, budget_sources = [], set()
    for m, seeds in runs.items():
        if m == DEFAULT_METHOD:
            continue
        for k, s in seeds.items():
            t = trials[(trials["method"] == m) & (trials["seed"] == k)]
            trace = incumbent_trace(s.curves, ended_final_losses(t))
            budget, src = search_budget(s)
            budget_sources.add(src)
            at = incumbent_on_grid(trace, [f * budget for f in BUDGET_FRACTIONS])
            at = np.where(np.isinf(at), np.nan, at)  # nothing ended yet: no incumbent
            final = incumbent_on_grid(trace, [np.inf])[0]
            final = final if np.isfinite(final) else math.nan
            dec = s.metadata.get(MD_DECISIONS) or []
            row = {"method": m, "seed": k, **trial_counts(t),
                   "device_hours": float(s.curves[DEVICE_HOURS].sum()), "budget_dh": budget,
                   "wall_hours": s.duration / 3600.0, INCUMBENT: final,
                   "regret": final - l_ref,
                   "improvement_pct": improvement_pct(final, ref) if ref is not None
                   else math.nan}
            for f, v in zip(BUDGET_FRACTIONS, at):
                row[f"regret_{frac_name(f)}"] = v - l_ref
                row[f"improvement_pct_{frac_name(f)}"] = improvement_pct(v, ref) \
                    if ref is not None else math.nan
            for q, target in targets.items():
                row[f"dh_to_{top_name(q)}"], row[f"wall_h_to_{top_name(q)}"] = \
                    compute_to_target(trace, target)
            row.update({"utilisation": utilisation(s),
                        "decision_ms": 1000.0 * float(np.median(dec)) if len(dec) else math.nan,
                        "workers": s.workers})
            rows.append(row)
    # Logs of a synthetic test function must never pass for MLPF results: flag them.
    others = sorted({str(s.metadata[MD_TRAINABLE]) for m, seeds in runs.items()
                     for s in seeds.values() if s.metadata.get(MD_TRAINABLE, "mlpf") != "mlpf"})
    out = dict(refs)
    out.update({"default_loss": ref if ref is not None else math.nan,
                "default_ref": default_ref, "budget_source": ", ".join(sorted(budget_sources)),
                "trainables": ", ".join(others)})
    return pd.DataFrame(rows), out


REGRET_AREA_POINTS = 100  # the budget's grid of the regret area: B/100, 2B/100, ..., B
REGRET_FLOOR = 1e-3  # regrets below this fraction of |L_ref| count as it (log10 of 0 is -inf)


def log_regret(values, l_ref: float) -> np.ndarray:
    """log10 of the regret ``values - l_ref``, floored at :data:`REGRET_FLOOR` x |L_ref|."""
    floor = REGRET_FLOOR * max(abs(float(l_ref)), 1e-12)
    return np.log10(np.maximum(np.asarray(values, dtype=float) - float(l_ref), floor))


def regret_areas(runs: dict, trials: pd.DataFrame, refs: dict,
                 n: int = REGRET_AREA_POINTS, traces: dict | None = None) -> pd.DataFrame:
    """One row per (method, seed) of the searches in ``runs`` (not the default): the regret
    area, a secondary endpoint of the claim-2 test (analysis/preregistration.md): the mean over
    the search's budget B of log10(I(c) - L_ref), at c = B/n, 2B/n, ..., B
    (:func:`incumbent_on_grid`; :func:`log_regret` floors the regret). Before any trial has
    ended there is no incumbent: it counts as the median final loss of the table's sampled
    configurations (``refs["random_median"]``: what a first random configuration brings), the
    same for every method; without a table, as the worst incumbent the search reaches.
    Lower is better. ``refs``: :func:`per_seed_metrics`' references (``l_ref``); ``traces``:
    {(method, seed): :func:`search_trace`} where the caller has them already."""
    l_ref = float(refs["l_ref"])
    start = float(refs.get("random_median", math.nan))
    rows = []
    for m, seeds in runs.items():
        if m == DEFAULT_METHOD:
            continue
        for k, s in seeds.items():
            budget, _ = search_budget(s)
            trace = traces[(m, k)] if traces and (m, k) in traces else search_trace(s, trials)
            at = incumbent_on_grid(trace, budget * np.arange(1, n + 1) / n)
            finite = at[np.isfinite(at)]
            none = start if np.isfinite(start) else (finite.max() if len(finite) else math.nan)
            at = np.where(np.isfinite(at), at, none)
            rows.append({"method": m, "seed": k, "regret_area": float(np.mean(
                log_regret(at, l_ref))) if np.isfinite(at).all() else math.nan})
    return pd.DataFrame(rows, columns=["method", "seed", "regret_area"])


def ci_columns(per_seed: pd.DataFrame) -> list[str]:
    """Columns summarised with a bootstrap interval of the median over seeds."""
    fixed = ["device_hours", "budget_dh", INCUMBENT, "regret", "improvement_pct",
             "utilisation"]
    varying = [c for c in per_seed.columns
               if c.startswith(("regret_", "improvement_pct_", "dh_to_"))]
    return [c for c in fixed + varying if c in per_seed.columns]


# Columns summarised by their median only.
MEDIAN_COLUMNS = ("started", "completed", "stopped", "failed", "unfinished", "reached_max_t",
                  "epochs", "wall_hours", "decision_ms")


def incumbent_table(runs: dict, trials: pd.DataFrame) -> pd.DataFrame:
    """All incumbent traces in one long table: method, seed, device_hours, wall_hours,
    incumbent_loss (the data behind the key figure, for numbers quoted in text)."""
    parts = []
    for m, seeds in runs.items():
        if m == DEFAULT_METHOD:
            continue
        for k, s in seeds.items():
            b = search_trace(s, trials)
            b.insert(0, "seed", k)
            b.insert(0, "method", m)
            parts.append(b)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def summarize(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per method: n_seeds; for each metric its median (column <name>) and, for
    :func:`ci_columns`, <name>_lo / <name>_hi (NaN with a single seed); reached_<top q> =
    fraction of seeds whose incumbent reached that target; speedups (:func:`speedups`)."""
    rows = []
    cis = ci_columns(per_seed)
    for m, g in per_seed.groupby("method", sort=False):
        row = {"method": m, "n_seeds": int(len(g))}
        for col in cis:
            row[col], row[col + "_lo"], row[col + "_hi"] = bootstrap_median(g[col])
        for col in (c for c in MEDIAN_COLUMNS if c in g.columns):
            v = g[col].dropna()
            row[col] = float(np.median(v)) if len(v) else math.nan
        for col in (c for c in g.columns if c.startswith("dh_to_")):
            v = g[col].dropna()
            row["reached_" + col[len("dh_to_"):]] = float(np.isfinite(v).mean()) \
                if len(v) else math.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    return out.merge(speedups(per_seed), on="method", how="left") if len(out) else out


def speedups(per_seed: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Per method and target: speedup_<top q> = median c(target) of ``reference`` / the
    method's, over the seeds both have, with a paired bootstrap interval (_lo, _hi), and
    speedup_<top q>_bound = True where the value is only a lower bound.

    0 means the method's median seed never reaches the target ("never"). Where a seed of the
    reference never reaches it, its whole compute stands in for c(target) (a lower bound of
    it); when that changes the reference's median, the speedup is a lower bound ("> x")."""
    cols = [c for c in per_seed.columns if c.startswith("dh_to_")]
    ref = per_seed[per_seed["method"] == reference].set_index("seed")
    rows = []
    for m, g in per_seed.groupby("method", sort=False):
        g = g.set_index("seed")
        seeds = sorted(set(g.index) & set(ref.index))
        row = {"method": m}
        for col in cols:
            name = "speedup_" + col[len("dh_to_"):]
            if not seeds:
                row[name], row[name + "_lo"], row[name + "_hi"] = (math.nan,) * 3
                row[name + "_bound"] = False
                continue
            raw = ref.loc[seeds, col].to_numpy(float)
            censored = np.where(np.isinf(raw), ref.loc[seeds, "device_hours"], raw)
            mine = g.loc[seeds, col].to_numpy(float)
            row[name], row[name + "_lo"], row[name + "_hi"] = \
                bootstrap_paired_ratio_of_medians(censored, mine)
            row[name + "_bound"] = bool(np.median(raw) != np.median(censored)
                                        and np.isfinite(np.median(mine)))
        rows.append(row)
    return pd.DataFrame(rows, columns=["method"] + [
        f"speedup_{c[len('dh_to_'):]}{s}" for c in cols for s in ("", "_lo", "_hi", "_bound")])
