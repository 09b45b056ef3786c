"""CPU cost of claim 2's replays: per search, per method, and of the sensitivity analysis.

    python benchmarks/bench_replay_cost.py --scale small --table results/small/lctable.csv
    python benchmarks/bench_replay_cost.py --table ... --seeds 5 --scenarios nearest workers8

Replays the six methods of :mod:`experiments.sensitivity` (``--methods``) for seeds
0..``--seeds``-1 at the pre-registered device budget of the table (32 median full trainings,
:func:`experiments.table.replay_budget`), one search at a time (``--processes 1``, one thread per
native pool), once per scenario: ``nearest`` and ``surrogate`` (the two worlds, 2 simulated
workers) and ``workers8`` (nearest, 8 simulated workers). CPU seconds are those of the search
(``time.process_time`` around it, as ``experiments.campaign`` prints them), so a busy machine
slows the run but barely moves them. Prints, per scenario, the CPU seconds per search of each
method and the core-hours of that scenario at ``--at`` seeds (200, the pre-registered count),
then the sensitivity analysis's total for a plan of ``--leaveouts`` leave-one-out scenarios
(default: the table's top-1 % configurations, as :func:`experiments.sensitivity.top_configs`),
the surrogate world and 8 workers, with the nearest row primary (the primary's replays are
``make claim2``'s, not counted): an upper bound, since a leave-out replays only the searches
that met the configuration it leaves out.
Writes nothing outside a temporary folder unless ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCENARIOS = {"nearest": ("nearest", 2), "surrogate": ("surrogate", 2), "workers8": ("nearest", 8)}
LINE = re.compile(r"^\s+(\w+)\s+[\d.]+ s per search \(max [\d.]+\), CPU ([\d.]+) s$")


def measure(table: str, scale: str, scenario: str, methods: list[str], seeds: int,
            budget: float, out: Path) -> dict[str, float]:
    lookup, workers = SCENARIOS[scenario]
    cmd = [sys.executable, "-m", "experiments.campaign", "--backend", "replay", "--scale", scale,
           "--table", table, "--methods", " ".join(methods),
           "--seeds", " ".join(str(s) for s in range(seeds)), "--processes", "1",
           "--workers", str(workers), "--lookup", lookup, "--device-budget", str(budget),
           "--out", str(out / scenario)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    cpu = {m.group(1): float(m.group(2)) for m in map(LINE.match, p.stderr.splitlines()) if m}
    missing = [m for m in methods if m not in cpu]
    if p.returncode or missing:
        tail = "\n".join(p.stderr.splitlines()[-15:])
        raise SystemExit(f"{scenario}: campaign failed (exit {p.returncode}; no cost for "
                         f"{' '.join(missing) or '-'}):\n{tail}")
    return cpu


def main(argv=None) -> int:
    from experiments import sensitivity
    from experiments.table import load_table, replay_budget

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="small")
    ap.add_argument("--table", default="results/small/lctable.csv")
    ap.add_argument("--methods", default=" ".join(sensitivity.METHODS))
    ap.add_argument("--seeds", type=int, default=3, help="seeds replayed per method (0..N-1)")
    ap.add_argument("--at", type=int, default=200, help="seeds the core-hours are given for")
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--leaveouts", type=int, default=None,
                    help="leave-one-out scenarios of the plan (default: the table's top 1 %%)")
    ap.add_argument("--json", default=None, help="also write the measurement here")
    a = ap.parse_args(argv)
    table = load_table(Path(a.table), a.scale)
    budget = replay_budget(table, sensitivity.BUDGET_TRAININGS, sensitivity.BUDGET_FIRST)
    leaveouts = a.leaveouts if a.leaveouts is not None else len(sensitivity.top_configs(table))
    methods = a.methods.split()
    print(f"{a.table}: {len(table.entries)} trainings, budget {budget:.0f} device-s, "
          f"{a.seeds} seeds per method, one search at a time", flush=True)
    result: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sc in a.scenarios:
            result[sc] = measure(a.table, a.scale, sc, methods, a.seeds, budget, Path(tmp))
            total = sum(result[sc].values()) * a.at / 3600
            per = "  ".join(f"{m} {result[sc][m]:.1f}" for m in methods)
            print(f"{sc:9s} CPU s per search: {per}  -> {total:.2f} core-h at {a.at} seeds",
                  flush=True)
    hours = {sc: sum(v.values()) * a.at / 3600 for sc, v in result.items()}
    if {"nearest", "surrogate", "workers8"} <= set(hours):  # 8 workers: nearest world
        total = leaveouts * hours["nearest"] + hours["surrogate"] + hours["workers8"]
        print(f"sensitivity, nearest world primary: {leaveouts} leave-outs + the surrogate "
              f"world + 8 workers = {total:.1f} core-h after make claim2, at most (a "
              "leave-out replays only the searches that met its configuration: "
              "experiments.sensitivity.derive_unaffected)")
    if a.json:
        Path(a.json).write_text(json.dumps({"table": a.table, "seeds": a.seeds, "budget": budget,
                                            "cpu_seconds_per_search": result,
                                            "core_hours_at": a.at, "core_hours": hours,
                                            "leaveouts": leaveouts}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
