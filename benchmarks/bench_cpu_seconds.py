"""How steady are CPU seconds and wall seconds of one training epoch, idle vs beside a busy
process? (What a device-second means on a shared CPU machine.)

    .venv/bin/python benchmarks/bench_cpu_seconds.py              # ~3 min at small
    .venv/bin/python benchmarks/bench_cpu_seconds.py --scale smoke --epochs 3

One configuration (the scale's default) is trained for ``--epochs`` epochs, one torch thread,
pinned to one core, twice: with that core otherwise idle, and with a busy-loop process pinned to
the same core (the load a shared node puts beside a worker). Each epoch reports wall seconds
(``epoch_seconds``) and CPU seconds of the training process (``epoch_cpu_seconds``,
mlpf/train.py). Prints, per condition, the median of each and the loaded/idle ratio of the
medians, and writes ``benchmarks/out/cpu_seconds.json``. A cost measure that does not depend
on the load has a ratio near 1; the wall clock's ratio is about 2 when two processes share the
core evenly. Run it on an otherwise quiet machine: other load shifts both conditions.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OUT = Path(__file__).resolve().parent / "out"


def _spin(core: int, stop) -> None:
    os.sched_setaffinity(0, {core})
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def _train(scale: str, epochs: int, core: int) -> list[dict]:
    os.sched_setaffinity(0, {core})
    from mlpf.train import config_for_scale, load_data, train

    data = load_data(scale)
    return train(config_for_scale(scale), data, epochs, threads=1, device="cpu")


def measure(scale: str, epochs: int, core: int, loaded: bool) -> list[dict]:
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    hog = ctx.Process(target=_spin, args=(core, stop), daemon=True) if loaded else None
    if hog:
        hog.start()
        time.sleep(0.5)
    try:
        with ctx.Pool(1) as pool:
            return pool.apply(_train, (scale, epochs, core))
    finally:
        if hog:
            stop.set()
            hog.join(5)
            if hog.is_alive():
                hog.terminate()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", default="small", choices=("smoke", "small", "paper"))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--core", type=int, default=None, help="core to pin to (default: the last)")
    a = p.parse_args(argv)
    if a.epochs < 2:
        print("error: --epochs must be at least 2", file=sys.stderr)
        return 2
    cores = sorted(os.sched_getaffinity(0))
    core = cores[-1] if a.core is None else a.core
    if core not in cores:
        print(f"error: --core {core} is not one of this process's cores {cores}",
              file=sys.stderr)
        return 2
    res = {}
    for cond in ("idle", "loaded"):
        hist = measure(a.scale, a.epochs, core, cond == "loaded")[1:]  # epoch 1 warms up
        res[cond] = {"wall": [m["epoch_seconds"] for m in hist],
                     "cpu": [m["epoch_cpu_seconds"] for m in hist]}
    rows = []
    for what in ("wall", "cpu"):
        i, lo = (statistics.median(res[c][what]) for c in ("idle", "loaded"))
        rows.append((what, i, lo, lo / i))
    print(f"one epoch of the {a.scale} default, core {core}, median of {a.epochs - 1} epochs "
          f"(load average before: {os.getloadavg()[0]:.2f})")
    print("| seconds | idle | beside a busy process | loaded / idle |\n|---|---|---|---|")
    for what, i, lo, r in rows:
        print(f"| {what} | {i:.2f} | {lo:.2f} | {r:.2f} |")
    OUT.mkdir(exist_ok=True)
    (OUT / "cpu_seconds.json").write_text(json.dumps(
        {"scale": a.scale, "core": core, "epochs": a.epochs, "per_epoch": res,
         "medians": {w: {"idle": i, "loaded": lo, "ratio": r} for w, i, lo, r in rows}},
        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
