"""Claim 1's report (analysis/claim1.py) from runs written by the runner's schema."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import claim1 as report
from experiments import logs


def _write(folder, rows, loss="mlpf-delphes-2022"):
    folder.mkdir(parents=True)
    logs.write_csv(folder / "runs.csv", logs.CLAIM1_RUN_COLUMNS, rows)
    logs.write_csv(folder / logs.LEARNING_CURVES_CSV, logs.CLAIM1_LC_COLUMNS, [
        {logs.REFERENCE: r[logs.REFERENCE], logs.LR: r[logs.LR], logs.SEED: r[logs.SEED],
         logs.EPOCH: 1, logs.VAL_LOSS: r[logs.VAL_LOSS]} for r in rows])
    logs.write_json(folder / logs.METADATA_JSON, {"scale": "smoke", "max_t": 9,
                                                  logs.LOSS: {"name": loss}})


def _row(ref, lr, seed, val):
    return {logs.REFERENCE: ref, logs.LR: lr, logs.SEED: seed, "epochs": 9,
            logs.VAL_LOSS: val, "status": "ok", "reason": "", "cpu_seconds": 1.0}


def test_improvements_and_the_hand_tuned_default(tmp_path):
    rows = []
    for s in range(4):
        rows += [_row("default", 1e-4, s, 10.0 + s * 0.1),
                 _row("default_lr", 1e-4, s, 10.0 + s * 0.1),
                 _row("default_lr", 1e-3, s, 6.0 + s * 0.1),
                 _row("default_lr", 3e-3, s, 7.0),
                 _row("converged", 1e-4, s, 8.0),
                 _row("paper_best", 1.1e-3, s, 5.0 + s * 0.1)]
    rows.append(_row("paper_best", 1.1e-3, 9, -1.0))  # a tampered row: left out, with a warning
    _write(tmp_path / "res" / "smoke" / "claim1", rows)
    files = report.build("smoke", tmp_path / "res", tmp_path / "fig")
    assert all(f.exists() for f in files)
    csv = tmp_path / "fig" / "smoke" / "claim1" / "improvement.csv"
    imp = {r["over"]: r for r in pd.read_csv(csv).to_dict("records")}
    d = imp["default"]
    assert d["improvement"] == pytest.approx(1 - 5.15 / 10.15, rel=1e-5)
    assert d["lo95"] <= d["improvement"] <= d["hi95"]
    h = imp["hand-tuned default"]
    assert h["reference"] == "default_lr@0.001"  # the best mean of the hand-set rates
    assert h["improvement"] == pytest.approx(1 - 5.15 / 6.15, rel=1e-5)
    assert imp["converged"]["improvement"] == pytest.approx(1 - 5.15 / 8.0, rel=1e-5)


def test_bootstrap_interval_is_deterministic_and_covers_the_point():
    a, b = np.array([1.0, 1.1, 0.9]), np.array([2.0, 2.2, 1.8])
    r1 = report.improvement(a, b, np.random.default_rng(report.BOOT_SEED))
    r2 = report.improvement(a, b, np.random.default_rng(report.BOOT_SEED))
    assert r1 == r2 and r1[1] <= r1[0] <= r1[2] and r1[0] == pytest.approx(0.5)


def test_missing_logs_exit_2_with_one_line(tmp_path, capsys):
    assert report.main(["--scale", "smoke", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "make claim1" in err


def test_search_incumbents_of_the_same_loss_only(tmp_path):
    def search(method, seed, loss, rows):
        d = tmp_path / method / f"seed{seed}"
        d.mkdir(parents=True)
        logs.write_json(d / logs.METADATA_JSON, {logs.LOSS: {"name": loss}})
        logs.write_csv(d / logs.RESULTS_CSV, ("job_id", "objective", "m:status", "m:epochs"),
                       [dict(zip(("job_id", "objective", "m:status", "m:epochs"), r))
                        for r in rows])

    up = "mlpf-delphes-2022"
    # seed 0: the best full trial is 5.0; a stopped trial at 4.0 (rung 4) does not count
    search("asha", 0, up, [(0, -5.5, "ok", 9), (1, -4.0, "stopped", 4), (2, -5.0, "ok", 9)])
    search("asha", 1, up, [(0, -6.0, "ok", 9), (1, "F_diverged", "failed", 2)])
    search("asha", 2, "custom", [(0, -1.0, "ok", 9)])  # another loss: left out
    search("random", 0, None, [(0, -1.0, "ok", 9)])  # loss not recorded: left out
    got = report.search_incumbents(tmp_path, up, 9)
    assert list(got) == ["asha"] and list(got["asha"]) == [5.0, 6.0]


def test_an_interval_of_one_search_seed_is_marked(tmp_path):
    rows = [_row("default", 1e-4, s, 8.0 + s * 0.1) for s in range(3)]
    _write(tmp_path / "res" / "smoke" / "claim1", rows)
    for method, seeds in (("asha", [0]), ("random", [0, 1])):
        for seed in seeds:
            d = tmp_path / "res" / "smoke" / method / f"seed{seed}"
            d.mkdir(parents=True)
            logs.write_json(d / logs.METADATA_JSON, {logs.LOSS: {"name": "mlpf-delphes-2022"}})
            logs.write_csv(d / logs.RESULTS_CSV, ("job_id", "objective", "m:status", "m:epochs"),
                           [{"job_id": 0, "objective": -5.0 - seed, "m:status": "ok",
                             "m:epochs": 9}])
    report.build("smoke", tmp_path / "res", tmp_path / "fig")
    md = (tmp_path / "fig" / "smoke" / "claim1" / "improvement.md").read_text().splitlines()
    one = [s for s in md if s.startswith("| search:asha (x1 seeds)")]
    two = [s for s in md if s.startswith("| search:random (x2 seeds)")]
    assert len(one) == 1 and "] * |" in one[0] and len(two) == 1 and "] * |" not in two[0]
    assert any(s.startswith("\\* One incumbent value") for s in md)
