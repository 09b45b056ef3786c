"""Does a smaller training set rank configurations like a larger one? (the small scale's size)

    .venv/bin/python benchmarks/bench_data_size.py --scale small --configs 12 --sizes 500 1000
    .venv/bin/python benchmarks/bench_data_size.py --report      # tables from the saved runs

The searches at a scale compare configurations by their validation loss after max_t epochs.
A training set small enough to make a search affordable must still order configurations as a
larger one does. This trains the untuned default and ``--configs`` configurations drawn from
the scale's search space (independent random draws, seed 0) to max_t
on the first ``n`` training events for each ``n`` of ``--sizes`` (validation set unchanged),
one torch thread per training, ``--workers`` trainings at a time, and reports per size the
median seconds to max_t and the Spearman rank correlation of the final validation losses
between the sizes (failed trainings ranked last).

Resumable: each finished training is appended to benchmarks/out/data_size.jsonl and skipped
on a rerun. Tables on stdout and in benchmarks/out/data_size.md.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"
RUNS = OUT / "data_size.jsonl"


def _train(task: dict) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    from mlpf.paths import data_dir
    from mlpf.train import Data, apply_overrides, config_for_scale, load_data, train

    torch.set_num_threads(1)
    # the folders as given (a scale's own loading stops at its preset's training events)
    data = load_data(task["scale"], train=data_dir(task["scale"], "train"),
                     val=data_dir(task["scale"], "val"))
    if len(data.train) < task["n"]:
        raise SystemExit(f"{data_dir(task['scale'], 'train')} holds {len(data.train)} events, "
                         f"fewer than {task['n']}")
    data = Data(train=data.train[: task["n"]], val=data.val)
    cfg = apply_overrides(config_for_scale(task["scale"]), task["config"])
    t0 = time.perf_counter()
    out = {**task, "host": platform.node(), "load": os.getloadavg()[0]}
    try:
        hist = train(cfg, data, task["max_t"], threads=1, seed=0)
        out.update(val_loss=[h["val_loss"] for h in hist],
                   epoch_seconds=[h["epoch_seconds"] for h in hist], failure=None)
    except Exception as e:  # noqa: BLE001 - a failed configuration is a result
        out.update(val_loss=[], epoch_seconds=[], failure=type(e).__name__)
    out["seconds"] = time.perf_counter() - t0
    return out


def _spearman(a: list[float], b: list[float]) -> float:
    import numpy as np

    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable")
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable")
    return float(np.corrcoef(ra, rb)[0, 1])


def _runs() -> list[dict]:
    if not RUNS.exists():
        return []
    return [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]


def report() -> str:
    runs = _runs()
    sizes = sorted({r["n"] for r in runs})
    by = {(r["n"], r["config_id"]): r for r in runs}
    ids = sorted({r["config_id"] for r in runs if all((n, r["config_id"]) in by
                                                       for n in sizes)})

    def final(r):
        return r["val_loss"][-1] if r["val_loss"] and r["failure"] is None else math.inf

    lines = ["| train events | configurations | median s to max_t | default s to max_t | "
             "median final val loss |", "|---|---|---|---|---|"]
    for n in sizes:
        rs = [by[n, i] for i in ids]
        fin = [final(r) for r in rs if math.isfinite(final(r))]
        secs = statistics.median(sum(r["epoch_seconds"]) for r in rs)
        med = statistics.median(fin) if fin else float("nan")
        lines.append(f"| {n} | {len(rs)} | {secs:.1f} | {sum(by[n, 0]['epoch_seconds']):.1f} | "
                     f"{med:.4f} |")
    lines += ["", "| sizes | Spearman of final val loss | configurations |", "|---|---|---|"]
    for i, a in enumerate(sizes):
        for b in sizes[i + 1:]:
            rho = _spearman([final(by[a, c]) for c in ids], [final(by[b, c]) for c in ids])
            lines.append(f"| {a} vs {b} | {rho:.3f} | {len(ids)} |")
    lines += ["", "per configuration (final val loss):", "",
              "| config | " + " | ".join(str(n) for n in sizes) + " |",
              "|---|" + "---|" * len(sizes)]
    for c in ids:
        lines.append(f"| {c} | " + " | ".join(f"{final(by[n, c]):.4f}" for n in sizes) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/bench_data_size.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", default="small")
    p.add_argument("--configs", type=int, default=12)
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 1000])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--report", action="store_true", help="only print the tables")
    a = p.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if not a.report:
        from experiments.lctable import sample_configs
        from mlpf.scales import get_scale

        max_t = get_scale(a.scale).max_epochs
        done = {(r["n"], r["config_id"]) for r in _runs()}
        tasks = [{"scale": a.scale, "n": n, "config_id": i, "config": c, "max_t": max_t}
                 for i, c in enumerate(sample_configs(a.scale, a.configs, 0))
                 for n in a.sizes if (n, i) not in done]
        print(f"{len(tasks)} trainings to max_t={max_t}, {a.workers} at a time", file=sys.stderr)
        with mp.get_context("spawn").Pool(a.workers) as pool:
            for r in pool.imap_unordered(_train, tasks):
                with open(RUNS, "a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"n={r['n']} config {r['config_id']}: {r['seconds']:.0f} s, final "
                      f"{r['val_loss'][-1] if r['val_loss'] else r['failure']}", file=sys.stderr,
                      flush=True)
    text = report()
    (OUT / "data_size.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
