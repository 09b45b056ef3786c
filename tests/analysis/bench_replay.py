"""Time `analysis.replay` on FAKE replay logs of a realistic size (11 methods x 20 seeds).

    .venv/bin/python -m tests.analysis.bench_replay [--seeds 20] [--trials 150] [--max-t 3]

The logs are synthetic (tests.analysis.fakelogs.replay_scale), written to a temporary folder
and deleted: this measures the analysis, it produces no result.
"""

import argparse
import tempfile
import time
import warnings
from pathlib import Path

from analysis.replay import build
from tests.analysis.fakelogs import REPLAY_METHODS, replay_scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--trials", type=int, default=150, help="trials per search")
    ap.add_argument("--max-t", type=int, default=3, help="epochs of a full trial")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        replay_scale(Path(tmp), "paper", seeds=range(args.seeds), n_trials=args.trials,
                     max_t=args.max_t)
        t1 = time.perf_counter()
        n_rows = sum(sum(1 for _ in open(p)) - 1 for p in Path(tmp).rglob("learning_curves.csv"))
        build("paper", Path(tmp) / "paper" / "replay", Path(tmp) / "out",
              min_seeds=args.seeds)
        t2 = time.perf_counter()
    n = (len(REPLAY_METHODS) + 1) * args.seeds
    print(f"{n} searches ({len(REPLAY_METHODS)} methods + default), {n_rows} epoch rows: "
          f"fake logs written in {t1 - t0:.1f} s, analysis.replay {t2 - t1:.1f} s")


if __name__ == "__main__":
    main()
