"""How well a search keeps its workers busy, and what the manager costs per decision.

    .venv/bin/python benchmarks/bench_search.py                      # both parts, ~5-10 min
    .venv/bin/python benchmarks/bench_search.py --skip-decisions     # utilisation only
    .venv/bin/python benchmarks/bench_search.py --trainable synthetic --sleep 0.2

1. Worker utilisation = time inside trials / (workers x search wall time), measured with the
   trial start/end times taken inside the run-function (m:trial_start, m:trial_end), for the
   process and the MPI evaluator, ASHA at smoke scale, 2 workers. The trainable is the real
   MLPF (``mlpf.train``) when smoke data exists, else the synthetic one with a per-epoch sleep.
   Wall time runs from the search's start (before the worker pool exists) to its end, so
   start-up, data loading and the tail where one worker waits for the other count as idle.
2. Manager time per decision (tell the finished trials + ask for new ones; median and p95) for
   every method, on the synthetic trainable (it does not depend on what is trained, only on
   the number of observations), 2 workers, process evaluator.

Results: a table on stdout and ``benchmarks/out/bench_search.json``.
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

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments import logs  # noqa: E402
from experiments.methods import METHODS  # noqa: E402
from experiments.search import search_command  # noqa: E402


def run_one(method, evaluator, trainable, out, budget=None, sleep=0.0, workers=2) -> dict:
    cmd, env = search_command(method, "smoke", 0, workers=workers, evaluator=evaluator,
                              trainable=trainable, budget=budget, out=out)
    cmd.append("--quiet")
    env["EXP_SYNTHETIC"] = json.dumps({"sleep": sleep})
    t0 = time.time()
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    res = pd.read_csv(out / logs.RESULTS_CSV)
    lc = pd.read_csv(out / logs.LEARNING_CURVES_CSV)
    meta = json.loads((out / logs.METADATA_JSON).read_text())
    wall = meta["end_time"] - meta["start_time"]
    busy = float((res["m:trial_end"] - res["m:trial_start"]).sum())
    return {
        "method": method, "evaluator": evaluator, "trainable": trainable,
        "workers": meta["workers"], "trials": len(res), "epochs": len(lc),
        "wall_s": round(wall, 2), "process_wall_s": round(time.time() - t0, 2),
        "utilisation": busy / (meta["workers"] * wall),
        "epoch_utilisation": float(lc[logs.EPOCH_SECONDS].sum()) / (meta["workers"] * wall),
        "decision_median_ms": 1e3 * (meta["decision_summary"]["median"] or 0),
        "decision_p95_ms": 1e3 * (meta["decision_summary"]["p95"] or 0),
        "decisions": meta["decision_summary"]["n"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trainable", default=None, help="mlpf | synthetic (default: mlpf if "
                    "smoke data exists)")
    ap.add_argument("--sleep", type=float, default=0.2, help="synthetic seconds per epoch")
    ap.add_argument("--evaluators", default="process mpi")
    ap.add_argument("--methods", default=" ".join(m for m in METHODS if m != "default"))
    ap.add_argument("--skip-decisions", action="store_true")
    ap.add_argument("--skip-utilisation", action="store_true")
    a = ap.parse_args()
    trainable = a.trainable
    if trainable is None:
        from experiments.trainables import MLPFTrainable

        try:
            MLPFTrainable().check_ready("smoke")
            trainable = "mlpf"
        except FileNotFoundError:
            trainable = "synthetic"
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        if not a.skip_utilisation:
            for ev in a.evaluators.split():
                print(f"utilisation: asha, {ev}, {trainable} ...", file=sys.stderr, flush=True)
                rows.append(run_one("asha", ev, trainable, Path(tmp) / f"util-{ev}",
                                    sleep=a.sleep))
        if not a.skip_decisions:
            for m in a.methods.split():
                print(f"decisions: {m}, synthetic ...", file=sys.stderr, flush=True)
                rows.append(run_one(m, "process", "synthetic", Path(tmp) / f"dec-{m}",
                                    sleep=0.02, budget=40 * 9))
    df = pd.DataFrame(rows)
    cols = ["method", "evaluator", "trainable", "workers", "trials", "epochs", "wall_s",
            "utilisation", "epoch_utilisation", "decision_median_ms", "decision_p95_ms"]
    print(df[cols].to_markdown(index=False, floatfmt=".3f"))
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    info = {"host": os.uname().nodename, "cpus": os.cpu_count(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    (out / "bench_search.json").write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
