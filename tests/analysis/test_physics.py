"""The physics entry point without training: choice of the best trial and the trainer call."""

import sys

from analysis import physics
from tests.analysis.fakelogs import write_search

TRIALS = [
    {"job_id": 0, "losses": [3.0, 2.0], "hp": {"lr": 0.001, "bin_size": 64.0,
                                               "layernorm": True}},
    {"job_id": 1, "losses": [2.5, 1.5], "hp": {"lr": 0.0025123456789, "bin_size": 32.0,
                                               "layernorm": False}},
]


def test_choose_best_and_command(tmp_path):
    write_search(tmp_path, "smoke", "asha", 0, TRIALS)
    write_search(tmp_path, "smoke", "random", 0, [{**TRIALS[0], "losses": [1.8]}])
    c = physics.choose_best("smoke", tmp_path)
    assert (c["method"], c["job_id"], c["best_loss"]) == ("asha", "1", 1.5)
    assert c["overrides"] == {"lr": "0.0025123456789", "bin_size": "32", "layernorm": "False"}
    assert physics.choose_best("smoke", tmp_path, method="random")["best_loss"] == 1.8
    cmd = physics.train_command("smoke", 9, tmp_path / "b", c["overrides"])
    assert cmd[:3] == [sys.executable, "-m", "mlpf.train"]
    assert cmd[3:] == ["--scale", "smoke", "--epochs", "9", "--out", str(tmp_path / "b"),
                       "--set", "lr=0.0025123456789", "bin_size=32", "layernorm=False"]
    assert "--set" not in physics.train_command("smoke", 9, tmp_path, {})


def test_dry_run_and_missing_logs(tmp_path, capsys):
    assert physics.main(["--scale", "smoke", "--results", str(tmp_path)]) == 2
    assert "no HPO logs" in capsys.readouterr().err
    write_search(tmp_path, "smoke", "asha", 0, TRIALS)
    assert physics.main(["--scale", "smoke", "--results", str(tmp_path), "--out",
                         str(tmp_path / "o"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "--epochs 9" in lines[0] and "lr=0.0025123456789" in lines[1]
    assert "--no-progress" in lines[0] and "--max-events" not in lines[0]
    assert not (tmp_path / "o").exists()


def test_flatten():
    assert physics.flatten({"a": {"b": 1, "c": [2.0, "x"]}, "d": True, "e": "s"}) == {
        "a.b": 1.0, "a.c.0": 2.0}


def test_choose_best_by_final_loss(tmp_path):
    # asha's trial dips to 1.0 at epoch 1 but ends at 2.0; random's ends at 1.8: random wins
    write_search(tmp_path, "smoke", "asha", 0, [{**TRIALS[0], "losses": [1.0, 2.0]}])
    write_search(tmp_path, "smoke", "random", 0, [{**TRIALS[1], "losses": [1.8]}])
    c = physics.choose_best("smoke", tmp_path)
    assert (c["method"], c["final_loss"]) == ("random", 1.8)
    a = physics.choose_best("smoke", tmp_path, method="asha")
    assert (a["final_loss"], a["best_loss"]) == (2.0, 1.0)
