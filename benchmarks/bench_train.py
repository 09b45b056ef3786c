"""Benchmark MLPF training on this machine: throughput, memory, and what HPO has to gain.

    .venv/bin/python benchmarks/bench_train.py                 # ~10 min on one core
    .venv/bin/python benchmarks/bench_train.py --quick         # ~1-2 min, smaller everything
    .venv/bin/python benchmarks/bench_train.py --part throughput --sizes 500 4000
    .venv/bin/python benchmarks/bench_train.py --part ab --baseline 1d003b1 --reps 3
    .venv/bin/python benchmarks/bench_train.py --part hash --sizes 500 1600 3200 6400 12800

Part "throughput": training steps (forward, loss, backward, AdamW) of the scale's default
model on events of 500, 1000, 2000 and 4000 elements, each size in a fresh subprocess so that
its peak RSS is its own; events/s is the median over repetitions. LSH binning makes the cost
per event near linear in the number of elements: the time per event at the largest size must
be at most (largest / smallest) * 1.25 times that at the smallest (10x for 4000 vs 500).
Events are made by drawing elements from the generated training set when it exists
(`make data SCALE=...`), from a random generator otherwise.

Part "hpo": validation loss after a few epochs at the scale's data for the default config and
for random configs drawn from the search ranges of arXiv:2203.01112 (widths scaled by
--width-scale so that they fit a CPU), each run capped by --budget seconds.

Part "ab": per-epoch time of this working tree against the code of a git revision
(--baseline; its mlpf/ is extracted to a temporary package), for the scale's default and
the two most expensive sampled configurations of the shipped small table (all three as the
baseline revision resolves them, every TrainConfig field the same on both sides), alternating
baseline and current epochs (each a fresh seed-0 training of one epoch) so that load on a
shared machine hits both alike; medians and ratios, with the load average noted. It also
counts the FLOPs of one epoch (torch.utils.flop_counter) and reports GFLOP/s achieved next
to this machine's large-matmul GFLOP/s (the practical limit on one core).

Part "hash": time per element of the LSH permutation (mlpf.model.lsh_permutation) from 500
to 12,800 elements per event, for the small and paper widths.

Prints Markdown tables and writes benchmarks/out/train.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlpf.data.format import ELEM_TOWER, ELEM_TRACK, Event  # noqa: E402
from mlpf.data.io import load_events  # noqa: E402
from mlpf.loss import mlpf_loss  # noqa: E402
from mlpf.model import count_parameters  # noqa: E402
from mlpf.paths import data_dir  # noqa: E402
from mlpf.train import (  # noqa: E402
    TrainingDiverged,
    apply_overrides,
    build_model,
    collate,
    config_for_scale,
    load_data,
    train,
)

OUT = ROOT / "benchmarks" / "out" / "train.json"


# ----------------------------------------------------------------------------- events
def element_pool(scale: str, max_events: int = 100) -> tuple[np.ndarray, np.ndarray, str]:
    """Rows (X, ygen) to draw synthetic events from, and where they came from."""
    folder = data_dir(scale, "train")
    if folder.exists():
        ev = load_events(folder, max_events=max_events)
        where = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
        return (np.concatenate([e.X for e in ev]), np.concatenate([e.ygen for e in ev]),
                f"elements drawn from {where}")
    rng = np.random.default_rng(0)
    n = 20000
    X = np.zeros((n, 12), np.float32)
    X[:, 0] = rng.choice([ELEM_TOWER, ELEM_TRACK], n)
    pt, eta, phi = rng.lognormal(0, 1, n), rng.uniform(-3, 3, n), rng.uniform(-3.14, 3.14, n)
    X[:, 1:6] = np.stack([pt, eta, np.sin(phi), np.cos(phi), pt * np.cosh(eta)], 1)
    y = np.zeros((n, 7), np.float32)
    y[:, 0] = rng.integers(0, 4, n)
    y[:, 2:7] = X[:, 1:6]
    return X, y, "random synthetic elements (no generated data found)"


def make_events(X, y, n_elements: int, n_events: int, seed: int) -> list[Event]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_events):
        idx = rng.integers(0, len(X), n_elements)
        out.append(Event(X[idx], y[idx], y[idx]))
    return out


# ----------------------------------------------------------------------------- throughput
def _throughput_worker(args) -> dict:
    """Runs in a subprocess: time training steps at one event size."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = config_for_scale(args.scale)
    X, y, source = element_pool(args.scale)
    events = make_events(X, y, args.size, cfg.batch_size, seed=args.size)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    Xb, Yb, Mb = collate(events, cfg.bin_size)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    times = []
    for i in range(args.reps + 1):  # the first step warms up allocators and kernels
        t0 = time.perf_counter()
        loss = mlpf_loss(model(Xb, Mb), Yb, Mb)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step = statistics.median(times)
    return {"elements": args.size, "batch_size": cfg.batch_size, "padded_to": Xb.shape[1],
            "step_seconds_median": step, "step_seconds_all": times,
            "events_per_second": cfg.batch_size / step,
            "ms_per_event": 1000 * step / cfg.batch_size,
            "peak_rss_mib": rss_peak, "rss_growth_in_steps_mib": rss_peak - rss_before,
            "source": source, "parameters": count_parameters(model)}


def run_throughput(args) -> dict:
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--_worker", "--size", str(size), "--reps",
               str(args.reps), "--threads", str(args.threads), "--scale", args.scale]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"  {size:5d} elements: {r['events_per_second']:.1f} events/s, "
              f"{r['peak_rss_mib']:.0f} MiB peak RSS", file=sys.stderr)
    lo, hi = rows[0], rows[-1]
    ratio = hi["ms_per_event"] / lo["ms_per_event"]
    limit = 1.25 * hi["elements"] / lo["elements"]
    print(f"\n### Training throughput, scale `{args.scale}` default model "
          f"({lo['parameters']:,} parameters, batch {lo['batch_size']}, "
          f"{args.threads} thread(s), median of {args.reps} steps)\n")
    print("| elements/event | padded to | events/s | ms/event | peak RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['elements']} | {r['padded_to']} | {r['events_per_second']:.1f} | "
              f"{r['ms_per_event']:.1f} | {r['peak_rss_mib']:.0f} |")
    verdict = "ok" if ratio <= limit else "TOO STEEP"
    print(f"\ntime per event at {hi['elements']} / at {lo['elements']}: {ratio:.2f} "
          f"(limit {limit:.1f}: {verdict}); {lo['source']}")
    return {"rows": rows, "time_ratio": ratio, "time_ratio_limit": limit,
            "near_linear": ratio <= limit}


# ----------------------------------------------------------------------------- A/B epochs
# The two slowest sampled configurations of the previous design's small table (config ids 3 and 4
# of results/small/archive/lctable-previous-design.csv), spelled out.
AB_CONFIGS = {
    "default": {},
    "sampled3": dict(activation="gelu", batch_size=4, bin_size=32, clip_value_low=0.1066,
                     dist_mult=0.0993, distance_dim=8, dropout=0.285, ffn_dist_hidden_dim=64,
                     ffn_dist_num_layers=1, layernorm=True, lr=0.019, normalize_degrees=False,
                     num_graph_layers_common=3, num_graph_layers_energy=3, num_node_messages=3,
                     output_dim=64),
    "sampled4": dict(activation="elu", batch_size=24, bin_size=64, clip_value_low=0.1856,
                     dist_mult=0.1197, distance_dim=24, dropout=0.277, ffn_dist_hidden_dim=32,
                     ffn_dist_num_layers=3, layernorm=False, lr=1.15e-4, normalize_degrees=True,
                     num_graph_layers_common=4, num_graph_layers_energy=2, num_node_messages=3,
                     output_dim=32),
    # The study-era default at the small scale (mlpf/scales.py since a158b0e), spelled out so
    # that the baseline revision trains it too.
    "study_default": dict(width=32, output_dim=32, distance_dim=16, ffn_dist_hidden_dim=16,
                          ffn_dist_num_layers=1, num_node_messages=1, num_graph_layers_common=3,
                          num_graph_layers_energy=3, bin_size=32, batch_size=20, lr=1e-4,
                          lr_decay_rate=0.99, lr_decay_steps=10_000, dropout=0.0,
                          layernorm=False, activation="elu"),
}


def matmul_gflops(threads: int, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of an n x n fp32 matmul through torch's default path: the practical limit."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def baseline_package(rev: str, where: Path) -> str:
    """Extract mlpf/ of git revision ``rev`` as package ``mlpf_base`` under ``where``."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "mlpf"], check=True,
                         capture_output=True).stdout
    tmp = where / "tar"
    tmp.mkdir()
    (tmp / "a.tar").write_bytes(tar)
    with tarfile.open(tmp / "a.tar") as t:
        t.extractall(tmp, filter="data")
    (tmp / "mlpf").rename(where / "mlpf_base")
    for f in (where / "mlpf_base").rglob("*.py"):
        src = f.read_text()
        f.write_text(src.replace("from mlpf.", "from mlpf_base.")
                     .replace("import mlpf.", "import mlpf_base."))
    return "mlpf_base"


def epoch_flops(T, cfg, data) -> float:
    """FLOPs of one training epoch (forward + backward) of module ``T`` (mlpf.train)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        T.train(cfg, data, 1, device="cpu", seed=0)
    return float(fc.get_total_flops())


def run_ab(args) -> dict:
    import importlib

    import mlpf.train as current

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        name = baseline_package(args.baseline, Path(tmp))
        base = importlib.import_module(f"{name}.train")
        data = current.load_data(args.scale, max_events=args.max_events)
        peak = matmul_gflops(args.threads)
        rows = []
        for cname in args.ab_configs:
            over = AB_CONFIGS[cname]
            # Both sides train exactly the baseline's configuration (every field), so that a
            # changed default in the current tree cannot enter the comparison.
            cfg_base = base.apply_overrides(base.config_for_scale(args.scale), over)
            cfgs = {"baseline": cfg_base,
                    "current": current.apply_overrides(current.TrainConfig(),
                                                       cfg_base.to_dict())}
            mods = {"baseline": base, "current": current}
            times: dict = {"baseline": [], "current": []}
            cpu: dict = {"baseline": [], "current": []}
            eps: dict = {"baseline": [], "current": []}
            losses: dict = {}
            for rep in range(args.reps + 1):  # round 0 warms up both
                for side in (("baseline", "current") if rep % 2 else ("current", "baseline")):
                    c0 = time.process_time()
                    h = mods[side].train(cfgs[side], data, 1, device="cpu", seed=0)
                    if rep:
                        times[side].append(h[0]["epoch_seconds"])
                        cpu[side].append(time.process_time() - c0)
                        eps[side].append(h[0]["events_per_second"])
                    losses[side] = (h[0]["train_loss"], h[0]["val_loss"])
                print(f"  {cname} round {rep}: " + ", ".join(
                    f"{k} {v[-1]:.2f} s ({cpu[k][-1]:.2f} s CPU)" for k, v in times.items()
                    if v), file=sys.stderr)
            flops = epoch_flops(current, cfgs["current"], data)
            med = {k: statistics.median(v) for k, v in times.items()}
            med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
            rows.append({"config": cname, "overrides": over, "seconds": times, "median": med,
                         "cpu_seconds": cpu, "median_cpu": med_cpu,
                         "events_per_second": {k: statistics.median(v) for k, v in eps.items()},
                         "speedup": med["baseline"] / med["current"],
                         "speedup_cpu": med_cpu["baseline"] / med_cpu["current"],
                         "gflop": flops / 1e9,
                         "gflops_current": flops / 1e9 / med_cpu["current"],
                         "losses_epoch1": losses})
        sys.path.remove(tmp)
    load = os.getloadavg()
    print(f"\n### Epoch time, scale `{args.scale}` ({len(data.train)} train / {len(data.val)} "
          f"val events), baseline `{args.baseline}` vs this tree, {args.threads} thread(s), "
          f"median of {args.reps} alternating runs, load average {load[0]:.2f} / "
          f"{load[1]:.2f} / {load[2]:.2f} at the end\n")
    print("| config | baseline s | current s | speedup | baseline CPU s | current CPU s | "
          "speedup (CPU) | train events/s (base / cur) | GFLOP/epoch | GFLOP/s | "
          "matmul GFLOP/s | fraction of matmul |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        m, c, e = r["median"], r["median_cpu"], r["events_per_second"]
        print(f"| {r['config']} | {m['baseline']:.2f} | {m['current']:.2f} | "
              f"{r['speedup']:.2f} | {c['baseline']:.2f} | {c['current']:.2f} | "
              f"{r['speedup_cpu']:.2f} | {e['baseline']:.0f} / {e['current']:.0f} | "
              f"{r['gflop']:.1f} | {r['gflops_current']:.1f} | "
              f"{peak:.0f} | {r['gflops_current'] / peak:.0%} |")
    print("\nWall seconds are epoch_seconds (training + validation); CPU seconds are this "
          "process's CPU time for the same epoch (robust to other load on a shared machine). "
          "GFLOP/s = FLOPs counted by torch.utils.flop_counter / current CPU seconds.")
    return {"baseline": args.baseline, "rows": rows, "matmul_gflops": peak,
            "loadavg_end": load}


def run_hash(args) -> dict:
    """Time per element of lsh_permutation at each size (small and paper widths); sizes are
    timed round-robin (one call each per round) so that load changes hit all alike."""
    import importlib

    from mlpf.model import MAX_BINS, lsh_permutation

    torch.set_num_threads(args.threads)
    rows = []
    rounds = max(15, args.reps)
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        base = importlib.import_module(f"{baseline_package(args.baseline, Path(tmp))}.model")
        sys.path.remove(tmp)
    impls = {"current": lsh_permutation, f"baseline {args.baseline}": base.lsh_permutation}
    for (label, D, bs, B), impl in [(w, i) for i in impls for w in (
            ("small (D 16, bin 32)", 16, 32, 8), ("paper (D 128, bin 128)", 128, 128, 5))]:
        lsh = impls[impl]
        label = f"{impl}: {label}"
        g = torch.Generator().manual_seed(0)
        codebook = torch.randn(D, MAX_BINS // 2, generator=g)
        tie = torch.randn(D, generator=g)
        inputs = {}
        for n in args.sizes:
            N = -(-n // bs) * bs
            mask = torch.zeros(B, N, dtype=torch.bool)
            mask[:, :n] = True
            inputs[n] = (torch.randn(B, N, D, generator=g), mask)
            lsh(*inputs[n][:1], mask, bs, codebook, tie)  # warm-up
        ts: dict = {n: [] for n in args.sizes}
        for _ in range(rounds):
            for n, (x, mask) in inputs.items():
                t0 = time.perf_counter()
                lsh(x, mask, bs, codebook, tie)
                ts[n].append(time.perf_counter() - t0)
        for n in args.sizes:
            rows.append({"model": label, "elements": n,
                         "ns_per_element": 1e9 * statistics.median(ts[n]) / (B * n)})
    load = os.getloadavg()
    print(f"\n### LSH hashing: time per element, {args.threads} thread(s), median of {rounds} "
          f"round-robin rounds, load average {load[0]:.2f}\n")
    print("| widths | " + " | ".join(str(n) for n in args.sizes) + " | last / first |")
    print("|---|" + "---:|" * (len(args.sizes) + 1))
    for label in dict.fromkeys(r["model"] for r in rows):
        v = [r["ns_per_element"] for r in rows if r["model"] == label]
        print(f"| {label} | " + " | ".join(f"{x:.0f} ns" for x in v) + f" | {v[-1] / v[0]:.2f} |")
    return {"rows": rows, "loadavg": load}


# ----------------------------------------------------------------------------- HPO headroom
def sample_config(rng: np.random.Generator, width_scale: float) -> dict:
    """A random point of the search ranges of arXiv:2203.01112 (notes/mlpf-delphes.md);
    widths multiplied by width_scale (at least 8) and bin sizes {16, ..., 128}."""
    def w(lo, hi, step):
        return max(8, int(round(width_scale * rng.choice(np.arange(lo, hi + 1, step)))))

    return {
        "lr": float(math.exp(rng.uniform(math.log(1e-4), math.log(3e-2)))),
        "batch_size": int(rng.choice(np.arange(4, 33, 4))),
        "lr_decay_rate": float(rng.uniform(0.8, 1.0)),
        "lr_decay_steps": int(rng.choice([100, 500, 1000, 5000])),
        "layernorm": bool(rng.integers(2)),
        "ffn_dist_hidden_dim": w(64, 256, 64),
        "ffn_dist_num_layers": int(rng.integers(1, 4)),
        "distance_dim": w(64, 512, 64),
        "num_node_messages": int(rng.integers(1, 4)),
        "num_graph_layers_common": int(rng.integers(2, 5)),
        "num_graph_layers_energy": int(rng.integers(2, 5)),
        "dropout": float(rng.uniform(0, 0.5)),
        "bin_size": int(rng.choice([16, 32, 64, 128])),
        "clip_value_low": float(rng.uniform(0, 0.2)),
        "dist_mult": float(rng.uniform(0.01, 0.2)),
        "normalize_degrees": bool(rng.integers(2)),
        "output_dim": w(64, 512, 64),
        "activation": str(rng.choice(["elu", "relu", "gelu"])),
    }


def run_hpo(args) -> dict:
    torch.set_num_threads(args.threads)
    try:
        data = load_data(args.scale, max_events=args.max_events)
    except FileNotFoundError as e:
        print(f"skipping the HPO part: {e}", file=sys.stderr)
        return {"skipped": str(e)}
    base = config_for_scale(args.scale)
    rng = np.random.default_rng(args.seed)
    runs = [("default", {})] + [(f"random{i}", sample_config(rng, args.width_scale))
                                for i in range(args.configs)]
    rows = []
    for name, over in runs:
        cfg = apply_overrides(base, over)
        t0 = time.perf_counter()

        def stop(m, t0=t0):
            return time.perf_counter() - t0 > args.budget

        try:
            hist = train(cfg, data, args.epochs, stop, device="cpu", seed=args.seed)
            val, status = hist[-1]["val_loss"], "ok"
        except TrainingDiverged as e:
            hist, val, status = [], float("nan"), f"diverged in epoch {e.epoch}"
        row = {"name": name, "overrides": over, "epochs": len(hist), "val_loss": val,
               "best_val_loss": min((m["val_loss"] for m in hist), default=float("nan")),
               "seconds": time.perf_counter() - t0, "status": status,
               "curve": [m["val_loss"] for m in hist],
               "parameters": count_parameters(build_model(cfg))}
        rows.append(row)
        print(f"  {name}: val loss {val:.4f} after {len(hist)} epochs "
              f"({row['seconds']:.0f} s, {status})", file=sys.stderr)
    d = rows[0]["best_val_loss"]
    print(f"\n### Validation loss after up to {args.epochs} epochs, scale `{args.scale}` "
          f"({len(data.train)} train / {len(data.val)} val events, {args.budget:.0f} s cap "
          f"per run)\n")
    print("| config | epochs | val loss | best val loss | vs default | s | parameters | "
          "lr | batch | bins | out dim | layers c+e | msgs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        c = apply_overrides(base, r["overrides"])
        rel = (r["best_val_loss"] / d - 1) * 100 if d == d and d > 0 else float("nan")
        print(f"| {r['name']} | {r['epochs']} | {r['val_loss']:.4f} | {r['best_val_loss']:.4f} "
              f"| {rel:+.0f} % | {r['seconds']:.0f} | {r['parameters']:,} | {c.lr:.2g} | "
              f"{c.batch_size} | {c.bin_size} | {c.output_dim} | "
              f"{c.num_graph_layers_common}+{c.num_graph_layers_energy} | "
              f"{c.num_node_messages} |")
    return {"runs": rows, "epochs": args.epochs, "n_train": len(data.train),
            "n_val": len(data.val), "width_scale": args.width_scale}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("all", "throughput", "hpo", "ab", "hash"),
                    default="all", help="all = throughput + hpo")
    ap.add_argument("--scale", default="small")
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    ap.add_argument("--reps", type=int, default=5, help="timed steps per size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per HPO-part run")
    ap.add_argument("--configs", type=int, default=5, help="random configs")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds cap per HPO-part run")
    ap.add_argument("--max-events", type=int, help="cap events per split in the HPO part")
    ap.add_argument("--width-scale", type=float, default=0.25,
                    help="multiplies the paper's width ranges in the HPO part")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", default="1d003b1",
                    help="git revision compared against in the ab part")
    ap.add_argument("--ab-configs", nargs="+", choices=tuple(AB_CONFIGS),
                    default=["default", "sampled3", "sampled4"],
                    help="configurations of the ab part (default: %(default)s)")
    ap.add_argument("--quick", action="store_true",
                    help="3 reps, 2 epochs, 2 configs, 200 train events, 20 s cap")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker:
        print(json.dumps(_throughput_worker(args)))
        return 0
    if args.quick:
        args.reps, args.epochs, args.configs, args.budget = 3, 2, 2, 20.0
        args.max_events = args.max_events or 200
    result = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": __import__("os").cpu_count(), "torch": torch.__version__,
                          "threads": args.threads},
              "scale": args.scale, "default_config": config_for_scale(args.scale).to_dict()}
    if args.part in ("all", "throughput"):
        result["throughput"] = run_throughput(args)
    if args.part in ("all", "hpo"):
        result["hpo"] = run_hpo(args)
    if args.part == "ab":
        result["ab"] = run_ab(args)
    if args.part == "hash":
        result["hash"] = run_hash(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
