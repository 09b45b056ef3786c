"""Searches end to end on the synthetic trainable: logs, budgets, early stopping, failures,
SIGTERM/SIGKILL and resume, CLI errors, MPI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import numpy as np
import pytest

from experiments import logs
from experiments.methods import METHODS, build, settings_for
from experiments.schedulers import asha_rungs, hyperband_brackets
from mlpf.paths import ROOT

from .conftest import PY, cli, load, synthetic_env, wait_lines

SMOKE = settings_for("smoke")  # max_t 9, grace 1, eta 3, budget 81 epochs


def _check_logs(res, lc, meta, method):
    assert tuple(lc.columns) == logs.LC_COLUMNS
    assert not lc.duplicated([logs.JOB_ID, logs.EPOCH]).any()
    assert res.job_id.is_unique
    # every finished trial's epochs are in the learning curves, numbered up to its last epoch
    # (a promoted Hyperband trial continues: its rows start after the previous rung)
    per_job = lc.groupby(logs.JOB_ID)[logs.EPOCH].agg(["min", "max", "count"])
    for _, row in res.iterrows():
        first, last, n = per_job.loc[row.job_id]
        assert n == row["m:epochs"] == last - first + 1
        if "p:hb_rung" not in res.columns:
            assert first == 1
    assert set(res["m:status"]) <= {"ok", "stopped", "failed"}
    assert (lc[logs.T_END] >= lc[logs.T_START]).all()
    for key in ("method", "scale", "seed", "workers", "evaluator", "start_time", "end_time",
                "decision_times", "versions", "git_commit", "host", "method_settings"):
        assert key in meta, key
    assert meta["method"] == method and meta["status"] == "complete"
    assert meta["end_time"] > meta["start_time"]
    assert len(meta["decision_times"]) >= 1


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_within_its_budget(run_search, method):
    out, res, lc, meta = run_search(method)
    _check_logs(res, lc, meta, method)
    epochs = int(res["m:epochs"].sum())
    assert epochs == meta["epochs_trained"] == len(lc)
    if method == "default":
        assert len(res) == 1 and epochs == SMOKE.max_t
        assert not any(c.startswith("p:") for c in res.columns)  # no overrides
        return
    # submits until the budget is spent; trials running then finish (at most 1 per worker)
    assert SMOKE.budget <= epochs <= SMOKE.budget + 2 * SMOKE.max_t
    assert (res["m:budget"] <= SMOKE.max_t).all()


def test_random_trains_every_trial_to_max_t(run_search):
    _, res, _, _ = run_search("random")
    assert (res["m:epochs"] == SMOKE.max_t).all() and (res["m:status"] == "ok").all()


def test_asha_stops_early_at_rungs(run_search):
    _, res, _, _ = run_search("asha", budget=60)
    stopped = res[res["m:status"] == "stopped"]
    assert len(stopped) >= 3  # early stopping happened
    assert set(stopped["m:epochs"]) <= set(asha_rungs(SMOKE.max_t, SMOKE.grace, SMOKE.eta))
    assert (res[res["m:status"] == "ok"]["m:epochs"] == SMOKE.max_t).all()


def test_hyperband_jobs_train_their_rung_budgets(run_search):
    out, res, lc, _ = run_search("hyperband", budget=69)  # one iteration: 9+6+6 + 15+6 + 27
    table = hyperband_brackets(SMOKE.max_t, SMOKE.eta, SMOKE.grace)
    for (b, r), g in res.groupby(["p:hb_bracket", "p:hb_rung"]):
        n_i, r_i = table[b % len(table)][r]
        r_prev = table[b % len(table)][r - 1][1] if r else 0
        if b < len(table):
            assert len(g) == n_i, (b, r)
        # a promotion continues from the checkpoint: only the new epochs are trained
        assert (g["p:budget"] == r_i).all() and (g["m:epochs"] == r_i - r_prev).all()
        first = lc[lc.job_id.isin(g.job_id)].groupby("job_id").epoch.min()
        assert (first == r_prev + 1).all()
    assert set(res["p:hb_bracket"]) >= {0, 1, 2}
    # a trial's curve over its rungs is one curve: epochs 1..r without gaps or repeats
    jobs = res.set_index("job_id")["p:hb_trial"]
    for _, g in lc.assign(trial=lc.job_id.map(jobs)).groupby("trial"):
        assert sorted(g.epoch) == list(range(1, g.epoch.max() + 1))
    assert not (out / "checkpoints").exists()  # removed when the search completed


def test_time_budget_ends_the_search_and_its_trials(run_search):
    # trials of 9 x 0.3 s cannot finish before the 1.5 s deadline: they are cut
    _, res, lc, meta = run_search("random", time_budget=1.5, sleep=0.3)
    assert meta["stopped_by"] == "time"
    assert meta["end_time"] - meta["start_time"] < 1.5 + 1.5  # deadline + one epoch + startup
    cut = res[res["m:reason"] == "time_budget"]
    assert len(cut) == len(res) == 2 and (cut["m:status"] == "stopped").all()
    assert (cut["m:epochs"] < SMOKE.max_t).all()
    assert lc[logs.T_END].max() < 1.5 + 0.3 + 0.2


def test_failures_are_logged_and_the_search_goes_on(run_search):
    # failures are drawn per configuration, and which configurations an asynchronous search
    # tries depends on timing: rates and a budget at which every kind shows (a kind is missed
    # with probability 0.75 ** trials, about 1e-3 at 25 trials)
    _, res, lc, meta = run_search("asha_bo", budget=90, max_failures=0,
                                  fail={"diverge": 0.25, "raise": 0.25, "oom": 0.25})
    failed = res[res["m:status"] == "failed"]
    assert set(failed["m:reason"]) == {"diverged", "error:ValueError", "oom"}
    assert all(str(o).startswith("F_") for o in failed["objective"])
    assert (res["m:status"] != "failed").sum() >= 3
    assert meta["status"] == "complete"
    # a diverged trial logged its NaN epoch before failing
    div = failed[failed["m:reason"] == "diverged"].job_id
    assert lc[lc.job_id.isin(div)][logs.VAL_LOSS].isna().any()


@pytest.mark.parametrize("method", ["asha_bo", "bo"])
def test_bayesian_methods_use_their_model_after_the_initial_points(tmp_path, method):
    from experiments.schedulers import RandomSampler
    from experiments.space import problem_for

    p = problem_for("smoke")
    search = build(method, p, SMOKE, 0, str(tmp_path))
    pts = RandomSampler(p, 1).ask(SMOKE.n_initial_points - 1)
    search.tell([(c, -float(i)) for i, c in enumerate(pts)])
    search.ask(2)
    assert len(search._opt.models) == 0  # still sampling its initial points at random
    search.tell([(RandomSampler(p, 2).ask(1)[0], -5.0)])
    search.ask(2)
    assert len(search._opt.models) >= 1  # a fitted surrogate proposed these points


@pytest.mark.slow
@pytest.mark.parametrize("method,sig", [("asha_bo", signal.SIGTERM),
                                        ("hyperband", signal.SIGKILL)])
def test_interrupt_and_resume(tmp_path, method, sig):
    out = tmp_path / method
    env = synthetic_env(sleep=0.08)
    args = ["--method", method, "--scale", "smoke", "--trainable", "synthetic", "--out",
            str(out), "--quiet"]
    proc = cli(args, env, start_new_session=True)
    wait_lines(out / "results.csv", 6, proc)
    if sig == signal.SIGKILL:  # what a batch system does at the hard limit: the whole job
        os.killpg(proc.pid, sig)
    else:  # SIGTERM to the manager only
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == (143 if sig == signal.SIGTERM else -9), err
    res1, lc1, meta1 = load(out)
    assert "Traceback" not in err
    if sig == signal.SIGTERM:
        assert meta1["status"] == "interrupted"
    else:  # SIGKILL: nothing could be written at the end
        assert meta1["status"] == "running"
    # a killed search leaves whole lines only
    assert lc1.notna()[["job_id", "epoch", "t_end"]].all().all()

    proc = cli([*args, "--resume"], env)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    res, lc, meta = load(out)
    assert meta["status"] == "complete" and len(meta["segments"]) == 2
    assert res.job_id.is_unique and not lc.duplicated(["job_id", "epoch"]).any()
    # finished trials are kept as they were, and none is run again
    old = res1.set_index("job_id")
    new = res.set_index("job_id").loc[old.index]
    assert (new["objective"].astype(str) == old["objective"].astype(str)).all()
    assert res.job_id.max() > lc1.job_id.max()  # new ids continue after the logged ones
    hp = [c for c in res.columns if c.startswith("p:") and c[2:] not in
          ("budget", "hb_bracket", "hb_rung", "hb_trial")]
    fresh = res[~res.job_id.isin(old.index)]
    if method == "hyperband":  # a trial is trained once per rung
        assert not res.duplicated(["p:hb_trial", "p:hb_rung"]).any()
    else:  # no finished configuration is proposed again
        assert not fresh[hp].apply(tuple, axis=1).isin(old[hp].apply(tuple, axis=1)).any()
    assert meta["epochs_trained"] >= settings_for("smoke").budget


@pytest.mark.parametrize("argv,needle", [
    (["--method", "nope", "--scale", "smoke"], "unknown method 'nope'"),
    (["--method", "asha", "--scale", "huge"], "invalid choice: 'huge'"),
    (["--method", "asha", "--scale", "smoke", "--bogus"], "unrecognized arguments: --bogus"),
    (["--method", "asha", "--scale", "smoke", "--evaluator", "dask"], "invalid choice: 'dask'"),
    (["--method", "asha", "--scale", "smoke", "--workers", "0"], "must be >= 1"),
    (["--method", "asha", "--scale", "smoke", "--budget", "-5"], "must be >= 1"),
])
def test_cli_errors_are_one_line(capsys, argv, needle):
    from experiments.search import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and err.startswith("error:")


def test_missing_data_is_one_line_exit_2(tmp_path):
    env = dict(os.environ, MLPF_DATA_DIR=str(tmp_path / "nodata"))
    p = subprocess.run([PY, "-m", "experiments.search", "--method", "asha", "--scale", "smoke",
                        "--out", str(tmp_path / "o")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and "make data SCALE=smoke" in p.stderr
    assert "Traceback" not in p.stderr


def test_existing_logs_need_resume(run_search, capsys):
    from experiments.search import main

    out, *_ = run_search("default")
    argv = ["--method", "default", "--scale", "smoke", "--trainable", "synthetic", "--out",
            str(out)]
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0  # complete: nothing to do
    assert "already complete" in capsys.readouterr().err


@pytest.mark.mpi
def test_mpi_gives_the_same_logs_as_process(tmp_path, run_search):
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(PY))
    if mpiexec is None:
        pytest.skip("no mpiexec next to the Python interpreter")
    out = tmp_path / "mpi"
    env = synthetic_env(sleep=0.01)
    env["MPIR_CVAR_NOLOCAL"] = "1"  # MPICH on one node: see experiments/slurm/README.md
    p = subprocess.run([mpiexec, "-n", "3", PY, "-m", "experiments.search", "--method", "asha",
                        "--scale", "smoke", "--trainable", "synthetic", "--evaluator", "mpi",
                        "--out", str(out), "--quiet"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    res, lc, meta = load(out)
    _check_logs(res, lc, meta, "asha")
    assert meta["evaluator"] == "mpi" and meta["workers"] == 2
    assert set(lc[logs.WORKER]) == {1, 2}  # the worker ranks
    _, pres, plc, _ = run_search("asha")
    assert list(res.columns) == list(pres.columns) and list(lc.columns) == list(plc.columns)
    assert (res["m:status"] == "stopped").any()
    assert np.isfinite(lc[logs.VAL_LOSS]).all()


@pytest.mark.mpi
def test_mpi_ranks_share_the_node_cores_and_devices(tmp_path):
    """Under mpiexec on one node, the 2 workers get local indices 0, 1 and 1 thread each."""
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(PY))
    if mpiexec is None:
        pytest.skip("no mpiexec next to the Python interpreter")
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, sys\n"
        "from experiments import driver\n"
        "from experiments.backends.live import MPIBackend\n"
        "driver.drive = lambda *a, **k: 0\n"
        "plan = driver.plan_search('asha', 'smoke', 0, evaluator='mpi', workers=2, "
        "out=sys.argv[1], trainable='synthetic')\n"
        "driver.run(plan, MPIBackend(), progress=False)\n"
        "from mpi4py import MPI\n"
        "r = MPI.COMM_WORLD.Get_rank()\n"
        "open(os.path.join(sys.argv[2], f'rank{r}'), 'w').write("
        "f\"{r} {os.environ.get('EXP_LOCAL_WORKER')} {os.environ['EXP_THREADS']}\")\n")
    env = dict(os.environ, MPIR_CVAR_NOLOCAL="1", PYTHONPATH=str(ROOT))
    p = subprocess.run([mpiexec, "-n", "3", PY, str(script), str(tmp_path / "o"),
                        str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    rows = sorted((tmp_path / f"rank{r}").read_text().split() for r in range(3))
    cores = len(os.sched_getaffinity(0))
    t = str(max(1, cores // 2))
    assert rows == [["0", "None", t], ["1", "0", t], ["2", "1", t]]


@pytest.mark.parametrize("bad", [["--seed", "4294967296"], ["--seed", "-1"],
                                 ["--max-failures", "-1"]])
def test_out_of_range_flags_are_one_line_errors_before_any_folder(tmp_path, capsys, bad):
    from experiments.search import main

    out = tmp_path / "s"
    argv = ["--method", "random", "--scale", "smoke", "--trainable", "synthetic",
            "--out", str(out), *bad]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and not out.exists()


def test_every_backend_is_what_the_driver_calls():
    """The driver's Backend protocol, met by every backend (the MPI one by its class: making
    one starts MPI)."""
    from experiments.backends.live import LocalBackend, MPIBackend
    from experiments.backends.replay import ReplayBackend
    from experiments.driver import Backend

    assert isinstance(LocalBackend("process"), Backend)
    assert isinstance(ReplayBackend(table=None), Backend)
    members = ("start", "annotate", "evaluator", "finish")
    assert all(callable(getattr(MPIBackend, m, None)) for m in members)
    assert MPIBackend.name == "mpi"
    assert not isinstance(object(), Backend)
