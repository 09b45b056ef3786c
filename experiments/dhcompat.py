"""Every DeepHyper 0.13 internal this project relies on, in one place.

The manager loop (:mod:`experiments.driver`) writes DeepHyper's ask -> submit -> gather -> tell
out by hand so that it can enforce budgets, time decisions, stop on a signal and resume; the
replay evaluator runs jobs on a simulated clock; the ASHA stopper and the Hyperband search
subclass DeepHyper classes that live in private modules. Those need attributes and methods
that DeepHyper does not document. They are reached only through the functions below, and
``tests/experiments/test_dhcompat.py`` fails loudly (naming the missing piece) if a DeepHyper
upgrade moves one of them.
"""

from __future__ import annotations

import time

from deephyper.evaluator import Evaluator, HPOJob, JobStatus, ProcessPoolEvaluator
from deephyper.hpo._search import Search  # the base class of every search: ask/tell/history
from deephyper.stopper import SuccessiveHalvingStopper
from deephyper.stopper._stopper import Stopper

__all__ = ["Evaluator", "HPOJob", "JobStatus", "ProcessPoolEvaluator", "Search", "Stopper",
           "SuccessiveHalvingStopper", "EVALUATOR_ATTRIBUTES", "SEARCH_ATTRIBUTES",
           "STOPPER_ATTRIBUTES", "POOL_ATTRIBUTES"]

# What is used, for the upgrade test: attributes of an Evaluator instance, of a Search
# instance and of a SuccessiveHalvingStopper instance (methods and data alike).
EVALUATOR_ATTRIBUTES = ("_tasks_running", "_storage", "_search_id", "job_id_gathered",
                        "job_id_submitted", "_process_local_tasks_done", "_create_job",
                        "_on_launch", "_on_done", "_update_job_when_done", "run_function",
                        "run_function_kwargs", "search", "_stopper", "submit", "gather", "close",
                        "timestamp")
SEARCH_ATTRIBUTES = ("history", "_stopper", "ask", "tell", "check_evaluator", "_problem",
                     "_random_state", "_log_dir")
HISTORY_ATTRIBUTES = ("jobs", "extend", "to_dataframe")
POOL_ATTRIBUTES = ("executor", "sem", "loop", "num_workers")  # what SurvivingPoolEvaluator uses
STOPPER_ATTRIBUTES = ("job", "max_steps", "_rung", "_list_completed_rung",
                      "_compute_halting_budget", "_get_competiting_objectives", "observe")


# ------------------------------------------------------------------------------ evaluators
def running(ev) -> list:
    """The evaluator's tasks in flight (asyncio tasks, or the replay's stand-ins)."""
    return ev._tasks_running


def storage(ev):
    """The evaluator's job storage (shared by workers: rung values live there)."""
    return ev._storage


def search_id(ev) -> str:
    return ev._search_id


def attach(ev, search) -> None:
    """Give the evaluator the search and its stopper (what ``Search.search`` does itself)."""
    ev.search = search
    ev._stopper = search._stopper


def reserve_job_ids(ev, n: int) -> None:
    """Use up job ids ``0 .. n-1`` so that new jobs continue after logged ones (resume)."""
    sid = ev._search_id
    for _ in range(n):
        ev._storage.create_new_job(sid)
    ev.job_id_gathered.extend(f"{sid}.{i}" for i in range(n))


def logged_job(ev, number: int, args: dict, output: dict, status: str):
    """A finished job rebuilt from the logs (``status``: a :class:`JobStatus` name)."""
    job = HPOJob(f"{ev._search_id}.{number}", args, None, ev._storage)
    job.set_output(output)
    job.status = JobStatus[status]
    return job


class _Settled:
    """The storage of a finished job as its history sees it: a status that no longer
    changes. DeepHyper reads a job's status from the evaluator's storage, a server process of
    the process evaluator; results.csv is written from the history, and must be written even
    when that server is gone."""

    def __init__(self, status: int):
        self.status = status

    def load_job_status(self, job_id) -> int:
        return self.status

    def store_job_status(self, job_id, status: int) -> None:
        self.status = status


def settle(jobs) -> None:
    """Detach finished jobs (gathered, or rebuilt from the logs) from the evaluator's storage:
    their status is read once, now (:class:`_Settled`)."""
    for job in jobs:
        if not isinstance(job.storage, _Settled):
            job.storage = _Settled(job.storage.load_job_status(job.id))


def finished_without_storage(ev) -> list:
    """Jobs whose tasks finished, collected without the evaluator's storage (its server is
    gone): what gathering them would give, their status DONE (:class:`_Settled`)."""
    done = [t for t in ev._tasks_running if t.done() and not t.cancelled()
            and t.exception() is None]
    jobs = []
    for task in done:
        job = task.result()
        job.storage = _Settled(JobStatus.DONE.value)
        job.metadata["timestamp_gather"] = time.monotonic() - ev.timestamp
        ev._tasks_running.remove(task)
        jobs.append(job)
    return jobs


def storage_alive(ev) -> bool:
    """Whether the evaluator's storage still answers (the process evaluator's is a server
    process, which can be killed)."""
    reset_storage_connection(ev)
    try:
        ev._storage.load_all_search_ids()
        return True
    except (OSError, EOFError):
        return False


def finished_unharvested(ev) -> list:
    """Jobs whose tasks finished but were not gathered yet (collected after an interrupt)."""
    done = [t for t in ev._tasks_running if t.done() and not t.cancelled()
            and t.exception() is None]
    return ev._process_local_tasks_done(done)


def reset_storage_connection(ev) -> None:
    """Drop the manager's connection to the evaluator's storage server, if it has one.

    The process evaluator keeps job states in a multiprocessing server (SharedMemoryStorage, a
    proxy). A signal that interrupts a call to it may leave half a reply on the connection,
    and the next call would read that instead of its own reply. The proxy opens a new
    connection on its next call when the thread-local one is gone.
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


def new_job(ev, args: dict):
    """Create, store and launch one job the way ``Evaluator.submit`` does (for evaluators
    that run jobs themselves instead of on an asyncio loop)."""
    job_id = ev._storage.create_new_job(ev._search_id)
    ev._storage.store_job_in(job_id, args=(args,))
    job = ev._create_job(job_id, args, ev.run_function, ev._storage)
    ev.job_id_submitted.append(job_id)
    job.context.search = ev.search
    ev._on_launch(job)
    job.status = JobStatus.RUNNING
    return job


def running_job(ev, job):
    """The job as its run-function sees it (``record``/``stopped`` through the stopper)."""
    return job.create_running_job(ev._stopper)


def set_output(ev, job, output) -> None:
    """Store a run-function's return value as the job's output."""
    ev._update_job_when_done(job, output)


def collect(ev, tasks: list) -> list:
    """Finished tasks -> their jobs, marked done and removed from the running ones."""
    return ev._process_local_tasks_done(tasks)


# ------------------------------------------------------------------------------ searches
def stopper(search):
    """The search's stopper (None without early stopping)."""
    return search._stopper
