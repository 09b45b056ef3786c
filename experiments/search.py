"""Run one hyperparameter search and write its raw logs.

    python -m experiments.search --method asha --scale smoke --seed 0 --workers 2
    python -m experiments.search --method asha_bo --scale small --seed 1 --resume
    mpiexec -n 5 python -m experiments.search --method hyperband --scale small --evaluator mpi
    python -m experiments.search --method asha --scale small --seed 3 --backend replay
    EXP_SYNTHETIC='{"sleep": 0.02}' python -m experiments.search --method asha --scale smoke \\
        --trainable synthetic --out /tmp/asha

Parse -> plan (:func:`experiments.driver.plan_search`) -> pick a backend (live:
:mod:`experiments.backends.live`; replay: :mod:`experiments.backends.replay`) -> run the driver
(:func:`experiments.driver.run`). Logs go to ``results/<scale>/<method>/seed<k>/`` (replays:
``results/<scale>/replay/<method>/seed<k>/``; ``--out`` elsewhere): results.csv,
learning_curves.csv, metadata.json (see :mod:`experiments.logs`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from experiments import driver, logs
from experiments.backends.live import EVALUATORS, BackendError, open_backend
from experiments.backends.replay import ReplayBackend, replay_dir
from experiments.cli import (
    CliError,
    Parser,
    add_budget,
    add_scale,
    add_seed,
    add_workers,
    check_simulated_workers,
    check_workers,
    non_negative_int,
    run_main,
)
from experiments.methods import METHODS, replay_device_budget
from experiments.surrogate import LOOKUPS, Surrogate, open_lookup, surrogate_accepted
from experiments.table import Table, TableError, load_table, table_path


def open_table(path, scale: str) -> Table:
    """The replay table at ``path`` (default ``results/<scale>/lctable.csv``); CliError if
    it is missing or unusable."""
    try:
        return load_table(Path(path) if path else table_path(scale), scale)
    except TableError as e:
        raise CliError(str(e)) from None


def plan_replay(method: str, scale: str, seed: int, table: Table, workers: int = 2,
                out: str | Path | None = None, budget: int | None = None,
                time_budget: float | None = None, resume: bool = False,
                device_budget: float | None = None) -> driver.Plan:
    """The plan of a replayed search (raises :class:`driver.PlanError`).

    The epoch budget is the live one. There is no time budget unless ``time_budget``
    (simulated seconds) is given: the live wall-time caps exist to bound a laptop run, and in
    simulated time every method gets its whole epoch budget. With ``resume`` an unfinished
    replay starts again from the beginning (same seed, same result); a complete one is left
    as it is (``plan.complete``).
    """
    time_budget = time_budget or 0  # 0: none
    log_dir = Path(out) if out else replay_dir(scale, method, seed)
    plan = driver.plan_search(method, scale, seed, evaluator=ReplayBackend.name,
                              workers=workers, out=log_dir, resume=resume, trainable="mlpf",
                              budget=budget, time_budget=time_budget, check_ready=False,
                              device_budget=device_budget)
    if table.max_t < plan.settings.max_t:
        raise driver.PlanError(f"{table.path} records {table.max_t} epochs per configuration, "
                               f"fewer than max_t={plan.settings.max_t} of scale {scale}")
    if plan.resume and not plan.complete:
        logs.clear_logs(log_dir)
        plan.resume, plan.previous = False, None
    plan.trainable = table.meta.get("trainable") or "mlpf"
    plan.meta["trainable_options"] = table.meta.get("trainable_options", {})
    plan.meta[logs.LOSS] = table.meta.get(logs.LOSS)  # the loss the table's trainings used
    return plan


def replay(method: str, scale: str, seed: int, table: Table, workers: int = 2,
           out: str | Path | None = None, budget: int | None = None,
           time_budget: float | None = None, resume: bool = False,
           progress: bool = True, device_budget: float | None = None) -> int:
    """Replay one search on ``table``; returns the exit code (0 also when already complete)."""
    plan = plan_replay(method, scale, seed, table, workers, out, budget, time_budget, resume,
                       device_budget)
    if plan.complete:
        return 0
    return driver.run(plan, ReplayBackend(table), progress)


def workers_here(evaluator: str, ray_address: str | None = None) -> bool:
    """Whether a live search's workers run on this machine, so that its cores cap them: not
    under mpi (the launcher places the ranks) nor on a Ray cluster (``ray_address`` or
    ``$RAY_ADDRESS``)."""
    if evaluator == "mpi":
        return False
    return not (evaluator == "ray" and (ray_address or os.environ.get("RAY_ADDRESS")))


def search_command(method: str, scale: str, seed: int, *, workers: int, evaluator: str,
                   trainable: str, resume: bool = False, budget: int | None = None,
                   out: Path | None = None, time_budget: float | None = None,
                   device_budget: float | None = None,
                   oversubscribe: bool = False) -> tuple[list[str], dict]:
    """The command line and environment of one live search (``mpiexec -n workers+1`` for
    the mpi evaluator). A Ray Tune peer (``ray_*``) runs as its own command,
    ``python -m experiments.peers.ray_tune`` (its own local Ray cluster; ``evaluator`` unused).
    ``oversubscribe``: pass ``--allow-oversubscribe`` on."""
    if method.startswith("ray_"):
        args = ["-m", "experiments.peers.ray_tune", "--method", method, "--scale", scale,
                "--seed", str(seed), "--workers", str(workers), "--trainable", trainable]
    else:
        args = ["-m", "experiments.search", "--method", method, "--scale", scale, "--seed",
                str(seed), "--evaluator", evaluator, "--workers", str(workers),
                "--trainable", trainable]
    if resume:
        args.append("--resume")
    if oversubscribe:
        args.append("--allow-oversubscribe")
    if budget:
        args += ["--budget", str(budget)]
    if time_budget is not None:
        args += ["--time-budget", str(time_budget)]
    if device_budget is not None:
        args += ["--device-budget", str(device_budget)]
    if out is not None:
        args += ["--out", str(out)]
    env = dict(os.environ)
    if evaluator == "mpi" and not method.startswith("ray_"):
        mpiexec = Path(sys.executable).parent / "mpiexec"
        env.setdefault("MPIR_CVAR_NOLOCAL", "1")  # MPICH one-sided windows on one node
        return [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(workers + 1),
                sys.executable, *args], env
    return [sys.executable, *args], env


def build_parser() -> Parser:
    p = Parser("python -m experiments.search", __doc__)
    p.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    add_scale(p)
    add_seed(p)
    p.add_argument("--evaluator", default="process", choices=EVALUATORS,
                   help=" | ".join(EVALUATORS) + " (process: a process pool on this machine; "
                   "mpi: one rank per worker under mpiexec/srun; serial: in this process; "
                   "ray: Ray tasks, on a local Ray cluster of WORKERS CPUs listening on "
                   "loopback, or on the cluster at --ray-address; needs `make ray`)")
    p.add_argument("--ray-address", default=None,
                   help="evaluator ray: the address of a running Ray cluster (e.g. "
                   "HEAD_IP:6379 after `ray start --head` on a batch allocation, or "
                   "ray://HOST:10001), passed to ray.init; default $RAY_ADDRESS, else a new "
                   "local cluster")
    add_workers(p, "parallel trials (mpi: ranks - 1)")
    p.add_argument("--out", default=None, help="log folder (default results/<scale>/...)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search")
    p.add_argument("--trainable", default="mlpf", help="mlpf | synthetic")
    add_budget(p, "the scale's; replay: none")
    p.add_argument("--max-failures", type=non_negative_int, default=driver.MAX_FAILURES,
                   help="consecutive failed trials that end the search, exit 1 (0: never; "
                   f"default {driver.MAX_FAILURES})")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--backend", default="live", choices=("live", "replay"),
                   help="live: train; replay: look epochs up in a learning-curve table, "
                   "simulated time, --evaluator and --trainable unused")
    p.add_argument("--table", default=None,
                   help="replay table (default results/<scale>/lctable.csv)")
    p.add_argument("--lookup", default="auto", choices=("auto", *LOOKUPS),
                   help="replay: nearest table row, the surrogate, or auto (the surrogate "
                   "when its validation accepts it)")
    return p


def main(argv=None) -> int:
    def body() -> int:
        a = build_parser().parse_args(argv)
        if a.backend == "replay":
            check_simulated_workers(a.workers)
        elif workers_here(a.evaluator, a.ray_address):
            check_workers(a.workers, allow=a.allow_oversubscribe)
        try:
            if a.backend == "replay":
                table = open_table(a.table, a.scale)
                if a.lookup == "auto":
                    a.lookup = "surrogate" if surrogate_accepted(table) else "nearest"
                try:
                    lookup = open_lookup(table, a.lookup, force=True)
                except TableError as e:
                    raise CliError(str(e)) from None
                if isinstance(lookup, Surrogate):
                    table = lookup.world(a.seed)  # world k for seed k, as in the campaign
                plan = plan_replay(a.method, a.scale, a.seed, table, a.workers, a.out,
                                   a.budget, a.time_budget, a.resume,
                                   replay_device_budget(a.scale, a.device_budget))
                backend = ReplayBackend(table)
            else:
                plan = driver.plan_search(a.method, a.scale, a.seed, evaluator=a.evaluator,
                                          workers=a.workers, out=a.out, resume=a.resume,
                                          trainable=a.trainable, budget=a.budget,
                                          time_budget=a.time_budget,
                                          device_budget=a.device_budget)
                backend = None if plan.complete else \
                    open_backend(a.evaluator, a.ray_address)
            plan.max_failures = max(0, a.max_failures)
        except (driver.PlanError, BackendError) as e:
            raise CliError(str(e)) from None
        if plan.complete:
            print(f"{plan.log_dir}: search already complete", file=sys.stderr)
            return 0
        try:
            return driver.run(plan, backend, progress=not a.quiet)
        except driver.PlanError as e:  # the folder is locked by another search
            raise CliError(str(e)) from None

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
