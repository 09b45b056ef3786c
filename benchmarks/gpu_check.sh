#!/usr/bin/env bash
# GPU readiness check for MLPF training at the paper's event size; under 5 minutes.
#
#     bash benchmarks/gpu_check.sh            # on a machine with a CUDA GPU
#
# 1. runs the tests that need CUDA (tests/test_train_cuda.py: cuda against cpu, bf16 autocast,
#    fixed shapes, data parallel over the visible GPUs when there are several, and the
#    out-of-memory error path: mlpf.train.DeviceOutOfMemory);
# 2. measures training events/s at 500 and 6,400 elements per event for the small default and
#    a large (paper-width) configuration, fp32 and bf16;
# 3. prints one summary table. Without a GPU it prints one line saying so and exits 0.
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
import torch
sys.path.insert(0, ".")
from mlpf.train import apply_overrides, build_model, collate, config_for_scale
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
        status.setdefault(name, f"ok ({time.perf_counter() - t0:.0f} s)")
    except Exception as e:
        traceback.print_exc()
        status.pop(name, None)
        status[name] = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:80]}"

def run_cuda_tests():
    import subprocess
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "tests/test_train_cuda.py"],
                       capture_output=True, text=True)
    print(r.stdout[-3000:], r.stderr[-2000:], flush=True)
    last = (r.stdout.strip().splitlines() or ["no output"])[-1]
    if r.returncode != 0:
        raise RuntimeError(last)
    status["cuda tests"] = f"ok: pytest tests/test_train_cuda.py: {last}"


check("cuda tests", run_cuda_tests)

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
