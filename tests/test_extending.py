"""docs/extending.md, proved: a new method, a new trainable and a new peer, each registered for
the length of one test (monkeypatched registries, logs under tmp_path), run end to end and
read back by analysis/logs.py.

    .venv/bin/python -m pytest tests/test_extending.py -q -x -p no:cacheprovider
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
import warnings
from dataclasses import dataclass

import pandas as pd
import pytest

from analysis.logs import LogWarning, load_search
from experiments import logs, peers, trainables
from experiments.campaign import main as campaign_main
from experiments.methods import METHODS, Method, Settings, method_metadata, settings_for
from experiments.peers.simulate import synthetic_curves
from experiments.schedulers import RandomSampler
from experiments.search import main as search_main
from experiments.space import problem_for
from experiments.trainables import Trainable

from .experiments.conftest import tiny_table

SMOKE = settings_for("smoke", time_budget=0)  # max_t 9, grace 1, eta 3, 81 epochs, no deadline


def _plain(obj):
    """``obj`` as metadata.json gives it back (tuples as lists)."""
    return json.loads(json.dumps(obj))


def _load(path):
    """analysis.logs.load_search, with any LogWarning an error: the logs are as analysis
    expects them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", LogWarning)
        return load_search(path)


def _asked_within_budget(res: pd.DataFrame, budget: int) -> bool:
    """No trial was asked for after the epochs of finished trials reached ``budget`` (the
    epoch rule of experiments.bookkeeping.Budget; running trials may finish after it)."""
    done = res.sort_values("m:timestamp_gather", kind="mergesort")
    spent = done.loc[done["m:epochs"].cumsum() >= budget, "m:timestamp_gather"]
    return len(spent) > 0 and bool((res["m:timestamp_submit"] <= spent.iloc[0]).all())


# ------------------------------------------------------------------------------ 1. a method
# Recipe 1: a record composed from an existing search and stopper; nothing else changes.
EPOCH2 = Method("epoch2", "2-Epoch baseline: eta^2 configurations x 2 epochs, the best "
                "continued to max_t, round after round", "hyperband", i_epoch=2)


def test_a_registered_method_runs_from_the_cli_and_logs_its_record(tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, EPOCH2.name, EPOCH2)
    table = tiny_table(tmp_path / "lctable.csv")
    out = tmp_path / "replay" / "epoch2" / "seed0"
    # python -m experiments.search --method epoch2 --backend replay ...
    assert search_main(["--method", "epoch2", "--scale", "smoke", "--backend", "replay",
                        "--table", str(table), "--lookup", "nearest", "--out", str(out),
                        "--quiet"]) == 0
    s = _load(out)
    md = s.metadata
    # the logged metadata is the record's, derived by method_metadata, nothing written by hand
    assert md["method"] == "epoch2" and md["status"] == logs.RUN_COMPLETE
    assert md["method_settings"] == _plain(method_metadata("epoch2", SMOKE))
    assert md["method_settings"]["i_epoch"] == 2
    assert md["method_settings"]["brackets"] == [[[9, 2], [1, 9]]]  # 9 x 2 epochs, 1 to 9
    # what ran is what the record says: trials of 2 epochs, the best of each round to 9
    res = pd.read_csv(out / logs.RESULTS_CSV)
    assert set(res["p:" + logs.BUDGET_KEY]) == {2, 9}
    assert md["stopped_by"] == "epochs" and md["epochs_trained"] >= md["budget_epochs"] == 81
    assert _asked_within_budget(res, 81)

    # ... and the replay campaign runs it among the other methods
    root = tmp_path / "campaign"
    assert campaign_main(["--backend", "replay", "--scale", "smoke", "--seeds", "0",
                          "--methods", "epoch2 asha", "--table", str(table), "--lookup",
                          "nearest", "--out", str(root), "--processes", "1",
                          "--budget", "27"]) == 0
    assert _load(root / "epoch2" / "seed0").metadata["method_settings"]["i_epoch"] == 2


# ------------------------------------------------------------------------------ 2. a trainable
# Recipe 2: a quadratic bowl in (log10 lr, dropout) plus a 1/epoch learning curve.
class BowlTooBig(RuntimeError):
    """The bowl's stand-in for a batch that does not fit."""


class Bowl(Trainable):
    """loss(config, epoch) = (log10 lr + 3)^2 + dropout^2 + scale / epoch; batches of 112 and
    more fail (reason ``too_big``)."""

    name = "bowl"

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def check_ready(self, scale: str) -> None:
        pass  # nothing to load: never unusable

    def options(self) -> dict:
        return {"scale": self.scale}  # changes results: logged as trainable_options

    def loss_spec(self, scale: str) -> dict:
        return {"name": "bowl", "formula": "(log10 lr + 3)^2 + dropout^2 + scale / epoch"}

    def train(self, scale, config, max_epochs, on_epoch, *, device=None, seed=0, threads=None,
              checkpoint_dir=None):
        if config["batch_size"] >= 112:
            raise BowlTooBig(f"batch_size {config['batch_size']}")
        # the state of a bowl is its epoch count: a Hyperband promotion continues from it
        ckpt = os.path.join(checkpoint_dir, "bowl.json") if checkpoint_dir else None
        history = json.load(open(ckpt)) if ckpt and os.path.exists(ckpt) else []
        for epoch in range(len(history) + 1, max_epochs + 1):
            t0 = time.perf_counter()
            loss = (math.log10(config["lr"]) + 3) ** 2 + config["dropout"] ** 2 + \
                self.scale / epoch
            history.append({"epoch": epoch, "val_loss": loss, "train_loss": 0.9 * loss,
                            "epoch_seconds": time.perf_counter() - t0})
            if ckpt:
                os.makedirs(checkpoint_dir, exist_ok=True)
                with open(ckpt, "w") as f:
                    json.dump(history, f)
            if on_epoch(dict(history[-1])):
                break
        return history

    def failure_reason(self, exc: BaseException) -> str:
        return "too_big" if isinstance(exc, BowlTooBig) else super().failure_reason(exc)


@pytest.mark.parametrize("method", ["asha", "hyperband"])
def test_a_registered_trainable_is_searched_with_its_name(tmp_path, monkeypatch, method):
    monkeypatch.setitem(trainables.TRAINABLES, "bowl", Bowl)
    out = tmp_path / method / "seed0"
    # python -m experiments.search --trainable bowl ...
    assert search_main(["--method", method, "--scale", "smoke", "--trainable", "bowl",
                        "--evaluator", "serial", "--workers", "2",
                        "--time-budget", "0", "--out", str(out), "--quiet"]) == 0
    s = _load(out)
    md = s.metadata
    assert md["trainable"] == "bowl" and md["trainable_options"] == {"scale": 1.0}
    assert md["loss"] == Bowl().loss_spec("smoke")
    assert md["stopped_by"] == "epochs" and md["epochs_trained"] >= SMOKE.budget
    res = pd.read_csv(out / logs.RESULTS_CSV)
    too_big = res["p:batch_size"] >= 112  # failed, named by Bowl.failure_reason
    assert too_big.any() and (res.loc[too_big, "m:reason"] == "too_big").all()
    assert (res.loc[too_big, "m:status"] == "failed").all()
    ok = res[~too_big]
    last = ok["m:budget"].where(ok["m:status"] == "ok", ok["m:epochs"])  # its last epoch
    expect = (ok["p:lr"].map(math.log10) + 3) ** 2 + ok["p:dropout"] ** 2 + 1 / last
    assert ok["m:best_val_loss"].tolist() == pytest.approx(expect.tolist())
    # every epoch of every configuration trained once, promotions included
    if method == "hyperband":
        lc = s.curves.merge(res[["job_id", "p:" + logs.HB_TRIAL]], on="job_id")
        assert not lc.duplicated(["p:" + logs.HB_TRIAL, "epoch"]).any()


# ------------------------------------------------------------------------------ 3. a peer
# Recipe 3: "another library": uniform random configurations and the median stopping rule,
# as a session of experiments.peers.simulate (ask, job, tell) and a record in PEERS.
class MedianJob:
    """One trial as a job of the trial contract (experiments.trial): ``record`` is the
    library's report, ``stopped`` its pruning decision."""

    def __init__(self, session: MedianSession, number: int, config: dict):
        self.session, self.id, self.parameters = session, number, config
        self.stop = False

    def record(self, epoch: int, objective: float) -> None:  # objective = -val_loss
        seen = self.session.seen
        if epoch == self.session.at:
            self.stop = bool(seen) and objective < statistics.median(seen)
            seen.append(objective)

    def stopped(self) -> bool:
        return self.stop


class MedianSession:
    """Random configurations; a trial worse than the median at epoch ``grace * eta`` stops."""

    def __init__(self, s: Settings, seed: int):
        self.sampler = RandomSampler(problem_for(s.scale), seed)
        self.at = s.grace * s.eta  # 3 epochs at smoke
        self.seen: list[float] = []  # objectives reported at epoch `at`
        self.asked = 0
        self.told: dict = {}  # handle -> objective (or F_<reason>)

    def ask(self) -> tuple[int, dict]:
        self.asked += 1
        return self.asked, self.sampler.ask(1)[0]  # (handle: the library's trial, config)

    def job(self, handle, number: int, config: dict) -> MedianJob:
        return MedianJob(self, number, config)

    def tell(self, handle, outcome: dict) -> None:
        self.told[handle] = outcome["objective"]

    def info(self) -> dict:  # metadata.json "peer"
        return {"library": "toy", "version": "0", "told": len(self.told)}


@dataclass(frozen=True)
class MedianPeer:
    """The registry record: name, summary, what metadata.json records, a session per seed."""

    name: str
    summary: str

    def describe(self, s: Settings) -> dict:
        return {"max_t": s.max_t, "budget_epochs": s.budget, "time_budget_s": s.time_budget,
                "sampler": "uniform", "pruner": "median", "at_epoch": s.grace * s.eta}

    def session(self, s: Settings, seed: int) -> MedianSession:
        return MedianSession(s, seed)


TOY = MedianPeer("toy_median", "uniform random sampling + median stopping at one epoch")


def register_peer(monkeypatch, peer) -> None:
    """PEERS[name] = peer: the whole registration (docs/extending.md, recipe 3). The record's
    own ``session`` is the peer protocol; nothing else in experiments.peers names it."""
    monkeypatch.setitem(peers.PEERS, peer.name, peer)


def test_a_registered_peer_runs_with_our_budgets_and_logs(tmp_path, monkeypatch):
    register_peer(monkeypatch, TOY)
    out = tmp_path / "replay" / "toy_median" / "seed0"
    meta = peers.run_peer("toy_median", "smoke", 0, synthetic_curves(SMOKE.max_t), out,
                          workers=2, time_budget=0,
                          table={"path": "synthetic", "trainable": "synthetic"})
    s = _load(out)
    md = s.metadata
    assert md == meta and md["method"] == "toy_median" and md["backend"] == "replay"
    assert md["peer"] == {"library": "toy", "version": "0", "told": len(s.results)}
    assert md["method_settings"]["pruner"] == "median"
    res = pd.read_csv(out / logs.RESULTS_CSV)
    assert (res["m:status"] == "stopped").any() and (res["m:status"] == "ok").any()
    assert set(res.loc[res["m:status"] == "stopped", "m:epochs"]) == {3}
    # the budget rule is ours (experiments.bookkeeping), not the peer's
    assert md["stopped_by"] == "epochs"
    assert SMOKE.budget <= md["epochs_trained"] < SMOKE.budget + 2 * SMOKE.max_t
    assert _asked_within_budget(res, SMOKE.budget)

    # ... and the replay campaign runs it by name
    root = tmp_path / "campaign"
    assert campaign_main(["--backend", "replay", "--scale", "smoke", "--seeds", "0 1",
                          "--methods", "toy_median", "--table", "synthetic", "--out",
                          str(root), "--processes", "1", "--budget", "27"]) == 0
    for seed in (0, 1):
        md = _load(root / "toy_median" / f"seed{seed}").metadata
        assert md["stopped_by"] == "epochs" and md["budget_epochs"] == 27
