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
whose hidden layers run as one matmul and output layers as one block-diagonal matmul (same
model, fewer operators); the kernel is not clamped at 1 from above (it exceeds 1 only where
rounding makes a squared distance negative); events with more than 2 * HASH_DIRECTIONS + 1
bins are hashed in two levels (see :func:`lsh_permutation`), so that the cost of hashing
stays linear in the number of elements.

Cost notes (what makes an epoch cheap on a CPU, and where the numerics stay fp32): the
kernel of a bin is one batched matmul and two or three elementwise passes; the degree
normalisation and the padding mask are node weights computed once per graph layer, applied
to the messages (one message-passing step) or folded into the adjacency once (several);
ELU/ReLU/SELU run in place; the gate mixes with one ``lerp``; binning moves feature rows
with the inverse permutation as gradient; dropout draws its mask as ``rand < keep``,
cheaper on a CPU than ``bernoulli_``. Under bf16 autocast the LSH coordinates, the hash and
the kernel stay fp32 (squared distances lose their small differences in bf16); the other
matmuls run in bf16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mlpf.data.format import ELEM_TOWER, N_CLASSES

N_ELEM_TYPES = 3  # padding (0), tower (1), track (2): the one-hot width
N_REG = 5  # log1p pt, eta, sin phi, cos phi, log1p E
N_CHARGE = 3  # q + 1 for q in -1, 0, +1
MAX_BINS = 1024  # LSH codebook size: enough for 6400 elements at bin_size 16
# Directions of the first hash level. Events with up to 2 * HASH_DIRECTIONS bins (2,048
# elements at bin_size 32) get exactly the single-level hash of MLPF; bigger events get a
# second level, so that hashing costs O(1) per element instead of O(n_bins).
HASH_DIRECTIONS = 32

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "gelu": nn.GELU, "selu": nn.SELU,
               "silu": nn.SiLU, "tanh": nn.Tanh}
# Activations whose gradient PyTorch computes from the output: these run in place (on the
# fresh output of a matmul or lerp, which nothing else reads), which saves a buffer and,
# for ELU/SELU, an exp in the backward pass.
_IN_PLACE = ("elu", "relu", "selu")


def activation_layer(name: str) -> nn.Module:
    return ACTIVATIONS[name](inplace=True) if name in _IN_PLACE else ACTIVATIONS[name]()


class Dropout(nn.Module):
    """Inverted dropout with the mask drawn as ``rand < keep``: the same distribution as
    ``nn.Dropout`` (each value kept with probability 1 - p and scaled by 1 / (1 - p)),
    about three times cheaper on a CPU than its ``bernoulli_``. Identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        # fp32 uniforms whatever the dtype of x: a bf16 uniform would quantise the keep rate.
        mask = torch.rand(x.shape, device=x.device).lt_(keep).div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FFN(nn.Sequential):
    """nn.Sequential on rows: (..., F) is flattened to (rows, F) so that every matmul output
    is a plain tensor (not a view), which in-place activations need to stay cheap."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return super().forward(x.reshape(-1, x.shape[-1])).view(*lead, -1)


def ffn(in_dim: int, out_dim: int, hidden: int, num_layers: int, activation: str,
        dropout: float = 0.0) -> nn.Sequential:
    """Point-wise feed-forward net: ``num_layers`` hidden layers of width ``hidden``, then a
    linear map to ``out_dim``. Acts on the last axis: (..., in_dim) -> (..., out_dim)."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(d, hidden), activation_layer(activation)]
        if dropout > 0:
            layers.append(Dropout(dropout))
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return FFN(*layers)


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


def angular_hash(x: torch.Tensor, directions: torch.Tensor, n_valid: torch.Tensor) -> torch.Tensor:
    """Angular LSH: argmax over [xR, -xR] with R the first ``n_valid[b]`` directions.

    Computed as j = argmax_j |xR_j| (first on ties) and hash = j, or H + j when xR_j < 0.
    Directions beyond an event's ``n_valid`` project to 0, which never beats a valid
    direction: max |xR| >= 0, and on a tie at 0 the first (valid) index wins.

    Shapes: x (B, N, D), directions (D, H), n_valid (B,) -> (B, N) long in [0, 2H).
    """
    H = directions.shape[1]
    if H > 255:
        raise ValueError(f"{H} hash directions: at most 255")
    valid = (torch.arange(H, device=x.device) < n_valid[:, None]).to(x.dtype)  # (B, H)
    R = directions.T[None] * valid[:, :, None]  # (B, H, D)
    # (B, H, N): the reduction over H then runs along rows of N, vectorised, instead of
    # over a short innermost axis.
    proj = torch.bmm(R, x.transpose(1, 2))
    a = proj.abs()
    # First index of the maximum as amax of (a == max) * (H - j): four vectorised passes,
    # about 1.5x faster than max(dim) with indices on a CPU. (H <= 255: uint8 weights.)
    desc = torch.arange(H, 0, -1, dtype=torch.uint8, device=x.device)[None, :, None]
    j = H - ((a == a.amax(1, keepdim=True)) * desc).amax(1, keepdim=True).long()  # (B, 1, N)
    j = j.clamp_(max=H - 1)  # NaN coordinates match nothing: any bin (the loss is NaN anyway)
    negative = proj.gather(1, j) < 0
    return torch.add(j, negative, alpha=H).squeeze(1)


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _order_key(t: torch.Tensor) -> torch.Tensor:
    """float32 -> int64 in [0, 2**32) with the same order (-0.0 and 0.0 equal)."""
    bits = (t + 0.0).view(torch.int32)  # -0.0 + 0.0 = +0.0
    # Negative floats order backwards by their magnitude bits: flip those bits.
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).long() + 2**31


def lsh_permutation(x_dist: torch.Tensor, mask: torch.Tensor, bin_size: int,
                    codebook: torch.Tensor, tie_vector: torch.Tensor) -> torch.Tensor:
    """Order of the elements that groups them into LSH bins of ``bin_size``.

    An event with n real elements gets n_bins = ceil(n / bin_size) bins. Each element is
    projected on the first n_bins // 2 random directions R of the codebook; its hash is the
    argmax over [xR, -xR] (angular LSH). Elements are sorted by hash, ties inside a hash
    bucket broken by a fixed random projection (content, not position: keeps permutation
    equivariance), padded elements last; consecutive groups of bin_size form the bins.

    The projections are computed on HASH_DIRECTIONS directions whatever the event size
    (those beyond an event's n_bins // 2 masked), so that the cost per element does not
    grow with N. Events with n_bins // 2 > HASH_DIRECTIONS are hashed in two levels: the
    hash over the first HASH_DIRECTIONS directions, refined inside each bucket by a hash
    over the next ceil(n_bins // 2 / (2 HASH_DIRECTIONS)) directions (about n_bins buckets
    in all, as in one level). Smaller events get exactly the one-level hash.

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
    # Hashing is discrete (no gradient) and stays fp32 under autocast.
    with torch.no_grad(), torch.autocast(x_dist.device.type, enabled=False):
        x = _at_least_fp32(x_dist.detach())
        codebook, tie_vector = codebook.to(x.dtype), tie_vector.to(x.dtype)
        # (B,) directions per event: floor(ceil(n / bin_size) / 2)
        half = torch.div(mask.sum(1) + (bin_size - 1), 2 * bin_size, rounding_mode="floor")
        H = N // bin_size // 2  # static: from the padded size, not the data
        if H > codebook.shape[1]:
            raise ValueError(f"{N // bin_size} bins exceed the LSH codebook ({MAX_BINS}); "
                             "raise bin_size")
        L = min(HASH_DIRECTIONS, codebook.shape[1])
        if H == 0:
            hashes = torch.zeros(B, N, dtype=torch.long, device=x.device)
            n_hashes = 1
        elif H <= L or codebook.shape[1] == L:
            # Always L directions, masked to each event's n_bins // 2: the same hash as with
            # n_bins // 2 directions, at a cost per element that does not grow with N.
            hashes = angular_hash(x, codebook[:, :L], half)
            n_hashes = 2 * L
        else:
            H2 = -(-H // (2 * L))
            half2 = torch.where(half > L, -(-half // (2 * L)), torch.zeros_like(half))
            h1 = angular_hash(x, codebook[:, :L], half.clamp(max=L))
            h2 = angular_hash(x, codebook[:, L:L + H2], half2)
            hashes = h1 * (2 * H2) + h2
            n_hashes = 4 * L * H2
        hashes = hashes.masked_fill(~mask, n_hashes)  # padding last
        tie = x @ tie_vector  # (B, N)
        if tie.dtype != torch.float32:  # e.g. a float64 model: two stable sorts
            order = torch.sort(tie, dim=1, stable=True).indices
            by_hash = torch.sort(torch.gather(hashes, 1, order), dim=1, stable=True).indices
            return torch.gather(order, 1, by_hash)
        # One stable sort of (event, hash, tie projection) packed into int64: the
        # lexicographic order of two stable sorts, in one linear-time integer sort.
        event = torch.arange(0, B * (n_hashes + 1), n_hashes + 1, device=x.device)[:, None]
        key = ((hashes + event) << 32) | _order_key(tie)
        # Event b's elements sort into positions [b N, (b + 1) N): the index mod N.
        return torch.sort(key.view(-1), stable=True).indices.view(B, N).remainder_(N)


class _PermuteRows(torch.autograd.Function):
    """t[index] for a permutation ``index`` of the rows, with the inverse permutation as
    the backward pass: a gather of rows, instead of zeros + index_add_ (scatter) that the
    backward of a general index_select needs."""

    @staticmethod
    def forward(ctx, t, index, inverse):
        ctx.save_for_backward(inverse)
        return t.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def permute_rows(t: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Rows of t (R, F) in the order of the permutation ``index`` (R,); ``inverse`` is its
    inverse permutation."""
    return _PermuteRows.apply(t, index, inverse)


class GHConv(nn.Module):
    """One gated message-passing step on a dense binned graph (GHConvDense in MLPF).

    h' = act(g * D^-1/2 A D^-1/2 x Theta + (1 - g) * x W), g = sigmoid(x W_g + b_g),
    with the degree normalisation D optional. The caller passes the kernel A and node
    weights w = D^-1/2 (or 1) on real elements, 0 on padding: w * (A @ (w * m)) is the
    masked, normalised message without a (bs, bs) elementwise pass (cheapest for one step);
    or w = None and A already masked and normalised (cheaper when several steps share it).
    Rows of padded elements come out non-zero; the caller zeroes them.

    Shapes: x (b, bs, F_in), adj (b, bs, bs), w (b, bs, 1) -> (b, bs, F_out), b = B * n_bins.
    """

    def __init__(self, in_dim: int, out_dim: int, activation: str, normalize_degrees: bool):
        super().__init__()
        # Theta (neighbour message), W (self term) and W_g (gate) in one matmul: same model,
        # one larger GEMM instead of three small ones (what dominates on a CPU).
        self.weight = nn.Linear(in_dim, 3 * out_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(2 * out_dim))  # b of the self term and b_g
        self.act = activation_layer(activation)
        self.normalize_degrees = normalize_degrees  # applied by the caller, in adj

    def forward(self, x, adj, w=None):
        # The biases ride in the GEMM (addmm) instead of two elementwise adds.
        bias = F.pad(self.bias, (self.bias.shape[0] // 2, 0))  # (0 for Theta, b, b_g)
        msg, own, gate = F.linear(x, self.weight.weight, bias).chunk(3, dim=-1)
        if w is None:  # adj already masked and normalised
            hom = adj.to(msg.dtype) @ msg
        else:
            w = w.to(msg.dtype)
            hom = w * (adj.to(msg.dtype) @ (w * msg))
        # g * hom + (1 - g) * own in one operator
        return self.act(torch.lerp(own, hom, torch.sigmoid(gate)))


def bin_adjacency(db: torch.Tensor, mb: torch.Tensor, dist_mult: float, clip_value_low: float,
                  normalize_degrees: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense kernel of each bin and the node weights that mask and normalise it, in fp32.

    A_ij = clamp(exp(-dist_mult * |d_i - d_j|^2), clip_value_low, 1), over all pairs of the
    bin; w_i = 0 for padding, else 1, or with normalize_degrees D_ii^-1/2 with D the row
    sums of A over real elements. w_i A_ij w_j is the masked (normalised) adjacency.
    A is built as exp(baddbmm): one GEMM and two or three passes. The clamp at 1 is left
    out: exp(-m d2) exceeds 1 only where rounding makes d2 < 0 (by the same few ulps of
    |d|^2 by which the expanded d2 is off anywhere), so A_ii = 1 + O(eps).

    Shapes: db (b, bs, D), mb (b, bs) float 0/1 -> A (b, bs, bs), w (b, bs, 1).
    """
    with torch.autocast(db.device.type, enabled=False):
        db = _at_least_fp32(db)
        sq = (db * db).sum(-1)  # (b, bs)
        m = dist_mult
        logits = torch.baddbmm((-m * sq)[:, :, None], db, db.transpose(1, 2),
                               alpha=2 * m) - (m * sq)[:, None, :]  # -m d2
        adj = logits.exp()
        if clip_value_low > 0:
            adj = adj.clamp(min=clip_value_low)
        w = mb[..., None]  # (b, bs, 1)
        if normalize_degrees:
            deg = (adj @ w) * w  # row sums over real neighbours; >= 1 for real (self loop)
            w = torch.where(deg > 0, deg.clamp(min=1e-6).rsqrt(), torch.zeros_like(deg))
        return adj, w


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
        self.normalize_degrees = normalize_degrees
        self.norm = nn.LayerNorm(in_dim) if layernorm else nn.Identity()
        self.ffn_dist = ffn(in_dim, distance_dim, ffn_dist_hidden_dim, ffn_dist_num_layers,
                            activation, dropout)
        self.messages = nn.ModuleList(
            GHConv(in_dim if i == 0 else output_dim, output_dim, activation, normalize_degrees)
            for i in range(num_node_messages))
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
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

        # Flat row indices: whole feature rows move (index_select both ways), linear in N,
        # unlike gather/scatter with an expanded (B, N, F) index.
        offset = (torch.arange(B, device=perm.device) * N)[:, None]
        flat = (perm + offset).reshape(-1)  # (B * N,)
        nb = B * (N // bs)
        inverse = torch.empty_like(flat)
        inverse[flat] = torch.arange(B * N, device=flat.device)

        def to_bins(t):  # (B, N, F) -> (B * nb, bs, F) in LSH order
            return permute_rows(t.reshape(B * N, -1), flat, inverse).view(nb, bs, -1)

        xb, db = to_bins(x), to_bins(x_dist)
        mb = mask.reshape(-1)[flat].view(nb, bs).to(_at_least_fp32(x_dist).dtype)  # (b, bs)
        adj, w = bin_adjacency(db, mb, self.dist_mult, self.clip_value_low,
                               self.normalize_degrees)  # (b, bs, bs), (b, bs, 1)
        if len(self.messages) > 1 or not self.normalize_degrees:
            adj, w = adj * (w * w.transpose(1, 2)), None  # fold once for all steps
        for msg in self.messages:
            xb = self.dropout(msg(xb, adj, w))
        xb = xb * mb[..., None].to(xb.dtype)  # padded elements leave as zeros
        return permute_rows(xb.reshape(B * N, -1), inverse, flat).view(B, N, -1)


class Heads(nn.Module):
    """Several one-hidden-layer FFN heads on the same input, their hidden layers computed in
    one matmul and their output layers in another (a block-diagonal weight): the same model
    as separate heads, fewer and larger operators.

    Shapes: (..., in_dim) -> list of (..., d) for d in out_dims.
    """

    def __init__(self, in_dim: int, out_dims: tuple[int, ...], hidden: int, activation: str,
                 dropout: float = 0.0):
        super().__init__()
        self.out_dims = tuple(out_dims)
        self.hidden = nn.Linear(in_dim, hidden * len(out_dims))
        self.act = activation_layer(activation)
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out = nn.ModuleList(nn.Linear(hidden, d) for d in out_dims)

    def forward(self, x):
        lead = x.shape[:-1]
        h = self.dropout(self.act(self.hidden(x.reshape(-1, x.shape[-1]))))  # (rows, k * hidden)
        weight = torch.block_diag(*(lin.weight for lin in self.out))  # (sum d, k * hidden)
        bias = torch.cat([lin.bias for lin in self.out])
        y = F.linear(h, weight, bias).view(*lead, -1)
        return list(y.split(self.out_dims, dim=-1))


@dataclass(frozen=True)
class ModelConfig:
    """The hyperparameters of the model (arXiv:2203.01112) and their untuned defaults: the one
    place they are written. :class:`MLPF` takes them as keywords;
    :class:`mlpf.train.TrainConfig` repeats the names with these defaults and derives its model
    keys from :func:`dataclasses.fields` of this class."""

    width: int = 64  # input encoding and output-head hidden width
    layernorm: bool = False
    ffn_dist_hidden_dim: int = 64  # FFN to the LSH coordinates: width ...
    ffn_dist_num_layers: int = 1  # ... and depth
    distance_dim: int = 64
    num_node_messages: int = 1
    num_graph_layers_common: int = 2
    num_graph_layers_energy: int = 2
    dropout: float = 0.0
    bin_size: int = 64  # elements per LSH bin
    clip_value_low: float = 0.0
    dist_mult: float = 0.1
    normalize_degrees: bool = True
    output_dim: int = 64  # width of the graph layers
    activation: str = "elu"


MODEL_DEFAULTS = ModelConfig()


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

    def __init__(self, *, width: int = MODEL_DEFAULTS.width,
                 layernorm: bool = MODEL_DEFAULTS.layernorm,
                 ffn_dist_hidden_dim: int = MODEL_DEFAULTS.ffn_dist_hidden_dim,
                 ffn_dist_num_layers: int = MODEL_DEFAULTS.ffn_dist_num_layers,
                 distance_dim: int = MODEL_DEFAULTS.distance_dim,
                 num_node_messages: int = MODEL_DEFAULTS.num_node_messages,
                 num_graph_layers_common: int = MODEL_DEFAULTS.num_graph_layers_common,
                 num_graph_layers_energy: int = MODEL_DEFAULTS.num_graph_layers_energy,
                 dropout: float = MODEL_DEFAULTS.dropout,
                 bin_size: int = MODEL_DEFAULTS.bin_size,
                 clip_value_low: float = MODEL_DEFAULTS.clip_value_low,
                 dist_mult: float = MODEL_DEFAULTS.dist_mult,
                 normalize_degrees: bool = MODEL_DEFAULTS.normalize_degrees,
                 output_dim: int = MODEL_DEFAULTS.output_dim,
                 activation: str = MODEL_DEFAULTS.activation):
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
