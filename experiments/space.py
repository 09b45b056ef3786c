"""The search space of the original study (arXiv 2203.01112, Table 1), adapted per scale.

Keys are :class:`mlpf.train.TrainConfig` field names, so a sampled configuration is the override
dict of ``apply_overrides(config_for_scale(scale), hp)``. The paper's "FFN hidden dim" and "FFN
layers" are the FFN that maps nodes to the LSH coordinates (``ffn_dist_hidden_dim``,
``ffn_dist_num_layers``). Ranges follow the paper; the widths (``ffn_dist_hidden_dim``,
``distance_dim``, ``output_dim``, ``bin_size``) shrink at ``smoke`` and ``small`` to half to
twice the scale's reference model, so that a trial fits a laptop CPU.

    >>> from experiments.space import problem_for
    >>> problem_for("smoke").hyperparameter_names[:3]
    ['activation', 'batch_size', 'bin_size']
"""

from __future__ import annotations

from deephyper.hpo import HpProblem


def _steps(lo: int, hi: int, step: int) -> list[int]:
    return list(range(lo, hi + 1, step))


# Width-like dimensions per scale (ffn_width is ffn_dist_hidden_dim)
_WIDTHS = {
    # Around the scale's reference model (mlpf.scales: smoke width 16, distance 8, bin 16;
    # small width 32, distance 16, bin 32): from half to twice its size.
    "smoke": dict(ffn_width=_steps(8, 32, 8), distance_dim=_steps(4, 16, 4),
                  output_dim=_steps(8, 32, 8), bin_size=[8, 16, 32],
                  batch_size=_steps(4, 16, 4)),
    "small": dict(ffn_width=_steps(16, 64, 16), distance_dim=_steps(8, 32, 8),
                  output_dim=_steps(16, 64, 16), bin_size=[16, 32, 64],
                  batch_size=_steps(4, 32, 4)),
    # The paper's ranges (Table 1 of arXiv 2203.01112).
    "paper": dict(ffn_width=_steps(64, 256, 64), distance_dim=_steps(64, 512, 64),
                  output_dim=_steps(64, 512, 64), bin_size=_steps(64, 320, 64),
                  batch_size=_steps(4, 32, 4)),
}


def problem_for(scale: str) -> HpProblem:
    """DeepHyper problem of scale ``scale`` (``smoke``, ``small`` or ``paper``).

    Numbers on a grid are ordinal (a model can interpolate between them), flags and the
    activation are categorical, rates and coefficients are continuous.
    """
    if scale not in _WIDTHS:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(_WIDTHS)}")
    w = _WIDTHS[scale]
    p = HpProblem()
    p.add_hyperparameter((1e-4, 3e-2, "log-uniform"), "lr")
    p.add_hyperparameter(w["batch_size"], "batch_size")
    p.add_hyperparameter([False, True], "layernorm")
    p.add_hyperparameter(w["ffn_width"], "ffn_dist_hidden_dim")
    p.add_hyperparameter([1, 2, 3], "ffn_dist_num_layers")
    p.add_hyperparameter(w["distance_dim"], "distance_dim")
    p.add_hyperparameter([1, 2, 3], "num_node_messages")
    p.add_hyperparameter([2, 3, 4], "num_graph_layers_common")
    p.add_hyperparameter([2, 3, 4], "num_graph_layers_energy")
    p.add_hyperparameter((0.0, 0.5), "dropout")
    p.add_hyperparameter(w["bin_size"], "bin_size")
    p.add_hyperparameter((0.0, 0.2), "clip_value_low")
    p.add_hyperparameter((0.01, 0.2), "dist_mult")
    p.add_hyperparameter([False, True], "normalize_degrees")
    p.add_hyperparameter(w["output_dim"], "output_dim")
    p.add_hyperparameter(["elu", "relu", "gelu"], "activation")
    return p
