"""Our ASHA and Syne Tune's ASHA (stopping type) on the same recorded rung arrivals: how often
do they decide differently, and why?

    .venv/bin/python benchmarks/syne_asha_decisions.py                    # small, ~1 min
    .venv/bin/python benchmarks/syne_asha_decisions.py --scale smoke --synthetic 0 \\
        --logs results/smoke/asha

Each ``learning_curves.csv`` gives the arrivals at the rungs (``grace * eta**k`` epochs below
max_t) in the order its search saw them (epoch end, then job id). Both rules decide every
arrival from the same values recorded earlier at that rung (every arrival is recorded,
whatever was decided): ours, :class:`experiments.schedulers.ASHAStopper` with rule "ray"
(:func:`experiments.schedulers.ray_continues`), and Syne Tune's, the ``Bracket`` its ASHA
uses (``syne_tune.optimizer.schedulers.asha``), called directly. Sources: the logs given with
``--logs`` (default: the scale's live ``asha`` logs and its replayed ``asha`` and ``random``
searches under ``results/<scale>/replay/``, where present) and ``--synthetic N`` seeds of
Syne Tune's random search on synthetic curves (every trial reaches every rung).

Prints one row per source: arrivals decided, decisions where Syne Tune continues and ours
stops, where ours continues and Syne Tune stops, and how many of those involve a tie (the
value equals one recorded earlier at that rung).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from syne_tune.optimizer.schedulers.asha import Bracket  # noqa: E402

from experiments.methods import settings_for  # noqa: E402
from experiments.peers import run_peer  # noqa: E402
from experiments.peers.simulate import synthetic_curves  # noqa: E402
from experiments.schedulers import asha_rungs, ray_continues  # noqa: E402


def arrivals(curves: pd.DataFrame, rungs: list[int]) -> pd.DataFrame:
    """The rows at rung epochs, in the order a search saw them (t_end, then job id)."""
    rows = curves[curves["epoch"].isin(rungs)]
    return rows.sort_values(["t_end", "job_id"], kind="mergesort")


def compare(curves: pd.DataFrame, max_t: int, grace: int, eta: int) -> dict:
    """Counts of the two rules' decisions on one search's rung arrivals."""
    rungs = asha_rungs(max_t, grace, eta)
    syne = Bracket(grace, max_t, eta, 0)
    seen: dict[int, list[float]] = {r: [] for r in rungs}
    out = {"arrivals": 0, "syne_only": 0, "ours_only": 0, "ties": 0}
    for r in arrivals(curves, rungs).itertuples():
        loss, earlier = float(r.val_loss), seen[int(r.epoch)]
        ours = ray_continues(-loss, [-v for v in earlier], eta)  # ours maximises -val_loss
        theirs = syne.on_result(int(r.job_id), int(r.epoch), {"val_loss": loss}) == "CONTINUE"
        out["arrivals"] += 1
        if ours != theirs:
            out["syne_only" if theirs else "ours_only"] += 1
            out["ties"] += loss in earlier
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
        print("| source | searches | arrivals | Syne Tune continues, ours stops | "
              "ours continues, Syne Tune stops | of these, ties |")
        print("|---|---|---|---|---|---|")
        total = {"arrivals": 0, "syne_only": 0, "ours_only": 0, "ties": 0}
        for name, paths in sources.items():
            counts = {k: 0 for k in total}
            for path in paths:
                c = compare(pd.read_csv(path), s.max_t, s.grace, s.eta)
                counts = {k: counts[k] + c[k] for k in counts}
            total = {k: total[k] + counts[k] for k in total}
            n = max(counts["arrivals"], 1)
            print(f"| {name} | {len(paths)} | {counts['arrivals']} | {counts['syne_only']} "
                  f"({counts['syne_only'] / n:.1%}) | {counts['ours_only']} "
                  f"({counts['ours_only'] / n:.1%}) | {counts['ties']} |")
        n = max(total["arrivals"], 1)
        print(f"| all | | {total['arrivals']} | {total['syne_only']} "
              f"({total['syne_only'] / n:.1%}) | {total['ours_only']} "
              f"({total['ours_only'] / n:.1%}) | {total['ties']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
