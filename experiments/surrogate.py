"""A surrogate of the learning-curve table: any configuration of the space -> its learning
curve, epoch seconds and failure, with the training noise the table's replicates measured.

    python -m experiments.surrogate --scale small --table results/small/lctable.csv
        # 5-fold held-out validation: Spearman and MAE per rung against the seed noise;
        # writes <table>.surrogate.json (the report) and <table>.surrogate_heldout.csv

Model (scikit-learn): extremely randomised trees (``ExtraTreesRegressor``) on the
configuration's coordinates in [0, 1] (:meth:`experiments.table.Table.features`) and two
numbers its learning rate schedule implies (:func:`schedule_features`), one forest
with ``2 max_t`` outputs (log val_loss and log train_loss at every epoch, so a predicted curve
is an average of recorded curves and keeps their shape), one for the log of the median epoch
seconds (times the table's median profile over epochs), and a classifier for a failed training
(diverged, out of memory). Losses are capped at :data:`LOSS_CAP` before the log: a training at
10 or at 1e9 is equally useless, and the cap keeps such curves from dominating the fit.

Noise: the replicates of the table (the same configuration trained with other seeds) give
residual curves (a replicate's log curve minus the mean log curve of its configuration, scaled
by sqrt(n / (n - 1))); a simulated training adds one of them, drawn by the *world* from the
replicated configurations whose mean final log loss is nearest the predicted one (the
:data:`NOISE_NEIGHBOURS` nearest): the noise of training depends on where a configuration
ends (a good configuration varies by 1 to 3 %, a poor one by up to 40 %). A replicate set
whose final losses differ by more than a factor :data:`BISTABLE_RATIO` is left out: one of its
trainings stalled or diverged while the others trained, two outcomes rather than noise around
one curve, and its residuals (a factor 5 to 14 at small) would turn a prediction into a loss no
training reached. A world
(:meth:`Surrogate.world`) is one draw of the benchmark: in world ``s`` a configuration always
gets the same residual curve and the same failure draw, whichever method asks (common random
numbers across methods: with the same seed they face the same noise); another world, other
draws. Without replicates the curves are noise-free.

A world has the table's replay interface (``replay(config) -> (Entry, meta)``, ``summary()``,
``max_t``, ``devices``, ``meta``, ``path``), so replayed searches and peers use it in place of
the nearest-row lookup (``--lookup surrogate``); the trial metadata still names the nearest
table row and its distance.

Validation (:meth:`Surrogate.validate`): K-fold over configurations (the replicates of one
configuration stay in its fold); for each rung (grace x eta^k up to max_t) the Spearman rank
correlation of predicted and recorded val_loss, the mean absolute error, both on the loss
(capped) and on its log, and the seed noise at that rung (median over replicated
configurations of the standard deviation across seeds) for comparison.

Acceptance judges the surrogate by what a replay needs of it, the order of configurations,
above all of the good ones (:data:`ACCEPT`, fixed before the upstream-loss table had results):
at every rung the held-out Spearman >= 0.8 over all configurations and >= 0.5 within the best
quarter (by recorded loss at that rung), and at max_t a top-5 % recall >= 0.5 (of the
configurations recorded in the top 5 %, the share the surrogate also puts in its top 5 %). The
mean absolute error is reported beside its noise ceiling, the MAE of a perfect predictor of each
configuration's seed mean against single trainings (:func:`noise_ceiling`), not gated on: no
model of one training's outcome can go below that ceiling.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments import logs
from experiments.table import TABLE_CONFIG, TABLE_DISTANCE, Entry, Table, TableError

LOSS_CAP = 10.0  # losses above it count as 10 (an untrained model is at ~3)
N_TREES = 200
ACCEPT = {"spearman": 0.8, "spearman_best_quarter": 0.5, "top5_recall": 0.5}
LOOKUPS = ("nearest", "surrogate")
NOISE_NEIGHBOURS = 5  # replicated configurations, nearest in final loss, a residual comes from
BISTABLE_RATIO = 3.0  # replicates' final losses further apart than this: two outcomes, no noise


SCHEDULE = ("lr", "batch_size", "lr_decay_rate", "lr_decay_steps")


def schedule_features(params: dict, n_train: int, max_t: int) -> list[float]:
    """Two numbers the learning rate schedule implies (``lr * rate ** (step / steps)`` over
    ``max_t`` epochs of ``ceil(n_train / batch_size)`` steps): log of the last step's rate and
    log of the sum of the rates over all steps (how far the optimiser can move)."""
    lr, rate = float(params["lr"]), float(params["lr_decay_rate"])
    steps = max_t * -(-int(n_train) // max(1, int(params["batch_size"])))
    q = rate ** (1.0 / max(1.0, float(params["lr_decay_steps"])))
    total = lr * steps if q >= 1.0 else lr * (1.0 - q ** steps) / (1.0 - q)
    return [math.log(lr * q ** (steps - 1)), math.log(total)]


def log_curves(entries, max_t: int, column: int = 0) -> np.ndarray:
    """(entries, max_t) log of a curve column (0 val_loss, 1 train_loss), capped at
    :data:`LOSS_CAP`."""
    return np.log(np.clip([[c[column] for c in e.curve[:max_t]] for e in entries], 1e-12,
                          LOSS_CAP))


def _key(config: dict) -> str:
    """A configuration's canonical text (for the world's draws)."""
    return json.dumps({k: logs.native(v) for k, v in sorted(config.items())}, sort_keys=True,
                      default=str)


def _uniform(*parts) -> float:
    """A number in [0, 1) fixed by ``parts`` (stable across processes and runs)."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2.0 ** 64


class _Trees:
    """A fitted scikit-learn forest as flat arrays, for fast one-row prediction: all trees
    walk down together, one numpy step per level (~30x faster than ``predict`` on one row)."""

    def __init__(self, forest):
        lefts, rights, feats, thrs, vals, roots = [], [], [], [], [], []
        off = 0
        for est in forest.estimators_:
            t = est.tree_
            n = t.node_count
            leaf = t.children_left < 0
            lefts.append(np.where(leaf, np.arange(n), t.children_left) + off)
            rights.append(np.where(leaf, np.arange(n), t.children_right) + off)
            feats.append(np.where(leaf, 0, t.feature))
            thrs.append(np.where(leaf, np.inf, t.threshold))
            if t.value.shape[2] == 1:  # regressor: (nodes, outputs, 1)
                v = t.value[:, :, 0]
            else:  # classifier: (nodes, 1, classes) -> class fractions per node
                v = t.value[:, 0, :] / np.maximum(t.value[:, 0, :].sum(axis=1, keepdims=True),
                                                  1e-300)
            vals.append(v)
            roots.append(off)
            off += n
        self.left, self.right = np.concatenate(lefts), np.concatenate(rights)
        self.feat, self.thr = np.concatenate(feats), np.concatenate(thrs)
        self.value = np.concatenate(vals)
        self.roots = np.array(roots)
        self.depth = max(est.tree_.max_depth for est in forest.estimators_)

    def predict(self, x: np.ndarray) -> np.ndarray:
        node = self.roots
        for _ in range(self.depth):
            node = np.where(x[self.feat[node]] <= self.thr[node], self.left[node],
                            self.right[node])
        return self.value[node].mean(axis=0)


@dataclass(frozen=True)
class Prediction:
    """One configuration's predicted mean behaviour."""

    log_val: np.ndarray  # (max_t,) log val_loss (capped) per epoch
    log_train: np.ndarray  # (max_t,) log train_loss per epoch
    seconds: np.ndarray  # (max_t,) epoch seconds
    p_fail: float  # probability that the training fails


class Surrogate:
    """Fitted on a :class:`experiments.table.Table` (replicate 0 of every configuration; the
    replicates give the noise)."""

    def __init__(self, table: Table, seed: int = 0, n_trees: int = N_TREES,
                 exclude: set[int] | None = None):
        self.table, self.seed, self.n_trees = table, int(seed), int(n_trees)
        self.max_t = table.max_t
        self._n_train = None
        if set(SCHEDULE) <= set(table.names):
            from mlpf.scales import SCALES

            sc = SCALES.get(table.scale)
            self._n_train = (table.meta.get("n_train") or (sc.n_train if sc else None))
        entries = [e for e in table.entries if e.config_id not in (exclude or set())]
        self._fit(entries)
        self.residuals, self.residual_levels = self._residuals(exclude or set())

    # ------------------------------------------------------------------ fit
    def features(self, config: dict) -> np.ndarray:
        """The table's coordinates of ``config``, plus :func:`schedule_features` when the
        table searches the learning rate schedule."""
        x = self.table.features(config)
        if self._n_train is None:
            return x
        return np.concatenate([x, schedule_features(self.table.complete(config),
                                                    self._n_train, self.max_t)])

    def _fit(self, entries: list[Entry]) -> None:
        from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor

        t = self.max_t
        ok = [e for e in entries if e.failure is None and len(e.curve) >= t]
        if len(ok) < 2:
            raise TableError(f"{self.table.path}: {len(ok)} complete curves; the surrogate "
                             "needs at least 2")
        x = np.array([self.features(e.params) for e in ok])
        y = np.hstack([log_curves(ok, t, 0), log_curves(ok, t, 1)])
        secs = np.array([[c[2] for c in e.curve[:t]] for e in ok])
        med = np.median(secs, axis=1)
        self.profile = np.median(secs / med[:, None], axis=0)  # epoch 1 is slower, ...
        kw = dict(n_estimators=self.n_trees, random_state=self.seed, n_jobs=1)
        self._curves = _Trees(ExtraTreesRegressor(min_samples_leaf=2, max_features=1.0,
                                                  **kw).fit(x, y))
        self._seconds = _Trees(ExtraTreesRegressor(min_samples_leaf=1, max_features=1.0,
                                                   **kw).fit(x, np.log(med)))
        usable = [e for e in entries if e.failure is not None or len(e.curve) >= t]
        failed = np.array([e.failure is not None for e in usable])
        self.failures = [(e.failure, len(e.curve) + 1, e.failure_seconds)
                         for e in usable if e.failure is not None]
        self._fail = None
        if failed.any() and not failed.all():
            xf = np.array([self.features(e.params) for e in usable])
            clf = ExtraTreesClassifier(min_samples_leaf=2, max_features=1.0, **kw)
            self._fail = _Trees(clf.fit(xf, failed))
        self._p_fail_const = float(failed.mean()) if len(failed) else 0.0
        self.n_fit = len(ok)

    def _residuals(self, exclude: set[int]) -> tuple[np.ndarray, np.ndarray]:
        """Residual log val_loss curves of the replicates, (n, max_t), and the mean final log
        val_loss of each one's configuration, (n,); empty without replicates."""
        t, out, levels = self.max_t, [], []
        self.n_bistable = 0
        for cid, reps in self.table.replicates.items():
            full = [e for e in reps if e.failure is None and len(e.curve) >= t]
            if cid in exclude or len(full) < 2 or len(full) != len(reps):
                continue
            logv = log_curves(full, t)
            if np.ptp(logv[:, -1]) > math.log(BISTABLE_RATIO):
                self.n_bistable += 1
                continue
            r = (logv - logv.mean(axis=0)) * math.sqrt(len(full) / (len(full) - 1))
            out.extend(r)
            levels.extend([float(logv[:, -1].mean())] * len(full))
        return np.array(out).reshape(-1, t), np.array(levels)

    def noise(self, log_final: float, u: float) -> np.ndarray:
        """The residual curve that the uniform draw ``u`` picks among those of the
        :data:`NOISE_NEIGHBOURS` replicated configurations whose mean final log loss is
        nearest ``log_final``; zeros without replicates."""
        if not len(self.residuals):
            return np.zeros(self.max_t)
        levels = np.unique(self.residual_levels)
        k = min(NOISE_NEIGHBOURS, len(levels))
        near = levels[np.argsort(np.abs(levels - log_final), kind="stable")[:k]]
        rows = np.flatnonzero(np.isin(self.residual_levels, near))
        return self.residuals[rows[min(int(u * len(rows)), len(rows) - 1)]]

    # ------------------------------------------------------------------ predict
    def predict(self, config: dict) -> Prediction:
        x = self.features(config)
        y = self._curves.predict(x)
        t = self.max_t
        secs = math.exp(float(self._seconds.predict(x)[0])) * self.profile
        p = self._p_fail_const if self._fail is None else float(self._fail.predict(x)[1])
        return Prediction(y[:t], y[t:], secs, p)

    def world(self, seed: int) -> World:
        """The benchmark drawn with ``seed`` (see the module docstring)."""
        return World(self, int(seed))

    # ------------------------------------------------------------------ validate
    def rungs(self) -> list[int]:
        from experiments.methods import settings_for

        try:
            s = settings_for(self.table.scale)
            grace, eta = s.grace, s.eta
        except (ValueError, KeyError):
            grace, eta = 1, 4
        out, r = [], grace
        while r < self.max_t:
            out.append(r)
            r *= eta
        return [*out, self.max_t]


class World:
    """One draw of the surrogate benchmark: the table's replay interface (see the module
    docstring). ``replay(config)`` is deterministic given the world's seed."""

    def __init__(self, surrogate: Surrogate, seed: int):
        self.surrogate, self.seed = surrogate, seed
        table = surrogate.table
        self.table, self.max_t, self.meta, self.path = table, table.max_t, table.meta, table.path
        self.scale, self.sha256 = table.scale, table.sha256

    @property
    def devices(self) -> int:
        return self.table.devices

    def replay(self, config: dict) -> tuple[Entry, dict]:
        s, key = self.surrogate, _key(config)
        p = s.predict(config)
        near = self.table.lookup(config)
        meta = {TABLE_CONFIG: near.entry.config_id, TABLE_DISTANCE: round(near.distance, 6)}
        log_val = p.log_val + s.noise(float(p.log_val[-1]), _uniform("noise", self.seed, key))
        val = np.exp(log_val)
        train = np.exp(p.log_train)
        curve = tuple((float(v), float(tr), float(sec))
                      for v, tr, sec in zip(val, train, p.seconds))
        if _uniform("fail", self.seed, key) < p.p_fail and s.failures:
            reason, epoch, secs = s.failures[int(_uniform("which", self.seed, key)
                                                 * len(s.failures))]
            k = min(epoch, self.max_t) - 1
            return Entry(-1, dict(config), curve[:k], reason,
                         float(p.seconds[k]) if secs else 0.0), meta
        return Entry(-1, dict(config), curve), meta

    def summary(self) -> dict:
        out = self.table.summary()
        s = self.surrogate
        out.update(lookup="surrogate", world=self.seed, surrogate={
            "model": "ExtraTreesRegressor", "n_trees": s.n_trees, "seed": s.seed,
            "n_fit": s.n_fit, "loss_cap": LOSS_CAP, "n_residuals": len(s.residuals),
            "noise_neighbours": NOISE_NEIGHBOURS, "bistable_ratio": BISTABLE_RATIO,
            "n_bistable": s.n_bistable})
        report = _read_report(self.table)
        if report is not None:
            out["surrogate"]["validation"] = {k: report.get(k) for k in
                                              ("accepted", "folds", "rungs")}
        return out

    def heldout_error(self) -> dict:
        return self.table.heldout_error()


# ---------------------------------------------------------------------------- reference
REFERENCE_CONFIGS = 2048  # Sobol configurations of the reference sample (a power of 2)
REFERENCE_SEED = 1  # another Sobol scramble than the table's (seed 0): points it never saw


def write_reference(surrogate: Surrogate, out_dir: Path, n: int = REFERENCE_CONFIGS,
                    seed: int = REFERENCE_SEED) -> Path:
    """The surrogate benchmark's own configuration distribution: the default (configuration
    0) and ``n`` configurations of a scrambled Sobol sequence over the space, each one's final
    epoch in world 0 (the noise of one training, as the table's rows have), written as
    ``out_dir/reference.csv`` in the table's format (epoch max_t rows; a failed training, its
    failed row) with ``reference.json`` (max_t, source). The analysis takes the targets and
    the best known loss of the replays on this surrogate from it, not from the table, whose
    quantiles the surrogate (an average of recorded curves) need not reach. Deterministic:
    the same table, n and seed give the same bytes."""
    from experiments import table as tb
    from experiments.space import sobol_configs

    world, t = surrogate.world(0), surrogate.max_t
    scale = surrogate.table.scale
    rows = []
    for i, config in enumerate([tb.default_values(scale), *sobol_configs(scale, n, seed)]):
        entry, _ = world.replay(config)
        if entry.failure is not None:  # the failed epoch's row, as the table records it
            cells = (len(entry.curve) + 1, "", "", entry.failure_seconds, tb.STATUS_FAILED,
                     entry.failure)
        else:
            cells = (t, *entry.curve[t - 1], tb.STATUS_OK, "")
        rows.append(dict(zip(tb.BASE_COLUMNS, (i, 0, *cells))))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / logs.REFERENCE_CSV
    logs.write_csv(path, tb.BASE_COLUMNS, rows)
    logs.write_json(path.with_suffix(".json"), {
        "max_t": t, "source": f"surrogate of {surrogate.table.path.parent.name}/"
        f"{surrogate.table.path.name} (sha256 {surrogate.table.sha256}), world 0: the default "
        f"and {n} Sobol configurations (seed {seed})", "n_configs": n, "sobol_seed": seed})
    return path


# ---------------------------------------------------------------------------- validation
def report_paths(table: Table) -> tuple[Path, Path]:
    """``lctable.csv`` -> (``lctable.surrogate.json``, ``lctable.surrogate_heldout.csv``)."""
    p = Path(table.path)
    return p.with_suffix(".surrogate.json"), p.with_name(p.stem + ".surrogate_heldout.csv")


def _read_report(table: Table) -> dict | None:
    if table.path is None:
        return None
    rep = logs.read_json(report_paths(table)[0])
    return rep if rep and rep.get("table_sha256") == table.sha256 else None


def _spearman(a, b) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(spearmanr(a, b)[0])


def seed_noise(table: Table, epoch: int) -> tuple[float | None, float | None]:
    """(median SD across seeds of val_loss, of log val_loss) at ``epoch`` over replicated
    configurations trained that far without failure; (None, None) without replicates."""
    sd, sdl = [], []
    for reps in table.replicates.values():
        if len(reps) < 2 or any(e.failure is not None or len(e.curve) < epoch for e in reps):
            continue
        v = np.clip([e.curve[epoch - 1][0] for e in reps], 1e-12, LOSS_CAP)
        sd.append(float(np.std(v, ddof=1)))
        sdl.append(float(np.std(np.log(v), ddof=1)))
    return (float(np.median(sd)), float(np.median(sdl))) if sd else (None, None)


def noise_ceiling(table: Table, epoch: int) -> float | None:
    """MAE of a perfect predictor of each configuration's seed mean, against its single
    trainings (val_loss capped at :data:`LOSS_CAP`) at ``epoch``, over the replicated
    configurations trained that far; None without replicates."""
    err = []
    for reps in table.replicates.values():
        if len(reps) < 2 or any(e.failure is not None or len(e.curve) < epoch for e in reps):
            continue
        v = np.clip([e.curve[epoch - 1][0] for e in reps], 1e-12, LOSS_CAP)
        err += list(np.abs(v - v.mean()))
    return float(np.mean(err)) if err else None


def order_scores(pred: np.ndarray, true: np.ndarray) -> dict:
    """How well ``pred`` orders ``true`` where a replay needs it: Spearman over all, Spearman
    within the best quarter of ``true``, and top-5 % recall (lower is better)."""
    n = len(true)
    best = true <= np.quantile(true, 0.25) if n else np.zeros(0, bool)
    k = max(1, math.ceil(0.05 * n))
    top_true, top_pred = set(np.argsort(true, kind="stable")[:k]), \
        set(np.argsort(pred, kind="stable")[:k])
    return {"spearman": _spearman(pred, true),
            "spearman_best_quarter": _spearman(pred[best], true[best]),
            "top5_recall": len(top_true & top_pred) / k if n else None, "top5_k": k}


def accepted_by(rungs: dict, max_t: int) -> bool:
    """:data:`ACCEPT` applied to per-rung scores ``{str(rung): {...}}`` (see the docstring)."""
    def ge(v, lim):
        return v is not None and v >= lim

    return bool(rungs) and all(
        ge(v["spearman"], ACCEPT["spearman"])
        and ge(v["spearman_best_quarter"], ACCEPT["spearman_best_quarter"])
        for v in rungs.values()) and ge(rungs.get(str(max_t), {}).get("top5_recall"),
                                        ACCEPT["top5_recall"])


def validate(table: Table, folds: int = 5, seed: int = 0, n_trees: int = N_TREES):
    """K-fold held-out validation (see the module docstring): (report, held-out rows)."""
    t = table.max_t
    ok = [e for e in table.entries if e.failure is None and len(e.curve) >= t]
    if len(ok) < 2 * folds:
        raise TableError(f"{table.path}: {len(ok)} complete curves, too few for {folds} folds")
    order = np.random.default_rng(seed).permutation(len(ok))
    rows, rungs_at = [], None
    for k in range(folds):
        held = [ok[i] for i in order[k::folds]]
        s = Surrogate(table, seed, n_trees, exclude={e.config_id for e in held})
        rungs_at = s.rungs()
        for e in held:
            p = s.predict(e.params)
            for r in rungs_at:
                rows.append({"fold": k, "config_id": e.config_id, "epoch": r,
                             "true": min(e.curve[r - 1][0], LOSS_CAP),
                             "pred": float(math.exp(p.log_val[r - 1])),
                             "true_seconds": float(np.median([c[2] for c in e.curve])),
                             "pred_seconds": float(np.median(p.seconds))})
    rungs = {}
    for r in rungs_at:
        tr = np.array([x["true"] for x in rows if x["epoch"] == r])
        pr = np.array([x["pred"] for x in rows if x["epoch"] == r])
        noise, noise_log = seed_noise(table, r)
        mae, mae_log = float(np.mean(np.abs(pr - tr))), float(np.mean(np.abs(np.log(pr / tr))))
        ceiling = noise_ceiling(table, r)
        rungs[str(r)] = {
            "n": len(tr), **order_scores(pr, tr), "mae": mae, "mae_log": mae_log,
            "mae_ceiling": ceiling, "mae_over_ceiling": mae / ceiling if ceiling else None,
            "seed_noise": noise, "seed_noise_log": noise_log,
            "mae_over_noise": mae / noise if noise else None,
            "mae_log_over_noise": mae_log / noise_log if noise_log else None,
            "median_abs_err": float(np.median(np.abs(pr - tr)))}
    ts = np.array([x["true_seconds"] for x in rows if x["epoch"] == t])
    ps = np.array([x["pred_seconds"] for x in rows if x["epoch"] == t])
    accepted = accepted_by(rungs, t)
    report = {"table": str(table.path), "table_sha256": table.sha256, "scale": table.scale,
              "folds": folds, "seed": seed, "n_trees": n_trees, "n_configs": len(ok),
              "n_replicated": len(table.replicates), "loss_cap": LOSS_CAP,
              "criteria": ACCEPT, "accepted": accepted, "rungs": rungs,
              "seconds": {"spearman": _spearman(ps, ts),
                          "mae_rel": float(np.mean(np.abs(ps / ts - 1)))}}
    return report, rows


def write_validation(table: Table, report: dict, rows: list[dict]) -> tuple[Path, Path]:
    jpath, cpath = report_paths(table)
    logs.write_json(jpath, report)
    cols = ["fold", "config_id", "epoch", "true", "pred", "true_seconds", "pred_seconds"]
    lines = [",".join(cols)] + [",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c])
                                         for c in cols) for r in rows]
    logs.write_atomic(cpath, "\n".join(lines) + "\n")
    return jpath, cpath


def print_report(report: dict) -> None:
    def f(v, d=3):
        return "-" if v is None else f"{v:.{d}f}"

    print(f"surrogate of {report['table']}: {report['n_configs']} configurations, "
          f"{report['folds']}-fold held out, {report['n_replicated']} replicated")
    print("  rung  Spearman  best 1/4  top-5% recall   MAE  ceiling  MAE/ceiling  (log MAE)")
    for r, v in report["rungs"].items():
        print(f"  {r:>4s}  {f(v['spearman']):>8s}  {f(v.get('spearman_best_quarter')):>8s}  "
              f"{f(v.get('top5_recall'), 2):>13s}  {f(v['mae'])}  "
              f"{f(v.get('mae_ceiling'), 4):>7s}  {f(v.get('mae_over_ceiling'), 1):>11s}  "
              f"({f(v['mae_log'])})")
    sec = report["seconds"]
    print(f"  epoch seconds: Spearman {f(sec['spearman'])}, mean relative error "
          f"{100 * sec['mae_rel']:.1f} %")
    print(f"  accepted (every rung: Spearman >= {ACCEPT['spearman']}, within the best quarter "
          f">= {ACCEPT['spearman_best_quarter']}; top-5 % recall at max_t >= "
          f"{ACCEPT['top5_recall']}): {'yes' if report['accepted'] else 'no'}")


def surrogate_accepted(table: Table) -> bool:
    """Whether the validation report next to ``table`` (same sha256) accepts the surrogate."""
    report = _read_report(table)
    return bool(report and report.get("accepted"))


def open_lookup(table: Table, lookup: str, seed: int = 0, force: bool = False):
    """What replays read for ``lookup``: the table itself (``nearest``) or a surrogate
    fitted on it (``surrogate``; its worlds via ``.world(seed)``). A surrogate whose
    validation report is missing or not accepted raises TableError unless ``force``."""
    if lookup == "nearest":
        return table
    if lookup != "surrogate":
        raise ValueError(f"unknown lookup {lookup!r}; choose one of {', '.join(LOOKUPS)}")
    report = _read_report(table)
    if not force and (report is None or not report.get("accepted")):
        why = "no validation report" if report is None else "its validation failed"
        raise TableError(f"surrogate of {table.path}: {why}; run python -m experiments."
                         f"surrogate --table {table.path} (or --force-surrogate)")
    return Surrogate(table, seed)


def main(argv=None) -> int:
    from experiments.cli import CliError, Parser, add_scale, positive_int, run_main
    from experiments.table import load_table, table_path

    p = Parser("python -m experiments.surrogate", __doc__)
    add_scale(p)
    p.add_argument("--table", default=None, help="default results/<scale>/lctable.csv")
    p.add_argument("--folds", type=positive_int, default=5)
    p.add_argument("--trees", type=positive_int, default=N_TREES)

    def body() -> int:
        a = p.parse_args(argv)
        if a.folds < 2:
            raise CliError("--folds must be at least 2")
        try:
            table = load_table(Path(a.table) if a.table else table_path(a.scale), a.scale)
            report, rows = validate(table, a.folds, 0, a.trees)
        except TableError as e:
            raise CliError(str(e)) from None
        print_report(report)
        for path in write_validation(table, report, rows):
            print(f"wrote {path}")
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
