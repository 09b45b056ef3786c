"""The MLPF training loss (Pata et al., arXiv:2101.08578; as tuned in arXiv:2203.01112).

    total = cls_coef * CE(class) + reg_coef * Huber(pt, eta, sin phi, cos phi, E)
            + charge_coef * CE(charge)

The class term averages over real (non-padded) elements; the regression and charge terms
over elements that have a target particle (ygen class != 0). Regression targets are
normalised by :func:`regression_targets` (log1p of pt and E) so one Huber scale fits soft
and hard particles. Shapes: model outputs as in mlpf/model.py, ygen (B, N, 7), mask (B, N).

For validation, :func:`loss_sums` gives sums and counts that add up over batches exactly,
and :func:`combine` turns them into the per-element means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def regression_targets(ygen: torch.Tensor) -> torch.Tensor:
    """ygen (B, N, 7) -> (B, N, 5): [log1p pt, eta, sin phi, cos phi, log1p E]."""
    return torch.stack([torch.log1p(ygen[..., 2].clamp(min=0)), ygen[..., 3], ygen[..., 4],
                        ygen[..., 5], torch.log1p(ygen[..., 6].clamp(min=0))], dim=-1)


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
              huber_delta: float = 1.0) -> dict:
    """Summed loss terms and their element counts (add them over batches, then combine).

    Returns cls (sum over real elements), reg (sum over target elements of the Huber loss
    summed over the 5 regression components), charge (sum over target elements), n_real,
    n_target. Terms are computed on the whole (B, N) grid and selected with ``where`` (not
    boolean indexing): the cost stays linear in N, and padded rows cannot leak NaN.
    """
    cls_true = ygen[..., 0].long()
    has_target = mask & (cls_true != 0)
    zero = out["cls"].new_zeros(())
    cls = torch.where(mask, focal_cross_entropy(out["cls"], cls_true, focal_gamma), zero).sum()
    reg = F.huber_loss(out["reg"], regression_targets(ygen), reduction="none",
                       delta=huber_delta).sum(-1)  # (B, N)
    reg = torch.where(has_target, reg, zero).sum()
    charge_true = (ygen[..., 1].round().long() + 1).clamp(0, 2)
    charge = torch.where(has_target, focal_cross_entropy(out["charge"], charge_true), zero).sum()
    return {"cls": cls, "reg": reg, "charge": charge,
            "n_real": mask.sum(), "n_target": has_target.sum()}


def combine(sums: dict, *, cls_coef: float = 1.0, reg_coef: float = 1.0,
            charge_coef: float = 1.0) -> dict:
    """Sums and counts -> per-element mean terms and the weighted total (scalar tensors)."""
    n_real = torch.as_tensor(sums["n_real"]).clamp(min=1)
    n_target = torch.as_tensor(sums["n_target"]).clamp(min=1)
    cls = sums["cls"] / n_real
    reg = sums["reg"] / n_target
    charge = sums["charge"] / n_target
    total = cls_coef * cls + reg_coef * reg + charge_coef * charge
    return {"total": total, "cls": cls, "reg": reg, "charge": charge}


def mlpf_loss(out: dict, ygen: torch.Tensor, mask: torch.Tensor, *, cls_coef: float = 1.0,
              reg_coef: float = 1.0, charge_coef: float = 1.0, focal_gamma: float = 0.0,
              huber_delta: float = 1.0) -> dict:
    """Total loss of one batch and each component: {total, cls, reg, charge}."""
    sums = loss_sums(out, ygen, mask, focal_gamma=focal_gamma, huber_delta=huber_delta)
    return combine(sums, cls_coef=cls_coef, reg_coef=reg_coef, charge_coef=charge_coef)
