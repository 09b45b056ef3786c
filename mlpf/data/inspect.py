"""Summarise Delphes-format files: what is in them, per file and in total.

    python -m mlpf.data.inspect data/small/train            # a folder
    python -m mlpf.data.inspect a.pkl.bz2 b.pkl.bz2 --json  # files, machine-readable

Every file is read with the safe reader and validated. A file that cannot be used is one line
on stderr naming it and the problem; the others are still summarised; exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field

import numpy as np
from tabulate import tabulate

from mlpf.data.format import CLASS_NAMES, ELEM_TOWER, ELEM_TRACK, N_CLASSES, Event
from mlpf.data.io import DataError, expand_paths, read_file


@dataclass
class Summary:
    name: str
    events: int = 0
    elements: list[int] = field(default_factory=list)
    tracks: int = 0
    towers: int = 0
    classes: np.ndarray = field(default_factory=lambda: np.zeros(N_CLASSES, np.int64))

    def add(self, ev: Event) -> None:
        self.events += 1
        self.elements.append(len(ev))
        self.tracks += int((ev.X[:, 0] == ELEM_TRACK).sum())
        self.towers += int((ev.X[:, 0] == ELEM_TOWER).sum())
        self.classes += np.bincount(ev.ygen[:, 0].astype(np.int64), minlength=N_CLASSES)

    def merge(self, other: Summary) -> None:
        self.events += other.events
        self.elements += other.elements
        self.tracks += other.tracks
        self.towers += other.towers
        self.classes += other.classes

    def as_dict(self) -> dict:
        n = max(self.events, 1)
        return {
            "name": self.name,
            "events": self.events,
            "elements_mean": round(float(np.mean(self.elements)), 1) if self.elements else 0.0,
            "elements_max": int(max(self.elements, default=0)),
            "tracks_per_event": round(self.tracks / n, 1),
            "towers_per_event": round(self.towers / n, 1),
            "ygen_class_counts": {c: int(k) for c, k in zip(CLASS_NAMES, self.classes)},
        }


def summarise(paths: list[str]) -> tuple[list[Summary], Summary, list[DataError]]:
    """Per-file summaries, their total, and the files that failed (with reasons)."""
    per_file, errors = [], []
    total = Summary("total")
    try:
        files = expand_paths(paths)
    except DataError as e:
        return [], total, [e]
    for f in files:
        s = Summary(str(f))
        try:
            for ev in read_file(f):
                s.add(ev)
        except DataError as e:
            errors.append(e)
            continue
        per_file.append(s)
        total.merge(s)
    return per_file, total, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mlpf.data.inspect",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help=".pkl.bz2 files or folders of them")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)

    per_file, total, errors = summarise(args.paths)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    rows = [s.as_dict() for s in per_file] + ([total.as_dict()] if per_file else [])
    if args.json:
        print(json.dumps(rows, indent=1))
    elif rows:
        table = [[r["name"], r["events"], r["elements_mean"], r["elements_max"],
                  r["tracks_per_event"], r["towers_per_event"],
                  *r["ygen_class_counts"].values()] for r in rows]
        headers = ["file", "events", "elem/ev", "max", "tracks/ev", "towers/ev",
                   *(f"ygen {c}" for c in CLASS_NAMES)]
        print(tabulate(table, headers=headers, tablefmt="github"))
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
