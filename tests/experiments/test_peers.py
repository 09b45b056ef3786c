"""Optuna peers on hand-made learning curves, in simulated time (seconds in all)."""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from analysis.logs import LogWarning, load_scale, load_search, trial_table
from experiments import logs
from experiments.campaign import main as campaign_main
from experiments.methods import settings_for
from experiments.peers import get_peer, run_peer
from experiments.peers import simulate_peer as simulate
from experiments.peers.optuna_peers import PEERS as OPTUNA_PEERS
from experiments.peers.optuna_peers import optuna_distributions
from experiments.peers.simulate import synthetic_curves
from experiments.space import problem_for
from experiments.trial import Recorded

from .conftest import hp_values, odd_problem

SMOKE = settings_for("smoke", time_budget=0)  # max_t 9, grace 1, eta 3, 81 epochs, no deadline


def _dist_values(d) -> set:
    if isinstance(d, CategoricalDistribution):
        return set(d.choices)
    return set(range(d.low, d.high + 1, d.step))


@pytest.mark.parametrize("scale", ["smoke", "small", "paper"])
def test_space_translation_covers_every_hyperparameter(scale):
    problem = problem_for(scale)
    dists = optuna_distributions(problem)
    assert list(dists) == problem.hyperparameter_names
    for hp in problem.space.values():
        d = dists[hp.name]
        if hp_values(hp) is not None:
            assert isinstance(d, IntDistribution | CategoricalDistribution), hp.name
            assert _dist_values(d) == hp_values(hp), hp.name
        else:
            assert isinstance(d, FloatDistribution), hp.name
            assert (d.low, d.high, d.log) == (hp.lower, hp.upper, hp.log), hp.name
    assert dists["lr"].log
    assert isinstance(dists["batch_size"], IntDistribution) and dists["batch_size"].step == 16
    assert isinstance(dists["layernorm"], CategoricalDistribution)
    assert isinstance(dists["lr_decay_steps"], IntDistribution)


def test_space_translation_of_other_grids_and_ranges():
    p = odd_problem()
    d = optuna_distributions(p)
    assert d["one"] == IntDistribution(3, 3)
    assert d["names"] == CategoricalDistribution(["x", "y"])
    assert d["geometric"] == CategoricalDistribution([1, 2, 4])
    assert d["ints"] == IntDistribution(1, 10)
    assert d["log_ints"] == IntDistribution(1, 100, log=True)


def _frame(run):
    return pd.DataFrame(run.results), pd.DataFrame(run.curves)


@pytest.mark.parametrize("peer", list(OPTUNA_PEERS))
def test_pruner_stops_trials_early_and_budget_holds(peer):
    run = simulate(get_peer(peer), SMOKE, 0, synthetic_curves(SMOKE.max_t), workers=2)
    res, lc = _frame(run)
    epochs = res["m:epochs"]
    assert (res["m:status"] == "stopped").any() and (epochs < SMOKE.max_t).any()
    assert (res["m:status"] == "ok").any() and epochs.max() == SMOKE.max_t
    assert (res.loc[res["m:status"] == "stopped", "m:epochs"] < SMOKE.max_t).all()
    # every epoch logged once; trial epochs add up to the learning-curve rows
    assert len(lc) == epochs.sum() == run.epochs
    assert not lc.duplicated(["job_id", "epoch"]).any()
    # budget: asking stops once finished trials reach it; running ones (< workers) finish
    assert run.stopped_by == "epochs"
    done = res.sort_values("m:timestamp_gather", kind="mergesort")
    t_spent = done.loc[done["m:epochs"].cumsum() >= SMOKE.budget, "m:timestamp_gather"].iloc[0]
    assert (res["m:timestamp_submit"] <= t_spent).all()
    assert SMOKE.budget <= run.epochs < SMOKE.budget + 2 * SMOKE.max_t
    # never more trials than workers at once
    for t in res["m:trial_start"]:
        live = (res["m:trial_start"] <= t) & (res["m:trial_end"] > t)
        assert live.sum() <= 2


def test_hyperband_brackets_prune_later_than_sha():
    """HyperbandPruner puts trials in brackets with higher first rungs (3 epochs, 9 epochs)."""
    sha, _ = _frame(simulate(get_peer("optuna_random_sha"), SMOKE, 0,
                             synthetic_curves(SMOKE.max_t)))
    hb, _ = _frame(simulate(get_peer("optuna_random_hb"), SMOKE, 0,
                            synthetic_curves(SMOKE.max_t)))
    stopped = lambda df: df.loc[df["m:status"] == "stopped", "m:epochs"]  # noqa: E731
    assert stopped(sha).isin([1, 3]).all()
    assert stopped(hb).mean() >= stopped(sha).mean()


def test_simulated_time_is_exact_on_a_tiny_case():
    """Trial k lasts k+1 s per epoch and is better than all before it: nothing is pruned.

    worker 0: job 0 on [0, 9], then job 2 on [9, 36]; worker 1: job 1 on [0, 18]. At 18 s the
    finished trials hold 9 + 9 = 18 epochs = the budget: no job 3; job 2 runs to its end.
    """
    calls = []

    def curve(config):
        k = len(calls)
        calls.append(config)
        return Recorded([(1.0 / (k + 1), 2.0 / (k + 1), float(k + 1))] * SMOKE.max_t)

    s = settings_for("smoke", budget=18, time_budget=0)
    run = simulate(get_peer("optuna_random_sha"), s, 0, curve, workers=2)
    res, lc = _frame(run)
    assert len(calls) == 3 and run.stopped_by == "epochs"
    assert res["job_id"].tolist() == [0, 1, 2]  # finishing order
    assert res["m:status"].tolist() == ["ok"] * 3
    assert res["m:worker"].tolist() == [0, 1, 0]
    assert res["m:trial_start"].tolist() == [0.0, 0.0, 9.0]
    assert res["m:trial_end"].tolist() == [9.0, 18.0, 36.0]
    assert res["m:timestamp_gather"].tolist() == res["m:trial_end"].tolist()
    assert res["objective"].tolist() == [-1.0, -0.5, -1 / 3]
    assert run.end_time == 36.0 and run.epochs == 27
    j2 = lc[lc["job_id"] == 2]
    assert j2["t_start"].tolist() == [9.0 + 3 * i for i in range(9)]
    assert j2["t_end"].tolist() == [12.0 + 3 * i for i in range(9)]
    assert (lc["t_end"] - lc["t_start"] == lc["epoch_seconds"]).all()
    # rows in simulated-time order; a tie (2 s: job 0 epoch 2, job 1 epoch 1) by job id
    assert lc["t_end"].is_monotonic_increasing
    assert lc.iloc[1:3][["job_id", "epoch"]].values.tolist() == [[0, 2], [1, 1]]


def test_failures_are_logged_like_live_searches(tmp_path):
    fail = {"diverge": 0.2, "raise": 0.1, "oom": 0.1}
    run_peer("optuna_tpe_sha", "smoke", 0, synthetic_curves(SMOKE.max_t, fail=fail),
             tmp_path / "optuna_tpe_sha" / "seed0", time_budget=0)
    res = pd.read_csv(tmp_path / "optuna_tpe_sha" / "seed0" / logs.RESULTS_CSV)
    failed = res[res["m:status"] == "failed"]
    assert set(failed["m:reason"]) == {"diverged", "error:ValueError", "oom"}
    assert failed["objective"].str.startswith("F_").all()
    assert (failed.loc[failed["m:reason"] == "oom", "m:epochs"] == 0).all()
    # the recorded epochs only (the replay of our methods counts the same way)
    assert (failed.loc[failed["m:reason"] == "diverged", "m:epochs"] == 1).all()


def test_same_seed_gives_identical_csvs(tmp_path):
    curve = synthetic_curves(SMOKE.max_t, fail={"diverge": 0.1})
    for d in ("a", "b", "c"):
        run_peer("optuna_tpe_hb", "smoke", 1 if d == "c" else 0, curve, tmp_path / d)
    for name in (logs.RESULTS_CSV, logs.LEARNING_CURVES_CSV):
        a, b, c = ((tmp_path / d / name).read_bytes() for d in "abc")
        assert a == b
        assert a != c


def test_logs_load_with_analysis(tmp_path):
    root = tmp_path / "replay"
    for peer in ("optuna_tpe_hb", "optuna_random_sha"):
        for seed in (0, 1):
            meta = run_peer(peer, "smoke", seed, synthetic_curves(SMOKE.max_t),
                            root / peer / f"seed{seed}", workers=3, time_budget=0,
                            table={"path": "synthetic", "trainable": "synthetic"})
            assert meta["status"] == "complete" and meta["backend"] == "replay"
            assert meta["trainable"] == "synthetic"
    with warnings.catch_warnings():
        warnings.simplefilter("error", LogWarning)
        runs = load_scale(root)
        s = load_search(root / "optuna_tpe_hb" / "seed0")
    assert set(runs) == {"optuna_tpe_hb", "optuna_random_sha"} and list(runs["optuna_tpe_hb"]) \
        == [0, 1]
    assert s.max_t == SMOKE.max_t and s.workers == 3
    assert s.hyperparameters == problem_for("smoke").hyperparameter_names
    # times in learning_curves.csv are rounded to 0.1 ms, as live
    assert s.duration == s.metadata["end_time"] == pytest.approx(s.curves["t_end"].max(),
                                                                 abs=1e-4)
    assert s.capacity == pytest.approx(3 * s.duration)
    t = trial_table(s)
    res = pd.read_csv(root / "optuna_tpe_hb" / "seed0" / logs.RESULTS_CSV)
    assert t["status"].tolist() == res.sort_values("job_id")["m:status"].tolist()
    assert (t["epochs"] == t["last_epoch"]).all()
    assert t["final_loss"].notna().all()
    md = s.metadata
    assert md["method"] == "optuna_tpe_hb" and md["peer"]["library"] == "optuna"
    assert md["start_time"] == 0.0 and md["time_budget_s"] is None
    assert md["method_settings"]["pruner"] == "HyperbandPruner"
    assert md["method_settings"]["brackets"] == 3  # floor(log_3(9 / 1)) + 1
    assert md["decision_summary"]["n"] == len(res) and md["decision_summary"]["median"] > 0


def test_complete_seed_on_the_same_table_is_skipped(tmp_path):
    curve = synthetic_curves(SMOKE.max_t)
    a, b = {"sha256": "a"}, {"sha256": "b"}
    assert run_peer("optuna_random_hb", "smoke", 0, curve, tmp_path, table=a) is not None
    assert run_peer("optuna_random_hb", "smoke", 0, curve, tmp_path, table=a) is None
    # another table: simulated again
    assert run_peer("optuna_random_hb", "smoke", 0, curve, tmp_path, table=b) is not None


def test_time_budget_stops_running_trials():
    s = settings_for("smoke", time_budget=15.0)
    run = simulate(get_peer("optuna_random_sha"), s, 0, synthetic_curves(SMOKE.max_t))
    res, lc = _frame(run)
    assert run.stopped_by == "time"
    assert (res["m:timestamp_submit"] < 15.0).all()
    late = res[res["m:reason"] == "time_budget"]
    assert len(late) and (late["m:status"] == "stopped").all()
    assert lc["t_end"].max() == pytest.approx(run.end_time, abs=1e-4)


def test_cli(tmp_path, capsys):
    out = tmp_path / "replay"
    args = ["--backend", "replay", "--scale", "smoke", "--seeds", "0 1", "--methods",
            "optuna_random_sha", "--table", "synthetic", "--out", str(out), "--budget", "27"]
    assert campaign_main(args) == 0
    assert {p.name for p in (out / "optuna_random_sha").iterdir()} == {"seed0", "seed1"}
    assert campaign_main(args) == 0
    assert capsys.readouterr().err.count("skipped (complete)") == 2
    assert campaign_main([*args[:6], "--methods", "nope"]) == 2
    assert campaign_main(["--backend", "replay", "--scale", "smoke", "--table",
                          str(tmp_path / "missing.csv")]) == 2


def test_failures_take_their_recorded_time():
    """One worker: oom after 0.5 s; a 1 s epoch then a divergence 0.25 s into epoch 2; a full
    curve. Each trial is better than the ones before it: nothing is pruned."""
    recorded = [Recorded([], "oom", 0.5), Recorded([(0.5, 0.6, 1.0)], "diverged", 0.25),
                Recorded([(0.25, 0.3, 1.0)] * SMOKE.max_t)]
    calls = []

    def curve(config):
        calls.append(config)
        return recorded[len(calls) - 1]

    run = simulate(get_peer("optuna_random_sha"), settings_for("smoke", budget=4,
                                                               time_budget=0), 0, curve,
                   workers=1)
    res, lc = _frame(run)
    assert res["m:reason"].tolist() == ["oom", "diverged", ""]
    assert res["m:epochs"].tolist() == [0, 1, SMOKE.max_t]
    assert res["m:trial_start"].tolist() == [0.0, 0.5, 1.75]
    assert res["m:trial_end"].tolist() == [0.5, 1.75, 1.75 + SMOKE.max_t]
    assert res["objective"].tolist()[:2] == ["F_oom", "F_diverged"]
    assert lc[lc["job_id"] == 1]["t_end"].tolist() == [1.5]  # no row for the failing epoch
    assert 0 not in set(lc["job_id"])


def test_cli_reads_a_replay_table(tmp_path):
    """A hand-written table (experiments.lctable layout): the default, a configuration that
    diverges in epoch 3 and one that fails with oom in epoch 1."""
    from experiments import table as lctable
    from experiments.table import columns_for, default_values, load_table

    names = problem_for("smoke").hyperparameter_names
    base = default_values("smoke")
    configs = [base, {**base, "lr": 3e-2}, {**base, "batch_size": 16}]
    rows = []
    for cid, cfg in enumerate(configs):
        n_ok = {0: SMOKE.max_t, 1: 2, 2: 0}[cid]
        for e in range(1, n_ok + 1):
            rows.append({lctable.CONFIG_ID: cid, lctable.REPLICATE: 0, lctable.EPOCH: e,
                         lctable.VAL_LOSS: 1.0 / e,
                         lctable.TRAIN_LOSS: 1.1 / e, lctable.EPOCH_SECONDS: 2.0,
                         lctable.STATUS: "ok", lctable.REASON: "", **{f"p:{k}": v
                                                                     for k, v in cfg.items()}})
        if cid:
            rows.append({lctable.CONFIG_ID: cid, lctable.REPLICATE: 0, lctable.EPOCH: n_ok + 1,
                         lctable.EPOCH_SECONDS: 0.5, lctable.STATUS: "failed",
                         lctable.REASON: "diverged" if cid == 1 else "oom",
                         **{f"p:{k}": v for k, v in cfg.items()}})
    path = tmp_path / "lctable.csv"
    pd.DataFrame(rows, columns=columns_for(names)).to_csv(path, index=False)
    loss = {"name": "upstream", "weights": {"cls": 1.0}}
    path.with_suffix(".json").write_text(json.dumps({"scale": "smoke", "loss": loss}))
    assert load_table(path, "smoke").failure({**base, "batch_size": 16}) == "oom"

    out = tmp_path / "replay"
    assert campaign_main(["--backend", "replay", "--scale", "smoke", "--methods",
                          "optuna_tpe_sha", "--table", str(path), "--out", str(out),
                          "--budget", "27"]) == 0
    s = load_search(out / "optuna_tpe_sha" / "seed0")
    t = trial_table(s)
    assert set(t["status"]) <= {"ok", "stopped", "failed"} and len(t) >= 3
    assert set(t.loc[t["status"] == "failed", "m:reason"]) <= {"diverged", "oom"}
    # every epoch of the table lasts 2 s, a failing one 0.5 s
    assert set(s.curves["epoch_seconds"]) <= {2.0, 0.5}
    res = pd.read_csv(out / "optuna_tpe_sha" / "seed0" / logs.RESULTS_CSV)
    assert set(res["m:table_config"]) <= {0, 1, 2} and (res["m:table_distance"] >= 0).all()
    md = s.metadata
    assert md["replay"]["sha256"] == load_table(path, "smoke").sha256
    assert md["replay"]["path"] == str(path) and md["trainable"] == "mlpf"
    assert md["time_budget_s"] is None  # no deadline in simulated time
    assert md[logs.LOSS] == loss  # the table's loss, as a replayed search of ours records it
    assert campaign_main(["--backend", "replay", "--scale", "smoke", "--table",
                          str(tmp_path / "missing.csv")]) == 2


def test_device_budget_cuts_a_peer_like_our_methods():
    s = settings_for("smoke", budget=10_000, time_budget=0, device_budget=12.0)
    run = simulate(get_peer("optuna_random_sha"), s, 0, synthetic_curves(SMOKE.max_t))
    res, lc = _frame(run)
    spent = (lc["epoch_seconds"] * lc["devices"]).sum()
    assert run.stopped_by == "device_budget"
    assert 12.0 <= spent <= 12.0 + 2 * lc["epoch_seconds"].max()
    assert "device_budget" in set(res["m:reason"])


@pytest.mark.parametrize("eta", [3, 4])
def test_optunas_pruner_decides_as_its_stated_rule(eta):
    """Optuna's SuccessiveHalvingPruner, driven trial by trial, continues exactly the arrivals
    optuna_continues says (ties included), and that rule is not our quantile rule: the
    arriving value counts among the competitors."""
    import numpy as np
    import optuna

    from experiments.peers.optuna_peers import optuna_continues
    from experiments.schedulers import ray_continues

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(eta)
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=eta, min_early_stopping_rate=0, bootstrap_count=0))
    earlier = []
    for _ in range(120):
        loss = float(rng.integers(0, 30))  # ties on purpose
        trial = study.ask()
        trial.report(loss, 1)
        assert (not trial.should_prune()) == optuna_continues(loss, earlier, eta), \
            (loss, earlier)
        earlier.append(loss)
    # a value between the best and the second best of eta earlier ones: our interpolated
    # quantile continues it, Optuna's rank (the best 1 of eta + 1) does not
    before = [float(v) for v in range(1, eta + 1)]
    assert ray_continues(-1.5, [-v for v in before], eta) is True
    assert optuna_continues(1.5, before, eta) is False
    # own value included: with eta - 1 earlier values, only one no worse than all continues
    assert optuna_continues(2.0, [1.0] * (eta - 1), eta) is False
    assert optuna_continues(1.0, [1.0] * (eta - 1), eta) is True
