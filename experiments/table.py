"""The learning-curve table: its schema, paths, reader, nearest-configuration lookup and the
held-out check of that lookup.

    python -m experiments.table --scale small --check   # how well the table predicts a config
    python -m experiments.table --scale small --card    # DATACARD.md next to the table
    ... --require 512              # exit 2 unless 512 sampled configurations are complete
    ... --replay-budget 32         # 32 median full trainings in device-seconds (a replay budget)
    ... --replay-budget 32 --live  # half of it: the live budget of the claim-2 test

The table as a benchmark for others (any configuration and epoch -> losses, cost, failure;
seeded samples of the space; the Syne Tune blackbox-repository export) is
:mod:`experiments.lcbench`, which can also use the surrogate (this module depends on the search
space only):

    python -m experiments.lcbench --scale small --query '{"lr": 0.001}' --epoch 4 \
        [--lookup nearest|surrogate]   # one JSON line
    python -m experiments.lcbench --scale small --export-syne DIR

A table (``results/<scale>/lctable.csv``, built by :mod:`experiments.lctable`) holds sampled
configurations of the scale's search space trained to max_t, one row per (configuration,
epoch); configuration 0 is the untuned default. Replayed searches
(:mod:`experiments.backends.replay`) and peers (:mod:`experiments.peers`) do not train: a
trial's epochs are those of the table's configuration nearest to the trial's
(:meth:`Table.lookup`).

Lookup: the nearest complete configuration by the root mean square of per-hyperparameter
differences, each hyperparameter mapped to [0, 1]: log scale for log-uniform ranges, linear for
other ranges, position in the grid for ordinal grids, 0/1 mismatch for categoricals (ties: the
lowest config id). A hyperparameter missing from a configuration takes the default's value
(config 0). A failed recorded training fails the same way at the same epoch. How well the lookup
predicts an unseen configuration is :meth:`Table.heldout_error` (leave-one-out).

Importable API (stable): :func:`load_table`, :class:`Table` with ``lookup(config)``,
``replay(config)``, ``curve(config)``, ``failure(config)``, ``max_t``, ``devices``,
``summary()`` and ``heldout_error()``.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments import logs

# ----------------------------------------------------------------------------- table columns
# The table's schema is the log schema's (experiments.logs, TABLE_*): one row per
# (configuration, replicate, epoch); these are its names here.
CONFIG_ID = logs.TABLE_CONFIG_ID  # 0 = untuned default, 1..N = sampled
REPLICATE = logs.TABLE_REPLICATE  # training seed index: 0 for every configuration, 1.. replicates
EPOCH = logs.EPOCH  # 1-based
VAL_LOSS = logs.VAL_LOSS
TRAIN_LOSS = logs.TRAIN_LOSS
EPOCH_SECONDS = logs.EPOCH_SECONDS  # wall seconds of the epoch (training + validation); a
# table that records logs.EPOCH_CPU_SECONDS replays those instead (:func:`_device_seconds`)
STATUS = logs.TABLE_STATUS  # ok | failed
STATUS_OK, STATUS_FAILED = logs.STATUS_OK, logs.STATUS_FAILED
REASON = logs.TABLE_REASON  # failed rows: diverged | oom | error:<Exception>; empty otherwise
PARAM_PREFIX = logs.HP_PREFIX  # then one column p:<hyperparameter> per searched hyperparameter
BASE_COLUMNS = logs.TABLE_BASE_COLUMNS


def table_path(scale: str) -> Path:
    """Default location of a scale's table: ``results/<scale>/lctable.csv``."""
    from mlpf.paths import RESULTS_DIR

    return RESULTS_DIR / scale / logs.LCTABLE_CSV


def meta_path(table: Path) -> Path:
    """The JSON next to a table: ``lctable.csv`` -> ``lctable.json``."""
    return Path(table).with_suffix(".json")


def columns_for(names) -> tuple[str, ...]:
    return (*BASE_COLUMNS, *(PARAM_PREFIX + n for n in sorted(names)))


def default_values(scale: str) -> dict:
    """The searched hyperparameters of the untuned default configuration of ``scale``."""
    from experiments.space import problem_for
    from mlpf.train import config_for_scale

    cfg = config_for_scale(scale).to_dict()
    return {n: cfg[n] for n in problem_for(scale).hyperparameter_names}


LOOKUP = "nearest"  # the lookup rule, as recorded in metadata
TABLE_CONFIG = "table_config"  # results.csv m:table_config: config id of the replayed curve
TABLE_DISTANCE = "table_distance"  # m:table_distance: its distance to the trial's configuration


class TableError(Exception):
    """A missing or unusable table: one line for the user."""


# ------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Entry:
    """One complete configuration of the table.

    ``curve``: ``[(val_loss, train_loss, epoch_seconds), ...]`` for epochs 1..k: k = max_t, or
    the epochs before a failure; then ``failure`` is its reason and ``failure_seconds`` the
    time the failing epoch ran.
    """

    config_id: int
    params: dict
    curve: tuple
    failure: str | None = None
    failure_seconds: float = 0.0


@dataclass(frozen=True)
class Match:
    """Result of a lookup: the entry and its distance (0 = the same configuration)."""

    entry: Entry
    distance: float


def _as_key(v) -> str:
    """Categorical values compared as text: True, "True", np.True_ all give "True"."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().capitalize()
    return str(v.item() if hasattr(v, "item") else v)


class _Encoder:
    """Maps a configuration to per-hyperparameter coordinates (see the module docstring)."""

    def __init__(self, names: list[str], problem, entries: list[Entry]):
        self.names = names
        self.kind: dict[str, tuple] = {}
        self.scaled_by_rows: list[str] = []  # numeric, not in the space: min-max of the rows
        hps = {} if problem is None else {hp.name: hp for hp in problem.space.values()}
        for n in names:
            hp = hps.get(n)
            kind = type(hp).__name__ if hp is not None else None
            if kind in ("UniformFloatHyperparameter", "UniformIntegerHyperparameter"):
                lo, hi = float(hp.lower), float(hp.upper)
                if hp.log:
                    self.kind[n] = ("log", math.log(lo), math.log(hi))
                else:
                    self.kind[n] = ("lin", lo, hi)
            elif kind == "OrdinalHyperparameter":
                seq = [float(x) for x in hp.sequence]
                self.kind[n] = ("grid", np.asarray(seq))
            elif kind == "CategoricalHyperparameter":
                self.kind[n] = ("cat", [_as_key(c) for c in hp.choices])
            else:  # not in the search space: numbers min-max scaled over the table, else text
                vals = [e.params[n] for e in entries]
                try:
                    f = [float(v) for v in vals]
                    self.kind[n] = ("lin", min(f), max(f))
                    self.scaled_by_rows.append(n)
                except (TypeError, ValueError):
                    self.kind[n] = ("cat", sorted({_as_key(v) for v in vals}))

    def problem(self, params: dict) -> str | None:
        """What makes ``params`` impossible to encode (a hyperparameter of a numeric range that
        is no finite number, or not > 0 on a log scale), None when nothing does."""
        for n in self.names:
            k, v = self.kind[n], params.get(n)
            if k[0] == "cat":
                continue
            try:
                x = float(v)
            except (TypeError, ValueError):
                x = math.nan
            if not math.isfinite(x) or (k[0] == "log" and x <= 0):
                need = "a number > 0 (a log-scale range)" if k[0] == "log" else "a finite number"
                return f"{PARAM_PREFIX}{n}={v!r} is not {need}"
        return None

    def encode(self, params: dict) -> tuple[np.ndarray, list[str]]:
        """(numeric coordinates in [0, 1] (NaN for categoricals), categorical keys)."""
        x = np.full(len(self.names), np.nan)
        cats = [""] * len(self.names)
        for i, n in enumerate(self.names):
            k, v = self.kind[n], params[n]
            if k[0] == "cat":
                cats[i] = _as_key(v)
                continue
            v = float(v)
            if k[0] == "log":
                x[i] = (math.log(v) - k[1]) / (k[2] - k[1]) if k[2] > k[1] else 0.0
            elif k[0] == "lin":
                x[i] = (v - k[1]) / (k[2] - k[1]) if k[2] > k[1] else 0.0
            else:  # grid position, interpolated between grid points
                seq = k[1]
                x[i] = np.interp(v, seq, np.arange(len(seq))) / max(1, len(seq) - 1)
        return x, cats

    def features(self, params: dict) -> np.ndarray:
        """Every coordinate a number in [0, 1]: a categorical is its value's position among
        the choices (a flag: 0 or 1; an unknown value: 0.5)."""
        x, cats = self.encode(params)
        for i, n in enumerate(self.names):
            if self.kind[n][0] == "cat":
                choices = self.kind[n][1]
                x[i] = choices.index(cats[i]) / max(1, len(choices) - 1) \
                    if cats[i] in choices else 0.5
        return x


class Table:
    """A learning-curve table (:mod:`experiments.lctable`) with nearest-configuration lookup.

    Attributes: ``path``, ``scale``, ``max_t``, ``entries`` (complete configurations, by id),
    ``names`` (hyperparameters), ``sha256`` (of the CSV file), ``n_incomplete`` (configurations
    left out because the table stops in the middle of their training), ``meta`` (lctable.json).
    """

    def __init__(self, entries: list[Entry], scale: str, max_t: int, path: Path | None = None,
                 sha256: str | None = None, meta: dict | None = None, n_incomplete: int = 0,
                 replicates: dict[int, list[Entry]] | None = None, *, warn=None):
        if not entries:
            raise TableError(f"{path}: no complete configuration in the table")
        from experiments.space import problem_for

        self.entries = sorted(entries, key=lambda e: e.config_id)
        self.scale, self.max_t, self.path, self.sha256 = scale, int(max_t), path, sha256
        self.meta = meta or {}
        self.n_incomplete = n_incomplete
        # config id -> its complete trainings with other seeds (replicate 0 first)
        self.replicates = replicates or {}
        self.names = sorted(self.entries[0].params)
        try:
            problem = problem_for(scale)
        except ValueError:
            problem = None
        self._enc = _Encoder(self.names, problem, self.entries)
        # a configuration the space cannot hold (lr "abc", or <= 0 on its log scale): left out
        bad = {e.config_id: why for e in self.entries if (why := self._enc.problem(e.params))}
        if bad:
            for cid, why in bad.items():
                (warn or _warn)(f"{path}: config {cid}: {why}; configuration left out")
            self.entries = [e for e in self.entries if e.config_id not in bad]
            self.replicates = {c: r for c, r in self.replicates.items() if c not in bad}
            if not self.entries:
                raise TableError(f"{path}: no usable configuration in the table")
            self._enc = _Encoder(self.names, problem, self.entries)
        self._defaults = next((e.params for e in self.entries if e.config_id == 0), None)
        coded = [self._enc.encode(e.params) for e in self.entries]
        self._x = np.array([c[0] for c in coded])  # (n_entries, n_names)
        self._cats = np.array([c[1] for c in coded], dtype=object)
        self._heldout: dict | None = None

    # -------------------------------------------------------------- lookup
    def _complete(self, config: dict) -> dict:
        missing = [n for n in self.names if n not in config]
        if not missing:
            return config
        if self._defaults is None:  # no default in the table: the trainable's defaults
            self._defaults = default_values(self.scale)
        return {**{n: self._defaults[n] for n in missing}, **config}

    def _distances(self, config: dict) -> np.ndarray:
        x, cats = self._enc.encode(self._complete(config))
        num = ~np.isnan(x)
        d2 = np.nansum((self._x[:, num] - x[num]) ** 2, axis=1)
        cat = ~num
        if cat.any():
            d2 = d2 + (self._cats[:, cat] != np.array(cats, dtype=object)[cat]).sum(axis=1)
        return np.sqrt(d2 / len(self.names))

    def complete(self, config: dict) -> dict:
        """``config`` with every hyperparameter of the table (missing: the default's value)."""
        return self._complete(config)

    def features(self, config: dict) -> np.ndarray:
        """The configuration as numbers in [0, 1], one per hyperparameter (``names`` order):
        the lookup's coordinates, categoricals by position among their choices; missing
        hyperparameters take the default's value."""
        return self._enc.features(self._complete(config))

    @property
    def rows_set_the_scale(self) -> list[str]:
        """Hyperparameters whose lookup coordinates are scaled by the table's own rows
        (numeric ones the search space does not hold): with none, a configuration's
        coordinates come from the space alone, so removing a row changes no other distance."""
        return list(self._enc.scaled_by_rows)

    def lookup(self, config: dict, exclude: int | None = None) -> Match:
        """Nearest complete configuration (ties: lowest id); ``exclude`` a config id."""
        d = self._distances(config)
        if exclude is not None:
            d = d.copy()
            d[[i for i, e in enumerate(self.entries) if e.config_id == exclude]] = np.inf
        i = int(np.argmin(d))  # first minimum: entries are sorted by config id
        return Match(self.entries[i], float(d[i]))

    def curve(self, config: dict) -> list[tuple[float, float, float]]:
        """``[(val_loss, train_loss, epoch_seconds), ...]`` of the nearest configuration:
        max_t epochs, fewer when its training failed (see :meth:`failure`)."""
        return list(self.lookup(config).entry.curve)

    def failure(self, config: dict) -> str | None:
        """Failure reason of the nearest configuration (``diverged``, ``oom``, ...) or None."""
        return self.lookup(config).entry.failure

    def replay(self, config: dict) -> tuple[Entry, dict]:
        """What a simulated trial of ``config`` replays: the nearest entry (a recorded
        training for :func:`experiments.trial.replay_epochs`) and the trial metadata that
        names it (``table_config``, ``table_distance``)."""
        m = self.lookup(config)  # one nearest-neighbour search per trial
        return m.entry, {TABLE_CONFIG: m.entry.config_id,
                         TABLE_DISTANCE: round(m.distance, 6)}

    # -------------------------------------------------------------- held-out error
    def heldout_error(self) -> dict:
        """Leave-one-out error of the lookup on the table itself.

        Each configuration is predicted by the lookup on the other configurations. Reported:
        ``final_mae`` (mean |predicted - recorded| val_loss at max_t, over configurations
        trained to max_t whose prediction is also trained to max_t), ``final_rel`` (the same
        relative to the recorded value), ``final_spearman`` (rank correlation of predicted and
        recorded final val_loss: does the replay keep the order of configurations),
        ``epoch_mae`` / ``epoch_rel`` (over every epoch both curves have), ``failure_agreement``
        (fraction of configurations whose prediction fails iff they fail), and the same MAEs
        for a no-information baseline that predicts the mean curve of the other configurations
        (``baseline_final_mae``, ``baseline_epoch_mae``); the medians of the per-epoch errors
        (``epoch_median_ae``, ``baseline_epoch_median_ae``), which diverged curves do not
        dominate.
        """
        if self._heldout is not None:
            return dict(self._heldout)
        fin_t, fin_p, fin_b, ep_err, ep_rel, ep_base = [], [], [], [], [], []
        agree = 0
        ok = [e for e in self.entries if e.failure is None and len(e.curve) >= self.max_t]
        ok_ids = {e.config_id for e in ok}
        for e in self.entries:
            m = self.lookup(e.params, exclude=e.config_id)
            agree += (m.entry.failure is None) == (e.failure is None)
            true = np.array([c[0] for c in e.curve])
            pred = np.array([c[0] for c in m.entry.curve])
            n = min(len(true), len(pred))
            ep_err += list(np.abs(pred[:n] - true[:n]))
            ep_rel += list(np.abs(pred[:n] - true[:n]) / np.abs(true[:n]))
            others = [o for o in ok if o.config_id != e.config_id]
            if others:
                mean_curve = np.mean([[c[0] for c in o.curve[: self.max_t]] for o in others],
                                     axis=0)
                ep_base += list(np.abs(mean_curve[: len(true)] - true))
            if e.config_id in ok_ids and m.entry.failure is None and len(pred) >= self.max_t:
                fin_t.append(true[self.max_t - 1])
                fin_p.append(pred[self.max_t - 1])
                if others:
                    fin_b.append(abs(mean_curve[self.max_t - 1] - true[self.max_t - 1]))
        fin_t, fin_p = np.array(fin_t), np.array(fin_p)

        def mean(a):
            return float(np.mean(a)) if len(a) else None

        out = {
            "lookup": LOOKUP, "n_configs": len(self.entries), "n_final": int(len(fin_t)),
            "final_mae": mean(np.abs(fin_p - fin_t)),
            "final_rel": mean(np.abs(fin_p - fin_t) / np.abs(fin_t)),
            "final_spearman": _spearman(fin_p, fin_t),
            "epoch_mae": mean(ep_err), "epoch_rel": mean(ep_rel),
            # the mean is dominated by diverged curves (losses of 1e20 and more): the median
            # says how far a typical epoch's prediction is
            "epoch_median_ae": float(np.median(ep_err)) if ep_err else None,
            "baseline_epoch_median_ae": float(np.median(ep_base)) if ep_base else None,
            "failure_agreement": agree / len(self.entries),
            "baseline_final_mae": mean(fin_b), "baseline_epoch_mae": mean(ep_base),
        }
        self._heldout = out
        return dict(out)

    @property
    def devices(self) -> int:
        """Devices one training held: the table's (CPU threads, or 1 GPU), default 1."""
        return int(self.meta.get("devices") or self.meta.get("threads") or 1)

    def summary(self) -> dict:
        """What replay metadata records about the table."""
        return {"path": str(self.path) if self.path else None, "sha256": self.sha256,
                "scale": self.scale, "max_t": self.max_t, "n_configs": len(self.entries),
                "n_failed": sum(e.failure is not None for e in self.entries),
                "n_incomplete": self.n_incomplete, "lookup": LOOKUP,
                "table_seed": self.meta.get("seed"), "trainable": self.meta.get("trainable"),
                "n_replicated": len(self.replicates), "seed_noise": self.seed_noise(),
                "clock": self.meta.get("clock", EPOCH_SECONDS),
                "heldout_error": self.heldout_error()}

    def core_hours(self) -> float:
        """Device-hours the table's complete trainings took (replicates included): the sum
        of their epoch seconds, times the devices of one training (one CPU thread here)."""
        trainings = [e for reps in self.replicates.values() for e in reps] + \
            [e for e in self.entries if e.config_id not in self.replicates]
        secs = sum(c[2] for e in trainings for c in e.curve) + \
            sum(e.failure_seconds for e in trainings)
        return secs * self.devices / 3600.0

    def seed_noise(self, epoch: int | None = None) -> float | None:
        """Median over replicated configurations of the standard deviation (ddof 1) of their
        validation loss at ``epoch`` (default: the final one, max_t) across training seeds;
        None without replicates. Only configurations whose every seed trained to max_t count,
        so every epoch's value is over the same configurations."""
        at = self.max_t if epoch is None else int(epoch)
        if not 1 <= at <= self.max_t:
            raise ValueError(f"epoch {at} outside 1..{self.max_t}")
        sds = [float(np.std([e.curve[at - 1][0] for e in reps], ddof=1))
               for reps in self.replicates.values()
               if sum(e.failure is None and len(e.curve) >= self.max_t for e in reps) >= 2
               and all(e.failure is None and len(e.curve) >= self.max_t for e in reps)]
        return float(np.median(sds)) if sds else None


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3:
        return None
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(float)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def load_table(path, scale: str | None = None, warn=_warn) -> Table:
    """Read a table written by :mod:`experiments.lctable`.

    The scale comes from ``scale``, else from the ``lctable.json`` next to the CSV, else from
    the longest recorded curve (the scale whose max_t it is). Configurations whose training
    the table has not finished are left out, with a warning that counts them. A damaged row
    (a cut line, text in a numeric cell, a negative loss or time: the schema's
    ``logs.TABLE_TYPES`` and ``logs.RANGES``; a status neither ok nor failed; an ok row without
    a finite loss or time) is reported by ``warn`` and skipped, which leaves its training
    incomplete. Raises :class:`TableError` (one line) when the file is missing or unusable,
    or its lctable.json does not match the schema (``logs.TableMetadata``).
    """
    import pandas as pd

    from mlpf.scales import SCALES

    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        guess = scale or next((s for s in SCALES if s in path.parts), "small")
        raise TableError(f"no learning-curve table at {path}; make it with "
                         f"`make lctable SCALE={guess}` (python -m experiments.lctable)")
    try:
        meta = logs.read_checked_json(meta_path(path), logs.TableMetadata, strict=True) or {}
        path.read_bytes().decode("utf-8")  # undecodable bytes: no table, not damaged rows
        df = logs.read_checked_csv(
            path, (CONFIG_ID, EPOCH), (VAL_LOSS, TRAIN_LOSS, EPOCH_SECONDS), warn,
            optional=tuple(logs.TABLE_TYPES), types=logs.TABLE_TYPES, keep_default_na=False,
            na_values={VAL_LOSS: [""], TRAIN_LOSS: [""], EPOCH_SECONDS: [""]})
    except logs.LogError as e:
        raise TableError(str(e)) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise TableError(f"{path}: unreadable table ({e})") from None
    if STATUS not in df.columns:
        raise TableError(f"{path}: not a learning-curve table (no column {STATUS})")
    for c in df.columns.intersection([c for c, t in logs.TABLE_TYPES.items() if t == logs.FLOAT]):
        df[c] = pd.to_numeric(df[c], errors="coerce")  # checked numbers; "nan", "inf" as text
    scale = scale or meta.get("scale")
    if scale is None:
        longest = int(df[EPOCH].max()) if len(df) else 0
        scale = next((s for s, v in SCALES.items() if v.max_epochs == longest), None)
        if scale is None:
            raise TableError(f"{path}: no lctable.json and no scale with max_t={longest}; "
                             "pass the scale")
    if meta.get(logs.MAX_T) is None and scale not in SCALES:
        raise TableError(f"{meta_path(path)}: no max_t, and scale {scale!r} is none of "
                         f"{', '.join(SCALES)}")
    max_t = int(meta.get(logs.MAX_T) or SCALES[scale].max_epochs)
    p_cols = [c for c in df.columns if c.startswith(PARAM_PREFIX)]
    if REASON not in df.columns:
        df[REASON] = ""
    if REPLICATE not in df.columns:
        df[REPLICATE] = 0
    df = _usable_rows(df, path, warn)
    df, clock = _device_seconds(df)
    meta = {**meta, "clock": clock}
    entries, replicates, n_incomplete, n_partial = [], {}, 0, 0
    for (cid, rep), g in df.groupby([CONFIG_ID, REPLICATE], sort=True):
        e = _entry(int(cid), g, p_cols, max_t)
        if e is None:  # training not finished (or rows missing): left out
            n_incomplete += rep == 0
            n_partial += rep != 0
        elif rep == 0:
            entries.append(e)
        replicates.setdefault(int(cid), []).append(e)
    replicates = {c: [e for e in reps if e is not None] for c, reps in replicates.items()}
    replicates = {c: reps for c, reps in replicates.items() if len(reps) > 1}
    if not entries:
        raise TableError(f"{path}: no configuration with a complete learning curve yet")
    _report_incomplete(path, meta, entries, n_incomplete, n_partial, max_t, warn)
    return Table(entries, scale, max_t, path, _sha256(path), meta, n_incomplete, replicates,
                 warn=warn)


def _usable_rows(df, path, warn):
    """The rows a curve can be made of: status ok with a finite val_loss and epoch_seconds
    and a train_loss, or status failed. Others are reported (by configuration, replicate and
    epoch) and dropped."""
    ok, failed = df[STATUS] == STATUS_OK, df[STATUS] == STATUS_FAILED
    no_loss = ok & ~np.isfinite(df[VAL_LOSS])
    no_time = ok & ~np.isfinite(df[EPOCH_SECONDS])
    no_train = ok & df[TRAIN_LOSS].isna()
    bad = ~(ok | failed) | no_loss | no_time | no_train
    for i in np.flatnonzero(bad.to_numpy()):
        r = df.iloc[i]
        why = (f"status {r[STATUS]!r} is neither {STATUS_OK} nor {STATUS_FAILED}"
               if not (ok.iloc[i] or failed.iloc[i]) else
               f"status ok without a finite {VAL_LOSS}" if no_loss.iloc[i] else
               f"status ok without a finite {EPOCH_SECONDS}" if no_time.iloc[i] else
               f"status ok without a {TRAIN_LOSS}")
        warn(f"{path}: config {r[CONFIG_ID]}, replicate "
             f"{r[REPLICATE]}, epoch {r[EPOCH]}: {why}; skipped")
    return df[~bad]


def _report_incomplete(path, meta, entries, n_incomplete, n_partial, max_t, warn) -> None:
    """Warn of the trainings the table stops in the middle of (left out), and of a table whose
    lctable.json says it is complete but lacks configurations it planned (a truncated file)."""
    complete = meta.get("status") == "complete"
    if n_incomplete or n_partial:
        why = ("lctable.json says the table is complete: a truncated or damaged file?"
               if complete else "a table still being built, or damaged rows")
        reps = f" and {n_partial} replicate training(s)" if n_partial else ""
        warn(f"{path}: {n_incomplete} configuration(s){reps} with fewer than max_t = {max_t} "
             f"epochs and no failed row left out ({why}); {len(entries)} complete")
    planned = meta.get("n_configs")
    if complete and planned is not None:
        # a reduced table (experiments.sensitivity.write_without) names what it left out
        left = meta.get("left_out")
        want = set(range(planned + 1)) - {c for c in (left if isinstance(left, list) else [])
                                          if isinstance(c, int)}
        missing = len(want - {e.config_id for e in entries})
        if missing:
            warn(f"{path}: lctable.json says complete, {planned + 1} configurations planned "
                 f"(the default and {planned} sampled); {missing} of them "
                 "missing or incomplete: a truncated table")


def _device_seconds(df):
    """The table with EPOCH_SECONDS as a device's seconds of each epoch, and which clock that
    is: the training process's CPU seconds where the table records them (a table made on CPU
    workers; the same on a busy or an idle machine, ``benchmarks/bench_cpu_seconds.py``),
    else the wall seconds (older tables, or a row without CPU seconds)."""
    import pandas as pd

    if logs.EPOCH_CPU_SECONDS not in df.columns:
        return df, EPOCH_SECONDS
    cpu = pd.to_numeric(df[logs.EPOCH_CPU_SECONDS], errors="coerce")
    use = cpu.notna() & np.isfinite(cpu) & (cpu > 0)
    if not use.any():
        return df, EPOCH_SECONDS
    df = df.assign(**{EPOCH_SECONDS: cpu.where(use, pd.to_numeric(df[EPOCH_SECONDS],
                                                                  errors="coerce"))})
    return df, logs.EPOCH_CPU_SECONDS if use.all() else \
        f"{logs.EPOCH_CPU_SECONDS} ({EPOCH_SECONDS} where missing)"


def _entry(cid: int, g, p_cols: list[str], max_t: int) -> Entry | None:
    """One training's rows -> its :class:`Entry`, None while it is incomplete."""
    import pandas as pd

    g = g.drop_duplicates(EPOCH, keep="first").sort_values(EPOCH)
    okr = g[g[STATUS] == STATUS_OK]
    failed = g[g[STATUS] == STATUS_FAILED]
    k = int(failed[EPOCH].min()) if len(failed) else max_t + 1
    okr = okr[okr[EPOCH] < k]
    if list(okr[EPOCH]) != list(range(1, min(k, max_t + 1))):
        return None
    curve = tuple((float(v), float(t), float(s)) for v, t, s in
                  zip(okr[VAL_LOSS], okr[TRAIN_LOSS], okr[EPOCH_SECONDS]))
    params = {c[len(PARAM_PREFIX):]: _param_cell(g[c].iloc[0]) for c in p_cols}
    if len(failed):
        f = failed[failed[EPOCH] == k].iloc[0]
        secs = float(f[EPOCH_SECONDS]) if pd.notna(f[EPOCH_SECONDS]) else 0.0
        return Entry(cid, params, curve, str(f[REASON]) or "error", secs)
    return Entry(cid, params, curve[:max_t])


def _param_cell(v):
    """A ``p:`` cell of the table as the hyperparameter value (flags are read back as str)."""
    v = logs.native(v)
    if isinstance(v, str) and v in ("True", "False"):
        return v == "True"
    return v




def replay_budget(table: Table, trainings: int, first: int = 512) -> float:
    """``trainings`` median full trainings of configurations 1..``first`` (first training
    seed; the sum of their max_t epochs' device-seconds), rounded up to 100 s: the replay
    budget of the pre-registered claim-2 test (analysis/preregistration.md)."""
    full = [sum(c[2] for c in e.curve[:table.max_t]) for e in table.entries
            if 1 <= e.config_id <= first and e.failure is None and len(e.curve) >= table.max_t]
    if not full:
        raise TableError(f"{table.path}: no complete sampled configuration for a budget")
    return float(math.ceil(trainings * float(np.median(full)) / 100.0) * 100)


def _entropy(k: int, n: int) -> float:
    """Binary entropy (nats) of k failures among n."""
    q = k / n if n else 0.0
    return -sum(x * math.log(x) for x in (q, 1 - q) if x > 0)


def failure_profile(table: Table, depth: int = 3, max_values: int = 8) -> list[str]:
    """Where the first training seeds of the sampled configurations failed, one phrase per
    level: the hyperparameter of at most ``max_values`` values in the table whose split best
    separates failed from finished trainings (lowest weighted binary entropy, only if below
    the unsplit one), its value with the highest failure rate, and again within that value,
    ``depth`` levels at most. [] without failures (or when every training failed)."""
    rows = [(e.params, e.failure is not None) for e in table.entries if e.config_id != 0]
    out = []
    for level in range(depth):
        n, k = len(rows), sum(f for _, f in rows)
        if k in (0, n):
            break
        best = None
        for name in sorted({h for p, _ in rows for h in p}):
            groups: dict[str, list[bool]] = {}
            for p, f in rows:
                groups.setdefault(_as_key(p.get(name)), []).append(f)
            if not 2 <= len(groups) <= max_values:
                continue
            h = sum(len(g) * _entropy(sum(g), len(g)) for g in groups.values()) / n
            if best is None or h < best[0]:
                best = (h, name, groups)
        if best is None or best[0] >= _entropy(k, n) - 1e-12:
            break
        _, name, groups = best
        worst = max(sorted(groups), key=lambda v: sum(groups[v]) / len(groups[v]))
        g = groups[worst]
        rest = [f for v, fs in groups.items() if v != worst for f in fs]
        out.append(f"{'within that, ' if level else ''}{name} = {worst}: {sum(g)} of {len(g)} "
                   f"failed ({100 * sum(g) / len(g):.0f} %), other values {sum(rest)} of "
                   f"{len(rest)}")
        rows = [(p, f) for p, f in rows if _as_key(p.get(name)) == worst]
    return out


def _precision(p) -> str:
    """The data card's words for lctable.json's ``precision`` (how cells were rounded)."""
    if not isinstance(p, dict):
        return "as computed (full double precision; not recorded)"
    d, s, t = p.get("loss_digits"), p.get("seconds_decimals"), p.get("seconds_tiny_digits")
    words = (f"losses to {d if isinstance(d, int) else '?'} significant digits, seconds to "
             f"{s if isinstance(s, int) else '?'} decimals")
    if isinstance(t, int):  # recorded from the version that keeps tiny times off zero
        words += f" (a time that would round to 0: {t} significant digits)"
    return words


def data_card(table: Table) -> str:
    """A data card of the table (Markdown), every number read from the table and its JSON:
    what it is, how it was made, what it holds, its noise and cost, and its licence."""
    from collections import Counter

    m = table.meta
    loss = m.get(logs.LOSS) or {}
    reps = m.get("replicates") or []
    fails = Counter(e.failure for e in table.entries if e.failure)
    sampled = [e for e in table.entries if e.config_id != 0]
    noise = table.seed_noise()
    epochs = sorted({2 ** k for k in range(table.max_t.bit_length()) if 2 ** k <= table.max_t}
                    | {table.max_t})
    machine = m.get("machine") or {}
    lines = [
        f"# Data card: `{table.path.parent.name}/{table.path.name}`", "",
        "Learning curves of MLPF (particle-flow reconstruction, arXiv:2101.08578) trained on "
        f"Pythia8 ttbar events in the Delphes format at scale `{table.scale}`: configurations "
        "of the search space of arXiv:2203.01112 (`experiments/space.py`), each trained to "
        f"max_t = {table.max_t} epochs, every epoch's validation loss and components, wall and "
        "CPU seconds recorded. Made by `make lctable` (`experiments/lctable.py`); read with "
        "`experiments.table.load_table`; this card by `python -m experiments.table --card`.",
        "",
        "| field | value |", "|---|---|",
        f"| status | {m.get('status', '?')} (a table being built is committed as it grows) |",
        f"| loss | {loss.get('name', 'not recorded')} "
        f"(coefficients {loss.get('coefs', '?')}, Huber deltas {loss.get('huber_deltas', '?')}) |",
        f"| sampler | {m.get('sampler', '?')}, seed {m.get('seed', '?')}, "
        f"{m.get('n_configs', '?')} configurations planned + the untuned default (config 0) |",
        f"| training seeds | default x {reps[0] if reps else '?'}, the first "
        f"{reps[2] if len(reps) > 2 else '?'} configurations x {reps[1] if len(reps) > 1 else '?'}"
        f", the rest x 1 (seed of replicate r: seed + r x "
        f"{m.get('replicate_seed_stride', '?')}) |",
        f"| complete configurations | {len(sampled)} sampled + "
        f"{len(table.entries) - len(sampled)} default; {table.n_incomplete} in progress |",
        f"| failed trainings (first seed) | {sum(fails.values())}"
        + (f" ({', '.join(f'{k} {v}' for k, v in sorted(fails.items()))})" if fails else "")
        + " |",
        "| where the first seeds failed (greedy split on hyperparameters of at most 8 values) "
        f"| {'; '.join(failure_profile(table)) or 'n/a'} |",
        f"| replicated configurations | {len(table.replicates)} |",
        "| seed noise (median SD of the final val_loss over replicated configurations) | "
        + (f"{noise:.4g}" if noise is not None else "n/a") + " |",
        f"| seed noise by epoch ({', '.join(str(e) for e in epochs)}) | "
        + (" / ".join(f"{table.seed_noise(e):.4g}" for e in epochs) if noise is not None
           else "n/a") + " |",
        f"| device-hours of the complete trainings | {table.core_hours():.2f} "
        f"({m.get('clock', EPOCH_SECONDS)}) |",
        f"| machine | {machine.get('cpu_model', '?')}, {machine.get('cores_usable', '?')} "
        f"cores, {m.get('threads', '?')} torch thread(s) per training |",
        f"| trainable | {m.get('trainable', '?')} {m.get('trainable_options') or ''} |",
        f"| columns | {', '.join(m.get('columns') or [])} |",
        f"| precision | {_precision(m.get('precision'))} |",
        "| licence | MIT, as the repository (LICENSE) |",
    ]
    return "\n".join(lines) + "\n"


def print_check(table: Table) -> None:
    """The held-out error of the lookup, one quantity per line."""
    h = table.heldout_error()

    def f(v, pct=False):
        if v is None:
            return "-"
        return (f"{100 * v:.4g} %" if abs(v) >= 10 else f"{100 * v:.1f} %") if pct \
            else f"{v:.4g}"

    print(f"table {table.path}: {len(table.entries)} configurations "
          f"({sum(e.failure is not None for e in table.entries)} failed, "
          f"{table.n_incomplete} incomplete left out), max_t {table.max_t}, lookup {LOOKUP}")
    n_rep = sum(len(r) - 1 for r in table.replicates.values())
    print(f"cost: {table.core_hours():.2f} device-hours for {len(table.entries)} trainings "
          f"and {n_rep} replicate trainings ({table.devices} device each); seed noise of the "
          f"final val_loss (median SD over {len(table.replicates)} replicated configurations) "
          f"{f(table.seed_noise())}")
    print("leave-one-out error (each configuration predicted from the others):")
    print(f"  final val_loss      MAE {f(h['final_mae'])} (relative {f(h['final_rel'], True)})"
          f"  mean-curve baseline {f(h['baseline_final_mae'])}  [{h['n_final']} configs]")
    print(f"  per-epoch val_loss  MAE {f(h['epoch_mae'])} (relative {f(h['epoch_rel'], True)})"
          f"  mean-curve baseline {f(h['baseline_epoch_mae'])}")
    print(f"  per-epoch val_loss  median AE {f(h.get('epoch_median_ae'))}  mean-curve baseline "
          f"{f(h.get('baseline_epoch_median_ae'))}  (robust to diverged curves)")
    print(f"  rank correlation of final val_loss (Spearman) {f(h['final_spearman'])}")
    print(f"  failure predicted correctly for {f(h['failure_agreement'], True)}")



def main(argv=None) -> int:
    from experiments.cli import CliError, Parser, add_scale, run_main

    p = Parser("python -m experiments.table", __doc__)
    add_scale(p)
    p.add_argument("--table", default=None, help="default results/<scale>/lctable.csv")
    p.add_argument("--check", action="store_true",
                   help="print the leave-one-out error of the lookup")
    p.add_argument("--require", type=int, default=None, metavar="N",
                   help="exit 2 unless the table holds N complete sampled configurations")
    p.add_argument("--replay-budget", type=int, default=None, metavar="K",
                   help="print K median full trainings in device-seconds (of configurations "
                        "1..--first), rounded up to 100: a replay budget")
    p.add_argument("--first", type=int, default=512, help="with --replay-budget (default 512)")
    p.add_argument("--live", action="store_true",
                   help="with --replay-budget: print half of it, the live budget of the "
                        "pre-registered claim-2 test (analysis/preregistration.md)")
    p.add_argument("--card", action="store_true",
                   help="write DATACARD.md next to the table (and print it)")

    def body() -> int:
        a = p.parse_args(argv)
        try:
            table = load_table(Path(a.table) if a.table else table_path(a.scale), a.scale)
        except TableError as e:
            raise CliError(str(e)) from None
        if a.live and a.replay_budget is None:
            raise CliError("--live goes with --replay-budget K")
        if a.card:
            text = data_card(table)
            logs.write_atomic(table.path.with_name("DATACARD.md"), text)
            print(text, end="")
            return 0
        if a.replay_budget is not None:
            if a.replay_budget < 1 or a.first < 1:
                raise CliError("--replay-budget and --first must be at least 1")
            b = replay_budget(table, a.replay_budget, a.first)
            print(f"{b / 2 if a.live else b:g}")
            return 0
        if a.require is not None:
            n = sum(1 for e in table.entries if e.config_id != 0)
            if n < a.require:
                raise CliError(f"{table.path} holds {n} complete sampled configurations, "
                               f"{a.require} needed; resume it with `make lctable`")
            print(f"{table.path}: {n} complete sampled configurations (>= {a.require})")
            return 0
        print_check(table)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
