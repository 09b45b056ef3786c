"""A surrogate of the learning-curve table: any configuration of the space -> its learning
curve, epoch seconds and failure, with the training noise the table's replicates measured.

    python -m experiments.surrogate --scale small --table results/small/lctable.csv
        # 5-fold held-out validation: Spearman and MAE per rung against the seed noise;
        # writes <table>.surrogate.json (the report) and <table>.surrogate_heldout.csv
    ... --variants      # the same for every model of MODELS, compared; in the report too
    python -m experiments.surrogate --scale small --table results/small/lctable.csv \
        --rank-check results/small/replay results/small/replay_surrogate
        # Kendall's tau of the methods' rankings in the two replays (nearest row, surrogate)

Model (scikit-learn): extremely randomised trees (``ExtraTreesRegressor``) on the
configuration's coordinates in [0, 1] (:meth:`experiments.table.Table.features`) and two
numbers its learning rate schedule implies (:func:`schedule_features`), one forest
with ``2 max_t`` outputs (log val_loss and log train_loss at every epoch, so a predicted curve
is an average of recorded curves and keeps their shape), one for the log of the median epoch
seconds (times the table's median profile over epochs), and a classifier for a failed training
(diverged, out of memory). Losses are capped at :data:`LOSS_CAP` before the log: a training at
10 or at 1e9 is equally useless, and the cap keeps such curves from dominating the fit.

Variants (:data:`MODELS`, the issue's "per-rung models and rank or log targets"): the forest
above (``forest``, the default: what replays and :func:`open_lookup` use unless a model is
named), or one forest per epoch on the log val_loss (``per_rung_log``) or on its rank
(``per_rung_rank``: the rank of the loss among the training configurations at that epoch,
scaled to [0, 1]; a predicted rank is mapped back to a loss by the quantiles of the training
configurations' log losses at that epoch, so its MAE is reportable). The per-epoch models are
fitted at every epoch so that a world has whole curves; validation scores those of the rungs,
so they are the per-rung models. Train loss, epoch seconds and failures are modelled the same
in every variant. ``Surrogate(table, model=...)`` and ``open_lookup(..., model=...)`` select
one; ``--variants`` validates each with the same folds and seeds and records the comparison
in the report (``variants``), where :func:`open_lookup` finds whether a variant is accepted.

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

Judged by its use (:func:`method_rank_check`): the same searches replayed on the nearest-row
lookup and on the surrogate (``experiments.campaign --backend replay --lookup nearest|surrogate
--out DIR``) should rank the methods alike; Kendall's tau over the methods of their medians over
seeds (best loss reached, or device-seconds until a target loss), read from the raw logs.
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
from experiments.table import STATUS, TABLE_CONFIG, TABLE_DISTANCE, Entry, Table, TableError

LOSS_CAP = 10.0  # losses above it count as 10 (an untrained model is at ~3)
N_TREES = 200
MIN_SECONDS = 1e-6  # the shortest epoch time the cost model takes (a clock may read 0 s)
ACCEPT = {"spearman": 0.8, "spearman_best_quarter": 0.5, "top5_recall": 0.5}
LOOKUPS = ("nearest", "surrogate")
NOISE_NEIGHBOURS = 5  # replicated configurations, nearest in final loss, a residual comes from
BISTABLE_RATIO = 3.0  # replicates' final losses further apart than this: two outcomes, no noise
MODELS = {  # name -> what models the val_loss curve (see the module docstring)
    "forest": "one forest, 2 max_t outputs: log val_loss and log train_loss at every epoch",
    "per_rung_log": "one forest per epoch on log val_loss",
    "per_rung_rank": "one forest per epoch on the rank of val_loss among the training "
                     "configurations, mapped back by their loss quantiles",
}
DEFAULT_MODEL = "forest"  # what replays use


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


def rank_targets(logv: np.ndarray) -> np.ndarray:
    """(n, max_t) losses -> each one's rank among the n at its epoch, scaled to [0, 1] (0 the
    lowest; ties share their mean rank)."""
    from scipy.stats import rankdata

    n = len(logv)
    return (rankdata(logv, axis=0) - 1.0) / max(1, n - 1)


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
    replicates give the noise); ``model`` one of :data:`MODELS`."""

    def __init__(self, table: Table, seed: int = 0, n_trees: int = N_TREES,
                 exclude: set[int] | None = None, model: str = DEFAULT_MODEL):
        if model not in MODELS:
            raise ValueError(f"unknown surrogate model {model!r}; choose one of "
                             f"{', '.join(MODELS)}")
        self.table, self.seed, self.n_trees, self.model = table, int(seed), int(n_trees), model
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
        logv, logt = log_curves(ok, t, 0), log_curves(ok, t, 1)  # (n_ok, max_t) each
        # a clock may read 0 s for a tiny model's epoch: floor the times (log and ratios below)
        secs = np.maximum(np.array([[c[2] for c in e.curve[:t]] for e in ok]), MIN_SECONDS)
        med = np.median(secs, axis=1)
        self.profile = np.median(secs / med[:, None], axis=0)  # epoch 1 is slower, ...
        kw = dict(n_estimators=self.n_trees, random_state=self.seed, n_jobs=1)

        def forest(y):
            return _Trees(ExtraTreesRegressor(min_samples_leaf=2, max_features=1.0,
                                              **kw).fit(x, y))

        self._per_epoch, self._levels = None, None
        if self.model == "forest":
            self._curves = forest(np.hstack([logv, logt]))
        else:  # train curves as one forest, val_loss one forest per epoch
            self._curves = forest(logt)
            target = logv if self.model == "per_rung_log" else rank_targets(logv)
            self._per_epoch = [forest(target[:, j]) for j in range(t)]
            if self.model == "per_rung_rank":
                self._levels = logv  # (n_ok, max_t): the quantiles a rank maps back to
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
        if self._per_epoch is not None:
            v = np.array([float(f.predict(x)[0]) for f in self._per_epoch])  # (max_t,)
            if self._levels is not None:
                v = np.array([np.quantile(self._levels[:, j], min(max(v[j], 0.0), 1.0))
                              for j in range(t)])
            y = np.concatenate([v, y])
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
        if s.model != DEFAULT_MODEL:  # only then: replays made before keep their metadata
            out["surrogate"]["variant"] = s.model
        report = _read_report(self.table)
        if report is not None:
            v = report if s.model == DEFAULT_MODEL else \
                (report.get("variants") or {}).get(s.model) or {}
            out["surrogate"]["validation"] = {"accepted": v.get("accepted"),
                                              "folds": report.get("folds"),
                                              "rungs": v.get("rungs")}
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
    failed row) with ``reference.json`` (max_t, source, the source table's sha256 and the
    loss its trainings used: the analysis compares it with the searches'). The analysis takes
    the targets and the best known loss of the replays on this surrogate from it, not from the
    table, whose quantiles the surrogate (an average of recorded curves) need not reach.
    Deterministic: the same table, n and seed give the same bytes."""
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
        f"and {n} Sobol configurations (seed {seed})", "n_configs": n, "sobol_seed": seed,
        "source_sha256": surrogate.table.sha256, logs.LOSS: surrogate.table.meta.get(logs.LOSS)})
    return path


# ---------------------------------------------------------------------------- validation
def report_paths(table: Table) -> tuple[Path, Path]:
    """``lctable.csv`` -> (``lctable.surrogate.json``, ``lctable.surrogate_heldout.csv``)."""
    p = Path(table.path)
    return p.with_suffix(".surrogate.json"), p.with_name(p.stem + ".surrogate_heldout.csv")


def _read_report(table: Table) -> dict | None:
    """The validation report of ``table`` (same sha256), None when there is none; one that is
    not a report (``logs.SurrogateReport``) counts as none, with a warning."""
    if table.path is None:
        return None
    try:
        rep = logs.read_checked_json(report_paths(table)[0], logs.SurrogateReport)
    except logs.LogError as e:
        print(f"warning: {e}; no validation report", file=sys.stderr)
        return None
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


def validate(table: Table, folds: int = 5, seed: int = 0, n_trees: int = N_TREES,
             model: str = DEFAULT_MODEL):
    """K-fold held-out validation of ``model`` (see the module docstring): (report, held-out
    rows). The folds depend on ``seed`` only, so every model is scored on the same folds."""
    from mlpf.paths import shown

    t = table.max_t
    ok = [e for e in table.entries if e.failure is None and len(e.curve) >= t]
    if len(ok) < 2 * folds:
        raise TableError(f"{table.path}: {len(ok)} complete curves, too few for {folds} folds")
    order = np.random.default_rng(seed).permutation(len(ok))
    rows, rungs_at = [], None
    for k in range(folds):
        held = [ok[i] for i in order[k::folds]]
        s = Surrogate(table, seed, n_trees, exclude={e.config_id for e in held}, model=model)
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
    report = {"table": shown(table.path), "table_sha256": table.sha256, "scale": table.scale,
              "model": model, "folds": folds, "seed": seed, "n_trees": n_trees,
              "n_configs": len(ok),
              "n_replicated": len(table.replicates), "loss_cap": LOSS_CAP,
              "criteria": ACCEPT, "accepted": accepted, "rungs": rungs,
              "seconds": {"spearman": _spearman(ps, ts),
                          "mae_rel": float(np.mean(np.abs(ps / ts - 1)))}}
    return report, rows


VARIANT_SCORES = ("n", "spearman", "spearman_best_quarter", "top5_recall", "top5_k", "mae",
                  "mae_log", "mae_ceiling", "mae_over_ceiling")  # per rung, in "variants"


def _rounded(obj, digits: int = 6):
    """Floats to ``digits`` significant digits (a report's numbers, not its noise)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_rounded(v, digits) for v in obj]
    return obj


def validate_variants(table: Table, folds: int = 5, seed: int = 0, n_trees: int = N_TREES,
                      models=tuple(MODELS)):
    """:func:`validate` of every model in ``models`` on the same folds: (the default model's
    report with ``variants``: {model: {description, accepted, rungs: {rung: VARIANT_SCORES}}}
    added, the default model's held-out rows). Acceptance is :func:`accepted_by`, the same
    rule for every model."""
    report, rows, variants = None, None, {}
    for m in dict.fromkeys([DEFAULT_MODEL, *models]):  # the default first: its report gates
        rep, r = validate(table, folds, seed, n_trees, model=m)
        if m == DEFAULT_MODEL:
            report, rows = rep, r
        if m in models:
            variants[m] = {"description": MODELS[m], "accepted": rep["accepted"],
                           "rungs": {k: {c: v.get(c) for c in VARIANT_SCORES}
                                     for k, v in rep["rungs"].items()}}
    return {**report, "variants": _rounded(variants)}, rows


def write_validation(table: Table, report: dict, rows: list[dict]) -> tuple[Path, Path]:
    jpath, cpath = report_paths(table)
    logs.write_json(jpath, report)
    cols = logs.HELDOUT_COLUMNS
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


def print_variants(report: dict) -> None:
    """The ``variants`` of a report, one line per model and rung."""
    def f(v, d=3):
        return "-" if v is None else f"{v:.{d}f}"

    print(f"surrogate variants, {report['folds']}-fold held out on the same folds, "
          f"{report['n_configs']} configurations (accepted: every rung Spearman >= "
          f"{ACCEPT['spearman']} and >= {ACCEPT['spearman_best_quarter']} within the best "
          f"quarter, top-5 % recall at max_t >= {ACCEPT['top5_recall']})")
    print("  model          rung  Spearman  best 1/4  top-5% recall    MAE  ceiling  "
          "MAE/ceiling  accepted")
    for name, v in report["variants"].items():
        for i, (r, x) in enumerate(v["rungs"].items()):
            verdict = "" if i < len(v["rungs"]) - 1 else "yes" if v["accepted"] else "no"
            print(f"  {name if i == 0 else '':<13s}  {r:>4s}  {f(x['spearman']):>8s}  "
                  f"{f(x['spearman_best_quarter']):>8s}  {f(x['top5_recall'], 2):>13s}  "
                  f"{f(x['mae']):>5s}  {f(x['mae_ceiling'], 4):>7s}  "
                  f"{f(x['mae_over_ceiling'], 1):>11s}  {verdict}".rstrip())


def _accepted(report: dict | None, model: str) -> bool | None:
    """Whether ``report`` accepts ``model`` (the default: its own verdict; another: the one in
    its ``variants``); None when the report has no verdict on it."""
    if report is None:
        return None
    if model == DEFAULT_MODEL:
        return bool(report.get("accepted"))
    v = (report.get("variants") or {}).get(model)
    return None if v is None else bool(v.get("accepted"))


def surrogate_accepted(table: Table) -> bool:
    """Whether the validation report next to ``table`` (same sha256) accepts the surrogate."""
    report = _read_report(table)
    return bool(report and report.get("accepted"))


def open_lookup(table: Table, lookup: str, seed: int = 0, force: bool = False,
                model: str = DEFAULT_MODEL):
    """What replays read for ``lookup``: the table itself (``nearest``) or a surrogate
    fitted on it (``surrogate``; its worlds via ``.world(seed)``; ``model`` one of
    :data:`MODELS`). A surrogate whose validation report is missing or does not accept it
    raises TableError unless ``force``."""
    if lookup == "nearest":
        return table
    if lookup != "surrogate":
        raise ValueError(f"unknown lookup {lookup!r}; choose one of {', '.join(LOOKUPS)}")
    if model not in MODELS:
        raise ValueError(f"unknown surrogate model {model!r}; choose one of "
                         f"{', '.join(MODELS)}")
    report = _read_report(table)
    verdict = _accepted(report, model)
    if not force and not verdict:
        why = "no validation report" if report is None else \
            f"no validation of model {model}" if verdict is None else "its validation failed"
        how = "" if model == DEFAULT_MODEL else " --variants"
        raise TableError(f"surrogate of {table.path}: {why}; run python -m experiments."
                         f"surrogate --table {table.path}{how} (or --force-surrogate)")
    return Surrogate(table, seed, model=model)


# ---------------------------------------------------------------------------- judged by use
BEST_LOSS = "best_loss"  # the lowest final loss of a trial that ended: the search's result
TO_TARGET = "device_seconds_to_target"  # device-seconds until the incumbent reached the target
RANK_COLUMNS = (BEST_LOSS, TO_TARGET)
TARGET_QUANTILE = 0.05  # default target: the top 5 % of the world's final losses


def search_metrics(folder: Path, target: float) -> dict:
    """One search's :data:`RANK_COLUMNS` from its raw logs (``learning_curves.csv``,
    ``results.csv``), as the analysis defines them: a trial enters the incumbent at the end of
    its last epoch with that epoch's val_loss, if results.csv says it ended ok or stopped;
    compute is the sum of epoch_seconds x devices over every epoch, in order of t_end.
    Never reaching ``target``: inf; no trial ended: best loss inf."""
    lc = logs.read_learning_curves(folder)
    res = logs.read_results(folder)
    if len(lc) == 0:
        return {BEST_LOSS: math.inf, TO_TARGET: math.inf}
    lc = lc.sort_values(logs.T_END, kind="mergesort") if logs.T_END in lc else lc
    ended = None
    if res is not None and logs.M_STATUS in res.columns:
        ok = res[res[logs.M_STATUS].isin((logs.STATUS_OK, logs.STATUS_STOPPED))]
        ended = set(ok["job_id"].map(logs.job_number))
    devices = lc[logs.DEVICES].fillna(1).to_numpy(float) if logs.DEVICES in lc else 1.0
    cum = np.cumsum(lc[logs.EPOCH_SECONDS].fillna(0).to_numpy(float) * devices)  # (n_epochs,)
    last = ~lc[logs.JOB_ID].duplicated(keep="last").to_numpy()
    val = lc[logs.VAL_LOSS].to_numpy(float)
    enters = last & np.isfinite(val)
    if ended is not None:
        enters &= lc[logs.JOB_ID].isin(ended).to_numpy()
    inc = np.minimum.accumulate(np.where(enters, val, np.inf))  # incumbent after each epoch
    hit = np.flatnonzero(inc <= target)
    return {BEST_LOSS: float(inc[-1]), TO_TARGET: float(cum[hit[0]]) if len(hit) else math.inf}


def world_target(root: Path, table: Table, q: float = TARGET_QUANTILE) -> tuple[float, str]:
    """(the ``q`` quantile of a world's final losses, where they come from): the surrogate's
    own sample (``reference.csv`` that the campaign writes into a surrogate replay's folder),
    else the table's configurations trained to max_t (first training seed)."""
    import pandas as pd

    ref = Path(root) / logs.REFERENCE_CSV
    if ref.is_file():  # the table's format: damaged rows reported and skipped
        try:
            df = logs.read_checked_csv(ref, (logs.TABLE_CONFIG_ID, logs.EPOCH), (logs.VAL_LOSS,),
                                       optional=tuple(logs.TABLE_TYPES), types=logs.TABLE_TYPES)
        except logs.LogError as e:
            raise TableError(str(e)) from None
        if STATUS not in df.columns:
            raise TableError(f"{ref}: not a learning-curve table (no column {STATUS})")
        finals = pd.to_numeric(df.loc[df[STATUS] == logs.STATUS_OK, logs.VAL_LOSS],
                               errors="coerce").dropna().to_numpy()
        where = logs.REFERENCE_CSV
    else:
        finals = np.array([e.curve[table.max_t - 1][0] for e in table.entries
                           if e.failure is None and len(e.curve) >= table.max_t])
        where = "table"
    if not len(finals):
        raise TableError(f"{root}: no final loss to take a target from ({where})")
    return float(np.quantile(finals, q)), where


def replay_metrics(root: Path, target: float):
    """Per-seed :data:`RANK_COLUMNS` of every search under ``root`` (the layout of
    ``experiments.campaign --out``: ``<method>/seed<k>/``): a DataFrame with columns
    method, seed and RANK_COLUMNS, one row per search."""
    import pandas as pd

    rows = []
    for mdir in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        for sdir in sorted(mdir.glob("seed*")):
            if sdir.name[4:].isdigit() and (sdir / logs.LEARNING_CURVES_CSV).is_file():
                rows.append({"method": mdir.name, "seed": int(sdir.name[4:]),
                             **search_metrics(sdir, target)})
    return pd.DataFrame(rows, columns=["method", "seed", *RANK_COLUMNS])


def method_rank_check(nearest, surrogate, column: str = BEST_LOSS) -> dict:
    """Do two worlds rank the methods alike? ``nearest``, ``surrogate``: per-seed metrics
    (DataFrames with columns method, seed and ``column``, lower is better; e.g.
    :func:`replay_metrics`). Each method is summarised by its median of ``column`` over the
    seeds both worlds have for it (paired); over the methods both have, Kendall's tau-b
    (``scipy.stats.kendalltau``) of the two worlds' medians. Returns {column, methods,
    n_seeds, medians: {nearest: {method: v}, surrogate: {...}}, kendall_tau, p_value}; tau and
    p are None with fewer than 2 methods or a ranking without any order."""
    from scipy.stats import kendalltau

    a = nearest[["method", "seed", column]]
    b = surrogate[["method", "seed", column]]
    both = a.merge(b, on=["method", "seed"], suffixes=("_n", "_s"))
    med = both.groupby("method", sort=True)[[f"{column}_n", f"{column}_s"]].median()
    methods = list(med.index)
    tau = p = None
    x, y = med[f"{column}_n"].to_numpy(float), med[f"{column}_s"].to_numpy(float)
    if len(methods) >= 2 and len(set(x)) > 1 and len(set(y)) > 1:
        t, pv = kendalltau(x, y)
        tau, p = (float(t), float(pv)) if np.isfinite(t) else (None, None)
    return {"column": column, "methods": methods,
            "n_seeds": {m: int(n) for m, n in both.groupby("method", sort=True).size().items()},
            "medians": {"nearest": dict(zip(methods, map(float, x))),
                        "surrogate": dict(zip(methods, map(float, y)))},
            "kendall_tau": tau, "p_value": p}


def print_rank_check(checks: list[dict], roots, targets) -> None:
    def f(v):
        return "-" if v is None else ("never" if v == math.inf else f"{v:.4g}")

    print(f"methods ranked by their median over seeds (paired), nearest row ({roots[0]}) vs "
          f"surrogate ({roots[1]})")
    print(f"  target loss: {f(targets[0][0])} ({targets[0][1]}) / {f(targets[1][0])} "
          f"({targets[1][1]})")
    print(f"  {'method':<22s} seeds  " + "  ".join(f"{c + ' (n / s)':>36s}" for c in
                                                  (x["column"] for x in checks)))
    for m in checks[0]["methods"]:
        print(f"  {m:<22s} {checks[0]['n_seeds'][m]:>5d}  " + "  ".join(
            f"{f(x['medians']['nearest'][m]) + ' / ' + f(x['medians']['surrogate'][m]):>36s}"
            for x in checks))
    for x in checks:
        tau = "-" if x["kendall_tau"] is None else \
            f"{x['kendall_tau']:.3f} (p {x['p_value']:.3g})"
        print(f"  Kendall's tau by {x['column']}: {tau} over {len(x['methods'])} methods")


def main(argv=None) -> int:
    from experiments.cli import CliError, Parser, add_scale, positive_int, run_main
    from experiments.table import load_table, table_path

    p = Parser("python -m experiments.surrogate", __doc__)
    add_scale(p)
    p.add_argument("--table", default=None, help="default results/<scale>/lctable.csv")
    p.add_argument("--folds", type=positive_int, default=5)
    p.add_argument("--trees", type=positive_int, default=N_TREES)
    p.add_argument("--variants", action="store_true",
                   help=f"validate every model ({', '.join(MODELS)}) on the same folds, "
                        f"compare them and record the comparison in the report (replays "
                        f"keep the default, {DEFAULT_MODEL})")
    p.add_argument("--rank-check", nargs=2, type=Path, default=None,
                   metavar=("NEAREST", "SURROGATE"),
                   help="two replay folders (<method>/seed<k>/): Kendall's tau of the "
                        "methods' rankings; validates nothing")
    p.add_argument("--target", type=float, default=None,
                   help="with --rank-check: the loss target (default: the top --top of each "
                        "world's final losses)")
    p.add_argument("--top", type=float, default=TARGET_QUANTILE,
                   help=f"with --rank-check: quantile of the target (default "
                        f"{TARGET_QUANTILE})")

    def body() -> int:
        a = p.parse_args(argv)
        if a.folds < 2:
            raise CliError("--folds must be at least 2")
        try:
            table = load_table(Path(a.table) if a.table else table_path(a.scale), a.scale)
            if a.rank_check is not None:
                return rank_check(table, a)
            report, rows = (validate_variants if a.variants else validate)(
                table, a.folds, 0, a.trees)
        except TableError as e:
            raise CliError(str(e)) from None
        print_report(report)
        if a.variants:
            print_variants(report)
        for path in write_validation(table, report, rows):
            print(f"wrote {path}")
        return 0

    def rank_check(table, a) -> int:
        if not 0 < a.top < 1:
            raise CliError(f"--top must be between 0 and 1, got {a.top}")
        for root in a.rank_check:
            if not root.is_dir():
                raise CliError(f"--rank-check: no folder {root}")
        targets = [(a.target, "--target") if a.target is not None else
                   world_target(root, table, a.top) for root in a.rank_check]
        try:
            worlds = [replay_metrics(root, t) for root, (t, _) in zip(a.rank_check, targets)]
        except logs.LogError as e:
            raise CliError(str(e)) from None
        checks = [method_rank_check(*worlds, column=c) for c in RANK_COLUMNS]
        if not checks[0]["methods"]:
            raise CliError("--rank-check: no method with the same seed in both folders")
        print_rank_check(checks, a.rank_check, targets)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
