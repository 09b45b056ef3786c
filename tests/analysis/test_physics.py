"""The physics entry point: run selection, trainer commands, seed folders, skip on rerun,
the table over seeds and the previous layout. No model is trained except in the slow test;
the others use --dry-run, hand-made trainer outputs, or a stand-in trainer script."""

import json
import math
import shutil
import sys
import textwrap

import pytest

from analysis import physics
from mlpf.paths import ROOT, data_dir
from tests.analysis.fakelogs import write_search

TRIALS = [
    {"job_id": 0, "losses": [3.0, 2.0], "hp": {"lr": 0.001, "bin_size": 64.0,
                                               "layernorm": True}},
    {"job_id": 1, "losses": [2.5, 1.5], "hp": {"lr": 0.0025123456789, "bin_size": 32.0,
                                               "layernorm": False}},
]
QUIET = pytest.mark.filterwarnings("ignore::analysis.logs.LogWarning")


def _logs(root):
    """default, random (1 seed), asha (2 seeds; seed 1 holds the best trial of all) and a
    replayed method that must never be a run."""
    write_search(root, "smoke", "default", 0, [{"job_id": 0, "losses": [2.2, 2.1], "hp": {}}])
    write_search(root, "smoke", "random", 0, [{**TRIALS[0], "losses": [1.9]}])
    write_search(root, "smoke", "asha", 0, TRIALS)
    write_search(root, "smoke", "asha", 1, [{**TRIALS[1], "job_id": 4, "losses": [1.2]}])
    write_search(root, "smoke", "bohb", 0, [{**TRIALS[1], "losses": [0.1]}], backend="replay")


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


def test_choose_best_by_final_loss(tmp_path):
    # asha's trial dips to 1.0 at epoch 1 but ends at 2.0; random's ends at 1.8: random wins
    write_search(tmp_path, "smoke", "asha", 0, [{**TRIALS[0], "losses": [1.0, 2.0]}])
    write_search(tmp_path, "smoke", "random", 0, [{**TRIALS[1], "losses": [1.8]}])
    c = physics.choose_best("smoke", tmp_path)
    assert (c["method"], c["final_loss"]) == ("random", 1.8)
    a = physics.choose_best("smoke", tmp_path, method="asha")
    assert (a["final_loss"], a["best_loss"]) == (2.0, 1.0)


@QUIET
def test_select_runs_per_method(tmp_path):
    _logs(tmp_path)
    runs, best, left_out = physics.select_runs("smoke", tmp_path)
    assert list(runs) == ["default", "random", "asha"] and left_out == []  # not bohb (replay)
    assert runs["default"]["overrides"] == {} and runs["default"]["final_loss"] == 2.1
    assert (runs["random"]["job_id"], runs["random"]["final_loss"]) == ("0", 1.9)
    # asha's incumbent over both searches: seed 1's trial 4 (1.2) beats seed 0's trial 1 (1.5)
    assert (runs["asha"]["seed"], runs["asha"]["job_id"], runs["asha"]["final_loss"]) == (
        1, "4", 1.2)
    assert best == "asha"
    runs, best, _ = physics.select_runs("smoke", tmp_path, ["random"])
    assert list(runs) == ["default", "random"] and best == "random"
    with pytest.raises(physics.MissingLogsError, match="no logs of bohb"):
        physics.select_runs("smoke", tmp_path, ["bohb"])


@QUIET
def test_a_configuration_two_methods_share_is_trained_once(tmp_path, capsys):
    write_search(tmp_path, "smoke", "random", 0, [{**TRIALS[0], "losses": [1.9]}])
    write_search(tmp_path, "smoke", "asha", 0, [{**TRIALS[0], "losses": [1.7]}])
    runs, best, _ = physics.select_runs("smoke", tmp_path)
    assert physics.shared(runs) == {"default": "default", "random": "random", "asha": "random"}
    assert physics.main(["--scale", "smoke", "--results", str(tmp_path), "--out",
                         str(tmp_path / "o"), "--dry-run", "--seeds", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and not any("/asha/" in line for line in out)
    assert "asha has random's configuration, trained once" in out[-1]


@QUIET
def test_dry_run_prints_every_command_in_the_seed_layout(tmp_path, capsys):
    _logs(tmp_path)
    o = tmp_path / "o"
    assert physics.main(["--scale", "smoke", "--results", str(tmp_path), "--out", str(o),
                         "--dry-run", "--seeds", "2", "--jobs", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cmds, summary = lines[:-1], lines[-1]
    assert len(cmds) == 6  # 3 runs x 2 seeds, seed-major
    root = o / "smoke" / "physics"
    expected = [(r, k) for k in range(2) for r in ("default", "random", "asha")]
    for line, (run, k) in zip(cmds, expected):
        assert f"--out {root / run / f'seed{k}'} --seed {k} --eval test --threads 1" in line
        assert "--epochs 9 " in line and "--no-progress" in line and "--max-events" not in line
    assert "--set" not in cmds[0] and "lr=0.001 bin_size=64 layernorm=True" in cmds[1]
    assert summary.startswith("# 6 trainings") and "best: asha" in summary
    assert "6 to run, 3 at a time" in summary
    assert not o.exists()  # a dry run writes nothing
    assert physics.main(["--scale", "smoke", "--results", str(tmp_path), "--out", str(o),
                         "--dry-run", "--methods", "random", "--epochs", "2", "--seeds", "1",
                         "--max-events", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all("--epochs 2 " in s and "--max-events 20" in s
                                   for s in lines[:2])


def _typed(v: str):
    """A --set value as the trainer's config.json holds it: "64" -> 64, "True" -> true."""
    if v in ("True", "False"):
        return v == "True"
    for f in (int, float):
        try:
            return f(v)
        except ValueError:
            pass
    return v


def _finish(t: physics.Training, split: str = "test", **config) -> None:
    """Leave what a finished training of ``t`` leaves (as mlpf.train writes it)."""
    t.prepare()
    cfg = {"config": {"dropout": 0.0, **{k: _typed(v) for k, v in t.req["overrides"].items()}},
           "scale": t.req["scale"], "epochs": t.req["epochs"], "seed": t.seed, **config}
    (t.folder / physics.CONFIG_JSON).write_text(json.dumps(cfg))
    (t.folder / physics.METRICS_JSON).write_text(json.dumps({"split": split}))


@QUIET
def test_finished_trainings_are_skipped_on_rerun(tmp_path, capsys):
    _logs(tmp_path)
    runs, _, _ = physics.select_runs("smoke", tmp_path)
    root = tmp_path / "o" / "smoke" / "physics"
    plan = physics.plan(runs, "smoke", 9, 2, root)
    t = plan[2]  # asha seed 0
    assert (t.run, t.seed, t.folder) == ("asha", 0, root / "asha" / "seed0")
    assert not physics.finished(t.folder, t.req)
    _finish(t)
    assert physics.finished(t.folder, t.req)
    # the same folder asked for another seed, configuration, epochs, events or split: redo
    other = physics.plan(runs, "smoke", 9, 2, root, max_events=20)[2]
    assert not physics.finished(t.folder, other.req)
    assert not physics.finished(t.folder, {**t.req, "epochs": 3})
    assert not physics.finished(t.folder, {**t.req, "overrides": {"lr": "0.5"}})
    cfg = json.loads((t.folder / physics.CONFIG_JSON).read_text())
    for bad in ({"seed": 1}, {"config": {**cfg["config"], "bin_size": 64}}):
        (t.folder / physics.CONFIG_JSON).write_text(json.dumps({**cfg, **bad}))
        assert not physics.finished(t.folder, t.req)
    _finish(t, split="val")
    assert not physics.finished(t.folder, t.req)
    _finish(t)
    # overrides as the trainer stores them ("32" -> 32, "False" -> false) still match
    assert physics.matches(t.folder, t.req)
    assert physics.main(["--scale", "smoke", "--results", str(tmp_path), "--out",
                         str(tmp_path / "o"), "--dry-run", "--seeds", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [s.startswith("# finished, skipped: ") for s in lines[:-1]] == [
        False, False, True, False, False, False]
    assert "1 finished, 5 to run" in lines[-1]


def test_prepare_keeps_an_interrupted_training_and_clears_a_stale_one(tmp_path):
    req = physics.request("smoke", 9, 0, {"lr": "0.01"}, None)
    t = physics.Training("asha", 0, tmp_path / "asha" / "seed0", ["true"], req)
    _finish(t, config={"lr": 0.01})
    (t.folder / physics.METRICS_JSON).unlink()  # killed mid-training: config, no metrics
    (t.folder / "checkpoint").mkdir()
    (t.folder / "checkpoint" / "checkpoint.pt").write_text("x")
    t.prepare()
    assert (t.folder / "checkpoint" / "checkpoint.pt").exists()  # the trainer resumes it
    stale = physics.Training("asha", 0, t.folder, ["true"], {**req, "seed": 1})
    stale.prepare()
    assert sorted(p.name for p in t.folder.iterdir()) == [physics.REQUEST_JSON]
    assert json.loads((t.folder / physics.REQUEST_JSON).read_text())["seed"] == 1


# A stand-in for mlpf.train: same flags, writes config.json, metrics.json and the learning
# curve in an instant; efficiency 0.8 + 0.01 x seed (+ 0.1 with overrides); fails for
# asha seed 1 when FAIL is in its environment.
FAKE_TRAINER = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    a = sys.argv[1:]
    get = lambda f: a[a.index(f) + 1]
    out, seed, epochs = Path(get("--out")), int(get("--seed")), int(get("--epochs"))
    sets = dict(s.split("=", 1) for s in a[a.index("--set") + 1:]) if "--set" in a else {}
    assert get("--threads") == "1" and get("--eval") == "test"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"config": sets, "scale": get("--scale"),
                                                 "epochs": epochs, "seed": seed}))
    if os.environ.get("FAIL") and out.parent.name == "asha" and seed == 1:
        print("epoch 1: ...")
        print("error: training diverged at epoch 2")
        sys.exit(1)
    e = 0.8 + 0.01 * seed + (0.1 if sets else 0.0)
    cls = {"efficiency": e, "fake_rate": 1 - e, "pt": {"resolution": 0.1},
           "energy": {"resolution": 0.2}}
    block = lambda c: {"accuracy": c["efficiency"], "all": c, "classes": {"photon": c}}
    ref = {**cls, "efficiency": 0.95}
    (out / "metrics.json").write_text(json.dumps({
        "split": "test", "n_events": 20, "final": {"epoch": epochs, "val_loss": 2 - e},
        "mlpf": block(cls), "reference_pf": block(ref)}))
    (out / "learning_curve.csv").write_text(
        "epoch,val_loss\\n" + "".join(f"{i},{3 - e + 1 / i}\\n" for i in range(1, epochs + 1)))
''')


@pytest.fixture
def fake_trainer(tmp_path, monkeypatch):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINER)
    real = physics.train_command
    monkeypatch.setattr(physics, "train_command",
                        lambda *a, **k: [sys.executable, str(script), *real(*a, **k)[3:]])
    return script


@QUIET
def test_main_trains_in_parallel_resumes_and_reports_a_failure(tmp_path, capsys,
                                                               fake_trainer, monkeypatch):
    _logs(tmp_path)
    o = tmp_path / "o"
    args = ["--scale", "smoke", "--results", str(tmp_path), "--out", str(o), "--seeds", "2",
            "--jobs", "2", "--epochs", "3"]
    monkeypatch.setenv("FAIL", "1")
    assert physics.main(args) == 1
    cap = capsys.readouterr()
    err = [s for s in cap.err.splitlines() if s.startswith("error: [")]
    assert len(err) == 1 and "asha seed 1 failed (exit 1)" in err[0]
    assert "training diverged at epoch 2" in err[0]
    progress = [s for s in cap.out.splitlines() if s.startswith("[")]
    assert len(progress) == 5 and all("elapsed" in s and "ETA" in s for s in progress)
    root = o / "smoke" / "physics"
    choice = json.loads((root / physics.CHOICE_JSON).read_text())
    assert choice["best"] == "asha" and list(choice["runs"]) == ["default", "random", "asha"]
    a = choice["runs"]["asha"]
    assert (a["method"], a["search_seed"], a["job_id"], a["final_loss"]) == ("asha", 1, "4",
                                                                             1.2)
    assert (a["epochs"], a["seeds"], a["eval"]) == (3, [0, 1], "test")
    assert a["overrides"] == {"lr": "0.0025123456789", "bin_size": "32", "layernorm": "False"}
    md = (o / "smoke" / "physics.md").read_text()
    assert "asha (best), n=1" in md and "random, n=2" in md  # the failed seed is not counted

    monkeypatch.delenv("FAIL")
    assert physics.main(args) == 0  # only the failed training runs again
    out = capsys.readouterr().out
    assert "1 of 6 trainings to run (5 finished before)" in out
    assert len([s for s in out.splitlines() if s.startswith("[")]) == 1
    assert "asha (best), n=2" in (o / "smoke" / "physics.md").read_text()
    assert {p.name for p in (root / "asha" / "seed1").iterdir()} >= {
        "metrics.json", "config.json", "learning_curve.csv", "train.log", "request.json"}


def _metrics(eff: float, loss: float, split: str = "test") -> dict:
    cls = {"efficiency": eff, "fake_rate": 0.1, "pt": {"resolution": 0.05},
           "energy": {"resolution": None}}
    ref = {**cls, "efficiency": 0.9}
    return {"split": split, "n_events": 100, "final": {"epoch": 2, "val_loss": loss},
            "mlpf": {"accuracy": eff, "all": cls, "classes": {"photon": cls}},
            "reference_pf": {"accuracy": 0.9, "all": ref, "classes": {"photon": ref}}}


def _write_run(root, run, seeds_eff, overrides, epochs=2):
    for k, eff in enumerate(seeds_eff):
        t = physics.Training(run, k, root / run / f"seed{k}", [],
                             physics.request("smoke", epochs, k, overrides, None))
        _finish(t, config=dict(overrides))
        (t.folder / physics.METRICS_JSON).write_text(json.dumps(_metrics(eff, 2.0 - eff)))
        (t.folder / physics.CURVE_CSV).write_text(f"epoch,val_loss\n1,3.0\n2,{2.0 - eff}\n")


def _choice(runs: dict, best: str, seeds=3, epochs=2) -> dict:
    return {"scale": "smoke", "best": best, "runs": {
        r: {"method": r, "search_seed": 0, "job_id": "1", "final_loss": 1.0, "best_loss": 1.0,
            "overrides": o, "epochs": epochs, "seeds": list(range(seeds)), "eval": "test",
            "max_events": None} for r, o in runs.items()}}


def _row(md: str, quantity: str, particles: str) -> list[str]:
    r = next(r for r in md.splitlines()
             if r.startswith(f"| {quantity} ") and f"| {particles} " in r)
    return [c.strip() for c in r.split("|")[1:-1]]


def test_render_mean_and_sd_over_seeds(tmp_path):
    out = tmp_path / "smoke"
    root = out / "physics"
    _write_run(root, "default", [0.80, 0.82, 0.84], {})
    _write_run(root, "asha", [0.90, 0.92, 0.94], {"lr": "0.01"})
    _write_run(root, "random", [0.70], {"lr": "0.02"})
    # never counted: a seed beyond --seeds, a seed of an earlier incumbent, another run
    _write_run(root, "default", [0.80, 0.82, 0.84, 0.1], {})
    _write_run(root / "old", "random", [0.1, 0.1], {"lr": "0.5"})
    shutil.copytree(root / "old" / "random" / "seed1", root / "random" / "seed1")
    _write_run(root, "hyperband", [0.1], {})
    choice = _choice({"default": {}, "random": {"lr": "0.02"}, "asha": {"lr": "0.01"}},
                     "asha")
    (root / physics.CHOICE_JSON).write_text(json.dumps(choice))
    written = physics.render(out)
    assert {p.name for p in written} == {f"physics.{e}" for e in ("md", "tex", "pdf", "png")}
    md = (out / "physics.md").read_text()
    header = _row(md, "quantity", "particles")
    assert header == ["quantity", "particles", "default, n=3", "random, n=1",
                      "asha (best), n=3", "change % asha vs default", "rule-based PF"]
    # efficiency: default 0.82 ± 0.02, asha 0.92 ± 0.02 (sd to 2 digits), change
    # 100 x 0.1 / 0.82 = +12.2, ± 100 x sqrt(0.02^2 / 3 + 0.02^2 / 3) / 0.82 = 2.0
    assert _row(md, "efficiency", "photon")[2:] == ["0.820 ± 0.020", "0.7", "0.920 ± 0.020",
                                                    "+12.2 ± 2.0", "0.9"]
    assert _row(md, "val loss", "final")[2:5] == ["1.180 ± 0.020", "1.3", "1.080 ± 0.020"]
    assert _row(md, "pt resolution", "all")[2:] == ["0.05 ± 0", "0.05", "0.05 ± 0",
                                                    "+0.0 ± 0.0", "0.05"]
    assert _row(md, "energy resolution", "all")[2:] == ["", "", "", "", ""]
    assert "mean ± sample standard deviation" in md and "test split (100 events)" in md
    assert "asha (best): incumbent of asha: search seed 0 trial 1" in md
    assert "previous layout" not in md


def test_stats_and_change():
    m, s, n = physics.stats([1.0, 2.0, 3.0, math.nan])
    assert (m, s, n) == (2.0, 1.0, 3)
    assert physics.stats([5.0])[1] != physics.stats([5.0])[1]  # NaN: no spread from 1 seed
    rel, pm = physics.change((2.0, 1.0, 4), (1.0, 1.0, 4))
    assert rel == -50.0 and pm == pytest.approx(100 * math.sqrt(0.5) / 2)
    assert math.isnan(physics.change((2.0, math.nan, 1), (1.0, 1.0, 4))[1])
    assert physics.cell(0.5, math.nan, 1) == "0.5" and physics.cell(0.5, 0.01, 2) == "0.500 ± 0.010"
    assert physics.cell(0.2771, 0.0012, 3) == "0.2771 ± 0.0012"
    assert physics.cell(0.2771, math.nan, 1, 3) == "0.2771 (n=1)"
    assert physics.clock(125) == "2m05s" and physics.clock(3725) == "1h02m"
    assert physics.eta(10.0, [4.0, 12.0], 3, 2) == pytest.approx((6 + 0 + 30) / 2)


def test_render_previous_layout(tmp_path):
    out = tmp_path / "smoke"
    for run, eff in (("default", 0.8), ("best", 0.9)):
        d = out / "physics" / run
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps(_metrics(eff, 2.0 - eff, split="val")))
    assert physics.render(out)
    md = (out / "physics.md").read_text()
    assert _row(md, "efficiency", "photon")[2:] == ["0.8", "0.9", "+12.5", "0.9"]
    assert "validation split, 1 seed (previous layout)" in md


def test_the_archived_physics_files_still_render(tmp_path):
    archived = ROOT / "paper_figures" / "small" / "archive" / "previous-loss"
    shutil.copytree(archived / "physics", tmp_path / "small" / "physics")
    assert physics.render(tmp_path / "small")
    md = (tmp_path / "small" / "physics.md").read_text()
    assert "previous layout" in md and "Best: hyperband seed 0 trial 28" in md
    assert _row(md, "val loss", "final")[2:5] == ["0.277", "0.269", "-2.9"]
    assert md == (archived / "physics.md").read_text()


def test_the_shipped_physics_table_is_what_its_trainings_render(tmp_path):
    shipped = ROOT / "paper_figures" / "small"
    if not (shipped / "physics.md").exists():
        pytest.skip("no shipped physics table (make physics SCALE=small)")
    shutil.copytree(shipped / "physics", tmp_path / "small" / "physics")
    assert physics.render(tmp_path / "small")
    assert (tmp_path / "small" / "physics.md").read_text() == \
        (shipped / "physics.md").read_text()


def test_render_without_outputs(tmp_path):
    assert physics.render(tmp_path) == []


@pytest.mark.parametrize("bad", [["--seeds", "0"], ["--jobs", "0"], ["--epochs", "-1"],
                                 ["--max-events", "0"], ["--seeds", "x"], ["--scale", "huge"],
                                 ["--methods", "nosuch"]])
@QUIET
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, bad):
    _logs(tmp_path)
    args = ["--scale", "smoke", "--results", str(tmp_path), "--out", str(tmp_path / "o"),
            "--dry-run"]
    assert physics.main(args + bad) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert err.startswith("error: ") and "\n" not in err and cap.out == ""
    assert not (tmp_path / "o").exists()


def test_missing_logs_exit_2(tmp_path, capsys):
    assert physics.main(["--scale", "smoke", "--results", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no HPO logs" in err and "\n" not in err


def test_flatten():
    assert physics.flatten({"a": {"b": 1, "c": [2.0, "x"]}, "d": True, "e": "s"}) == {
        "a.b": 1.0, "a.c.0": 2.0}


@pytest.mark.slow
@QUIET
def test_real_tiny_trainings(tmp_path, capsys):
    if not any(data_dir("smoke", "test").glob("*")):
        pytest.skip("no smoke data (make data SCALE=smoke)")
    _logs(tmp_path)
    o = tmp_path / "o"
    args = ["--scale", "smoke", "--results", str(tmp_path), "--out", str(o), "--epochs", "1",
            "--max-events", "20", "--seeds", "2", "--methods", "random"]
    assert physics.main(args) == 0
    root = o / "smoke" / "physics"
    for run in ("default", "random"):
        for k in range(2):
            m = json.loads((root / run / f"seed{k}" / "metrics.json").read_text())
            assert m["split"] == "test" and m["n_events"] == 20
            assert m["loss"]["total"] > 0  # the loss on the test split itself
    md = (o / "smoke" / "physics.md").read_text()
    assert "default, n=2" in md and "random (best), n=2" in md
    assert "| test loss " in md
    assert physics.main(args) == 0  # nothing left to train
    assert "0 of 4 trainings to run (4 finished before)" in capsys.readouterr().out
