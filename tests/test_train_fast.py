"""Execution options of mlpf/train.py that must not change what is learned: collation,
fixed shapes, precision, checkpoints that load without running code."""

import os
import pickle

import numpy as np
import pytest
import torch

from mlpf.train import (
    TrainConfig,
    apply_overrides,
    collate,
    load_checkpoint,
    padded_length,
    train,
)
from tests.test_model import synthetic_events
from tests.test_train import CFG, data  # noqa: F401  (the module-scoped data fixture)

# Losses after 2 epochs of RECORDED_CONFIG (seed 0) on the events of tests.test_train,
# recorded from the implementation before the operator fusion of mlpf/model.py (commit
# 1d003b1), with the loss of that time (every term weighted 1, one Huber delta of 1; upstream's
# weights are the default now): [(train_loss, val_loss)] per epoch. Same equations, different
# rounding: they must agree to REL_TOL (observed: 3e-8).
RECORDED_CONFIG = dict(
    width=16, layernorm=False, ffn_dist_hidden_dim=16, ffn_dist_num_layers=1, distance_dim=8,
    num_node_messages=2, num_graph_layers_common=2, num_graph_layers_energy=1, dropout=0.0,
    bin_size=8, clip_value_low=0.0, dist_mult=0.1, normalize_degrees=True, output_dim=16,
    activation="elu", lr=0.003, batch_size=4, lr_schedule="exponential", lr_decay_rate=0.95,
    lr_decay_steps=1000, weight_decay=0.0, grad_clip=0.0, cls_coef=1.0, charge_coef=1.0,
    pt_coef=1.0, eta_coef=1.0, sin_phi_coef=1.0, cos_phi_coef=1.0, energy_coef=1.0,
    pt_delta=1.0, eta_delta=1.0, sin_phi_delta=1.0, cos_phi_delta=1.0, energy_delta=1.0,
    focal_gamma=0.0)
RECORDED = [(2.8830223083496094, 2.7514489555491206), (2.6861218214035034, 2.5746195815386272)]
REL_TOL = 1e-5


def test_losses_after_two_epochs_match_the_recorded_implementation(data):  # noqa: F811
    hist = train(apply_overrides(TrainConfig(), RECORDED_CONFIG), data, 2, device="cpu", seed=0)
    for m, (tr, va) in zip(hist, RECORDED):
        assert m["train_loss"] == pytest.approx(tr, rel=REL_TOL)
        assert m["val_loss"] == pytest.approx(va, rel=REL_TOL)


def naive_collate(events, bin_size):
    n = max(max(len(e) for e in events), 1)
    N = -(-n // bin_size) * bin_size
    X, Y, M = np.zeros((len(events), N, 12), np.float32), np.zeros((len(events), N, 7),
                                                                    np.float32), \
        np.zeros((len(events), N), bool)
    for i, e in enumerate(events):
        X[i, :len(e)], Y[i, :len(e)], M[i, :len(e)] = e.X, e.ygen, True
    return X, Y, M


def test_collate_matches_a_per_event_copy():
    ev = synthetic_events(5, 3, 40, seed=3)
    for got, want in zip(collate(ev, 16), naive_collate(ev, 16)):
        assert np.array_equal(got.numpy(), want)
    X, Y, M = collate(ev[:2], 16, fixed_shapes=True, batch_size=4)
    assert X.shape[0] == 4 and not M[2:].any() and M.sum() == len(ev[0]) + len(ev[1])


def test_padded_length_ladder_is_few_sizes_with_bounded_padding():
    sizes = {padded_length(n, 32, True) for n in range(1, 7000)}
    assert len(sizes) < 45
    for n in (1, 31, 33, 500, 6400, 6401):
        N = padded_length(n, 32, True)
        assert N >= n and N % 32 == 0 and (N <= 1.19 * n + 32)
    assert padded_length(500, 32) == 512


def test_fixed_shapes_do_not_change_the_losses(data):  # noqa: F811
    a = train(CFG, data, 2, device="cpu", seed=0)
    b = train(apply_overrides(CFG, {"fixed_shapes": True}), data, 2, device="cpu", seed=0)
    for x, y in zip(a, b):
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-4)
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)


def test_bf16_precision_trains_and_is_recorded(data, tmp_path):  # noqa: F811
    cfg = apply_overrides(CFG, {"precision": "bf16"})
    assert cfg.to_dict()["precision"] == "bf16" and TrainConfig().precision == "fp32"
    hist = train(cfg, data, 2, device="cpu", seed=0, checkpoint_dir=tmp_path)
    ref = train(CFG, data, 2, device="cpu", seed=0)
    assert hist[-1]["val_loss"] == pytest.approx(ref[-1]["val_loss"], rel=0.05)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["config"]["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision"):
        apply_overrides(CFG, {"precision": "fp8"})


def test_devices_beyond_the_machine_are_an_error(data):  # noqa: F811
    with pytest.raises(ValueError, match="devices=4 needs that many CUDA GPUs"):
        train(apply_overrides(CFG, {"devices": 4}), data, 1, device="cpu")


def test_checkpoint_is_plain_data_and_resumes(data, tmp_path):  # noqa: F811
    cfg = apply_overrides(CFG, {"dropout": 0.2})
    train(cfg, data, 1, device="cpu", seed=1, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)


class _Planted:
    def __reduce__(self):
        return (os.system, (f"touch {_Planted.marker}",))


def test_planted_pickle_checkpoint_is_refused_not_executed(data, tmp_path):  # noqa: F811
    _Planted.marker = tmp_path / "pwned"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    with open(ckpt / "checkpoint.pt", "wb") as f:
        pickle.dump({"config": CFG.to_dict(), "payload": _Planted()}, f, protocol=2)
    with pytest.raises(ValueError, match="refusing to load"):
        train(CFG, data, 1, device="cpu", checkpoint_dir=ckpt)
    assert not _Planted.marker.exists()
    # The same through torch.save (a zip archive) is refused as well.
    torch.save({"config": CFG.to_dict(), "payload": _Planted()}, ckpt / "checkpoint.pt")
    with pytest.raises(ValueError, match="refusing to load"):
        load_checkpoint(ckpt / "checkpoint.pt")
    assert not _Planted.marker.exists()



def test_subnormals_are_flushed_only_during_an_epoch(data):  # noqa: F811
    seen = []
    train(CFG, data, 1, lambda m: seen.append((torch.tensor([1e-39]) * 1.0).item()),
          device="cpu")
    assert seen and seen[0] != 0  # on_epoch runs with the default again
    assert (torch.tensor([1e-39]) * 1.0).item() != 0


def test_model_defaults_are_written_once():
    """TrainConfig's model fields are ModelConfig's, with its defaults; MLPF's keywords too."""
    import dataclasses
    import inspect

    from mlpf.model import MLPF, ModelConfig
    from mlpf.train import MODEL_KEYS, TrainConfig

    model = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    train = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert MODEL_KEYS == tuple(model)
    assert {k: train[k] for k in MODEL_KEYS} == model
    sig = inspect.signature(MLPF.__init__).parameters
    assert {k: sig[k].default for k in MODEL_KEYS} == model and set(sig) == {"self", *model}
