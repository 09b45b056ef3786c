"""Throughput and content of the Pythia8 + parametric-detector generator (mlpf/data/generate.py).

    .venv/bin/python benchmarks/bench_generate.py            # ~1-2 minutes on one core
    .venv/bin/python benchmarks/bench_generate.py --quick    # fewer events, one run each

Throughput is events per second on one core (workers=1: Pythia, pileup overlay, detector
simulation, bz2 pickle writing, Pythia initialisation per file included), the median of
repeated runs into fresh folders; CPU seconds are reported beside wall seconds because the
machine may be shared. Content: elements per event and ygen class fractions of the
generated sets, beside what the notes say about the public dataset (Zenodo 4559324).
Writes a Markdown table to stdout and benchmarks/out/generate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a plain script

from mlpf.data.format import CLASS_NAMES, N_CLASSES  # noqa: E402
from mlpf.data.generate import generate  # noqa: E402
from mlpf.data.io import load_events  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "generate.json"
# What the notes (mlpf-delphes.md) state about the real dataset; class fractions are not there.
REAL = {"name": "Zenodo 4559324 ttbar (notes)", "pileup": 200,
        "elements_mean": "~5000", "elements_max": "padded/truncated to 6400",
        "classes": "not in the notes"}


def run(process: str, pileup: float, events: int, repeats: int, seed: int) -> dict:
    """Median throughput over ``repeats`` fresh runs, and the content of the last one."""
    walls, cpus = [], []
    for r in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0, c0 = time.perf_counter(), time.process_time()
            files = generate(tmp, events, seed=seed + r, process=process, pileup=pileup,
                             events_per_file=100, workers=1, progress=False)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            if r == repeats - 1:
                evs = load_events(files)
    n = np.array([len(e) for e in evs])
    cls = np.bincount(np.concatenate([e.ygen[:, 0].astype(int) for e in evs]),
                      minlength=N_CLASSES)
    return {
        "process": process, "pileup": pileup, "events": events, "repeats": repeats,
        "wall_s": [round(w, 3) for w in walls], "cpu_s": [round(c, 3) for c in cpus],
        "events_per_s_core": round(events / statistics.median(walls), 2),
        "events_per_cpu_s": round(events / statistics.median(cpus), 2),
        "elements_mean": round(float(n.mean()), 1), "elements_max": int(n.max()),
        "tracks_mean": round(float(np.mean([(e.X[:, 0] == 2).sum() for e in evs])), 1),
        "class_fractions": {c: round(float(k / cls.sum()), 4) for c, k in zip(CLASS_NAMES, cls)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer events, one run each")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    reps = 1 if args.quick else 3
    cases = [("ttbar", 0.0, 100 if args.quick else 300, reps),
             ("ttbar", 50.0, 10 if args.quick else 30, reps),
             ("qcd", 0.0, 100 if args.quick else 200, 1),
             ("ttbar", 200.0, 3 if args.quick else 6, 1)]  # content beside the real PU200
    load_start = os.getloadavg()
    rows = []
    for process, pu, events, r in cases:
        print(f"{process} pileup {pu:g}: {events} events x {r} run(s)", file=sys.stderr)
        rows.append(run(process, pu, events, r, seed=100))

    table = [[f"{r['process']} PU{r['pileup']:g}", r["events"], r["repeats"],
              r["events_per_s_core"], r["events_per_cpu_s"], r["elements_mean"],
              r["elements_max"], r["tracks_mean"],
              " ".join(f"{c}:{f:.3f}" for c, f in r["class_fractions"].items())] for r in rows]
    table.append([REAL["name"] + " PU200", "", "", "", "", REAL["elements_mean"],
                  REAL["elements_max"], "", REAL["classes"]])
    print(tabulate(table, headers=["set", "events", "runs", "ev/s/core (median wall)",
                                   "ev/CPU-s", "elements/ev", "max", "tracks/ev",
                                   "ygen class fractions"], tablefmt="github"))
    meta = {"machine": platform.node(), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "python": platform.python_version(),
            "loadavg_start": load_start, "loadavg_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "runs": rows, "real_dataset_notes": REAL},
                                   indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
