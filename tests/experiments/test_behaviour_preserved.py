"""Replayed logs stay what they were (a lock on the search code's behaviour).

``data/replay_reference/`` holds a learning-curve table (the small-scale table shipped at
commit 1d003b1: the default + 10 sampled configurations, 27 epochs) and, under ``logs/``,
results.csv and learning_curves.csv of seed 0 of every method and peer replayed on it at the
small scale's settings (2 simulated workers, the live budget of 1440 device-seconds, not the
larger replay default; without a time budget, and with a simulated ``--time-budget 1500`` for
six of them). Any change to a method, a stopper, the trial contract, the clock, the table
lookup, the search space or the log format shows here.

The comparison is cell by cell: text and integers exactly, real numbers to a relative 1e-9.
Byte-identical digests (the lock's first form) broke between two CPUs of the same machine
type: numpy's and OpenBLAS's AVX-512 and AVX2 kernels round sampled continuous
hyperparameters differently in the last bits, with the same trials, decisions and curves.

History: the reference was first made by the code of commit 1d003b1; the layout of
experiments/ was then rewritten (driver, backends, one trial contract, one clock) and every
log stayed the same. It was regenerated, deliberately, when the study was made a fair test of
the paper (Ray Tune's ASHA cutoff, the paper's search space and fidelities at small;
``asha_deephyper`` reproduced the former ``asha`` byte for byte before that), and when CBO
went from 10,000 to 2,000 acquisition samples (asha_bo, bo), and when learning_curves.csv gained
the trainable's CPU seconds and loss components (empty in a replay of a table without them;
every earlier column the same to 1e-9, checked column by column). A deliberate change of behaviour
regenerates it (``python -m tests.experiments.test_behaviour_preserved --write``) and says so
in its commit.
"""

from __future__ import annotations

import csv
import math
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from experiments import logs

REF = Path(__file__).parent / "data" / "replay_reference"
CASES = {  # case -> (simulated time budget, the methods and peers replayed)
    "no_time_budget": (None, ["asha", "asha_bo", "asha_deephyper", "async_hyperband", "bo",
                              "bohb", "default", "hyperband", "optuna_random_hb",
                              "optuna_random_sha", "optuna_tpe_hb", "optuna_tpe_sha",
                              "random"]),
    "time_budget_1500": (1500.0, ["asha", "bohb", "hyperband", "optuna_random_hb",
                                  "optuna_tpe_sha", "random"]),
}
FILES = (logs.RESULTS_CSV, logs.LEARNING_CURVES_CSV)
RTOL = 1e-9


def _campaign(out: Path, methods: list[str], time_budget: float | None) -> None:
    from experiments.campaign import main

    argv = ["--backend", "replay", "--scale", "small", "--table", str(REF / "lctable.csv"),
            "--seeds", "0", "--methods", " ".join(methods), "--out", str(out),
            "--processes", "1", "--device-budget", "1440"]  # the live small budget
    if time_budget:
        argv += ["--time-budget", str(time_budget)]
    assert main(argv) == 0


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def differences(want: Path, got: Path, rtol: float = RTOL) -> list[str]:
    """Where the CSV ``got`` differs from ``want``: header, row count, or ``row r, column c:
    x vs y`` for text that differs or numbers further apart than ``rtol`` (NaN equals NaN)."""
    with open(want, newline="") as f:
        a = list(csv.reader(f))
    with open(got, newline="") as f:
        b = list(csv.reader(f))
    if a[:1] != b[:1]:
        return [f"header {b[:1]} instead of {a[:1]}"]
    if len(a) != len(b):
        return [f"{len(b) - 1} rows instead of {len(a) - 1}"]
    out = []
    for r, (ra, rb) in enumerate(zip(a[1:], b[1:]), start=1):
        for name, x, y in zip(a[0], ra, rb):
            if x == y:
                continue
            fx, fy = _number(x), _number(y)
            same = fx is not None and fy is not None and (
                (math.isnan(fx) and math.isnan(fy)) or math.isclose(fx, fy, rel_tol=rtol))
            if not same:
                out.append(f"row {r}, {name}: {y!r} instead of {x!r}")
    return out


def test_differences_tolerate_last_bits_only(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("job,x,s\n1,0.1234567890123,ok\n2,nan,ok\n")
    b.write_text("job,x,s\n1,0.12345678901230001,ok\n2,nan,ok\n")
    assert differences(a, b) == []
    b.write_text("job,x,s\n1,0.12345679,ok\n2,nan,ok\n")
    assert differences(a, b) == ["row 1, x: '0.12345679' instead of '0.1234567890123'"]
    b.write_text("job,x,s\n1,0.1234567890123,stopped\n2,nan,ok\n")
    assert differences(a, b) == ["row 1, s: 'stopped' instead of 'ok'"]
    b.write_text("job,x,s\n1,0.1234567890123,ok\n")
    assert differences(a, b) == ["1 rows instead of 2"]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_replayed_logs_match_the_reference(tmp_path, case):
    time_budget, methods = CASES[case]
    _campaign(tmp_path, methods, time_budget)
    diffs = {f"{m}/{f}": d[:3] for m in methods for f in FILES
             if (d := differences(REF / "logs" / case / m / f, tmp_path / m / "seed0" / f))}
    assert diffs == {}


def write_reference() -> None:
    """Replay every case and store its logs as the reference (a deliberate change)."""
    for case, (time_budget, methods) in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            _campaign(Path(tmp), methods, time_budget)
            for m in methods:
                dest = REF / "logs" / case / m
                dest.mkdir(parents=True, exist_ok=True)
                for f in FILES:
                    shutil.copyfile(Path(tmp) / m / "seed0" / f, dest / f)
    print(f"wrote {REF / 'logs'}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.experiments.test_behaviour_preserved --write")
    write_reference()
