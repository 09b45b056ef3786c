"""The surrogate of a learning-curve table: its fast forest equals scikit-learn's, worlds are
common random numbers, the validation report gates its use, replays and peers run on it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from experiments.surrogate import (
    LOSS_CAP,
    Surrogate,
    _Trees,
    open_lookup,
    report_paths,
    surrogate_accepted,
    validate,
    write_validation,
)
from experiments.table import BASE_COLUMNS, TableError, load_table
from mlpf.paths import ROOT

from .conftest import load, synthetic_lctable


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A synthetic smoke table: 30 configurations + the default, the default x 3 seeds and
    4 configurations x 2 seeds."""
    return load_table(synthetic_lctable(tmp_path_factory.mktemp("sur"), 30, (3, 2, 4)))


def test_flat_forest_predicts_like_scikit_learn():
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor

    rng = np.random.default_rng(0)
    x = rng.random((60, 5))
    y = np.stack([x[:, 0] + x[:, 1] ** 2, np.sin(3 * x[:, 2])], axis=1)
    reg = ExtraTreesRegressor(20, min_samples_leaf=2, random_state=0).fit(x, y)
    flat = _Trees(reg)
    xt = rng.random((25, 5))
    assert np.allclose(reg.predict(xt), [flat.predict(r) for r in xt], atol=1e-12)
    clf = ExtraTreesClassifier(20, min_samples_leaf=2, random_state=0).fit(x, x[:, 3] > 0.6)
    assert np.allclose(clf.predict_proba(xt)[:, 1], [_Trees(clf).predict(r)[1] for r in xt],
                       atol=1e-12)


def test_epochs_timed_at_zero_seconds_still_fit(table, tmp_path):
    """A clock that reads 0 s for a tiny model's epoch (a smoke table on a fast machine) is
    floored, not a log of 0 that the forests refuse: every predicted time is positive."""
    import pandas as pd

    d = pd.read_csv(table.path, keep_default_na=False)
    d.loc[d.config_id.isin([0, 1]), ["epoch_seconds", "epoch_cpu_seconds"]] = 0.0
    path = tmp_path / "lc.csv"
    d.to_csv(path, index=False)
    path.with_suffix(".json").write_text(table.path.with_suffix(".json").read_text())
    s = Surrogate(load_table(path))
    e, _ = s.world(0).replay(table.entries[0].params)
    assert all(np.isfinite(t) and t > 0 for _, _, t in e.curve)


def test_worlds_are_common_random_numbers(table):
    s = Surrogate(table)
    assert len(s.residuals) == 3 + 4 * 2  # every replicate's residual curve
    configs = [e.params for e in table.entries[1:6]]
    w0, w0b, w1 = s.world(0), Surrogate(table).world(0), s.world(1)
    for c in configs:
        a, meta = w0.replay(c)
        assert a.curve == w0.replay(c)[0].curve == w0b.replay(c)[0].curve  # same world
        assert len(a.curve) == table.max_t and all(0 < v <= LOSS_CAP * 3 for v, _, _ in a.curve)
        assert meta["table_distance"] == 0.0  # a table row: its own nearest row
    diff = [w0.replay(c)[0].curve != w1.replay(c)[0].curve for c in configs]
    assert any(diff)  # other world, other noise draws
    # any configuration of the space, not only table rows
    e, meta = w0.replay({**configs[0], "lr": 1.234e-3})
    assert len(e.curve) == table.max_t and meta["table_distance"] > 0


def test_noise_comes_from_configurations_that_end_alike(table, monkeypatch):
    """A residual is drawn among the replicated configurations nearest in final loss: a
    bistable configuration's large residual never lands on a good prediction."""
    from experiments import surrogate as sg

    s = Surrogate(table)
    t = table.max_t
    good, bad = np.full((2, t), 0.01), np.full((2, t), 1.5)
    good[1], bad[1] = -good[1], -bad[1]
    s.residuals = np.vstack([good, bad])
    s.residual_levels = np.log([0.3, 0.3, 2.0, 2.0])
    monkeypatch.setattr(sg, "NOISE_NEIGHBOURS", 1)
    for u in np.linspace(0, 0.999, 11):
        assert np.abs(s.noise(np.log(0.28), u)).max() == pytest.approx(0.01)
        assert np.abs(s.noise(np.log(3.0), u)).max() == pytest.approx(1.5)
    drawn = {tuple(s.noise(np.log(0.28), u)) for u in np.linspace(0, 0.999, 11)}
    assert len(drawn) == 2  # both replicates of the nearest configuration are drawn
    monkeypatch.setattr(sg, "NOISE_NEIGHBOURS", 2)
    assert {round(float(s.noise(np.log(0.28), u)[0]), 3) for u in np.linspace(0, 0.999, 11)} \
        == {0.01, -0.01, 1.5, -1.5}
    s.residuals, s.residual_levels = np.zeros((0, t)), np.zeros(0)
    assert not s.noise(0.0, 0.5).any()


def test_bistable_replicates_are_not_noise():
    """Replicates whose final losses differ by more than BISTABLE_RATIO (one training stalled)
    give no residuals; the others do, with their configuration's mean final log loss."""
    from types import SimpleNamespace as NS

    from experiments import surrogate as sg

    def reps(*finals):
        return [NS(failure=None, curve=[(3.0, 3.0, 1.0), (f, f, 1.0)]) for f in finals]

    fake = NS(max_t=2, table=NS(replicates={1: reps(0.30, 0.31), 2: reps(0.30, 2.0),
                                            3: reps(0.5, 0.5, 0.5)}))
    res, levels = sg.Surrogate._residuals(fake, set())
    assert fake.n_bistable == 1  # 0.30 vs 2.0: a factor 6.7
    assert res.shape == (5, 2) and np.allclose(res[2:], 0)
    assert np.allclose(levels, [np.log([0.30, 0.31]).mean()] * 2 + [np.log(0.5)] * 3)
    assert np.allclose(res[:2, 1], np.array([-1, 1]) * np.log(0.31 / 0.30) / 2 * np.sqrt(2))
    assert sg.Surrogate._residuals(fake, {1})[0].shape == (3, 2)


def test_prediction_follows_the_recorded_curves(table):
    s = Surrogate(table)
    e = table.entries[3]
    p = s.predict(e.params)
    true = np.log(np.clip([c[0] for c in e.curve], 1e-12, LOSS_CAP))
    others = np.array([np.log(np.clip([c[0] for c in o.curve], 1e-12, LOSS_CAP))
                       for o in table.entries if o.failure is None])
    # closer to its own (training) curve than the typical other curve is
    assert np.abs(p.log_val - true).mean() < np.abs(others - true).mean(axis=1).mean()
    assert np.all(p.seconds > 0) and 0.0 <= p.p_fail <= 1.0


def test_order_scores_and_the_acceptance_rule():
    from experiments.surrogate import accepted_by, order_scores

    true = np.arange(40, dtype=float)
    perfect = order_scores(true * 2 + 1, true)
    assert perfect["spearman"] == pytest.approx(1) and perfect["top5_recall"] == 1
    assert perfect["spearman_best_quarter"] == pytest.approx(1) and perfect["top5_k"] == 2
    # right overall, scrambled among the best quarter: the rule refuses it
    pred = true.copy()
    pred[:10] = pred[:10][::-1]
    s = order_scores(pred, true)
    assert s["spearman"] > 0.95 and s["spearman_best_quarter"] < 0 and s["top5_recall"] == 0
    assert accepted_by({"1": perfect, "9": perfect}, 9)
    assert not accepted_by({"1": perfect, "9": s}, 9)
    assert not accepted_by({"1": s, "9": perfect}, 9)
    assert not accepted_by({}, 9)


def test_noise_ceiling_is_the_seed_mean_predictors_error(table):
    from experiments.surrogate import noise_ceiling

    c = noise_ceiling(table, table.max_t)
    assert c is not None and c > 0
    errs = []
    for reps in table.replicates.values():
        v = np.array([e.curve[table.max_t - 1][0] for e in reps])
        if len(v) > 1 and all(e.failure is None for e in reps):
            errs += list(np.abs(v - v.mean()))
    assert c == pytest.approx(np.mean(errs))


def test_validation_report_gates_the_surrogate(table, tmp_path):
    report, rows = validate(table, folds=5)
    assert set(report["rungs"]) == {"1", "3", "9"}  # smoke: grace 1, eta 3, max_t 9
    for v in report["rungs"].values():
        assert v["n"] == report["n_configs"] and v["seed_noise"] is not None
        assert -1 <= v["spearman"] <= 1 and v["mae"] >= 0
    assert len(rows) == 3 * report["n_configs"]
    assert report["accepted"] == (all(
        v["spearman"] >= 0.8 and v["spearman_best_quarter"] >= 0.5
        for v in report["rungs"].values()) and report["rungs"]["9"]["top5_recall"] >= 0.5)
    for v in report["rungs"].values():
        assert v["mae_ceiling"] is None or v["mae_ceiling"] >= 0
    with pytest.raises(TableError, match="no validation report"):
        open_lookup(table, "surrogate")
    assert open_lookup(table, "nearest") is table
    assert isinstance(open_lookup(table, "surrogate", force=True), Surrogate)
    jpath, cpath = write_validation(table, {**report, "accepted": True}, rows)
    try:
        assert (jpath, cpath) == report_paths(table) and surrogate_accepted(table)
        assert isinstance(open_lookup(table, "surrogate"), Surrogate)
    finally:
        jpath.unlink()
        cpath.unlink()


def test_campaign_replays_methods_and_peers_on_surrogate_worlds(table, tmp_path):
    out = tmp_path / "rp"
    cmd = [sys.executable, "-m", "experiments.campaign", "--backend", "replay", "--scale",
           "smoke", "--table", str(table.path), "--lookup", "surrogate", "--seeds", "0 1",
           "--methods", "random asha optuna_random_sha", "--out", str(out),
           "--processes", "1"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "(surrogate)" in r.stderr and "not accepted" in r.stderr
    for m in ("random", "asha", "optuna_random_sha"):
        for seed in (0, 1):
            res, lc, meta = load(out / m / f"seed{seed}")
            assert meta["replay"]["lookup"] == "surrogate" and meta["replay"]["world"] == seed
            assert len(res) > 0
    # common random numbers: a configuration both searches of world 0 tried has one curve
    first = {}
    for m in ("random", "asha"):
        res, lc, _ = load(out / m / "seed0")
        pcols = sorted(c for c in res.columns if c.startswith("p:"))
        e1 = lc[lc.epoch == 1].set_index("job_id").val_loss
        first[m] = {tuple(r[pcols]): e1[r.job_id] for _, r in res.iterrows()
                    if r.job_id in e1.index}
    common = set(first["random"]) & set(first["asha"])
    assert common  # the same seed draws the same first configurations
    assert all(first["random"][k] == first["asha"][k] for k in common)
    # the surrogate's own configuration distribution, next to the searches
    ref = (out / "reference.csv").read_text()
    assert "reference sample of the surrogate" in r.stderr
    rows = ref.splitlines()
    assert rows[0].startswith(
        "config_id,replicate,epoch,val_loss,train_loss,epoch_seconds,status,reason,")
    assert rows[0].split(",") == list(BASE_COLUMNS)
    assert len(rows) == 1 + 1 + 2048 and rows[1].startswith("0,0,")
    assert json.loads((out / "reference.json").read_text())["max_t"] == table.max_t
    # rerun: complete on the same table and lookup -> skipped; another lookup -> rerun
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.stderr.count("skipped (complete)") == 6
    assert (out / "reference.csv").read_text() == ref  # deterministic
    cmd[cmd.index("surrogate")] = "nearest"
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "skipped (complete)" not in r.stderr


def test_cli_writes_the_report_and_refuses_bad_input(table, tmp_path):
    r = subprocess.run([sys.executable, "-m", "experiments.surrogate", "--scale", "smoke",
                        "--table", str(table.path), "--trees", "50"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Spearman" in r.stdout and "accepted" in r.stdout
    jpath, cpath = report_paths(table)
    try:
        assert json.loads(jpath.read_text())["table_sha256"] == table.sha256
        assert cpath.read_text().startswith("fold,config_id,epoch,true,pred")
    finally:
        jpath.unlink()
        cpath.unlink()
    r = subprocess.run([sys.executable, "-m", "experiments.surrogate", "--scale", "smoke",
                        "--table", str(tmp_path / "none.csv")], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_reference_is_the_default_and_sobol_points_of_world_0(table, tmp_path):
    from experiments.space import sobol_configs
    from experiments.surrogate import write_reference
    from experiments.table import default_values

    sur = Surrogate(table, n_trees=20)
    path = write_reference(sur, tmp_path, n=8, seed=3)
    lines = path.read_text().splitlines()[1:]
    assert len(lines) == 9
    world = sur.world(0)
    for i, config in enumerate([default_values("smoke"), *sobol_configs("smoke", 8, 3)]):
        entry, _ = world.replay(config)
        cells = lines[i].split(",")
        assert int(cells[0]) == i
        if entry.failure is None:
            assert cells[6] == "ok" and int(cells[2]) == table.max_t
            assert float(cells[3]) == pytest.approx(entry.curve[-1][0], rel=1e-9)
        else:
            assert cells[6] == "failed" and cells[7] == entry.failure
    # the loss of the source table's trainings: the analysis refuses targets of another loss
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["loss"] == table.meta["loss"] and meta["loss"]["name"]
    assert meta["source_sha256"] == table.sha256


# ------------------------------------------------------------------ variants, judged by use
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A hand-made smoke table (conftest.tiny_table): 40 configurations + the default."""
    from .conftest import tiny_table

    return load_table(tiny_table(tmp_path_factory.mktemp("tiny") / "lc.csv", n_configs=40))


def test_rank_targets_are_per_epoch_ranks_in_0_1():
    from experiments.surrogate import rank_targets

    r = rank_targets(np.array([[3.0, 1.0], [1.0, 1.0], [2.0, 5.0]]))
    assert np.allclose(r, [[1.0, 0.25], [0.0, 0.25], [0.5, 1.0]])  # ties share their mean


def test_every_model_predicts_whole_curves(tiny):
    from experiments.surrogate import MODELS

    e = tiny.entries[7]
    for model in MODELS:
        s = Surrogate(tiny, n_trees=20, model=model)
        p = s.predict(e.params)
        assert p.log_val.shape == p.log_train.shape == (tiny.max_t,)
        assert np.isfinite(p.log_val).all() and np.isfinite(p.log_train).all()
        entry, _ = s.world(1).replay(e.params)
        assert len(entry.curve) == tiny.max_t
        if model == "per_rung_rank":  # a rank maps back into the training losses' range
            ok = [x for x in tiny.entries if x.failure is None]
            logv = np.log([[c[0] for c in x.curve] for x in ok])
            assert np.all(p.log_val >= logv.min(axis=0) - 1e-12)
            assert np.all(p.log_val <= logv.max(axis=0) + 1e-12)
    with pytest.raises(ValueError, match="unknown surrogate model"):
        Surrogate(tiny, model="gp")


def test_variants_are_validated_alike_and_reproducibly(tiny):
    from experiments.surrogate import MODELS, accepted_by, validate_variants

    report, rows = validate_variants(tiny, folds=3, n_trees=20)
    assert report["model"] == "forest" and list(report["variants"]) == list(MODELS)
    plain, plain_rows = validate(tiny, folds=3, n_trees=20)
    assert rows == plain_rows and report["accepted"] == plain["accepted"]
    assert {k: v for k, v in report.items() if k != "variants"} == plain
    for v in report["variants"].values():
        assert set(v["rungs"]) == {"1", "3", "9"}
        assert v["accepted"] == accepted_by(v["rungs"], tiny.max_t)  # the same rule
    f = report["variants"]["forest"]["rungs"]["9"]
    assert f["spearman"] == pytest.approx(plain["rungs"]["9"]["spearman"], rel=1e-5)
    again, _ = validate_variants(tiny, folds=3, n_trees=20)
    assert json.dumps(again) == json.dumps(report)  # fixed seeds: the same numbers


def test_open_lookup_takes_a_variant_only_when_its_validation_accepts_it(tiny):
    from experiments.surrogate import write_validation

    report, rows = validate(tiny, folds=3, n_trees=20)
    report = {**report, "accepted": False,
              "variants": {"per_rung_rank": {"accepted": True, "rungs": {}}}}
    jpath, cpath = write_validation(tiny, report, rows)
    try:
        s = open_lookup(tiny, "surrogate", model="per_rung_rank")
        assert s.model == "per_rung_rank"
        summary = s.world(0).summary()["surrogate"]
        assert summary["variant"] == "per_rung_rank" and summary["validation"]["accepted"]
        with pytest.raises(TableError, match="its validation failed"):
            open_lookup(tiny, "surrogate")
        with pytest.raises(TableError, match="no validation of model per_rung_log"):
            open_lookup(tiny, "surrogate", model="per_rung_log")
        assert "variant" not in Surrogate(tiny, n_trees=5).world(0).summary()["surrogate"]
    finally:
        jpath.unlink()
        cpath.unlink()


def test_cli_variants_print_and_record_the_comparison(tiny):
    cmd = [sys.executable, "-m", "experiments.surrogate", "--scale", "smoke", "--table",
           str(tiny.path), "--variants", "--folds", "3", "--trees", "20"]
    jpath, cpath = report_paths(tiny)
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        for name in ("forest", "per_rung_log", "per_rung_rank"):
            assert name in r.stdout
        report = json.loads(jpath.read_text())
        assert set(report["variants"]) == {"forest", "per_rung_log", "per_rung_rank"}
        first = (jpath.read_bytes(), cpath.read_bytes())
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert (jpath.read_bytes(), cpath.read_bytes()) == first  # byte for byte
    finally:
        jpath.unlink(missing_ok=True)
        cpath.unlink(missing_ok=True)


def _fake_search(folder, trials, devices=1, status=None):
    """learning_curves.csv and results.csv of a search: ``trials`` {job: [(val_loss,
    epoch_seconds, t_end), ...]}; ``status`` {job: m:status} (default ok)."""
    from experiments import logs

    folder.mkdir(parents=True, exist_ok=True)
    lc = [{logs.JOB_ID: j, logs.EPOCH: e, logs.VAL_LOSS: v, logs.TRAIN_LOSS: v,
           logs.EPOCH_SECONDS: s, logs.T_START: t - s, logs.T_END: t, logs.WORKER: 0,
           logs.DEVICES: devices}
          for j, rows in trials.items() for e, (v, s, t) in enumerate(rows, 1)]
    logs.write_csv(folder / logs.LEARNING_CURVES_CSV, logs.LC_COLUMNS, lc)
    res = [{"job_id": j, logs.M_STATUS: (status or {}).get(j, "ok")} for j in trials]
    logs.write_csv(folder / logs.RESULTS_CSV, ("job_id", logs.M_STATUS), res)


def test_search_metrics_follow_the_incumbent_over_compute(tmp_path):
    from experiments.surrogate import BEST_LOSS, TO_TARGET, search_metrics

    trials = {1: [(3.0, 10, 10), (2.0, 10, 20)], 2: [(1.5, 5, 15)], 3: [(0.5, 4, 12)]}
    _fake_search(tmp_path / "a", trials, status={3: "failed"})
    # epochs by t_end: job1 e1 (10 s), job3 (failed: spends 4 s, never enters), job2 (5 s,
    # enters 1.5), job1 e2 (10 s, enters 2.0): incumbent 1.5 after 19 s
    assert search_metrics(tmp_path / "a", 1.6) == {BEST_LOSS: 1.5, TO_TARGET: 19.0}
    assert search_metrics(tmp_path / "a", 1.0)[TO_TARGET] == float("inf")
    _fake_search(tmp_path / "b", trials, devices=2, status={3: "failed"})
    assert search_metrics(tmp_path / "b", 1.6)[TO_TARGET] == 38.0


def test_method_rank_check_is_kendalls_tau_of_the_medians():
    import pandas as pd

    from experiments.surrogate import method_rank_check

    def world(values):  # {method: [per-seed values]}
        return pd.DataFrame([{"method": m, "seed": s, "best_loss": v}
                             for m, vs in values.items() for s, v in enumerate(vs)])

    near = world({"a": [1, 2, 3], "b": [2, 3, 4], "c": [5, 6, 7], "d": [9, 9, 9]})
    same = method_rank_check(near, world({"a": [0, 1, 1], "b": [2, 2, 2], "c": [3, 3, 3],
                                          "d": [4, 4, 4]}))
    assert same["kendall_tau"] == pytest.approx(1.0) and same["methods"] == list("abcd")
    flipped = method_rank_check(near, world({"a": [4, 4], "b": [3, 3, 3], "c": [2, 2, 2],
                                             "d": [1, 1, 1]}))
    assert flipped["kendall_tau"] == pytest.approx(-1.0)
    assert flipped["n_seeds"]["a"] == 2  # seeds paired: the surrogate world lacks seed 2
    assert flipped["medians"]["nearest"]["a"] == 1.5  # median over the paired seeds only
    inf = float("inf")  # a method that never reaches the target ranks last
    never = method_rank_check(near, world({"a": [1, 1, 1], "b": [2, 2, 2], "c": [3, 3, 3],
                                           "d": [inf, inf, inf]}))
    assert never["kendall_tau"] == pytest.approx(1.0)
    assert method_rank_check(near, world({"a": [1]}))["kendall_tau"] is None


def test_cli_rank_check_reads_two_replay_folders(tiny, tmp_path):
    for world, order in (("near", (1.0, 2.0, 3.0)), ("sur", (1.1, 2.2, 3.3))):
        for m, v in zip(("random", "asha", "hyperband"), order):
            for seed in (0, 1):
                _fake_search(tmp_path / world / m / f"seed{seed}",
                             {1: [(v + seed, 10, 10)], 2: [(v + 0.5, 10, 20)]})
    cmd = [sys.executable, "-m", "experiments.surrogate", "--scale", "smoke", "--table",
           str(tiny.path), "--rank-check", str(tmp_path / "near"), str(tmp_path / "sur")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Kendall's tau by best_loss: 1.000" in r.stdout
    assert "target loss" in r.stdout and "(table)" in r.stdout
    r = subprocess.run([*cmd[:-1], str(tmp_path / "none")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_a_surrogate_world_takes_its_target_from_its_own_sample(tiny, tmp_path):
    from experiments import logs
    from experiments import table as tb
    from experiments.surrogate import world_target

    finals = [e.curve[-1][0] for e in tiny.entries if e.failure is None]
    assert world_target(tmp_path, tiny, 0.5) == (pytest.approx(np.quantile(finals, 0.5)),
                                                  "table")
    rows = [dict(zip(tb.BASE_COLUMNS, (i, 0, 9, v, v, 1.0, tb.STATUS_OK, "")))
            for i, v in enumerate([0.1, 0.2, 0.3, 0.4, 0.5])]
    rows.append(dict(zip(tb.BASE_COLUMNS, (5, 0, 3, "", "", 1.0, tb.STATUS_FAILED, "oom"))))
    logs.write_csv(tmp_path / logs.REFERENCE_CSV, tb.BASE_COLUMNS, rows)
    assert world_target(tmp_path, tiny, 0.5) == (pytest.approx(0.3), "reference.csv")
