"""Run the untuned default and every method x seed at one scale (what ``make benchmark`` does).

    python -m experiments.benchmark --scale smoke
    python -m experiments.benchmark --scale small --methods "random hyperband asha asha_bo" \\
        --seeds "0 1 2" --workers 2 --evaluator process
    python -m experiments.benchmark --scale smoke --evaluator mpi     # mpiexec -n workers+1

Each search runs as its own process (``python -m experiments.search``; under ``mpiexec -n
WORKERS+1`` for ``--evaluator mpi``, with ``MPIR_CVAR_NOLOCAL=1`` which MPICH needs on a single
node). A search whose ``metadata.json`` says ``complete`` is skipped; an interrupted one is
resumed from its logs; so rerunning after a crash or a walltime limit continues the campaign.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from experiments import logs
from experiments.methods import PAPER_METHODS, get_method, settings_for
from experiments.search import EVALUATORS, CliError, _Parser
from experiments.trainables import get_trainable


def search_command(method: str, scale: str, seed: int, workers: int, evaluator: str,
                   trainable: str, resume: bool, budget: int | None = None,
                   out: Path | None = None,
                   time_budget: float | None = None) -> tuple[list[str], dict]:
    """The command line and environment of one search."""
    args = ["-m", "experiments.search", "--method", method, "--scale", scale, "--seed",
            str(seed), "--evaluator", evaluator, "--workers", str(workers), "--trainable",
            trainable]
    if resume:
        args.append("--resume")
    if budget:
        args += ["--budget", str(budget)]
    if time_budget is not None:
        args += ["--time-budget", str(time_budget)]
    if out is not None:
        args += ["--out", str(out)]
    env = dict(os.environ)
    if evaluator == "mpi":
        mpiexec = Path(sys.executable).parent / "mpiexec"
        env.setdefault("MPIR_CVAR_NOLOCAL", "1")  # MPICH one-sided windows on one node
        return [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(workers + 1),
                sys.executable, *args], env
    return [sys.executable, *args], env


def main(argv=None) -> int:
    p = _Parser(prog="python -m experiments.benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", required=True)
    p.add_argument("--methods", default=" ".join(PAPER_METHODS))
    p.add_argument("--seeds", default="0")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--evaluator", default="process")
    p.add_argument("--trainable", default="mlpf")
    p.add_argument("--budget", type=int, default=None, help="epochs per search")
    p.add_argument("--time-budget", type=float, default=None, help="seconds per search")
    p.add_argument("--out", default=None, help="results root (default results/<scale>)")
    try:
        a = p.parse_args(argv)
        methods = a.methods.split()
        seeds = [int(s) for s in a.seeds.split()]
        settings_for(a.scale)
        for m in methods:
            get_method(m)
        if a.evaluator not in EVALUATORS:
            raise CliError(f"unknown evaluator {a.evaluator!r}; choose one of "
                           f"{', '.join(EVALUATORS)}")
        get_trainable(a.trainable).check_ready(a.scale)
    except (ValueError, FileNotFoundError, CliError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from mlpf.paths import results_dir

    jobs = [("default", s) for s in seeds if "default" not in methods] + \
        [(m, s) for s in seeds for m in methods]
    child: list[subprocess.Popen] = []
    stop = {"signal": None}

    def on_signal(signum, frame):  # pass SIGTERM/SIGINT on to the running search, then stop
        stop["signal"] = signum
        for c in child:
            if c.poll() is None:
                c.send_signal(signum)

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    summary = []
    for method, seed in jobs:
        if stop["signal"]:
            break
        out = Path(a.out) / method / f"seed{seed}" if a.out else \
            results_dir(a.scale, method, seed)
        meta = logs.read_json(out / logs.METADATA_JSON)
        if meta and meta.get("status") == logs.RUN_COMPLETE:
            summary.append((method, seed, "skipped (complete)", 0.0))
            continue
        resume = meta is not None or (out / logs.RESULTS_CSV).exists()
        workers = 1 if method == "default" else a.workers
        cmd, env = search_command(method, a.scale, seed, workers, a.evaluator, a.trainable,
                                  resume, a.budget, out if a.out else None, a.time_budget)
        print(f"== {method} seed{seed}{' (resume)' if resume else ''}: {' '.join(cmd)}",
              file=sys.stderr, flush=True)
        t0 = time.time()
        child[:] = [subprocess.Popen(cmd, env=env)]
        rc = child[0].wait()
        summary.append((method, seed, "ok" if rc == 0 else f"exit {rc}", time.time() - t0))
    print(f"\nbenchmark {a.scale} ({a.evaluator}, {a.workers} workers):", file=sys.stderr)
    for method, seed, status, wall in summary:
        print(f"  {method:16s} seed{seed}  {status:20s} {wall:8.1f} s", file=sys.stderr)
    if stop["signal"]:
        return 128 + stop["signal"]
    return 0 if all(s in ("ok", "skipped (complete)") for _, _, s, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
