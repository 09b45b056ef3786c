"""Hostile command lines (issue 27): each is refused with exit 2 and one clean line, before
anything is written or started. Nothing here trains: the bodies that would run are stubs."""

from __future__ import annotations

import importlib

import pytest

from mlpf import paths
from mlpf.cli import OVERSUBSCRIBE, usable_cores

BAD_SEEDS = ["-1", str(2**32)]
SYNTH = ["--scale", "smoke", "--trainable", "synthetic"]


def call(module: str, argv: list[str], capsys) -> tuple[int, str]:
    """``python -m module argv`` in this process: (exit code, stderr)."""
    capsys.readouterr()
    try:
        rc = importlib.import_module(module).main(argv)
    except SystemExit as e:  # an argparse parser that exits (mlpf's)
        rc = e.code
    return rc, capsys.readouterr().err


def refused(rc: int, err: str) -> None:
    assert rc == 2, err
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "\x1b" not in err and "\r" not in err, err


# ------------------------------------------------------------------ seeds, --max-failures
def _seed_cases(out):
    for bad in BAD_SEEDS:
        yield "experiments.search", ["--method", "asha", *SYNTH, "--out", str(out), "--seed", bad]
        yield "experiments.campaign", ["--backend", "replay", "--scale", "smoke", "--table",
                                       "synthetic", "--out", str(out), "--seeds", f"0 {bad}"]
        yield "experiments.lctable", [*SYNTH, "--out", str(out / "t.csv"), "--seed", bad]
        yield "experiments.peers.ray_tune", ["--method", "ray_asha", *SYNTH, "--out", str(out),
                                             "--seed", bad]
        yield "experiments.sensitivity", ["--scale", "smoke", "--table", str(out / "t.csv"),
                                          "--out", str(out), "--seeds", bad]
        yield "experiments.lcbench", ["--scale", "smoke", "--sample", "2", "--seed", bad]
        yield "experiments.lcbench", ["--scale", "smoke", "--query", "{}", "--epoch", "1",
                                      "--lookup", "surrogate", "--world", bad]
        yield "mlpf.train", ["--scale", "smoke", "--out", str(out), "--epochs", "1",
                             "--max-events", "4", "--no-progress", "--seed", bad]
    for bad in ("0", "1001"):  # claim1's --seeds is a count
        yield "experiments.claim1", [*SYNTH, "--out", str(out), "--seeds", bad]
    yield "experiments.search", ["--method", "asha", *SYNTH, "--out", str(out),
                                 "--max-failures", "-1"]


def test_bad_seeds_and_max_failures_leave_no_folder(tmp_path, capsys):
    out = tmp_path / "out"
    for module, argv in _seed_cases(out):
        rc, err = call(module, argv, capsys)
        refused(rc, err)
        assert not out.exists(), (module, argv)


# ------------------------------------------------------------------ workers, processes
@pytest.fixture
def stubs(monkeypatch):
    """Replace what would start searches, trainings or pools; returns the calls made."""
    from experiments import campaign, claim1, search, sensitivity
    from experiments.peers import ray_tune

    calls = []

    def stub(name):
        def f(*a, **k):
            calls.append(name)
            return 0
        return f

    monkeypatch.setattr(search.driver, "run", stub("search"))
    monkeypatch.setattr(search, "open_backend", lambda *a, **k: None)
    monkeypatch.setattr(campaign, "run_live", stub("campaign live"))
    monkeypatch.setattr(campaign, "run_replay", stub("campaign replay"))
    monkeypatch.setattr(ray_tune, "run", stub("ray_tune"))
    monkeypatch.setattr(claim1, "run", stub("claim1"))
    monkeypatch.setattr(sensitivity, "load_table", stub("sensitivity"))
    return calls


def test_too_many_workers_are_refused_unless_asked_for(tmp_path, capsys, stubs):
    many = str(10_000)
    over = str(OVERSUBSCRIBE * usable_cores() + 1)  # one past the cap
    out = str(tmp_path / "out")
    refusals = [
        ("experiments.search", ["--method", "asha", *SYNTH, "--out", out, "--workers", many]),
        ("experiments.search", ["--method", "asha", *SYNTH, "--out", out, "--workers", over,
                                "--evaluator", "serial"]),
        ("experiments.campaign", [*SYNTH, "--methods", "asha", "--workers", many]),
        ("experiments.campaign", [*SYNTH, "--methods", "asha", "--workers", "2",
                                  "--processes", over]),  # 2 x over workers at once
        ("experiments.campaign", ["--backend", "replay", "--scale", "smoke", "--table",
                                  "synthetic", "--processes", many]),
        ("experiments.peers.ray_tune", ["--method", "ray_asha", *SYNTH, "--out", out,
                                        "--workers", many]),
        ("experiments.sensitivity", ["--scale", "smoke", "--table", "t.csv", "--out", out,
                                     "--processes", many]),
        ("experiments.claim1", [*SYNTH, "--out", out, "--workers", many]),
    ]
    for module, argv in refusals:
        rc, err = call(module, argv, capsys)
        refused(rc, err)
        assert "--allow-oversubscribe" in err, err
    assert stubs == []
    # simulated workers: many, but bounded, and no flag lifts the bound
    for module, argv in [("experiments.search", ["--method", "asha", "--scale", "smoke",
                                                 "--backend", "replay", "--workers", "4097",
                                                 "--allow-oversubscribe"]),
                         ("experiments.campaign", ["--backend", "replay", "--scale", "smoke",
                                                   "--table", "synthetic", "--workers", "4097",
                                                   "--allow-oversubscribe"])]:
        rc, err = call(module, argv, capsys)
        refused(rc, err)
        assert "4096" in err, err
    assert stubs == []
    # the override runs them; MPI ranks are the launcher's, not refused
    for module, argv in [
            ("experiments.search", ["--method", "asha", *SYNTH, "--out", out, "--workers", over,
                                    "--allow-oversubscribe"]),
            ("experiments.search", ["--method", "asha", *SYNTH, "--out", out, "--workers", many,
                                    "--evaluator", "mpi"]),
            ("experiments.campaign", [*SYNTH, "--methods", "asha", "--workers", over,
                                      "--allow-oversubscribe"]),
            ("experiments.campaign", ["--backend", "replay", "--scale", "smoke", "--table",
                                      "synthetic", "--workers", "4096"]),
            ("experiments.peers.ray_tune", ["--method", "ray_asha", *SYNTH, "--out", out,
                                            "--workers", over, "--allow-oversubscribe"]),
            ("experiments.claim1", [*SYNTH, "--out", out, "--workers", str(usable_cores() + 1),
                                    "--allow-oversubscribe"])]:
        rc, err = call(module, argv, capsys)
        assert rc == 0, (module, argv, err)
    assert stubs == ["search", "search", "campaign live", "campaign replay", "ray_tune",
                     "claim1"]


def test_the_campaign_passes_the_override_to_its_searches():
    from experiments.search import search_command

    cmd, _ = search_command("asha", "smoke", 0, workers=99, evaluator="process",
                            trainable="synthetic", oversubscribe=True)
    assert "--allow-oversubscribe" in cmd
    cmd, _ = search_command("asha", "smoke", 0, workers=2, evaluator="process",
                            trainable="synthetic")
    assert "--allow-oversubscribe" not in cmd


# ------------------------------------------------------------------ --scale
@pytest.mark.parametrize("scale", ["../small", "small/../../x", "/tmp/x", "..", ""])
def test_a_scale_is_a_name_never_a_path(tmp_path, capsys, scale):
    with pytest.raises(ValueError):
        paths.results_dir(scale, "asha", 0)
    with pytest.raises(ValueError):
        paths.data_dir(scale, "train")
    with pytest.raises(ValueError):
        paths.results_dir("small", "../asha", 0)
    for module, argv in [("mlpf.train", ["--scale", scale, "--epochs", "1"]),
                         ("experiments.search", ["--method", "asha", "--scale", scale,
                                                 "--trainable", "synthetic"]),
                         ("experiments.table", ["--scale", scale])]:
        rc, err = call(module, argv, capsys)
        refused(rc, err)
        assert "invalid choice" in err, err


# ------------------------------------------------------------------ one-line errors
FORGED = "x\nerror: forged line\r\x1b[2J\x1b]0;title\x07\u202e"


def test_user_text_cannot_forge_or_garble_the_error_line(tmp_path, capsys):
    from experiments.cli import CliError, run_main
    from mlpf.cli import one_line

    assert one_line("a\nb\x1b[2J é") == "a\\nb\\x1b[2J é"

    def body():
        raise CliError(f"cannot read {FORGED}")
    assert run_main(body) == 2
    err = capsys.readouterr().err
    refused(2, err)
    assert "forged line" in err and "\\n" in err and "\\x1b" in err
    bad = tmp_path / f"table{FORGED}.csv"
    for module, argv in [
            ("experiments.search", ["--method", "asha", "--scale", "smoke", "--backend",
                                    "replay", "--table", str(bad)]),
            ("experiments.lcbench", ["--scale", "smoke", "--sample", "2", "--table", str(bad)]),
            ("experiments.search", ["--method", f"asha{FORGED}", *SYNTH]),
            ("mlpf.train", ["--scale", "smoke", "--out", str(tmp_path / "o"), "--data",
                            str(tmp_path / f"d{FORGED}")]),
            ("mlpf.train", ["--scale", "smoke", "--set", f"lr{FORGED}"])]:
        rc, err = call(module, argv, capsys)
        refused(rc, err)
