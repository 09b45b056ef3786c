"""Reliability, round two (issue 27): resume, tampered cells, processes, data.

- A resume never drops finished trials without a word: results.csv that lost rows that
  metadata.json counts (cut to its header, deleted, rows removed) is refused in one line; a
  repeated row is reported and dropped; a killed storage server stops the search resumably
  with every trial it reported written.
- A tampered cell (status, job id, a hyperparameter outside the space or of another type, a
  Hyperband schedule key) is reported and its row skipped; tampered metadata, or a folder of
  another trainable, is refused in one line.
- No process outlives its manager (SIGKILL, a second SIGTERM, SIGUSR1), so a resume is never
  refused by leftovers; a stale lock left by older leftovers is taken over; a stop signal
  while the storage server starts is held, not lost.
- Bad data in any file of a split fails the search before its first trial, in one line.

Synthetic trainable, smoke settings.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pandas as pd
import pytest

from mlpf.paths import ROOT

from .conftest import PY, cli, load, synthetic_env, wait_lines

ARGS = ["--scale", "smoke", "--trainable", "synthetic", "--quiet"]


def _search(out, method="asha", extra=(), env=None, timeout=120):
    return subprocess.run([PY, "-m", "experiments.search", "--method", method, *ARGS,
                           "--out", str(out), *extra], cwd=ROOT,
                          env=env or synthetic_env(sleep=0.02), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    """method -> a complete search (budget 30 epochs) marked interrupted with a budget of 90,
    so that a resume restores it and runs more trials; copy it before changing it."""
    made = {}

    def get(method: str):
        if method not in made:
            out = tmp_path_factory.mktemp("searches") / method
            p = _search(out, method, ["--budget", "30"])
            assert p.returncode == 0, p.stderr
            meta = json.loads((out / "metadata.json").read_text())
            meta["status"] = meta["segments"][-1]["status"] = "interrupted"
            meta["budget_epochs"] = 90
            (out / "metadata.json").write_text(json.dumps(meta))
            made[method] = out
        return made[method]

    return get


def _plan(out, method="asha"):
    from experiments.driver import plan_search

    return plan_search(method, "smoke", 0, evaluator="serial", workers=1, out=out,
                       resume=True, trainable="synthetic")


def _resume(out, monkeypatch, method="asha") -> int:
    """Resume in this process (serial evaluator, no sleep): the restore is the same."""
    from experiments.backends.live import open_backend
    from experiments.driver import run

    monkeypatch.setenv("EXP_SYNTHETIC", json.dumps({"sleep": 0.0}))
    return run(_plan(out, method), open_backend("serial"), progress=False)


def _copy(searches, method, tmp_path):
    out = tmp_path / method
    shutil.copytree(searches(method), out)
    return out


def _set_cell(path, row: int, column: str, value: str) -> int:
    """Write ``value`` into ``column`` of data row ``row``; returns that row's job id."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    job = int(df.loc[row, "job_id"])
    df.loc[row, column] = value
    df.to_csv(path, index=False)
    return job


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is dead
    except OSError:
        return True


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return [int(x) for x in out.split()]


def _reap(pids) -> None:
    """Kill what a failing test left behind (processes this test started)."""
    for pid in pids:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------- data loss on resume
@pytest.mark.parametrize("damage", ["header_only", "deleted", "rows_removed"])
def test_a_results_csv_that_lost_trials_is_refused(searches, tmp_path, damage):
    from experiments.driver import PlanError

    out = _copy(searches, "asha", tmp_path)
    lines = (out / "results.csv").read_text().splitlines()
    if damage == "deleted":
        (out / "results.csv").unlink()
    else:
        keep = 1 if damage == "header_only" else len(lines) - 3
        (out / "results.csv").write_text("\n".join(lines[:keep]) + "\n")
    before = {f: (out / f).read_bytes() for f in ("learning_curves.csv", "metadata.json")}
    if damage == "header_only":  # the command: one line, exit 2
        p = _search(out, extra=["--resume"])
        assert p.returncode == 2, p.stderr
        err = p.stderr.strip().splitlines()
        assert len(err) == 1 and "resuming would drop them" in err[0], p.stderr
    else:
        with pytest.raises(PlanError, match="resuming would drop them"):
            _plan(out)
    assert all((out / f).read_bytes() == b for f, b in before.items())  # nothing touched


def test_a_repeated_results_row_is_reported_and_dropped(searches, tmp_path, monkeypatch,
                                                        capsys):
    out = _copy(searches, "asha", tmp_path)
    res0 = pd.read_csv(out / "results.csv")
    lines = (out / "results.csv").read_text().splitlines()
    (out / "results.csv").write_text("\n".join([*lines, lines[2]]) + "\n")
    assert _resume(out, monkeypatch) == 0
    assert f"job_id {res0.job_id[1]}: the job id is logged again" in capsys.readouterr().err
    res = pd.read_csv(out / "results.csv")
    assert res.job_id.is_unique and set(res0.job_id) < set(res.job_id)


def _random_search(out, sleep: float):
    """A random search of 200 epochs on the synthetic trainable (``sleep`` s per epoch), running."""
    return cli(["--method", "random", *ARGS, "--out", str(out), "--budget", "200"],
               synthetic_env(sleep=sleep))

@pytest.mark.slow
def test_a_killed_storage_server_stops_the_search_resumably(tmp_path):
    out = tmp_path / "s"
    proc = _random_search(out, sleep=0.15)
    kids = []
    try:
        wait_lines(out / "results.csv", 2, proc)
        kids = _children(proc.pid)  # the storage server, then the workers
        finished = pd.read_csv(out / "learning_curves.csv").groupby("job_id").epoch.max()
        time.sleep(0.3)  # their outcomes reached the manager
        os.kill(kids[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        _reap([proc.pid, *kids])
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and "storage server" in err, err
    res, _, meta = load(out)
    assert meta["status"] == "interrupted" and meta["n_trials"] == len(res)
    assert set(finished[finished == 9].index) <= set(res.job_id)  # trained before the kill
    p = _search(out, "random", ["--resume", "--budget", "200"], synthetic_env(sleep=0.01))
    assert p.returncode == 0, p.stderr
    assert set(res.job_id) <= set(pd.read_csv(out / "results.csv").job_id)


# ------------------------------------------------------------------- tampered cells
@pytest.mark.parametrize("method,file,column,value", [
    ("asha", "results.csv", "job_status", "WEIRD"),  # was a KeyError
    ("asha", "results.csv", "job_id", "100000000"),  # was a hang: every id reserved
    ("asha", "learning_curves.csv", "job_id", "100000000"),
    ("asha_bo", "results.csv", "p:batch_size", "7"),  # outside the space: the optimiser's
    ("asha_bo", "results.csv", "p:lr", "fast"),  # of another type       ValueError/TypeError
    ("hyperband", "results.csv", "p:budget", "many"),
    ("hyperband", "results.csv", "p:hb_rung", "7"),
])
def test_a_tampered_cell_is_reported_and_its_row_skipped(searches, tmp_path, monkeypatch,
                                                         capsys, method, file, column, value):
    out = _copy(searches, method, tmp_path)
    res0 = pd.read_csv(out / "results.csv")
    job = _set_cell(out / file, 3, column, value)
    assert _resume(out, monkeypatch, method) == 0
    err = capsys.readouterr().err
    assert f"warning: {out / file}" in err and value in err, err
    res = pd.read_csv(out / "results.csv")
    kept = set(res0.job_id) - {job} if file == "results.csv" else set(res0.job_id)
    assert kept <= set(res.job_id) and res.job_id.max() < 1000


@pytest.mark.parametrize("change,needle", [
    (lambda m: m.update(segments="x"), "segments"),
    (lambda m: m["segments"][0].update(start_time="x"), "segments"),
    (lambda m: m.update(budget_epochs="abc"), "budget_epochs"),
    (lambda m: m.update(time_budget_s=[1]), "time_budget_s"),
    (lambda m: m.update(decision_times=5), "decision_times"),
    (lambda m: m.pop("start_time"), "start_time"),
    (lambda m: m.update(trainable="mlpf"), "trainable='mlpf', not 'synthetic'"),
])
def test_tampered_metadata_is_refused(searches, tmp_path, change, needle):
    from experiments.driver import PlanError

    out = _copy(searches, "asha", tmp_path)
    meta = json.loads((out / "metadata.json").read_text())
    change(meta)
    (out / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(PlanError, match=needle.replace("(", ".")) as e:
        _plan(out)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------- processes
def test_no_process_outlives_a_killed_manager(tmp_path):
    out = tmp_path / "s"
    proc = _random_search(out, sleep=0.2)
    kids = []
    try:
        wait_lines(out / "learning_curves.csv", 3, proc)
        kids = _children(proc.pid)
        assert len(kids) >= 3, kids  # the storage server and two workers
        proc.kill()
        proc.communicate(timeout=30)
        t0 = time.time()
        while time.time() - t0 < 5 and not all(map(_gone, kids)):
            time.sleep(0.05)
        assert all(map(_gone, kids)), [k for k in kids if not _gone(k)]
        p = _search(out, "random", ["--resume"])
    finally:
        _reap(kids)
    assert p.returncode == 0, p.stderr  # not "in use by another search"
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["segments"][0]["status"] == "crashed" and meta["status"] == "complete"


@pytest.mark.parametrize("signals", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGUSR1,)])
def test_signals_stop_the_search_cleanly(tmp_path, signals):
    out = tmp_path / "s"
    proc = _random_search(out, sleep=0.2)
    kids = []
    try:
        wait_lines(out / "results.csv", 1, proc)
        kids = _children(proc.pid)
        for s in signals:  # a campaign under `timeout`: the group's and the campaign's
            proc.send_signal(s)
            time.sleep(0.02)
        _, err = proc.communicate(timeout=30)
        time.sleep(0.5)
        alive = [k for k in kids if not _gone(k)]
    finally:
        _reap(kids)
    assert proc.returncode == 143 and "Traceback" not in err, err
    assert not alive
    assert json.loads((out / "metadata.json").read_text())["status"] == "interrupted"


def test_a_stop_signal_while_the_storage_server_starts_is_held_not_lost():
    """The storage server is forked with the stop signals ignored; the manager, told to stop
    meanwhile, gets the signal when the server has started instead of losing it (it then
    ran on until a budget ended it)."""
    import multiprocessing

    from experiments.backends.live import _signals_ignored

    got: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    child = None
    try:
        with _signals_ignored():
            os.kill(os.getpid(), signal.SIGTERM)
            child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
            child.start()
            assert got == []  # held while the server starts
        assert got == [signal.SIGTERM]
        os.kill(child.pid, signal.SIGTERM)  # what a signal to the process group does
        child.join(0.5)
        assert child.is_alive()  # the server ignores it; the manager stops it when done
    finally:
        signal.signal(signal.SIGTERM, old)
        if child is not None:
            child.kill()
            child.join()


def test_a_stale_lock_is_taken_over(searches, tmp_path):
    out = _copy(searches, "asha", tmp_path)
    # leftovers of an older search: a child that inherited the folder lock of a manager
    # that is gone
    holder = subprocess.run(
        [PY, "-c", "import experiments.logs, fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
         "pid = os.fork()\n"
         "if pid == 0:\n    os.setsid(); os.close(1); os.close(2); time.sleep(120); os._exit(0)\n"
         "print(pid)\n", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    orphan = int(holder.stdout)
    try:
        p = _search(out, extra=["--resume"])
    finally:
        _reap([orphan])
    assert p.returncode == 0, p.stderr
    assert f"took over its lock from processes {orphan}" in p.stderr
    assert _gone(orphan)


# ------------------------------------------------------------------- data
def test_bad_data_in_a_later_file_fails_before_any_trial(tmp_path):
    good = sorted((ROOT / "data" / "smoke" / "train").glob("*.pkl.bz2"))[0]
    d = tmp_path / "data"
    for split in ("train", "val"):
        (d / "smoke" / split).mkdir(parents=True)
        shutil.copy(good, d / "smoke" / split / "a.pkl.bz2")
    raw = good.read_bytes()
    (d / "smoke" / "train" / "b.pkl.bz2").write_bytes(raw[: len(raw) // 2])  # cut download
    env = dict(os.environ, MLPF_DATA_DIR=str(d))
    p = subprocess.run([PY, "-m", "experiments.search", "--method", "random", "--scale",
                        "smoke", "--max-failures", "2", "--out", str(tmp_path / "o")], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "unusable train data" in p.stderr and "b.pkl.bz2" in p.stderr
    assert not (tmp_path / "o" / "results.csv").exists()
