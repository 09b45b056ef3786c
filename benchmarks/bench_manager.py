"""Manager throughput on this machine: trials decided and logged per second, ours against
DeepHyper's own search loop and Ray Tune, on the same synthetic trials.

    .venv/bin/python benchmarks/bench_manager.py                 # about 4 minutes on 2 cores
    .venv/bin/python benchmarks/bench_manager.py --trials 200 --skip-ray

The trials are the synthetic trainable's (``experiments.trainables.SyntheticTrainable``, no
sleep: an epoch costs microseconds) at smoke scale (max_t 9, ASHA grace 1, eta 3), so the
manager, the workers' start-up and the evaluator's plumbing are all there is to measure: the
throughput is an upper bound on what one manager serves, the anchor of the simulated study
(``python -m experiments.scaling``; its cost curve is printed beside the live decisions).

Rows (each its own process, started cold; throughput = trials / the search's own wall time,
from before the first decision to after the last result is logged, start-up excluded):

- ours (``python -m experiments.search``: the driver, results.csv rewritten after every
  decision, learning curves appended per epoch), ASHA and ASHA + BO (CBO), the process
  evaluator with 8 and 32 workers (32 processes on 2 cores: oversubscribed) and the MPI
  evaluator with 8 and 16 worker ranks (``mpiexec -n W+1``, MPICH's ``MPIR_CVAR_NOLOCAL=1``;
  fewer trials: on one node every storage operation copies the shared window);
- DeepHyper's own loop (``search.search(evaluator, max_evals=N)``: ask -> submit -> gather
  -> tell, its results.csv rewritten after every gather), the same searches (RandomSearch or
  CBO with our CBO settings, our ASHA stopper) and the same trials, process evaluator, as
  many trials as ours ran;
- Ray Tune 2.60 (``python -m experiments.peers.ray_tune --method ray_asha``: random search
  + AsyncHyperBandScheduler), 8 workers, fewer trials (each starts a new actor).

Output: a table on stdout, ``benchmarks/out/bench_manager.json`` and the markdown
``paper_figures/<scale>/scaling/bench_manager.md`` (measured on this machine: it varies from
run to run and with the load, which it records).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments import logs  # noqa: E402
from experiments.search import search_command  # noqa: E402

SCALE = "smoke"  # max_t 9, grace 1, eta 3
EPOCHS_PER_TRIAL = 2.8  # ASHA at smoke on the synthetic trainable (measured): budget sizing


def run_ours(method: str, evaluator: str, workers: int, epochs: int, out: Path) -> dict:
    """One of our searches (or a Ray Tune peer) as its own process; its metadata's numbers."""
    cmd, env = search_command(method, SCALE, 0, workers=workers, evaluator=evaluator,
                              trainable="synthetic", budget=epochs, out=out, time_budget=0)
    cmd += ["--quiet", "--allow-oversubscribe"]
    env["EXP_SYNTHETIC"] = json.dumps({"sleep": 0.0})
    env["EXP_THREADS"] = "1"
    t0 = time.time()
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}
    meta = json.loads((out / logs.METADATA_JSON).read_text())
    wall = float(meta["end_time"]) - float(meta["start_time"])
    dec = meta.get("decision_summary") or {}
    return {"trials": int(meta["n_trials"]), "epochs": int(meta["epochs_trained"]),
            "wall_s": wall, "process_s": time.time() - t0,
            "trials_per_s": meta["n_trials"] / wall if wall > 0 else None,
            "decisions": dec.get("n"), "decision_median_ms": 1e3 * (dec.get("median") or 0),
            "decision_p95_ms": 1e3 * (dec.get("p95") or 0)}


# ----------------------------------------------------------------------------- DeepHyper's loop
def synthetic_run(job) -> float:
    """The synthetic trial in DeepHyper's protocol: record every epoch, stop when told."""
    from experiments.trainables import SyntheticTrainable

    config = {k: v for k, v in job.parameters.items()}
    tr, loss = SyntheticTrainable(), None
    for epoch in range(1, 10):
        loss = tr.loss(config, epoch)
        job.record(epoch, -loss)
        if job.stopped():
            break
    return -loss


def run_deephyper(method: str, workers: int, trials: int) -> dict:
    """DeepHyper's own loop on the same search and stopper as our ``method``."""
    import logging
    import warnings

    from deephyper.evaluator import Evaluator
    from deephyper.hpo import CBO, RandomSearch

    from experiments.methods import CBO_KWARGS, settings_for
    from experiments.schedulers import ASHAStopper
    from experiments.space import problem_for

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    s = settings_for(SCALE)
    stopper = ASHAStopper(max_steps=s.max_t, grace=s.grace, eta=s.eta)
    with tempfile.TemporaryDirectory(prefix="bench-dh-") as tmp:
        if method == "asha_bo":
            search = CBO(problem_for(SCALE), stopper=stopper, random_state=0, log_dir=tmp,
                         n_initial_points=s.n_initial_points, **CBO_KWARGS)
        else:
            search = RandomSearch(problem_for(SCALE), stopper=stopper, random_state=0,
                                  log_dir=tmp)
        t_start = time.time()
        ev = Evaluator.create(synthetic_run, method="process",
                              method_kwargs={"num_workers": workers})
        t0 = time.time()
        df = search.search(ev, max_evals=trials, max_evals_strict=True)
        wall = time.time() - t0
        ev.close()
    return {"trials": int(len(df)), "epochs": None, "wall_s": wall,
            "process_s": time.time() - t_start, "trials_per_s": len(df) / wall,
            "decisions": None, "decision_median_ms": None, "decision_p95_ms": None}


# ----------------------------------------------------------------------------- the model
def model_line(row: dict, cost_csv: Path) -> float | None:
    """The simulated study's charged tell + ask of one trial (ms) at half the trials the
    search ran (the median history of its decisions), without the per-decision overheads."""
    if not cost_csv.is_file() or not row.get("trials"):
        return None
    from experiments.scaling import ASK, TELL, CostModel

    c = CostModel.read(cost_csv)
    n = row["trials"] / 2
    try:
        return 1e3 * (c.part(row["method"], TELL, n, 1) + c.part(row["method"], ASK, n, 1))
    except ValueError:
        return None


def markdown(rows: list[dict], info: dict) -> str:
    head = ("| system | method | evaluator | workers | trials | wall s | trials/s | "
            "decision median ms | p95 ms | model tell+ask ms |")
    out = ["# Manager throughput on this machine (measured)", "",
           f"`benchmarks/bench_manager.py`, {info['when']}, {info['cpus']} CPUs, load average "
           f"{info['load_before']:.1f} before and {info['load_after']:.1f} after (other jobs "
           "shared the cores). Synthetic trials at smoke scale (max_t 9, ASHA grace 1, eta 3), "
           "no sleep: what is measured is the manager and the evaluator. Throughput = trials / "
           "the search's wall time (start-up excluded). Decision = tell + ask in our driver "
           "(metadata `decision_summary`); model = the simulated study's curve "
           "(`results/<scale>/scaling/decision_times.csv`) at half the trials. Numbers vary "
           "from run to run; rerun the script to compare on one machine.", "", head,
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def f(x, d=1):
        return "–" if x is None else f"{x:,.{d}f}"

    for r in rows:
        if r.get("error"):
            out.append(f"| {r['system']} | {r['method']} | {r['evaluator']} | {r['workers']} "
                       f"| failed: {r['error']} | | | | | |")
            continue
        out.append(f"| {r['system']} | {r['method']} | {r['evaluator']} | {r['workers']} | "
                   f"{r['trials']} | {f(r['wall_s'])} | {f(r['trials_per_s'])} | "
                   f"{f(r['decision_median_ms'])} | {f(r['decision_p95_ms'])} | "
                   f"{f(r.get('model_ms'))} |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=400, help="trials per search (about)")
    ap.add_argument("--mpi-trials", type=int, default=200,
                    help="trials per MPI search (its storage makes them slow on one node)")
    ap.add_argument("--ray-trials", type=int, default=60)
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-mpi", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "paper_figures" / "small" / "scaling"))
    a = ap.parse_args()
    plan = [("ours", "asha", "process", 8), ("ours", "asha", "process", 32),
            ("ours", "asha_bo", "process", 8), ("ours", "asha_bo", "process", 32)]
    if not a.skip_mpi:
        plan += [("ours", "asha", "mpi", 8), ("ours", "asha", "mpi", 16)]
    plan += [("deephyper", "asha", "process", 8), ("deephyper", "asha", "process", 32),
             ("deephyper", "asha_bo", "process", 8)]
    if not a.skip_ray:
        plan += [("ray_tune", "ray_asha", "ray", 8)]
    info = {"when": time.strftime("%Y-%m-%d", time.gmtime()), "cpus": os.cpu_count(),
            "load_before": os.getloadavg()[0]}
    rows, ours_trials = [], {}
    cost_csv = ROOT / "results" / "small" / "scaling" / "decision_times.csv"
    with tempfile.TemporaryDirectory(prefix="bench-manager-") as tmp:
        for i, (system, method, evaluator, workers) in enumerate(plan):
            print(f"{system} {method} {evaluator} x{workers} ...", file=sys.stderr, flush=True)
            if system == "ours":
                n = int((a.mpi_trials if evaluator == "mpi" else a.trials) * EPOCHS_PER_TRIAL)
                r = run_ours(method, evaluator, workers, n, Path(tmp) / f"r{i}")
                if evaluator == "process":
                    ours_trials.setdefault(method, r.get("trials"))
            elif system == "deephyper":
                r = run_deephyper(method, workers, ours_trials.get(method) or a.trials)
            else:
                r = run_ours(method, "process", workers,
                             int(a.ray_trials * EPOCHS_PER_TRIAL), Path(tmp) / f"r{i}")
                r.update(decision_median_ms=None, decision_p95_ms=None)  # not our driver's
            r.update(system=system, method=method, evaluator=evaluator, workers=workers)
            if system == "ours":
                r["model_ms"] = model_line(r, cost_csv)
            rows.append(r)
            print(f"  {r.get('trials')} trials, {r.get('trials_per_s') or 0:.1f} trials/s",
                  file=sys.stderr, flush=True)
    info["load_after"] = os.getloadavg()[0]
    text = markdown(rows, info)
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_manager.md").write_text(text)
    raw = ROOT / "benchmarks" / "out"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "bench_manager.json").write_text(json.dumps({**info, "rows": rows}, indent=2,
                                                       default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
