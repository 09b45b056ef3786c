"""Replayed logs stay what they were, byte for byte (a lock on the search code's behaviour).

``data/replay_reference/`` holds a learning-curve table (the small-scale table shipped at
commit 1d003b1: the default + 10 sampled configurations, 27 epochs) and the sha256 of
results.csv and learning_curves.csv of seed 0 of every method and peer replayed on it at the
small scale's settings (2 simulated workers, the live budget of 1440 device-seconds, not the
larger replay default; without a time budget, and with a simulated
``--time-budget 1500`` for six of them). Any change to a method, a stopper, the trial
contract, the clock, the table lookup, the search space or the log format shows here.

History: the digests were first made by the code of commit 1d003b1; the layout of
experiments/ was then rewritten (driver, backends, one trial contract, one clock) and every
digest stayed the same. They were regenerated, deliberately, when the study was made a fair
test of the paper (Ray Tune's ASHA cutoff, the paper's search space and fidelities at small);
``asha_deephyper`` reproduced the former ``asha`` byte for byte before that. A deliberate
change of behaviour regenerates them (``python -m experiments.campaign --backend replay
--scale small --table tests/experiments/data/replay_reference/lctable.csv --seeds 0 ...``)
and says so in its commit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from experiments import logs

REF = Path(__file__).parent / "data" / "replay_reference"
DIGESTS = json.loads((REF / "sha256.json").read_text())


def _campaign(out: Path, methods: list[str], time_budget: float | None) -> None:
    from experiments.campaign import main

    argv = ["--backend", "replay", "--scale", "small", "--table", str(REF / "lctable.csv"),
            "--seeds", "0", "--methods", " ".join(methods), "--out", str(out),
            "--processes", "1", "--device-budget", "1440"]  # the live small budget
    if time_budget:
        argv += ["--time-budget", str(time_budget)]
    assert main(argv) == 0


def _digests(out: Path, methods: list[str]) -> dict:
    return {f"{m}/{f}": hashlib.sha256((out / m / "seed0" / f).read_bytes()).hexdigest()
            for m in methods for f in (logs.RESULTS_CSV, logs.LEARNING_CURVES_CSV)}


@pytest.mark.slow
@pytest.mark.parametrize("case,time_budget", [("no_time_budget", None),
                                              ("time_budget_1500", 1500.0)])
def test_replayed_logs_match_the_reference(tmp_path, case, time_budget):
    want = DIGESTS[case]
    methods = sorted({k.split("/")[0] for k in want})
    _campaign(tmp_path, methods, time_budget)
    got = _digests(tmp_path, methods)
    assert {k for k in want if got[k] != want[k]} == set()
