"""Live backends: trials train on real workers (processes, the manager itself, MPI ranks, Ray).

Each backend opens a DeepHyper evaluator whose run-function is
:func:`experiments.backends.worker.run_trial`; the driver (:mod:`experiments.driver`) runs the
manager loop on it. Under MPI every rank creates the evaluator (DeepHyper's pattern); rank 0 is
the manager, the other ranks serve trials until it finishes.

No process outlives the manager: what it forks while its evaluator is open (the storage
server, the pool's workers) is killed by the kernel when the manager dies, however it dies
(:func:`children_die_with_this_process`), and the folder lock dies with the manager alone
(:func:`experiments.logs.lock_folder`), so a resume is never refused by leftovers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

from experiments import bookkeeping, logs
from experiments.backends.worker import (
    LOCAL_RANK_ENV,
    LOCAL_WORKERS_ENV,
    THREADS_ENV,
    RunContext,
    lost_trial,
    run_trial,
    run_trial_async,
)
from experiments.dhcompat import Evaluator, JobStatus, ProcessPoolEvaluator
from experiments.local_ray import LOOPBACK, ray_loopback_only
from experiments.procs import death_signal

EVALUATORS = ("process", "mpi", "serial", "ray")
MPI_STORAGE_MB = int(os.environ.get("EXP_MPI_STORAGE_MB", "16"))  # one-sided window size


class BackendError(RuntimeError):
    """The backend cannot start as asked (one line for the user)."""


def _context(plan, meta, workers: int, slot_dir: str | None = None) -> RunContext:
    return RunContext(plan.scale, plan.trainable, str(plan.log_dir), meta["start_time"],
                      plan.settings.max_t, plan.seed, workers, plan.evaluator, slot_dir,
                      checkpoints=plan.checkpoints, deadline=logs.deadline(meta),
                      device_budget=meta.get("budget_device_s"))


def kill_children() -> None:
    """Stop the processes this manager started (workers, the storage server) at once: their
    finished epochs are on disk, their unfinished trials run again on resume."""
    import psutil

    kids = psutil.Process().children(recursive=True)
    for p in kids:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(kids, timeout=3)


_BOUND: dict = {"pid": None, "main": False, "hooked": False}


def _note_forking_thread() -> None:
    _BOUND["main"] = threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:
    """In a child that the bound manager forked from its main thread (the storage server,
    the pool's workers): be killed when the manager dies, however it dies (SIGKILL included).
    The death signal follows the forking thread, hence main threads only; the workers also
    watch their parent from a thread of their own (:mod:`experiments.backends.worker`)."""
    manager, _BOUND["pid"] = _BOUND["pid"], None
    if manager is None or not _BOUND["main"] or os.getppid() != manager:
        return
    if not death_signal(signal.SIGKILL):
        return
    if os.getppid() != manager:  # the manager died before the call
        os._exit(1)


@contextmanager
def children_die_with_this_process():
    """Processes this process forks inside the block die with it (Linux: ``prctl
    PR_SET_PDEATHSIG``), so that no orphan (a storage server holding the search's state, a
    worker training for nobody) outlives a killed manager."""
    if not sys.platform.startswith("linux"):
        yield
        return
    if not _BOUND["hooked"]:
        os.register_at_fork(before=_note_forking_thread, after_in_child=_die_with_parent)
        _BOUND["hooked"] = True
    _BOUND["pid"] = os.getpid()
    try:
        yield
    finally:
        _BOUND["pid"] = None


_IGNORE_IN_CHILD = {"on": False, "hooked": False}


def _ignore_stop_signals_in_child() -> None:
    if _IGNORE_IN_CHILD["on"]:
        _IGNORE_IN_CHILD["on"] = False
        for s in bookkeeping.stop_signals():
            signal.signal(s, signal.SIG_IGN)


@contextmanager
def _signals_ignored():
    """The signals that stop a search (:func:`experiments.bookkeeping.stop_signals`) ignored
    by the processes forked inside the block (the storage server): a signal to the whole
    process group (Slurm, ``timeout``, Ctrl-C) then reaches the workers and the manager, and
    the manager can still read the storage to shut down in order. The manager kills the
    server when it is done; it dies with the manager in any case
    (:func:`children_die_with_this_process`).

    The manager itself does not ignore them: one that reaches it inside the block is held
    and raised again when the block ends, under the handler it had before the block (a
    search told to stop while its evaluator starts stops, instead of running on)."""
    if not _IGNORE_IN_CHILD["hooked"] and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_ignore_stop_signals_in_child)
        _IGNORE_IN_CHILD["hooked"] = True
    held: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: held.append(signum))
           for s in bookkeeping.stop_signals()}
    _IGNORE_IN_CHILD["on"] = True
    try:
        yield
    finally:
        _IGNORE_IN_CHILD["on"] = False
        for s, h in old.items():
            signal.signal(s, h)
        for s in dict.fromkeys(held):
            signal.raise_signal(s)


class SurvivingPoolEvaluator(ProcessPoolEvaluator):
    """DeepHyper's process-pool evaluator that survives the death of a worker process.

    When a worker dies (SIGKILL, the out-of-memory killer) Python's process pool breaks and
    fails every trial it was running. Each of them becomes a failed trial with reason
    ``worker_died`` (its epochs already logged are counted), and the next trial gets a new
    pool instead of ending the search.
    """

    def __init__(self, run_function, num_workers: int = 1, run_function_kwargs=None,
                 lost_trial=None):
        with _signals_ignored():
            super().__init__(run_function, num_workers=num_workers,
                             run_function_kwargs=run_function_kwargs)
        self.lost_trial = lost_trial  # (running job, reason) -> a run-function return value

    async def execute(self, job):
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool
        from functools import partial

        async with self.sem:
            job.status = JobStatus.RUNNING
            running_job = job.create_running_job(self._stopper)
            call = partial(job.run_function, running_job, **self.run_function_kwargs)
            executor = self.executor
            try:
                output = await self.loop.run_in_executor(executor, call)
            except BrokenProcessPool:
                if self.executor is executor:  # the first trial to notice replaces the pool
                    executor.shutdown(wait=False, cancel_futures=True)
                    self.executor = ProcessPoolExecutor(max_workers=self.num_workers)
                output = self.lost_trial(running_job, logs.REASON_WORKER_DIED)
            return self._update_job_when_done(job, output)


def ray_init_options(address: str | None, workers: int) -> dict:
    """DeepHyper's RayEvaluator options: connect to the Ray cluster at ``address`` (``--ray-
    address``, else ``RAY_ADDRESS``), or start a local one of ``workers`` CPUs on loopback
    (:func:`experiments.local_ray.ray_loopback_only`)."""
    if address:
        return {"address": address}
    return {"num_cpus": workers, "ray_kwargs": {"address": "local",
                                                "_node_ip_address": LOOPBACK}}


class LocalBackend:
    """Workers on this machine: a process pool (``process``), the manager itself
    (``serial``, one worker) or Ray tasks (``ray``, where ray is installed: a local Ray
    cluster, or the one at ``ray_address`` / ``RAY_ADDRESS``)."""

    def __init__(self, name: str = "process", ray_address: str | None = None):
        self.ray_address = None
        if name == "ray":
            self.ray_address = ray_address or os.environ.get("RAY_ADDRESS") or None
            try:
                import ray  # noqa: F401
            except ImportError:
                raise BackendError("the ray evaluator needs the 'ray' package, which is not "
                                   "installed (make ray); use --evaluator process or mpi") \
                    from None
            if not self.ray_address:
                ray_loopback_only()
        self.name = name
        self.slot_dir: str | None = None

    def start(self, plan) -> tuple[int, float]:
        return (1 if self.name == "serial" else plan.workers), time.time()

    def annotate(self, meta: dict) -> None:
        if self.name == "ray":
            meta["ray_cluster"] = self.ray_address or "local (loopback)"

    @contextmanager
    def evaluator(self, plan, meta):
        # Workers on other nodes of a Ray cluster need the slot locks on the shared file
        # system, where they write the learning curves too.
        self.slot_dir = tempfile.mkdtemp(prefix=".slots-", dir=plan.log_dir) \
            if self.ray_address else tempfile.mkdtemp(prefix="exp-slots-")
        ctx = _context(plan, meta, meta["workers"], self.slot_dir)
        try:
            with children_die_with_this_process():
                yield self._open(ctx, meta["workers"])
        finally:
            shutil.rmtree(self.slot_dir, ignore_errors=True)

    def _open(self, ctx: RunContext, workers: int):
        if self.name == "serial":
            return Evaluator.create(run_trial_async, "serial",
                                    {"run_function_kwargs": {"ctx": ctx}})
        if self.name == "process":
            return SurvivingPoolEvaluator(run_trial, workers, {"ctx": ctx},
                                          lambda job, why: lost_trial(job, ctx, why))
        if self.name == "ray":
            return Evaluator.create(run_trial, "ray",
                                    {"num_workers": workers, "run_function_kwargs": {"ctx": ctx},
                                     **ray_init_options(self.ray_address, workers)})
        return Evaluator.create(run_trial, self.name,
                                {"num_workers": workers, "run_function_kwargs": {"ctx": ctx}})

    def finish(self, code: int, ev, meta: dict, plan) -> int:
        if code != 0:  # interrupted: stop the workers now, without waiting for their trials
            shutil.rmtree(self.slot_dir, ignore_errors=True)
            sys.stdout.flush()
            sys.stderr.flush()
            kill_children()
            os._exit(code)
        if hasattr(ev, "executor"):
            ev.executor.shutdown(wait=True)
        return code


class MPIBackend:
    """One manager (rank 0) and ``ranks - 1`` workers, on one node or across nodes."""

    name = "mpi"

    def __init__(self):
        from deephyper.evaluator.mpi import MPI

        if not MPI.Is_initialized():
            MPI.Init_thread()
        self.comm = MPI.COMM_WORLD
        if self.comm.Get_size() < 2:
            raise BackendError("the mpi evaluator needs at least 2 ranks: "
                               "mpiexec -n WORKERS+1 python -m experiments.search ...")
        self.is_manager = self.comm.Get_rank() == 0

    def share(self, value):
        """The manager's ``value``, on every rank."""
        return self.comm.bcast(value, root=0)

    def start(self, plan) -> tuple[int, float]:
        comm = self.comm
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
        return comm.Get_size() - 1, comm.bcast(time.time(), root=0)

    def annotate(self, meta: dict) -> None:
        pass

    @contextmanager
    def evaluator(self, plan, meta):
        from deephyper.evaluator.storage import MPIWinStorage

        ctx = _context(plan, meta, meta["workers"])
        storage = MPIWinStorage(self.comm, size=MPI_STORAGE_MB * 2**20)
        ev = Evaluator.create(run_trial, "mpicomm",
                              {"storage": storage, "run_function_kwargs": {"ctx": ctx}})
        if self.comm.Get_rank() != 0:
            # Workers leave SIGTERM to the manager, which writes the logs and aborts the job.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with ev:
            yield ev if ev.is_master else None

    def finish(self, code: int, ev, meta: dict, plan) -> int:
        if code != 0:
            sys.stderr.flush()
            self.comm.Abort(code)
        return code


def open_backend(name: str, ray_address: str | None = None):
    """The live backend of evaluator ``name`` (:data:`EVALUATORS`); ``ray_address``: the Ray
    cluster of the ``ray`` evaluator (default ``RAY_ADDRESS``, else a local one)."""
    if name not in EVALUATORS:
        raise BackendError(f"unknown evaluator {name!r}; choose one of {', '.join(EVALUATORS)}")
    return MPIBackend() if name == "mpi" else LocalBackend(name, ray_address)
