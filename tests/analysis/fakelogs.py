"""Hand-made HPO logs in the raw format, for tests only (never results).

:func:`write_search` writes exactly the trials it is given, so tests can compute the expected
metrics by hand; :func:`synthetic_scale` writes a few plausible searches for the figure test.
They are written through the log schema and writers of :mod:`experiments.logs`, as the
searches write theirs, and read back by :mod:`analysis.logs`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis import logs as L
from experiments import logs as schema


def write_search(root: Path, scale: str, method: str, seed: int, trials: list[dict],
                 workers: int = 2, start: float = 1000.0, duration: float | None = None,
                 settings: dict | None = None, meta_columns: bool = True,
                 metadata: dict | None = None, backend: str | None = None) -> Path:
    """Write results/<scale>/<method>/seed<k>/ for ``trials`` (backend "replay":
    results/<scale>/replay/<method>/seed<k>/ with metadata "backend": "replay").

    Each trial: {"job_id", "losses": [val loss per epoch], "t0": start second, "seconds":
    per-epoch seconds (default 10), "devices" (1), "worker" (0), "hp": {name: value},
    "status" (ok), "objective" (default -losses[-1]; "F_..." marks a failure),
    "in_results" (True; False = only in learning_curves.csv, still running),
    "first_epoch" (1; more for a job resumed from a checkpoint), "budget" (NaN)}.
    """
    d = Path(root) / scale / (L.REPLAY_DIR if backend == "replay" else "") / method / f"seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    rows, res = [], []
    for t in trials:
        sec, t_end = t.get("seconds", 10.0), t.get("t0", 0.0)
        for e, loss in enumerate(t["losses"], start=t.get("first_epoch", 1)):
            rows.append({L.JOB_ID: t["job_id"], L.EPOCH: e, L.VAL_LOSS: loss,
                         L.TRAIN_LOSS: loss * 0.9, L.EPOCH_SECONDS: sec, L.T_START: t_end,
                         L.T_END: t_end + sec, L.WORKER: t.get("worker", 0),
                         L.DEVICES: t.get("devices", 1)})
            t_end += sec
        if not t.get("in_results", True):
            continue
        r = {f"{L.HP_PREFIX}{k}": v for k, v in t.get("hp", {}).items()}
        r[L.OBJECTIVE] = t.get("objective", -t["losses"][-1] if t["losses"] else "F_empty")
        r[L.JOB_ID] = t["job_id"]
        r[schema.M_TIMESTAMP_SUBMIT] = start + t.get("t0", 0.0)
        r[schema.M_TIMESTAMP_GATHER] = start + t_end
        if meta_columns:
            r[schema.M_STATUS], r[schema.M_REASON] = t.get("status", L.OK), t.get("reason", "")
            r[schema.M_EPOCHS], r[schema.M_BUDGET] = len(t["losses"]), t.get("budget", np.nan)
        res.append(r)
    hps = list(dict.fromkeys(k for r in res for k in r if k.startswith(schema.HP_PREFIX)))
    columns = hps + [c for c in schema.results_columns([]) if any(c in r for r in res)] \
        if res else [schema.OBJECTIVE, schema.JOB_ID]
    schema.write_csv(d / schema.RESULTS_CSV, columns, res)
    schema.write_csv(d / schema.LEARNING_CURVES_CSV, list(L.CURVE_COLUMNS), rows)
    if duration is None:
        duration = max((r[L.T_END] for r in rows), default=0.0)
    md = {L.MD_METHOD: method, L.MD_SETTINGS: settings or {"max_t": 3}, L.MD_SCALE: scale,
          L.MD_SEED: seed, L.MD_EVALUATOR: "process", L.MD_WORKERS: workers,
          L.MD_START: start, L.MD_END: start + duration, L.MD_STATUS: L.MD_COMPLETE,
          L.MD_DECISIONS: [0.01, 0.02, 0.03], L.MD_BACKEND: backend}
    md.update(metadata or {})
    md = {k: v for k, v in md.items() if v is not None}
    schema.write_json(d / schema.METADATA_JSON, md)
    return d


def synthetic_scale(root: Path, scale: str = "smoke", methods=("random", "asha"),
                    seeds=(0, 1), n_trials: int = 8, max_t: int = 9, workers: int = 2,
                    default: bool = True) -> None:
    """Plausible fake searches: loss(e) = a + b / e with random a, b; 'asha' stops the worse
    half of trials at epoch 1 and 3. Two workers take trials in order."""
    for m in methods:
        for k in seeds:
            rng = np.random.default_rng(100 * k + len(m))
            free = [0.0] * workers
            trials = []
            for j in range(n_trials):
                lr, nl = 10 ** rng.uniform(-4, -2), int(rng.integers(1, 4))
                a, b = 1.0 + abs(np.log10(lr) + 3) * 0.5 + 0.1 * nl, rng.uniform(0.5, 2.0)
                n = max_t
                if m == "asha":
                    n = max_t if j % 3 == 0 else (1 if j % 3 == 1 else 3)
                w = int(np.argmin(free))
                losses = [a + b / e for e in range(1, n + 1)]
                trials.append({"job_id": j, "losses": losses, "t0": free[w], "worker": w,
                               "seconds": 5.0 + j % 3, "hp": {"lr": lr, "num_layers": nl,
                                                              "act": ["elu", "relu"][j % 2]},
                               "status": L.OK if n == max_t else L.STOPPED})
                free[w] += n * (5.0 + j % 3)
            write_search(root, scale, m, k, trials, workers=workers,
                         settings={"max_t": max_t, "grace": 1, "eta": 3})
    if default:
        write_search(root, scale, L.DEFAULT_METHOD, 0,
                     [{"job_id": 0, "losses": [3.0 + 2.0 / e for e in range(1, max_t + 1)],
                       "hp": {}}], workers=1, settings={"max_t": max_t})


REPLAY_METHODS = ("random", "hyperband", "asha", "asha_bo", "async_hyperband", "bohb", "bo",
                  "optuna_tpe", "optuna_asha", "optuna_hyperband")


def replay_scale(root: Path, scale: str = "smoke", methods=REPLAY_METHODS, seeds=range(3),
                 n_trials: int = 12, max_t: int = 3, workers: int = 4,
                 default: bool = True) -> None:
    """Plausible fake replayed searches under results/<scale>/replay/ (metadata backend
    "replay"): loss(e) = a + b / e, methods later in ``methods`` find slightly lower a;
    methods with "asha" or "hyperband" in their name stop two trials in three after epoch 1.
    Plus one default run per seed when ``default``."""
    for i, m in enumerate(methods):
        stops = "asha" in m or "hyperband" in m
        for k in seeds:
            rng = np.random.default_rng(1000 * k + i)
            free = [0.0] * workers
            trials = []
            for j in range(n_trials):
                a = 1.0 + rng.uniform(0, 1.0) * (1.0 - 0.03 * i)
                n = 1 if stops and j % 3 else max_t
                w = int(np.argmin(free))
                sec = float(rng.uniform(20, 40))
                trials.append({"job_id": j, "losses": [a + rng.uniform(0.5, 1.5) / e
                                                       for e in range(1, n + 1)],
                               "t0": free[w], "worker": w, "seconds": sec,
                               "hp": {"lr": float(10 ** rng.uniform(-4, -2))},
                               "status": L.OK if n == max_t else L.STOPPED})
                free[w] += n * sec
            write_search(root, scale, m, k, trials, workers=workers, backend="replay",
                         settings={"max_t": max_t, "grace": 1, "eta": 3})
    if default:
        for k in seeds:
            write_search(root, scale, L.DEFAULT_METHOD, k,
                         [{"job_id": 0, "losses": [2.5 + 1.0 / e for e in range(1, max_t + 1)],
                           "seconds": 30.0}], workers=1, backend="replay",
                         settings={"max_t": max_t})


def per_seed_metrics(factor: dict[str, float], n: int = 200, seed: int = 0):
    """A per_seed.csv table (analysis.replay) of hand-made claim-2 metrics: device-hours to the
    top 5 % of method m = base x factor[m] x noise (paired by seed), to the top 1 % twice that
    (never, inf, past the 2-hour budget)."""
    import math

    import pandas as pd

    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.5, n)
    rows = []
    for m, f in factor.items():
        noise = rng.lognormal(0, 0.1, n)
        for s in range(n):
            c = base[s] * f * noise[s]
            rows.append({"method": m, "seed": s, "budget_dh": 2.0, "dh_to_top5": c,
                         "dh_to_top1": 2 * c if 2 * c <= 2.0 else math.inf})
    return pd.DataFrame(rows)
