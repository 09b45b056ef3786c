"""What a search optimises: a trainable with a search space and per-epoch reports.

A :class:`Trainable` trains one configuration for up to ``max_epochs`` epochs and calls
``on_epoch(metrics)`` after every epoch (``metrics`` has at least ``epoch`` (1-based),
``val_loss``, ``train_loss``, ``epoch_seconds``); a truthy return stops training. Failures are
exceptions; :meth:`Trainable.failure_reason` names them for the logs.

- ``mlpf``: :mod:`mlpf.train` (imported lazily; data loaded once per worker process).
- ``synthetic``: a cheap multi-fidelity function for tests and benchmarks,
  ``loss(config, epoch) = f(config) + a(config) / epoch**b(config) + noise`` with an optional
  sleep per epoch and injected failures. Options come from the environment variable
  ``EXP_SYNTHETIC`` (JSON), so that every worker process and MPI rank sees the same ones::

      EXP_SYNTHETIC='{"sleep": 0.05, "fail": {"diverge": 0.1, "raise": 0.05, "oom": 0.05}}'
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from collections.abc import Callable

import numpy as np

SYNTHETIC_ENV = "EXP_SYNTHETIC"


class Trainable:
    """Interface of what a search trains. Subclasses implement :meth:`train`."""

    name = "base"
    uses_torch = False  # True: the worker picks a torch device and a thread count

    def check_ready(self, scale: str) -> None:
        """Raise ``FileNotFoundError``/``ValueError`` with a one-line message if unusable."""

    def default_config(self) -> dict:
        """Overrides of the untuned default configuration (none: the trainable's defaults)."""
        return {}

    def options(self) -> dict:
        """Settings that change results (logged in metadata.json)."""
        return {}

    def loss_spec(self, scale: str) -> dict:
        """The loss its trainings minimise, as logs record it (``loss`` in metadata.json)."""
        return {"name": self.name}

    def train(self, scale: str, config: dict, max_epochs: int,
              on_epoch: Callable[[dict], bool], *, device=None, seed: int = 0,
              threads: int | None = None, checkpoint_dir: str | None = None) -> list[dict]:
        """Train up to ``max_epochs``; returns the metrics of every epoch.

        With ``checkpoint_dir`` the state is saved there after every epoch and training
        continues from it when it exists (``on_epoch`` is then called for the new epochs only,
        the returned list includes the earlier ones).
        """
        raise NotImplementedError

    def failure_reason(self, exc: BaseException) -> str:
        """Short reason for a failed trial: ``diverged``, ``oom`` or ``error:<Exception>``."""
        name = type(exc).__name__
        if "Diverged" in name:
            return "diverged"
        if "OutOfMemory" in name or isinstance(exc, MemoryError):
            return "oom"
        return f"error:{name}"


# ----------------------------------------------------------------------------- mlpf
_DATA_CACHE: dict = {}  # scale -> data, one load per worker process


class MLPFTrainable(Trainable):
    """The MLPF model of :mod:`mlpf.train` (see its ``TrainConfig`` for the keys)."""

    name = "mlpf"
    uses_torch = True

    def check_ready(self, scale: str) -> None:
        """The scale's train and val data exist and every file the trials will read is
        usable: bad data fails the search before any trial, in one line naming the file,
        instead of failing every trial. Each split is read as :func:`mlpf.train.load_data`
        reads it (files in order up to the scale's events of the split, one in memory at a
        time), so this costs the manager one reading of the data before the first trial."""
        from mlpf.data.io import DataError, iter_events
        from mlpf.paths import data_dir
        from mlpf.scales import get_scale

        for split in ("train", "val"):
            d = data_dir(scale, split)
            if not d.is_dir() or not any(d.iterdir()):
                raise FileNotFoundError(
                    f"no {split} data in {d}; run `make data SCALE={scale}` first")
            try:
                # load_events stops at the event after the cap: the files it reads, no more
                for n, _ in enumerate(iter_events([d])):
                    if n >= get_scale(scale).splits[split]:
                        break
            except DataError as e:
                raise ValueError(f"unusable {split} data: {e}") from None
        try:
            import mlpf.train  # noqa: F401
        except ImportError as e:
            raise FileNotFoundError(f"mlpf.train is not importable: {e}") from None

    def loss_spec(self, scale: str) -> dict:
        from mlpf.train import config_for_scale, loss_spec

        return loss_spec(config_for_scale(scale))

    def train(self, scale, config, max_epochs, on_epoch, *, device=None, seed=0, threads=None,
              checkpoint_dir=None):
        from mlpf.train import apply_overrides, config_for_scale, load_data, train

        cfg = apply_overrides(config_for_scale(scale), config)
        if scale not in _DATA_CACHE:
            _DATA_CACHE.clear()  # one scale per process; free the previous one
            _DATA_CACHE[scale] = load_data(scale)
        return train(cfg, _DATA_CACHE[scale], max_epochs, on_epoch=on_epoch, device=device,
                     seed=seed, threads=threads, checkpoint_dir=checkpoint_dir)


# ----------------------------------------------------------------------------- synthetic
class SyntheticDiverged(RuntimeError):
    """The synthetic stand-in for a diverging training (NaN loss)."""


class SyntheticOutOfMemory(RuntimeError):
    """The synthetic stand-in for a device running out of memory."""


def unit_hash(*parts) -> float:
    """Deterministic number in [0, 1) from any printable parts."""
    return zlib.crc32(repr(parts).encode()) / 2**32


def _encode(config: dict) -> dict[str, float]:
    """Each hyperparameter as a number in [0, 1] (log scale for lr, hash for strings)."""
    out = {}
    for k, v in sorted(config.items()):
        if isinstance(v, (bool, np.bool_)):
            out[k] = float(v)
        elif isinstance(v, str):
            out[k] = unit_hash(k, v)
        elif k == "lr":
            out[k] = (math.log10(v) + 4) / (math.log10(3e-2) + 4)
        else:
            out[k] = float(v) / (abs(float(v)) + 32.0)  # monotone squash of sizes
    return out


class SyntheticTrainable(Trainable):
    """A multi-fidelity test function with the shape of a learning curve.

    ``f(config)`` is a weighted squared distance to an optimum fixed per hyperparameter name;
    ``a`` and ``b`` depend on the learning rate so that curves cross (early ranking is an
    imperfect predictor of the final one, as in real training).

    Args (via ``EXP_SYNTHETIC`` or the constructor):
        sleep: seconds slept per epoch (the cost of an epoch).
        noise: standard deviation of the per-epoch noise.
        fail: probabilities per configuration of ``diverge`` (NaN at epoch 2), ``raise``
            (an ordinary exception at epoch 1) and ``oom`` (out of memory before epoch 1).
    """

    name = "synthetic"

    def __init__(self, sleep: float = 0.0, noise: float = 0.01, fail: dict | None = None):
        self.sleep = float(sleep)
        self.noise = float(noise)
        self.fail = dict(fail or {})
        unknown = set(self.fail) - {"diverge", "raise", "oom"}
        if unknown:
            raise ValueError(f"unknown synthetic failure kinds {sorted(unknown)}")

    @classmethod
    def from_env(cls) -> SyntheticTrainable:
        return cls(**json.loads(os.environ.get(SYNTHETIC_ENV) or "{}"))

    def options(self) -> dict:
        return {"sleep": self.sleep, "noise": self.noise, "fail": self.fail}

    def loss(self, config: dict, epoch: int, seed: int = 0) -> float:
        x = _encode(config)
        f = 0.2 + sum((1 + unit_hash("w", k)) * (v - unit_hash("opt", k)) ** 2
                      for k, v in x.items()) / max(len(x), 1)
        speed = x.get("lr", 0.5)
        a = 1.5 - speed  # slow learners start high ...
        b = 0.3 + 1.5 * speed  # ... and converge more slowly
        rng = np.random.default_rng(zlib.crc32(repr((sorted(config.items()), epoch, seed))
                                               .encode()))
        return float(f + a / epoch**b + self.noise * rng.standard_normal())

    def failure_kind(self, config: dict) -> str | None:
        u = unit_hash("fail", sorted(config.items()))
        lo = 0.0
        for kind in ("diverge", "raise", "oom"):
            p = float(self.fail.get(kind, 0.0))
            if lo <= u < lo + p:
                return kind
            lo += p
        return None

    def train(self, scale, config, max_epochs, on_epoch, *, device=None, seed=0, threads=None,
              checkpoint_dir=None):
        failure = self.failure_kind(config)
        if failure == "oom":
            raise SyntheticOutOfMemory("synthetic out of memory")
        ckpt = os.path.join(checkpoint_dir, "synthetic.json") if checkpoint_dir else None
        history = []
        if ckpt and os.path.exists(ckpt):  # the state of this function is its epoch count
            with open(ckpt) as f:
                history = json.load(f)["history"]
        for epoch in range(len(history) + 1, max_epochs + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            if self.sleep:
                time.sleep(self.sleep)
            if failure == "raise":
                raise ValueError("synthetic error in the training loop")
            val = float("nan") if (failure == "diverge" and epoch >= 2) else \
                self.loss(config, epoch, seed)
            # the sleep stands for training compute: it counts as the stand-in's CPU time
            metrics = {"epoch": epoch, "val_loss": val, "train_loss": val * 0.9,
                       "epoch_seconds": time.perf_counter() - t0,
                       "epoch_cpu_seconds": time.process_time() - c0 + self.sleep}
            history.append(metrics)
            if ckpt:
                os.makedirs(checkpoint_dir, exist_ok=True)
                with open(ckpt + ".tmp", "w") as f:
                    json.dump({"history": history}, f)
                os.replace(ckpt + ".tmp", ckpt)
            if on_epoch(dict(metrics)):
                break
        return history


TRAINABLES = {"mlpf": MLPFTrainable, "synthetic": SyntheticTrainable.from_env}


def get_trainable(name: str) -> Trainable:
    try:
        factory = TRAINABLES[name]
    except KeyError:
        raise ValueError(f"unknown trainable {name!r}; choose one of {', '.join(TRAINABLES)}")\
            from None
    return factory()
