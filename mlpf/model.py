"""MLPF: a graph neural network for particle-flow reconstruction, in plain PyTorch.

Implements the dense, LSH-binned variant ("PFNetDense") of

    J. Pata, J. Duarte, J.-R. Vlimant, M. Pierini, M. Spiropulu, "MLPF: efficient
    machine-learned particle-flow reconstruction using graph neural networks",
    Eur. Phys. J. C 81 (2021) 381, arXiv:2101.08578,

whose hyperparameters the HPO study arXiv:2203.01112 (Wulff, Girone, Pata) tunes. The names of
the hyperparameters follow that study (distance_dim, num_node_messages, bin_size, ...).

Shapes: B events per batch, N elements per event (padded to a multiple of ``bin_size``),
F features. Input X (B, N, 12) in the Delphes dataset format (mlpf/data/format.py), padded
rows all zero (element type 0). Output, per element:
    cls    (B, N, 6)  class logits (none, ch.had, n.had, photon, electron, muon)
    charge (B, N, 3)  charge logits for q = -1, 0, +1
    reg    (B, N, 5)  [log1p pt, eta, sin phi, cos phi, log1p E]; eta and phi are
                      corrections added to the element's own values, pt and E corrections
                      added to log1p of the element's pt/Et and p/E.

Padding never changes the outputs of real elements: padded elements are masked out of the
kernel, the degrees and the choice of bins, and the number of LSH bins of an event follows
its own real size. Permuting the elements of an event permutes the outputs: elements are
sorted by (LSH hash, a fixed random projection of their coordinates), content not position.
Caveats: elements with bit-identical coordinates tie and keep their input order, so two
identical elements may swap bins (a relabelling of identical inputs); and a BLAS may round
a row differently depending on where it sits in the batch, so equality holds to float
tolerance, and an element sitting exactly on a hash boundary could in principle move.

Differences from the TensorFlow original worth knowing: the number of bins follows each
event's real size (the original binned the padded size, so padding changed the bins); the
charge head is a 3-class classifier; the five regression/charge heads are separate FFNs
whose hidden layers run as one matmul (same model, faster on a CPU).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mlpf.data.format import ELEM_TOWER, N_CLASSES

N_ELEM_TYPES = 3  # padding (0), tower (1), track (2): the one-hot width
N_REG = 5  # log1p pt, eta, sin phi, cos phi, log1p E
N_CHARGE = 3  # q + 1 for q in -1, 0, +1
MAX_BINS = 1024  # LSH codebook size: enough for 6400 elements at bin_size 16

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "gelu": nn.GELU, "selu": nn.SELU,
               "silu": nn.SiLU, "tanh": nn.Tanh}


def ffn(in_dim: int, out_dim: int, hidden: int, num_layers: int, activation: str,
        dropout: float = 0.0) -> nn.Sequential:
    """Point-wise feed-forward net: ``num_layers`` hidden layers of width ``hidden``, then a
    linear map to ``out_dim``. Acts on the last axis: (..., in_dim) -> (..., out_dim)."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(d, hidden), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def encode_inputs(X: torch.Tensor) -> torch.Tensor:
    """Raw elements (B, N, 12) -> network inputs (B, N, 3 + 11).

    One-hot element type, then the remaining 11 features with energies and momenta as
    log1p so that one scale fits soft and hard elements alike.
    """
    typ = X[..., 0].long().clamp(0, N_ELEM_TYPES - 1)
    feats = X[..., 1:].clone()  # column k of X is column k-1 here
    for k in (1, 5):  # pt or Et, p or E
        feats[..., k - 1] = torch.log1p(feats[..., k - 1].clamp(min=0))
    tower = (typ == ELEM_TOWER)
    for k in (6, 7):  # tower E_em, E_had (for tracks these columns are eta/phi_outer)
        feats[..., k - 1] = torch.where(tower, torch.log1p(feats[..., k - 1].clamp(min=0)),
                                        feats[..., k - 1])
    return torch.cat([F.one_hot(typ, N_ELEM_TYPES).to(X.dtype), feats], dim=-1)


def lsh_permutation(x_dist: torch.Tensor, mask: torch.Tensor, bin_size: int,
                    codebook: torch.Tensor, tie_vector: torch.Tensor) -> torch.Tensor:
    """Order of the elements that groups them into LSH bins of ``bin_size``.

    An event with n real elements gets n_bins = ceil(n / bin_size) bins. Each element is
    projected on the first n_bins // 2 random directions R of the codebook; its hash is the
    argmax over [xR, -xR] (angular LSH). Elements are sorted by hash, ties inside a hash
    bucket broken by a fixed random projection (content, not position: keeps permutation
    equivariance), padded elements last; consecutive groups of bin_size form the bins.

    Args:
        x_dist: (B, N, D) learned coordinates, N a multiple of bin_size.
        mask: (B, N) bool, True for real elements.
        codebook: (D, MAX_BINS // 2) fixed random directions.
        tie_vector: (D,) fixed random direction for breaking ties.
    Returns:
        perm: (B, N) long, the sorted order; the real elements of event b fill its first
        ceil(n_b / bin_size) bins whatever N is.
    """
    B, N, D = x_dist.shape
    with torch.no_grad():  # hashing is discrete: no gradient flows through it
        x = x_dist.detach()
        half = torch.div(torch.div(mask.sum(1) + bin_size - 1, bin_size, rounding_mode="floor"),
                         2, rounding_mode="floor")  # (B,) directions per event
        H = N // bin_size // 2
        if H > codebook.shape[1]:
            raise ValueError(f"{N // bin_size} bins exceed the LSH codebook ({MAX_BINS}); "
                             "raise bin_size")
        big = 2 * H + 1  # hash of padded elements: after every real hash
        if H > 0:
            proj = x @ codebook[:, :H]  # (B, N, H)
            valid = torch.arange(H, device=x.device)[None, None, :] < half[:, None, None]
            # argmax over [xR, -xR] without building it: the direction of largest |xR|,
            # in the second half when its projection is negative. Directions beyond the
            # event's own n_bins // 2 are masked (-1 < any |xR|).
            j = proj.abs().masked_fill_(~valid, -1.0).argmax(-1, keepdim=True)  # (B, N, 1)
            hashes = (j + H * (proj.gather(-1, j) < 0)).squeeze(-1)
            hashes = torch.where(half[:, None] > 0, hashes, torch.zeros_like(hashes))
        else:
            hashes = torch.zeros(B, N, dtype=torch.long, device=x.device)
        hashes = torch.where(mask, hashes, torch.full_like(hashes, big))
        # Lexicographic sort (hash, tie key): stable sort by the minor key, then the major.
        order = torch.sort(x @ tie_vector, dim=1, stable=True).indices
        by_hash = torch.sort(torch.gather(hashes, 1, order), dim=1, stable=True).indices
        return torch.gather(order, 1, by_hash)


class GHConv(nn.Module):
    """One gated message-passing step on a dense binned graph (GHConvDense in MLPF).

    h' = act(g * D^-1/2 A D^-1/2 x Theta + (1 - g) * x W), g = sigmoid(x W_g + b_g),
    with the degree normalisation D optional. Padded elements are zeroed.

    Shapes: x (B, nb, bs, F_in), adj (B, nb, bs, bs), mask (B, nb, bs, 1) -> (B, nb, bs, F_out).
    """

    def __init__(self, in_dim: int, out_dim: int, activation: str, normalize_degrees: bool):
        super().__init__()
        # Theta (neighbour message), W (self term) and W_g (gate) in one matmul: same model,
        # one larger GEMM instead of three small ones (what dominates on a CPU).
        self.weight = nn.Linear(in_dim, 3 * out_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(2 * out_dim))  # b of the self term and b_g
        self.act = ACTIVATIONS[activation]()
        self.normalize_degrees = normalize_degrees

    def forward(self, x, adj, mask):
        msg, own, gate = self.weight(x).chunk(3, dim=-1)
        b_own, b_gate = self.bias.chunk(2)
        if self.normalize_degrees:
            deg = adj.sum(-1, keepdim=True)  # (B, nb, bs, 1); >= 1 for real elements (self loop)
            norm = torch.where(deg > 0, deg.clamp(min=1e-6).rsqrt(), torch.zeros_like(deg))
            hom = norm * (adj @ (norm * msg))
        else:
            hom = adj @ msg
        gate = torch.sigmoid(gate + b_gate)
        return self.act(gate * hom + (1 - gate) * (own + b_own)) * mask


class CombinedGraphLayer(nn.Module):
    """Graph layer of MLPF: LSH binning, a Gaussian kernel in each bin, message passing.

    x -> [LayerNorm] -> FFN -> x_dist (B, N, distance_dim) -> LSH bins of bin_size ->
    adjacency exp(-dist_mult * |x_dist_i - x_dist_j|^2) clipped to [clip_value_low, 1]
    among the real elements of a bin -> num_node_messages GHConv steps of width output_dim
    on x -> back to the input order. Cost O(N * bin_size), not O(N^2).

    Shapes: x (B, N, in_dim), mask (B, N) bool -> (B, N, output_dim); N % bin_size == 0.
    """

    def __init__(self, in_dim: int, *, output_dim: int, distance_dim: int, bin_size: int,
                 num_node_messages: int, ffn_dist_hidden_dim: int, ffn_dist_num_layers: int,
                 dist_mult: float, clip_value_low: float, normalize_degrees: bool,
                 layernorm: bool, dropout: float, activation: str):
        super().__init__()
        self.bin_size = bin_size
        self.dist_mult = dist_mult
        self.clip_value_low = clip_value_low
        self.norm = nn.LayerNorm(in_dim) if layernorm else nn.Identity()
        self.ffn_dist = ffn(in_dim, distance_dim, ffn_dist_hidden_dim, ffn_dist_num_layers,
                            activation, dropout)
        self.messages = nn.ModuleList(
            GHConv(in_dim if i == 0 else output_dim, output_dim, activation, normalize_degrees)
            for i in range(num_node_messages))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Fixed random projections (not trained, but saved with the weights).
        self.register_buffer("codebook", torch.randn(distance_dim, MAX_BINS // 2))
        self.register_buffer("tie_vector", torch.randn(distance_dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        bs = self.bin_size
        if N % bs:
            raise ValueError(f"N={N} elements is not a multiple of bin_size={bs}")
        x = self.norm(x)
        x_dist = self.ffn_dist(x)  # (B, N, D)
        perm = lsh_permutation(x_dist, mask, bs, self.codebook, self.tie_vector)  # (B, N)

        # Flat row indices: index_select (backward: index_add_) moves whole feature rows and
        # stays near linear in N, unlike gather/scatter with an expanded (B, N, F) index.
        offset = (torch.arange(B, device=perm.device) * N)[:, None]
        flat = (perm + offset).reshape(-1)  # (B * N,)

        def to_bins(t):  # (B, N, F) -> (B, nb, bs, F) in LSH order
            t = t.reshape(B * N, -1).index_select(0, flat)
            return t.reshape(B, N // bs, bs, -1)

        xb, db = to_bins(x), to_bins(x_dist)
        mb = to_bins(mask[..., None].to(x.dtype))  # (B, nb, bs, 1)
        sq = (db * db).sum(-1)  # (B, nb, bs)
        d2 = (sq[..., :, None] + sq[..., None, :] - 2 * db @ db.transpose(-1, -2)).clamp(min=0)
        adj = torch.exp(-self.dist_mult * d2).clamp(self.clip_value_low, 1.0)
        adj = adj * mb * mb.transpose(-1, -2)  # (B, nb, bs, bs); no edges to padding
        for msg in self.messages:
            xb = self.dropout(msg(xb, adj, mb))
        inverse = torch.empty_like(flat)
        inverse[flat] = torch.arange(B * N, device=flat.device)
        return xb.reshape(B * N, -1).index_select(0, inverse).reshape(B, N, -1)


class Heads(nn.Module):
    """Several one-hidden-layer FFN heads on the same input, their hidden layers computed in
    one matmul (the same model as separate heads, faster on a CPU).

    Shapes: (..., in_dim) -> list of (..., d) for d in out_dims.
    """

    def __init__(self, in_dim: int, out_dims: tuple[int, ...], hidden: int, activation: str,
                 dropout: float = 0.0):
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden * len(out_dims))
        self.act = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out = nn.ModuleList(nn.Linear(hidden, d) for d in out_dims)

    def forward(self, x):
        h = self.dropout(self.act(self.hidden(x))).chunk(len(self.out), dim=-1)
        return [lin(hi) for lin, hi in zip(self.out, h)]


class MLPF(nn.Module):
    """PFNetDense: input encoding, a "common" stack for classification and an "energy" stack
    for regression, both of CombinedGraphLayers with skip connections, then output heads.

    Args (the hyperparameters of arXiv:2203.01112):
        width: width of the input encoding and of the hidden layers of the output heads.
        layernorm, ffn_dist_hidden_dim, ffn_dist_num_layers, distance_dim, num_node_messages,
        bin_size, clip_value_low, dist_mult, normalize_degrees, output_dim: see
            :class:`CombinedGraphLayer`.
        num_graph_layers_common, num_graph_layers_energy: depth of the two stacks.
        dropout: in every FFN and after every message-passing step.
        activation: one of ``ACTIVATIONS``.

    Shapes: X (B, N, 12), mask (B, N) bool (default: element type != 0), N a multiple of
    bin_size -> dict of cls (B, N, 6), charge (B, N, 3), reg (B, N, 5); zero on padding.
    """

    def __init__(self, *, width: int = 64, layernorm: bool = False,
                 ffn_dist_hidden_dim: int = 64, ffn_dist_num_layers: int = 1,
                 distance_dim: int = 64, num_node_messages: int = 1,
                 num_graph_layers_common: int = 2, num_graph_layers_energy: int = 2,
                 dropout: float = 0.0, bin_size: int = 64, clip_value_low: float = 0.0,
                 dist_mult: float = 0.1, normalize_degrees: bool = True, output_dim: int = 64,
                 activation: str = "elu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        self.bin_size = bin_size
        n_in = N_ELEM_TYPES + 11
        self.encoder = ffn(n_in, width, width, 1, activation, dropout)
        graph = dict(output_dim=output_dim, distance_dim=distance_dim, bin_size=bin_size,
                     num_node_messages=num_node_messages,
                     ffn_dist_hidden_dim=ffn_dist_hidden_dim,
                     ffn_dist_num_layers=ffn_dist_num_layers, dist_mult=dist_mult,
                     clip_value_low=clip_value_low, normalize_degrees=normalize_degrees,
                     layernorm=layernorm, dropout=dropout, activation=activation)
        self.common = nn.ModuleList(
            CombinedGraphLayer(width if i == 0 else output_dim, **graph)
            for i in range(num_graph_layers_common))
        d_cls = width + num_graph_layers_common * output_dim
        self.energy = nn.ModuleList(
            CombinedGraphLayer(d_cls if i == 0 else output_dim, **graph)
            for i in range(num_graph_layers_energy))
        d_reg = width + num_graph_layers_energy * output_dim + N_CLASSES

        self.head_cls = ffn(d_cls, N_CLASSES, width, 1, activation, dropout)
        # charge (3 logits), pt, eta, phi (sin, cos), energy: one FFN each, evaluated together.
        self.heads_reg = Heads(d_reg, (N_CHARGE, 1, 1, 2, 1), width, activation, dropout)
        # Corrections start at zero: an untrained model predicts the element's own kinematics.
        for out_layer in self.heads_reg.out[1:]:
            nn.init.zeros_(out_layer.weight)
            nn.init.zeros_(out_layer.bias)

    def forward(self, X: torch.Tensor, mask: torch.Tensor | None = None) -> dict:
        if mask is None:
            mask = X[..., 0] != 0
        mf = mask[..., None].to(X.dtype)  # (B, N, 1)
        enc = self.encoder(encode_inputs(X)) * mf  # (B, N, width)
        x, common = enc, []
        for layer in self.common:
            x = layer(x, mask)
            common.append(x)
        dec_cls = torch.cat([enc, *common], dim=-1)  # (B, N, width + Lc * output_dim)
        cls = self.head_cls(dec_cls)
        x, energy = dec_cls, []
        for layer in self.energy:
            x = layer(x, mask)
            energy.append(x)
        # The regression heads see the class probabilities: energy scales differ by class.
        dec_reg = torch.cat([enc, *energy, torch.softmax(cls, -1)], dim=-1)
        base = torch.stack([torch.log1p(X[..., 1].clamp(min=0)), X[..., 2], X[..., 3], X[..., 4],
                            torch.log1p(X[..., 5].clamp(min=0))], dim=-1)  # (B, N, 5)
        charge, *corr = self.heads_reg(dec_reg)
        return {"cls": cls * mf, "charge": charge * mf, "reg": (base + torch.cat(corr, -1)) * mf}


def decode(out: dict) -> torch.Tensor:
    """Model outputs -> particles in the ygen format (B, N, 7):
    [class, charge, pt, eta, sin phi, cos phi, E], all zero where the class is 0."""
    cls = out["cls"].argmax(-1)
    charge = (out["charge"].argmax(-1) - 1).to(out["reg"].dtype)
    reg = out["reg"]
    y = torch.stack([cls.to(reg.dtype), charge, torch.expm1(reg[..., 0]).clamp(min=0),
                     reg[..., 1], reg[..., 2], reg[..., 3],
                     torch.expm1(reg[..., 4]).clamp(min=0)], dim=-1)
    return y * (cls != 0)[..., None].to(reg.dtype)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
