"""Contract test: the analysis reads the logs that `python -m experiments.search` writes.

Runs two tiny searches of the synthetic trainable in subprocesses (the analysis never imports
experiments/), then rebuilds every table and figure from them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import logs as L
from analysis.make_figures import main

ROOT = Path(__file__).resolve().parents[2]


def _search(method: str, out: Path, budget: int) -> None:
    env = {**os.environ, "EXP_SYNTHETIC": '{"sleep": 0.0}'}
    cmd = [sys.executable, "-m", "experiments.search", "--method", method, "--scale", "smoke",
           "--seed", "0", "--workers", "2", "--trainable", "synthetic", "--budget", str(budget),
           "--quiet", "--out", str(out / "smoke" / method / "seed0")]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=300, capture_output=True)


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "experiments" / "search.py").exists(),
                    reason="experiments.search not present")
def test_reads_what_the_search_writes(tmp_path, capsys):
    for method in ("default", "asha"):
        _search(method, tmp_path / "results", budget=27)
    assert main(["--scale", "smoke", "--results", str(tmp_path / "results"),
                 "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out" / "smoke"
    raw = pd.read_csv(tmp_path / "results" / "smoke" / "asha" / "seed0" / L.RESULTS_CSV)
    per = pd.read_csv(out / "per_seed.csv").iloc[0]
    assert per["started"] >= len(raw) and per["stopped"] == (raw[L.M_STATUS] == L.STOPPED).sum()
    assert per["epochs"] == raw[L.M_EPOCHS].sum()  # learning_curves.csv agrees with results.csv
    assert 0 < per["utilisation"] <= 1 and per["device_hours"] > 0
    summary = (out / "summary.md").read_text()
    assert "synthetic" in summary and "(default run, final loss)" in summary
