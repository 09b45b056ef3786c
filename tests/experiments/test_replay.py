"""Replayed searches on hand-made learning-curve tables: the simulated clock, ASHA in
simulated-time order, repeatability, the nearest-configuration lookup, the table runner."""

from __future__ import annotations

import io
import json
import math
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from experiments import lctable, logs
from experiments.schedulers import asha_rungs
from experiments.table import BASE_COLUMNS, TableError, load_table
from mlpf.paths import data_dir

from .conftest import load

MAX_T = 9  # smoke


def write_table(path, configs, scale="smoke", max_t=MAX_T):
    """``configs``: list of (params, losses (one per recorded epoch), seconds per epoch,
    failure reason or None). Config ids are list positions (0 = the default)."""
    names = sorted(configs[0][0])
    base = BASE_COLUMNS[:8]  # the columns before the optional ones (logs.LC_EXTRA)
    assert base[-1] == "reason"
    cols = [*base, *(f"p:{n}" for n in names)]
    lines = [",".join(cols)]
    for cid, (params, losses, secs, failure) in enumerate(configs):
        p = [str(params[n]) for n in names]
        for e, v in enumerate(losses, 1):
            s = secs(e) if callable(secs) else secs
            lines.append(",".join([str(cid), "0", str(e), repr(v), repr(0.9 * v), repr(s), "ok",
                                   "", *p]))
        if failure:
            lines.append(",".join([str(cid), "0", str(len(losses) + 1), "", "", "0.5",
                                   "failed", failure, *p]))
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps({"scale": scale, "max_t": max_t,
                                                     "trainable": "mlpf", "seed": 0}))
    return path


def curve(final, start=2.0, n=MAX_T):
    """A decreasing learning curve from ``start`` to ``final``."""
    return [final + (start - final) / e for e in range(1, n + 1)]


DEFAULT = {"lr": 3e-4, "batch_size": 8, "activation": "elu"}


def replay(tmp_path, table, method, seed=0, budget=None, workers=2, name=None):
    from experiments.search import replay as replay_search

    out = tmp_path / (name or f"{method}-{seed}")
    assert replay_search(method, "smoke", seed, load_table(table), workers, out, budget,
                         progress=False) == 0
    return (out, *load(out))


# ------------------------------------------------------------------------------ the clock
def test_clock_gives_exact_times_on_two_workers(tmp_path):
    # One configuration: every trial replays it; epoch e lasts 0.25 * e s (11.25 s a trial).
    table = write_table(tmp_path / "t.csv", [(DEFAULT, curve(0.5), lambda e: 0.25 * e, None)])
    out, res, lc, meta = replay(tmp_path, table, "random", budget=27)
    # jobs 0, 1 on workers 0, 1 from 0 to 11.25 s; 18 epochs < 27: jobs 2, 3 until 22.5 s
    assert sorted(res.job_id) == [0, 1, 2, 3]
    ends = np.cumsum([0.25 * e for e in range(1, MAX_T + 1)])
    for job in range(4):
        rows = lc[lc.job_id == job].sort_values("epoch")
        t0 = 0.0 if job < 2 else 11.25
        assert list(rows.epoch) == list(range(1, MAX_T + 1))
        assert np.allclose(rows.t_end, t0 + ends) and np.allclose(rows.t_start,
                                                                 t0 + ends - rows.epoch_seconds)
        assert set(rows.worker) == {job % 2}
        r = res[res.job_id == job].iloc[0]
        assert (r["m:trial_start"], r["m:trial_end"]) == (t0, t0 + 11.25)
        assert (r["m:timestamp_submit"], r["m:timestamp_gather"]) == (t0, t0 + 11.25)
    assert meta["start_time"] == 0.0 and meta["end_time"] == 22.5
    assert meta["backend"] == "replay" and meta["evaluator"] == "replay"
    assert meta["replay"]["sha256"] and meta["replay"]["heldout_error"]["n_configs"] == 1
    assert meta["epochs_trained"] == 36 and lc.epoch_seconds.sum() == 45.0
    assert tuple(lc.columns) == logs.LC_COLUMNS
    assert (res["m:table_config"] == 0).all() and (res["m:table_distance"] >= 0).all()


def test_time_budget_is_a_simulated_deadline(tmp_path):
    from experiments.search import replay as replay_search

    table = write_table(tmp_path / "t.csv", [(DEFAULT, curve(0.5), 1.0, None)])
    assert replay_search("random", "smoke", 0, load_table(table), 2, tmp_path / "d",
                         time_budget=4.5, progress=False) == 0
    res, lc, meta = load(tmp_path / "d")
    # both trials stop after the epoch running at 4.5 s; nothing is submitted after it
    assert list(res["m:reason"]) == ["time_budget"] * 2 and list(res["m:epochs"]) == [5, 5]
    assert meta["stopped_by"] == "time" and meta["end_time"] == 5.0
    assert meta["time_budget_s"] == 4.5


def _table_of_six(tmp_path):
    # Final losses and epoch lengths differ, so that ASHA promotions depend on the order.
    cfgs = [(DEFAULT, curve(0.5), 1.0, None)]
    for i, (lr, bs, act) in enumerate([(1e-3, 4, "elu"), (1e-2, 16, "relu"), (3e-3, 8, "gelu"),
                                       (2e-4, 12, "elu"), (2e-2, 4, "relu")]):
        cfgs.append(({"lr": lr, "batch_size": bs, "activation": act},
                     curve(0.2 + 0.15 * i, start=1.0 + 0.3 * i), 0.5 * (1 + i % 3), None))
    return write_table(tmp_path / "six.csv", cfgs)


class RayBracket:
    """An independent reimplementation of Ray Tune's ``AsyncHyperBandScheduler`` bracket
    (``ray.tune.schedulers.async_hyperband._Bracket.on_result``): rungs checked from the
    highest milestone down; at the first milestone the trial reached and has no value at,
    it stops if its reward is below the ``(1 - 1/rf)`` percentile of the rewards recorded
    there before it; then its reward is recorded."""

    def __init__(self, min_t, max_t, rf):
        n = int(np.log(max_t / min_t) / np.log(rf) + 1)
        self.rf = rf
        self.rungs = [(min_t * rf**k, {}) for k in reversed(range(n))]

    def on_result(self, trial, t, reward) -> bool:
        """True: continue."""
        for milestone, recorded in self.rungs:
            if t < milestone or trial in recorded:
                continue
            go = not recorded or not reward < np.percentile(list(recorded.values()),
                                                            (1 - 1 / self.rf) * 100)
            recorded[trial] = reward
            return go
        return True


def _deephyper_continues(value, rung_values, eta):
    """DeepHyper's SuccessiveHalvingStopper: among the best max(1, n // eta) of the rung's
    values (its own included)."""
    k = max(1, len(rung_values) // eta)
    return value + 1e-10 >= sorted(rung_values)[-k]


@pytest.mark.parametrize("method", ["asha", "asha_deephyper", "asha_gp", "asha_tpe"])
def test_asha_decisions_follow_their_rule_one_by_one(tmp_path, method):
    table = _table_of_six(tmp_path)
    out, res, lc, meta = replay(tmp_path, table, method, budget=60)
    rungs = asha_rungs(MAX_T, 1, 3)  # [1, 3]
    stopped = res[res["m:status"] == "stopped"]
    # how many stop depends on what the method proposes; random proposals stop 3 or more
    assert len(stopped) >= (3 if method in ("asha", "asha_deephyper") else 1)
    assert set(stopped["m:epochs"]) <= set(rungs)
    assert (res.loc[res["m:status"] == "ok", "m:epochs"] == MAX_T).all()
    # rows are written in event order: by epoch end, ties by job id
    order = lc[["t_end", "job_id"]].to_records(index=False).tolist()
    assert order == sorted(order)
    # every rung arrival, in that order, decided as the rule decides it
    ray, seen, decisions = RayBracket(1, MAX_T, 3), {r: [] for r in rungs}, 0
    last = lc.groupby("job_id").epoch.max()
    for _, row in lc.iterrows():
        if row.epoch not in seen:
            continue
        seen[row.epoch].append(-row.val_loss)
        if method != "asha_deephyper":  # Ray Tune's cutoff
            go = ray.on_result(row.job_id, row.epoch, -row.val_loss)
        else:
            go = _deephyper_continues(-row.val_loss, seen[row.epoch], 3)
        assert (last[row.job_id] > row.epoch) == go, (row.job_id, row.epoch)
        decisions += 1
    assert decisions >= 10
    assert meta["method_settings"]["rule"] == ("deephyper" if method == "asha_deephyper"
                                               else "ray")
    # compute = recorded epoch seconds; each worker runs one epoch at a time, back to back
    assert math.isclose(lc.epoch_seconds.sum(), (lc.t_end - lc.t_start).sum())
    for _, g in lc.sort_values("t_start").groupby("worker"):
        assert (g.t_start.to_numpy()[1:] >= g.t_end.to_numpy()[:-1] - 1e-9).all()
    assert math.isclose(meta["end_time"], lc.t_end.max())


def test_the_two_asha_rules_differ_where_expected():
    from experiments.schedulers import ray_continues

    # 4 earlier values at a rung, eta 3: Ray's cutoff is their 66.7th percentile (3.0),
    # DeepHyper keeps the best max(1, 5 // 3) = 1 of the 5 values, its own included
    earlier = [1.0, 2.0, 3.0, 4.0]
    assert ray_continues(3.5, earlier, 3) and not _deephyper_continues(3.5, earlier + [3.5], 3)
    assert not ray_continues(2.5, earlier, 3)
    assert ray_continues(-1.0, [], 3)  # the first arrival always continues


@pytest.mark.parametrize("method", ["asha", "hyperband", "asha_bo"])
def test_same_seed_gives_identical_logs(tmp_path, method):
    table = _table_of_six(tmp_path)
    a = replay(tmp_path, table, method, seed=1, budget=40, name="a")[0]
    b = replay(tmp_path, table, method, seed=1, budget=40, name="b")[0]
    c = replay(tmp_path, table, method, seed=2, budget=40, name="c")[0]
    for f in (logs.RESULTS_CSV, logs.LEARNING_CURVES_CSV):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert (a / logs.RESULTS_CSV).read_bytes() != (c / logs.RESULTS_CSV).read_bytes()


def test_hyperband_promotions_continue_their_curves(tmp_path):
    table = _table_of_six(tmp_path)
    _, res, lc, _ = replay(tmp_path, table, "hyperband", budget=69)
    for trial, g in res.groupby("p:hb_trial"):
        rows = lc[lc.job_id.isin(g.job_id)]
        assert sorted(rows.epoch) == list(range(1, int(g["p:budget"].max()) + 1)), trial


def test_failed_recorded_training_fails_the_trial(tmp_path):
    table = write_table(tmp_path / "f.csv", [(DEFAULT, curve(0.5, n=3), 1.0, "diverged")])
    _, res, lc, meta = replay(tmp_path, table, "default")
    r = res.iloc[0]
    assert r.objective == "F_diverged" and r["m:status"] == "failed" and r["m:epochs"] == 3
    assert list(lc.epoch) == [1, 2, 3] and r["m:trial_end"] == 3.5  # + the failing epoch
    assert meta["end_time"] == 3.5


# ------------------------------------------------------------------------------ the table
def test_nearest_lookup_uses_log_grid_and_categorical_distances(tmp_path):
    cfgs = [(DEFAULT, curve(0.5), 1.0, None),
            ({"lr": 1e-3, "batch_size": 4, "activation": "elu"}, curve(0.4), 1.0, None),
            ({"lr": 1e-2, "batch_size": 4, "activation": "elu"}, curve(0.3), 1.0, None),
            ({"lr": 1e-3, "batch_size": 16, "activation": "relu"}, curve(0.2, n=4), 1.0, "oom")]
    t = load_table(write_table(tmp_path / "t.csv", cfgs))
    assert t.scale == "smoke" and t.max_t == MAX_T and len(t.entries) == 4
    # lr 4e-3 is nearer 1e-3 on a linear scale but nearer 1e-2 on the log scale
    assert t.lookup({"lr": 4e-3, "batch_size": 4, "activation": "elu"}).entry.config_id == 2
    assert t.lookup({"lr": 1e-3, "batch_size": 12, "activation": "relu"}).entry.config_id == 3
    assert t.lookup({"lr": 1e-3, "batch_size": 4, "activation": "gelu"}).entry.config_id == 1
    m = t.lookup({})  # missing keys: the default's values
    assert m.entry.config_id == 0 and m.distance == 0.0
    assert t.lookup({"lr": 1e-3, "batch_size": 4, "activation": "elu", "budget": 3,
                     "hb_trial": 7}).distance == 0.0  # schedule keys are not hyperparameters
    c = t.curve({"lr": 1e-3, "batch_size": 16, "activation": "relu"})
    assert len(c) == 4 and c[-1] == (0.2 + 1.8 / 4, 0.9 * (0.2 + 1.8 / 4), 1.0)
    assert t.failure(cfgs[3][0]) == "oom" and t.failure(cfgs[1][0]) is None
    assert len(t.curve({})) == MAX_T


def test_heldout_error_is_leave_one_out(tmp_path):
    # two pairs of identical configurations: each is predicted exactly by its twin
    a, b = {"lr": 1e-3, "batch_size": 4, "activation": "elu"}, \
        {"lr": 1e-2, "batch_size": 16, "activation": "relu"}
    cfgs = [(DEFAULT, curve(0.5), 1.0, None), (DEFAULT, curve(0.5), 1.0, None),
            (a, curve(0.3), 1.0, None), (a, curve(0.3), 1.0, None), (b, curve(0.2), 1.0, None),
            (b, curve(0.2), 1.0, None)]
    h = load_table(write_table(tmp_path / "t.csv", cfgs)).heldout_error()
    assert h["final_mae"] == 0.0 and h["epoch_mae"] == 0.0 and h["final_spearman"] == 1.0
    assert h["failure_agreement"] == 1.0 and h["n_final"] == 6
    # the mean curve of the other five misses config 0 by |mean(0.5, .3, .3, .2, .2) - .5|
    assert h["baseline_final_mae"] > 0
    # one configuration alone: predicted by a different one
    cfgs[1] = (a, curve(0.35), 1.0, None)
    h = load_table(write_table(tmp_path / "t.csv", cfgs)).heldout_error()
    assert h["final_mae"] > 0
    # a diverged twin (1e24 losses) swamps the mean per-epoch error, not its median
    cfgs[1] = (DEFAULT, curve(0.5), 1.0, None)
    cfgs[5] = (b, [1e24] * MAX_T, 1.0, None)
    h = load_table(write_table(tmp_path / "t.csv", cfgs)).heldout_error()
    assert h["epoch_mae"] > 1e22 and h["epoch_median_ae"] == 0.0


def test_incomplete_configurations_are_left_out(tmp_path):
    cfgs = [(DEFAULT, curve(0.5), 1.0, None), (DEFAULT | {"lr": 1e-2}, curve(0.3, n=5), 1.0,
                                                None)]
    t = load_table(write_table(tmp_path / "t.csv", cfgs))
    assert [e.config_id for e in t.entries] == [0] and t.n_incomplete == 1


def test_missing_table_is_one_line_and_exit_2(tmp_path, capsys):
    from experiments.search import main as search_main
    from experiments.table import main as table_main

    with pytest.raises(TableError, match="make lctable SCALE=smoke"):
        load_table(tmp_path / "smoke" / "lctable.csv")
    assert search_main(["--method", "asha", "--scale", "smoke", "--backend", "replay",
                        "--table", str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no learning-curve table at ")
    assert "make lctable SCALE=smoke" in err[0]
    assert table_main(["--scale", "smoke", "--check", "--table", str(tmp_path / "x.csv")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_search_cli_and_campaign_skip_complete_searches(tmp_path, capsys):
    from experiments.campaign import main as campaign_main
    from experiments.search import main as search_main
    from experiments.table import main as table_main

    table = str(_table_of_six(tmp_path))
    out = tmp_path / "cli"
    args = ["--method", "asha", "--scale", "smoke", "--backend", "replay", "--table", table,
            "--out", str(out), "--budget", "30", "--quiet"]
    assert search_main(args) == 0
    assert json.loads((out / "metadata.json").read_text())["status"] == "complete"
    assert search_main(args) == 2  # logs there, no --resume
    assert search_main([*args, "--resume"]) == 0
    assert "already complete" in capsys.readouterr().err
    camp = ["--backend", "replay", "--scale", "smoke", "--table", table, "--methods",
            "default random", "--seeds", "0 1", "--out", str(tmp_path / "camp"),
            "--processes", "1", "--budget", "20"]
    assert campaign_main(camp) == 0
    assert campaign_main(camp) == 0
    assert capsys.readouterr().err.count("skipped (complete)") == 4
    # another budget is another design: random's searches run again, the default's stay
    assert campaign_main([*camp[:-1], "25"]) == 0
    assert capsys.readouterr().err.count("skipped (complete)") == 2
    meta = json.loads((tmp_path / "camp" / "random" / "seed1" / "metadata.json").read_text())
    assert meta["method_settings"]["settings"]["budget"] == 25
    md = out / "metadata.json"  # a search of other fidelities is never resumed
    meta = json.loads(md.read_text())
    meta["method_settings"]["settings"]["max_t"] = 27
    md.write_text(json.dumps(meta))
    assert search_main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds a search of other fidelities (max_t 27, not 9)" in err
    assert table_main(["--scale", "smoke", "--table", table, "--check"]) == 0
    assert "leave-one-out" in capsys.readouterr().out


# ------------------------------------------------------------------------------ lctable
def test_lctable_default_checkpoints_belong_to_one_table(tmp_path, monkeypatch):
    """Two tables at different paths never share training states: a stale checkpoint left by
    one (here a synthetic training that slept 3 s per epoch) is not resumed by the other."""
    import mlpf.paths

    monkeypatch.setattr(mlpf.paths, "ROOT", tmp_path)
    a, b = tmp_path / "a" / "lc.csv", tmp_path / "b" / "lc.csv"
    root_a = lctable.checkpoint_root(a, "smoke", 0)
    assert root_a != lctable.checkpoint_root(b, "smoke", 0)
    assert root_a == lctable.checkpoint_root(tmp_path / "b" / ".." / "a" / "lc.csv", "smoke", 0)
    assert root_a.parent == tmp_path / "runs" and root_a.name.startswith("lctable-smoke-seed0-")
    stale = lctable.checkpoint_root(b, "smoke", 0) / "config0"
    stale.mkdir(parents=True)
    hist = [{"epoch": e, "val_loss": 9.0, "train_loss": 9.0, "epoch_seconds": 3.0,
             "epoch_cpu_seconds": 3.0} for e in (1, 2)]
    (stale / "synthetic.json").write_text(json.dumps({"history": hist}))
    monkeypatch.setenv("EXP_SYNTHETIC", json.dumps({}))
    assert lctable.run("smoke", n_configs=0, workers=1, out=a, trainable="synthetic",
                       progress=False, replicates=(1, 1, 0)) == 0
    rows = pd.read_csv(a)
    assert len(rows) > 2 and rows["epoch_cpu_seconds"].max() < 1.0
    assert (rows["val_loss"] != 9.0).all()


def test_lctable_resumes_without_duplicate_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("EXP_SYNTHETIC", json.dumps({"fail": {"diverge": 0.3}}))
    path, ckpt = tmp_path / "lc.csv", tmp_path / "ckpt"
    kw = dict(n_configs=4, workers=2, out=path, trainable="synthetic", checkpoints=ckpt,
              progress=False)
    assert lctable.run("smoke", **kw) == 0
    full = pd.read_csv(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["status"] == "complete" and meta["scale"] == "smoke" and meta["seed"] == 0
    seg = meta["segments"][-1]  # where and beside what load the trainings ran
    assert seg["cpu_model"] == meta["machine"]["cpu_model"] and len(seg["load_end"]) == 3
    assert set(full.config_id) == {0, 1, 2, 3, 4} and set(full.replicate) == {0}
    assert not full.duplicated(["config_id", "epoch"]).any()
    default = full[full.config_id == 0].iloc[0]
    assert default["p:lr"] == 1e-3 and default["p:batch_size"] == 20  # resolved defaults
    ok = [c for c, g in full.groupby("config_id") if (g.status == "ok").all()]
    assert len(ok) >= 2
    for c, g in full.groupby("config_id"):
        if c not in ok:  # a failed training: ok epochs 1..k-1, then one failed row at k
            assert g.status.iloc[-1] == "failed" and g.reason.iloc[-1] == "diverged"
    # interrupt: config a keeps epochs 1-4 (its checkpoint has 6), config b keeps nothing
    a, b = ok[0], ok[1]
    cut = full[~((full.config_id == a) & (full.epoch > 4)) & (full.config_id != b)]
    cut.to_csv(path, index=False, float_format="%.17g")
    from experiments.trainables import SyntheticTrainable

    hist = SyntheticTrainable().train("smoke", {}, 6, lambda m: False)  # any 6-epoch state
    (ckpt / f"config{a}").mkdir(parents=True)
    (ckpt / f"config{a}" / "synthetic.json").write_text(json.dumps({"history": hist}))
    assert lctable.run("smoke", **kw) == 0
    again = pd.read_csv(path)
    assert not again.duplicated(["config_id", "epoch"]).any()
    assert len(again) == len(full)
    g = again[again.config_id == a].set_index("epoch")
    assert list(sorted(g.index)) == list(range(1, MAX_T + 1))
    # complete: a rerun trains nothing and leaves the table and its metadata as they are
    before = (path.read_bytes(), path.with_suffix(".json").read_bytes())
    assert lctable.run("smoke", **kw) == 0
    assert (path.read_bytes(), path.with_suffix(".json").read_bytes()) == before
    # from the checkpoint's history, as the table records it
    assert g.loc[5, "val_loss"] == lctable.rounded("val_loss", hist[4]["val_loss"])
    assert not (ckpt / f"config{a}").exists()
    # other seed -> other configurations: refused
    with pytest.raises(ValueError, match="seed"):
        lctable.run("smoke", **{**kw, "n_configs": 4}, seed=1)
    t = load_table(path)
    assert len(t.entries) == 5 and t.meta["trainable"] == "synthetic"
    fd = lctable._lock(path)  # a run in progress: a second one is refused
    try:
        with pytest.raises(ValueError, match="another lctable run"):
            lctable.run("smoke", **kw)
    finally:
        os.close(fd)


def test_lctable_rounds_its_cells_and_compacts_an_older_table(tmp_path):
    """Losses are kept to 7 significant digits and seconds to 0.1 ms: a table begun with
    full-precision cells is rewritten so on resume, its keys, hyperparameters, other cells
    and a line cut by a kill left as they were; a second pass changes nothing."""
    assert lctable.rounded("val_loss", 10.56299978309209) == 10.563
    assert lctable.rounded("val_loss_pt", 0.020314290290819728) == 0.02031429
    assert lctable.rounded("epoch_cpu_seconds", 3.2352402720000004) == 3.2352
    # a tiny model's epoch keeps its order of magnitude instead of reading as 0 s
    assert lctable.rounded("epoch_seconds", 3.4567e-05) == 3.5e-05
    assert lctable.rounded("epoch_seconds", 0.0) == 0.0
    assert lctable.rounded("p:lr", 0.00031622776601683794) == 0.00031622776601683794
    assert lctable.rounded("val_loss", "") == "" and lctable.rounded("val_loss", "inf") == "inf"
    path = tmp_path / "lc.csv"
    kw = dict(n_configs=2, workers=1, out=path, trainable="synthetic",
              checkpoints=tmp_path / "ckpt", progress=False)
    assert lctable.run("smoke", **kw) == 0
    from experiments.table import data_card

    assert json.loads(path.with_suffix(".json").read_text())["precision"] == {
        "loss_digits": 7, "seconds_decimals": 4, "seconds_tiny_digits": 2}
    assert ("| precision | losses to 7 significant digits, seconds to 4 decimals (a time that "
            "would round to 0: 2 significant digits) |") in \
        data_card(load_table(path))
    made = pd.read_csv(path, dtype=str, keep_default_na=False)
    floats = [c for c in lctable.LOSS_COLUMNS + lctable.SECONDS_COLUMNS
              if c in made.columns and (made[c] != "").any()]
    assert {"val_loss", "epoch_seconds"} <= set(floats)
    digits = made[floats].map(lambda c: len(c.replace(".", "").replace("-", "").lstrip("0")
                                            .split("e")[0]))
    assert int(digits.max().max()) <= lctable.LOSS_DIGITS + 2  # e.g. 12.34567 s -> 1234567
    # the same table as an older version wrote it: every cell a float's full repr
    old = made.copy()
    noise = 1 + 1e-9 * np.arange(1, len(old) + 1)
    for c in floats:
        ok = old[c] != ""
        old.loc[ok, c] = [repr(float(v) * float(k)) for v, k in zip(old.loc[ok, c], noise[ok])]
    text = old.to_csv(index=False)
    cut = text.rsplit("\n", 2)[-2][:25]  # a line cut by a kill
    path.write_text(text + cut)
    assert lctable.compact(path) == len(old)
    lines = path.read_text().split("\n")
    assert lines[-1] == cut and len(lines) == len(made) + 2
    again = pd.read_csv(io.StringIO("\n".join(lines[:-1]) + "\n"), dtype=str,
                        keep_default_na=False)
    assert again.drop(columns=floats).equals(made.drop(columns=floats))
    for c in floats:
        a, b = pd.to_numeric(again[c]), pd.to_numeric(made[c])
        assert np.allclose(a, b, rtol=1e-6, atol=1e-4, equal_nan=True), c
    assert lctable.compact(path) == 0
    path.write_text(text)  # resuming compacts it, then finds the table complete
    assert lctable.run("smoke", **kw) == 0
    assert lctable.compact(path) == 0
    assert len(pd.read_csv(path)) == len(made)


def test_lctable_replicates_and_shards_merge_into_one_table(tmp_path, monkeypatch):
    monkeypatch.setenv("EXP_SYNTHETIC", json.dumps({}))
    kw = dict(n_configs=3, workers=1, trainable="synthetic", progress=False,
              replicates=(3, 2, 2))  # default x 3 seeds, configurations 1 and 2 x 2 seeds
    whole = tmp_path / "whole" / "lc.csv"
    assert lctable.run("smoke", out=whole, checkpoints=tmp_path / "c1", **kw) == 0
    parts = tmp_path / "parts" / "lc.csv"
    for i in range(3):
        assert lctable.run("smoke", out=parts, checkpoints=tmp_path / "c2", shard=(i, 3),
                           **kw) == 0
    assert lctable.merge(parts) == 3 and not list(parts.parent.glob("*.shard*"))
    a, b = pd.read_csv(whole), pd.read_csv(parts)
    keys = ["config_id", "replicate", "epoch"]
    assert len(a) == len(b) == (4 + 2 + 2) * MAX_T and not b.duplicated(keys).any()
    assert list(b[keys].itertuples(index=False)) == sorted(b[keys].itertuples(index=False))
    a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
    measured = ["epoch_seconds", "epoch_cpu_seconds"]  # clocks, not results
    pd.testing.assert_frame_equal(a.drop(columns=measured), b.drop(columns=measured))
    t = load_table(parts)
    assert len(t.entries) == 4 and sorted(t.replicates) == [0, 1, 2]
    assert len(t.replicates[0]) == 3 and len(t.replicates[1]) == 2
    finals = [e.curve[-1][0] for e in t.replicates[0]]
    assert len(set(finals)) == 3  # other training seeds, other losses
    assert t.seed_noise() is not None and t.seed_noise() > 0
    for epoch in (1, 2, MAX_T):  # the median over configurations of the SD over seeds
        sds = [np.std([e.curve[epoch - 1][0] for e in reps], ddof=1)
               for reps in t.replicates.values()]
        assert t.seed_noise(epoch) == pytest.approx(np.median(sds))
    assert t.seed_noise(MAX_T) == t.seed_noise()
    with pytest.raises(ValueError, match="outside"):
        t.seed_noise(MAX_T + 1)
    from experiments.table import data_card

    row = next(r for r in data_card(t).splitlines() if r.startswith("| seed noise by epoch"))
    assert row.startswith("| seed noise by epoch (1, 2, 4, 8, 9) | ") and row.count(" / ") == 4
    assert row.split(" | ")[1].split(" / ")[0] == f"{t.seed_noise(1):.4g}"
    assert t.summary()["n_replicated"] == 3
    # every training, in CPU seconds where recorded (the table's clock), else wall seconds
    cpu = b.epoch_cpu_seconds.where(b.epoch_cpu_seconds > 0, b.epoch_seconds)
    assert t.core_hours() == pytest.approx(cpu.sum() / 3600)


def test_shard_arguments():
    assert lctable.parse_shard("1/4") == (1, 4) and lctable.parse_shard(None) is None
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError):
            lctable.parse_shard(bad)


@pytest.mark.parametrize("sampler", ["sobol", "random"])
def test_lctable_samples_a_prefix_of_larger_draws(sampler):
    a = lctable.sample_configs("smoke", 3, 5, sampler)
    b = lctable.sample_configs("smoke", 6, 5, sampler)
    assert a[0] == {} and a == b[:4] and len(b) == 7
    assert lctable.sample_configs("smoke", 3, 6, sampler) != a  # another seed, other points


def test_sobol_design_covers_every_value_evenly():
    from experiments.space import problem_for, sobol_configs

    configs = sobol_configs("small", 256, 0)
    problem = problem_for("small")
    assert all(set(c) == set(problem.hyperparameter_names) for c in configs)
    for hp in problem.space.values():
        values = [c[hp.name] for c in configs]
        grid = getattr(hp, "sequence", None) or getattr(hp, "choices", None)
        if grid is not None and len(grid) <= 8:  # each value about 256 / k times
            counts = pd.Series(values).value_counts()
            assert len(counts) == len(grid) and counts.max() - counts.min() <= 3, hp.name
        elif grid is None:
            assert hp.lower <= min(values) and max(values) <= hp.upper, hp.name
    lr = np.log([c["lr"] for c in configs])  # log-uniform: a quarter in each quarter
    edges = np.quantile(np.log([1e-4, 3e-2]), [0, 0.25, 0.5, 0.75, 1])
    assert all(abs(n - 64) <= 2 for n in np.histogram(lr, edges)[0])


@pytest.mark.slow
def test_lctable_trains_real_smoke_configurations(tmp_path):
    if not data_dir("smoke", "train").is_dir():
        pytest.skip("no smoke data (make data SCALE=smoke)")
    path = tmp_path / "lc.csv"
    assert lctable.run("smoke", 1, workers=2, out=path, checkpoints=tmp_path / "ck",
                       progress=False) == 0
    t = load_table(path)
    assert len(t.entries) + t.n_incomplete == 2 and t.max_t == MAX_T
    assert all(s > 0 for e in t.entries for _, _, s in e.curve)
    shutil.rmtree(tmp_path / "ck", ignore_errors=True)


@pytest.mark.parametrize("method", ["random", "asha", "hyperband", "asha_gp", "asha_tpe"])
def test_device_budget_is_a_hard_cut_that_counts_running_trials(tmp_path, method):
    from experiments.search import replay as replay_search

    table = _table_of_six(tmp_path)
    out = tmp_path / method
    assert replay_search(method, "smoke", 0, load_table(table), 2, out, progress=False,
                         device_budget=20.0) == 0
    res, lc, meta = load(out)
    spent = (lc.epoch_seconds * lc.devices).sum()
    # every epoch that ended is counted; the cut overshoots by at most one epoch per worker
    assert 20.0 <= spent <= 20.0 + 2 * lc.epoch_seconds.max()
    assert meta["stopped_by"] == "device_budget" and meta["budget_device_s"] == 20.0
    cut = res[res["m:reason"] == "device_budget"]
    assert (cut["m:status"] == "stopped").all()
    if method in ("random", "asha"):  # a trial runs at the cut (Hyperband's 1-epoch rungs,
        assert len(cut) >= 1          # or a model's proposals here, can end exactly at it)
    last_end = lc.t_end.max()
    assert (res["m:timestamp_submit"] < last_end).all()


def test_lctable_sigterm_is_an_interruption(tmp_path):
    """A batch system's SIGTERM ends the builder like ^C: exit 130, status interrupted, and a
    rerun resumes to a complete table."""
    import signal
    import subprocess
    import sys
    import time

    from mlpf.paths import ROOT

    out = tmp_path / "lc.csv"
    cmd = [sys.executable, "-m", "experiments.lctable", "--scale", "smoke", "--configs", "3",
           "--workers", "1", "--trainable", "synthetic", "--out", str(out), "--checkpoints",
           str(tmp_path / "ckpt"), "--quiet"]
    env = {**os.environ, "EXP_SYNTHETIC": json.dumps({"sleep": 0.3})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and out.read_text().count("\n") > 2):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130, proc.stderr.read()
    assert json.loads(out.with_suffix(".json").read_text())["status"] == "interrupted"
    assert subprocess.run(cmd, cwd=ROOT, env={**env, "EXP_SYNTHETIC": "{}"},
                          timeout=120).returncode == 0
    assert json.loads(out.with_suffix(".json").read_text())["status"] == "complete"


def test_table_require_counts_complete_sampled_configurations(tmp_path, capsys):
    from experiments.table import main

    t = write_table(tmp_path / "t.csv", [(DEFAULT, curve(0.5), 1.0, None),
                                         ({**DEFAULT, "lr": 1e-3}, curve(0.4), 1.0, None),
                                         ({**DEFAULT, "lr": 2e-3}, curve(0.4)[:3], 1.0, None)])
    argv = ["--scale", "smoke", "--table", str(t), "--require"]
    assert main([*argv, "1"]) == 0  # config 1 complete; config 2 stops at epoch 3
    assert main([*argv, "2"]) == 2
    assert "1 complete sampled configurations, 2 needed" in capsys.readouterr().err


def test_a_table_with_cpu_seconds_replays_them(tmp_path):
    """CPU seconds, where the table records them, are the replay's epoch lengths (the same on a
    busy or an idle machine); a row without them falls back to its wall seconds."""
    t = write_table(tmp_path / "t.csv", [(DEFAULT, curve(0.5), 2.0, None)])
    lines = t.read_text().splitlines()
    head = lines[0].split(",")
    i = head.index("reason") + 1
    lines[0] = ",".join([*head[:i], "epoch_cpu_seconds", *head[i:]])
    for k in range(1, len(lines)):
        cells = lines[k].split(",")
        cpu = "" if k == 1 else "1.0"  # epoch 1 without CPU seconds: its wall seconds count
        lines[k] = ",".join([*cells[:i], cpu, *cells[i:]])
    t.write_text("\n".join(lines) + "\n")
    table = load_table(t)
    assert [c[2] for c in table.entries[0].curve] == [2.0] + [1.0] * (MAX_T - 1)
    assert table.summary()["clock"] == "epoch_cpu_seconds (epoch_seconds where missing)"
    out, res, lc, meta = replay(tmp_path, t, "random", budget=9, workers=1)
    assert lc.epoch_seconds.sum() == 2.0 + (MAX_T - 1) * 1.0
    old = load_table(write_table(tmp_path / "old.csv", [(DEFAULT, curve(0.5), 2.0, None)]))
    assert old.summary()["clock"] == "epoch_seconds"


def test_replay_budget_is_median_full_trainings_rounded_up(tmp_path, capsys):
    from experiments.table import main, replay_budget

    t = write_table(tmp_path / "t.csv", [(DEFAULT, curve(0.5), 1.0, None),
                                         ({**DEFAULT, "lr": 1e-3}, curve(0.4), 2.0, None),
                                         ({**DEFAULT, "lr": 2e-3}, curve(0.4), 3.0, None),
                                         ({**DEFAULT, "lr": 3e-3}, curve(0.4), 9.0, None)])
    table = load_table(t)
    # configurations 1 and 2 (the default is not sampled): 18 and 27 s -> median 22.5 x 32
    assert replay_budget(table, 32, first=2) == 800.0
    assert replay_budget(table, 32, first=3) == 900.0  # median 27 x 32 = 864
    assert main(["--scale", "smoke", "--table", str(t), "--replay-budget", "32",
                 "--first", "2"]) == 0
    assert capsys.readouterr().out.strip() == "800"
    # the live budget of the pre-registered test: half the rounded replay budget
    assert main(["--scale", "smoke", "--table", str(t), "--replay-budget", "32",
                 "--first", "3", "--live"]) == 0
    assert capsys.readouterr().out.strip() == "450"
    assert main(["--scale", "smoke", "--table", str(t), "--live"]) == 2
    assert "--live goes with --replay-budget" in capsys.readouterr().err


@pytest.mark.parametrize("method,i", [("epoch1", 1), ("epoch4", 4)])
def test_i_epoch_baselines_train_rounds_and_continue_the_best(tmp_path, method, i):
    from experiments.schedulers import i_epoch_bracket

    assert i_epoch_bracket(i, MAX_T, 9) == [[(9, i), (1, MAX_T)]]
    with pytest.raises(ValueError):
        i_epoch_bracket(MAX_T, MAX_T, 9)
    table = _table_of_six(tmp_path)
    out, res, lc, meta = replay(tmp_path, table, method, budget=120)
    assert meta["method_settings"]["brackets"] == [[[9, i], [1, MAX_T]]]
    rung0, rung1 = res[res["p:hb_rung"] == 0], res[res["p:hb_rung"] == 1]
    assert (rung0["m:epochs"] <= i).all() and len(rung0) >= 9 and len(rung1) >= 1
    # a round's best continues from epoch i + 1 to max_t on its own checkpoint
    for _, r in rung1.iterrows():
        trial = int(r["p:hb_trial"])
        first = rung0[rung0["p:hb_trial"] == trial]
        assert len(first) == 1
        ran = lc[lc.job_id == r.job_id].epoch
        assert ran.min() == i + 1 and (ran.max() == MAX_T or r["m:status"] == "stopped")
        round_ = rung0[rung0["p:hb_trial"] // 9 == trial // 9]
        assert -first["objective"].astype(float).iloc[0] == pytest.approx(
            (-round_["objective"].astype(float)).min())


def test_data_card_reads_its_numbers_from_the_table(tmp_path, capsys):
    from experiments.table import main

    t = write_table(tmp_path / "t.csv", [(DEFAULT, curve(0.5), 1.0, None),
                                         ({**DEFAULT, "lr": 1e-3}, curve(0.4), 2.0, None),
                                         ({**DEFAULT, "lr": 2e-3}, curve(0.4)[:2], 1.0,
                                          "diverged")])
    assert main(["--scale", "smoke", "--table", str(t), "--card"]) == 0
    card = (tmp_path / "DATACARD.md").read_text()
    assert card == capsys.readouterr().out
    assert "| complete configurations | 2 sampled + 1 default" in card
    assert "| failed trainings (first seed) | 1 (diverged 1) |" in card
    # 9 epochs x 1 s + 9 x 2 s + 2 x 1 s + the failed epoch's 0.5 s = 29.5 s
    assert load_table(t).core_hours() * 3600 == pytest.approx(29.5)
    assert f"| device-hours of the complete trainings | {29.5 / 3600:.2f} (epoch_seconds)" \
        in card
    assert "| precision | as computed (full double precision; not recorded) |" in card


def test_failure_profile_finds_where_trainings_fail(tmp_path, capsys):
    """Failures only with activation elu and batch size 8, whatever lr: the profile names the
    two splits, in that order, and stops where nothing more separates them."""
    from experiments.table import failure_profile, main

    configs = [(DEFAULT, curve(0.5), 1.0, None)]
    for i in range(16):
        p = {"lr": 1e-4 * (1 + i), "batch_size": 8 if i % 2 else 16,
             "activation": "elu" if i % 4 < 2 else "relu"}
        fail = p["activation"] == "elu" and p["batch_size"] == 8
        configs.append((p, curve(0.4)[:2] if fail else curve(0.4), 1.0,
                        "diverged" if fail else None))
    table = load_table(write_table(tmp_path / "t.csv", configs), "smoke")
    assert failure_profile(table) == [
        "activation = elu: 4 of 8 failed (50 %), other values 0 of 8",
        "within that, batch_size = 8: 4 of 4 failed (100 %), other values 0 of 4"]
    assert failure_profile(table, depth=1) == failure_profile(table)[:1]
    assert main(["--scale", "smoke", "--table", str(table.path), "--card"]) == 0
    assert "| where the first seeds failed (greedy split on hyperparameters of at most 8 " \
        "values) | activation = elu: 4 of 8" in capsys.readouterr().out
    # no failure: nothing to profile
    ok = load_table(write_table(tmp_path / "ok.csv", [(p, curve(0.4), 1.0, None)
                                                      for p, *_ in configs]), "smoke")
    assert failure_profile(ok) == []


def test_campaign_reuses_complete_searches_of_another_root_only_when_identical(tmp_path,
                                                                                capsys):
    """--reuse DIR copies a search complete there with the same table, lookup and settings
    (the same bytes a replay would write) and replays those of another budget."""
    from experiments.campaign import main as campaign_main

    table = str(_table_of_six(tmp_path))
    base = ["--backend", "replay", "--scale", "smoke", "--table", table, "--methods",
            "random asha", "--seeds", "0 1", "--processes", "1"]
    assert campaign_main([*base, "--out", str(tmp_path / "a"), "--budget", "20"]) == 0
    assert campaign_main([*base, "--out", str(tmp_path / "fresh"), "--budget", "20"]) == 0
    capsys.readouterr()
    assert campaign_main([*base, "--out", str(tmp_path / "b"), "--budget", "20",
                          "--reuse", str(tmp_path / "nowhere"), "--reuse",
                          str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped (reused)") == 4 and "4 skipped (4 reused)" in err
    for m in ("random", "asha"):
        for s in (0, 1):
            b, fresh = tmp_path / "b" / m / f"seed{s}", tmp_path / "fresh" / m / f"seed{s}"
            for f in ("results.csv", "learning_curves.csv"):
                assert (b / f).read_bytes() == (fresh / f).read_bytes()
            meta = json.loads((b / "metadata.json").read_text())
            assert meta["replay"]["reused_from"] == (tmp_path / "a" / m / f"seed{s}").as_posix()
    # another budget is another search: replayed, nothing copied
    assert campaign_main([*base, "--out", str(tmp_path / "c"), "--budget", "25",
                          "--reuse", str(tmp_path / "a")]) == 0
    assert "reused" not in capsys.readouterr().err
    meta = json.loads((tmp_path / "c" / "asha" / "seed0" / "metadata.json").read_text())
    assert "reused_from" not in meta["replay"]
    # other simulated workers: another search, whether in another root or in the same folder
    assert campaign_main([*base, "--out", str(tmp_path / "d"), "--budget", "20", "--workers",
                          "3", "--reuse", str(tmp_path / "a")]) == 0
    assert "4 searches run, 0 skipped" in capsys.readouterr().err
    assert campaign_main([*base, "--out", str(tmp_path / "a"), "--budget", "20", "--workers",
                          "3"]) == 0
    assert "4 searches run, 0 skipped" in capsys.readouterr().err
    assert json.loads((tmp_path / "a" / "asha" / "seed1" / "metadata.json").read_text())[
        "workers"] == 3
