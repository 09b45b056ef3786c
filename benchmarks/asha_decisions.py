"""Our ASHA, Syne Tune's ASHA (stopping type) and Optuna's SuccessiveHalvingPruner on the same
recorded rung arrivals: how often do they decide differently, and why?

    .venv/bin/python benchmarks/asha_decisions.py                         # small, ~1 min
    .venv/bin/python benchmarks/asha_decisions.py --scale smoke --synthetic 0 \\
        --logs results/smoke/asha

Each ``learning_curves.csv`` gives the arrivals at the rungs (``grace * eta**k`` epochs below
max_t) in the order its search saw them (epoch end, then job id). Every rule decides every
arrival from the same values recorded earlier at that rung (every arrival is recorded,
whatever was decided):

- ours, :class:`experiments.schedulers.ASHAStopper` with rule "ray"
  (:func:`experiments.schedulers.ray_continues`): continue unless the value is worse than the
  ``(1 - 1/eta)`` quantile, linearly interpolated, of the values recorded earlier;
- Syne Tune's, the ``Bracket`` its ASHA uses (``syne_tune.optimizer.schedulers.asha``), called
  directly;
- Optuna's, a ``SuccessiveHalvingPruner`` (min_resource = grace, reduction_factor = eta,
  bootstrap_count 0) on an in-memory study, one asked trial per job that reports its rung
  value and asks ``should_prune()``. Beside it,
  :func:`experiments.peers.optuna_peers.optuna_continues`, the rule as its source states it
  (the arriving value counts among the n competitors, and the best ``max(1, n // eta)`` of
  them continue, ties included); the table says how often the pruner and that rule differ
  (0: the rule explains every Optuna decision).

Sources: the logs given with ``--logs`` (default: the scale's live ``asha`` logs and its
replayed ``asha`` and ``random`` searches under ``results/<scale>/replay/``, where present) and
``--synthetic N`` seeds of Syne Tune's random search on synthetic curves (every trial reaches
every rung). Prints, per source and peer, the arrivals decided, the share each rule continues,
the decisions where the peer continues and ours stops and the reverse, and how many of those
involve a tie (the value equals one recorded earlier at that rung).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
from syne_tune.optimizer.schedulers.asha import Bracket  # noqa: E402

from experiments.methods import settings_for  # noqa: E402
from experiments.peers import run_peer  # noqa: E402
from experiments.peers.optuna_peers import optuna_continues  # noqa: E402
from experiments.peers.simulate import synthetic_curves  # noqa: E402
from experiments.schedulers import asha_rungs, ray_continues  # noqa: E402

PEERS = ("syne", "optuna")
COUNTS = ("arrivals", "ours_continues", "peer_continues", "peer_only", "ours_only", "ties",
          "rule_differs")


def arrivals(curves: pd.DataFrame, rungs: list[int]) -> pd.DataFrame:
    """The rows at rung epochs, in the order a search saw them (t_end, then job id)."""
    rows = curves[curves["epoch"].isin(rungs)]
    return rows.sort_values(["t_end", "job_id"], kind="mergesort")


class OptunaDecider:
    """Optuna's own pruner deciding recorded arrivals: one in-memory study per search, one
    asked trial per job id, which reports its value at the rung epoch and asks
    ``should_prune()``."""

    def __init__(self, grace: int, eta: int):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=grace, reduction_factor=eta, min_early_stopping_rate=0,
            bootstrap_count=0)
        self.study = optuna.create_study(direction="minimize", pruner=pruner)
        self.trials: dict[int, optuna.Trial] = {}

    def continues(self, job_id: int, epoch: int, loss: float) -> bool:
        trial = self.trials.get(job_id) or self.trials.setdefault(job_id, self.study.ask())
        trial.report(loss, epoch)
        return not trial.should_prune()


def compare(curves: pd.DataFrame, max_t: int, grace: int, eta: int) -> dict[str, dict]:
    """Per peer, counts (:data:`COUNTS`) of its decisions and ours on one search's arrivals."""
    rungs = asha_rungs(max_t, grace, eta)
    syne = Bracket(grace, max_t, eta, 0)
    opt = OptunaDecider(grace, eta)
    seen: dict[int, list[float]] = {r: [] for r in rungs}
    out = {p: dict.fromkeys(COUNTS, 0) for p in PEERS}
    for r in arrivals(curves, rungs).itertuples():
        loss, earlier = float(r.val_loss), seen[int(r.epoch)]
        ours = ray_continues(-loss, [-v for v in earlier], eta)  # ours maximises -val_loss
        decided = {
            "syne": syne.on_result(int(r.job_id), int(r.epoch), {"val_loss": loss})
            == "CONTINUE",
            "optuna": opt.continues(int(r.job_id), int(r.epoch), loss)}
        for peer, theirs in decided.items():
            c = out[peer]
            c["arrivals"] += 1
            c["ours_continues"] += ours
            c["peer_continues"] += theirs
            if ours != theirs:
                c["peer_only" if theirs else "ours_only"] += 1
                c["ties"] += loss in earlier
        out["optuna"]["rule_differs"] += decided["optuna"] != optuna_continues(loss, earlier, eta)
        earlier.append(loss)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", default="small")
    p.add_argument("--logs", nargs="*", default=None,
                   help="method folders holding seed*/learning_curves.csv")
    p.add_argument("--synthetic", type=int, default=20, help="seeds of syne_random")
    a = p.parse_args(argv)
    s = settings_for(a.scale)
    results = ROOT / "results" / a.scale
    folders = [Path(f) for f in a.logs] if a.logs is not None else \
        [d for d in (results / "asha", results / "replay" / "asha", results / "replay" / "random")
         if d.is_dir()]
    sources = {str(f.relative_to(ROOT) if f.is_absolute() and f.is_relative_to(ROOT) else f):
               sorted(f.glob("seed*/learning_curves.csv")) for f in folders}
    with tempfile.TemporaryDirectory() as tmp:
        if a.synthetic:
            paths = []
            for seed in range(a.synthetic):
                out = Path(tmp) / f"seed{seed}"
                run_peer("syne_random", a.scale, seed, synthetic_curves(s.max_t), out)
                paths.append(out / "learning_curves.csv")
            sources[f"synthetic curves, syne_random x {a.synthetic} seeds"] = paths
        print(f"scale {a.scale}: max_t {s.max_t}, grace {s.grace}, eta {s.eta}, rungs "
              f"{asha_rungs(s.max_t, s.grace, s.eta)}\n")
        print("| source | peer | searches | arrivals | ours continues | peer continues | "
              "peer continues, ours stops | ours continues, peer stops | of these, ties | "
              "Optuna's pruner vs its stated rule |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        total = {q: dict.fromkeys(COUNTS, 0) for q in PEERS}
        rows = []
        for name, paths in sources.items():
            counts = {q: dict.fromkeys(COUNTS, 0) for q in PEERS}
            for path in paths:
                for q, c in compare(pd.read_csv(path), s.max_t, s.grace, s.eta).items():
                    counts[q] = {k: counts[q][k] + c[k] for k in COUNTS}
                    total[q] = {k: total[q][k] + c[k] for k in COUNTS}
            rows += [(name, len(paths), counts)]
        rows.append(("all", "", total))
        for name, n_paths, counts in rows:
            for q in PEERS:
                c, n = counts[q], max(counts[q]["arrivals"], 1)
                print(f"| {name} | {q} | {n_paths} | {c['arrivals']} | "
                      f"{c['ours_continues'] / n:.1%} | {c['peer_continues'] / n:.1%} | "
                      f"{c['peer_only']} ({c['peer_only'] / n:.1%}) | "
                      f"{c['ours_only']} ({c['ours_only'] / n:.1%}) | {c['ties']} | "
                      + (f"{c['rule_differs']} |" if q == "optuna" else "- |"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
