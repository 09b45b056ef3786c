"""Run one hyperparameter search and write its raw logs.

    python -m experiments.search --method asha --scale smoke --seed 0 --workers 2
    python -m experiments.search --method asha_bo --scale small --seed 1 --resume
    mpiexec -n 5 python -m experiments.search --method hyperband --scale small --evaluator mpi
    python -m experiments.search --method asha --scale small --seed 3 --backend replay
    EXP_SYNTHETIC='{"sleep": 0.02}' python -m experiments.search --method asha --scale smoke \\
        --trainable synthetic --out /tmp/asha

Logs go to ``results/<scale>/<method>/seed<k>/`` (``--out`` elsewhere): results.csv,
learning_curves.csv, metadata.json (see :mod:`experiments.logs`).

The manager loop is DeepHyper's (ask -> submit -> gather -> tell) written out so that it can
(a) stop submitting when the search's epoch or wall-time budget is spent, (b) time every
decision,
(c) stop cleanly on SIGTERM/SIGINT (finished trials written, metadata status "interrupted";
exit code 143) and (d) resume from the logs (``--resume``): finished trials are kept and told
to the method (surrogate, Hyperband rungs, ASHA rung values), job ids continue after the largest
logged one, trials that were running are not counted as finished.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from experiments import logs
from experiments.machine import machine_info
from experiments.methods import get_method, method_metadata, settings_for, uses_checkpoints
from experiments.trainables import get_trainable
from experiments.worker import LOCAL_RANK_ENV, LOCAL_WORKERS_ENV, THREADS_ENV, RunContext

EVALUATORS = ("process", "mpi", "serial", "ray")
MPI_STORAGE_MB = int(os.environ.get("EXP_MPI_STORAGE_MB", "16"))  # one-sided window size
RESUME_SEED_STRIDE = 7919  # a resumed segment reseeds its sampler: no replay of old configs


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


@dataclass
class Plan:
    """Everything decided before any evaluator exists (identical on every MPI rank)."""

    method: str
    scale: str
    seed: int
    evaluator: str
    workers: int
    trainable: str
    log_dir: Path
    settings: object
    resume: bool = False
    previous: dict | None = None  # metadata.json of the interrupted search
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------ setup
def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("deephyper", "mpi4py", "numpy", "pandas", "scikit-learn", "ConfigSpace",
                "torch", "torch_geometric", "optuna"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _git_commit() -> str | None:
    from mlpf.paths import ROOT

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        return (sha + ("-dirty" if dirty.strip() else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def plan_search(method: str, scale: str, seed: int, evaluator: str = "process",
                workers: int = 2, out: str | None = None, resume: bool = False,
                trainable: str = "mlpf", budget: int | None = None,
                time_budget: float | None = None, check_ready: bool = True) -> Plan:
    """Validate the request and look at existing logs; raise :class:`CliError` if unusable.

    ``check_ready=False``: do not ask the trainable for its data (replayed searches)."""
    from mlpf.paths import results_dir

    try:
        get_method(method)
        settings = settings_for(scale, budget, time_budget)
        tr = get_trainable(trainable)
    except (ValueError, TypeError) as e:
        raise CliError(str(e)) from None
    if evaluator not in EVALUATORS:
        raise CliError(f"unknown evaluator {evaluator!r}; choose one of {', '.join(EVALUATORS)}")
    if evaluator == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise CliError("the ray evaluator needs the 'ray' package, which is not "
                           "installed; use --evaluator process or mpi") from None
    if workers < 1:
        raise CliError("--workers must be >= 1")
    try:
        if check_ready:
            tr.check_ready(scale)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    log_dir = Path(out) if out else results_dir(scale, method, seed)
    previous = logs.read_json(log_dir / logs.METADATA_JSON)
    has_logs = previous is not None or (log_dir / logs.RESULTS_CSV).exists()
    if has_logs and not resume:
        raise CliError(f"{log_dir} already holds a search; pass --resume to continue it or "
                       "remove the folder")
    if previous is not None:
        for key, want in (("method", method), ("scale", scale), ("seed", seed)):
            if previous.get(key) != want:
                raise CliError(f"{log_dir} holds {key}={previous.get(key)!r}, not {want!r}")
    return Plan(method, scale, seed, evaluator, workers, trainable, log_dir, settings,
                resume=resume and has_logs, previous=previous,
                meta={"trainable_options": tr.options()})


def _new_metadata(plan: Plan, workers: int, now: float) -> dict:
    segment = {"start_time": now, "end_time": None, "status": logs.RUN_RUNNING,
               "workers": workers, "evaluator": plan.evaluator, "host": socket.gethostname()}
    if plan.previous is not None:  # resume: keep the search's start, add a segment
        meta = dict(plan.previous)
        meta["segments"] = [*meta.get("segments", []), segment]
        meta.update(status=logs.RUN_RUNNING, workers=workers, evaluator=plan.evaluator)
        return meta
    return {
        "method": plan.method, "scale": plan.scale, "seed": plan.seed,
        "evaluator": plan.evaluator, "workers": workers, "trainable": plan.trainable,
        "trainable_options": plan.meta.get("trainable_options", {}),
        "method_settings": method_metadata(plan.method, plan.settings),
        "budget_epochs": plan.settings.budget if plan.method != "default"
        else plan.settings.max_t,
        "time_budget_s": plan.settings.time_budget if plan.method != "default" else None,
        "versions": _versions(), "git_commit": _git_commit(), "host": socket.gethostname(),
        "machine": machine_info(),
        "command": [sys.executable, *sys.argv],
        "start_time": now, "start_iso": _iso(now), "end_time": None, "end_iso": None,
        "status": logs.RUN_RUNNING, "segments": [segment],
        "decision_times": [], "decision_summary": logs.summarize_times([]),
    }


# ------------------------------------------------------------------------------ progress
class Progress:
    """One status line on stderr: redrawn on a terminal, a plain line every 30 s otherwise."""

    def __init__(self, label: str, budget: int, stream=sys.stderr):
        self.label, self.budget, self.stream = label, budget, stream
        self.tty = stream.isatty() and not os.environ.get("CI")
        self.interval = 0.2 if self.tty else 30.0
        self.last = -math.inf
        self.last_line = ""

    def update(self, counts: dict, best: float, epochs: int, running: int, final=False):
        now = time.monotonic()
        if not final and now - self.last < self.interval:
            return
        self.last = now
        best_s = f"{best:.4g}" if math.isfinite(best) else "-"
        line = (f"[{self.label}] trials {sum(counts.values())} (ok {counts['ok']}, stopped "
                f"{counts['stopped']}, failed {counts['failed']}), running {running} | "
                f"epochs {epochs}/{self.budget} | best val_loss {best_s}")
        if final and line == self.last_line and not self.tty:
            return  # already printed
        self.last_line = line
        end = "\n" if (final or not self.tty) else ""
        self.stream.write(("\r\033[K" if self.tty else "") + line + end)
        self.stream.flush()


# ------------------------------------------------------------------------------ restore
def _objective(v):
    """results.csv objective cell -> float, or the failure string ``F_<reason>``."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return float(v)


def _restore(search, ev, log_dir: Path, results_df, lc_df) -> tuple[int, int]:
    """Put logged trials back into the evaluator's storage, the history and the method.

    Returns ``(jobs already used, epochs already trained)``.
    """
    from deephyper.evaluator import HPOJob, JobStatus

    from experiments.schedulers import ASHAStopper

    storage, sid = ev._storage, ev._search_id
    ids = []
    if results_df is not None and len(results_df):
        ids.append(int(results_df["job_id"].max()))
    if len(lc_df):
        ids.append(int(lc_df[logs.JOB_ID].max()))
    n_jobs = max(ids) + 1 if ids else 0
    for _ in range(n_jobs):  # job ids continue after the largest logged one
        storage.create_new_job(sid)
    ev.job_id_gathered.extend(f"{sid}.{i}" for i in range(n_jobs))

    stopper = search._stopper
    if isinstance(stopper, ASHAStopper):
        for jid, g in lc_df.groupby(logs.JOB_ID):
            curve = dict(zip(g[logs.EPOCH].astype(int), -g[logs.VAL_LOSS].astype(float)))
            stopper.restore(storage, f"{sid}.{int(jid)}", curve)

    jobs, pairs = [], []
    if results_df is not None:
        # a row cut by a kill while DeepHyper appended it: that trial counts as unfinished
        results_df = results_df.dropna(subset=["job_id", "objective", "job_status"])
        p_cols = [c for c in results_df.columns if c.startswith("p:")]
        m_cols = [c for c in results_df.columns if c.startswith("m:")]
        for _, row in results_df.iterrows():
            args = {c[2:]: logs.native(row[c]) for c in p_cols}
            obj = _objective(row["objective"])
            job = HPOJob(f"{sid}.{int(row['job_id'])}", args, None, storage)
            meta = {c[2:]: logs.native(row[c]) for c in m_cols}
            meta = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in meta.items()}
            job.set_output({"objective": obj, "metadata": meta})
            job.status = JobStatus[row["job_status"]] if "job_status" in row else \
                JobStatus.DONE
            jobs.append(job)
            pairs.append((args, obj))
    search.history.extend(jobs)
    if hasattr(search, "restore"):
        search.restore(pairs)
    elif pairs:
        search.tell(pairs)  # CBO fits its surrogate on them; random search ignores them
    return n_jobs, int(len(lc_df))


# ------------------------------------------------------------------------------ driver
class _Interrupted(Exception):
    pass


def _write_results(search, log_dir: Path) -> None:
    """The complete results.csv (all columns of all trials), written atomically."""
    if len(search.history) == 0:
        return
    df = search.history.to_dataframe()
    tmp = log_dir / (logs.RESULTS_CSV + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, log_dir / logs.RESULTS_CSV)


def _kill_children() -> None:
    """Stop the worker processes this manager started (process evaluator)."""
    import psutil

    kids = psutil.Process().children(recursive=True)
    for p in kids:
        try:
            p.terminate()
        except psutil.Error:
            pass
    psutil.wait_procs(kids, timeout=3)
    for p in kids:
        try:
            p.kill()
        except psutil.Error:
            pass


def _reset_storage_connection(ev) -> None:
    """Drop the manager's connection to the evaluator's storage server, if it has one.

    The process evaluator keeps job states in a multiprocessing server (DeepHyper's
    SharedMemoryStorage, a proxy). A signal that interrupts a call to it may leave half a reply
    on the connection, and the next call would read that instead of its own reply. The proxy
    opens a new connection on its next call when the thread-local one is gone.
    """
    tls = getattr(getattr(ev, "_storage", None), "_tls", None)
    conn = getattr(tls, "connection", None)
    if conn is None:
        return
    try:
        conn.close()
    except OSError:
        pass
    del tls.connection


def drive(plan: Plan, ev, workers: int, meta: dict, progress: bool = True) -> int:
    """The manager loop. Returns the exit code (0 complete, 143 interrupted).

    The search's time (deadline, end time) is ``ev.clock()`` when the evaluator has one (the
    simulated clock of a replay, :mod:`experiments.replay`), else ``time.time()``.
    """
    clock = getattr(ev, "clock", time.time)
    log_dir = plan.log_dir
    method = get_method(plan.method)
    results_df = logs.read_results(log_dir) if plan.resume else None
    lc_df = logs.read_learning_curves(log_dir) if plan.resume else \
        logs.read_learning_curves(Path("/nonexistent"))
    if plan.resume and (log_dir / logs.RESULTS_CSV).exists():
        # DeepHyper renames an existing results.csv when a search is built; it is rewritten
        # from the restored history right after.
        os.replace(log_dir / logs.RESULTS_CSV, log_dir / "results.resume.csv")
    logs.ensure_header(log_dir / logs.LEARNING_CURVES_CSV)
    logs.end_with_newline(log_dir / logs.LEARNING_CURVES_CSV)  # after a kill mid-line

    from experiments.space import problem_for

    segment = len(meta["segments"]) - 1
    search = method.make(problem_for(plan.scale), plan.settings,
                         plan.seed + RESUME_SEED_STRIDE * segment, str(log_dir))
    search.check_evaluator(ev)
    ev.search = search
    ev._stopper = search._stopper

    _, epochs = _restore(search, ev, log_dir, results_df, lc_df)
    search.history._csv_cursor = 0
    search.dump_jobs_done_to_csv(flush=True)
    if (log_dir / "results.resume.csv").exists():
        if len(search.history):
            os.remove(log_dir / "results.resume.csv")
        else:
            os.replace(log_dir / "results.resume.csv", log_dir / logs.RESULTS_CSV)

    budget = meta["budget_epochs"]
    deadline = _deadline(meta)
    meta.pop("stopped_by", None)
    counts = {logs.STATUS_OK: 0, logs.STATUS_STOPPED: 0, logs.STATUS_FAILED: 0}
    best = math.inf
    for job in search.history.jobs:
        counts[job.metadata.get(logs.STATUS) or logs.STATUS_FAILED] += 1
        v = job.metadata.get(logs.BEST_VAL_LOSS)
        if isinstance(v, (int, float)) and math.isfinite(v):
            best = min(best, v)
    bar = Progress(f"{plan.method} {plan.scale} seed{plan.seed}", budget) if progress else None

    state = {"stop": False, "waiting": False}
    manager_pid = os.getpid()

    def on_signal(signum, frame):
        if os.getpid() != manager_pid:  # a forked worker before it reset its handlers
            os._exit(128 + signum)
        state["stop"] = True
        if state["waiting"]:
            raise _Interrupted()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    decision_times = meta["decision_times"]
    last_meta_write = time.monotonic()
    pending = []
    status = logs.RUN_COMPLETE
    try:
        while True:
            if state["stop"]:
                raise _Interrupted()
            t = time.perf_counter()
            if pending:
                search.tell([(job.args, job.objective) for job in pending])
            n_free = workers - len(ev._tasks_running)
            if epochs >= budget:
                meta["stopped_by"] = "epochs"
            elif deadline is not None and clock() >= deadline:
                meta["stopped_by"] = "time"
            configs = search.ask(n_free) if n_free > 0 and not meta.get("stopped_by") else []
            if pending or configs:
                decision_times.append(time.perf_counter() - t)
            if configs:
                ev.submit(configs)
            if pending:
                search.history.extend(pending)
                search.dump_jobs_done_to_csv()
                pending = []
            if not ev._tasks_running:
                break
            state["waiting"] = True
            try:
                got = ev.gather("BATCH", 1)
            finally:
                state["waiting"] = False
            pending = got[0] + got[1] if isinstance(got, tuple) else got
            for job in pending:
                epochs += int(job.metadata.get(logs.EPOCHS) or 0)
                counts[job.metadata.get(logs.STATUS) or logs.STATUS_FAILED] += 1
                v = job.metadata.get(logs.BEST_VAL_LOSS)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    best = min(best, v)
            if bar:
                bar.update(counts, best, epochs, len(ev._tasks_running))
            if time.monotonic() - last_meta_write > 30:  # survive a SIGKILL with recent data
                _finish_meta(meta, logs.RUN_RUNNING, epochs, len(search.history) + len(pending),
                             clock())
                logs.write_json(log_dir / logs.METADATA_JSON, meta)
                last_meta_write = time.monotonic()
    except _Interrupted:
        status = logs.RUN_INTERRUPTED
        _reset_storage_connection(ev)
        done = [t for t in ev._tasks_running if t.done() and not t.cancelled()
                and t.exception() is None]
        harvested = ev._process_local_tasks_done(done)  # finished, not yet gathered
        epochs += sum(int(job.metadata.get(logs.EPOCHS) or 0) for job in harvested)
        pending = pending + harvested
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if pending:
        search.history.extend(pending)
    if status == logs.RUN_COMPLETE:
        ev.close()
        # Training states of Hyperband trials are only needed to continue a search.
        shutil.rmtree(log_dir / "checkpoints", ignore_errors=True)
    _write_results(search, log_dir)
    _finish_meta(meta, status, epochs, len(search.history), clock())
    logs.write_json(log_dir / logs.METADATA_JSON, meta)
    if bar:
        bar.update(counts, best, epochs, 0, final=True)
    return 0 if status == logs.RUN_COMPLETE else 143


def _deadline(meta: dict) -> float | None:
    """time.time() at which the search's wall-time budget ends (earlier segments count)."""
    if not meta.get("time_budget_s"):
        return None
    segs = meta["segments"]
    used = sum(s["end_time"] - s["start_time"] for s in segs[:-1] if s.get("end_time"))
    return segs[-1]["start_time"] + meta["time_budget_s"] - used


def _finish_meta(meta: dict, status: str, epochs: int, n_trials: int,
                 now: float | None = None) -> None:
    now = time.time() if now is None else now
    meta.update(status=status, end_time=now, end_iso=_iso(now), epochs_trained=epochs,
                n_trials=n_trials, decision_summary=logs.summarize_times(meta["decision_times"]))
    meta["segments"][-1].update(end_time=now, status=status)


def run(plan: Plan, progress: bool = True) -> int:
    """Create the evaluator for ``plan`` and run the manager (on rank 0 under MPI)."""
    from deephyper.evaluator import Evaluator

    from experiments.worker import run_trial, run_trial_async

    plan.log_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    if plan.evaluator == "mpi":
        from deephyper.evaluator.mpi import MPI
        from deephyper.evaluator.storage import MPIWinStorage

        if not MPI.Is_initialized():
            MPI.Init_thread()
        comm = MPI.COMM_WORLD
        if comm.Get_size() < 2:
            raise CliError("the mpi evaluator needs at least 2 ranks: "
                           "mpiexec -n WORKERS+1 python -m experiments.search ...")
        workers = comm.Get_size() - 1
        # One device per worker on each node: index of this rank among the node's workers.
        # Nodes are told apart by host name (MPI's shared-memory split gives one rank per
        # "node" under MPIR_CVAR_NOLOCAL=1).
        everyone = comm.allgather((socket.gethostname(), comm.Get_rank(),
                                   sorted(os.sched_getaffinity(0))))
        here = [(r, m) for h, r, m in everyone if h == socket.gethostname()]
        node_workers = [r for r, _ in here if r != 0]
        masks = [m for _, m in here]
        os.environ[LOCAL_WORKERS_ENV] = str(max(1, len(node_workers)))
        if comm.Get_rank() in node_workers:
            os.environ[LOCAL_RANK_ENV] = str(node_workers.index(comm.Get_rank()))
        # Threads: the launcher's CPU binding if ranks got distinct cores (srun
        # --cpus-per-task), else an equal share of the node's cores.
        mine = len(os.sched_getaffinity(0))
        shared = all(m == masks[0] for m in masks)
        os.environ.setdefault(THREADS_ENV, str(max(1, mine // len(node_workers))
                                               if shared and node_workers else mine))
        now = comm.bcast(now, root=0)
        meta = _new_metadata(plan, workers, now)
        ctx = RunContext(plan.scale, plan.trainable, str(plan.log_dir), meta["start_time"],
                         plan.settings.max_t, plan.seed, workers, "mpi",
                         checkpoints=uses_checkpoints(plan.method), deadline=_deadline(meta))
        storage = MPIWinStorage(comm, size=MPI_STORAGE_MB * 2**20)
        ev = Evaluator.create(run_trial, "mpicomm",
                              {"storage": storage, "run_function_kwargs": {"ctx": ctx}})
        if comm.Get_rank() != 0:
            # Workers leave SIGTERM to the manager, which writes the logs and aborts the job.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with ev:
            if ev.is_master:
                logs.write_json(plan.log_dir / logs.METADATA_JSON, meta)
                code = drive(plan, ev, workers, meta, progress)
                if code != 0:
                    sys.stderr.flush()
                    comm.Abort(code)
                return code
        return 0
    workers = 1 if plan.evaluator == "serial" else plan.workers
    meta = _new_metadata(plan, workers, now)
    logs.write_json(plan.log_dir / logs.METADATA_JSON, meta)
    slot_dir = tempfile.mkdtemp(prefix="exp-slots-")
    ctx = RunContext(plan.scale, plan.trainable, str(plan.log_dir), meta["start_time"],
                     plan.settings.max_t, plan.seed, workers, plan.evaluator, slot_dir,
                     checkpoints=uses_checkpoints(plan.method), deadline=_deadline(meta))
    if plan.evaluator == "serial":
        ev = Evaluator.create(run_trial_async, "serial", {"run_function_kwargs": {"ctx": ctx}})
    else:
        ev = Evaluator.create(run_trial, plan.evaluator,
                              {"num_workers": workers, "run_function_kwargs": {"ctx": ctx}})
    try:
        code = drive(plan, ev, workers, meta, progress)
    finally:
        shutil.rmtree(slot_dir, ignore_errors=True)
    if code != 0:  # interrupted: stop the workers now, without waiting for their trials
        sys.stdout.flush()
        sys.stderr.flush()
        _kill_children()
        os._exit(code)
    if hasattr(ev, "executor"):
        ev.executor.shutdown(wait=True)
    return code


# ------------------------------------------------------------------------------ CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise CliError(message)


def build_parser() -> argparse.ArgumentParser:
    from experiments.methods import METHODS

    p = _Parser(prog="python -m experiments.search", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--scale", required=True, help="smoke | small | paper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluator", default="process", help="process | mpi | serial | ray")
    p.add_argument("--workers", type=int, default=2, help="parallel trials (mpi: ranks - 1)")
    p.add_argument("--out", default=None, help="log folder (default results/<scale>/...)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search")
    p.add_argument("--trainable", default="mlpf", help="mlpf | synthetic")
    p.add_argument("--budget", type=int, default=None,
                   help="epochs per search (default: the scale's, see experiments.methods)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds per search, 0 = none (default: the scale's; replay: none)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--backend", default="live", choices=("live", "replay"),
                   help="live: train; replay: look epochs up in a learning-curve table, "
                   "simulated time, --evaluator and --trainable unused (experiments.replay)")
    p.add_argument("--table", default=None,
                   help="replay table (default results/<scale>/lctable.csv)")
    return p


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.backend == "replay":
            from experiments.replay import search_main

            return search_main(args)
        plan = plan_search(args.method, args.scale, args.seed, args.evaluator, args.workers,
                           args.out, args.resume, args.trainable, args.budget,
                           args.time_budget)
        if plan.previous and plan.previous.get("status") == logs.RUN_COMPLETE:
            print(f"{plan.log_dir}: search already complete", file=sys.stderr)
            return 0
        return run(plan, progress=not args.quiet)
    except CliError as e:
        if _launcher_rank() == 0:  # under mpiexec/srun every rank gets here: say it once
            print(f"error: {e}", file=sys.stderr)
        return 2


def _launcher_rank() -> int:
    """This process's rank as the MPI launcher exported it (0 when not launched by MPI)."""
    for var in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


if __name__ == "__main__":
    sys.exit(main())
