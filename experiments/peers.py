"""Peers: Optuna's samplers and pruners on the same recorded learning curves, in simulated time.

    python -m experiments.peers --scale small --seeds "0 1 2 3 4"
    python -m experiments.peers --scale small --seeds "0" --peers "optuna_tpe_hb" --workers 4
    python -m experiments.peers --scale smoke --seeds "0" --table synthetic --out /tmp/peers

Each peer is an Optuna 5 study (ask/tell) with a sampler (TPE or random) and a pruner
(Hyperband or successive halving) set like our methods at that scale
(:func:`experiments.methods.settings_for`: ``max_t``, grace = minimum resource, ``eta``). A
trial does not train: its learning curve is looked up in a replay table
(``results/<scale>/lctable.csv``, :mod:`experiments.replay`), the curve of the nearest recorded
configuration, every epoch with its val_loss, train_loss and measured seconds.

Workers are a discrete-event simulation: a worker that becomes free asks the study for a
trial; each epoch ends ``epoch_seconds`` (recorded) after the previous one; at each epoch's end,
in simulated-time order across running trials (ties: lower job id first), the trial reports
``val_loss`` at step ``epoch`` and asks ``should_prune()``; once every event of an instant is
processed, the trials that ended are told and free workers ask (as
:class:`experiments.replay.ReplayEvaluator` and the manager loop of :mod:`experiments.search`
do). Budgets are those of our replayed searches (:func:`experiments.replay.plan_replay`): the
scale's epoch budget, no trial asked once the epochs of finished trials reach it, running
trials finish; no time budget unless ``--time-budget`` gives one in simulated seconds (then
running trials stop after their current epoch). Sampler decisions cost no simulated time; their
real seconds are logged.

How the peers differ from our methods (:mod:`experiments.methods`):
- ``SuccessiveHalvingPruner`` is asynchronous successive halving like our ``asha``: rungs at
  ``grace * eta**k`` epochs, a trial continues if it is in the top ``1/eta`` of the values
  recorded at that rung so far (the best so far while fewer than ``eta`` are there).
- ``HyperbandPruner`` is asynchronous too, like our ``async_hyperband`` (successive-halving
  brackets with ``min_early_stopping_rate`` 0, 1, ...), not our synchronous ``hyperband``,
  which promotes whole rungs from checkpoints. Optuna draws a trial's bracket by hashing the
  study name and trial number, weighted by Hyperband's bracket sizes (most trials in the most
  aggressive bracket); ours hashes the job number uniformly over brackets.
- ``TPESampler`` (Optuna 5 defaults: multivariate, constant liar) fills its "good" set with
  completed trials first, then pruned ones by epochs reached and last value; running trials
  count as "bad"; failed ones are left out. Our CBO fits every finished trial's last objective
  (stopped ones alike; a failure as the worst value seen). ``n_startup_trials`` is our
  ``n_initial_points``.
- A pruned trial's learning curve stops at its rung; nothing continues it later.

Logs use the live-search layout (:mod:`experiments.logs`), so :mod:`analysis.logs` reads peers
and our methods alike: ``results/<scale>/replay/<peer>/seed<k>/`` with results.csv,
learning_curves.csv (times in simulated seconds) and metadata.json (``backend: "replay"``).
The same seed and table give byte-identical CSVs. A seed whose metadata says complete on the
same table (sha256) is skipped; any other is simulated again from the start.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import io
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna
from ConfigSpace import (
    CategoricalHyperparameter,
    Constant,
    OrdinalHyperparameter,
    UniformFloatHyperparameter,
    UniformIntegerHyperparameter,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from experiments import logs
from experiments.methods import Settings, settings_for
from experiments.space import problem_for

Curve = list[tuple[float, float, float]]  # (val_loss, train_loss, epoch_seconds) per epoch

BACKEND = "replay"
DEVICES = 1  # devices a trial holds unless the table says (Table.devices)
MAX_TRIALS_PER_EPOCH = 10  # guard: trials that fail before epoch 1 consume no epochs


# ------------------------------------------------------------------------------ space
def optuna_distributions(problem) -> dict[str, BaseDistribution]:
    """The DeepHyper problem as Optuna distributions, one per hyperparameter, in its order.

    Log-uniform and uniform floats stay floats; an integer grid with a constant step (``4, 8,
    ..., 32``; ``1, 2, 3``) becomes an integer range with that step, so that TPE keeps its
    order; other grids (``16, 32, 64``) and flags/names become categorical.
    """
    out: dict[str, BaseDistribution] = {}
    for hp in problem.space.values():
        if isinstance(hp, UniformFloatHyperparameter):
            d = FloatDistribution(float(hp.lower), float(hp.upper), log=bool(hp.log))
        elif isinstance(hp, UniformIntegerHyperparameter):
            d = IntDistribution(int(hp.lower), int(hp.upper), log=bool(hp.log))
        elif isinstance(hp, OrdinalHyperparameter):
            seq = [logs.native(v) for v in hp.sequence]
            ints = all(isinstance(v, int) and not isinstance(v, bool) for v in seq)
            steps = {b - a for a, b in zip(seq, seq[1:])}  # empty for a single value
            if ints and len(steps) <= 1 and all(st > 0 for st in steps):
                d = IntDistribution(seq[0], seq[-1], step=next(iter(steps), 1))
            else:
                d = CategoricalDistribution(seq)
        elif isinstance(hp, CategoricalHyperparameter):
            d = CategoricalDistribution([logs.native(v) for v in hp.choices])
        elif isinstance(hp, Constant):
            d = CategoricalDistribution([logs.native(hp.value)])
        else:
            raise TypeError(f"{hp.name}: no Optuna distribution for {type(hp).__name__}")
        out[hp.name] = d
    return out


# ------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Peer:
    """An Optuna sampler composed with an Optuna pruner, both set from our ``Settings``."""

    name: str
    summary: str
    sampler: str  # "tpe" | "random"
    pruner: str  # "hyperband" | "sha"

    def make_sampler(self, s: Settings, seed: int) -> optuna.samplers.BaseSampler:
        if self.sampler == "tpe":
            # n_startup_trials: random configurations before the model, like our CBO
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_initial_points)
        return optuna.samplers.RandomSampler(seed=seed)

    def make_pruner(self, s: Settings) -> optuna.pruners.BasePruner:
        if self.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=s.grace, max_resource=s.max_t,
                                                  reduction_factor=s.eta)
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=s.grace,
                                                      reduction_factor=s.eta,
                                                      min_early_stopping_rate=0)

    def describe(self, s: Settings) -> dict:
        sampler = ({"sampler": "TPESampler", "n_startup_trials": s.n_initial_points,
                    "multivariate": "default (True)", "constant_liar": "default (True)"}
                   if self.sampler == "tpe" else {"sampler": "RandomSampler"})
        if self.pruner == "hyperband":
            n = int(math.floor(math.log(s.max_t / s.grace, s.eta))) + 1  # as Optuna computes it
            pruner = {"pruner": "HyperbandPruner", "min_resource": s.grace,
                      "max_resource": s.max_t, "reduction_factor": s.eta, "brackets": n}
        else:
            pruner = {"pruner": "SuccessiveHalvingPruner", "min_resource": s.grace,
                      "reduction_factor": s.eta, "min_early_stopping_rate": 0}
        return {"max_t": s.max_t, "budget_epochs": s.budget,
                "time_budget_s": s.time_budget, **sampler, **pruner}


PEERS: dict[str, Peer] = {p.name: p for p in [
    Peer("optuna_tpe_hb", "Optuna TPE + HyperbandPruner", "tpe", "hyperband"),
    Peer("optuna_tpe_sha", "Optuna TPE + SuccessiveHalvingPruner", "tpe", "sha"),
    Peer("optuna_random_hb", "Optuna random sampling + HyperbandPruner", "random", "hyperband"),
    Peer("optuna_random_sha", "Optuna random sampling + SuccessiveHalvingPruner", "random",
         "sha"),
]}


def get_peer(name: str) -> Peer:
    try:
        return PEERS[name]
    except KeyError:
        raise ValueError(f"unknown peer {name!r}; choose one of {', '.join(PEERS)}") from None


# ------------------------------------------------------------------------------ simulation
@dataclass(frozen=True)
class Recorded:
    """The recorded training of a configuration, as a replay table returns it.

    ``curve`` holds epochs 1..k: k = max_t, or the epochs before a failure; then ``failure``
    is its reason and ``failure_seconds`` the time the failing epoch ran. ``meta`` goes to
    results.csv as ``m:<key>`` columns (the table's configuration id and distance).
    """

    curve: Curve
    failure: str | None = None
    failure_seconds: float = 0.0
    meta: dict = field(default_factory=dict)


CurveFn = Callable[[dict], Recorded]


@dataclass
class _Trial:
    job_id: int
    worker: int
    trial: optuna.Trial
    config: dict
    rec: Recorded
    t_start: float  # simulated seconds
    epoch: int = 0  # epochs trained
    t_epoch: float = 0.0  # end of the last epoch (start of the next)
    last: float | None = None
    best: float = math.inf


@dataclass
class Run:
    """What one simulated search produced: the rows of its two CSVs and its timings."""

    results: list[dict] = field(default_factory=list)  # results.csv rows, in finishing order
    curves: list[dict] = field(default_factory=list)  # learning_curves.csv rows, in time order
    meta_keys: list[str] = field(default_factory=list)  # the curves' extra m: columns
    end_time: float = 0.0  # simulated seconds
    epochs: int = 0  # epochs of finished trials
    stopped_by: str | None = None  # epochs | time | max_trials
    decision_times: list[float] = field(default_factory=list)  # real seconds: tell + ask
    prune_times: list[float] = field(default_factory=list)  # real seconds: report + prune


def results_columns(names: list[str], extra: list[str] = ()) -> list[str]:
    """results.csv columns in DeepHyper's order (p: sorted, objective, job_id, ...)."""
    m = [logs.STATUS, logs.REASON, logs.EPOCHS, logs.BUDGET, logs.BEST_VAL_LOSS,
         logs.TRIAL_START, logs.TRIAL_END, logs.TRIAL_WORKER, *extra]
    return ([f"p:{n}" for n in sorted(names)] + ["objective", "job_id", "job_status",
                                                 "m:timestamp_submit"]
            + [f"m:{k}" for k in m] + ["m:timestamp_gather"])


def simulate(peer: Peer, s: Settings, seed: int, curve_fn: CurveFn, workers: int = 2,
             distributions: dict[str, BaseDistribution] | None = None,
             devices: int = DEVICES) -> Run:
    """Run ``peer`` for one seed on ``curve_fn`` with ``workers`` simulated workers, each
    trial holding ``devices`` devices (the learning curves' ``devices`` column).

    Per epoch the logic of :func:`experiments.worker.run_trial`: a learning-curve row, then
    ``report``; the trial ends at ``max_t``, when ``should_prune()``, or at the deadline
    (``s.time_budget`` simulated seconds). A recorded failure ends the trial
    ``failure_seconds`` after its last epoch, without a row for the failing epoch.
    """
    dists = distributions if distributions is not None else \
        optuna_distributions(problem_for(s.scale))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A fixed study name: HyperbandPruner hashes it with the trial number to pick a bracket.
    study = optuna.create_study(study_name=f"{peer.name}-seed{seed}", direction="minimize",
                                sampler=peer.make_sampler(s, seed), pruner=peer.make_pruner(s))
    run = Run()
    # (simulated time the next epoch of a trial ends or fails, job id): ties by job id
    events: list[tuple[float, int]] = []
    running: dict[int, _Trial] = {}
    free = list(range(workers))
    max_trials = MAX_TRIALS_PER_EPOCH * s.budget
    deadline = s.time_budget

    def finish(tr: _Trial, t: float, status: str, reason: str = "") -> float:
        """Tell the study, log the trial, free its worker; returns the real seconds of tell."""
        tic = time.perf_counter()
        if status == logs.STATUS_OK:
            study.tell(tr.trial, tr.last)
        elif status == logs.STATUS_STOPPED:
            study.tell(tr.trial, state=TrialState.PRUNED)
        else:
            study.tell(tr.trial, state=TrialState.FAIL)
        dt = time.perf_counter() - tic
        run.epochs += tr.epoch
        run.end_time = max(run.end_time, t)
        for k in tr.rec.meta:
            if k not in run.meta_keys:
                run.meta_keys.append(k)
        run.results.append({
            **{f"p:{k}": v for k, v in tr.config.items()},
            "objective": f"F_{reason}" if status == logs.STATUS_FAILED else -tr.last,
            "job_id": tr.job_id, "job_status": "DONE", "m:timestamp_submit": tr.t_start,
            f"m:{logs.STATUS}": status, f"m:{logs.REASON}": reason,
            f"m:{logs.EPOCHS}": tr.epoch, f"m:{logs.BUDGET}": s.max_t,
            f"m:{logs.BEST_VAL_LOSS}": tr.best if math.isfinite(tr.best) else None,
            f"m:{logs.TRIAL_START}": round(tr.t_start, 4), f"m:{logs.TRIAL_END}": round(t, 4),
            f"m:{logs.TRIAL_WORKER}": tr.worker, "m:timestamp_gather": t,
            **{f"m:{k}": v for k, v in tr.rec.meta.items()}})
        del running[tr.job_id]
        free.append(tr.worker)
        free.sort()
        return dt

    def push(tr: _Trial, t: float) -> None:
        """Schedule the end of the trial's next epoch, or its failure where its curve ends."""
        more = tr.epoch < len(tr.rec.curve)
        secs = tr.rec.curve[tr.epoch][2] if more else tr.rec.failure_seconds
        heapq.heappush(events, (t + max(0.0, float(secs)), tr.job_id))

    def fill(t: float, tell_seconds: float = 0.0) -> None:
        """Give every free worker a trial while the budget lasts (as experiments.search)."""
        while free and run.stopped_by is None:
            if run.epochs >= s.budget:
                run.stopped_by = "epochs"
            elif deadline is not None and t >= deadline:
                run.stopped_by = "time"
            elif len(run.decision_times) >= max_trials:
                run.stopped_by = "max_trials"
            if run.stopped_by:
                break
            tic = time.perf_counter()
            trial = study.ask(dists)  # samples every parameter now
            run.decision_times.append(time.perf_counter() - tic + tell_seconds)
            tell_seconds = 0.0
            config = {k: logs.native(trial.params[k]) for k in dists}
            tr = _Trial(trial.number, free.pop(0), trial, config, curve_fn(config), t,
                        t_epoch=t)
            running[tr.job_id] = tr
            push(tr, t)

    def step(tr: _Trial, t: float) -> tuple[str, str] | None:
        """The trial's epoch (or failure) that ends at ``t``: (status, reason) if it ends."""
        if tr.epoch >= len(tr.rec.curve):  # the recorded training failed in this epoch
            return logs.STATUS_FAILED, tr.rec.failure or "no_epoch"
        val, train, secs = (float(x) for x in tr.rec.curve[tr.epoch])
        tr.epoch += 1
        run.curves.append({
            logs.JOB_ID: tr.job_id, logs.EPOCH: tr.epoch, logs.VAL_LOSS: val,
            logs.TRAIN_LOSS: train, logs.EPOCH_SECONDS: secs, logs.T_START: round(tr.t_epoch, 4),
            logs.T_END: round(t, 4), logs.WORKER: tr.worker, logs.DEVICES: devices})
        tr.t_epoch = t
        if not math.isfinite(val):  # a table that records the diverged epoch's loss
            return logs.STATUS_FAILED, "diverged"
        tr.last, tr.best = val, min(tr.best, val)
        tic = time.perf_counter()
        tr.trial.report(val, tr.epoch)
        prune = tr.epoch < s.max_t and tr.trial.should_prune()
        run.prune_times.append(time.perf_counter() - tic)
        if tr.epoch >= s.max_t:
            return logs.STATUS_OK, ""
        if prune:
            return logs.STATUS_STOPPED, ""
        if deadline is not None and t >= deadline:
            return logs.STATUS_STOPPED, "time_budget"
        push(tr, t)
        return None

    fill(0.0)
    while events:
        # Every event at this instant (by job id), then the study is told of the trials that
        # ended and free workers ask: the order of ReplayEvaluator.gather and the manager loop.
        t, ended = events[0][0], []
        while events and events[0][0] == t:
            tr = running[heapq.heappop(events)[1]]
            outcome = step(tr, t)
            if outcome is not None:
                ended.append((tr, outcome))
        fill(t, sum(finish(tr, t, *outcome) for tr, outcome in ended))
    return run


# ------------------------------------------------------------------------------ logs
def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Whole file at once (temp file + rename), cells formatted like the live writers."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([logs._fmt(r.get(c)) for c in columns])
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def write_logs(run: Run, log_dir: Path, peer: Peer, s: Settings, seed: int, workers: int,
               table: dict, real_seconds: float, names: list[str]) -> dict:
    """Write results.csv, learning_curves.csv and (last) metadata.json; return the metadata.

    The metadata has the keys of a replayed search of ours (:func:`experiments.replay.
    run_replay`): times in simulated seconds, ``backend`` "replay", the table under
    ``replay``; ``peer`` names the library and its version.
    """
    from experiments.search import _git_commit, _versions

    log_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(log_dir / logs.RESULTS_CSV, results_columns(names, run.meta_keys), run.results)
    _write_csv(log_dir / logs.LEARNING_CURVES_CSV, list(logs.LC_COLUMNS), run.curves)
    best = f"m:{logs.BEST_VAL_LOSS}"
    segment = {"start_time": 0.0, "end_time": run.end_time, "status": logs.RUN_COMPLETE,
               "workers": workers, "evaluator": BACKEND, "host": socket.gethostname()}
    meta = {
        "method": peer.name, "scale": s.scale, "seed": seed, "evaluator": BACKEND,
        "workers": workers,
        # what the recorded curves trained: analysis flags anything but "mlpf"
        "trainable": table.get("trainable") or "mlpf",
        "method_settings": {"name": peer.name, "summary": peer.summary,
                            "settings": asdict(s), **peer.describe(s)},
        "budget_epochs": s.budget, "time_budget_s": s.time_budget,
        "versions": _versions(), "git_commit": _git_commit(), "host": socket.gethostname(),
        "command": [sys.executable, *sys.argv],
        "start_time": 0.0, "start_iso": None, "end_time": run.end_time, "end_iso": None,
        "status": logs.RUN_COMPLETE, "segments": [segment],
        "decision_times": run.decision_times,
        "decision_summary": logs.summarize_times(run.decision_times),
        "stopped_by": run.stopped_by, "epochs_trained": run.epochs,
        "n_trials": len(run.results),
        "best_val_loss": min((r[best] for r in run.results if r[best] is not None),
                             default=None),
        "backend": BACKEND,
        "replay": {**table, "clock": "simulated seconds", "real_seconds": real_seconds},
        "peer": {"library": "optuna", "version": optuna.__version__,
                 "prune_summary": logs.summarize_times(run.prune_times)},
    }
    logs.write_json(log_dir / logs.METADATA_JSON, meta)
    return meta


def run_peer(peer_name: str, scale: str, seed: int, curve_fn: CurveFn, log_dir: Path,
             workers: int = 2, table: dict | None = None, budget: int | None = None,
             time_budget: float | None = None, devices: int = DEVICES) -> dict | None:
    """Simulate one peer and seed and write its logs; None when they are already complete
    on the same table (``table["sha256"]``). The epoch budget is the scale's unless
    ``budget``; a simulated deadline only with ``time_budget`` (seconds)."""
    peer = get_peer(peer_name)
    table = table or {}
    previous = logs.read_json(log_dir / logs.METADATA_JSON)
    if previous is not None and previous.get("status") == logs.RUN_COMPLETE and \
            previous.get("replay", {}).get("sha256") == table.get("sha256"):
        return None
    logs.clear_logs(log_dir)
    s = settings_for(scale, budget, time_budget or 0)  # 0: no deadline
    dists = optuna_distributions(problem_for(scale))
    tic = time.perf_counter()
    run = simulate(peer, s, seed, curve_fn, workers, dists, devices)
    real = time.perf_counter() - tic
    return write_logs(run, log_dir, peer, s, seed, workers, table, real, list(dists))


# ------------------------------------------------------------------------------ curves
def table_curves(table) -> CurveFn:
    """The curve function of a replay table (:func:`experiments.replay.load_table`): the
    nearest recorded configuration's training, its id and distance as trial metadata (the
    columns our replayed searches write)."""
    from experiments.replay import TABLE_CONFIG, TABLE_DISTANCE

    def curve(config: dict) -> Recorded:
        m = table.lookup(config)  # one nearest-neighbour search per trial
        e = m.entry
        return Recorded(list(e.curve), e.failure, float(e.failure_seconds),
                        {TABLE_CONFIG: e.config_id, TABLE_DISTANCE: round(m.distance, 6)})

    return curve


def synthetic_curves(max_t: int, seconds: float = 1.0, fail: dict | None = None) -> CurveFn:
    """A stand-in table: :class:`experiments.trainables.SyntheticTrainable` curves to
    ``max_t``; an epoch lasts ``seconds`` times a factor in [0.5, 1.5) fixed per
    configuration; ``fail`` as in SyntheticTrainable (diverge in epoch 2, raise in epoch 1,
    oom before epoch 1), recorded as a table records failures."""
    from experiments.trainables import SyntheticTrainable, _unit_hash

    st = SyntheticTrainable(fail=fail)

    def curve(config: dict) -> Recorded:
        sec = seconds * (0.5 + _unit_hash("seconds", sorted(config.items())))
        failure = st._failure(config)
        if failure == "oom":
            return Recorded([], "oom")
        if failure == "raise":
            return Recorded([], "error:ValueError", sec)
        n = 1 if failure == "diverge" else max_t
        v = [st.loss(config, e) for e in range(1, n + 1)]
        return Recorded([(x, 0.9 * x, sec) for x in v], "diverged" if failure else None, sec)

    return curve


# ------------------------------------------------------------------------------ CLI
class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CliError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m experiments.peers", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", required=True, help="smoke | small | paper")
    p.add_argument("--seeds", default="0", help='seeds, e.g. "0 1 2"')
    p.add_argument("--peers", default=" ".join(PEERS), help=f"any of: {' '.join(PEERS)}")
    p.add_argument("--table", default=None,
                   help="replay table (default results/<scale>/lctable.csv); 'synthetic': "
                        "synthetic curves, 1 s per epoch on average")
    p.add_argument("--workers", type=int, default=2, help="simulated workers")
    p.add_argument("--out", default=None,
                   help="folder of <peer>/seed<k>/ (default results/<scale>/replay)")
    p.add_argument("--budget", type=int, default=None,
                   help="epochs per search (default: the scale's, see experiments.methods)")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="simulated seconds per search, 0 = none (default)")
    return p


def _load(scale: str, table_arg: str | None) -> tuple[CurveFn, dict, int]:
    """The curve function, what metadata records about its table, and devices per trial."""
    if table_arg == "synthetic":
        return synthetic_curves(settings_for(scale).max_t), \
            {"path": "synthetic", "sha256": None, "trainable": "synthetic"}, DEVICES
    from experiments.lctable import table_path
    from experiments.replay import TableError, load_table

    path = Path(table_arg) if table_arg else table_path(scale)
    try:
        table = load_table(path, scale)
    except TableError as e:
        raise CliError(str(e)) from None
    if table.max_t < settings_for(scale).max_t:
        raise CliError(f"{path} records {table.max_t} epochs, fewer than max_t="
                       f"{settings_for(scale).max_t} of scale {scale}")
    return table_curves(table), table.summary(), table.devices


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        try:
            settings_for(args.scale)
            peers = [get_peer(p).name for p in args.peers.split()]
            seeds = [int(x) for x in args.seeds.split()]
        except ValueError as e:
            raise CliError(str(e)) from None
        if args.workers < 1:
            raise CliError("--workers must be >= 1")
        curve_fn, table, devices = _load(args.scale, args.table)
        from mlpf.paths import RESULTS_DIR

        root = Path(args.out) if args.out else RESULTS_DIR / args.scale / BACKEND
        for name in peers:
            for seed in seeds:
                d = root / name / f"seed{seed}"
                meta = run_peer(name, args.scale, seed, curve_fn, d, args.workers, table,
                                args.budget, args.time_budget, devices)
                if meta is None:
                    print(f"{d}: already complete", file=sys.stderr)
                    continue
                best = meta["best_val_loss"]
                print(f"[{name} {args.scale} seed{seed}] trials {meta['n_trials']}, epochs "
                      f"{meta['epochs_trained']}/{meta['budget_epochs']} (stopped by "
                      f"{meta['stopped_by']}), best val_loss "
                      f"{best if best is None else f'{best:.4g}'}, simulated "
                      f"{meta['end_time']:.6g} s, real {meta['replay']['real_seconds']:.2f} s",
                      file=sys.stderr)
        return 0
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
