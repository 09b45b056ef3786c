"""Peers in simulated time: another library's ask/tell loop on our clock and trial contract.

A peer adapter (:mod:`experiments.peers.optuna_peers`) gives a *session*:

- ``session.ask() -> (handle, config)``: the library's next trial and its hyperparameters;
- ``session.job(handle, number, config)``: a job for :class:`experiments.trial.TrialRun`
  (``record(epoch, -val_loss)`` reports to the library, ``stopped()`` asks its pruner);
- ``session.tell(handle, outcome)``: the trial's end (``outcome`` as the trial returns it);
- optional ``session.first_epoch(handle) -> int``: the epoch the trial starts at (1 if absent;
  more for a promotion the library continues from the previous trial's checkpoint).

:func:`simulate` runs that session with ``workers`` simulated workers on
:class:`experiments.clock.Clock`: a free worker asks for a trial; its epochs come from a
recorded training (a learning-curve table, or synthetic curves) and run through the same
per-epoch contract as our live and replayed trials; once every event of an instant is
processed, the trials that ended are told and free workers ask (the order of our replay
evaluator and manager loop). Budgets and the stop are those of our searches, by the same code
(:class:`experiments.bookkeeping.Books`): the scale's epoch budget (no trial asked once the
epochs of finished trials reach it, running trials finish), its device-seconds, consecutive
failed trials; a deadline only with a time budget (simulated seconds; running trials then
stop after their current epoch). The library's decisions cost no simulated time; their real
seconds are logged.

Logs use the live-search layout (:mod:`experiments.logs`), so :mod:`analysis.logs` reads peers
and our methods alike: results.csv, learning_curves.csv (times in simulated seconds) and
metadata.json (``backend: "replay"``). The same seed and table give byte-identical CSVs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from experiments import bookkeeping, logs
from experiments.bookkeeping import Books, Budget
from experiments.clock import Clock
from experiments.methods import Settings
from experiments.trainables import SyntheticTrainable, unit_hash
from experiments.trial import Ledger, Recorded, TrialRun, replay_epochs

BACKEND = "replay"
DEVICES = 1  # devices a trial holds unless the table says (Table.devices)

CurveFn = Callable[[dict], Recorded]


@dataclass
class Run:
    """What one simulated search produced: the rows of its two CSVs and its timings."""

    results: list[dict] = field(default_factory=list)  # results.csv rows, in finishing order
    curves: list[dict] = field(default_factory=list)  # learning_curves.csv rows, in time order
    meta_keys: list[str] = field(default_factory=list)  # the curves' extra m: columns
    end_time: float = 0.0  # simulated seconds
    epochs: int = 0  # epochs of finished trials
    stopped_by: str | None = None  # experiments.bookkeeping.STOP_REASONS
    decision_times: list[float] = field(default_factory=list)  # real seconds: tell + ask
    best: float | None = None  # best val_loss of a finished trial
    status: str = logs.RUN_COMPLETE  # failed when its failed trials stopped it


@dataclass
class _Flight:
    """A trial in flight: the library's handle, its configuration and its epoch generator."""

    number: int
    handle: object
    config: dict
    run: TrialRun
    steps: object


def simulate(session, s: Settings, curve_fn: CurveFn, workers: int = 2,
             devices: int = DEVICES, max_failures: int = bookkeeping.MAX_FAILURES) -> Run:
    """Run ``session`` for one search on ``curve_fn`` with ``workers`` simulated workers,
    each trial holding ``devices`` devices."""
    run = Run()
    clock = Clock(workers)
    ledger = Ledger() if s.device_budget else None
    deadline = s.time_budget
    books = Books(Budget(s.budget, deadline, s.device_budget, max_failures))
    ended: list[tuple[_Flight, dict]] = []
    # a session whose library promotes a configuration as a new trial and continues it from
    # its checkpoint says at which epoch that trial starts (NePS); otherwise epoch 1
    first = getattr(session, "first_epoch", None) or (lambda handle: 1)

    def advance(f: _Flight) -> None:
        """Resume a trial at the end of its epoch: schedule the next one, or note its end."""
        try:
            clock.schedule(next(f.steps), f.number, f)
        except StopIteration as stop:
            ended.append((f, stop.value))

    def finish(f: _Flight, outcome: dict) -> float:
        """Tell the library, log the trial, free its worker; returns the real seconds of tell."""
        tic = time.perf_counter()
        session.tell(f.handle, outcome)
        dt = time.perf_counter() - tic
        meta = outcome["metadata"]
        run.epochs += meta[logs.EPOCHS]
        books.record(meta, outcome["objective"])
        run.end_time = max(run.end_time, clock.now)
        for k in f.run.extra_meta:
            if k not in run.meta_keys:
                run.meta_keys.append(k)
        run.results.append(logs.results_row(f.config, outcome, f.number, f.run.t_start,
                                            clock.now))
        clock.release_worker(f.run.worker)
        return dt

    def fill(tell_seconds: float = 0.0) -> None:
        """Give every free worker a trial while the budget lasts (as our manager loop)."""
        while clock.free_workers and run.stopped_by is None:
            if not books.check(epochs=run.epochs, now=clock.now,
                               device=ledger.total() if ledger is not None else 0.0,
                               trials=len(run.decision_times)):
                run.stopped_by = books.stopped_by
                break
            tic = time.perf_counter()
            handle, config = session.ask()
            run.decision_times.append(time.perf_counter() - tic + tell_seconds)
            tell_seconds = 0.0
            number = len(run.decision_times) - 1
            rec = curve_fn(config)
            tr = TrialRun(session.job(handle, number, config), s.max_t, clock,
                          deadline=deadline, write_row=run.curves.append,
                          worker=clock.take_worker(), devices=devices, extra_meta=rec.meta,
                          ledger=ledger, device_budget=s.device_budget)
            advance(_Flight(number, handle, config, tr, replay_epochs(tr, rec, first(handle))))

    fill()
    while clock.pending:
        ended.clear()
        clock.advance(advance)
        fill(sum(finish(f, outcome) for f, outcome in list(ended)))
    run.best = None if books.best == float("inf") else books.best
    run.status = bookkeeping.final_status(False, run.stopped_by)
    return run


# ------------------------------------------------------------------------------ logs
def write_logs(run: Run, log_dir: Path, *, method_settings: dict, s: Settings, seed: int,
               workers: int, table: dict, real_seconds: float, names: list[str],
               peer_info: dict, loss: dict | None = None) -> dict:
    """Write results.csv, learning_curves.csv and (last) metadata.json; return the metadata.

    The metadata has the keys of a replayed search of ours: times in simulated seconds,
    ``backend`` "replay", the table under ``replay``, the table's ``loss`` where known;
    ``peer`` names the library and version.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    logs.write_csv(log_dir / logs.RESULTS_CSV, logs.results_columns(names, run.meta_keys),
                   run.results)
    logs.write_csv(log_dir / logs.LEARNING_CURVES_CSV, list(logs.LC_COLUMNS), run.curves)
    meta = bookkeeping.new_metadata(
        method=method_settings["name"], scale=s.scale, seed=seed, evaluator=BACKEND,
        workers=workers,
        # what the recorded curves trained: analysis flags anything but "mlpf"
        trainable=table.get("trainable") or "mlpf",
        method_settings={**method_settings, "settings": asdict(s)}, budget_epochs=s.budget,
        time_budget_s=s.time_budget, budget_device_s=s.device_budget, start_time=0.0,
        simulated=True, loss=loss)
    meta[logs.MD_DECISIONS] = run.decision_times
    bookkeeping.close_metadata(meta, run.status, end_time=run.end_time, epochs=run.epochs,
                               n_trials=len(run.results), stopped_by=run.stopped_by,
                               simulated=True)
    meta.update({"best_val_loss": run.best, logs.MD_BACKEND: BACKEND,
                 "replay": {**table, "clock": "simulated seconds", "real_seconds": real_seconds},
                 "peer": peer_info})
    logs.write_json(log_dir / logs.METADATA_JSON, meta)
    return meta


# ------------------------------------------------------------------------------ curves
def table_curves(table) -> CurveFn:
    """The curve function of a replay table (:func:`experiments.table.load_table`): the
    nearest recorded configuration's training, its id and distance as trial metadata (the
    columns our replayed searches write)."""

    def curve(config: dict) -> Recorded:
        entry, meta = table.replay(config)
        return Recorded(entry.curve, entry.failure, float(entry.failure_seconds), meta)

    return curve


def synthetic_curves(max_t: int, seconds: float = 1.0, fail: dict | None = None) -> CurveFn:
    """A stand-in table: :class:`experiments.trainables.SyntheticTrainable` curves to
    ``max_t``; an epoch lasts ``seconds`` times a factor in [0.5, 1.5) fixed per
    configuration; ``fail`` as in SyntheticTrainable (diverge in epoch 2, raise in epoch 1,
    oom before epoch 1), recorded as a table records failures."""
    st = SyntheticTrainable(fail=fail)

    def curve(config: dict) -> Recorded:
        sec = seconds * (0.5 + unit_hash("seconds", sorted(config.items())))
        failure = st.failure_kind(config)
        if failure == "oom":
            return Recorded([], "oom")
        if failure == "raise":
            return Recorded([], "error:ValueError", sec)
        n = 1 if failure == "diverge" else max_t
        v = [st.loss(config, e) for e in range(1, n + 1)]
        return Recorded([(x, 0.9 * x, sec) for x in v], "diverged" if failure else None, sec)

    return curve
