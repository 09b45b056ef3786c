"""The campaign runner: default + methods x seeds, complete searches skipped, errors."""

from __future__ import annotations

import json
import subprocess

import pytest

from mlpf.paths import ROOT

from .conftest import PY, synthetic_env, wait_lines


@pytest.mark.slow
def test_live_campaign_runs_default_and_methods_then_skips_them(tmp_path):
    cmd = [PY, "-m", "experiments.campaign", "--scale", "smoke", "--methods", "asha hyperband",
           "--trainable", "synthetic", "--budget", "30", "--out", str(tmp_path)]
    p = subprocess.run(cmd, cwd=ROOT, env=synthetic_env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    for m in ("default", "asha", "hyperband"):
        meta = json.loads((tmp_path / m / "seed0" / "metadata.json").read_text())
        assert meta["status"] == "complete" and meta["method"] == m
    p = subprocess.run(cmd, cwd=ROOT, env=synthetic_env(), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stderr.count("skipped (complete)") == 3


def test_campaign_rejects_unknown_method_in_one_line(capsys):
    from experiments.campaign import main

    assert main(["--scale", "smoke", "--methods", "asha nope", "--trainable", "synthetic"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown method 'nope'; choose one of random, hyperband, asha, " \
        "asha_bo, asha_deephyper, async_hyperband, bohb, bo, asha_gp, asha_tpe, epoch1, epoch4, " \
        "default"


def test_mpi_command_uses_workers_plus_one_ranks():
    from experiments.search import search_command

    cmd, env = search_command("asha", "smoke", 3, workers=4, evaluator="mpi", trainable="mlpf",
                              resume=True)
    assert cmd[1:3] == ["-n", "5"] and cmd[0].endswith("mpiexec")
    assert env["MPIR_CVAR_NOLOCAL"] == "1"
    assert cmd[cmd.index("--seed") + 1] == "3" and "--resume" in cmd


def test_live_campaign_refuses_logs_of_another_design_before_starting(tmp_path, capsys):
    from experiments import logs
    from experiments.campaign import main

    old = tmp_path / "asha" / "seed0"
    old.mkdir(parents=True)
    meta = {"method": "asha", "scale": "smoke", "seed": 0, "status": "complete",
            "method_settings": {"settings": {"max_t": 27, "grace": 1, "eta": 3,
                                             "budget": 81, "device_budget": None}}}
    (old / logs.METADATA_JSON).write_text(json.dumps(meta))
    legacy = tmp_path / "hyperband" / "seed0"  # an older format: no recorded design
    legacy.mkdir(parents=True)
    (legacy / logs.METADATA_JSON).write_text(json.dumps({"method": "hyperband",
                                                         "method_settings": "{'max_t': 27}"}))
    argv = ["--scale", "smoke", "--methods", "asha hyperband", "--trainable", "synthetic",
            "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"error: a search of another design in {old} "
                                              "(max_t 27, not 9) and 1 more: move them aside")
    assert not (tmp_path / "default").exists()  # nothing started
    assert logs.design_difference(json.loads((legacy / logs.METADATA_JSON).read_text()),
                                  {}) == "no recorded design (an older log format)"


def test_live_campaign_names_an_unreadable_metadata_file(tmp_path, capsys):
    from experiments.campaign import main

    bad = tmp_path / "asha" / "seed0" / "metadata.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"method": "asha", "sta')  # cut short
    assert main(["--scale", "smoke", "--methods", "asha", "--trainable", "synthetic",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad} is not readable JSON (JSONDecodeError); move it aside to " \
        "resume from the CSV logs"


def test_live_campaign_refuses_logs_of_another_loss(tmp_path, capsys):
    from experiments import logs
    from experiments.campaign import main
    from experiments.driver import design
    from experiments.methods import settings_for

    old = tmp_path / "asha" / "seed0"
    old.mkdir(parents=True)
    settings = design("asha", settings_for("smoke"))  # the same design, another loss
    meta = {"method": "asha", "scale": "smoke", "seed": 0, "status": "complete",
            "method_settings": {"settings": settings}, logs.LOSS: {"name": "mlpf-unit-weights"}}
    (old / logs.METADATA_JSON).write_text(json.dumps(meta))
    argv = ["--scale", "smoke", "--methods", "asha", "--trainable", "synthetic",
            "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: a search of another design in {old} (loss "
                          "mlpf-unit-weights, not synthetic)")
    assert not (tmp_path / "default").exists()


@pytest.mark.slow
def test_a_killed_campaign_stops_its_searches_as_interrupted(tmp_path):
    """SIGKILL reaches no handler of the campaign; its running search still gets SIGTERM
    (experiments.backends.live.stopped_with_parent) and ends as an interrupted search,
    with no process of it left."""
    import psutil

    cmd = [PY, "-m", "experiments.campaign", "--scale", "smoke", "--methods", "random",
           "--trainable", "synthetic", "--budget", "5000", "--time-budget", "0",
           "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=synthetic_env(sleep=0.2),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    curves = tmp_path / "random" / "seed0" / "learning_curves.csv"
    tree = []
    try:
        wait_lines(curves, 3, proc, timeout=120)
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert tree, "the running search"
        proc.kill()
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(tree, timeout=60)
        assert not alive, alive
    finally:  # what this test started, orphans included, never outlives it
        for p in [psutil.Process(proc.pid), *tree] if proc.poll() is None else tree:
            try:
                p.kill()
            except psutil.Error:
                pass
    meta = json.loads((tmp_path / "random" / "seed0" / "metadata.json").read_text())
    assert meta["status"] == "interrupted"


@pytest.mark.slow
def test_sigusr1_drains_a_live_campaign_between_searches(tmp_path):
    """SIGUSR1 to the campaign: the running search finishes complete (not interrupted), the
    next one never starts, exit 75; the same command then continues with it."""
    import signal

    cmd = [PY, "-m", "experiments.campaign", "--scale", "smoke", "--methods", "random asha",
           "--trainable", "synthetic", "--budget", "30", "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=synthetic_env(sleep=0.2),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_lines(tmp_path / "random" / "seed0" / "learning_curves.csv", 2, proc, timeout=120)
        proc.send_signal(signal.SIGUSR1)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 75, err
    meta = json.loads((tmp_path / "random" / "seed0" / "metadata.json").read_text())
    assert meta["status"] == "complete" and len(meta["segments"]) == 1
    assert not (tmp_path / "asha").exists()
    assert "drained: 1 search(es) not started" in err
    p = subprocess.run(cmd, cwd=ROOT, env=synthetic_env(), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("skipped (complete)") == 2
    assert json.loads((tmp_path / "asha" / "seed0" / "metadata.json").read_text())[
        "status"] == "complete"


def test_a_drained_campaign_counts_only_the_searches_a_rerun_starts(tmp_path):
    from experiments.campaign import still_to_run

    folders = [tmp_path / n for n in ("done", "half", "none", "broken")]
    for f in folders[:2] + folders[3:]:
        f.mkdir()
    (folders[0] / "metadata.json").write_text(json.dumps({"status": "complete"}))
    (folders[1] / "metadata.json").write_text(json.dumps({"status": "interrupted"}))
    (folders[3] / "metadata.json").write_text("{not json")
    assert still_to_run(folders) == 3 and still_to_run(folders[:1]) == 0
