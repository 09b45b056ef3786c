"""Faults a cluster and a hostile user cause: nothing finished is lost, no traceback.

Damaged and emptied logs, a signal during the restore, two searches into one folder, a
killed worker, SIGTERM to the whole process group, every trial failing, a full disk, bad
data, unusable folders. Synthetic trainable, smoke settings.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import time

import pandas as pd
import pytest

from mlpf.paths import ROOT

from .conftest import PY, cli, load, synthetic_env, wait_lines

ARGS = ["--scale", "smoke", "--trainable", "synthetic", "--quiet"]


def _search(out, method="asha", extra=(), env=None, **kw):
    env = env or synthetic_env(sleep=0.02)
    return subprocess.run([PY, "-m", "experiments.search", "--method", method, *ARGS,
                           "--out", str(out), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180, **kw)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(x) for x in out.split()]


@pytest.fixture
def finished(tmp_path):
    """A complete asha search (budget 30 epochs) whose metadata is then marked interrupted,
    with a budget of 90 epochs, so that a resume restores it and runs more trials."""
    out = tmp_path / "s"
    p = _search(out, extra=["--budget", "30"])
    assert p.returncode == 0, p.stderr
    meta = json.loads((out / "metadata.json").read_text())
    meta["status"] = meta["segments"][-1]["status"] = "interrupted"
    meta["budget_epochs"] = 90
    (out / "metadata.json").write_text(json.dumps(meta))
    return out


def test_a_damaged_results_row_is_reported_and_the_rest_kept(finished):
    res0 = pd.read_csv(finished / "results.csv")
    lines = (finished / "results.csv").read_text().splitlines()
    lines[3] = lines[3][: len(lines[3]) // 2]  # a row cut in the middle
    lines[5] = "not,a,row"
    (finished / "results.csv").write_text("\n".join(lines) + "\n")
    p = _search(finished, extra=["--resume"])
    assert p.returncode == 0, p.stderr
    assert "results.csv, line 4:" in p.stderr and "results.csv, line 6:" in p.stderr
    assert "Traceback" not in p.stderr
    res = pd.read_csv(finished / "results.csv")
    kept = set(res0.job_id) - {res0.job_id[2], res0.job_id[4]}
    assert kept <= set(res.job_id) and len(res) > len(kept)


def test_an_emptied_results_csv_is_refused_not_dropped(finished):
    (finished / "results.csv").write_text("")
    lc_before = (finished / "learning_curves.csv").read_bytes()
    p = _search(finished, extra=["--resume"])
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "learning_curves.csv records" in err[0]
    assert (finished / "learning_curves.csv").read_bytes() == lc_before  # nothing touched


@pytest.mark.slow
def test_a_signal_during_the_restore_loses_nothing(finished):
    before = pd.read_csv(finished / "results.csv")
    meta = json.loads((finished / "metadata.json").read_text())
    # no attempt may finish before its signal: no epoch budget and no time cap, so that a
    # signal the search lost shows as a search that runs on (a lost one once ended it by the
    # smoke scale's 50 s time cap, exit 0)
    meta["budget_epochs"], meta["time_budget_s"] = 10**6, None
    (finished / "metadata.json").write_text(json.dumps(meta))
    for delay in (0.5, 1.5, 2.5, 3.5):  # before, during and after the restore
        proc = subprocess.Popen([PY, "-m", "experiments.search", "--method", "asha", *ARGS,
                                 "--out", str(finished), "--resume"],
                                cwd=ROOT, env=synthetic_env(sleep=0.05), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"the search ran on 60 s after SIGTERM at {delay} s: signal lost")
        meta = json.loads((finished / "metadata.json").read_text())
        assert proc.returncode in (143, -15), (delay, proc.returncode, err, meta["status"],
                                               meta.get("stopped_by"), meta["segments"])
        assert "Traceback" not in err
        after = pd.read_csv(finished / "results.csv")
        assert set(before.job_id) <= set(after.job_id), delay
        if meta["status"] == "running":  # killed before its handler was set: next one says
            meta["status"] = "interrupted"
            (finished / "metadata.json").write_text(json.dumps(meta))


def test_two_searches_into_one_folder(tmp_path):
    out = tmp_path / "s"
    first = cli(["--method", "random", *ARGS, "--out", str(out)], synthetic_env(sleep=0.2))
    wait_lines(out / "learning_curves.csv", 2, first)
    second = _search(out, method="random", extra=["--resume"])
    assert second.returncode == 2
    assert "in use by another search" in second.stderr and len(second.stderr.splitlines()) == 1
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)
    lc = pd.read_csv(out / "learning_curves.csv")
    assert not lc.duplicated(["job_id", "epoch"]).any()


@pytest.mark.slow
def test_a_killed_worker_fails_its_trial_and_the_search_goes_on(tmp_path):
    out = tmp_path / "s"
    proc = cli(["--method", "random", *ARGS, "--out", str(out), "--budget", "60"],
               synthetic_env(sleep=0.15))
    wait_lines(out / "learning_curves.csv", 3, proc)
    kids = _children(proc.pid)  # the storage server, then the two workers
    assert len(kids) >= 3, kids
    os.kill(kids[-1], signal.SIGKILL)  # what the out-of-memory killer does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    res, lc, meta = load(out)
    died = res[res["m:reason"] == "worker_died"]
    assert len(died) >= 1 and (died["m:status"] == "failed").all()
    assert meta["status"] == "complete" and (res["m:status"] == "ok").sum() >= 2
    for _, r in died.iterrows():  # the epochs it trained before dying are counted
        assert r["m:epochs"] == (lc.job_id == r.job_id).sum()


@pytest.mark.slow
def test_sigterm_to_the_process_group_leaves_a_resumable_search(tmp_path):
    out = tmp_path / "s"
    proc = cli(["--method", "asha", *ARGS, "--out", str(out)], synthetic_env(sleep=0.1),
               start_new_session=True)
    wait_lines(out / "results.csv", 4, proc)
    os.killpg(proc.pid, signal.SIGTERM)  # what Slurm and `timeout` send
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err, err
    res1, _, meta = load(out)
    assert meta["status"] == "interrupted"
    assert "worker_died" not in set(res1["m:reason"].fillna(""))
    p = _search(out, extra=["--resume"])
    assert p.returncode == 0, p.stderr
    res, _, meta = load(out)
    assert set(res1.job_id) <= set(res.job_id) and meta["status"] == "complete"


def test_a_search_whose_trials_all_fail_stops(tmp_path):
    out = tmp_path / "s"
    t0 = time.time()
    p = _search(out, method="random", env=synthetic_env(fail={"raise": 1.0}),
                extra=["--max-failures", "6"])
    assert p.returncode == 1 and time.time() - t0 < 60
    n = re.search(r"(\d+) consecutive trials failed \(last: error:ValueError\)", p.stderr)
    assert n and 6 <= int(n.group(1)) <= 8, p.stderr
    res, _, meta = load(out)
    assert meta["status"] == "failed" and meta["stopped_by"] == "failures"
    assert 6 <= len(res) <= 6 + 2  # the trials running at the sixth failure finish


@pytest.mark.slow
def test_a_full_disk_loses_no_finished_trial(tmp_path):
    out = tmp_path / "s"
    out.mkdir()

    def small_files():  # writes past 5 KiB fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (5 * 1024, resource.RLIM_INFINITY))

    p = _search(out, preexec_fn=small_files)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "cannot write the logs" in p.stderr and "--resume" in p.stderr
    before = pd.read_csv(out / "results.csv")
    p = _search(out, extra=["--resume"])
    assert p.returncode == 0, p.stderr
    after = pd.read_csv(out / "results.csv")
    old = before.set_index("job_id")
    assert (after.set_index("job_id").loc[old.index, "objective"].astype(str)
            == old["objective"].astype(str)).all()


def test_bad_data_fails_before_any_trial(tmp_path):
    d = tmp_path / "data"
    for split in ("train", "val"):
        (d / "smoke" / split).mkdir(parents=True)
        (d / "smoke" / split / "x.pkl.bz2").write_bytes(b"BZh9 not really")
    env = dict(os.environ, MLPF_DATA_DIR=str(d))
    p = subprocess.run([PY, "-m", "experiments.search", "--method", "asha", "--scale",
                        "smoke", "--out", str(tmp_path / "o")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "unusable train data" in p.stderr and not (tmp_path / "o" / "results.csv").exists()


@pytest.mark.parametrize("make,needle", [
    (lambda o: o.write_text("x"), "is not a folder"),
    (lambda o: (o.mkdir(), (o / "results.csv").mkdir()), "is not a regular file"),
    (lambda o: (o.mkdir(), (o / "metadata.json").write_text("{")), "is not valid JSON"),
    (lambda o: (o.mkdir(), (o / "learning_curves.csv").write_text("garbage,header\n1,2\n")),
     "not a log of this format"),
])
def test_unusable_log_folders_are_one_line(tmp_path, make, needle):
    out = tmp_path / "o"
    make(out)
    p = _search(out, extra=["--resume"])
    assert p.returncode == 2 and needle in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
