#!/usr/bin/env bash
# GPU readiness check for MLPF training at the paper's event size; under 5 minutes.
#
#     bash benchmarks/gpu_check.sh            # on a machine with a CUDA GPU
#
# 1. runs the tests that need CUDA (train on cuda, bf16 autocast, fixed shapes, data parallel
#    over the visible GPUs when there are several);
# 2. measures training events/s at 500 and 6,400 elements per event for the small default and
#    a large (paper-width) configuration, fp32 and bf16;
# 3. checks that running out of GPU memory raises mlpf.train.DeviceOutOfMemory;
# 4. prints one summary table. Without a GPU it prints one line saying so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to check"
    exit 0
fi
exec timeout 290 "$PY" - <<'PYEOF'
import statistics, sys, time, traceback
import numpy as np
import torch
sys.path.insert(0, ".")
from mlpf.train import (Data, DeviceOutOfMemory, apply_overrides, build_model, collate,
                        config_for_scale, train)
from mlpf.loss import mlpf_loss
from tests.test_model import synthetic_events

dev = torch.device("cuda")
rows, status = [], {}
ngpu = torch.cuda.device_count()
print(f"gpu_check: {ngpu} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}",
      flush=True)

def check(name, fn):
    t0 = time.perf_counter()
    try:
        fn()
        status[name] = f"ok ({time.perf_counter() - t0:.0f} s)"
    except Exception as e:
        traceback.print_exc()
        status[name] = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:80]}"

small = Data(synthetic_events(32, 50, 400, seed=1), synthetic_events(8, 50, 400, seed=2))
base = apply_overrides(config_for_scale("smoke"), {"batch_size": 8, "lr": 3e-3})

def t_cuda_matches_cpu():
    a = train(base, small, 2, device="cpu", seed=0)
    b = train(base, small, 2, device="cuda", seed=0)
    for x, y in zip(a, b):
        # fp32 on both; only rounding differs (and, rarely, an LSH bin at a tie)
        assert abs(x["val_loss"] / y["val_loss"] - 1) < 5e-3, (x["val_loss"], y["val_loss"])

def t_bf16():
    cfg = apply_overrides(base, {"precision": "bf16"})
    h = train(cfg, small, 2, device="cuda", seed=0)
    assert np.isfinite(h[-1]["val_loss"])

def t_fixed_shapes():
    a = train(base, small, 2, device="cuda", seed=0)
    b = train(apply_overrides(base, {"fixed_shapes": True}), small, 2, device="cuda", seed=0)
    assert abs(a[-1]["val_loss"] / b[-1]["val_loss"] - 1) < 1e-3

def t_data_parallel():
    if ngpu < 2:
        return
    cfg = apply_overrides(base, {"devices": ngpu, "batch_size": 4 * ngpu})
    h = train(cfg, small, 2, device="cuda", seed=0)
    assert h[-1]["devices"] == ngpu and np.isfinite(h[-1]["val_loss"])

def t_oom():
    big = apply_overrides(config_for_scale("paper"), {"batch_size": 4096})
    ev = synthetic_events(4096, 6400, 6400, seed=3)
    try:
        train(big, Data(ev, ev[:1]), 1, device="cuda")
    except DeviceOutOfMemory as e:
        assert e.epoch == 1
        torch.cuda.empty_cache()
        return
    raise AssertionError("no DeviceOutOfMemory for a batch that cannot fit")

for name, fn in [("cuda training matches cpu", t_cuda_matches_cpu), ("bf16 autocast", t_bf16),
                 ("fixed shapes", t_fixed_shapes), ("data parallel", t_data_parallel),
                 ("out of memory -> DeviceOutOfMemory", t_oom)]:
    check(name, fn)

def throughput(label, cfg, n, precision):
    cfg = apply_overrides(cfg, {"precision": precision})
    torch.manual_seed(0)
    model = build_model(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    X, Y, M = (t.to(dev) for t in collate(synthetic_events(cfg.batch_size, n, n, seed=n),
                                          cfg.bin_size))
    ts = []
    for i in range(8):
        torch.cuda.synchronize(); t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(X, M)
        loss = mlpf_loss({k: v.float() for k, v in out.items()}, Y, M)["total"]
        opt.zero_grad(); loss.backward(); opt.step()
        torch.cuda.synchronize()
        if i >= 3:
            ts.append(time.perf_counter() - t0)
    rows.append((label, n, precision, cfg.batch_size / statistics.median(ts),
                 torch.cuda.max_memory_allocated() / 2**30))
    torch.cuda.reset_peak_memory_stats()

configs = [("small default", config_for_scale("small")),
           ("paper width", apply_overrides(config_for_scale("paper"), {"batch_size": 5}))]
for label, cfg in configs:
    for n in (500, 6400):
        for prec in ("fp32", "bf16"):
            check(f"throughput {label} {n} {prec}", lambda: throughput(label, cfg, n, prec))

print("\n| check | result |\n|---|---|")
for k, v in status.items():
    if not k.startswith("throughput") or not v.startswith("ok"):
        print(f"| {k} | {v} |")
print("\n| configuration | elements/event | precision | events/s | peak GiB |")
print("|---|---:|---|---:|---:|")
for label, n, prec, eps, gib in rows:
    print(f"| {label} | {n} | {prec} | {eps:.1f} | {gib:.1f} |")
sys.exit(0 if all(v.startswith("ok") for v in status.values()) else 1)
PYEOF
