"""Training on a CUDA GPU (skipped without one; benchmarks/gpu_check.sh runs these)."""

import numpy as np
import pytest
import torch

from mlpf.train import Data, DeviceOutOfMemory, apply_overrides, config_for_scale, train
from tests.test_model import TINY, synthetic_events

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CFG = apply_overrides(config_for_scale("smoke"), {**TINY, "batch_size": 8, "lr": 3e-3})


@pytest.fixture(scope="module")
def data():
    return Data(synthetic_events(32, 50, 400, seed=1), synthetic_events(8, 50, 400, seed=2))


def test_cuda_training_matches_cpu(data):
    a = train(CFG, data, 2, device="cpu", seed=0)
    b = train(CFG, data, 2, device="cuda", seed=0)
    for x, y in zip(a, b):  # fp32 on both: rounding (and, rarely, an LSH tie) differs
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=5e-3)


def test_bf16_and_fixed_shapes_on_cuda(data):
    ref = train(CFG, data, 2, device="cuda", seed=0)
    fixed = train(apply_overrides(CFG, {"fixed_shapes": True}), data, 2, device="cuda", seed=0)
    assert fixed[-1]["val_loss"] == pytest.approx(ref[-1]["val_loss"], rel=5e-3)
    if torch.cuda.is_bf16_supported():
        bf16 = train(apply_overrides(CFG, {"precision": "bf16"}), data, 2, device="cuda", seed=0)
        assert bf16[-1]["val_loss"] == pytest.approx(ref[-1]["val_loss"], rel=0.05)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 or more GPUs")
def test_data_parallel_over_all_gpus(data):
    n = torch.cuda.device_count()
    cfg = apply_overrides(CFG, {"devices": n, "batch_size": 4 * n})
    hist = train(cfg, data, 2, device="cuda", seed=0)
    assert hist[-1]["devices"] == n and np.isfinite(hist[-1]["val_loss"])


def test_out_of_memory_raises_device_out_of_memory():
    free, _ = torch.cuda.mem_get_info()
    # One event of paper width whose first activation alone exceeds the free memory.
    cfg = apply_overrides(config_for_scale("paper"), {"batch_size": 1, "width": 4096})
    n = int(free // (4 * 4096)) + 4096
    ev = synthetic_events(1, n, n, seed=3)
    with pytest.raises(DeviceOutOfMemory) as e:
        train(cfg, Data(ev, ev), 1, device="cuda")
    assert e.value.epoch == 1
    torch.cuda.empty_cache()
