"""A tampered or truncated learning-curve table (issue 27): the reader, the surrogate and the
table builder's merge refuse it in one line (TableError, exit 2) or skip the damaged rows with
a warning naming the line; never a traceback, never a silent wrong curve."""

import fcntl
import json
import os

import pandas as pd
import pytest

from experiments import lctable
from experiments import table as tb
from experiments.surrogate import Surrogate
from experiments.surrogate import main as surrogate_main
from experiments.table import TableError, load_table
from experiments.table import main as table_main
from mlpf.scales import get_scale
from tests.experiments.conftest import tiny_table

N = 24  # sampled configurations of tiny_table (+ the default)


@pytest.fixture
def table(tmp_path):
    return tiny_table(tmp_path / "lctable.csv", n_configs=N)


def _edit(path, config_id, epoch, column, value):
    """Set one cell of replicate 0's row (config_id, epoch); returns its line number."""
    df = pd.read_csv(path, keep_default_na=False)
    i = df.index[(df.config_id == config_id) & (df.replicate == 0) & (df.epoch == epoch)][0]
    df[column] = df[column].astype(object)
    df.loc[i, column] = value
    df.to_csv(path, index=False)
    return i + 2


@pytest.mark.parametrize("column,value", [("val_loss", "abc"), ("epoch_seconds", "abc"),
                                          ("train_loss", "x"), ("epoch", "two")])
def test_text_in_a_numeric_cell_is_a_damaged_row(table, capsys, column, value):
    line = _edit(table, 5, 4, column, value)
    t = load_table(table)
    err = capsys.readouterr().err
    assert f"lctable.csv, line {line}: {column}={value!r} is not" in err, err
    assert 5 not in {e.config_id for e in t.entries} and len(t.entries) == N  # left out
    assert "1 configuration" in err and "left out" in err  # and counted


@pytest.mark.parametrize("column", ["val_loss", "train_loss", "epoch_seconds",
                                    "epoch_cpu_seconds"])
def test_negative_seconds_or_loss_is_a_damaged_row(table, capsys, column):
    if column == "epoch_cpu_seconds":  # the table's clock, when it records one
        df = pd.read_csv(table)
        df[column] = df["epoch_seconds"]
        df.to_csv(table, index=False)
    line = _edit(table, 7, 2, column, -100.0)
    t = load_table(table)
    assert f"line {line}: {column}='-100.0' is outside" in capsys.readouterr().err
    assert 7 not in {e.config_id for e in t.entries}
    assert all(c[2] >= 0 and c[0] >= 0 for e in t.entries for c in e.curve)


def test_ok_row_without_a_loss_and_an_unknown_status_are_damaged_rows(table, capsys):
    _edit(table, 3, 5, "val_loss", "")
    _edit(table, 4, 5, "status", "weird")
    _edit(table, 8, 2, "val_loss", "nan")
    _edit(table, 10, 2, "val_loss", "inf")
    t = load_table(table)
    err = capsys.readouterr().err
    for c in (3, 8, 10):
        assert f"config {c}, replicate 0, epoch {2 if c > 3 else 5}: status ok without a " \
               "finite val_loss" in err, err
    assert "config 4, replicate 0, epoch 5: status 'weird'" in err, err
    assert not {3, 4, 8, 10} & {e.config_id for e in t.entries}


@pytest.mark.parametrize("value", ["abc", -0.01, "inf"])  # lr is log-uniform: > 0
def test_hyperparameter_value_outside_the_space_leaves_the_configuration_out(table, capsys,
                                                                             value):
    df = pd.read_csv(table)
    df["p:lr"] = df["p:lr"].astype(object)
    df.loc[df.config_id == 6, "p:lr"] = value
    df.to_csv(table, index=False)
    t = load_table(table)
    assert "config 6: p:lr=" in capsys.readouterr().err
    assert 6 not in {e.config_id for e in t.entries}
    t.lookup({"lr": 1e-3})  # and the lookup works


@pytest.mark.parametrize("text", [b"[1, 2]", b"{not json", b'{"scale": "sm\xff"}',
                                  b'{"scale": "smoke", "max_t": "abc"}',
                                  b'{"scale": "smoke", "max_t": -3}',
                                  b'{"scale": 5, "max_t": 9}',
                                  b'{"scale": "nope"}',
                                  b'{"scale": "smoke", "max_t": 9, "devices": "x"}'])
def test_tampered_table_json_is_refused_in_one_line(table, capsys, text):
    tb.meta_path(table).write_bytes(text)
    with pytest.raises(TableError, match="lctable.json"):
        load_table(table)
    for main in (table_main, surrogate_main):
        if b"nope" in text:  # --scale names the scale, so max_t is known: no error
            break
        assert main(["--scale", "smoke", "--table", str(table)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err


def test_truncated_table_is_reported_with_counts(table, capsys):
    lines = table.read_text().splitlines()
    table.write_text("\n".join(lines[:-40]) + "\n")  # cut inside a configuration
    meta = json.loads(tb.meta_path(table).read_text())
    tb.meta_path(table).write_text(json.dumps({**meta, "n_configs": N, "status": "complete"}))
    t = load_table(table)
    err = capsys.readouterr().err
    assert t.n_incomplete >= 1
    assert f"{t.n_incomplete} configuration(s) with fewer than max_t = 9 epochs" in err, err
    assert f"lctable.json says complete, {N + 1} configurations planned" in err, err


def test_surrogate_fits_a_table_with_damaged_rows(table, capsys):
    _edit(table, 2, 3, "train_loss", "")  # an ok row without a train loss: NaN in the fit
    _edit(table, 9, 9, "epoch_seconds", -1.0)
    s = Surrogate(load_table(table), n_trees=5)
    entry, _ = s.world(0).replay({"lr": 1e-3})
    assert all(c[2] > 0 for c in entry.curve)
    assert "line" in capsys.readouterr().err


def _shards(tmp_path, monkeypatch, n=2):
    monkeypatch.setenv("EXP_SYNTHETIC", json.dumps({}))
    path = tmp_path / "parts" / "lc.csv"
    kw = dict(n_configs=3, workers=1, trainable="synthetic", progress=False,
              replicates=(1, 1, 0), out=path, checkpoints=tmp_path / "ckpt")
    for i in range(n):
        assert lctable.run("smoke", shard=(i, n), **kw) == 0
    return path, kw


def test_merge_refuses_a_shard_still_being_written(tmp_path, monkeypatch, capsys):
    path, _ = _shards(tmp_path, monkeypatch)
    shard = lctable.shard_path(path, 1, 2)
    fd = os.open(shard, os.O_RDONLY)  # the shard's writer holds this lock while it runs
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        before = shard.read_bytes()
        capsys.readouterr()
        assert lctable.main(["--scale", "smoke", "--out", str(path), "--merge"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "still being written" in err and "\n" not in err
        assert shard.read_bytes() == before and not path.exists()
    finally:
        os.close(fd)
    assert lctable.merge(path) == 2 and not shard.exists()


def test_rerunning_a_shard_after_merge_trains_nothing_again(tmp_path, monkeypatch, capsys):
    path, kw = _shards(tmp_path, monkeypatch)
    assert lctable.merge(path) == 2
    rows = path.read_text()
    capsys.readouterr()
    assert lctable.run("smoke", shard=(0, 2), **kw) == 0
    assert "0 epochs to train" in capsys.readouterr().err
    shard = lctable.shard_path(path, 0, 2)
    assert len(shard.read_text().splitlines()) <= 1  # a header at most: no training
    assert lctable.merge(path) == 1 and path.read_text() == rows


@pytest.mark.slow
def test_a_killed_table_build_leaves_no_worker_training(tmp_path):
    """SIGKILL of the builder (OOM killer, a batch system's hard kill) reaches no handler; its
    pool workers get SIGKILL from the kernel (experiments.procs.die_with) instead of
    training on for nobody and appending rows beside a restarted build."""
    import subprocess

    import psutil

    from mlpf.paths import ROOT
    from tests.experiments.conftest import PY, synthetic_env, wait_lines

    out = tmp_path / "lctable.csv"
    proc = subprocess.Popen([PY, "-m", "experiments.lctable", "--scale", "smoke", "--configs",
                             "8", "--trainable", "synthetic", "--workers", "2", "--out",
                             str(out), "--quiet"], cwd=ROOT, env=synthetic_env(sleep=3.0),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        wait_lines(out, 2, proc, timeout=120)
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2, workers
        proc.kill()
        proc.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=5)  # an epoch lasts 3 s
        assert not alive, alive
    finally:
        for p in workers:
            try:
                p.kill()
            except psutil.Error:
                pass


# ------------------------------------------------------------------ the claim-2 world
def _built(tmp_path, monkeypatch, n_configs=6, replicates=(2, 2, 2)):
    monkeypatch.setenv("EXP_SYNTHETIC", json.dumps({}))
    path = tmp_path / "up" / "lctable.csv"
    assert lctable.run("smoke", n_configs=n_configs, workers=1, out=path, trainable="synthetic",
                       progress=False, replicates=replicates,
                       checkpoints=tmp_path / "ckpt") == 0
    return path


def test_the_world_of_an_unfinished_table_is_its_first_configurations(tmp_path, monkeypatch,
                                                                      capsys):
    path = _built(tmp_path, monkeypatch)
    meta = json.loads(tb.meta_path(path).read_text())
    meta["status"] = "running"  # a table still being built
    tb.meta_path(path).write_text(json.dumps(meta))
    out = tmp_path / "w" / "lctable.csv"
    assert lctable.main(["--scale", "smoke", "--out", str(path), "--world", str(out),
                         "--first", "3"]) == 0
    assert "configurations 0..3 of up/lctable.csv" in capsys.readouterr().err
    w = load_table(out)
    assert sorted(e.config_id for e in w.entries) == [0, 1, 2, 3]
    assert sorted(w.replicates) == [0, 1, 2]  # every replicate of the world kept
    wmeta = json.loads(tb.meta_path(out).read_text())
    assert wmeta["n_configs"] == 3 and wmeta["world"]["first"] == 3
    # the same table gives the same bytes: complete replays on the world stay complete
    before = out.read_bytes()
    assert lctable.write_world(path, out, 3).startswith("claim-2 world")
    assert out.read_bytes() == before
    # a complete table is the world whole, whatever --first says
    meta["status"] = "complete"
    tb.meta_path(path).write_text(json.dumps(meta))
    lctable.write_world(path, out, 3)
    assert len(load_table(out).entries) == 7


def test_the_world_refuses_a_configuration_not_yet_trained(tmp_path, monkeypatch, capsys):
    path = _built(tmp_path, monkeypatch)
    meta = json.loads(tb.meta_path(path).read_text())
    meta["status"] = "running"
    tb.meta_path(path).write_text(json.dumps(meta))
    lines = path.read_text().splitlines()
    cid, rep, ep = (lines[0].split(",").index(c) for c in ("config_id", "replicate", "epoch"))
    max_t = str(get_scale("smoke").max_epochs)
    # configuration 2's first training lost its last epoch: still training
    cut = [x for x in lines if x.split(",")[cid] != "2" or x.split(",")[rep] != "0"
           or x.split(",")[ep] != max_t]
    path.write_text("\n".join(cut) + "\n")
    out = tmp_path / "w" / "lctable.csv"
    assert lctable.main(["--scale", "smoke", "--out", str(path), "--world", str(out),
                         "--first", "3"]) == 2
    err = capsys.readouterr().err
    assert "1 training(s) of configurations 0..3 not done yet (the first: configuration 2, " \
           "replicate 0)" in err and not out.exists()
    assert lctable.main(["--scale", "smoke", "--out", str(path), "--world", str(out),
                         "--first", "1"]) == 0  # the world before it is whole
