"""What every command line of :mod:`experiments` shares: the error type, the parser, the flags.

A user's mistake is a :class:`CliError`: the entry point prints ``error: <one line>`` and
returns 2, never a traceback or a usage dump; text the user supplied cannot break that line
(:func:`mlpf.cli.one_line`). Flags with the same meaning have the same spelling and checks
everywhere (``--scale``, ``--out``, ``--workers``, ``--seed``/``--seeds``, ``--budget``,
``--time-budget``). Live workers are capped by the machine (:func:`check_workers`, lifted by
``--allow-oversubscribe``), simulated ones by :data:`MAX_SIMULATED_WORKERS`; MPI ranks are the
launcher's.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

from mlpf.cli import (  # noqa: F401 - re-exported for experiments/ modules
    MAX_SEED,
    OVERSUBSCRIBE,
    duration,
    error_line,
    non_negative_int,
    positive_int,
    seed_value,
    too_many_workers,
)
from mlpf.scales import SCALES as _PRESETS

SCALES = tuple(_PRESETS)  # smoke, small, paper: a name, never a path
# Simulated (replayed) workers cost memory and time, not cores: many, but a bounded many.
MAX_SIMULATED_WORKERS = 4096


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are :class:`CliError` (one line, exit 2, no usage)."""

    def __init__(self, prog: str, doc: str | None = None, **kw):
        super().__init__(prog=prog, description=(doc or "").split("\n\n")[0],
                         formatter_class=argparse.RawDescriptionHelpFormatter, **kw)

    def error(self, message):
        raise CliError(message)


def seconds(text: str) -> float:
    """A finite number of seconds >= 0 (argparse type; 0 means none)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


def seed_list(text: str) -> list[int]:
    """``"0 1 2"`` -> ``[0, 1, 2]`` (argparse type; seeds are integers 0 to 2**32 - 1)."""
    try:
        seeds = [int(s) for s in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers, got {text!r}") from None
    if not seeds or min(seeds) < 0 or max(seeds) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"give one or more seeds from 0 to 2**32 - 1, got "
                                         f"{text!r}")
    return seeds


def add_scale(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", required=True, choices=SCALES, help=" | ".join(SCALES))


def add_workers(p: argparse.ArgumentParser, what: str = "parallel trials") -> None:
    p.add_argument("--workers", type=positive_int, default=2, help=f"{what} (default 2)")
    add_oversubscribe(p)


def add_oversubscribe(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-oversubscribe", action="store_true",
                   help=f"run more than {OVERSUBSCRIBE} live workers or processes per usable "
                   "core (refused otherwise, so that a typo cannot start thousands)")


def check_workers(n: int, flag: str = "--workers", *, allow: bool = False,
                  per_core: int = OVERSUBSCRIBE) -> None:
    """CliError if ``n`` live workers or processes (``flag``) are more than ``per_core`` per
    usable core and ``allow`` (``--allow-oversubscribe``) is not given."""
    why = None if allow else too_many_workers(n, flag, per_core=per_core)
    if why:
        raise CliError(why)


def check_simulated_workers(n: int, flag: str = "--workers") -> None:
    """CliError if ``n`` simulated workers exceed :data:`MAX_SIMULATED_WORKERS` (no override:
    the bound is the replay's, not the machine's)."""
    if n > MAX_SIMULATED_WORKERS:
        raise CliError(f"{flag} {n}: a replay simulates at most {MAX_SIMULATED_WORKERS} "
                       "workers")


def add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=seed_value, default=0, help="seed of the search (default 0)")


def add_seeds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=seed_list, default=[0], help='seeds, e.g. "0 1 2"')


def add_budget(p: argparse.ArgumentParser, time_help: str) -> None:
    p.add_argument("--budget", type=positive_int, default=None,
                   help="epochs per search (default: the scale's, see experiments.methods)")
    p.add_argument("--time-budget", type=seconds, default=None,
                   help=f"seconds per search, 0 = none (default: {time_help})")
    p.add_argument("--device-budget", type=seconds, default=None,
                   help="device-seconds per search, a hard cut counting running trials "
                   "(a device: one worker, CPU thread or GPU); 0 = none (default: the "
                   "scale's)")


def launcher_rank() -> int:
    """This process's rank as the MPI launcher exported it (0 when not launched by MPI)."""
    for var in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def run_main(body: Callable[[], int]) -> int:
    """Run an entry point's body: a :class:`CliError` becomes one line on stderr and exit 2
    (said once under an MPI launcher, where every rank gets it)."""
    try:
        return body()
    except CliError as e:
        if launcher_rank() == 0:
            print(error_line(e), file=sys.stderr)
        return 2
