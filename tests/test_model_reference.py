"""mlpf/model.py against a straightforward implementation of the same equations.

The model builds the kernel with one GEMM, folds the degree normalisation and the padding
mask into the adjacency once per layer, mixes the gate with lerp, evaluates the heads as one
block-diagonal matmul and sorts (hash, tie) as one packed integer key. The reference below
does each step as written in the docstrings (two stable sorts, argmax over [xR, -xR],
exp(-m * max(d2, 0)), per-step normalisation). In float64 both must agree to rounding.
"""

import pytest
import torch
import torch.nn.functional as F

from mlpf.model import HASH_DIRECTIONS, MLPF, encode_inputs, lsh_permutation
from tests.test_model import TINY, batch, synthetic_events


def reference_lsh(x, mask, bin_size, codebook, tie_vector):
    B, N, _ = x.shape
    half = ((mask.sum(1) + bin_size - 1) // bin_size) // 2
    H = N // bin_size // 2
    assert H <= HASH_DIRECTIONS  # the one-level regime
    if H > 0:
        proj = x @ codebook[:, :H]
        valid = torch.arange(H)[None, None, :] < half[:, None, None]
        cmul = torch.cat([proj, -proj], -1).masked_fill(~torch.cat([valid, valid], -1), -1e30)
        hashes = cmul.argmax(-1)
        hashes = torch.where(half[:, None] > 0, hashes, torch.zeros_like(hashes))
    else:
        hashes = torch.zeros(B, N, dtype=torch.long)
    hashes = torch.where(mask, hashes, torch.full_like(hashes, 2 * H + 1))
    order = torch.sort(x @ tie_vector, dim=1, stable=True).indices
    by_hash = torch.sort(torch.gather(hashes, 1, order), dim=1, stable=True).indices
    return torch.gather(order, 1, by_hash)


def reference_layer(layer, x, mask):
    B, N, _ = x.shape
    bs = layer.bin_size
    x = layer.norm(x)
    x_dist = layer.ffn_dist(x)
    perm = reference_lsh(x_dist.detach(), mask, bs, layer.codebook, layer.tie_vector)

    def to_bins(t):
        return torch.stack([t[b, perm[b]] for b in range(B)]).reshape(B, N // bs, bs, -1)

    xb, db, mb = to_bins(x), to_bins(x_dist), to_bins(mask[..., None].to(x.dtype))
    d2 = ((db[..., :, None, :] - db[..., None, :, :]) ** 2).sum(-1).clamp(min=0)
    adj = torch.exp(-layer.dist_mult * d2).clamp(layer.clip_value_low, 1.0)
    adj = adj * mb * mb.transpose(-1, -2)
    for msg in layer.messages:
        out_dim = msg.bias.shape[0] // 2
        W = msg.weight.weight
        theta, w_own, w_gate = W[:out_dim], W[out_dim:2 * out_dim], W[2 * out_dim:]
        b_own, b_gate = msg.bias[:out_dim], msg.bias[out_dim:]
        m = xb @ theta.T
        if msg.normalize_degrees:
            deg = adj.sum(-1, keepdim=True)
            norm = torch.where(deg > 0, deg.clamp(min=1e-6) ** -0.5, torch.zeros_like(deg))
            hom = norm * (adj @ (norm * m))
        else:
            hom = adj @ m
        g = torch.sigmoid(xb @ w_gate.T + b_gate)
        xb = msg.act(g * hom + (1 - g) * (xb @ w_own.T + b_own)) * mb
    out = torch.zeros(B, N, xb.shape[-1], dtype=x.dtype)
    for b in range(B):
        out[b, perm[b]] = xb[b].reshape(N, -1)
    return out


def reference_model(model, X, mask):
    mf = mask[..., None].to(X.dtype)
    enc = model.encoder(encode_inputs(X)) * mf
    x, common = enc, []
    for layer in model.common:
        x = reference_layer(layer, x, mask)
        common.append(x)
    dec_cls = torch.cat([enc, *common], -1)
    cls = model.head_cls(dec_cls)
    x, energy = dec_cls, []
    for layer in model.energy:
        x = reference_layer(layer, x, mask)
        energy.append(x)
    dec_reg = torch.cat([enc, *energy, torch.softmax(cls, -1)], -1)
    h = model.heads_reg.act(model.heads_reg.hidden(dec_reg)).chunk(len(model.heads_reg.out), -1)
    charge, *corr = [F.linear(hi, lin.weight, lin.bias) for lin, hi in zip(model.heads_reg.out, h)]
    base = torch.stack([torch.log1p(X[..., 1].clamp(min=0)), X[..., 2], X[..., 3], X[..., 4],
                        torch.log1p(X[..., 5].clamp(min=0))], -1)
    return {"cls": cls * mf, "charge": charge * mf, "reg": (base + torch.cat(corr, -1)) * mf}


@pytest.mark.parametrize("change", [{}, dict(normalize_degrees=False, num_node_messages=3),
                                    dict(layernorm=True, clip_value_low=0.1, activation="gelu"),
                                    dict(dist_mult=0.02, bin_size=4)])
def test_model_matches_reference_equations_in_float64(change):
    torch.manual_seed(0)
    m = MLPF(**{**TINY, **change}).double()
    X, _, M = batch(synthetic_events(3, 20, 60, seed=12), 64)
    X = X.double()
    out, ref = m(X, M), reference_model(m, X, M)
    for k in out:
        assert torch.allclose(out[k], ref[k], rtol=1e-10, atol=1e-10), k
    # Gradients too, of every parameter.
    loss = sum((v * torch.linspace(0.5, 1.5, v.shape[-1], dtype=v.dtype)).sum()
               for v in out.values())
    grads = torch.autograd.grad(loss, list(m.parameters()), allow_unused=True)
    loss_r = sum((v * torch.linspace(0.5, 1.5, v.shape[-1], dtype=v.dtype)).sum()
                 for v in ref.values())
    grads_r = torch.autograd.grad(loss_r, list(m.parameters()), allow_unused=True)
    for g, gr in zip(grads, grads_r):
        if g is None or gr is None:
            assert g is None or not g.any()
            continue
        assert torch.allclose(g, gr, rtol=1e-8, atol=1e-9)


def test_float32_model_matches_reference_to_rounding():
    torch.manual_seed(0)
    m = MLPF(**TINY)
    X, _, M = batch(synthetic_events(4, 30, 60, seed=13), 64)
    out, ref = m(X, M), reference_model(m, X, M)
    for k in out:
        assert torch.allclose(out[k], ref[k], rtol=1e-4, atol=1e-5), k


@pytest.mark.parametrize("n,bin_size", [(45, 8), (64, 8), (130, 4), (7, 8)])
def test_lsh_permutation_matches_two_stable_sorts(n, bin_size):
    g = torch.Generator().manual_seed(n)
    N = -(-n // bin_size) * bin_size + bin_size
    x = torch.randn(3, N, 6, generator=g)
    x[0, 3] = x[0, 5]  # bit-identical elements keep their input order
    mask = torch.zeros(3, N, dtype=torch.bool)
    mask[0, :n], mask[1, :n // 2], mask[2, :1] = True, True, True
    codebook, tie = torch.randn(6, 512, generator=g), torch.randn(6, generator=g)
    assert torch.equal(lsh_permutation(x, mask, bin_size, codebook, tie),
                       reference_lsh(x, mask, bin_size, codebook, tie))


def test_two_level_hash_for_big_events_keeps_bins_local():
    # Beyond 2 * HASH_DIRECTIONS bins the hash has two levels; elements near each other
    # still share bins: 40 tight clusters of 8 land in bins of 8 whole.
    g = torch.Generator().manual_seed(0)
    bs, k = 8, 40
    n_bins = 2 * HASH_DIRECTIONS + 16
    centres = torch.randn(n_bins, 16, generator=g) * 10
    x = (centres.repeat_interleave(bs, 0) + 1e-3 * torch.randn(n_bins * bs, 16, generator=g))
    x = x[torch.randperm(n_bins * bs, generator=g)][None]
    label = torch.cdist(x[0], centres).argmin(1)
    perm = lsh_permutation(x, torch.ones(1, n_bins * bs, dtype=torch.bool), bs,
                           torch.randn(16, 512, generator=g), torch.randn(16, generator=g))
    bins = label[perm[0]].view(n_bins, bs)
    assert sorted(perm[0].tolist()) == list(range(n_bins * bs))
    pure = (bins == bins[:, :1]).all(1).float().mean()
    assert pure > 0.5, (pure, k)  # (a random order gives ~0)
