"""Replay searches on a learning-curve table: the methods unchanged, training looked up.

    python -m experiments.search --method asha --scale small --seed 3 --backend replay
    python -m experiments.replay --scale small --check          # held-out error of the lookup
    python -m experiments.replay --scale small --seeds "0 1 2"  # every method x seeds
    make replay SCALE=small                                     # 20 seeds, peers, figures

A replayed trial does not train: its epochs are those of the configuration of the table
(:mod:`experiments.lctable`, default ``results/<scale>/lctable.csv``) nearest to the trial's
(:meth:`Table.lookup`). The searches, stoppers and the manager loop
(:func:`experiments.search.drive`) are the live ones; only the evaluator differs.

Time is simulated (:class:`ReplayEvaluator`): a discrete-event clock with the search's workers;
a job starts when it is submitted, each epoch lasts its recorded ``epoch_seconds``, and epochs
of concurrent trials are processed in simulated-time order (ties: lower job number first), so
ASHA rungs and Hyperband barriers see the events of a live run on ideal workers. Manager
decisions take no simulated time (their real durations are still recorded). Budgets: the live
epoch budget; no time budget unless ``--time-budget`` (simulated seconds) is given.

Logs are those of a live search (:mod:`experiments.logs`), by default in
``results/<scale>/replay/<method>/seed<k>/``, with every time in simulated seconds (metadata
``start_time`` 0 and ``end_time`` the simulated end); results.csv adds ``m:table_config`` and
``m:table_distance``; metadata.json adds ``"backend": "replay"`` and ``"replay"`` (table path,
sha256, held-out error, real start and duration). The same table and seed give byte-identical
results.csv and learning_curves.csv; metadata.json differs only in real times and the host.

Lookup: the nearest complete configuration by the root mean square of per-hyperparameter
differences, each hyperparameter mapped to [0, 1]: log scale for log-uniform ranges, linear for
other ranges, position in the grid for ordinal grids, 0/1 mismatch for categoricals (ties: the
lowest config id). A hyperparameter missing from a configuration takes the default's value
(config 0). A failed recorded training fails the same way at the same epoch. How well the lookup
predicts an unseen configuration is :meth:`Table.heldout_error` (leave-one-out).

Importable API (stable): :func:`load_table`, :class:`Table` with ``curve(config)``,
``failure(config)``, ``lookup(config)``, ``max_t``, ``devices`` and ``heldout_error()``.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from deephyper.evaluator import Evaluator, JobStatus

from experiments import lctable, logs
from experiments.lctable import (
    CONFIG_ID,
    EPOCH,
    EPOCH_SECONDS,
    PARAM_PREFIX,
    REASON,
    STATUS,
    STATUS_FAILED,
    STATUS_OK,
    TRAIN_LOSS,
    VAL_LOSS,
)
from experiments.schedulers import BUDGET_KEY, SCHEDULE_KEYS

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
                self.kind[n] = ("cat",)
            else:  # not in the search space: numbers min-max scaled over the table, else text
                vals = [e.params[n] for e in entries]
                try:
                    f = [float(v) for v in vals]
                    self.kind[n] = ("lin", min(f), max(f))
                except (TypeError, ValueError):
                    self.kind[n] = ("cat",)

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


class Table:
    """A learning-curve table (:mod:`experiments.lctable`) with nearest-configuration lookup.

    Attributes: ``path``, ``scale``, ``max_t``, ``entries`` (complete configurations, by id),
    ``names`` (hyperparameters), ``sha256`` (of the CSV file), ``n_incomplete`` (configurations
    left out because the table stops in the middle of their training), ``meta`` (lctable.json).
    """

    def __init__(self, entries: list[Entry], scale: str, max_t: int, path: Path | None = None,
                 sha256: str | None = None, meta: dict | None = None, n_incomplete: int = 0):
        if not entries:
            raise TableError(f"{path}: no complete configuration in the table")
        from experiments.space import problem_for

        self.entries = sorted(entries, key=lambda e: e.config_id)
        self.scale, self.max_t, self.path, self.sha256 = scale, int(max_t), path, sha256
        self.meta = meta or {}
        self.n_incomplete = n_incomplete
        self.names = sorted(self.entries[0].params)
        try:
            problem = problem_for(scale)
        except ValueError:
            problem = None
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
            self._defaults = lctable.default_values(self.scale)
        return {**{n: self._defaults[n] for n in missing}, **config}

    def _distances(self, config: dict) -> np.ndarray:
        x, cats = self._enc.encode(self._complete(config))
        num = ~np.isnan(x)
        d2 = np.nansum((self._x[:, num] - x[num]) ** 2, axis=1)
        cat = ~num
        if cat.any():
            d2 = d2 + (self._cats[:, cat] != np.array(cats, dtype=object)[cat]).sum(axis=1)
        return np.sqrt(d2 / len(self.names))

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
        (``baseline_final_mae``, ``baseline_epoch_mae``).
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
                "heldout_error": self.heldout_error()}


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


def load_table(path, scale: str | None = None) -> Table:
    """Read a table written by :mod:`experiments.lctable`.

    The scale comes from ``scale``, else from the ``lctable.json`` next to the CSV, else from
    the longest recorded curve (the scale whose max_t it is). Configurations whose training
    the table has not finished are left out. Raises :class:`TableError` (one line) when the
    file is missing or unusable.
    """
    import pandas as pd

    from mlpf.scales import SCALES

    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        guess = scale or next((s for s in SCALES if s in path.parts), "small")
        raise TableError(f"no learning-curve table at {path}; make it with "
                         f"`make lctable SCALE={guess}` (python -m experiments.lctable)")
    meta = logs.read_json(lctable.meta_path(path)) or {}
    try:
        df = pd.read_csv(path, on_bad_lines="skip", keep_default_na=False,
                         na_values={VAL_LOSS: [""], TRAIN_LOSS: [""], EPOCH_SECONDS: [""]})
        missing = {CONFIG_ID, EPOCH, VAL_LOSS, TRAIN_LOSS, EPOCH_SECONDS, STATUS} - \
            set(df.columns)
        if missing:
            raise TableError(f"{path}: not a learning-curve table (no {sorted(missing)})")
        df = df[pd.to_numeric(df[CONFIG_ID], errors="coerce").notna()
                & pd.to_numeric(df[EPOCH], errors="coerce").notna()]
        df = df.astype({CONFIG_ID: int, EPOCH: int})
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as e:
        raise TableError(f"{path}: unreadable table ({e})") from None
    scale = scale or meta.get("scale")
    if scale is None:
        longest = int(df[EPOCH].max()) if len(df) else 0
        scale = next((s for s, v in SCALES.items() if v.max_epochs == longest), None)
        if scale is None:
            raise TableError(f"{path}: no lctable.json and no scale with max_t={longest}; "
                             "pass the scale")
    max_t = int(meta.get("max_t") or SCALES[scale].max_epochs)
    p_cols = [c for c in df.columns if c.startswith(PARAM_PREFIX)]
    if REASON not in df.columns:
        df[REASON] = ""
    entries, n_incomplete = [], 0
    for cid, g in df.groupby(CONFIG_ID, sort=True):
        g = g.drop_duplicates(EPOCH, keep="first").sort_values(EPOCH)
        okr = g[g[STATUS] == STATUS_OK]
        failed = g[g[STATUS] == STATUS_FAILED]
        k = int(failed[EPOCH].min()) if len(failed) else max_t + 1
        okr = okr[okr[EPOCH] < k]
        if list(okr[EPOCH]) != list(range(1, min(k, max_t + 1))):
            n_incomplete += 1  # training not finished (or rows missing): left out
            continue
        curve = tuple((float(v), float(t), float(s)) for v, t, s in
                      zip(okr[VAL_LOSS], okr[TRAIN_LOSS], okr[EPOCH_SECONDS]))
        params = {c[len(PARAM_PREFIX):]: _param_cell(g[c].iloc[0]) for c in p_cols}
        if len(failed):
            f = failed[failed[EPOCH] == k].iloc[0]
            secs = float(f[EPOCH_SECONDS]) if pd.notna(f[EPOCH_SECONDS]) else 0.0
            entries.append(Entry(int(cid), params, curve, str(f[REASON]) or "error", secs))
        else:
            entries.append(Entry(int(cid), params, curve[:max_t]))
    if not entries:
        raise TableError(f"{path}: no configuration with a complete learning curve yet")
    return Table(entries, scale, max_t, path, _sha256(path), meta, n_incomplete)


def _param_cell(v):
    """A ``p:`` cell of the table as the hyperparameter value (flags are read back as str)."""
    v = logs.native(v)
    if isinstance(v, str) and v in ("True", "False"):
        return v == "True"
    return v


# ------------------------------------------------------------------------------ simulated time
@dataclass
class ReplayContext:
    """What every replayed trial of one search shares."""

    table: Table
    max_t: int
    deadline: float | None  # simulated seconds at which the search's time budget ends
    checkpoints: bool  # Hyperband: a promoted trial continues its previous rung's epochs
    devices: int  # devices a trial holds (the table's: CPU threads, or 1 GPU)
    trained: dict = field(default_factory=dict)  # hb_trial -> epochs trained (its checkpoint)
    lc_lines: list = field(default_factory=list)  # learning-curve rows not yet written


def replay_trial(job, ctx: ReplayContext, clock, worker: int):
    """The run-function of :func:`experiments.worker.run_trial`, replayed from the table.

    A generator: it yields the simulated seconds of its next epoch and is resumed by the
    clock when that epoch ends; it returns what ``run_trial`` returns
    (``{"objective": -val_loss | "F_<reason>", "metadata": {...}}``). The logic per epoch is
    ``run_trial``'s: a learning-curve row, ``job.record(epoch, -val_loss)``, then stop at the
    budget, when the stopper says so, or at the search's deadline. Metadata adds
    ``table_config`` and ``table_distance`` (the recorded configuration that was replayed).
    """
    params = dict(job.parameters)
    budget = int(params.get(BUDGET_KEY, ctx.max_t))
    hp = {k: v for k, v in params.items() if k not in SCHEDULE_KEYS}
    job_id = int(str(job.id).split(".")[-1])
    match = ctx.table.lookup(hp)
    e = match.entry
    ckpt = params["hb_trial"] if ctx.checkpoints and "hb_trial" in params else None
    first = ctx.trained.get(ckpt, 0) + 1 if ckpt is not None else 1
    st = {"epochs": 0, "best": math.inf, "last": None, "stopped": False, "deadline": False}
    t_trial_start = clock.now
    status, reason = logs.STATUS_OK, ""
    for epoch in range(first, budget + 1):
        t0 = clock.now
        if epoch > len(e.curve):  # the recorded training failed in this epoch
            yield max(0.0, e.failure_seconds)
            status, reason = logs.STATUS_FAILED, e.failure or "no_epoch"
            break
        val, train, secs = e.curve[epoch - 1]
        yield max(0.0, secs)
        ctx.lc_lines.append(_lc_line({
            logs.JOB_ID: job_id, logs.EPOCH: epoch, logs.VAL_LOSS: val,
            logs.TRAIN_LOSS: train, logs.EPOCH_SECONDS: secs, logs.T_START: round(t0, 4),
            logs.T_END: round(clock.now, 4), logs.WORKER: worker, logs.DEVICES: ctx.devices}))
        st["epochs"] += 1
        if ckpt is not None:
            ctx.trained[ckpt] = epoch
        st["last"], st["best"] = val, min(st["best"], val)
        job.record(epoch, -val)
        if epoch >= budget:
            break
        if job.stopped():
            st["stopped"] = True
            break
        if ctx.deadline is not None and clock.now >= ctx.deadline:
            st["stopped"] = st["deadline"] = True
            break
    if status == logs.STATUS_OK:
        if st["last"] is None and first > 1:  # the checkpoint already had every epoch
            st["last"] = st["best"] = e.curve[min(first - 1, len(e.curve)) - 1][0]
        if st["stopped"]:
            status = logs.STATUS_STOPPED
            reason = "time_budget" if st["deadline"] else ""
        elif st["last"] is None:
            status, reason = logs.STATUS_FAILED, "no_epoch"
    meta = {logs.STATUS: status, logs.REASON: reason, logs.EPOCHS: st["epochs"],
            logs.BUDGET: budget,
            logs.BEST_VAL_LOSS: st["best"] if math.isfinite(st["best"]) else None,
            logs.TRIAL_START: round(t_trial_start, 4), logs.TRIAL_END: round(clock.now, 4),
            logs.TRIAL_WORKER: worker, TABLE_CONFIG: e.config_id,
            TABLE_DISTANCE: round(match.distance, 6)}
    objective = f"F_{reason}" if status == logs.STATUS_FAILED else -st["last"]
    return {"objective": objective, "metadata": meta}


def _lc_line(values: dict) -> str:
    return ",".join(logs._fmt(values.get(c)) for c in logs.LC_COLUMNS) + "\n"


class _Task:
    """A replayed trial in flight: the evaluator's stand-in for an asyncio task."""

    def __init__(self, job, number: int, worker: int, steps):
        self.job, self.number, self.worker, self.steps = job, number, worker, steps
        self.t_end: float | None = None

    def done(self) -> bool:
        return self.t_end is not None

    def cancelled(self) -> bool:
        return False

    def exception(self):
        return None

    def result(self):
        return self.job


class ReplayEvaluator(Evaluator):
    """A DeepHyper evaluator that runs trials on a discrete-event simulated clock.

    ``num_workers`` simulated workers. A submitted job starts at once on the lowest free
    worker; each epoch ends ``epoch_seconds`` (recorded) after it started. ``gather`` advances
    the clock from event to event (ties: lower job number first), resuming the trial whose
    epoch ended, until a job finishes; every event at that same instant is processed too. So
    ASHA rung values, ``job.stopped()`` and the manager's decisions happen in simulated-time
    order, as in a live search on ideal workers; the manager's own decision time is not on the
    clock. ``m:timestamp_submit``/``m:timestamp_gather`` are simulated seconds.
    """

    def __init__(self, ctx: ReplayContext, num_workers: int, lc_path: Path):
        super().__init__(replay_trial, num_workers=num_workers,
                         run_function_kwargs={"ctx": ctx})
        self.ctx, self.lc_path = ctx, Path(lc_path)
        self.now = 0.0
        self._events: list = []  # heap of (end time, job number, task)
        self._free = list(range(num_workers))  # heap of free worker slots

    def clock(self) -> float:
        """Simulated seconds since the search began (what drive() uses as time)."""
        return self.now

    async def execute(self, job):  # jobs advance in gather(), never on an asyncio loop
        raise NotImplementedError

    def _on_launch(self, job):
        job.status = JobStatus.READY
        job.metadata["timestamp_submit"] = self.now

    def _on_done(self, job):
        super()._on_done(job)
        job.metadata["timestamp_gather"] = self.now
        self._storage.store_job_metadata(job.id, "timestamp_gather", self.now)

    def submit(self, args_list):
        for args in args_list:
            if not self._free:
                raise RuntimeError("more jobs submitted than simulated workers")
            job_id = self._storage.create_new_job(self._search_id)
            self._storage.store_job_in(job_id, args=(args,))
            job = self._create_job(job_id, args, self.run_function, self._storage)
            self.job_id_submitted.append(job_id)
            job.context.search = self.search
            self._on_launch(job)
            job.status = JobStatus.RUNNING
            worker = heapq.heappop(self._free)
            running = job.create_running_job(self._stopper)
            task = _Task(job, int(str(job_id).split(".")[-1]), worker,
                         self.run_function(running, clock=self, worker=worker,
                                           **self.run_function_kwargs))
            self._tasks_running.append(task)
            self._step(task)

    def _step(self, task: _Task) -> None:
        """Run a trial to its next epoch boundary (or its end)."""
        try:
            secs = next(task.steps)
        except StopIteration as stop:
            self._update_job_when_done(task.job, stop.value)
            task.t_end = self.now
            heapq.heappush(self._free, task.worker)
            return
        heapq.heappush(self._events, (self.now + secs, task.number, task))

    def gather(self, type, size: int = 1):
        running = len(self._tasks_running)
        want = running if type == "ALL" else min(max(1, size), running)
        while sum(t.done() for t in self._tasks_running) < want and self._events:
            t = self._events[0][0]
            self.now = t
            while self._events and self._events[0][0] == t:  # everything at this instant
                self._step(heapq.heappop(self._events)[2])
        done = sorted((t for t in self._tasks_running if t.done()),
                      key=lambda t: (t.t_end, t.number))
        self.flush()
        return self._process_local_tasks_done(done)

    def flush(self) -> None:
        """Append the learning-curve rows of the epochs simulated so far."""
        if self.ctx.lc_lines:
            with open(self.lc_path, "a") as f:
                f.write("".join(self.ctx.lc_lines))
            self.ctx.lc_lines.clear()

    def close(self):
        self.flush()
        return super().close()


# ------------------------------------------------------------------------------ one search
def replay_dir(scale: str, method: str, seed: int) -> Path:
    """Logs of a replayed search: ``results/<scale>/replay/<method>/seed<k>/``."""
    from mlpf.paths import RESULTS_DIR

    return RESULTS_DIR / scale / "replay" / method / f"seed{seed}"


def plan_replay(method: str, scale: str, seed: int, table: Table, workers: int = 2,
                out: str | Path | None = None, budget: int | None = None,
                time_budget: float | None = None, resume: bool = False):
    """A :class:`experiments.search.Plan` for a replayed search (raises ``CliError``).

    The epoch budget is the live one (:func:`experiments.methods.settings_for`). There is no
    time budget unless ``time_budget`` (simulated seconds) is given: the live wall-time caps
    exist to bound a laptop run, and in simulated time every method gets its whole epoch
    budget. With ``resume`` an unfinished replay starts again from the beginning (same seed,
    same result); a complete one is left as it is (``plan.previous``).
    """
    from experiments.methods import settings_for
    from experiments.search import CliError, plan_search

    time_budget = time_budget or 0  # 0: none
    try:
        settings = settings_for(scale, budget, time_budget)
    except ValueError as e:
        raise CliError(str(e)) from None
    if table.max_t < settings.max_t:
        raise CliError(f"{table.path} records {table.max_t} epochs per configuration, fewer "
                       f"than max_t={settings.max_t} of scale {scale}")
    log_dir = Path(out) if out else replay_dir(scale, method, seed)
    previous = logs.read_json(log_dir / logs.METADATA_JSON)
    if resume and (previous or {}).get("status") != logs.RUN_COMPLETE:
        logs.clear_logs(log_dir)
    plan = plan_search(method, scale, seed, "serial", workers, str(log_dir), resume, "mlpf",
                       budget, time_budget, check_ready=False)
    plan.evaluator = "replay"
    plan.trainable = table.meta.get("trainable") or "mlpf"
    plan.meta["trainable_options"] = table.meta.get("trainable_options", {})
    return plan


def run_replay(plan, table: Table, progress: bool = True) -> int:
    """Run the search of ``plan`` on the simulated clock; returns drive()'s exit code.

    Logs as a live search (:mod:`experiments.logs`) with times in simulated seconds
    (metadata ``start_time`` 0, ``end_time`` the simulated end); metadata adds
    ``"backend": "replay"`` and ``"replay"`` (the table, its sha256, the lookup's held-out
    error, and the real start and duration). Decision times are real.
    """
    import time

    from experiments.methods import uses_checkpoints
    from experiments.search import _deadline, _iso, _new_metadata, drive

    plan.log_dir.mkdir(parents=True, exist_ok=True)
    real_start, t0 = time.time(), time.perf_counter()
    meta = _new_metadata(plan, plan.workers, 0.0)
    meta["start_iso"] = None  # simulated seconds have no date; the real one is in "replay"
    meta["backend"] = "replay"
    meta["replay"] = {**table.summary(), "clock": "simulated seconds",
                      "real_start_iso": _iso(real_start), "real_seconds": None}
    logs.write_json(plan.log_dir / logs.METADATA_JSON, meta)
    ctx = ReplayContext(table, plan.settings.max_t, _deadline(meta),
                        uses_checkpoints(plan.method), table.devices)
    ev = ReplayEvaluator(ctx, plan.workers, plan.log_dir / logs.LEARNING_CURVES_CSV)
    try:
        code = drive(plan, ev, plan.workers, meta, progress)
    finally:
        ev.flush()
    meta["end_iso"] = None
    meta["replay"]["real_seconds"] = time.perf_counter() - t0
    logs.write_json(plan.log_dir / logs.METADATA_JSON, meta)
    return code


def open_table(path, scale: str) -> Table:
    """:func:`load_table` for the command lines: problems become ``CliError``."""
    from experiments.search import CliError

    try:
        return load_table(Path(path) if path else lctable.table_path(scale), scale)
    except TableError as e:
        raise CliError(str(e)) from None


def search_main(args) -> int:
    """``python -m experiments.search --backend replay ...`` (arguments of that parser)."""
    from experiments.methods import settings_for
    from experiments.search import CliError

    try:
        settings_for(args.scale)
    except ValueError as e:
        raise CliError(str(e)) from None
    table = open_table(args.table, args.scale)
    plan = plan_replay(args.method, args.scale, args.seed, table, args.workers, args.out,
                       args.budget, args.time_budget, args.resume)
    if plan.previous and plan.previous.get("status") == logs.RUN_COMPLETE:
        print(f"{plan.log_dir}: search already complete", file=sys.stderr)
        return 0
    return run_replay(plan, table, progress=not args.quiet)


# ------------------------------------------------------------------------------ campaign
_CAMPAIGN: dict = {}  # the table and settings, set before the pool forks
# Longest first, so that two processes finish together: model-based proposals cost most.
_COST_ORDER = ("asha_bo", "bo", "bohb", "async_hyperband", "asha", "hyperband", "random",
               "default")


def _campaign_one(task: tuple[str, int]) -> dict:
    """Replay one (method, seed) unless it is complete on the same table."""
    import time

    method, seed = task
    table, c = _CAMPAIGN["table"], _CAMPAIGN
    log_dir = Path(c["out"]) / method / f"seed{seed}" if c["out"] else \
        replay_dir(table.scale, method, seed)
    row = {"method": method, "seed": seed, "status": "complete", "real": 0.0}
    meta = logs.read_json(log_dir / logs.METADATA_JSON)
    if meta and meta.get("status") == logs.RUN_COMPLETE and \
            meta.get("replay", {}).get("sha256") == table.sha256:
        row["status"] = "skipped (complete)"
        return {**row, **_outcome(meta, log_dir)}
    logs.clear_logs(log_dir)
    t0 = time.perf_counter()
    try:
        plan = plan_replay(method, table.scale, seed, table, c["workers"], log_dir,
                           c["budget"], c["time_budget"])
        code = run_replay(plan, table, progress=False)
    except Exception as e:  # noqa: BLE001 - one broken search must not end the campaign
        return {**row, "status": f"error: {type(e).__name__}: {e}",
                "real": time.perf_counter() - t0}
    meta = logs.read_json(log_dir / logs.METADATA_JSON) or {}
    row.update(status=meta.get("status", f"exit {code}"), real=time.perf_counter() - t0)
    return {**row, **_outcome(meta, log_dir)}


def _outcome(meta: dict, log_dir: Path | None = None) -> dict:
    best = None
    if log_dir is not None:
        res = logs.read_results(log_dir)
        if res is not None and "m:best_val_loss" in res.columns:
            v = res["m:best_val_loss"].astype(float).min()
            best = None if math.isnan(v) else float(v)
    return {"trials": meta.get("n_trials"), "epochs": meta.get("epochs_trained"),
            "simulated": meta.get("end_time"), "best": best}


def campaign(scale: str, seeds: list[int], methods: list[str], table: Table, workers: int = 2,
             processes: int = 2, out: str | None = None, budget: int | None = None,
             time_budget: float | None = None) -> int:
    """Replay every method x seed on ``table`` in ``processes`` processes (one line each)."""
    import multiprocessing as mp
    import time

    tasks = sorted(((m, s) for m in methods for s in seeds),
                   key=lambda t: (_COST_ORDER.index(t[0]) if t[0] in _COST_ORDER else -1,
                                  t[1]))
    _CAMPAIGN.update(table=table, workers=workers, out=out, budget=budget,
                     time_budget=time_budget)
    table.heldout_error()  # computed once, before the processes fork
    t0 = time.perf_counter()
    rows = []
    print(f"replay {scale}: {len(methods)} methods x {len(seeds)} seeds on {table.path} "
          f"({len(table.entries)} configurations), {processes} processes", file=sys.stderr,
          flush=True)

    def show(r):
        rows.append(r)
        best = f"{r['best']:.4f}" if isinstance(r.get("best"), float) else "-"
        sim = f"{r['simulated']:.4g}" if isinstance(r.get("simulated"), (int, float)) else "-"
        print(f"[{len(rows):4d}/{len(tasks)}] {r['method']:16s} seed{r['seed']:<3d} "
              f"{r['status']:18s} trials {r.get('trials') or 0:4d}  epochs "
              f"{r.get('epochs') or 0:5d}  simulated {sim:>6s} s  best {best}  "
              f"({r['real']:.1f} s)", file=sys.stderr, flush=True)

    if processes <= 1:
        for t in tasks:
            show(_campaign_one(t))
    else:
        with mp.get_context("fork").Pool(processes) as pool:
            for r in pool.imap_unordered(_campaign_one, tasks):
                show(r)
    wall = time.perf_counter() - t0
    ran = [r for r in rows if r["status"] == logs.RUN_COMPLETE]
    print(f"replay {scale}: {len(ran)} searches run, "
          f"{sum(r['status'].startswith('skipped') for r in rows)} skipped, "
          f"{len(rows) - len(ran) - sum(r['status'].startswith('skipped') for r in rows)} "
          f"failed, {wall:.1f} s", file=sys.stderr)
    for m in methods:
        secs = [r["real"] for r in ran if r["method"] == m]
        if secs:
            print(f"  {m:16s} {np.mean(secs):6.2f} s per search (max {max(secs):.2f})",
                  file=sys.stderr)
    ok = all(r["status"] == logs.RUN_COMPLETE or r["status"].startswith("skipped")
             for r in rows)
    return 0 if ok else 1


def print_check(table: Table) -> None:
    """The held-out error of the lookup, one quantity per line."""
    h = table.heldout_error()

    def f(v, pct=False):
        return "-" if v is None else (f"{100 * v:.1f} %" if pct else f"{v:.4g}")

    print(f"table {table.path}: {len(table.entries)} configurations "
          f"({sum(e.failure is not None for e in table.entries)} failed, "
          f"{table.n_incomplete} incomplete left out), max_t {table.max_t}, lookup {LOOKUP}")
    print("leave-one-out error (each configuration predicted from the others):")
    print(f"  final val_loss      MAE {f(h['final_mae'])} (relative {f(h['final_rel'], True)})"
          f"  mean-curve baseline {f(h['baseline_final_mae'])}  [{h['n_final']} configs]")
    print(f"  per-epoch val_loss  MAE {f(h['epoch_mae'])} (relative {f(h['epoch_rel'], True)})"
          f"  mean-curve baseline {f(h['baseline_epoch_mae'])}")
    print(f"  rank correlation of final val_loss (Spearman) {f(h['final_spearman'])}")
    print(f"  failure predicted correctly for {f(h['failure_agreement'], True)}")


def main(argv=None) -> int:
    from experiments.methods import METHODS
    from experiments.search import CliError, _Parser

    p = _Parser(prog="python -m experiments.replay", description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", required=True, help="smoke | small | paper")
    p.add_argument("--table", default=None, help="default results/<scale>/lctable.csv")
    p.add_argument("--check", action="store_true",
                   help="print the leave-one-out error of the lookup and stop")
    p.add_argument("--methods", default=" ".join(METHODS))
    p.add_argument("--seeds", default="0", help='e.g. "0 1 2"')
    p.add_argument("--workers", type=int, default=2, help="simulated workers per search")
    p.add_argument("--processes", type=int, default=2, help="searches run in parallel")
    p.add_argument("--out", default=None, help="root of <method>/seed<k>/ "
                   "(default results/<scale>/replay)")
    p.add_argument("--budget", type=int, default=None,
                   help="epochs per search (default: the scale's, see experiments.methods)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="simulated seconds per search (default: none)")
    try:
        a = p.parse_args(argv)
        from experiments.methods import get_method, settings_for

        try:
            settings_for(a.scale)
            methods = a.methods.split()
            for m in methods:
                get_method(m)
            seeds = [int(s) for s in a.seeds.split()]
        except ValueError as e:
            raise CliError(str(e)) from None
        table = open_table(a.table, a.scale)
        if a.check:
            print_check(table)
            return 0
        if a.workers < 1 or a.processes < 1:
            raise CliError("--workers and --processes must be >= 1")
        return campaign(a.scale, seeds, methods, table, a.workers, a.processes, a.out,
                        a.budget, a.time_budget)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
