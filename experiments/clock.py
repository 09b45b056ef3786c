"""The discrete-event clock of simulated searches (replays and peers share it).

A simulated search has ``workers`` ideal workers and no training: each trial is a generator
(:func:`experiments.trial.replay_epochs`) that yields the seconds of its next epoch and is
resumed when that epoch ends. The clock keeps those ends in a heap and processes them in
simulated-time order; events at the same instant go by trial number (lower first), and an
event scheduled at the current instant while it is processed is processed in the same instant.
So rung decisions and the manager's asks see the order of a live search on ideal workers.

    clock = Clock(workers=2)
    w = clock.take_worker()                          # the lowest free worker
    clock.schedule(12.5, number, item)               # item's next event in 12.5 s
    t = clock.advance(handle)                        # handle(item) for every event at the
                                                     # next instant; returns that instant
"""

from __future__ import annotations

import heapq
from collections.abc import Callable


class Clock:
    """Simulated seconds since the search began, a heap of events and a pool of workers."""

    def __init__(self, workers: int):
        self.now = 0.0
        self._events: list[tuple[float, int, object]] = []  # (time, trial number, item)
        self._free = list(range(workers))  # heap of free worker slots

    def __call__(self) -> float:
        return self.now

    # ---------------------------------------------------------------- workers
    @property
    def free_workers(self) -> int:
        return len(self._free)

    def take_worker(self) -> int:
        """The lowest free worker (RuntimeError when every worker is busy)."""
        if not self._free:
            raise RuntimeError("more trials started than simulated workers")
        return heapq.heappop(self._free)

    def release_worker(self, worker: int) -> None:
        heapq.heappush(self._free, worker)

    # ---------------------------------------------------------------- events
    @property
    def pending(self) -> bool:
        return bool(self._events)

    def schedule(self, delay: float, number: int, item) -> None:
        """An event for ``item`` ``delay`` seconds from now (negative delays count as 0)."""
        heapq.heappush(self._events, (self.now + max(0.0, float(delay)), int(number), item))

    def advance(self, handle: Callable[[object], None]) -> float:
        """Move to the next instant with events and call ``handle(item)`` for each of them,
        including events scheduled at that same instant by the handler; returns the instant."""
        t = self._events[0][0]
        self.now = t
        while self._events and self._events[0][0] == t:
            handle(heapq.heappop(self._events)[2])
        return t
