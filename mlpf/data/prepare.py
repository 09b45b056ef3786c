"""Generate the train/val/test sets of a scale into data/<scale>/<split>/ (``make data``).

    python -m mlpf.data.prepare --scale smoke [--workers 2]

Each split has its own seed, so no event appears in two splits. Generation is resumable:
complete files are skipped, so a rerun after an interruption only makes what is missing.
"""

from __future__ import annotations

import argparse
import sys

from mlpf.data.generate import generate
from mlpf.paths import data_dir
from mlpf.scales import SCALES, get_scale

SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}


def prepare(scale: str, workers: int = 1, progress: bool = True) -> dict[str, int]:
    """Make every split of ``scale``; returns the number of files per split."""
    sc = get_scale(scale)
    made = {}
    for split, n in sc.splits.items():
        out = data_dir(scale, split)
        out.mkdir(parents=True, exist_ok=True)
        files = generate(out, n, seed=SPLIT_SEEDS[split], process="ttbar", pileup=sc.pileup,
                         events_per_file=sc.events_per_file, workers=workers, progress=progress)
        made[split] = len(files)
    return made


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        self.exit(2, f"error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m mlpf.data.prepare", description=__doc__.splitlines()[0])
    ap.add_argument("--scale", required=True, choices=sorted(SCALES))
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    for split, n in prepare(args.scale, args.workers).items():
        print(f"{data_dir(args.scale, split)}: {n} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
