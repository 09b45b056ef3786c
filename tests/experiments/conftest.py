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
        plan = plan_search(method, scale, 0, evaluator=evaluator, workers=workers, out=str(out),
                           trainable="synthetic", budget=budget, time_budget=time_budget)
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


def synthetic_lctable(folder: Path, n_configs: int, replicates: tuple[int, int, int]) -> Path:
    """``make lctable`` of the synthetic trainable (no failures) at the smoke scale into
    ``folder/lc.csv``, its checkpoints in ``folder/ckpt``; returns the CSV path."""
    from experiments import lctable

    mp = pytest.MonkeyPatch()
    mp.setenv("EXP_SYNTHETIC", json.dumps({}))
    try:
        assert lctable.run("smoke", n_configs=n_configs, workers=1, trainable="synthetic",
                           progress=False, replicates=replicates, out=folder / "lc.csv",
                           checkpoints=folder / "ckpt") == 0
    finally:
        mp.undo()
    return folder / "lc.csv"


def tiny_table(path: Path, n_configs: int = 24, failed: int = 2, replicated: int = 3) -> Path:
    """Write a small learning-curve table of the smoke space (max_t 9) and its lctable.json:
    the default (config 0, x 3 seeds) and ``n_configs`` Sobol configurations; the first
    ``replicated`` x 2 seeds; the last ``failed`` diverge at epoch 3. Losses follow the
    learning rate's distance to 3e-3 and the dropout, each row's components are fixed shares
    of its val_loss, epoch seconds grow with the graph layers. Returns the CSV path."""
    import math

    from experiments import logs
    from experiments import table as tb
    from experiments.space import sobol_configs

    configs = [tb.default_values("smoke"), *sobol_configs("smoke", n_configs, seed=0)]
    rows = []
    for cid, c in enumerate(configs):
        final = 0.3 + 0.2 * abs(math.log10(c["lr"] / 3e-3)) + 0.4 * c["dropout"]
        secs = 1.0 + 0.25 * c["num_graph_layers_common"]
        seeds = 3 if cid == 0 else 2 if cid <= replicated else 1
        for rep in range(seeds):
            noise = 1.0 + 0.02 * rep * (-1) ** cid
            for e in range(1, 10):
                base = {tb.CONFIG_ID: cid, tb.REPLICATE: rep, tb.EPOCH: e,
                        **{tb.PARAM_PREFIX + k: v for k, v in c.items()}}
                if cid > n_configs - failed and e == 3:
                    rows.append({**base, tb.EPOCH_SECONDS: 0.5 * secs,
                                 tb.STATUS: tb.STATUS_FAILED, tb.REASON: "diverged"})
                    break
                v = final * noise * (1.0 + 2.0 / e)
                comps = {k: v * (i + 1) / 28.0 for i, k in enumerate(logs.VAL_COMPONENTS)}
                rows.append({**base, tb.VAL_LOSS: v, tb.TRAIN_LOSS: 1.1 * v,
                             tb.EPOCH_SECONDS: secs * (1.2 if e == 1 else 1.0),
                             tb.STATUS: tb.STATUS_OK, tb.REASON: "",
                             logs.VAL_LOSS_REG: 0.5 * v, **comps})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logs.write_csv(path, tb.columns_for(configs[0]), rows)
    logs.write_json(tb.meta_path(path), {"scale": "smoke", "max_t": 9})
    return path
