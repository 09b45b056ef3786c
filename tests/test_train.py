"""Training loop, configuration and CLI (mlpf/train.py, mlpf/metrics.py), on tiny data."""

import csv
import json

import numpy as np
import pytest
import torch

from mlpf import paths
from mlpf.data.format import Event
from mlpf.data.io import write_file
from mlpf.metrics import physics_metrics
from mlpf.train import (
    METRIC_KEYS,
    Data,
    DeviceOutOfMemory,
    TrainConfig,
    TrainingDiverged,
    apply_overrides,
    build_model,
    config_for_scale,
    load_data,
    main,
    predict,
    train,
)
from tests.test_model import TINY, synthetic_events

CFG = apply_overrides(TrainConfig(), {**TINY, "batch_size": 4, "lr": 3e-3})


@pytest.fixture(scope="module")
def data():
    return Data(synthetic_events(16, 10, 40, seed=1), synthetic_events(8, 10, 40, seed=2))


def test_apply_overrides_coerces_types():
    cfg = apply_overrides(TrainConfig(), {"lr": "1e-3", "layernorm": "true", "bin_size": 64.0,
                                          "normalize_degrees": 0, "dropout": "0.1",
                                          "num_node_messages": np.int64(3), "activation": "relu"})
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)
    assert cfg.layernorm is True and cfg.normalize_degrees is False
    assert cfg.bin_size == 64 and isinstance(cfg.bin_size, int)
    assert cfg.num_node_messages == 3 and type(cfg.num_node_messages) is int
    assert apply_overrides(cfg, {"layernorm": "0"}).layernorm is False
    assert TrainConfig().lr != 1e-3 or TrainConfig().layernorm is False  # the original is kept


def test_apply_overrides_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown key 'x'; valid keys: width, layernorm, .*lr"):
        apply_overrides(TrainConfig(), {"x": 1})
    for bad in ({"bin_size": 64.5}, {"layernorm": "maybe"}, {"lr": "fast"},
                {"activation": "nope"}, {"lr_schedule": "step"}, {"dropout": 1.5}):
        with pytest.raises(ValueError):
            apply_overrides(TrainConfig(), bad)


def test_config_for_scale_is_the_study_default_resized():
    from mlpf.scales import STUDY_DEFAULT

    small, paper = config_for_scale("small"), config_for_scale("paper")
    for k, v in STUDY_DEFAULT.items():  # paper: the study era's default as it was
        assert getattr(paper, k) == v, k
    assert paper.bin_size == 640  # 10 bins on events of 6,400 elements
    # small: every width times 1/8, the same bins per event, nothing else changed
    assert (small.output_dim, small.width, small.distance_dim, small.ffn_dist_hidden_dim) == \
        (32, 32, 16, 16)
    assert small.bin_size == 32 and small.lr == paper.lr and small.batch_size == 20
    assert small.num_graph_layers_common == paper.num_graph_layers_common == 3
    with pytest.raises(ValueError):
        config_for_scale("huge")


def test_train_reports_the_metric_keys_and_learns(data):
    seen = []
    hist = train(CFG, data, 4, seen.append, device="cpu")
    assert [m["epoch"] for m in hist] == [1, 2, 3, 4] and seen == hist
    assert all(tuple(m) == METRIC_KEYS for m in hist)
    assert all(m["devices"] == 1 and m["epoch_seconds"] > 0 and m["events_per_second"] > 0
               for m in hist)
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    for m in hist:  # the total is the weighted sum of its parts (coefficients 1)
        assert m["val_loss"] == pytest.approx(
            m["val_loss_cls"] + m["val_loss_reg"] + m["val_loss_charge"])


def test_on_epoch_truthy_return_stops(data):
    hist = train(CFG, data, 5, lambda m: m["epoch"] == 2, device="cpu")
    assert len(hist) == 2


def test_training_is_seeded(data):
    a = train(CFG, data, 2, device="cpu", seed=3)
    b = train(CFG, data, 2, device="cpu", seed=3)
    c = train(CFG, data, 2, device="cpu", seed=4)
    assert [m["val_loss"] for m in a] == [m["val_loss"] for m in b]
    assert a[-1]["val_loss"] != c[-1]["val_loss"]


def test_nan_input_raises_training_diverged(data):
    bad = data.train[5]
    X = bad.X.copy()
    X[0, 1] = np.nan
    broken = Data([*data.train[:5], Event(X, bad.ygen, bad.ycand), *data.train[6:]], data.val)
    with pytest.raises(TrainingDiverged) as e:
        train(CFG, broken, 3, device="cpu")
    assert e.value.epoch == 1 and "epoch 1" in str(e.value)


def test_huge_learning_rate_diverges(data):
    cfg = apply_overrides(CFG, {"lr": 1e12, "lr_schedule": "none"})
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, data, 20, device="cpu")
    assert 1 <= e.value.epoch <= 20


def test_out_of_memory_is_wrapped(data, monkeypatch):
    def boom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr("mlpf.model.MLPF.forward", boom)
    with pytest.raises(DeviceOutOfMemory) as e:
        train(CFG, data, 2, device="cpu")
    assert e.value.epoch == 1


def test_checkpoint_resume_matches_uninterrupted_training(data, tmp_path):
    cfg = apply_overrides(CFG, {"dropout": 0.2, "lr_schedule": "cosine"})  # uses the RNG
    full = train(cfg, data, 3, device="cpu", seed=1)
    first = train(cfg, data, 3, lambda m: m["epoch"] == 1, device="cpu", seed=1,
                  checkpoint_dir=tmp_path)
    assert len(first) == 1 and (tmp_path / "checkpoint.pt").exists()
    resumed = train(cfg, data, 3, device="cpu", seed=1, checkpoint_dir=tmp_path)
    assert [m["epoch"] for m in resumed] == [1, 2, 3]
    for a, b in zip(full, resumed):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    with pytest.raises(ValueError, match="different configuration"):
        train(apply_overrides(cfg, {"lr": 1e-2}), data, 3, device="cpu",
              checkpoint_dir=tmp_path)


def test_threads_left_alone_unless_asked(data):
    before = torch.get_num_threads()
    train(CFG, Data(data.train[:4], data.val[:2]), 1, device="cpu")
    assert torch.get_num_threads() == before


def test_load_data_hints_at_make_data(tmp_path, monkeypatch):
    monkeypatch.setattr("mlpf.train.data_dir", lambda scale, split: tmp_path / scale / split)
    with pytest.raises(FileNotFoundError, match=r"make data SCALE=smoke"):
        load_data("smoke")
    (tmp_path / "smoke" / "train").mkdir(parents=True)
    (tmp_path / "smoke" / "val").mkdir(parents=True)
    write_file(tmp_path / "smoke" / "train" / "a.pkl.bz2", synthetic_events(5))
    write_file(tmp_path / "smoke" / "val" / "a.pkl.bz2", synthetic_events(3))
    d = load_data("smoke", max_events=4)
    assert len(d.train) == 4 and len(d.val) == 3 and d.test is None


def test_predict_and_physics_metrics(data):
    ev = data.val[:3]
    reco = predict(build_model(CFG), ev, 2)
    assert [r.shape for r in reco] == [e.ygen.shape for e in ev]
    true = np.concatenate([e.ygen for e in ev])
    perfect = physics_metrics(true, true)
    assert perfect["accuracy"] == 1.0 and perfect["all"]["fake_rate"] == 0.0
    assert perfect["classes"]["ch.had"]["efficiency"] == 1.0
    assert perfect["all"]["pt"]["resolution"] == 0.0
    empty = physics_metrics(true, np.zeros_like(true))
    assert empty["all"]["efficiency"] == 0.0 and empty["all"]["fake_rate"] is None


@pytest.fixture
def data_dir(tmp_path):
    for split, n, seed in (("train", 12, 1), ("val", 6, 2)):
        (tmp_path / "d" / split).mkdir(parents=True)
        write_file(tmp_path / "d" / split / "a.pkl.bz2", synthetic_events(n, 10, 40, seed))
    return tmp_path / "d"


def test_cli_writes_curve_config_and_metrics(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    sets = [f"{k}={v}" for k, v in TINY.items()]
    rc = main(["--data", str(data_dir), "--epochs", "2", "--out", str(out), "--scale", "smoke",
               "--no-progress", "--set", *sets, "lr=3e-3", "--set", "layernorm=true"])
    assert rc == 0
    with open(out / "learning_curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and tuple(rows[0]) == METRIC_KEYS
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["layernorm"] is True and cfg["lr"] == 3e-3 and cfg["bin_size"] == TINY["bin_size"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_events"] == 6 and 0 <= metrics["mlpf"]["accuracy"] <= 1
    assert "efficiency" in metrics["mlpf"]["classes"]["photon"]
    assert metrics["reference_pf"]["accuracy"] == 1.0  # synthetic ycand == ygen
    # Rerunning with more epochs resumes from the checkpoint and keeps the earlier rows.
    assert main(["--data", str(data_dir), "--epochs", "3", "--out", str(out), "--scale",
                 "smoke", "--no-progress", "--set", *sets, "lr=3e-3", "layernorm=true"]) == 0
    with open(out / "learning_curve.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


def test_cli_rejects_unknown_key(data_dir, tmp_path, capsys):
    rc = main(["--data", str(data_dir), "--epochs", "1", "--out", str(tmp_path / "r"),
               "--set", "nonsense=1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert "unknown key 'nonsense'; valid keys:" in err and "bin_size" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.skipif(not paths.data_dir("smoke", "val").exists(),
                    reason="no generated smoke data (`make data SCALE=smoke`)")
def test_smoke_preset_learns_on_generated_events():
    data = load_data("smoke")
    hist = train(config_for_scale("smoke"), data, 3, device="cpu")
    assert hist[-1]["val_loss"] < 0.95 * hist[0]["val_loss"]


@pytest.mark.parametrize("argv,needle", [
    (["--epochs", "-3"], "--epochs: must be >= 1"),
    (["--threads", "-2"], "--threads: must be >= 1"),
    (["--device", "banana"], "unknown device 'banana'"),
    (["--set", "width=1e12"], "width must be at most"),
    (["--data", "/nonexistent"], "no train data here"),
])
def test_cli_mistakes_are_one_line_exit_2(argv, needle, capsys):
    try:
        rc = main(["--scale", "smoke", "--no-progress", *argv])
    except SystemExit as e:  # argparse's errors end the parser
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_logs_show_paths_inside_the_repository_relative_to_it():
    import sys

    from mlpf.paths import ROOT, command_line, shown

    assert shown(ROOT / "data" / "small") == "data/small"
    assert shown("/elsewhere/x.pkl.bz2") == "/elsewhere/x.pkl.bz2" and shown("a/b") == "a/b"
    cmd = command_line([str(ROOT / "experiments" / "search.py"), "--scale", "small"])
    assert cmd[1:] == ["experiments/search.py", "--scale", "small"]
    assert str(ROOT) not in cmd[0] or not sys.executable.startswith(str(ROOT))
