"""Generate the train/val/test sets of a scale into data/<scale>/<split>/ (``make data``).

    python -m mlpf.data.prepare --scale smoke [--workers 2]
    python -m mlpf.data.prepare --scale paper --workers 48 --shard 3/8   # task 3 of 8

Each split has its own seed, so no event appears in two splits. Generation is resumable:
complete files are skipped, so a rerun after an interruption only makes what is missing.
``--shard i/n`` makes only the files ``k`` with ``k % n == i`` (``k`` counts the files of
train, val and test in that order), so ``n`` independent jobs (a Slurm array:
experiments/slurm/datagen.sbatch) share the work without talking to each other; the bytes
of a file do not depend on the shard that made it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys

from mlpf.cli import error_line, positive_int, too_many_workers
from mlpf.data.generate import FileJob, generate, generate_file, plan
from mlpf.paths import data_dir
from mlpf.scales import SCALES, get_scale

SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}
PROCESS = "ttbar"


def prepare(scale: str, workers: int = 1, progress: bool = True,
            shard: tuple[int, int] | None = None) -> dict[str, int]:
    """Make every split of ``scale`` (or shard ``(i, n)``'s share of its files); returns the
    number of files per split (made or found)."""
    if shard is not None:
        return _prepare_shard(scale, workers, shard, progress)
    sc = get_scale(scale)
    made = {}
    for split, n in sc.splits.items():
        out = data_dir(scale, split)
        out.mkdir(parents=True, exist_ok=True)
        files = generate(out, n, seed=SPLIT_SEEDS[split], process=PROCESS, pileup=sc.pileup,
                         events_per_file=sc.events_per_file, workers=workers, progress=progress)
        made[split] = len(files)
    return made


def shard_files(scale: str, i: int, n: int) -> dict[str, list[FileJob]]:
    """Shard ``i`` of ``n``: the files ``k % n == i`` of train + val + test, per split."""
    sc = get_scale(scale)
    jobs = [(split, job) for split, events in sc.splits.items()
            for job in plan(data_dir(scale, split), events, SPLIT_SEEDS[split], PROCESS,
                            sc.pileup, sc.events_per_file)]
    mine: dict[str, list[FileJob]] = {split: [] for split in sc.splits}
    for split, job in jobs[i::n]:
        mine[split].append(job)
    return mine


def _prepare_shard(scale: str, workers: int, shard: tuple[int, int],
                   progress: bool) -> dict[str, int]:
    mine = shard_files(scale, *shard)
    todo = [job for jobs in mine.values() for job in jobs if not job.path.exists()]
    for job in todo:
        job.path.parent.mkdir(parents=True, exist_ok=True)
        # as generate() does: a file of the same index with another event count belongs to
        # an earlier, different request and would duplicate events
        stem = job.path.name.rsplit("_n", 1)[0]
        for old in job.path.parent.glob(f"{stem}_n*.pkl.bz2"):
            if old != job.path:
                old.unlink()
    def done(k: int, job: FileJob) -> None:  # one line per file: readable in a batch log
        if progress:
            print(f"[{k}/{len(todo)}] {job.path}", file=sys.stderr, flush=True)

    if workers == 1 or len(todo) <= 1:
        for k, job in enumerate(todo, 1):
            done(k, generate_file(job))
    else:
        with multiprocessing.Pool(min(workers, len(todo))) as pool:
            for k, job in enumerate(pool.imap_unordered(generate_file, todo), 1):
                done(k, job)
    return {split: len(jobs) for split, jobs in mine.items()}


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n`` (argparse type)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n, e.g. 0/4, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"need 0 <= i < n, got {text!r}")
    return i, n


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        self.exit(2, error_line(message) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m mlpf.data.prepare", description=__doc__.splitlines()[0])
    ap.add_argument("--scale", required=True, choices=sorted(SCALES))
    ap.add_argument("--workers", type=positive_int, default=1, help="processes (default 1)")
    ap.add_argument("--allow-oversubscribe", action="store_true",
                    help="more workers than the machine's cap (refused otherwise)")
    ap.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                    help="make only the files k with k %% N == I (one task of N)")
    args = ap.parse_args(argv)
    why = None if args.allow_oversubscribe else too_many_workers(args.workers)
    if why:
        ap.error(why)
    made = prepare(args.scale, args.workers, shard=args.shard)
    tag = f" (shard {args.shard[0]}/{args.shard[1]})" if args.shard else ""
    for split, n in made.items():
        print(f"{data_dir(args.scale, split)}: {n} files{tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
