"""Metrics of a search from its tidy logs: accuracy, compute, accuracy per compute.

Symbols (device-hours = sum over epochs of epoch_seconds x devices / 3600):
    L*(c)       best-so-far validation loss after c device-hours, epochs taken in order of t_end
    L_best      the search's best validation loss (min over every epoch of every trial)
    L_default   the untuned default configuration's final (or best) validation loss
    improvement = 100 (L_default - L_best) / L_default                      [%]
    improvement per compute = improvement / total device-hours of the search [% / device-hour]
    c(target)   device-hours until L*(c) <= target; target = (1 + tol) * best loss of any
                method at this scale (tol = 5 % by default)
    utilisation = sum(epoch_seconds) / (workers x (end_time - start_time))

Across seeds every metric is summarised by its median and a 95 % bootstrap interval of the
median, with a fixed RNG seed so that the tables are byte-identical on rerun.
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
    LAST_EPOCH,
    MD_DECISIONS,
    MD_TRAINABLE,
    N_EPOCHS,
    OK,
    STOPPED,
    T_END,
    T_START,
    UNFINISHED,
    VAL_LOSS,
    Search,
)

TARGET_TOL = 0.05  # target = within 5 % of the best loss any method found at this scale
N_BOOT = 2000
CI_LEVEL = 0.95
BOOT_SEED = 0  # fixed: tables must be byte-identical on rerun


def best_so_far(curves: pd.DataFrame) -> pd.DataFrame:
    """Best-so-far loss against cumulative compute and wall time.

    curves: epoch rows of one search (val_loss, device_hours, t_end), any order.
    Returns one row per epoch, in order of t_end: device_hours (cumulative), wall_hours
    (t_end / 3600), best_loss (running minimum; NaN until the first finite loss). Failed
    epochs (NaN loss) still spend compute.
    """
    c = curves.sort_values(T_END, kind="mergesort")
    best = c[VAL_LOSS].fillna(np.inf).cummin().replace(np.inf, np.nan)
    return pd.DataFrame({
        "device_hours": c[DEVICE_HOURS].cumsum().to_numpy(),
        "wall_hours": (c[T_END] / 3600.0).to_numpy(),
        "best_loss": best.to_numpy(),
    })


def compute_to_target(bsf: pd.DataFrame, target: float) -> tuple[float, float]:
    """(device-hours, wall hours) until the best-so-far loss first reaches ``target``;
    (inf, inf) if it never does. bsf: output of :func:`best_so_far`."""
    hit = bsf.index[bsf["best_loss"] <= target]
    if len(hit) == 0:
        return math.inf, math.inf
    row = bsf.loc[hit[0]]
    return float(row["device_hours"]), float(row["wall_hours"])


def best_on_grid(bsf: pd.DataFrame, grid) -> np.ndarray:
    """L*(c) at each compute ``c`` of ``grid`` (device-hours): the best-so-far loss of the
    last epoch that ended within c. +inf before the first finite loss; after the search's
    last epoch its final best is held (a finished search cannot improve).
    bsf: output of :func:`best_so_far`. Returns shape (len(grid),)."""
    cum = bsf["device_hours"].to_numpy(float)  # (n_epochs,), non-decreasing
    best = bsf["best_loss"].to_numpy(float)
    best = np.append(np.inf, np.where(np.isnan(best), np.inf, best))  # index 0: nothing yet
    return best[np.searchsorted(cum, np.asarray(grid, dtype=float), side="right")]


def target_loss(best_losses, tol: float = TARGET_TOL) -> float:
    """Within ``tol`` (relative) of the best of ``best_losses``; NaN if there are none."""
    v = np.asarray([x for x in best_losses if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan
    best = v.min()
    return float(best + tol * abs(best))


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


def utilisation(s: Search) -> float:
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


def bootstrap_ratio_of_medians(num, den, n_boot: int = N_BOOT, level: float = CI_LEVEL,
                               seed: int = BOOT_SEED) -> tuple[float, float, float]:
    """(r, lo, hi): r = median(num) / median(den) and a ``level`` percentile-bootstrap
    interval, resampling the two samples independently (different searches). inf is allowed
    ("never reached": x / inf = 0, inf / x = inf); replicates with inf / inf are undefined
    and left out. One value in either sample -> (r, NaN, NaN)."""
    a, b = (np.asarray(x, dtype=float) for x in (num, den))
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan

    def ratio(x, y):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.divide(x, y)

    r = float(ratio(np.median(a), np.median(b)))
    if len(a) < 2 or len(b) < 2:
        return r, math.nan, math.nan
    rng = np.random.default_rng(seed)
    ma = np.median(a[rng.integers(0, len(a), size=(n_boot, len(a)))], axis=1)  # (n_boot,)
    mb = np.median(b[rng.integers(0, len(b), size=(n_boot, len(b)))], axis=1)
    reps = ratio(ma, mb)
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


def per_seed_metrics(runs: dict, trials: pd.DataFrame, default_ref: str = "final",
                     tol: float = TARGET_TOL, target: float | None = None,
                     default_loss: float | None = None,
                     ) -> tuple[pd.DataFrame, dict]:
    """One row per (method, seed) with every summary metric, and a dict of scale-wide
    references (default_loss, target). The default method itself is not a row.
    ``target`` (an absolute loss) overrides the best-of-all-methods + tol target;
    ``default_loss`` overrides L_default from the default method's logs."""
    ref = default_loss if default_loss is not None else default_reference(runs, default_ref)
    searches = [(m, k, s) for m, seeds in runs.items() if m != DEFAULT_METHOD
                for k, s in seeds.items()]
    bests = {}
    for m, k, _ in searches:
        t = trials[(trials["method"] == m) & (trials["seed"] == k)]
        bests[(m, k)] = float(t["best_loss"].min()) if t["best_loss"].notna().any() else math.nan
    if target is None:
        target = target_loss(bests.values(), tol)
    else:
        tol = math.nan  # an absolute target, not relative to the best
    rows = []
    for m, k, s in searches:
        t = trials[(trials["method"] == m) & (trials["seed"] == k)]
        bsf = best_so_far(s.curves)
        dh = float(s.curves[DEVICE_HOURS].sum())
        c_dh, c_wall = compute_to_target(bsf, target) if np.isfinite(target) else (math.nan,) * 2
        imp = improvement_pct(bests[(m, k)], ref) if ref is not None else math.nan
        dec = s.metadata.get(MD_DECISIONS) or []
        rows.append({
            "method": m, "seed": k, **trial_counts(t),
            "best_loss": bests[(m, k)],
            "device_hours": dh,
            "wall_hours": s.duration / 3600.0,
            "improvement_pct": imp,
            "improvement_per_dh": imp / dh if dh > 0 else math.nan,
            "dh_to_target": c_dh,
            "wall_h_to_target": c_wall,
            "utilisation": utilisation(s),
            "decision_ms": 1000.0 * float(np.median(dec)) if len(dec) else math.nan,
            "workers": s.workers,
        })
    # Logs of a synthetic test function must never pass for MLPF results: flag them.
    others = sorted({str(s.metadata[MD_TRAINABLE]) for _, _, s in searches
                     if s.metadata.get(MD_TRAINABLE, "mlpf") != "mlpf"})
    refs = {"default_loss": ref if ref is not None else math.nan, "target": target,
            "target_tol": tol, "default_ref": default_ref, "trainables": ", ".join(others)}
    return pd.DataFrame(rows), refs


# Columns summarised with a bootstrap interval; the others get the median only.
CI_COLUMNS = ("best_loss", "improvement_pct", "improvement_per_dh", "dh_to_target",
              "device_hours", "utilisation")
MEDIAN_COLUMNS = ("started", "completed", "stopped", "failed", "unfinished", "reached_max_t",
                  "epochs",
                  "wall_hours", "wall_h_to_target", "decision_ms")


def best_so_far_table(runs: dict) -> pd.DataFrame:
    """All best-so-far curves in one long table: method, seed, device_hours, wall_hours,
    best_loss (the data behind the key figure, for numbers quoted in text)."""
    parts = []
    for m, seeds in runs.items():
        if m == DEFAULT_METHOD:
            continue
        for k, s in seeds.items():
            b = best_so_far(s.curves)
            b.insert(0, "seed", k)
            b.insert(0, "method", m)
            parts.append(b)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def summarize(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per method: n_seeds, and for each metric its median (column <name>) and,
    for CI_COLUMNS, <name>_lo / <name>_hi (NaN with a single seed)."""
    rows = []
    for m, g in per_seed.groupby("method", sort=False):
        row = {"method": m, "n_seeds": int(len(g))}
        for col in CI_COLUMNS:
            row[col], row[col + "_lo"], row[col + "_hi"] = bootstrap_median(g[col])
        for col in MEDIAN_COLUMNS:
            v = g[col].dropna()
            row[col] = float(np.median(v)) if len(v) else math.nan
        rows.append(row)
    return pd.DataFrame(rows)
