"""Processes that end with the process that started them (Linux ``prctl PR_SET_PDEATHSIG``):
a search of a killed campaign, a worker of a killed table build. Light: no import beyond the
standard library, so that pool workers can use it at their start."""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def death_signal(sig: int) -> bool:
    """prctl(PR_SET_PDEATHSIG, sig) for this process; False where it is not available."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with(parent: int, sig: int = signal.SIGKILL) -> None:
    """In a child of ``parent`` (a pool worker, at its start): get ``sig`` when ``parent``
    dies, however it dies; exit now if it is already gone. Linux only."""
    if sys.platform.startswith("linux") and death_signal(sig) and os.getppid() != parent:
        os._exit(1)


def stopped_with_parent(sig: int = signal.SIGTERM):
    """A ``preexec_fn`` for :class:`subprocess.Popen` (called from a main thread): the child
    gets ``sig`` when this process dies, however it dies (SIGKILL included), so that a child
    search of a killed campaign stops as if interrupted (its logs say so; ``--resume``
    continues it) instead of running on for nobody. Linux only; elsewhere None."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def preexec() -> None:
        if death_signal(sig) and os.getppid() != parent:  # the parent died before the call
            os.kill(os.getpid(), sig)

    return preexec
