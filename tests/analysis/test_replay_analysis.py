"""analysis.replay on hand-made replay logs whose answers are worked out in the comments.

Every epoch below is its own trial, trained one after the other on one device, so that the
cumulative compute after epoch i is i x (epoch seconds / 3600) device-hours.
"""

import hashlib
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import logs as L
from analysis import replay
from analysis.make_figures import build as build_live
from analysis.metrics import (
    bootstrap_median,
    bootstrap_median_band,
    incumbent_on_grid,
    mean_rank,
    search_trace,
)
from tests.analysis.fakelogs import replay_scale, synthetic_scale, write_search

HOUR = 3600.0


def _search(root, method, seed, losses, seconds=HOUR):
    """One epoch per trial, back to back: compute after epoch i = i x seconds / 3600."""
    trials = [{"job_id": j, "losses": [x], "t0": j * seconds, "seconds": seconds}
              for j, x in enumerate(losses)]
    return write_search(root, "smoke", method, seed, trials, workers=1, backend="replay",
                        settings={"max_t": 1})


# Three methods x two seeds, the whole table worked out by hand:
#   random : 1 device-h epochs; seed0 5, 4, 3 (final 3); seed1 6, 2, 2.5 (final 2)
#   asha_bo: 0.5 device-h epochs; seed0 3.0, 2.9, ..., 2.5; seed1 2.0 x 6
#   bo     : 1 device-h epochs; seed0 4, 3.5, 3.2; seed1 5, 4, 3.1 (never <= 3)
#   default: one epoch, loss 4
# Every search spends 3 device-h: budget B = 3.
# Table (TABLE, 11 configurations, max_t 1): sorted 2, 3, 3.5, 4 x 8 -> linear quantiles at
# positions 10 q: top 10 % = 3.0, top 5 % = 2.5, top 1 % = 2.1; L_ref = 2.
# Every trial is one epoch, so its final loss is its only loss.
# top 10 % (3.0): device-h random 3 and 2 (median 2.5); asha_bo 0.5 and 0.5; bo never.
#   speedup asha_bo 2.5 / 0.5 = 5; paired resamples give random's median 2, 2.5 or 3 over
#   0.5 -> [4, 6]; bo never; reached 1, 1, 0.
# top 5 % (2.5): random never and 2 -> median never; asha_bo 3 (its 6th epoch) and 0.5 ->
#   1.75. Random's seed0 never: its total 3 stands in -> median 2.5 -> speedup >= 2.5 / 1.75
#   (a lower bound). The goal (top 5 %, >= 4) is not met.
# top 1 % (2.1): asha_bo never and 0.5 -> median never: speedup "never".
# Regret: random finals 3, 2 -> 1, 0 (median 0.5); at 1/2 B = 1.5 device-h 5, 6 -> 3, 4.
# Ranks at c = 0.75 (25 %): random and bo have no epoch yet (inf, tied), asha_bo 3.0 / 2.0
#   -> random 2.5, asha_bo 1, bo 2.5.
# At 1.5 (50 %): seed0 random 5, asha_bo 2.8, bo 4; seed1 6, 2, 5 -> 3, 1, 2.
# At 3 (100 %): seed0 3, 2.5, 3.2 -> 2, 1, 3; seed1 2, 2, 3.1 -> 1.5, 1.5, 3
#   -> random 1.75, asha_bo 1.25, bo 3.
# Improvement: random's per-seed 100 (4 - 3) / 4 = 25 and 50 -> median 37.5.
HAND = {
    "random": {0: ([5.0, 4.0, 3.0], HOUR), 1: ([6.0, 2.0, 2.5], HOUR)},
    "asha_bo": {0: ([3.0, 2.9, 2.8, 2.7, 2.6, 2.5], HOUR / 2), 1: ([2.0] * 6, HOUR / 2)},
    "bo": {0: ([4.0, 3.5, 3.2], HOUR), 1: ([5.0, 4.0, 3.1], HOUR)},
    "default": {0: ([4.0], HOUR), 1: ([4.0], HOUR)},
}
REQUIRED = ("default", "random", "asha_bo", "bo")
TABLE = [2.0, 3.0, 3.5] + [4.0] * 8


def _hand(root):
    for m, seeds in HAND.items():
        for k, (losses, sec) in seeds.items():
            _search(root, m, k, losses, sec)
    (root / "smoke" / L.LCTABLE_CSV).write_text(
        "config_id,epoch,val_loss,train_loss,epoch_seconds,status,reason,p:lr\n"
        + "".join(f"{i},1,{x},{x},10,ok,,0.01\n" for i, x in enumerate(TABLE)))
    return root / "smoke" / L.REPLAY_DIR


def _analyse(root):
    return replay.analyse(L.load_scale(root), table=L.table_final_losses(
        root.parent / L.LCTABLE_CSV))


def _run(root, out, *extra):
    return replay.main(["--scale", "smoke", "--results", str(root / "smoke" / L.REPLAY_DIR),
                        "--out", str(out), "--min-seeds", "2", "--methods",
                        ",".join(REQUIRED), *extra])


# ---- metrics functions --------------------------------------------------------------------
def test_incumbent_on_grid_and_median_by_hand(tmp_path):
    root = tmp_path
    for k, losses in enumerate(([5.0, 4.0, 3.0], [6.0, 2.0, 2.5], [4.0, 4.0, 1.0])):
        _search(root, "random", k, losses)
    runs = L.load_scale(root / "smoke" / L.REPLAY_DIR)
    trials, _ = L.tidy(runs)
    grid = [0.5, 1.0, 2.5, 3.0, 4.0]  # device-h; epochs end at 1, 2, 3
    v = np.stack([incumbent_on_grid(search_trace(s, trials), grid)
                  for s in runs["random"].values()])
    inf = math.inf
    assert v.tolist() == [[inf, 5, 4, 3, 3], [inf, 6, 2, 2, 2], [inf, 4, 4, 1, 1]]
    med, lo, hi = bootstrap_median_band(v)
    assert med.tolist() == [inf, 5, 4, 2, 2]
    for j in range(len(grid)):  # each column: the scalar bootstrap of the same seeds
        assert (med[j], lo[j], hi[j]) == bootstrap_median(v[:, j])
    assert np.all(lo[1:] <= med[1:]) and np.all(med[1:] <= hi[1:])


def test_incumbent_on_grid_nothing_ended_and_single_seed():
    inc = pd.DataFrame({"device_hours": [1.0, 2.0, 3.0], "incumbent_loss": [np.nan, 3.0, 3.0]})
    assert incumbent_on_grid(inc, [0.0, 1.0, 2.0, 9.0]).tolist() == [math.inf, math.inf, 3.0,
                                                                     3.0]
    med, lo, hi = bootstrap_median_band(np.array([[1.0, 2.0]]))
    assert med.tolist() == [1.0, 2.0] and np.isnan(lo).all() and np.isnan(hi).all()


def test_mean_rank_by_hand():
    # 3 methods x 2 seeds at one point: seed0 1, 2, 3 -> ranks 1, 2, 3;
    # seed1 3, 2, 2 -> 3, 1.5, 1.5 (the tie shares ranks 1 and 2) -> 2, 1.75, 2.25.
    # NaN is no result yet: worst, and tied with other NaN or inf.
    v = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 2.0]])  # (methods, seeds)
    assert mean_rank(v).tolist() == [2.0, 1.75, 2.25]
    v = np.array([[[1.0, np.nan]], [[np.nan, np.nan]], [[2.0, np.inf]]])  # (3, 1, 2)
    assert mean_rank(v).tolist() == [[1.0, 2.0], [3.0, 2.0], [2.0, 2.0]]


# ---- the whole analysis -------------------------------------------------------------------
def test_analysis_by_hand(tmp_path):
    res = _analyse(_hand(tmp_path))
    refs = res["refs"]
    assert refs["l_ref"] == 2.0 and refs["grid_end_device_hours"] == pytest.approx(3.0)
    assert [refs["targets"][q] for q in (0.01, 0.05, 0.1)] == pytest.approx([2.1, 2.5, 3.0])
    assert refs["default_loss"] == 4.0 and refs["rank_seeds"] == 2
    s = res["summary"].set_index("method")
    assert list(s.index) == ["random", "asha_bo", "bo"]
    assert s.loc["random", "incumbent_loss"] == 2.5 and s.loc["random", "regret"] == 0.5
    assert s.loc["random", "regret_1/2"] == 3.5 and math.isnan(s.loc["random", "regret_1/8"])
    assert s.loc["asha_bo", "regret_1/4"] == 0.5  # at 0.75 device-h: 3.0 and 2.0
    assert s.loc["random", "improvement_pct"] == pytest.approx(37.5)
    assert s["dh_to_top10"].tolist() == pytest.approx([2.5, 0.5, math.inf])
    assert s["reached_top10"].tolist() == [1.0, 1.0, 0.0]
    assert s.loc["asha_bo", ["speedup_top10", "speedup_top10_lo", "speedup_top10_hi"]] \
        .tolist() == pytest.approx([5.0, 4.0, 6.0])
    assert s.loc["bo", "speedup_top10"] == 0.0
    assert s.loc["asha_bo", "speedup_top5"] == pytest.approx(2.5 / 1.75)
    assert s.loc["asha_bo", "speedup_top5_bound"] and s.loc["random", "speedup_top5"] == 0.0
    assert s.loc["asha_bo", "speedup_top1"] == 0.0 and s.loc["asha_bo", "reached_top1"] == 0.5
    r = res["ranks"].set_index("method")
    assert r["rank_0.25"].tolist() == [2.5, 1.0, 2.5]
    assert r["rank_0.5"].tolist() == [3.0, 1.0, 2.0]
    assert r["rank_1"].tolist() == [1.75, 1.25, 3.0]
    goal = refs["goal"]
    assert not goal["met"] and goal["lower_bound_only"] and goal["target_quantile"] == 0.05
    assert ": not met; speedup >1.43 [" in replay._goal_line(goal)
    c = res["curves"]
    r = c[c["method"] == "random"]
    assert r["device_hours"].iloc[-1] == pytest.approx(3.0)  # the grid ends at C
    # median over seeds of I: before 1 device-h nothing, then (5+6)/2, (4+2)/2, (3+2)/2
    at = {x: r.loc[(r["device_hours"] - x).abs().idxmin(), "median_incumbent"]
          for x in (0.5, 1.5, 2.5, 3.0)}
    assert at == {0.5: math.inf, 1.5: 5.5, 2.5: 3.0, 3.0: 2.5}


def test_goal_met_is_reported_as_data(tmp_path):
    root = _hand(tmp_path)
    _search(tmp_path, "asha_bo", 0, [2.5] * 6, HOUR / 2)  # top 5 % after 0.5 device-h
    g = _analyse(root)["refs"]["goal"]
    # random's censored median 2.5 over asha_bo's 0.5: >= 5, a lower bound
    assert g["speedup"] == pytest.approx(5.0) and g["met"] and g["lower_bound_only"]
    assert ": met; speedup >5.00 [" in replay._goal_line(g)


def test_tables_written_and_byte_identical(tmp_path, capsys):
    _hand(tmp_path)
    out = tmp_path / "out"
    assert _run(tmp_path, out) == 0
    first = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    assert set(first) == {f"{n}.{e}" for n in ("summary", "ranks") for e in ("md", "tex", "csv")} \
        | {f"{n}.{e}" for n in ("fractions", "targets", "agreement", "head_to_head",
                                 "head_to_head_top1") for e in ("md", "tex")} \
        | {"per_seed.csv", "regret_area.csv", "curves.csv", "references.json"} \
        | {"aggregate.md", "aggregate.csv", "performance_profile.pdf",
           "performance_profile.png"} \
        | {f"{n}.{e}" for n in replay.FIGURES for e in ("pdf", "png")}
    assert _run(tmp_path, out) == 0
    second = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    assert first == second
    md = (out / "targets.md").read_text()
    cells = [c.strip() for c in next(r for r in md.splitlines()
                                     if r.startswith("| asha_bo ")).split("|")[1:-1]]
    assert cells[:3] == ["asha_bo", "2", "0.50"] and cells[4].startswith("never")
    assert cells[5:8] == ["1.00", "1.75 [0.5, 3]", ">1.43 [1.00, 4.00]"]  # pairs (3, 3), (2, 0.5)
    assert cells[8:] == ["1.00", "0.5 [0.5, 0.5]", "5.00 [4.00, 6.00]"]
    bo = [c.strip() for c in next(r for r in md.splitlines() if r.startswith("| bo ")).split("|")]
    assert bo[-3:-1] == ["never [never, never]", "never [never, never]"]
    assert "Goal (asha_bo reaches the top 5 % target with <= 1/4 of random's compute" in md
    assert "top 1 % = 2.1000, top 5 % = 2.5000, top 10 % = 3.0000" in md
    assert "0.00" not in bo[-2]
    assert "\\toprule" in (out / "summary.tex").read_text()
    fr = (out / "fractions.md").read_text()
    assert "| random " in fr and "3.5000 [3.0000, 4.0000]" in fr
    h2h = (out / "head_to_head.md").read_text()
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]]
             for r in h2h.splitlines() if r.startswith("| ") and "---" not in r}
    assert cells["method"] == ["vs random", "vs asha_bo"]  # the paper's methods present
    assert cells["asha_bo"] == [">1.43 [1.00, 4.00]", "1.00 [1.00, 1.00]"]
    assert cells["random"][1] == "never [never, 0.25]" and cells["bo"][0].startswith("never")
    assert "head to head, to the top 5 % target: vs random >1.43 [1.00, 4.00]: cannot " \
        "tell." in h2h
    top1 = (out / "head_to_head_top1.md").read_text()
    assert "to the top 1 % target" in top1 and "head to head, to the top 1 % target: vs " \
        "random" in top1 and top1 != h2h
    refs = json.loads((out / "references.json").read_text())
    assert refs["goal"]["met"] is False and refs["targets"]["0.1"] == 3.0
    assert refs["l_ref"] == 2.0 and "smoke/lctable.csv" in refs["l_ref_source"]


def test_default_loss_option_without_default_run(tmp_path):
    root = _hand(tmp_path)
    shutil.rmtree(root / "default")
    out = tmp_path / "out"
    assert replay.main(["--scale", "smoke", "--results", str(root), "--out", str(out),
                        "--min-seeds", "2", "--methods", "random,asha_bo,bo",
                        "--default-loss", "5.0"]) == 0
    s = pd.read_csv(out / "summary.csv").set_index("method")
    assert s.loc["random", "improvement_pct"] == pytest.approx(50.0)  # 100 (5 - 2.5) / 5


def test_default_loss_from_the_learning_curve_table(tmp_path):
    root = _hand(tmp_path)
    shutil.rmtree(root / "default")
    # configuration 0 is the default: its last ok epoch has val loss 5 (config 1 is not it)
    (tmp_path / "smoke" / L.LCTABLE_CSV).write_text(
        "config_id,epoch,val_loss,train_loss,epoch_seconds,status,reason,p:lr\n"
        "0,1,6.0,6.0,10,ok,,0.001\n0,2,5.0,5.0,10,ok,,0.001\n1,1,1.0,1.0,10,ok,,0.01\n")
    assert L.table_default_loss(tmp_path / "smoke" / L.LCTABLE_CSV) == 5.0
    assert L.table_default_loss(tmp_path / "nothing.csv") is None
    out = tmp_path / "out"
    assert replay.main(["--scale", "smoke", "--results", str(root), "--out", str(out),
                        "--min-seeds", "2", "--methods", "random,asha_bo,bo"]) == 0
    s = pd.read_csv(out / "summary.csv").set_index("method")
    assert s.loc["random", "improvement_pct"] == pytest.approx(50.0)  # 100 (5 - 2.5) / 5
    assert "configuration 0 of" in (out / "summary.md").read_text()


# ---- missing and partial logs -------------------------------------------------------------
def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert err.endswith("(run `make replay SCALE=smoke`)")
    return err


def test_missing_logs_exit_2(tmp_path, capsys):
    assert _run(tmp_path, tmp_path / "out") == 2
    assert "no replay logs under" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_partial_logs_name_what_is_missing(tmp_path, capsys):
    root = _hand(tmp_path)
    shutil.rmtree(root / "bo")
    (root / "asha_bo" / "seed1" / L.LEARNING_CURVES_CSV).unlink()
    md = root / "random" / "seed1" / L.METADATA_JSON
    md.write_text(json.dumps({**json.loads(md.read_text()), L.MD_STATUS: "interrupted"}))
    live = _search(tmp_path, "optuna_tpe", 0, [3.0]) / L.METADATA_JSON  # a live log put there
    live.write_text(json.dumps({k: v for k, v in json.loads(live.read_text()).items()
                                if k != L.MD_BACKEND}))
    assert _run(tmp_path, tmp_path / "out") == 2
    err = _one_line_error(capsys)
    assert "are partial: no bo; " in err
    assert "; asha_bo: 1 of 2 seeds complete, seed1 lacks learning_curves.csv; " in err
    assert "; random: 1 of 2 seeds complete, seed1 status 'interrupted'" in err
    assert "; optuna_tpe: 0 of 2 seeds complete, seed0 is not a replay log" in err


def test_too_few_seeds(tmp_path, capsys):
    _hand(tmp_path)
    assert _run(tmp_path, tmp_path / "out", "--min-seeds", "20") == 2
    assert "random: 2 of 20 seeds complete" in _one_line_error(capsys)


# ---- the live analysis leaves replay logs alone -------------------------------------------
def test_make_figures_ignores_replay_and_lctable(tmp_path):
    res = tmp_path / "results"
    synthetic_scale(res, seeds=(0,), n_trials=3)
    replay_scale(res, "smoke", seeds=range(2), n_trials=3)
    max_t = int(next(iter(L.load_scale(res / "smoke")["random"].values())).max_t)
    (res / "smoke" / "lctable.csv").write_text(  # the searches' max_t: the same design
        "config_id,epoch,val_loss\n" + "".join(f"0,{e},2.0\n" for e in range(1, max_t + 1)))
    (res / "smoke" / "lctable.json").write_text("{}\n")
    runs = L.load_scale(res / "smoke")
    assert list(runs) == ["default", "random", "asha"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_live("smoke", res, tmp_path / "out")
    assert not any("replay" in str(w.message) or "lctable" in str(w.message) for w in caught)
    # the table is read for L_ref and the targets, never as a method
    refs = json.loads((tmp_path / "out" / "smoke" / "references.json").read_text())
    assert refs["targets"]["0.05"] == 2.0 and refs["n_configs"] == 1
    per = pd.read_csv(tmp_path / "out" / "smoke" / "per_seed.csv")
    assert sorted(set(per["method"])) == ["asha", "random"]
    assert "replay" not in (tmp_path / "out" / "smoke" / "summary.md").read_text()


def _live(root, finals: dict, max_t=1, budget=1.5 * HOUR, loss=None):
    for m, losses in finals.items():
        for k, x in enumerate(losses):
            write_search(root, "smoke", m, k, [{"job_id": 0, "losses": [x], "seconds": HOUR}],
                         workers=1, settings={"max_t": max_t},
                         metadata={"budget_device_s": budget, L.LOSS: loss})


def test_live_vs_replay_ranking_by_hand(tmp_path):
    root = _hand(tmp_path)
    # replayed, at the live budget 1.5 device-h: random 5 and 6 (median 5.5), asha_bo 2.8
    # and 2.0 (2.4), bo 4 and 5 (4.5); live finals: random 3, 2 (2.5), asha_bo 2.2, bo 3.5
    _live(tmp_path, {"random": [3.0, 2.0], "asha_bo": [2.2], "bo": [3.5]})
    a = replay.live_agreement(tmp_path / "smoke", L.load_scale(root))
    assert a["status"] == "compared" and a["n_methods"] == 3
    rows = {r["method"]: r for r in a["rows"]}
    assert (rows["random"]["live"], rows["random"]["replay"]) == (2.5, 5.5)
    assert (rows["asha_bo"]["replay"], rows["bo"]["replay"]) == (2.4, 4.5)
    # pairs: (random, asha_bo) concordant, (random, bo) discordant, (asha_bo, bo) concordant
    assert a["kendall_tau"] == pytest.approx(1 / 3)
    assert _run(tmp_path, tmp_path / "out") == 0
    md = (tmp_path / "out" / "agreement.md").read_text()
    assert "Kendall's tau of the two rankings: 0.33 over 3 methods" in md


def test_live_vs_replay_pre_registered_ranking_by_device_hours_to_the_target(tmp_path):
    root = _hand(tmp_path)
    _live(tmp_path, {"random": [3.0, 2.0], "asha_bo": [2.2], "bo": [3.5]})
    # target 3.0 within the live budget 1.5 device-h. Replayed: random reaches it at 3 and 2
    # device-h (never within 1.5), asha_bo at 0.5 and 0.5, bo never. Live (one 1 device-h
    # epoch): random 1 and 1, asha_bo 1, bo never. Ranks (random, asha_bo, bo): replay
    # 2.5, 1, 2.5; live 1.5, 1.5, 3: one concordant pair, one tie in each -> tau-b 1/2
    a = replay.live_agreement(tmp_path / "smoke", L.load_scale(root), {0.05: 3.0})
    rows = {r["method"]: r for r in a["rows"]}
    assert (rows["random"]["live_dh_to_target"], rows["random"]["replay_dh_to_target"]) \
        == (1.0, math.inf)
    assert rows["asha_bo"]["replay_dh_to_target"] == 0.5
    assert rows["bo"]["live_dh_to_target"] == math.inf
    assert a["kendall_tau_target"] == pytest.approx(0.5) and a["target_loss"] == 3.0
    (tmp_path / "out").mkdir()
    replay.write_agreement(a, tmp_path / "out")
    md = (tmp_path / "out" / "agreement.md").read_text()
    assert "device-hours to the top 5 % target (val_loss 3" in md
    bo = next(line for line in md.splitlines() if line.startswith("| bo "))
    assert [c.strip() for c in bo.split("|")[2:4]] == ["never", "never"]
    # without targets there is no pre-registered statistic, and the final-loss one stays
    a = replay.live_agreement(tmp_path / "smoke", L.load_scale(root))
    assert math.isnan(a["kendall_tau_target"]) and a["kendall_tau"] == pytest.approx(1 / 3)


def _stamp(root, key: str, value: dict):
    """Add ``value`` under ``key`` to the metadata.json of every search under ``root``."""
    for md in root.rglob(L.METADATA_JSON):
        md.write_text(json.dumps({**json.loads(md.read_text()), key: value}))


def test_live_vs_replay_speed_matched_when_the_live_cpu_was_timed(tmp_path):
    root = _hand(tmp_path)
    _stamp(root, "replay", {"sha256": "t1"})
    _live(tmp_path, {"random": [3.0, 2.0], "asha_bo": [2.2], "bo": [3.5]})
    for m in ("random", "asha_bo", "bo"):
        _stamp(tmp_path / "smoke" / m, "machine", {"cpu_model": "CPU A"})
    a = replay.live_agreement(tmp_path / "smoke", L.load_scale(root), {0.05: 3.0})
    assert a["speed"] == {"live_cpu_models": ["CPU A"], "table_cpu_model": None}
    assert "replay_matched" not in a["rows"][0]
    (tmp_path / "out").mkdir()
    replay.write_agreement(a, tmp_path / "out")
    md = (tmp_path / "out" / "agreement.md").read_text()
    assert "no `make speed` run of that CPU model against this table" in md
    # CPU A's epochs cost twice the table's: the live budget 1.5 device-h is 0.75 of the
    # table's. Replayed within 0.75: random never (3 and 2), asha_bo 0.5, bo never; its final
    # loss at 0.75: asha_bo 3.0 and 2.0 -> 2.5, random and bo nothing ended. Live in table
    # device-h: random 1 / 2 = 0.5 (both seeds), asha_bo 0.5, bo never.
    speed_dir = tmp_path / "smoke" / "speed"
    speed_dir.mkdir()
    rows = [{"config_id": c, "cpu_seconds": 2.0 * t, "table_cpu_seconds": t, "same_loss": True}
            for c, t in ((0, 1.0), (1, 3.0))]
    (speed_dir / "cpu-a.json").write_text(json.dumps(
        {"machine": {"cpu_model": "CPU A"}, "table_sha256": "t1", "rows": rows}))
    (speed_dir / "cpu-b.json").write_text(json.dumps(
        {"machine": {"cpu_model": "CPU B"}, "table_sha256": "t1", "rows": rows[:1]}))
    a = replay.live_agreement(tmp_path / "smoke", L.load_scale(root), {0.05: 3.0})
    s = a["speed"]
    assert s["factor"] == pytest.approx(2.0) and s["runs"] == ["cpu-a.json"]
    assert s["budget_device_h"] == pytest.approx(0.75)
    rows = {r["method"]: r for r in a["rows"]}
    assert rows["random"]["replay_dh_to_target_matched"] == math.inf
    assert rows["asha_bo"]["replay_dh_to_target_matched"] == 0.5
    assert rows["random"]["live_dh_to_target_matched"] == 0.5
    assert rows["bo"]["live_dh_to_target_matched"] == math.inf
    assert rows["asha_bo"]["replay_matched"] == 2.5
    assert math.isnan(rows["random"]["replay_matched"])
    # the pre-registered statistic is unchanged; the matched one sits beside it
    assert a["kendall_tau_target"] == pytest.approx(0.5)
    assert s["kendall_tau_target"] == pytest.approx(0.5)
    replay.write_agreement(a, tmp_path / "out")
    md = (tmp_path / "out" / "agreement.md").read_text()
    assert "cost 2.000 [2.000, 2.000] times the table's CPU seconds" in md
    assert "live budget of 5400 device-seconds is 2700 of the table's" in md
    bo = next(line for line in md.splitlines() if line.startswith("| asha_bo "))
    assert [c.strip() for c in bo.split("|")[8:11]] == ["0.5000", "0.5000", "2.5000"]
    # live searches on two CPU models: no single factor
    _stamp(tmp_path / "smoke" / "bo", "machine", {"cpu_model": "CPU B"})
    a = replay.live_agreement(tmp_path / "smoke", L.load_scale(root), {0.05: 3.0})
    assert "factor" not in a["speed"] and a["speed"]["live_cpu_models"] == ["CPU A", "CPU B"]


def test_live_vs_replay_refuses_live_logs_on_another_loss(tmp_path):
    root = _hand(tmp_path)
    _live(tmp_path, {"random": [3.0], "bo": [3.5]}, loss={"name": "mlpf-delphes-2022"})
    status = replay.live_agreement(tmp_path / "smoke", L.load_scale(root))["status"]
    assert status == ("live logs on another loss (mlpf-delphes-2022 vs the replays' "
                      "unrecorded): not compared")


def test_live_vs_replay_refuses_another_design(tmp_path):
    root = _hand(tmp_path)
    assert replay.live_agreement(tmp_path / "smoke", L.load_scale(root))["status"] \
        .startswith("no live logs")
    _live(tmp_path, {"random": [3.0], "bo": [3.5]}, max_t=27)
    assert "another design" in replay.live_agreement(tmp_path / "smoke",
                                                     L.load_scale(root))["status"]


def test_outputs_identical_after_simulating_again(tmp_path):
    """`make replay` from scratch twice gives the same tracked files (no real-time column)."""
    from experiments.campaign import main as campaign

    ref = Path(__file__).parents[1] / "experiments" / "data" / "replay_reference"
    digests = []
    for run in ("a", "b"):
        root = tmp_path / run / "small"
        root.mkdir(parents=True)
        for f in ("lctable.csv", "lctable.json"):
            shutil.copy(ref / f, root / f)
        assert campaign(["--backend", "replay", "--scale", "small", "--table",
                         str(root / "lctable.csv"), "--seeds", "0 1", "--methods",
                         "default random asha_bo", "--out", str(root / "replay"),
                         "--processes", "1", "--device-budget", "600"]) == 0
        out = tmp_path / run / "out"
        assert replay.main(["--scale", "small", "--results", str(root / "replay"), "--out",
                            str(out), "--min-seeds", "2", "--methods",
                            "default,random,asha_bo"]) == 0
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(out.iterdir())})
    assert digests[0] == digests[1]


def test_a_table_of_another_design_is_not_a_reference(tmp_path):
    root = _hand(tmp_path)  # searches with max_t 1; the table's max_t: its last epoch, 1
    runs = L.load_scale(root)
    finals, name = L.table_for(runs, tmp_path / "smoke" / L.LCTABLE_CSV)
    assert len(finals) == len(TABLE) and name == "smoke/lctable.csv"
    (tmp_path / "smoke" / L.LCTABLE_CSV).write_text(  # trained to 2 epochs, not 1
        "config_id,epoch,val_loss,status\n" + "".join(f"{i},{e},{x},ok\n" for i, x in
                                                       enumerate(TABLE) for e in (1, 2)))
    with pytest.warns(L.LogWarning, match="another design"):
        finals, name = L.table_for(runs, tmp_path / "smoke" / L.LCTABLE_CSV)
    assert finals.empty and name.endswith("(another design, not used)")


def test_a_table_of_another_loss_is_not_a_reference(tmp_path):
    import json

    root = _hand(tmp_path)  # replayed searches that record no loss: they used the table's
    table = tmp_path / "smoke" / L.LCTABLE_CSV
    table.with_suffix(".json").write_text(json.dumps({"max_t": 1, "loss": {"name": "new"}}))
    finals, name = L.table_for(L.load_scale(root), table)
    assert len(finals) == len(TABLE) and finals.attrs[L.LOSS] == "new"
    meta = root / "random" / "seed0" / L.METADATA_JSON
    for recorded in ({"name": "old"}, None):  # a search on another loss; a live one unrecorded
        m = json.loads(meta.read_text())
        m[L.LOSS] = recorded
        if recorded is None:
            m.pop(L.MD_BACKEND, None)
        meta.write_text(json.dumps(m))
        with pytest.warns(L.LogWarning, match="another loss|searches on"):
            finals, name = L.table_for(L.load_scale(root), table)
        assert finals.empty and name.endswith("(another loss, not used)")
    m[L.LOSS] = {"name": "new"}  # the table's loss: used again
    meta.write_text(json.dumps(m))
    assert len(L.table_for(L.load_scale(root), table)[0]) == len(TABLE)


# ---- two lookups compared -----------------------------------------------------------------
def _summary(rows):
    return pd.DataFrame(rows, columns=["method", "incumbent_loss", "regret_1/4", "dh_to_top5",
                                       "speedup_top5"])


def test_lookup_agreement_by_hand():
    a = _summary([["random", 3.0, 1.0, 4.0, 1.0], ["asha", 2.0, 0.5, 2.0, 2.0],
                  ["bo", 2.5, 0.7, 3.0, 1.3], ["hyperband", 1.0, 0.2, 1.0, 4.0]])
    # the same order of final losses; compute to target reversed; one method never reaches it
    b = _summary([["hyperband", 1.5, 0.1, 4.0, 1.0], ["asha", 2.2, 0.85, 2.0, 2.0],
                  ["bo", 2.4, 0.8, np.inf, math.nan], ["random", 3.3, 0.9, 1.0, 1.0],
                  ["optuna_tpe", 9.0, 9.0, 9.0, 9.0]])
    agree = replay.lookup_agreement(a, b)
    assert agree["status"] == "compared" and agree["n_methods"] == 4  # optuna_tpe in b only
    by = {r["metric"]: r for r in agree["metrics"]}
    fin = by["final loss"]
    assert fin["tau"] == pytest.approx(1.0) and fin["n"] == 4
    assert fin["best_a"] == fin["best_b"] == "hyperband"
    assert by["regret at 1/4 of the budget"]["tau"] == pytest.approx(2 / 3)  # one pair swapped
    to = by["device-h to top 5 %"]
    assert to["n"] == 3 and to["tau"] == pytest.approx(-1.0)  # bo's never left out
    assert to["best_a"] == "hyperband" and to["best_b"] == "random"
    sp = by["speedup top 5 % vs random"]
    assert sp["n"] == 2 and math.isnan(sp["tau"])  # random and bo out: too few to rank


def test_lookup_agreement_needs_three_methods():
    a = _summary([["random", 3.0, 1.0, 4.0, 1.0], ["asha", 2.0, 0.5, 2.0, 2.0]])
    assert replay.lookup_agreement(a, a)["status"].startswith("2 methods in both")


def test_compare_option_writes_lookups_and_refuses_a_missing_folder(tmp_path, capsys):
    _hand(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    assert _run(tmp_path, second, "--compare", str(first)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --compare") and "no summary.csv" in err and "\n" not in err
    assert not second.exists()
    assert _run(tmp_path, first) == 0
    assert _run(tmp_path, second, "--compare", str(first)) == 0
    md = (second / "lookups.md").read_text()
    row = next(r for r in md.splitlines() if r.startswith("| final loss "))
    assert [c.strip() for c in row.split("|")[1:-1]][2] == "1.00"  # the same replay twice
    assert "nearest vs nearest" in md
    assert not (first / "lookups.md").exists()


def test_a_reference_sample_in_the_replay_folder_gives_the_targets(tmp_path):
    root = _hand(tmp_path)
    out = tmp_path / "out"
    assert _run(tmp_path, out) == 0
    table_refs = json.loads((out / "references.json").read_text())
    (root / L.REFERENCE_CSV).write_text(
        "config_id,replicate,epoch,val_loss,train_loss,epoch_seconds,status,reason\n"
        + "".join(f"{i},0,1,{x},{x},10,ok,\n" for i, x in enumerate([9.0, 1.5, 4.0, 8.0])))
    assert _run(tmp_path, out) == 0
    refs = json.loads((out / "references.json").read_text())
    assert "replay/reference.csv" in refs["l_ref_source"]
    assert refs["l_ref"] == 1.5 and refs["targets"] != table_refs["targets"]
    assert "replay/reference.csv" in (out / "targets.md").read_text()


def test_head_to_head_verdicts():
    assert replay._verdict(1.2, 3.0) == "faster"
    assert replay._verdict(0.2, 0.8) == "slower"
    assert replay._verdict(0.2, 0.8, bound=True) == "cannot tell"  # a lower bound only
    assert replay._verdict(0.9, 1.1) == "cannot tell"
    assert replay._verdict(math.nan, math.nan) == "cannot tell"


def test_replays_of_another_table_version_are_refused(tmp_path, capsys):
    root = _hand(tmp_path)
    table = tmp_path / "smoke" / L.LCTABLE_CSV
    sha = hashlib.sha256(table.read_bytes()).hexdigest()
    metas = sorted(root.glob("*/seed*/" + L.METADATA_JSON))
    for md in metas:  # what the replay campaign records about the table it ran on
        md.write_text(json.dumps({**json.loads(md.read_text()), "replay": {"sha256": sha}}))
    assert _run(tmp_path, tmp_path / "out") == 0
    table.write_text(table.read_text() + "11,1,9.0,9.0,10,ok,,0.01\n")  # the table grew
    assert _run(tmp_path, tmp_path / "out2") == 2
    err = _one_line_error(capsys)
    assert "the replay logs were made on another version of smoke/lctable.csv (sha256 " \
        f"{sha[:12]}...)" in err
    md = metas[0]
    md.write_text(json.dumps({**json.loads(md.read_text()), "replay": {"sha256": "0" * 64}}))
    assert _run(tmp_path, tmp_path / "out3") == 2
    assert "were made on 2 versions of smoke/lctable.csv" in _one_line_error(capsys)


# ---- the figures that show the decision ---------------------------------------------------
def _texts(fig) -> dict[str, list[str]]:
    return {ax.get_title(): [t.get_text() for t in ax.texts] for ax in fig.axes}


def test_critical_difference_ranks_by_hand(tmp_path):
    from analysis.summary_plots import nemenyi_cd

    res = _analyse(_hand(tmp_path))
    # final regret (L_ref 2): random 1, 0; asha_bo 0.5, 0; bo 1.2, 1.1 -> seed0 ranks 2, 1, 3;
    # seed1 1.5, 1.5, 3 -> random 1.75, asha_bo 1.25, bo 3: ranks.csv's rank at 100 % of C.
    # Device-h to the top 10 % (3.0): random 3, 2; asha_bo 0.5, 0.5; bo never, never ->
    # 2, 1, 3 in both seeds. Top 5 % (2.5): random never, 2; asha_bo 3, 0.5; bo never x 2 ->
    # seed0 asha_bo 1, random and bo tied 2.5; seed1 2, 1, 3 -> 2.25, 1, 2.75.
    fig = replay.critical_difference(res)
    said = {k.split(":")[0]: v for k, v in _texts(fig).items()}
    assert said["final regret"] == ["1", "2", "3", f"CD = {nemenyi_cd(3, 2):.2f}",
                                    "asha_bo (1.25)", "random (1.75)", "bo (3.00)"]
    assert res["ranks"].set_index("method")["rank_1"].to_dict() == {
        "random": 1.75, "asha_bo": 1.25, "bo": 3.0}
    assert said["device-hours to the top 5 % target"][-3:] == [
        "asha_bo (1.00)", "random (2.25)", "bo (2.75)"]
    # Top 1 % (2.1): seed0 nobody (ranks 2, 2, 2), seed1 asha_bo 0.5, random 2, bo never ->
    # rank sums 4, 3, 5: chi2 = 12 / (N k (k + 1)) 50 - 3 N (k + 1) = 1, over the tie
    # correction 1 - (3^3 - 3) / (N k (k^2 - 1)) = 0.5 -> 2 with 2 dof: p = exp(-1) = 0.37
    assert next(t for t in _texts(fig) if t.startswith("device-hours to the top 1 %")) \
        .endswith("2 seeds, Friedman p = 0.37")
    replay.plt.close(fig)


def test_regret_figure_ignores_a_diverged_search_and_labels_targets_apart(tmp_path):
    from analysis.summary_plots import LABEL_SEP

    root = _hand(tmp_path)
    for k in (0, 1):  # bo's first trial diverges in both seeds: its median is 1e24 for 1 h
        _search(tmp_path, "bo", k, [1e24, 3.5, 3.2])
    res = _analyse(root)
    assert (res["curves"]["median_incumbent"] == 1e24).any()
    fig = replay.regret_vs_compute(res)
    ax = fig.axes[-1]
    lo, hi = ax.get_ylim()
    assert hi < 100 and lo < 0.1  # every target's regret (0.1, 0.5, 1) in view, not 1e24
    labels = sorted((a.xyann[1], a.get_text()) for a in ax.texts)
    assert [t for _, t in labels] == ["top 1 % (0.1)", "top 5 % (0.5)", "top 10 % (1)"]
    assert all(b[0] - a[0] >= LABEL_SEP - 1e-9 for a, b in zip(labels, labels[1:]))
    replay.plt.close(fig)
    fig = replay.best_vs_compute(res)  # the linear zoom: labels apart, however close
    labels = sorted(a.xyann[1] for a in fig.axes[-1].texts)
    assert len(labels) == 3 and min(b - a for a, b in zip(labels, labels[1:])) >= LABEL_SEP - 1e-9
    replay.plt.close(fig)
