"""The table as a benchmark: queries answer from the recorded rows (or a surrogate world), bad
queries are one-line errors, the Syne Tune export reads back with Syne Tune's own loader."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from experiments import logs
from experiments.lcbench import COMPONENTS, COST_SECONDS, Benchmark, QueryError, main
from experiments.table import TableError, load_table
from mlpf.paths import ROOT

from .conftest import tiny_table


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return load_table(tiny_table(tmp_path_factory.mktemp("lcb") / "lc.csv"))


def test_a_query_answers_from_the_nearest_row(table):
    bench = Benchmark(table)
    e = table.entries[5]
    q = bench.query(e.params, 4)
    assert q["table_config"] == e.config_id and q["table_distance"] == 0.0
    assert q["val_loss"] == e.curve[3][0] and q["train_loss"] == e.curve[3][1]
    assert q[COST_SECONDS] == pytest.approx(sum(c[2] for c in e.curve[:4]))
    assert len(repr(q[COST_SECONDS]).split("e")[0].replace(".", "").strip("0")) <= 10
    assert q[logs.VAL_LOSS_REG] == pytest.approx(0.5 * q["val_loss"])
    assert q["val_loss_cls"] == pytest.approx(q["val_loss"] / 28)
    assert set(COMPONENTS) <= set(q) and not q["failed"] and q["reason"] is None
    # missing hyperparameters take the default's values: {} is configuration 0
    assert bench.query({}, 9) == bench.query(bench.default(), 9)
    assert bench.query({}, 9)["table_config"] == 0


def test_a_failed_training_fails_from_its_epoch_on(table):
    bench = Benchmark(table)
    e = next(x for x in table.entries if x.failure)
    assert len(e.curve) == 2  # diverged at epoch 3
    before = bench.query(e.params, 2)
    assert not before["failed"] and before["val_loss"] == e.curve[1][0]
    for epoch in (3, 9):
        q = bench.query(e.params, epoch)
        assert q["failed"] and q["reason"] == "diverged"
        assert q["val_loss"] is None and q["train_loss"] is None
        assert q[COST_SECONDS] == pytest.approx(sum(c[2] for c in e.curve)
                                                + e.failure_seconds)


def test_bad_queries_are_one_line_errors(table):
    bench = Benchmark(table)
    for config, match in [({"nope": 1}, "unknown hyperparameter 'nope'"),
                          ({"lr": 1.0}, "lr=1.0 lies outside the space"),
                          ({"layernorm": 1}, "layernorm=1 lies outside"),
                          ({"batch_size": 17}, "batch_size=17 lies outside"),
                          ({"num_node_messages": 2.5}, "outside"),
                          ([1, 2], "JSON object")]:
        with pytest.raises(QueryError, match=match):
            bench.query(config, 1)
    for epoch in (0, 10, True, 1.5):
        with pytest.raises(QueryError, match="epoch must be an integer from 1 to max_t = 9"):
            bench.query({}, epoch)
    # the default's own values lie outside the space in places, and are accepted
    assert bench.query({"batch_size": 20, "lr_decay_steps": 10000}, 1)["table_config"] == 0


def test_samples_are_seeded_and_in_the_space(table):
    bench = Benchmark(table)
    a, b = bench.sample(6, seed=3), bench.sample(6, seed=3)
    assert a == b and a != bench.sample(6, seed=4)
    for c in a:
        assert bench.check(c) == c  # every hyperparameter, every value in the space


def test_surrogate_worlds_answer_any_configuration(table):
    with pytest.raises(TableError, match="no validation report"):
        Benchmark(table, "surrogate")
    w0 = Benchmark(table, "surrogate", world=0, force=True)
    c = {**table.entries[3].params, "lr": 2.345e-3}
    q = w0.query(c, 9)
    assert q["val_loss"] > 0 and q[COST_SECONDS] > 0 and q["table_distance"] > 0
    assert all(q[k] is None for k in COMPONENTS)  # the surrogate models the losses only
    assert q == Benchmark(table, "surrogate", world=0, force=True).query(c, 9)  # same world


def test_cli_prints_one_json_line_or_one_error_line(table, capsys):
    base = ["--scale", "smoke", "--table", str(table.path)]
    assert main([*base, "--query", '{"dropout": 0.1}', "--epoch", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and json.loads(out[0])["epoch"] == 3
    assert main([*base, "--sample", "2", "--seed", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    for args in (["--query", "{lr", "--epoch", "1"], ["--query", '{"x": 1}', "--epoch", "1"],
                 ["--query", '{"lr": -1}', "--epoch", "1"], ["--query", "{}", "--epoch", "0"],
                 ["--query", "{}"], ["--query", "{}", "--epoch", "1", "--lookup", "surrogate"]):
        assert main([*base, *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), (args, err)


def test_export_without_syne_tune_names_make_peers(table, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "syne_tune", None)
    monkeypatch.setitem(sys.modules, "syne_tune.config_space", None)
    assert main(["--scale", "smoke", "--table", str(table.path),
                 "--export-syne", str(tmp_path / "bb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "make peers" in err[0]


# Syne Tune's loader, run apart: its package imports huggingface_hub and reads parquet with
# fastparquet; where those are missing (make peers installs neither) a stub and pandas'
# default engine stand in, and the loading code itself is Syne Tune's.
LOADER = """
import importlib.util, json, sys, types
import numpy as np, pandas as pd
if importlib.util.find_spec("huggingface_hub") is None:
    sys.modules["huggingface_hub"] = types.SimpleNamespace(snapshot_download=None)
if importlib.util.find_spec("fastparquet") is None:
    read = pd.read_parquet
    pd.read_parquet = lambda path, engine=None, **kw: read(path, **kw)
from syne_tune.blackbox_repository.blackbox_tabular import deserialize
bb = deserialize(sys.argv[1])
b = bb["mlpf_smoke"]
y = np.asarray(b.objectives_evaluations, dtype=float)
one = b.objective_function(b.hyperparameters.iloc[4].to_dict(), fidelity={"epoch": 5}, seed=0)
print(json.dumps({"tasks": list(bb), "shape": list(y.shape), "y": np.where(np.isnan(y), None,
                  y).tolist(), "names": b.objectives_names, "fidelities":
                  [int(f) for f in b.fidelity_values], "space": sorted(b.configuration_space),
                  "fidelity_space": list(b.fidelity_space), "hp": b.hyperparameters.to_dict(
                  "records"), "one": {k: float(v) for k, v in one.items()}}, default=str))
"""


def test_syne_tune_export_reads_back_with_syne_tunes_loader(table, tmp_path, capsys):
    pytest.importorskip("syne_tune")
    if not any(installed(m) for m in ("pyarrow", "fastparquet")):
        pytest.skip("no parquet engine (pyarrow or fastparquet)")
    out = tmp_path / "bb"
    assert main(["--scale", "smoke", "--table", str(table.path), "--export-syne", str(out)]) == 0
    r = subprocess.run([sys.executable, "-c", LOADER, str(out)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    n, t = len(table.entries), table.max_t
    assert got["tasks"] == ["mlpf_smoke"] and got["shape"] == [n, 3, t, 3]  # seeds: default x 3
    assert got["names"] == ["val_loss", "train_loss", "cost_seconds"]
    assert got["fidelities"] == list(range(1, t + 1)) and got["fidelity_space"] == ["epoch"]
    assert got["space"] == sorted(table.names)
    y = np.array(got["y"], dtype=float)  # (configs, seeds, epochs, objectives)
    for i in (0, 1, 4, 10):
        e = table.entries[i]
        assert got["hp"][i]["lr"] == pytest.approx(e.params["lr"])
        curve = np.array(e.curve)
        assert np.allclose(y[i, 0, :, 0], curve[:, 0], rtol=1e-6)
        assert np.allclose(y[i, 0, :, 1], curve[:, 1], rtol=1e-6)
        assert np.allclose(y[i, 0, :, 2], np.cumsum(curve[:, 2]), rtol=1e-6)
    assert got["one"]["val_loss"] == pytest.approx(table.entries[4].curve[4][0], rel=1e-6)
    # seeds: a replicated configuration's replicates, the others repeat replicate 0
    reps = table.replicates[1]
    assert np.allclose(y[1, 1, :, 0], [c[0] for c in reps[1].curve], rtol=1e-6)
    assert np.array_equal(y[1, 2], y[1, 0]) and np.array_equal(y[10, 1], y[10, 0])
    assert np.allclose(y[0, 2, :, 0], [c[0] for c in table.replicates[0][2].curve], rtol=1e-6)
    # a failed training: its epochs before the failure, NaN from the failed epoch on
    i = next(k for k, e in enumerate(table.entries) if e.failure)
    assert np.isfinite(y[i, :, :2]).all() and np.isnan(y[i, :, 2:]).all()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["metric_elapsed_time"] == "cost_seconds" and meta["time_attr"] == "epoch"
    assert meta["config_ids"] == [e.config_id for e in table.entries]


def installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
