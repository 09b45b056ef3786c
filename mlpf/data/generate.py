"""Generate Delphes-format events on the spot: Pythia8 at 14 TeV + the parametric detector.

    python -m mlpf.data.generate --out data/demo --events 200                  # ttbar, no PU
    python -m mlpf.data.generate --out data/qcd --events 100 --process qcd --pileup 50 \
        --seed 7 --workers 2

Processes: ``ttbar`` (Top:gg2ttbar + Top:qqbar2ttbar, as in the public dataset) and ``qcd``
(HardQCD:all, pTHat > 30 GeV). ``--pileup MU`` overlays Poisson(MU) soft-QCD
(SoftQCD:nonDiffractive) events from a second Pythia instance, all at the origin.

Events go into files of ``--events-per-file`` named
``{process}_pu{MU:g}_seed{S}_{index:04d}_n{events}.pkl.bz2``. Every file is an independent unit of
work: its Pythia and detector seeds derive from (seed, process, pileup, file index) only, and
each file gets fresh Pythia instances, so the same arguments give the same bytes whatever
``--workers`` is. Files are written atomically, so a file under its final name is complete
and a rerun skips it. A name records how many events its file holds (``_n100``): a rerun that
asks for more events replaces a short last file of an earlier, smaller request.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpf.data.detector import CMS, Detector, Particles, simulate
from mlpf.data.io import write_file

E_CM = 14000.0  # GeV
# Stable particles as in Delphes setups: K0S, Lambda, ... (c tau > 10 mm) reach the detector.
COMMON_SETTINGS = (
    f"Beams:eCM = {E_CM}",
    "Print:quiet = on",
    "Next:numberCount = 0",
    "ParticleDecays:limitTau0 = on",
    "ParticleDecays:tau0Max = 10",
)
PROCESSES = {
    "ttbar": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on"),
    "qcd": ("HardQCD:all = on", "PhaseSpace:pTHatMin = 30."),
}
PILEUP_SETTINGS = ("SoftQCD:nonDiffractive = on",)
PYTHIA_SEED_MAX = 900_000_000  # Pythia accepts Random:seed in [0, 900000000]


def derive_seed(*keys, modulus: int = 2**63) -> int:
    """A seed in [1, modulus) from any keys, stable across runs, machines and Python versions."""
    digest = hashlib.sha256("|".join(map(str, keys)).encode()).digest()
    return 1 + int.from_bytes(digest[:8], "little") % (modulus - 1)


def file_name(process: str, pileup: float, seed: int, index: int, n_events: int) -> str:
    """File ``index`` of a stream holds the first ``n_events`` events of that index's seed."""
    return f"{process}_pu{pileup:g}_seed{seed}_{index:04d}_n{n_events}.pkl.bz2"


def _remove_superseded(job: FileJob) -> None:
    """Drop files of the same index with another event count (an earlier, other request).

    They hold a prefix or an extension of the same event stream, so keeping both would put
    the same events into a set twice.
    """
    stem = job.path.name.rsplit("_n", 1)[0]
    for old in job.path.parent.glob(f"{stem}_n*.pkl.bz2"):
        if old != job.path:
            old.unlink()


def check_args(events: int, process: str, pileup: float, events_per_file: int,
               workers: int) -> None:
    """Raise ValueError with a one-line reason for arguments generate() cannot use."""
    if events <= 0:
        raise ValueError(f"--events must be positive (got {events})")
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r}; choose one of {', '.join(PROCESSES)}")
    if not (pileup >= 0 and math.isfinite(pileup)):
        raise ValueError(f"--pileup must be a finite number >= 0 (got {pileup})")
    if events_per_file <= 0:
        raise ValueError(f"--events-per-file must be positive (got {events_per_file})")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1 (got {workers})")


def make_pythia(settings: tuple[str, ...], seed: int):
    """An initialised, silent Pythia instance with a fixed seed."""
    import pythia8mc  # imported here: only generating processes need it

    pythia = pythia8mc.Pythia("", False)  # False: no banner
    for s in (*COMMON_SETTINGS, *settings, "Random:setSeed = on", f"Random:seed = {seed}"):
        if not pythia.readString(s):
            raise RuntimeError(f"Pythia rejected setting {s!r}")
    if not pythia.init():
        raise RuntimeError("Pythia initialisation failed")
    return pythia


def final_state_rows(pythia) -> list[tuple]:
    """(pdg, charge, px, py, pz, e) of every final-state particle of the current event."""
    return [(p.id(), p.charge(), p.px(), p.py(), p.pz(), p.e())
            for p in pythia.event if p.isFinal()]


def _next(pythia) -> None:
    # Pythia can fail an event (rarely); it then just tries again with fresh random numbers.
    for _ in range(100):
        if pythia.next():
            return
    raise RuntimeError("Pythia failed 100 events in a row")


@dataclass(frozen=True)
class FileJob:
    """One output file: everything that determines its bytes."""

    path: Path
    n_events: int
    seed: int
    process: str
    pileup: float
    index: int


def event_particles(job: FileJob) -> tuple[np.random.Generator, Callable[[], Particles]]:
    """Detector RNG and a function returning the next event's particles (hard + pileup)."""
    keys = (job.seed, job.process, f"{job.pileup:g}", job.index)
    hard = make_pythia(PROCESSES[job.process], derive_seed(*keys, "hard", modulus=PYTHIA_SEED_MAX))
    soft = (make_pythia(PILEUP_SETTINGS, derive_seed(*keys, "pileup", modulus=PYTHIA_SEED_MAX))
            if job.pileup > 0 else None)
    rng = np.random.default_rng(derive_seed(*keys, "detector"))

    def next_event() -> Particles:
        _next(hard)
        rows = final_state_rows(hard)
        if soft is not None:
            for _ in range(rng.poisson(job.pileup)):
                _next(soft)
                rows += final_state_rows(soft)
        return Particles.from_rows(rows)

    return rng, next_event


def generate_file(job: FileJob, det: Detector = CMS,
                  on_event: Callable[[], None] | None = None) -> FileJob:
    """Generate, simulate and write one file (atomically)."""
    rng, next_event = event_particles(job)
    events = []
    for _ in range(job.n_events):
        events.append(simulate(next_event(), rng, det))
        if on_event is not None:
            on_event()
    write_file(job.path, events)
    return job


def plan(out: Path, events: int, seed: int, process: str, pileup: float,
         events_per_file: int) -> list[FileJob]:
    """Every file of a request, in order; the last one may hold fewer events."""
    n_files = -(-events // events_per_file)
    jobs = []
    for i in range(n_files):
        n = min(events_per_file, events - i * events_per_file)
        jobs.append(FileJob(out / file_name(process, pileup, seed, i, n), n, seed, process,
                            float(pileup), i))
    return jobs


def generate(out: str | Path, events: int, seed: int = 0, process: str = "ttbar",
             pileup: float = 0.0, events_per_file: int = 100, workers: int = 1,
             progress: bool = True) -> list[Path]:
    """Make ``events`` events in ``out``; returns every file of the request (made or found).

    Files already present under their final name are skipped. ``workers`` processes share
    the missing files; the bytes do not depend on it.
    """
    check_args(events, process, pileup, events_per_file, workers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = plan(out, events, seed, process, pileup, events_per_file)
    todo = [j for j in jobs if not j.path.exists()]
    for job in todo:
        _remove_superseded(job)
    from tqdm import tqdm

    bar = tqdm(total=events, initial=events - sum(j.n_events for j in todo), unit="ev",
               desc=f"{process} pu{pileup:g}", disable=not progress, file=sys.stderr,
               mininterval=1.0, dynamic_ncols=True)
    with bar:
        if workers == 1 or len(todo) <= 1:
            for job in todo:
                generate_file(job, on_event=lambda: bar.update(1))
        else:
            with multiprocessing.Pool(min(workers, len(todo))) as pool:
                for job in pool.imap_unordered(generate_file, todo):
                    bar.update(job.n_events)
    return [j.path for j in jobs]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit status 2 (argparse prints usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m mlpf.data.generate", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--events", required=True, type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--process", default="ttbar", help=" | ".join(PROCESSES))
    ap.add_argument("--pileup", type=float, default=0.0, help="mean soft-QCD interactions")
    ap.add_argument("--events-per-file", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        check_args(args.events, args.process, args.pileup, args.events_per_file, args.workers)
    except ValueError as e:
        ap.error(str(e))
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"--out {args.out} exists and is not a folder")
    files = generate(args.out, args.events, args.seed, args.process, args.pileup,
                     args.events_per_file, args.workers, progress=not args.quiet)
    print(f"{args.out}: {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
