"""Helpers every command line of the project shares (mlpf, experiments, analysis).

An error is one line, ``error: <message>`` (:func:`error_line`): any text the user supplied
(a file name, a value) is shown with its control characters escaped, so that a name holding a
newline or a terminal escape cannot forge a second line or clear the screen.
"""

from __future__ import annotations

import argparse
import os

MAX_SEED = 2**32 - 1  # numpy's and DeepHyper's seeds are 32-bit
# Live workers (processes, threads of trials) per usable core before a command line asks for
# --allow-oversubscribe: a few per core still make progress (trials wait on I/O, on the
# manager), hundreds per core only thrash; a typo such as --workers 10000 is refused.
OVERSUBSCRIBE = 4


def _int_at_least(text: str, low: int) -> int:
    """An integer >= ``low``, for an argparse ``type``: a clear message for anything else."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
    return v


def positive_int(text: str) -> int:
    """An integer >= 1 (an argparse ``type``): a clear message for anything else."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (an argparse ``type``)."""
    return _int_at_least(text, 0)


def seed_value(text: str) -> int:
    """One seed: an integer from 0 to 2**32 - 1 (argparse type)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed must be an integer, got {text!r}") from None
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be 0 to 2**32 - 1, got {text}")
    return v


def one_line(text: object) -> str:
    """``text`` safe inside one line of a terminal: each character that is not printable
    (newline, carriage return, tab, ESC and the other C0/C1 controls, Unicode line separators,
    bidirectional overrides, undecodable bytes) becomes its Python escape (``\\n``, ``\\x1b``,
    ``\\u202e``, ``\\udcff``); everything else, non-ASCII letters included, is kept."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in str(text))


def error_line(message: object) -> str:
    """The one line a command prints for a user's mistake: ``error: <message>``."""
    return f"error: {one_line(message)}"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def too_many_workers(n: int, flag: str = "--workers", *,
                     per_core: int = OVERSUBSCRIBE) -> str | None:
    """Why ``n`` live workers are refused on this machine (more than ``per_core`` per usable
    core), or None. The message names the override, ``--allow-oversubscribe``."""
    cores = max(1, usable_cores())
    if n <= per_core * cores:
        return None
    return (f"{flag} {n}: more than {per_core} per usable core ({cores} here, so at most "
            f"{per_core * cores}); pass --allow-oversubscribe to run them anyway")


def duration(seconds: float) -> str:
    """``3725`` -> ``1h02m``, ``125`` -> ``2m05s``, ``7.5`` -> ``7.5s``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"
