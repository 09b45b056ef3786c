"""MLPF model and loss (mlpf/model.py, mlpf/loss.py): shapes, padding, permutations, masks."""

import numpy as np
import pytest
import torch

from mlpf.data.format import ELEM_TOWER, ELEM_TRACK, Event
from mlpf.loss import combine, loss_sums, mlpf_loss, regression_targets
from mlpf.model import MLPF, decode, lsh_permutation

TINY = dict(width=16, ffn_dist_hidden_dim=16, distance_dim=8, output_dim=16, bin_size=8,
            num_graph_layers_common=2, num_graph_layers_energy=1, num_node_messages=2)


def synthetic_events(n_events=8, n_min=10, n_max=40, seed=0):
    """Events with a learnable truth: tracks -> charged particles (electrons/muons when the
    track says so), towers -> photons (EM-like), neutral hadrons (hadronic, hard) or nothing."""
    rng = np.random.default_rng(seed)
    events = []
    for _ in range(n_events):
        n = int(rng.integers(n_min, n_max + 1))
        X = np.zeros((n, 12), np.float32)
        y = np.zeros((n, 7), np.float32)
        track = rng.random(n) < 0.5
        pt = rng.lognormal(0.5, 1.0, n)
        eta = np.where(track, rng.uniform(-2.5, 2.5, n), rng.uniform(-4, 4, n))
        phi = rng.uniform(-np.pi, np.pi, n)
        e = pt * np.cosh(eta)
        X[:, 0] = np.where(track, ELEM_TRACK, ELEM_TOWER)
        X[:, 1:6] = np.stack([pt, eta, np.sin(phi), np.cos(phi), e], 1)
        q = rng.choice([-1.0, 1.0], n)
        flavour = rng.random(n)
        em = rng.random(n)
        X[:, 6] = np.where(track, eta + 0.01 * rng.normal(size=n), em * e)
        X[:, 7] = np.where(track, np.sin(phi), (1 - em) * e)
        X[:, 8] = np.where(track, np.cos(phi), 0)
        X[:, 9] = np.where(track, q, 0)
        X[:, 10] = track & (flavour < 0.05)
        X[:, 11] = track & (flavour > 0.95)
        cls = np.where(track, np.where(flavour < 0.05, 5, np.where(flavour > 0.95, 4, 1)),
                       np.where(em > 0.7, 3, np.where(e > 3, 2, 0)))
        y[:, 0] = cls
        y[:, 1] = np.where(track, q, 0)
        y[:, 2:7] = np.stack([pt * (1 + 0.05 * np.tanh(eta)), eta, np.sin(phi), np.cos(phi),
                              e * (1 + 0.05 * np.tanh(eta))], 1)
        y[cls == 0] = 0
        events.append(Event(X, y, y.copy()))
    return events


def batch(events, N):
    X = torch.zeros(len(events), N, 12)
    Y = torch.zeros(len(events), N, 7)
    for i, e in enumerate(events):
        X[i, :len(e)] = torch.from_numpy(e.X)
        Y[i, :len(e)] = torch.from_numpy(e.ygen)
    return X, Y, X[..., 0] != 0


def model(**kw):
    torch.manual_seed(0)
    return MLPF(**{**TINY, **kw}).eval()


def test_output_shapes_and_zero_padding():
    X, Y, M = batch(synthetic_events(3, 10, 30), 32)
    out = model()(X, M)
    assert out["cls"].shape == (3, 32, 6)
    assert out["charge"].shape == (3, 32, 3)
    assert out["reg"].shape == (3, 32, 5)
    for v in out.values():
        assert torch.all(v[~M] == 0)
    assert decode(out).shape == (3, 32, 7)


def test_untrained_regression_starts_at_the_element_kinematics():
    X, _, M = batch(synthetic_events(1, 20, 20), 24)
    reg = model()(X, M)["reg"][0, :20]
    assert torch.allclose(reg[:, 1], X[0, :20, 2])  # eta correction starts at 0
    assert torch.allclose(reg[:, 0], torch.log1p(X[0, :20, 1]))


def test_padding_does_not_change_real_outputs():
    ev = synthetic_events(1, 37, 37, seed=3)
    m = model()
    small, big = [m(*batch(ev, N)[::2]) for N in (40, 96)]  # 5 vs 12 bins of 8
    for k in small:
        assert torch.allclose(small[k][0, :37], big[k][0, :37], atol=1e-5), k


def test_batch_neighbours_do_not_change_outputs():
    a, b = synthetic_events(2, 20, 60, seed=4)
    m = model()
    alone = m(*batch([a], 64)[::2])
    together = m(*batch([a, b], 64)[::2])
    assert torch.allclose(alone["cls"][0], together["cls"][0], atol=1e-5)


def test_permutation_equivariance():
    ev = synthetic_events(1, 45, 45, seed=5)[0]
    perm = np.random.default_rng(0).permutation(45)
    shuffled = Event(ev.X[perm], ev.ygen[perm], ev.ycand[perm])
    m = model()
    a = m(*batch([ev], 48)[::2])
    b = m(*batch([shuffled], 48)[::2])
    for k in a:
        assert torch.allclose(a[k][0, :45][perm], b[k][0, :45], atol=1e-5), k


def test_lsh_bins_group_real_elements_first_and_keep_size():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 4)
    mask = torch.zeros(2, 32, dtype=torch.bool)
    mask[0, :20] = True
    mask[1, :9] = True
    perm = lsh_permutation(x, mask, 8, torch.randn(4, 8), torch.randn(4))
    assert sorted(perm[0].tolist()) == list(range(32))
    assert mask[0][perm[0]][:20].all() and not mask[0][perm[0]][20:].any()
    assert mask[1][perm[1]][:9].all()


def test_lsh_groups_nearby_points():
    # Two well separated clusters of 16 points land in two different bins of 16.
    torch.manual_seed(1)
    centre = torch.randn(1, 1, 16) * 10
    x = torch.cat([centre + 0.01 * torch.randn(1, 16, 16), -centre + 0.01 * torch.randn(1, 16, 16)],
                  1)
    x = x[:, torch.randperm(32)]
    perm = lsh_permutation(x, torch.ones(1, 32, dtype=torch.bool), 16, torch.randn(16, 8),
                           torch.randn(16))
    side = (x[0] @ centre[0, 0] > 0)[perm[0]]
    assert len(set(side[:16].tolist())) == 1 and len(set(side[16:].tolist())) == 1
    assert side[0] != side[16]


@pytest.mark.parametrize("change", [dict(num_node_messages=1), dict(layernorm=True),
                                    dict(dist_mult=0.5), dict(normalize_degrees=False),
                                    dict(activation="relu"), dict(clip_value_low=0.99)])
def test_config_change_changes_model(change):
    X, _, M = batch(synthetic_events(2, 20, 30, seed=6), 32)
    a, b = model()(X, M), model(**change)(X, M)
    assert not torch.allclose(a["cls"], b["cls"])


def test_bigger_model_has_more_parameters():
    n = [sum(p.numel() for p in model(output_dim=d).parameters()) for d in (16, 32)]
    assert n[1] > n[0]


def test_loss_masks_padding_and_targetless_elements():
    X, Y, M = batch(synthetic_events(2, 20, 30, seed=7), 32)
    out = model()(X, M)
    base = mlpf_loss(out, Y, M)
    # Garbage in padded rows changes nothing.
    junk = {k: torch.where(M[..., None], v, torch.full_like(v, 1e3)) for k, v in out.items()}
    assert all(torch.allclose(base[k], mlpf_loss(junk, Y, M)[k]) for k in base)
    # Regression outputs of elements without a target do not enter the loss.
    no_target = M & (Y[..., 0] == 0)
    assert no_target.any()
    reg = out["reg"].clone()
    reg[no_target] = 99.0
    again = mlpf_loss({**out, "reg": reg}, Y, M)
    assert torch.allclose(base["reg"], again["reg"])
    # ... but their class logits do.
    cls = out["cls"].clone()
    cls[no_target] = torch.tensor([-5.0, 5, 0, 0, 0, 0])
    assert mlpf_loss({**out, "cls": cls}, Y, M)["cls"] > base["cls"]


def test_loss_sums_add_up_over_batches():
    ev = synthetic_events(4, 10, 30, seed=8)
    m = model()
    whole = loss_sums(m(*batch(ev, 32)[::2]), batch(ev, 32)[1], batch(ev, 32)[2])
    parts = [loss_sums(m(*batch(ev[i:i + 2], 32)[::2]), *batch(ev[i:i + 2], 32)[1:])
             for i in (0, 2)]
    summed = {k: parts[0][k] + parts[1][k] for k in whole}
    for k, v in combine(whole).items():
        assert torch.allclose(v, combine(summed)[k], atol=1e-5)


def test_perfect_prediction_has_zero_regression_loss():
    _, Y, M = batch(synthetic_events(2, 10, 20, seed=9), 24)
    out = {"cls": torch.nn.functional.one_hot(Y[..., 0].long(), 6) * 50.0,
           "charge": torch.nn.functional.one_hot(Y[..., 1].long() + 1, 3) * 50.0,
           "reg": regression_targets(Y)}
    parts = mlpf_loss(out, Y, M)
    assert parts["reg"] == 0 and parts["cls"] < 1e-6 and parts["charge"] < 1e-6


def test_focal_loss_is_smaller_than_cross_entropy():
    X, Y, M = batch(synthetic_events(2, 20, 30, seed=10), 32)
    out = model()(X, M)
    assert mlpf_loss(out, Y, M, focal_gamma=2.0)["cls"] < mlpf_loss(out, Y, M)["cls"]


def test_tiny_batch_overfits():
    X, Y, M = batch(synthetic_events(4, 20, 30, seed=11), 32)
    torch.manual_seed(0)
    m = MLPF(**TINY)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = mlpf_loss(m(X, M), Y, M)["total"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first


def test_loss_by_hand_upstream_weights_and_deltas():
    """One event, two elements, every term worked out on paper (mlpf/loss.py docstring)."""
    import math

    # element 0: a charged hadron (class 1, charge +1, pt 1, eta 0.5, phi 0, E 2);
    # element 1: no target (class 0). Both real.
    Y = torch.zeros(1, 2, 7)
    Y[0, 0] = torch.tensor([1, 1, 1.0, 0.5, 0.0, 1.0, 2.0])
    M = torch.tensor([[True, True]])
    cls = torch.zeros(1, 2, 6)  # uniform logits: CE = log 6 for each real element
    charge = torch.zeros(1, 2, 3)  # uniform: CE = log 3 for the target element
    tgt = regression_targets(Y)[0, 0]  # [log 2, 0.5, 0, 1, log 3]
    # prediction errors: pt +0.5 (quadratic, delta 1), eta +0.3 (linear, delta 0.1),
    # sin phi -0.05 (quadratic, delta 0.1), cos phi 0, energy +2 (linear, delta 1)
    reg = torch.zeros(1, 2, 5)
    reg[0, 0] = tgt + torch.tensor([0.5, 0.3, -0.05, 0.0, 2.0])
    reg[0, 1] = 50.0  # no target: ignored
    parts = mlpf_loss({"cls": cls, "charge": charge, "reg": reg}, Y, M)
    want = {"cls": math.log(6), "charge": math.log(3), "pt": 0.5 * 0.5**2,
            "eta": 0.1 * (0.3 - 0.05), "sin_phi": 0.5 * 0.05**2, "cos_phi": 0.0,
            "energy": 1.0 * (2.0 - 0.5)}
    for k, v in want.items():
        assert float(parts[k]) == pytest.approx(v, rel=1e-5, abs=1e-7), k
    reg_w = 100 * (want["pt"] + want["eta"] + want["sin_phi"] + want["cos_phi"]
                   + want["energy"])
    assert float(parts["reg"]) == pytest.approx(reg_w, rel=1e-5)
    assert float(parts["total"]) == pytest.approx(want["cls"] + want["charge"] + reg_w, rel=1e-5)
    # the logged components give the total back, under upstream's or any other weighting
    from mlpf.loss import weighted_total

    comp = {k: float(parts[k]) for k in want}
    assert weighted_total(comp) == pytest.approx(float(parts["total"]), rel=1e-6)
    ones = {k: 1.0 for k in want}
    assert weighted_total(comp, ones) == pytest.approx(sum(want.values()), rel=1e-5)


def test_loss_with_unit_weights_and_deltas_is_the_single_huber_form():
    X, Y, M = batch(synthetic_events(2, 20, 30, seed=12), 32)
    out = model()(X, M)
    ones = {k: 1.0 for k in ("cls", "charge", "pt", "eta", "sin_phi", "cos_phi", "energy")}
    deltas = {k: 1.0 for k in ("pt", "eta", "sin_phi", "cos_phi", "energy")}
    got = mlpf_loss(out, Y, M, coefs=ones, deltas=deltas)
    has_t = M & (Y[..., 0] != 0)
    h = torch.nn.functional.huber_loss(out["reg"], regression_targets(Y), reduction="none",
                                       delta=1.0).sum(-1)
    assert torch.allclose(got["reg"], h[has_t].sum() / has_t.sum(), rtol=1e-5)
    # upstream's default: the same class and charge terms, each momentum term weighted 100
    up = mlpf_loss(out, Y, M)
    assert torch.allclose(up["cls"], got["cls"]) and torch.allclose(up["charge"], got["charge"])
    assert torch.allclose(up["reg"], 100 * sum(up[k] for k in deltas), rtol=1e-6)
    assert torch.allclose(got["pt"], up["pt"]) and torch.allclose(got["energy"], up["energy"])
