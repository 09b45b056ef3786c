"""A local Ray cluster on loopback only: the one switch that the Ray engine of our searches
(:mod:`experiments.backends.live`) and the Ray Tune peers (:mod:`experiments.peers.ray_tune`)
both use. ``tests/experiments/test_ray.py`` checks what such a cluster listens on."""

from __future__ import annotations

import os

LOOPBACK = "127.0.0.1"  # the node address of every local cluster


def ray_loopback_only() -> None:
    """Make a local Ray cluster take 127.0.0.1 as its node's address, so that every Ray server
    binds to loopback only: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (what Ray does on macOS
    and Windows), for its processes and in this one, where Ray read it when DeepHyper imported
    ray (Ray 2.60 reads ``ray_constants.ENABLE_RAY_CLUSTER`` when it picks the node's address).
    A value set by the user is kept. Usage statistics are off: nothing leaves the machine."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", True)
