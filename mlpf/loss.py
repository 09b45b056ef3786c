"""The MLPF training loss, as upstream MLPF weighted it for Delphes (Pata et al.,
arXiv:2101.08578; the public MLPF repository's ``parameters/delphes.yaml`` of February 2022,
the configuration that the study arXiv:2203.01112 tuned):

    total = c_cls * CE(class) + c_charge * CE(charge)
            + sum over k in (pt, eta, sin phi, cos phi, E) of c_k * Huber_{delta_k}(k)

with upstream's weights c_cls = c_charge = 1, c_k = 100 for each momentum term, and Huber
deltas 1 for pt and E, 0.1 for eta and the two phi components (:data:`UPSTREAM`).

Per-element means, as upstream's per-output Keras losses: the class term over real
(non-padded) elements, the charge and momentum terms over elements that have a target
particle (ygen class != 0). Regression targets are :func:`regression_targets` (log1p of pt and
E, so one Huber scale fits soft and hard particles; eta and phi as they are). Shapes: model
outputs as in mlpf/model.py, ygen (B, N, 7), mask (B, N).

For validation, :func:`loss_sums` gives sums and counts that add up over batches exactly,
and :func:`combine` turns them into per-element means: every component unweighted
(:data:`COMPONENTS`), ``reg`` the weighted sum of the momentum terms and ``total``. Logs keep the
unweighted components, so any other weighting can be recomputed without training again
(:func:`weighted_total`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REG_TERMS = ("pt", "eta", "sin_phi", "cos_phi", "energy")  # the columns of reg, in order
COMPONENTS = ("cls", "charge", *REG_TERMS)  # every unweighted per-element mean term

# Upstream's Delphes loss (Feb 2022): coefficient and Huber delta per term.
UPSTREAM_COEFS = {"cls": 1.0, "charge": 1.0, "pt": 100.0, "eta": 100.0, "sin_phi": 100.0,
                  "cos_phi": 100.0, "energy": 100.0}
UPSTREAM_DELTAS = {"pt": 1.0, "eta": 0.1, "sin_phi": 0.1, "cos_phi": 0.1, "energy": 1.0}
UPSTREAM = "mlpf-delphes-2022"  # the name logs record for this weighting


def regression_targets(ygen: torch.Tensor) -> torch.Tensor:
    """ygen (B, N, 7) -> (B, N, 5): [log1p pt, eta, sin phi, cos phi, log1p E]."""
    return torch.stack([torch.log1p(ygen[..., 2].clamp(min=0)), ygen[..., 3], ygen[..., 4],
                        ygen[..., 5], torch.log1p(ygen[..., 6].clamp(min=0))], dim=-1)


def huber(pred: torch.Tensor, target: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Elementwise Huber loss with a delta per last-axis column (delta broadcast to pred):
    0.5 d^2 where |d| <= delta, else delta (|d| - delta / 2) (as torch's and Keras')."""
    d = (pred - target).abs()
    return torch.where(d <= delta, 0.5 * d * d, delta * (d - 0.5 * delta))


def focal_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                        gamma: float = 0.0) -> torch.Tensor:
    """Per-element cross entropy, (..., C), (...) -> (...); focal (Lin et al. 2017) if
    gamma > 0."""
    if gamma <= 0:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                               reduction="none").reshape(target.shape)
    logp = (F.log_softmax(logits, dim=-1)
            * F.one_hot(target, logits.shape[-1]).to(logits.dtype)).sum(-1)
    return -((1 - logp.exp()) ** gamma) * logp


def loss_sums(out: dict, ygen: torch.Tensor, mask: torch.Tensor, *, focal_gamma: float = 0.0,
              deltas: dict | None = None) -> dict:
    """Summed loss terms and their element counts (add them over batches, then combine).

    Returns cls (sum over real elements), charge and one sum per :data:`REG_TERMS` (over
    target elements; Huber with ``deltas[term]``, default :data:`UPSTREAM_DELTAS`), n_real,
    n_target. Terms are computed on the whole (B, N) grid and selected with ``where`` (not
    boolean indexing): the cost stays linear in N, and padded rows cannot leak NaN.
    """
    deltas = {**UPSTREAM_DELTAS, **(deltas or {})}
    cls_true = ygen[..., 0].long()
    has_target = mask & (cls_true != 0)
    zero = out["cls"].new_zeros(())
    cls = torch.where(mask, focal_cross_entropy(out["cls"], cls_true, focal_gamma), zero).sum()
    delta = out["reg"].new_tensor([deltas[k] for k in REG_TERMS])  # (5,)
    reg = huber(out["reg"], regression_targets(ygen), delta)  # (B, N, 5)
    reg = torch.where(has_target[..., None], reg, zero).sum(dim=(0, 1))  # (5,)
    charge_true = (ygen[..., 1].round().long() + 1).clamp(0, 2)
    charge = torch.where(has_target, focal_cross_entropy(out["charge"], charge_true), zero).sum()
    return {"cls": cls, "charge": charge, **{k: reg[i] for i, k in enumerate(REG_TERMS)},
            "n_real": mask.sum(), "n_target": has_target.sum()}


def combine(sums: dict, *, coefs: dict | None = None) -> dict:
    """Sums and counts -> per-element mean terms (unweighted, :data:`COMPONENTS`), ``reg``
    (the weighted momentum terms) and the weighted ``total`` (scalar tensors). ``coefs``
    override :data:`UPSTREAM_COEFS` by term name."""
    c = {**UPSTREAM_COEFS, **(coefs or {})}
    n_real = torch.as_tensor(sums["n_real"]).clamp(min=1)
    n_target = torch.as_tensor(sums["n_target"]).clamp(min=1)
    out = {"cls": sums["cls"] / n_real, "charge": sums["charge"] / n_target}
    out.update({k: sums[k] / n_target for k in REG_TERMS})
    out["reg"] = sum(c[k] * out[k] for k in REG_TERMS)
    out["total"] = c["cls"] * out["cls"] + c["charge"] * out["charge"] + out["reg"]
    return out


def weighted_total(components: dict, coefs: dict | None = None) -> float:
    """The total loss of logged unweighted ``components`` ({term: value}) under ``coefs``
    (default upstream's): recomputes a logged loss under any other weighting."""
    c = {**UPSTREAM_COEFS, **(coefs or {})}
    return float(sum(c[k] * float(components[k]) for k in COMPONENTS))


def mlpf_loss(out: dict, ygen: torch.Tensor, mask: torch.Tensor, *, coefs: dict | None = None,
              deltas: dict | None = None, focal_gamma: float = 0.0) -> dict:
    """Total loss of one batch and each component (see :func:`combine`)."""
    sums = loss_sums(out, ygen, mask, focal_gamma=focal_gamma, deltas=deltas)
    return combine(sums, coefs=coefs)
