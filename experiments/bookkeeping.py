"""What a search records and when it stops: one rule for our methods and every peer.

Every search (the driver's manager loop, live or replayed; the simulated peers of
:mod:`experiments.peers.simulate`; the Ray Tune peers of :mod:`experiments.peers.ray_tune`)
keeps its books here:

- :class:`Books`: the finished trials (counts by status, best loss, consecutive failures) and
  the budget check, :meth:`Books.check`. The reasons a search stops asking for trials are
  :data:`STOP_REASONS`; when several hold at the same check the first in that order wins
  (failed trials, then the device-seconds, then the epochs, then the time, then the guard on
  trials that consume no epochs), and the first check that finds one fixes ``stopped_by``
  for the rest of the segment: trials already running finish, and what ends them later does
  not rename the stop.
- :func:`final_status` and :data:`EXIT_CODES`: the run status a segment ends with (complete,
  failed when the failures stopped it, interrupted) and the exit code of each.
- :func:`new_metadata` / :func:`close_metadata`: metadata.json's keys, written alike by every
  search (a peer adds its own section).
- :class:`Progress`: the one status line on stderr.

The rows of results.csv come from :func:`experiments.logs.results_row`.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from experiments import logs
from experiments.cli import duration
from experiments.provenance import git_commit, iso, machine_info, versions
from mlpf.paths import command_line

MAX_FAILURES = 10  # consecutive failed trials that end a search (0: never)
MAX_TRIALS_PER_EPOCH = 10  # guard: trials that fail before epoch 1 consume no epochs

# what ended a search (metadata.json "stopped_by"), in the order that decides a tie
STOP_FAILURES = "failures"
STOP_DEVICE = "device_budget"
STOP_EPOCHS = "epochs"
STOP_TIME = "time"
STOP_MAX_TRIALS = "max_trials"
STOP_REASONS = (STOP_FAILURES, STOP_DEVICE, STOP_EPOCHS, STOP_TIME, STOP_MAX_TRIALS)

EXIT_CODES = {logs.RUN_COMPLETE: 0, logs.RUN_FAILED: 1, logs.RUN_INTERRUPTED: 143}

# Signals that stop a search cleanly (finished trials written, status interrupted, exit 143):
# SIGTERM and SIGINT (Slurm, `timeout`, Ctrl-C), and SIGHUP, SIGUSR1 and SIGUSR2 (a closed
# terminal, Slurm's --signal warning) unless the process was started ignoring them (nohup).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
OPTIONAL_STOP_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def stop_signals() -> list[int]:
    """The signals that stop a search in this process (:data:`STOP_SIGNALS`, and those of
    :data:`OPTIONAL_STOP_SIGNALS` it does not ignore)."""
    return [*STOP_SIGNALS, *(s for s in OPTIONAL_STOP_SIGNALS
                             if signal.getsignal(s) is not signal.SIG_IGN)]


@dataclass(frozen=True)
class Budget:
    """The limits of one search. ``epochs``: epochs of finished trials; ``deadline``: a time
    in the search's clock (None: none); ``device_seconds``: epoch_seconds x devices over every
    reported epoch, running trials included (None or 0: none); ``max_failures`` consecutive
    failed trials (0: never); ``max_trials`` trials asked (None: ``MAX_TRIALS_PER_EPOCH`` x
    ``epochs``)."""

    epochs: int
    deadline: float | None = None
    device_seconds: float | None = None
    max_failures: int = MAX_FAILURES
    max_trials: int | None = None

    def reasons(self, *, epochs: int, now: float, device: float, failures: int,
                trials: int) -> list[str]:
        """Every reason that holds now, in :data:`STOP_REASONS` order."""
        max_trials = self.max_trials if self.max_trials is not None else \
            MAX_TRIALS_PER_EPOCH * self.epochs
        holds = {
            STOP_FAILURES: bool(self.max_failures) and failures >= self.max_failures,
            STOP_DEVICE: bool(self.device_seconds) and device >= self.device_seconds,
            STOP_EPOCHS: epochs >= self.epochs,
            STOP_TIME: self.deadline is not None and now >= self.deadline,
            STOP_MAX_TRIALS: trials >= max_trials,
        }
        return [r for r in STOP_REASONS if holds[r]]


@dataclass
class Books:
    """The bookkeeping of one search segment: finished trials and the stop.

    ``record(metadata)`` counts a finished trial (its m: metadata as the trial contract
    returns it); ``check(...)`` says whether trials may still be asked for and fixes
    ``stopped_by`` the first time they may not."""

    budget: Budget
    counts: dict = field(default_factory=lambda: {logs.STATUS_OK: 0, logs.STATUS_STOPPED: 0,
                                                  logs.STATUS_FAILED: 0})
    best: float = math.inf
    failures: int = 0  # consecutive failed trials
    last_failure: str = ""
    stopped_by: str | None = None

    @property
    def trials(self) -> int:
        return sum(self.counts.values())

    def record(self, metadata: dict, objective=None) -> None:
        status = metadata.get(logs.STATUS)
        status = status if status in self.counts else logs.STATUS_FAILED
        self.counts[status] += 1
        v = metadata.get(logs.BEST_VAL_LOSS)
        if isinstance(v, (int, float)) and math.isfinite(v):
            self.best = min(self.best, float(v))
        if status == logs.STATUS_FAILED:
            self.failures += 1
            self.last_failure = metadata.get(logs.REASON) or str(objective)
        else:
            self.failures = 0

    def restart(self) -> None:
        """A resumed segment: the stop is decided anew and failures count from here."""
        self.stopped_by, self.failures = None, 0

    def check(self, *, epochs: int, now: float = 0.0, device: float = 0.0,
              trials: int | None = None) -> bool:
        """True while trials may be asked for; else ``stopped_by`` says why (sticky)."""
        if self.stopped_by is None:
            held = self.budget.reasons(epochs=epochs, now=now, device=device,
                                       failures=self.failures,
                                       trials=self.trials if trials is None else trials)
            self.stopped_by = held[0] if held else None
        return self.stopped_by is None

    def failure_text(self) -> str:
        return f"{self.failures} consecutive trials failed (last: {self.last_failure})"


def final_status(interrupted: bool, stopped_by: str | None) -> str:
    """The status a segment ends with: interrupted, failed (stopped by its failed trials),
    else complete."""
    if interrupted:
        return logs.RUN_INTERRUPTED
    return logs.RUN_FAILED if stopped_by == STOP_FAILURES else logs.RUN_COMPLETE


def exit_code(status: str) -> int:
    """0 complete, 1 ended by failed trials (or a failed write), 143 interrupted."""
    return EXIT_CODES.get(status, EXIT_CODES[logs.RUN_INTERRUPTED])


def closing_reason(status: str, stopped_by: str | None, resume_hint: str = "--resume") -> str:
    """What the last progress line says ended the search."""
    if status == logs.RUN_INTERRUPTED:
        return f"interrupted (resume with {resume_hint})"
    if status == logs.RUN_FAILED:
        return "ended by failed trials"
    return f"stopped by {stopped_by or 'its searcher'}"


# ------------------------------------------------------------------------------ metadata
def new_metadata(*, method: str, scale: str, seed: int, evaluator: str, workers: int,
                 trainable: str, method_settings: dict, budget_epochs: int,
                 time_budget_s: float | None, budget_device_s: float | None,
                 start_time: float, simulated: bool = False,
                 trainable_options: dict | None = None, loss: dict | None = None,
                 versions_of: tuple = ()) -> dict:
    """metadata.json of a new search: what ran (method and its settings, budgets, scale, seed,
    trainable and its loss), where (evaluator, workers, host, machine, versions, commit,
    command), and its first run segment. ``simulated``: times are simulated seconds from 0
    (no calendar time, no machine)."""
    segment = {"start_time": start_time, "end_time": None, "status": logs.RUN_RUNNING,
               "workers": workers, "evaluator": evaluator, "host": socket.gethostname()}
    meta = {
        logs.MD_METHOD: method, logs.MD_SCALE: scale, logs.MD_SEED: seed,
        logs.MD_EVALUATOR: evaluator, logs.MD_WORKERS: workers, logs.MD_TRAINABLE: trainable,
        "trainable_options": trainable_options or {}, logs.LOSS: loss,
        logs.MD_SETTINGS: method_settings,
        logs.MD_BUDGET_EPOCHS: budget_epochs, "time_budget_s": time_budget_s,
        "budget_device_s": budget_device_s,
        "versions": versions(versions_of), "git_commit": git_commit(),
        "host": socket.gethostname(),
        **({} if simulated else {"machine": machine_info()}),
        "command": command_line(sys.argv),
        logs.MD_START: start_time, "start_iso": None if simulated else iso(start_time),
        logs.MD_END: None, "end_iso": None,
        logs.MD_STATUS: logs.RUN_RUNNING, logs.MD_SEGMENTS: [segment],
        logs.MD_DECISIONS: [], "decision_summary": logs.summarize_times([]),
    }
    return meta


def close_metadata(meta: dict, status: str, *, end_time: float, epochs: int, n_trials: int,
                   stopped_by: str | None = None, simulated: bool = False) -> None:
    """Record the end (or a running snapshot) of the current segment in ``meta``."""
    meta.update({logs.MD_STATUS: status, logs.MD_END: end_time,
                 "end_iso": None if simulated else iso(end_time), "epochs_trained": epochs,
                 logs.MD_N_TRIALS: n_trials, logs.MD_STOPPED_BY: stopped_by,
                 "decision_summary": logs.summarize_times(meta[logs.MD_DECISIONS])})
    meta[logs.MD_SEGMENTS][-1].update(end_time=end_time, status=status)


# ------------------------------------------------------------------------------ progress
class Progress:
    """One status line on stderr: redrawn on a terminal, a plain line every 30 s otherwise.

    It shows the trials, the budget used (device-seconds where that budget is set, and
    epochs), the best loss, the elapsed wall time and an ETA (elapsed x left / used of the
    budget that binds first: epochs, device-seconds, or the wall-time cap ``time_budget`` in
    seconds of this segment); the closing line says what stopped the search."""

    def __init__(self, label: str, budget: int, stream=None,
                 device_budget: float | None = None, time_budget: float | None = None):
        self.label, self.budget = label, budget
        self.stream = sys.stderr if stream is None else stream
        self.device_budget, self.time_budget = device_budget, time_budget
        self.tty = self.stream.isatty() and not os.environ.get("CI")
        self.interval = 0.2 if self.tty else 30.0
        self.last = -math.inf
        self.last_line = ""
        self.t0 = time.monotonic()

    def due(self) -> bool:
        """Whether the next :meth:`update` would draw (the interval has passed)."""
        return time.monotonic() - self.last >= self.interval

    def fraction(self, epochs: int, device: float, elapsed: float = 0.0) -> float:
        """The share of the binding budget used, in [0, 1]."""
        f = epochs / self.budget if self.budget else 0.0
        if self.device_budget:
            f = max(f, device / self.device_budget)
        if self.time_budget:
            f = max(f, elapsed / self.time_budget)
        return min(1.0, max(0.0, f))

    def update(self, counts: dict, best: float, epochs: int, running: int, final=False,
               device: float = 0.0, reason: str | None = None):
        now = time.monotonic()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        best_s = f"{best:.4g}" if math.isfinite(best) else "-"
        used = f"epochs {epochs}/{self.budget}"
        if self.device_budget:
            used = f"device {device:.0f}/{self.device_budget:.0f} s, " + used
        elapsed = now - self.t0
        line = (f"[{self.label}] trials {sum(counts.values())} (ok {counts['ok']}, stopped "
                f"{counts['stopped']}, failed {counts['failed']}), running {running} | "
                f"{used} | best val_loss {best_s} | elapsed {duration(elapsed)}")
        f = self.fraction(epochs, device, elapsed)
        if final:
            line += f" | done: {reason or 'complete'}"
        elif 0.0 < f < 1.0:
            line += f", ETA {duration(elapsed * (1.0 - f) / f)}"
        if final and line == self.last_line and not self.tty:
            return  # already printed
        self.last_line = line
        end = "\n" if (final or not self.tty) else ""
        self.stream.write(("\r\033[K" if self.tty else "") + line + end)
        self.stream.flush()
