"""Syne Tune peers on synthetic and hand-made learning curves, in simulated time (seconds)."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("syne_tune")

import pandas as pd  # noqa: E402
import syne_tune.config_space as sp  # noqa: E402

from analysis.logs import LogWarning, load_search, trial_table  # noqa: E402
from experiments import logs  # noqa: E402
from experiments.campaign import main as campaign_main  # noqa: E402
from experiments.methods import settings_for  # noqa: E402
from experiments.peers import (  # noqa: E402
    PEERS,
    get_peer,
    run_peer,
    simulate_with_info,
    syne_peers,
)
from experiments.peers.simulate import synthetic_curves  # noqa: E402
from experiments.peers.syne_peers import (  # noqa: E402
    domain_values,
    kde_first_fit,
    kde_min_points,
    syne_space,
)
from experiments.schedulers import asha_rungs, ray_continues  # noqa: E402
from experiments.space import problem_for  # noqa: E402
from experiments.trial import Recorded  # noqa: E402

from .conftest import hp_values, odd_problem  # noqa: E402

SMOKE = settings_for("smoke", time_budget=0)  # max_t 9, grace 1, eta 3, 81 epochs, no deadline
SYNE = [p for p in PEERS if p.startswith("syne_")]


def _frame(run):
    return pd.DataFrame(run.results), pd.DataFrame(run.curves)


def test_registry_has_the_syne_tune_peers_and_names_the_missing_ones():
    assert SYNE == ["syne_random", "syne_asha_stop", "syne_async_hb", "syne_bohb"]
    with pytest.raises(ValueError, match="numpy<1.27"):
        get_peer("syne_hyperband")


@pytest.mark.parametrize("scale", ["smoke", "small", "paper"])
def test_space_translation_covers_every_hyperparameter(scale):
    problem = problem_for(scale)
    space = syne_space(problem)
    assert list(space) == problem.hyperparameter_names
    for hp in problem.space.values():
        d = space[hp.name]
        if hp_values(hp) is not None:
            assert domain_values(d) == hp_values(hp), hp.name
        else:
            assert isinstance(d, sp.Float), hp.name
            assert (d.lower, d.upper, sp.is_log_space(d)) == (hp.lower, hp.upper, hp.log)
    assert isinstance(space["batch_size"], sp.FiniteRange) and space["batch_size"].cast_int
    assert isinstance(space["lr_decay_steps"], sp.FiniteRange)
    assert type(space["layernorm"]) is sp.Categorical
    # a draw is a configuration of the problem, with Python values
    cfg = {k: v.sample() if isinstance(v, sp.Domain) else v for k, v in space.items()}
    for hp in problem.space.values():
        if hp_values(hp) is not None:
            assert cfg[hp.name] in hp_values(hp)


def test_space_translation_of_other_grids_and_ranges():
    p = odd_problem()
    d = syne_space(p)
    assert d["one"] == 3
    assert type(d["names"]) is sp.Categorical and d["names"].categories == ["x", "y"]
    assert isinstance(d["geometric"], sp.Ordinal) and d["geometric"].categories == [1, 2, 4]
    assert isinstance(d["ints"], sp.Integer) and (d["ints"].lower, d["ints"].upper) == (1, 10)
    assert isinstance(d["log_ints"], sp.Integer) and sp.is_log_space(d["log_ints"])


@pytest.mark.parametrize("peer", SYNE)
def test_each_peer_runs_and_its_logs_load_with_analysis(tmp_path, peer):
    out = tmp_path / peer / "seed0"
    meta = run_peer(peer, "smoke", 0, synthetic_curves(SMOKE.max_t), out, workers=2,
                    time_budget=0, table={"path": "synthetic", "trainable": "synthetic"})
    assert meta["status"] == "complete" and meta["backend"] == "replay"
    with warnings.catch_warnings():
        warnings.simplefilter("error", LogWarning)
        s = load_search(out)
    assert s.max_t == SMOKE.max_t and s.workers == 2
    assert s.hyperparameters == problem_for("smoke").hyperparameter_names
    t = trial_table(s)
    res = pd.read_csv(out / logs.RESULTS_CSV)
    assert len(t) == len(res) and t["final_loss"].notna().all()
    assert len(s.curves) == res["m:epochs"].sum()
    assert s.duration == pytest.approx(s.curves["t_end"].max(), abs=1e-4)
    stopped = res.loc[res["m:status"] == "stopped", "m:epochs"]
    if peer == "syne_random":
        assert stopped.empty and (res["m:epochs"] == SMOKE.max_t).all()
    else:  # stopped at rungs only: grace * eta**k below max_t, whatever the bracket
        assert len(stopped) and set(stopped) <= set(asha_rungs(SMOKE.max_t, 1, 3))
    md = s.metadata
    assert md["method"] == peer and md["peer"]["library"] == "syne_tune"
    assert md["peer"]["version"] == "0.16.0" and md["stopped_by"] == "epochs"
    assert md["peer"]["scheduler_real_seconds"] > 0
    assert md["peer"]["timeline_drift_s"] < 1e-4  # Syne Tune's clock and ours agree
    assert md["decision_summary"]["n"] == len(res)
    assert md["method_settings"]["scheduler"] == get_peer(peer).describe(SMOKE)["scheduler"]


@pytest.mark.parametrize("peer", SYNE)
def test_same_seed_gives_identical_csvs(tmp_path, peer):
    curve = synthetic_curves(SMOKE.max_t, fail={"diverge": 0.1})
    for d in ("a", "b", "c"):  # 150 epochs, ~50 trials: BOHB's KDE proposes after 36
        run_peer(peer, "smoke", 1 if d == "c" else 0, curve, tmp_path / d, budget=150)
    for name in (logs.RESULTS_CSV, logs.LEARNING_CURVES_CSV):
        a, b, c = ((tmp_path / d / name).read_bytes() for d in "abc")
        assert a == b
        assert a != c


def test_kde_first_fit_is_syne_tunes_own_rule():
    from syne_tune.optimizer.schedulers.searchers.kde.kde_searcher import (
        KernelDensityEstimator,
    )

    space = syne_space(problem_for("smoke"))
    d = kde_min_points(space) - 1
    for n_min in (None, d + 1, d + 4):
        kde = KernelDensityEstimator(space, num_min_data_points=n_min, random_seed=0)
        first = next(n for n in range(1, 400)
                     if kde._check_data_shape_and_good_size([n, d]) is not None)
        assert kde_first_fit(d, n_min, num_init_random_draws=0) == first
    assert (d, kde_first_fit(d, None), kde_first_fit(d, d + 1)) == (17, 120, 36)


def test_bohb_model_proposes_within_the_budget_and_the_log_says_so(tmp_path, monkeypatch):
    out = tmp_path / "bohb"
    # 250 epochs at smoke: 56 trials; the KDE may propose from trial 36 on
    meta = run_peer("syne_bohb", "smoke", 0, synthetic_curves(SMOKE.max_t), out, budget=250,
                    time_budget=0)
    ms, model = meta["method_settings"], meta["peer"]["model"]
    assert (ms["num_min_data_points"], ms["model_from_trials"]) == (18, 36)
    assert ms["random_fraction"] == 0.33 and ms["num_init_random_draws"] == 5
    assert model["trials"] == meta["n_trials"] == 56
    assert model["first_from_model"] >= 36 and model["from_model"] >= 5
    # Syne Tune's default (num_min_data_points = d) on the same replay: random to the end
    monkeypatch.setattr(syne_peers, "kde_min_points", lambda space: None)
    s = settings_for("smoke", budget=250, time_budget=0)
    assert get_peer("syne_bohb").describe(s)["model_from_trials"] == 120
    _, info = simulate_with_info("syne_bohb", s, 0, synthetic_curves(SMOKE.max_t))
    assert info["model"]["from_model"] == 0 and info["model"]["first_from_model"] is None


@pytest.mark.parametrize("peer", SYNE)
def test_device_budget_is_a_hard_cut_that_counts_running_trials(peer):
    s = settings_for("smoke", budget=10_000, time_budget=0, device_budget=30.0)
    run, _ = simulate_with_info(peer, s, 0, synthetic_curves(SMOKE.max_t), workers=2)
    res, lc = _frame(run)
    spent = (lc["epoch_seconds"] * lc["devices"]).sum()
    assert run.stopped_by == "device_budget"
    # every epoch that ended counts; the cut overshoots by at most one epoch per worker
    assert 30.0 <= spent <= 30.0 + 2 * lc["epoch_seconds"].max()
    lc = lc.sort_values(["t_end", "job_id"], kind="mergesort")
    cut = lc["t_end"].to_numpy()[((lc["epoch_seconds"] * lc["devices"]).cumsum() >= 30.0)
                                 .to_numpy()][0]
    assert (lc["t_start"] <= cut).all() and (res["m:timestamp_submit"] < cut).all()
    assert "device_budget" in set(res["m:reason"])


def test_time_budget_stops_running_trials():
    s = settings_for("smoke", time_budget=15.0)
    run, _ = simulate_with_info("syne_random", s, 0, synthetic_curves(SMOKE.max_t))
    res, lc = _frame(run)
    assert run.stopped_by == "time"
    assert (res["m:timestamp_submit"] < 15.0).all()
    late = res[res["m:reason"] == "time_budget"]
    assert len(late) and (late["m:status"] == "stopped").all()


def _sequence(values, tail: float = 9.0):
    """A curve function that hands out constant 1-s-per-epoch curves in call order (Syne Tune
    starts its trials in order; it may start a few more than we keep)."""
    calls = []

    def curve(config):
        v = values[len(calls)] if len(calls) < len(values) else tail
        calls.append(config)
        return Recorded([(v, v, 1.0)] * SMOKE.max_t)

    return curve


def test_asha_stopping_continues_only_the_top_1_over_eta():
    """One worker, eta 3, rungs at 1 and 3 epochs. A trial continues at a rung when the share
    of the rung's values (its own included) strictly better than its own is at most 1/3:

    job 2 (6.0) at rung 1: 2 of 3 better -> stop; job 3 (4.5) at rung 3: 1 of 3 -> continue;
    job 5 (4.2) at rung 1: 2 of 6 -> continue, at rung 3: 2 of 5 -> stop; job 6 (5.5): 5 of 7.
    """
    values = [5.0, 4.0, 6.0, 4.5, 3.5, 4.2, 5.5]
    s = settings_for("smoke", budget=41, time_budget=0)  # 9+9+1+9+9+3+1 epochs: 7 trials
    run, _ = simulate_with_info("syne_asha_stop", s, 0, _sequence(values), workers=1)
    res, _ = _frame(run)
    assert res["job_id"].tolist() == list(range(7))
    assert res["m:epochs"].tolist() == [9, 9, 1, 9, 9, 3, 1]
    assert res["m:status"].tolist() == ["ok", "ok", "stopped", "ok", "ok", "stopped", "stopped"]
    # where our rule ("ray": below the 2/3 quantile of the earlier values) stops job 3
    assert not ray_continues(-4.5, [-5.0, -4.0], 3)


def test_failures_take_their_recorded_time():
    """One worker: oom after 0.5 s; a 1 s epoch then a divergence 0.25 s into epoch 2; a full
    curve, each better than the one before: nothing is stopped."""
    recorded = [Recorded([], "oom", 0.5), Recorded([(0.5, 0.6, 1.0)], "diverged", 0.25),
                Recorded([(0.25, 0.3, 1.0)] * SMOKE.max_t)]
    calls = []

    def curve(config):
        calls.append(config)
        return recorded[min(len(calls), 3) - 1]

    s = settings_for("smoke", budget=4, time_budget=0)
    run, info = simulate_with_info("syne_asha_stop", s, 0, curve, workers=1)
    res, lc = _frame(run)
    assert res["m:reason"].tolist() == ["oom", "diverged", ""]
    assert res["m:epochs"].tolist() == [0, 1, SMOKE.max_t]
    assert res["m:trial_start"].tolist() == [0.0, 0.5, 1.75]
    assert res["m:trial_end"].tolist() == [0.5, 1.75, 1.75 + SMOKE.max_t]
    assert res["objective"].tolist()[:2] == ["F_oom", "F_diverged"]
    assert lc[lc["job_id"] == 1]["t_end"].tolist() == [1.5]
    assert info["timeline_drift_s"] < 1e-4


def test_cli(tmp_path, capsys):
    out = tmp_path / "replay"
    args = ["--backend", "replay", "--scale", "smoke", "--seeds", "0 1", "--methods",
            "syne_asha_stop syne_random", "--table", "synthetic", "--out", str(out),
            "--budget", "27"]
    assert campaign_main(args) == 0
    assert {p.name for p in (out / "syne_asha_stop").iterdir()} == {"seed0", "seed1"}
    assert campaign_main(args) == 0
    assert capsys.readouterr().err.count("skipped (complete)") == 4


@pytest.mark.parametrize("earlier, value, syne, ours", [
    ([1.0, 2.0, 3.0], 1.8, True, False),  # one of four better <= 1/4; worse than quantile 1.5
    ([1.0, 3.0], 1.4, False, True),  # one of three better > 1/4; better than quantile 1.5
    ([1.0, 2.0, 2.0], 2.0, True, False),  # a tie ranks at the top of its group
])
def test_the_two_asha_cutoffs_differ_as_documented(earlier, value, syne, ours):
    """The examples of the module docstring (eta 4, losses: smaller is better)."""
    from syne_tune.optimizer.schedulers.asha import Bracket

    bracket = Bracket(1, 16, 4, 0)
    for trial, v in enumerate(earlier):
        bracket.on_result(trial, 1, {"val_loss": v})
    assert (bracket.on_result(len(earlier), 1, {"val_loss": value}) == "CONTINUE") == syne
    assert ray_continues(-value, [-v for v in earlier], 4) == ours
