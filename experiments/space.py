"""The search space of the original study (arXiv 2203.01112), mapped to each scale.

Keys are :class:`mlpf.train.TrainConfig` field names, so a sampled configuration is the override
dict of ``apply_overrides(config_for_scale(scale), hp)``. The dimensions and ranges are the
paper's (its Ray Tune space for the Delphes model): learning rate and its exponential decay,
batch size, layer norm, the FFN that maps nodes to the LSH coordinates
(``ffn_dist_hidden_dim``, ``ffn_dist_num_layers``), ``distance_dim``, message passing, graph
layers, dropout, LSH bin size, kernel clipping and width, degree normalisation and the graph
layer width (``output_dim``). No dimension the paper lacks (the activation, for one, is fixed).

One mapping per scale, the same that maps the untuned default (:mod:`mlpf.scales`):

- widths (``ffn_dist_hidden_dim``, ``distance_dim``, ``output_dim``) are the paper's times the
  scale's width factor (1 at paper, 1/8 at small, 1/16 at smoke), so their ratios stay;
- ``bin_size`` keeps the paper's bins per event: the paper pads events to 6,400 elements and
  searches bins of 64 to 320 elements (100 to 20 bins per event, its default 640: 10 bins),
  so a scale whose events hold ``N`` elements searches ``N / 100`` to ``N / 20``;
- ``batch_size`` is events per optimiser step: the paper's 4 to 32 per GPU on the 4 GPUs of a
  trial (16 to 128 events), the same at every scale;
- ``lr_decay_steps`` is the paper's 10 to 2,000 steps at every scale, in the paper's steps:
  the scale's ``step_scale`` (:func:`mlpf.scales.schedule_factor`: its optimiser steps per run
  over the paper's, 1/1,000 at small) maps it in training, so a sampled schedule decays over a
  run at the scale as much as over the paper's.

    >>> from experiments.space import problem_for
    >>> problem_for("small").hyperparameter_names[:3]
    ['batch_size', 'bin_size', 'clip_value_low']
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deephyper.hpo import HpProblem

from experiments import logs
from mlpf.scales import get_scale

PAPER_EVENT_ELEMENTS = 6400  # the paper's events, padded
PAPER_BINS = (64, 128, 192, 256, 320)  # elements per bin searched at 6,400 elements
PAPER_DECAY_STEPS = range(10, 2001, 10)  # lr_decay_steps searched, in the paper's steps
PAPER_WIDTHS = {"ffn_dist_hidden_dim": range(64, 257, 64), "distance_dim": range(64, 513, 64),
                "output_dim": range(64, 513, 64)}
GPUS_PER_TRIAL = 4  # the paper's trials: one node, 4 GPUs, data parallel


def _scaled_grid(values, factor: float) -> list[int]:
    """``values`` times ``factor``, rounded, at least 1, duplicates removed, in order."""
    out: list[int] = []
    for v in values:
        w = max(1, round(v * factor))
        if w not in out:
            out.append(w)
    return out


def bin_sizes(scale: str) -> list[int]:
    """The paper's bin sizes at the scale's event size (same bins per event)."""
    sc = get_scale(scale)
    return _scaled_grid(PAPER_BINS, sc.event_elements / PAPER_EVENT_ELEMENTS)


def problem_for(scale: str) -> HpProblem:
    """DeepHyper problem of scale ``scale`` (``smoke``, ``small`` or ``paper``).

    Numbers on a grid are ordinal (a model can interpolate between them), flags are
    categorical, rates and coefficients are continuous.
    """
    sc = get_scale(scale)  # ValueError for an unknown scale
    f = sc.width_factor
    p = HpProblem()
    p.add_hyperparameter((1e-4, 3e-2, "log-uniform"), "lr")
    p.add_hyperparameter([b * GPUS_PER_TRIAL for b in range(4, 33, 4)], "batch_size")
    p.add_hyperparameter(list(PAPER_DECAY_STEPS), "lr_decay_steps")  # x step_scale in training
    p.add_hyperparameter((0.9, 1.0), "lr_decay_rate")
    p.add_hyperparameter([False, True], "layernorm")
    p.add_hyperparameter(_scaled_grid(PAPER_WIDTHS["ffn_dist_hidden_dim"], f),
                         "ffn_dist_hidden_dim")
    p.add_hyperparameter([1, 2, 3], "ffn_dist_num_layers")
    p.add_hyperparameter(_scaled_grid(PAPER_WIDTHS["distance_dim"], f), "distance_dim")
    p.add_hyperparameter([1, 2, 3], "num_node_messages")
    p.add_hyperparameter([2, 3, 4], "num_graph_layers_common")
    p.add_hyperparameter([2, 3, 4], "num_graph_layers_energy")
    p.add_hyperparameter((0.0, 0.5), "dropout")
    p.add_hyperparameter(bin_sizes(scale), "bin_size")
    p.add_hyperparameter((0.0, 0.2), "clip_value_low")
    p.add_hyperparameter((0.01, 0.2), "dist_mult")
    p.add_hyperparameter([False, True], "normalize_degrees")
    p.add_hyperparameter(_scaled_grid(PAPER_WIDTHS["output_dim"], f), "output_dim")
    return p


def from_unit(problem: HpProblem, u) -> dict:
    """A configuration from a point ``u`` of the unit cube, one coordinate per hyperparameter
    in the problem's order: log scale for log-uniform ranges, linear for other ranges, equal
    shares of [0, 1) for the values of a grid or a categorical."""
    out = {}
    for x, hp in zip(u, problem.space.values()):
        x = min(max(float(x), 0.0), 1.0)
        if hasattr(hp, "sequence") or hasattr(hp, "choices"):
            values = list(getattr(hp, "sequence", None) or hp.choices)
            v = values[min(int(x * len(values)), len(values) - 1)]
        elif getattr(hp, "log", False):
            lo, hi = math.log(hp.lower), math.log(hp.upper)
            v = math.exp(lo + x * (hi - lo))
        else:
            v = hp.lower + x * (hp.upper - hp.lower)
            if isinstance(hp.lower, int) and isinstance(hp.upper, int):
                v = round(v)
        out[hp.name] = logs.native(v)
    return out


def sobol_configs(scale: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` configurations of the scale's space from a scrambled Sobol sequence (seeded):
    a low-discrepancy design that covers the space more evenly than independent draws; the
    first ``n`` of a larger draw with the same seed are the same. Powers of 2 keep the
    sequence's balance."""
    from scipy.stats import qmc

    problem = problem_for(scale)
    names = problem.hyperparameter_names
    if n <= 0:
        return []
    m = max(0, math.ceil(math.log2(n)))
    points = qmc.Sobol(len(names), scramble=True, seed=seed).random_base2(m)[:n]
    return [from_unit(problem, u) for u in points]


# ---------------------------------------------------------------------------- for other tools
FLOAT, INT, INT_GRID, GRID, CHOICE = "float", "int", "int_grid", "grid", "choice"


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter of a problem as other libraries' search spaces need it.

    kind: ``float`` (``lower``, ``upper``, ``log``), ``int`` (a range, same fields),
    ``int_grid`` (integers ``lower, lower + step, ..., upper``; also a single integer),
    ``grid`` (other ordered numbers: ``values``), ``choice`` (flags, names, a constant:
    ``values``, unordered)."""

    name: str
    kind: str
    lower: float | int | None = None
    upper: float | int | None = None
    log: bool = False
    step: int = 1
    values: tuple = ()


def dimensions(problem: HpProblem) -> list[Dimension]:
    """The problem's hyperparameters, in its order, as :class:`Dimension` (the one place
    that classifies them for the Optuna, Syne Tune and Ray Tune peers)."""
    from ConfigSpace import (
        CategoricalHyperparameter,
        Constant,
        OrdinalHyperparameter,
        UniformFloatHyperparameter,
        UniformIntegerHyperparameter,
    )

    out = []
    for hp in problem.space.values():
        if isinstance(hp, UniformFloatHyperparameter):
            out.append(Dimension(hp.name, FLOAT, float(hp.lower), float(hp.upper), bool(hp.log)))
        elif isinstance(hp, UniformIntegerHyperparameter):
            out.append(Dimension(hp.name, INT, int(hp.lower), int(hp.upper), bool(hp.log)))
        elif isinstance(hp, OrdinalHyperparameter):
            seq = tuple(logs.native(v) for v in hp.sequence)
            ints = all(isinstance(v, int) and not isinstance(v, bool) for v in seq)
            numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in seq)
            steps = {b - a for a, b in zip(seq, seq[1:])} if numbers else set()
            if ints and len(steps) <= 1 and all(st > 0 for st in steps):
                out.append(Dimension(hp.name, INT_GRID, seq[0], seq[-1],
                                     step=next(iter(steps), 1), values=seq))
            else:
                out.append(Dimension(hp.name, GRID if numbers else CHOICE, values=seq))
        elif isinstance(hp, CategoricalHyperparameter):
            out.append(Dimension(hp.name, CHOICE,
                                 values=tuple(logs.native(v) for v in hp.choices)))
        elif isinstance(hp, Constant):
            out.append(Dimension(hp.name, CHOICE, values=(logs.native(hp.value),)))
        else:
            raise TypeError(f"{hp.name}: no description for {type(hp).__name__}")
    return out


def logged_value(dim: Dimension, value):
    """A hyperparameter value read back from a log (results.csv: pandas may hand an int column
    as floats, a damaged column as text) as the space holds it; ValueError when it is not a
    value of ``dim`` (outside its range, not on its grid, of another type)."""
    value = logs.native(value)
    if dim.kind in (FLOAT, INT):
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a number") from None
        if not (math.isfinite(v) and dim.lower <= v <= dim.upper):
            raise ValueError(f"{value!r} is outside [{dim.lower}, {dim.upper}]")
        if dim.kind == INT:
            if v != round(v):
                raise ValueError(f"{value!r} is not an integer")
            return int(round(v))
        return v
    for v in dim.values:  # a grid or a choice: one of its values, of the same kind
        if isinstance(v, bool) or isinstance(v, str):
            if str(v) == str(value):
                return v
        elif not isinstance(value, bool):
            try:
                if float(value) == v:
                    return v
            except (TypeError, ValueError):
                continue
    raise ValueError(f"{value!r} is not one of {list(dim.values)}")
