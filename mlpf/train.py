"""Train MLPF one epoch at a time: the trainable that the hyperparameter searches tune.

    python -m mlpf.train --scale smoke --epochs 3 --out runs/smoke
    python -m mlpf.train --data data/small --epochs 10 --out runs/try --set lr=3e-3 bin_size=32

From Python (what experiments/ calls):

    cfg = apply_overrides(config_for_scale("small"), {"lr": 1e-3, "num_node_messages": 2})
    history = train(cfg, load_data("small"), max_epochs=27, on_epoch=report)

``on_epoch(metrics)`` runs after every epoch; a truthy return stops training. The metrics of
an epoch are exactly METRIC_KEYS. The model is MLPF (Pata et al., arXiv:2101.08578, see
mlpf/model.py); the hyperparameters are those searched in arXiv:2203.01112.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import numbers
import os
import pickle
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from mlpf.cli import error_line, positive_int, seed_value
from mlpf.data.format import Event
from mlpf.data.io import DataError, load_events
from mlpf.loss import (
    COMPONENTS,
    REG_TERMS,
    UPSTREAM,
    UPSTREAM_COEFS,
    UPSTREAM_DELTAS,
    combine,
    loss_sums,
)
from mlpf.model import ACTIVATIONS, MLPF, MODEL_DEFAULTS, ModelConfig, decode
from mlpf.paths import ROOT, data_dir, shown
from mlpf.scales import DEFAULT_SCALE, SCALES, get_scale

# Per-epoch metrics. epoch is 1-based; train_loss is the mean over the epoch's batches;
# val_loss is the weighted total and val_loss_<term> each unweighted component (per-element
# means over the whole validation set, mlpf/loss.py, independent of batching); val_loss_reg is
# the weighted sum of the momentum terms. epoch_seconds is the wall time of the epoch including
# validation (what compute accounting multiplies by devices on a GPU), epoch_cpu_seconds the
# CPU time of the training process in it (what it costs on a CPU worker, whatever the load
# beside it); events_per_second counts training events over the training phase only.
VAL_COMPONENT_KEYS = tuple(f"val_loss_{k}" for k in COMPONENTS)
METRIC_KEYS = ("epoch", "train_loss", "val_loss", "val_loss_reg", *VAL_COMPONENT_KEYS,
               "epoch_seconds", "epoch_cpu_seconds", "events_per_second", "devices")
LR_SCHEDULES = ("exponential", "cosine", "none")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # autocast dtype
# Validation batches hold at least this many events: outputs do not depend on the batch
# (padding and neighbours are masked out), so larger batches only save per-operator
# overhead; the losses are sums over elements, equal up to rounding.
EVAL_BATCH_EVENTS = 32
CHECKPOINT = "checkpoint.pt"
MAX_WIDTH = 1 << 16  # a width beyond this is a typo, not a model (refused before allocating)
MAX_DEPTH = 64


# ----------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Every knob of one training run. The defaults are the untuned reference configuration:
    a hand-set MLPF (moderate width, one message-passing step, a conservative learning rate
    with slow exponential decay, no dropout) that the searches must beat. Scale presets
    (mlpf/scales.py) resize the model on top of it; see :func:`config_for_scale`."""

    # model (mlpf/model.py: ModelConfig holds the defaults; MODEL_KEYS below derives from it)
    width: int = MODEL_DEFAULTS.width
    layernorm: bool = MODEL_DEFAULTS.layernorm
    ffn_dist_hidden_dim: int = MODEL_DEFAULTS.ffn_dist_hidden_dim
    ffn_dist_num_layers: int = MODEL_DEFAULTS.ffn_dist_num_layers
    distance_dim: int = MODEL_DEFAULTS.distance_dim
    num_node_messages: int = MODEL_DEFAULTS.num_node_messages
    num_graph_layers_common: int = MODEL_DEFAULTS.num_graph_layers_common
    num_graph_layers_energy: int = MODEL_DEFAULTS.num_graph_layers_energy
    dropout: float = MODEL_DEFAULTS.dropout
    bin_size: int = MODEL_DEFAULTS.bin_size
    clip_value_low: float = MODEL_DEFAULTS.clip_value_low
    dist_mult: float = MODEL_DEFAULTS.dist_mult
    normalize_degrees: bool = MODEL_DEFAULTS.normalize_degrees
    output_dim: int = MODEL_DEFAULTS.output_dim
    activation: str = MODEL_DEFAULTS.activation
    # optimiser: AdamW; learning rate per optimiser step
    lr: float = 3e-4
    batch_size: int = 8  # events per step
    lr_schedule: str = "exponential"  # exponential | cosine | none
    lr_decay_rate: float = 0.95  # exponential: lr * rate ** (step / (lr_decay_steps * step_scale))
    lr_decay_steps: float = 1000.0  # in the study's optimiser steps: x step_scale here
    step_scale: float = 1.0  # this run's steps per study step (mlpf/scales.py schedule rule)
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    # loss (mlpf/loss.py): upstream MLPF's Delphes weights and Huber deltas
    cls_coef: float = UPSTREAM_COEFS["cls"]
    charge_coef: float = UPSTREAM_COEFS["charge"]
    pt_coef: float = UPSTREAM_COEFS["pt"]
    eta_coef: float = UPSTREAM_COEFS["eta"]
    sin_phi_coef: float = UPSTREAM_COEFS["sin_phi"]
    cos_phi_coef: float = UPSTREAM_COEFS["cos_phi"]
    energy_coef: float = UPSTREAM_COEFS["energy"]
    pt_delta: float = UPSTREAM_DELTAS["pt"]
    eta_delta: float = UPSTREAM_DELTAS["eta"]
    sin_phi_delta: float = UPSTREAM_DELTAS["sin_phi"]
    cos_phi_delta: float = UPSTREAM_DELTAS["cos_phi"]
    energy_delta: float = UPSTREAM_DELTAS["energy"]
    focal_gamma: float = 0.0  # 0 = plain cross entropy
    # execution: how a run computes, not what it learns (same results up to rounding)
    precision: str = "fp32"  # fp32 | bf16 (autocast; LSH hash and kernel stay fp32)
    devices: int = 1  # GPUs per trial, data parallel over the events of a batch (paper: 4)
    fixed_shapes: bool = False  # pad every batch to batch_size events and a few fixed N
    compile: bool = False  # torch.compile the model (for GPUs; minutes of warm-up)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig))
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(name: str, value, typ):
    """value -> typ, accepting what command lines and search spaces produce."""
    if typ is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, numbers.Real) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
    elif typ is int:
        v = value
        if isinstance(v, str):
            try:
                v = float(v.strip())
            except ValueError:
                v = None
        if isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) \
                and math.isfinite(v) and float(v) == int(v):
            return int(v)
    elif typ is float:
        try:
            if not isinstance(value, (bool, np.bool_)):
                return float(value)
        except (TypeError, ValueError):
            pass
    elif typ is str:
        return str(value)
    raise ValueError(f"{name}: cannot use {value!r} as {typ.__name__}")


def _check(cfg: TrainConfig) -> TrainConfig:
    def need(ok, msg):
        if not ok:
            raise ValueError(msg)

    need(cfg.activation in ACTIVATIONS,
         f"activation: {cfg.activation!r} is not one of {', '.join(ACTIVATIONS)}")
    need(cfg.lr_schedule in LR_SCHEDULES,
         f"lr_schedule: {cfg.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}")
    need(cfg.precision in PRECISIONS,
         f"precision: {cfg.precision!r} is not one of {', '.join(PRECISIONS)}")
    for k in ("width", "ffn_dist_hidden_dim", "distance_dim", "num_node_messages", "bin_size",
              "output_dim", "batch_size", "devices"):
        need(getattr(cfg, k) >= 1, f"{k} must be at least 1")
    for k in ("width", "ffn_dist_hidden_dim", "distance_dim", "output_dim", "bin_size"):
        need(getattr(cfg, k) <= MAX_WIDTH, f"{k} must be at most {MAX_WIDTH}")
    for k in ("num_node_messages", "ffn_dist_num_layers", "num_graph_layers_common",
              "num_graph_layers_energy"):
        need(getattr(cfg, k) <= MAX_DEPTH, f"{k} must be at most {MAX_DEPTH}")
    for k in ("ffn_dist_num_layers", "num_graph_layers_common", "num_graph_layers_energy"):
        need(getattr(cfg, k) >= 0, f"{k} must be at least 0")
    need(0 <= cfg.dropout < 1, "dropout must be in [0, 1)")
    need(0 <= cfg.clip_value_low <= 1, "clip_value_low must be in [0, 1]")
    need(cfg.lr > 0 and cfg.lr_decay_rate > 0, "lr and lr_decay_rate must be positive")
    need(math.isfinite(cfg.lr_decay_steps) and cfg.lr_decay_steps > 0,
         "lr_decay_steps must be positive")
    need(math.isfinite(cfg.step_scale) and cfg.step_scale > 0, "step_scale must be positive")
    for k in COMPONENTS:
        need(math.isfinite(getattr(cfg, f"{k}_coef")) and getattr(cfg, f"{k}_coef") >= 0,
             f"{k}_coef must be a non-negative number")
    for k in REG_TERMS:
        need(math.isfinite(getattr(cfg, f"{k}_delta")) and getattr(cfg, f"{k}_delta") > 0,
             f"{k}_delta must be positive")
    return cfg


def apply_overrides(cfg: TrainConfig, overrides: dict) -> TrainConfig:
    """A copy of ``cfg`` with ``overrides`` applied, values coerced to the field types
    ("1e-3" -> 1e-3, "true"/"1" -> True, 64.0 -> 64). Unknown keys raise ValueError."""
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    types = {k: {"int": int, "float": float, "bool": bool, "str": str}.get(t, t)
             for k, t in types.items()}
    changes = {}
    for key, value in overrides.items():
        if key not in types:
            raise ValueError(f"unknown key {key!r}; valid keys: {', '.join(types)}")
        changes[key] = _coerce(key, value, types[key])
    return _check(dataclasses.replace(cfg, **changes))


def config_for_scale(scale: str) -> TrainConfig:
    """The reference configuration resized for a scale preset (mlpf/scales.py)."""
    return apply_overrides(TrainConfig(), get_scale(scale).default)


def build_model(cfg: TrainConfig) -> MLPF:
    return MLPF(**{k: getattr(cfg, k) for k in MODEL_KEYS})


# ----------------------------------------------------------------------------- data
@dataclass
class Data:
    """Events of each split (mlpf.data.format.Event)."""

    train: list[Event]
    val: list[Event]
    test: list[Event] | None = field(default=None)


def _load_split(path, what: str, scale: str | None, max_events: int | None) -> list[Event]:
    hint = f"run `make data SCALE={scale or DEFAULT_SCALE}`" if not isinstance(path, list) \
        else "check the paths"
    paths = path if isinstance(path, list) else [path]
    for p in paths:
        if not Path(p).exists():
            raise FileNotFoundError(f"{p}: no {what} data here; {hint}")
    try:
        events = load_events(paths, max_events=max_events)
    except DataError as e:
        raise DataError(e.path, f"{e.problem}; {hint}") from None
    if not events:
        raise DataError(paths[0], f"no events; {hint}")
    return events


def load_data(scale: str | None = None, train=None, val=None, max_events: int | None = None,
              *, test=None, with_test: bool = False) -> Data:
    """Events of a scale (data/<scale>/{train,val}/) or of explicit files or folders.

    ``max_events`` caps each split; a scale's folders give at most the scale's number of
    events per split (a folder generated for a larger preset serves a smaller one). The test
    split is loaded only with ``with_test`` or an explicit ``test``. Missing data raises
    FileNotFoundError naming `make data SCALE=...`.
    """
    scale = scale or DEFAULT_SCALE
    get_scale(scale)  # unknown scale -> ValueError with the choices

    def split(explicit, name):
        if explicit is None:  # the scale's folder: at most the scale's events of that split
            cap = min(max_events or math.inf, get_scale(scale).splits[name])
            return _load_split(data_dir(scale, name), name, scale, int(cap))
        paths = [explicit] if isinstance(explicit, (str, os.PathLike)) else list(explicit)
        return _load_split(paths if len(paths) > 1 else paths[0], name, scale, max_events)

    tr, va = split(train, "train"), split(val, "val")
    te = split(test, "test") if (test is not None or with_test) else None
    return Data(tr, va, te)


FIXED_SIZE_STEPS = 4  # fixed_shapes: padded sizes per doubling (at most 19 % padding)


def padded_length(n: int, bin_size: int, fixed_shapes: bool = False) -> int:
    """Elements per event after padding: n rounded up to a multiple of bin_size, or with
    ``fixed_shapes`` to the next size of the ladder bin_size * ceil(2 ** (k / 4)), so that a
    whole training run sees a few shapes (what CUDA graphs and torch.compile need)."""
    n = max(n, 1)
    if not fixed_shapes:
        return -(-n // bin_size) * bin_size
    k = max(0, math.ceil(FIXED_SIZE_STEPS * math.log2(n / bin_size) - 1e-9))
    while (m := math.ceil(2 ** (k / FIXED_SIZE_STEPS))) * bin_size < n:
        k += 1
    return m * bin_size


def collate(events: Sequence[Event], bin_size: int, *, fixed_shapes: bool = False,
            batch_size: int | None = None):
    """Pad a batch to its largest event rounded up to a multiple of bin_size (see
    :func:`padded_length`); with ``batch_size``, append empty events up to that many.

    Returns X (B, N, 12), ygen (B, N, 7) float32 tensors and mask (B, N) bool.
    """
    B = max(len(events), batch_size or 0)
    N = padded_length(max((len(e) for e in events), default=0), bin_size, fixed_shapes)
    X = np.zeros((B, N, 12), np.float32)
    Y = np.zeros((B, N, 7), np.float32)
    M = np.zeros((B, N), bool)
    for i, e in enumerate(events):  # slice copies: faster than one fancy-index scatter
        X[i, :len(e)] = e.X
        Y[i, :len(e)] = e.ygen
        M[i, :len(e)] = True
    return torch.from_numpy(X), torch.from_numpy(Y), torch.from_numpy(M)


def _train_batches(n_events: int, sizes: np.ndarray, batch_size: int, rng) -> list[np.ndarray]:
    """Shuffled batches of similar-size events (less padding): shuffle, sort each chunk of
    32 batches by size, cut into batches, shuffle the batches."""
    order = rng.permutation(n_events)
    chunk = 32 * batch_size
    batches = []
    for s in range(0, n_events, chunk):
        part = order[s:s + chunk]
        part = part[np.argsort(sizes[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _eval_batches(events: Sequence[Event], batch_size: int) -> list[np.ndarray]:
    order = np.argsort([len(e) for e in events], kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


# ----------------------------------------------------------------------------- errors
class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; ``epoch`` is the (1-based) epoch it happened in."""

    def __init__(self, epoch: int, detail: str = ""):
        self.epoch = epoch
        super().__init__(f"training diverged in epoch {epoch}" + (f": {detail}" if detail else ""))


class DeviceOutOfMemory(RuntimeError):
    """The device ran out of memory in ``epoch`` (wraps torch.cuda.OutOfMemoryError)."""

    def __init__(self, epoch: int, detail: str = ""):
        self.epoch = epoch
        super().__init__(f"device out of memory in epoch {epoch}" + (f": {detail}" if detail
                                                                      else ""))


_OOM = tuple({getattr(torch.cuda, "OutOfMemoryError", MemoryError),
              getattr(torch, "OutOfMemoryError", MemoryError)})


# ----------------------------------------------------------------------------- training
def _lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    if cfg.lr_schedule == "exponential":
        return lambda step: cfg.lr_decay_rate ** (step / (cfg.lr_decay_steps * cfg.step_scale))
    if cfg.lr_schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return lambda step: 1.0


def loss_coefs(cfg: TrainConfig) -> dict:
    """{term: coefficient} of ``cfg``'s loss (mlpf/loss.py COMPONENTS)."""
    return {k: getattr(cfg, f"{k}_coef") for k in COMPONENTS}


def loss_deltas(cfg: TrainConfig) -> dict:
    """{momentum term: Huber delta} of ``cfg``'s loss."""
    return {k: getattr(cfg, f"{k}_delta") for k in REG_TERMS}


def loss_spec(cfg: TrainConfig) -> dict:
    """What a log records of the loss it used: its name (upstream's, or ``custom``), the
    coefficient and Huber delta per term, the focal gamma, the regression targets."""
    coefs, deltas = loss_coefs(cfg), loss_deltas(cfg)
    upstream = coefs == UPSTREAM_COEFS and deltas == UPSTREAM_DELTAS and cfg.focal_gamma == 0
    return {"name": UPSTREAM if upstream else "custom", "coefs": coefs, "huber_deltas": deltas,
            "focal_gamma": cfg.focal_gamma,
            "targets": "class, charge, log1p pt, eta, sin phi, cos phi, log1p E",
            "components": [f"val_loss_{k}" for k in COMPONENTS]}


def autocast(cfg: TrainConfig, device) -> torch.autocast:
    """The autocast context of ``cfg.precision`` on ``device`` (disabled for fp32)."""
    dtype = PRECISIONS[cfg.precision]
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.float32,
                          enabled=dtype is not None)


def check_precision(precision: str, device) -> None:
    """ValueError when ``device`` cannot run ``precision``."""
    device = torch.device(device)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bf16")
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"precision bf16: not supported here on {device.type}")


def _batch(events: Sequence[Event], idx, cfg: TrainConfig, device, fixed_batch: bool = False):
    X, Y, M = collate([events[i] for i in idx], cfg.bin_size, fixed_shapes=cfg.fixed_shapes,
                      batch_size=cfg.batch_size if fixed_batch and cfg.fixed_shapes else None)
    if device.type == "cuda":
        return tuple(t.pin_memory().to(device, non_blocking=True) for t in (X, Y, M))
    return X, Y, M


@torch.inference_mode()
def evaluate(model: MLPF, events: Sequence[Event], cfg: TrainConfig, device) -> dict:
    """Per-element mean losses over ``events``: total, reg and each of mlpf/loss.py's
    COMPONENTS, as floats."""
    device = torch.device(device)
    model.eval()
    acc: dict = {}
    for idx in _eval_batches(events, max(cfg.batch_size, EVAL_BATCH_EVENTS)):
        X, Y, M = _batch(events, idx, cfg, device)
        with autocast(cfg, device):
            out = model(X, M)
        out = {k: v.float() for k, v in out.items()}
        s = loss_sums(out, Y, M, focal_gamma=cfg.focal_gamma, deltas=loss_deltas(cfg))
        for k, v in s.items():
            acc[k] = acc.get(k, 0) + v.double()
    return {k: float(v) for k, v in combine(acc, coefs=loss_coefs(cfg)).items()}


@torch.inference_mode()
def predict(model: MLPF, events: Sequence[Event], batch_size: int = 8,
            device=None) -> list[np.ndarray]:
    """Reconstructed particles per event, each (n_elements, 7) in the ygen format."""
    device = device or next(model.parameters()).device
    model.eval()
    out: list[np.ndarray | None] = [None] * len(events)
    for idx in _eval_batches(events, batch_size):
        X, _, M = (t.to(device) for t in collate([events[i] for i in idx], model.bin_size))
        y = decode(model(X, M)).cpu().numpy()
        for j, i in enumerate(idx):
            out[i] = y[j, :len(events[i])]
    return out


def _rng_state() -> dict:
    """Every RNG state as tensors and plain numbers, so that a checkpoint loads with
    ``torch.load(weights_only=True)`` (no pickled objects)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    s = {"torch": torch.get_rng_state(),
         "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                   "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
         "python": {"version": int(version), "state": list(py_state), "gauss": py_gauss}}
    if torch.cuda.is_available():
        s["cuda"] = list(torch.cuda.get_rng_state_all())
    return s


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = s["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def load_checkpoint(path, map_location=None) -> dict:
    """A training checkpoint, loaded with ``weights_only=True``: tensors and plain
    containers only, never code. Anything else (a planted pickle, a checkpoint of an older
    version with pickled RNG objects) raises ValueError and runs nothing."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: refusing to load a checkpoint that holds more than tensors "
                         f"and plain data ({first}); delete it or use another checkpoint "
                         "folder") from None


def _data_parallel(model: MLPF, cfg: TrainConfig, device) -> nn.Module:
    """The module that runs a step: ``model`` itself, replicated over ``cfg.devices`` GPUs
    (data parallel: each GPU gets batch_size / devices events), and/or compiled."""
    step = model
    if cfg.devices > 1 and cfg.compile:
        raise ValueError("compile with devices > 1 is not supported: use one of the two")
    if cfg.devices > 1:
        if device.type != "cuda" or torch.cuda.device_count() < cfg.devices:
            have = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise ValueError(f"devices={cfg.devices} needs that many CUDA GPUs; {have} here")
        first = device.index or 0
        step = nn.DataParallel(model, device_ids=list(range(first, first + cfg.devices)))
    if cfg.compile:
        step = torch.compile(step, mode="reduce-overhead" if device.type == "cuda" else None,
                             dynamic=not cfg.fixed_shapes)
    return step


def fit(config: TrainConfig, data: Data, max_epochs: int,
        on_epoch: Callable[[dict], object] | None = None, *, device=None, seed: int = 0,
        checkpoint_dir=None, progress: bool = False,
        threads: int | None = None) -> tuple[MLPF, list[dict]]:
    """:func:`train`, returning the trained model as well: (model, history)."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    check_precision(config.precision, device)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    model = build_model(config).to(device)
    step_model = _data_parallel(model, config, device)
    # The fused AdamW kernel: one pass over all parameters instead of a loop over tensors.
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                            fused=device.type in ("cpu", "cuda") or None)
    steps_per_epoch = -(-len(data.train) // config.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_lambda(config, max(1, steps_per_epoch * max_epochs)))
    history: list[dict] = []
    ckpt = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir else None
    if ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt, map_location=device)
        if state["config"] != config.to_dict():
            raise ValueError(f"{ckpt} was written by a different configuration; "
                             "use another checkpoint folder")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history = state["history"]
        _set_rng_state(state["rng"])
    sizes = np.array([len(e) for e in data.train])
    for epoch in range(len(history) + 1, max_epochs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        # Subnormal floats (kernel entries and activations below 1e-38) take a slow path on
        # x86 CPUs; flushed to zero for the epoch's compute (torch.set_flush_denormal), they
        # change no loss digit we have seen and save up to 8 % of an epoch.
        flush = device.type == "cpu" and torch.set_flush_denormal(True)
        try:
            train_loss, t_train = _train_epoch(step_model, opt, sched, config, data.train,
                                               sizes, epoch, seed, device, progress)
            val = evaluate(model, data.val, config, device)
        except _OOM as e:
            raise DeviceOutOfMemory(epoch, str(e).splitlines()[0] if str(e) else "") from e
        finally:
            if flush:
                torch.set_flush_denormal(False)
        if not math.isfinite(val["total"]):
            raise TrainingDiverged(epoch, f"validation loss {val['total']}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        m = {"epoch": epoch, "train_loss": train_loss, "val_loss": val["total"],
             "val_loss_reg": val["reg"], **{f"val_loss_{k}": val[k] for k in COMPONENTS},
             "epoch_seconds": time.perf_counter() - t0,
             "epoch_cpu_seconds": time.process_time() - c0,
             "events_per_second": len(data.train) / t_train, "devices": config.devices}
        history.append(m)
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_name(f".{CHECKPOINT}.tmp{os.getpid()}")
            torch.save({"config": config.to_dict(), "model": model.state_dict(),
                        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "history": history, "epoch": epoch, "rng": _rng_state()}, tmp)
            os.replace(tmp, ckpt)  # atomic: a crash leaves the previous epoch's checkpoint
        if on_epoch is not None and on_epoch(dict(m)):
            break
    return model, history


def _train_epoch(model, opt, sched, cfg, events, sizes, epoch, seed, device, progress):
    """One pass over the training events; returns (mean batch loss, seconds)."""
    model.train()
    # The batch order depends only on (seed, epoch): a resumed run sees the same batches.
    batches = _train_batches(len(events), sizes, cfg.batch_size,
                             np.random.default_rng([seed, epoch]))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(batches), desc=f"epoch {epoch}", leave=False, file=sys.stderr)
    t0 = time.perf_counter()
    total = 0.0
    for idx in batches:
        X, Y, M = _batch(events, idx, cfg, device, fixed_batch=True)
        with autocast(cfg, device):
            out = model(X, M)
        out = {k: v.float() for k, v in out.items()}  # the loss in fp32
        s = loss_sums(out, Y, M, focal_gamma=cfg.focal_gamma, deltas=loss_deltas(cfg))
        loss = combine(s, coefs=loss_coefs(cfg))["total"]
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(epoch, f"training loss {value}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        total += value
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{value:.4f}")
    if bar is not None:
        bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return total / max(1, len(batches)), time.perf_counter() - t0


def train(config: TrainConfig, data: Data, max_epochs: int,
          on_epoch: Callable[[dict], object] | None = None, *, device=None, seed: int = 0,
          checkpoint_dir=None, progress: bool = False, threads: int | None = None) -> list[dict]:
    """Train MLPF for up to ``max_epochs`` epochs; returns the per-epoch metrics.

    Args:
        config: the hyperparameters (:class:`TrainConfig`).
        data: train and validation events.
        on_epoch: called with each epoch's metrics (keys METRIC_KEYS); truthy return stops.
        device: torch device; None = "cuda" when available, else "cpu".
        seed: seeds torch, numpy and random; the batch order follows (seed, epoch).
        checkpoint_dir: save model, optimiser, epoch and RNG state there after every epoch,
            and resume from it when present (the history includes the earlier epochs).
        progress: tqdm bar per epoch on stderr.
        threads: torch.set_num_threads(threads) if given; left alone otherwise.
    Raises:
        TrainingDiverged: a loss became NaN or infinite (``.epoch``).
        DeviceOutOfMemory: the device ran out of memory (``.epoch``).
    """
    return fit(config, data, max_epochs, on_epoch, device=device, seed=seed,
               checkpoint_dir=checkpoint_dir, progress=progress, threads=threads)[1]


# ----------------------------------------------------------------------------- CLI
def _parse_sets(items: Sequence[str]) -> dict:
    out = {}
    for it in items:
        key, sep, value = it.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {it!r}")
        out[key.strip()] = value.strip()
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        self.exit(2, error_line(message) + "\n")


def _check_device(name: str | None) -> None:
    """A device this machine has: ValueError otherwise (one line for the user)."""
    if name is None:
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {name!r}; use cpu or cuda[:N]") from None
    if dev.type == "cuda" and (not torch.cuda.is_available()
                               or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device {name!r} is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use cpu or cuda[:N]")


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m mlpf.train",
                 description="Train MLPF and write learning_curve.csv, config.json and "
                 "metrics.json into --out.")
    ap.add_argument("--scale", default=DEFAULT_SCALE, choices=tuple(SCALES),
                    help=f"preset: {' | '.join(SCALES)} (default %(default)s)")
    ap.add_argument("--data", help="folder with train/ and val/ (default data/<scale>)")
    ap.add_argument("--epochs", type=positive_int, help="default: the scale's max_epochs")
    ap.add_argument("--out", help="run folder (default runs/train-<scale>)")
    ap.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                    help="TrainConfig overrides, e.g. lr=1e-3 bin_size=32 (repeatable)")
    ap.add_argument("--seed", type=seed_value, default=0, help="0 to 2**32 - 1 (default 0)")
    ap.add_argument("--device", help="cpu, cuda, ... (default cuda if available)")
    ap.add_argument("--threads", type=positive_int, help="torch threads (default: torch's choice)")
    ap.add_argument("--max-events", type=positive_int, help="cap events per split (quick tries)")
    ap.add_argument("--eval", choices=("val", "test"), default="val",
                    help="split for the physics metrics (default val)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    out = Path(args.out or ROOT / "runs" / f"train-{args.scale}")
    try:
        scale = get_scale(args.scale)
        cfg = apply_overrides(config_for_scale(args.scale), _parse_sets(args.set))
        _check_device(args.device)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
    except ValueError as e:
        print(error_line(e), file=sys.stderr)
        return 2
    except OSError as e:
        print(error_line(f"cannot create {out}: {e.strerror}"), file=sys.stderr)
        return 2
    epochs = args.epochs or scale.max_epochs
    try:
        if args.data:
            d = Path(args.data)
            data = load_data(args.scale, train=d / "train", val=d / "val",
                             test=(d / "test") if args.eval == "test" else None,
                             max_events=args.max_events)
        else:
            data = load_data(args.scale, max_events=args.max_events,
                             with_test=args.eval == "test")
    except (FileNotFoundError, DataError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    (out / "config.json").write_text(json.dumps(
        {"config": cfg.to_dict(), "scale": args.scale, "epochs": epochs, "seed": args.seed,
         "data": shown(args.data or data_dir(args.scale, "")),
         "n_train": len(data.train), "n_val": len(data.val)}, indent=2) + "\n")

    def write_curve(m):
        hist.append(m)
        with open(out / "learning_curve.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=METRIC_KEYS)
            w.writeheader()
            w.writerows(hist)
        if args.no_progress:
            print(f"epoch {m['epoch']}: train {m['train_loss']:.4f} val {m['val_loss']:.4f} "
                  f"({m['epoch_seconds']:.1f} s)", file=sys.stderr)

    hist: list[dict] = []
    try:
        model, history = fit(cfg, data, epochs, write_curve, device=args.device,
                             seed=args.seed, checkpoint_dir=out / "checkpoint",
                             progress=not args.no_progress, threads=args.threads)
    except (TrainingDiverged, DeviceOutOfMemory, ValueError) as e:
        print(error_line(e), file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as e:  # e.g. a model too large to allocate
        print(error_line(f"training failed: {(str(e).splitlines() or [''])[0][:200]}"),
              file=sys.stderr)
        return 1
    if len(hist) < len(history):  # resumed: rewrite the curve with the earlier epochs too
        hist.clear()
        for m in history[:-1]:
            hist.append(m)
        write_curve(history[-1])
    torch.save(model.state_dict(), out / "model.pt")

    from mlpf.metrics import physics_metrics, summary_line
    events = data.test if args.eval == "test" else data.val
    true = np.concatenate([e.ygen for e in events])
    reco = np.concatenate(predict(model, events, cfg.batch_size))
    metrics = {"split": args.eval, "n_events": len(events),
               "final": history[-1] if history else None,
               "loss": evaluate(model, events, cfg, next(model.parameters()).device),
               "mlpf": physics_metrics(true, reco),
               "reference_pf": physics_metrics(true, np.concatenate([e.ycand for e in events]))}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"MLPF        {summary_line(metrics['mlpf'])}")
    print(f"rule-based  {summary_line(metrics['reference_pf'])}")
    print(f"wrote {shown(out)}/learning_curve.csv, config.json, metrics.json, model.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
