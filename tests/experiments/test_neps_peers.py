"""The NePS peer (PriorBand) on synthetic learning curves, in simulated time (seconds)."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("neps")

import pandas as pd  # noqa: E402

from analysis.logs import LogWarning, load_search, trial_table  # noqa: E402
from experiments import logs  # noqa: E402
from experiments.methods import settings_for  # noqa: E402
from experiments.peers import PEERS, get_peer, run_peer, simulate_with_info  # noqa: E402
from experiments.peers.neps_peers import FIDELITY, neps_space, prior_values  # noqa: E402
from experiments.peers.simulate import synthetic_curves  # noqa: E402
from experiments.space import problem_for  # noqa: E402
from experiments.table import default_values  # noqa: E402

from .conftest import hp_values  # noqa: E402

SMOKE = settings_for("smoke", time_budget=0)  # max_t 9, grace 1, eta 3, 81 epochs


def test_registry_has_priorband_and_names_why_ifbo_cannot_run():
    assert "neps_priorband" in PEERS
    with pytest.raises(ValueError, match="figshare"):
        get_peer("neps_ifbo")


@pytest.mark.parametrize("scale", ["smoke", "small", "paper"])
def test_space_and_prior_cover_every_hyperparameter(scale):
    problem = problem_for(scale)
    prior = prior_values(problem, default_values(scale))
    space = neps_space(problem, settings_for(scale), prior)
    names = problem.hyperparameter_names
    assert set(space.elements) == {*names, FIDELITY}  # NePS sorts them by name
    s = settings_for(scale)
    fid = space.elements[FIDELITY]
    assert (fid.lower, fid.upper, fid.is_fidelity) == (s.grace, s.max_t, True)
    for hp in problem.space.values():
        p, values = prior[hp.name], hp_values(hp)
        if values is not None:  # a grid or names: a value of it (or no prior)
            assert p is None or p in values, hp.name
            assert p is None or space.elements[hp.name].prior == p
        else:
            assert hp.lower <= p <= hp.upper, hp.name
    assert prior["lr"] == pytest.approx(min(max(default_values(scale)["lr"], 1e-4), 3e-2))


def test_runs_logs_load_and_promotions_continue_from_their_checkpoints(tmp_path):
    out = tmp_path / "neps_priorband" / "seed0"
    meta = run_peer("neps_priorband", "smoke", 0, synthetic_curves(SMOKE.max_t), out,
                    workers=2, time_budget=0, table={"path": "synthetic",
                                                     "trainable": "synthetic"})
    assert meta["status"] == "complete" and meta["backend"] == "replay"
    with warnings.catch_warnings():
        warnings.simplefilter("error", LogWarning)
        s = load_search(out)
    res = pd.read_csv(out / logs.RESULTS_CSV)
    assert len(trial_table(s)) == len(res)
    assert set(res["m:budget"]) <= {1, 3, 9}  # NePS's rungs are ours: grace * eta**k
    ms, peer = meta["method_settings"], meta["peer"]
    assert ms["rungs"] == {"0": 1, "1": 3, "2": 9} and ms["checkpoints"] is True
    assert ms["prior_confidence"] == "low" and ms["prior"]["dropout"] == 0.0
    assert peer["library"] == "neps" and peer["version"] == "0.17.0"
    assert peer["promotions"] > 0 and peer["continued_epochs"] >= peer["promotions"]
    # every trial trains to its fidelity, never pruned; a promotion repeats a configuration at
    # the next rung and continues the curve of its previous trial: epochs z + 1 .. z'
    curves = s.curves.groupby("job_id")["epoch"].agg(["min", "max", "count"])
    res = res.set_index("job_id")
    assert (curves["max"] == res.loc[curves.index, "m:budget"]).all()
    assert (curves["count"] == curves["max"] - curves["min"] + 1).all()
    assert (res.loc[curves.index, "m:epochs"] == curves["count"]).all()
    key = res.filter(like="p:").astype(str).agg("|".join, axis=1)
    continued = 0
    for job, row in curves[curves["min"] > 1].iterrows():
        before = res[(key == key[job]) & (res.index < job)]
        assert row["min"] - 1 == before["m:budget"].max(), job  # from the rung below
        continued += row["min"] - 1
    assert continued == peer["continued_epochs"]  # every promotion ended and is logged
    # the same configuration's curve goes on: the promoted epochs are the table's
    full = synthetic_curves(SMOKE.max_t)
    lc = s.curves.set_index(["job_id", "epoch"])["val_loss"]
    for job in curves.index[curves["min"] > 1][:3]:
        rec = full({k[2:]: logs.native(v) for k, v in res.loc[job].items() if k.startswith("p:")})
        for e in range(int(curves.loc[job, "min"]), int(curves.loc[job, "max"]) + 1):
            assert lc[(job, e)] == pytest.approx(rec.curve[e - 1][0])


def test_same_seed_gives_identical_csvs(tmp_path):
    curve = synthetic_curves(SMOKE.max_t, fail={"diverge": 0.1})
    for d in ("a", "b", "c"):
        run_peer("neps_priorband", "smoke", 1 if d == "c" else 0, curve, tmp_path / d)
    for name in (logs.RESULTS_CSV, logs.LEARNING_CURVES_CSV):
        a, b, c = ((tmp_path / d / name).read_bytes() for d in "abc")
        assert a == b and a != c


def test_failed_trainings_are_never_promoted():
    curve = synthetic_curves(SMOKE.max_t, fail={"diverge": 0.3})
    run, _ = simulate_with_info("neps_priorband", SMOKE, 0, curve)
    res = pd.DataFrame(run.results)
    key = res.filter(like="p:").astype(str).agg("|".join, axis=1)
    failed = res[res["m:status"] == "failed"]
    assert len(failed)  # 30 % diverge in epoch 2 (at fidelity 1 they train, then promoted)
    for k, job in zip(key[failed.index], failed["job_id"]):
        assert (res.loc[key == k, "job_id"] <= job).all()  # never asked again after it


def test_device_budget_is_a_hard_cut_that_counts_running_trials():
    s = settings_for("smoke", budget=10_000, time_budget=0, device_budget=30.0)
    run, _ = simulate_with_info("neps_priorband", s, 0, synthetic_curves(SMOKE.max_t))
    lc = pd.DataFrame(run.curves)
    spent = (lc["epoch_seconds"] * lc["devices"]).sum()
    assert run.stopped_by == "device_budget"
    assert 30.0 <= spent <= 30.0 + 2 * lc["epoch_seconds"].max()
