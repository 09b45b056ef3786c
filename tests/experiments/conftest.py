"""Helpers: run a search on the synthetic trainable, in this process or as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mlpf.paths import ROOT

PY = sys.executable


def synthetic_env(**opts) -> dict:
    env = dict(os.environ)
    env["EXP_SYNTHETIC"] = json.dumps(opts)
    env["CI"] = "1"
    return env


def cli(args: list[str], env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "experiments.search", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until ``path`` has more than ``n`` lines while ``proc`` runs."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        if path.exists() and len(path.read_text().splitlines()) > n:
            return
        time.sleep(0.05)
    raise TimeoutError(path)


def load(out: Path):
    res = pd.read_csv(out / "results.csv")
    lc = pd.read_csv(out / "learning_curves.csv")
    meta = json.loads((out / "metadata.json").read_text())
    return res, lc, meta


@pytest.fixture
def run_search(tmp_path, monkeypatch):
    """run_search(method, budget=None, workers=2, evaluator="process", **synthetic options)
    runs a synthetic search in this process and returns (out, results, curves, metadata)."""
    from experiments.backends.live import open_backend
    from experiments.driver import plan_search, run

    def _run(method, budget=None, workers=2, evaluator="process", scale="smoke",
             time_budget=0, max_failures=None, **opts):
        monkeypatch.setenv("EXP_SYNTHETIC", json.dumps(opts))
        out = tmp_path / method
        plan = plan_search(method, scale, 0, evaluator, workers, str(out), False, "synthetic",
                           budget, time_budget)
        if max_failures is not None:
            plan.max_failures = max_failures
        assert run(plan, open_backend(evaluator), progress=False) == 0
        return (out, *load(out))

    return _run


def odd_problem():
    """A problem with every kind of dimension the real spaces lack: a single value, names, a
    grid without a constant step, integer ranges (linear and log)."""
    from deephyper.hpo import HpProblem

    p = HpProblem()
    p.add_hyperparameter([3], "one")
    p.add_hyperparameter(["x", "y"], "names")
    p.add_hyperparameter([1, 2, 4], "geometric")
    p.add_hyperparameter((1, 10), "ints")
    p.add_hyperparameter((1, 100, "log-uniform"), "log_ints")
    return p


def hp_values(hp) -> set | None:
    """The values a grid or categorical hyperparameter of a DeepHyper problem takes (None
    for a range)."""
    for attr in ("sequence", "choices"):
        if hasattr(hp, attr):
            return {v.item() if hasattr(v, "item") else v for v in getattr(hp, attr)}
    return None
