"""Time `analysis.make_figures` on large FAKE logs (a paper-sized study: 4 methods x 3 seeds).

    .venv/bin/python -m tests.analysis.bench_make_figures [--trials 200] [--max-t 200]

The logs are synthetic (tests.analysis.fakelogs), written to a temporary folder and deleted:
this measures the analysis, it produces no result.
"""

import argparse
import tempfile
import time
import warnings
from pathlib import Path

from analysis.make_figures import build
from tests.analysis.fakelogs import synthetic_scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200, help="trials per search")
    ap.add_argument("--max-t", type=int, default=200, help="epochs of a full trial")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        synthetic_scale(Path(tmp) / "results", "paper", ("random", "hyperband", "asha", "asha_bo"),
                        seeds=range(args.seeds), n_trials=args.trials, max_t=args.max_t,
                        workers=12)
        t1 = time.perf_counter()
        n_rows = sum(sum(1 for _ in open(p)) - 1
                     for p in (Path(tmp) / "results").rglob("learning_curves.csv"))
        build("paper", Path(tmp) / "results", Path(tmp) / "out")
        t2 = time.perf_counter()
        print(f"{4 * args.seeds} searches, {4 * args.seeds * args.trials} trials, "
              f"{n_rows} epoch rows: fake logs written in {t1 - t0:.1f} s, "
              f"make_figures {t2 - t1:.1f} s")


if __name__ == "__main__":
    main()
