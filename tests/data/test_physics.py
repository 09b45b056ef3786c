"""Physics sanity of the parametric detector (mlpf/data/detector.py) on Pythia8 events."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mlpf.data.detector import CMS, Particles, cell_centre, propagate, simulate, tower_index
from mlpf.data.format import (
    CHARGED_CLASSES,
    CLS_MUON,
    CLS_N_HAD,
    CLS_PHOTON,
    ELEM_TOWER,
    ELEM_TRACK,
    N_CLASSES,
)
from mlpf.data.generate import FileJob, event_particles

N_EVENTS = 20
NO_THRESHOLDS = dataclasses.replace(CMS, ecal_min_e=0.0, hcal_min_e=0.0)


def pythia_events(process="ttbar", n=N_EVENTS, pileup=0.0, seed=11):
    _, next_event = event_particles(FileJob(Path("unused"), n, seed, process, pileup, 0))
    return [next_event() for _ in range(n)]


@pytest.fixture(scope="module")
def ttbar():
    return pythia_events()


@pytest.fixture(scope="module")
def simulated(ttbar):
    rng = np.random.default_rng(1)
    return [simulate(p, rng, return_truth=True) for p in ttbar]


def test_track_count_matches_acceptance_times_efficiency(simulated):
    # Expected from the generator particles themselves, not from the detector's masks.
    n_obs, mean, var = 0, 0.0, 0.0
    for ev, truth in simulated:
        p = truth["particles"]
        pt, eta = np.hypot(p.px, p.py), np.arcsinh(p.pz / np.hypot(p.px, p.py))
        in_acc = (p.charge != 0) & (np.abs(eta) < 2.5) & (pt > 0.5)
        lepton = np.isin(np.abs(p.pdg), (11, 13))
        eff = np.where(lepton, 0.99, np.where(np.abs(eta) < 1.5, 0.95, 0.90))[in_acc]
        mean, var = mean + eff.sum(), var + (eff * (1 - eff)).sum()
        n_obs += int((ev.X[:, 0] == ELEM_TRACK).sum())
    assert mean > 500  # enough tracks for the check to mean something
    assert abs(n_obs - mean) < 5 * np.sqrt(var) + 1, (n_obs, mean, var)


def test_tracks_carry_their_generator_particle(simulated):
    log_ratio = []
    for ev, _ in simulated:
        trk = ev.X[:, 0] == ELEM_TRACK
        assert np.isin(ev.ygen[trk, 0], CHARGED_CLASSES).all()
        np.testing.assert_array_equal(ev.ygen[trk, 1], ev.X[trk, 9])  # charge
        assert (np.abs(ev.X[trk, 2] - ev.ygen[trk, 3]) < 0.02).all()  # eta within 10 sigma
        soft = trk & (ev.ygen[:, 2] < 20)
        log_ratio.append(np.log(ev.X[soft, 1] / ev.ygen[soft, 2]))
        muon = ev.X[trk, 10] == 1
        assert (ev.ygen[trk][muon, 0] == CLS_MUON).all()
    # sigma(pT)/pT ~ 1 % below 20 GeV
    assert 0.007 < np.std(np.concatenate(log_ratio)) < 0.015


def test_tower_energy_matches_visible_energy_within_resolution(ttbar):
    rng = np.random.default_rng(2)
    diff, var = 0.0, 0.0
    for p in ttbar:
        ev, truth = simulate(p, rng, NO_THRESHOLDS, return_truth=True)
        v = truth["particles"]
        pt = np.hypot(v.px, v.py)
        eta = np.arcsinh(v.pz / pt)
        dep = truth["deposits"]
        # Independent of the propagation code: neutral visible particles inside |eta| < 4.9
        # and energetic charged ones (no curling up) deposit; muons never do.
        neutral = v.charge == 0
        must = (neutral | (pt > 2.0)) & (np.abs(eta) < 4.9) & (np.abs(v.pdg) != 13)
        assert dep[must].all()
        assert not dep[np.abs(v.pdg) == 13].any()
        assert not dep[(np.abs(eta) > 5.5) & neutral].any()
        visible = v.e[dep].sum()
        em_t, had_t, fwd = truth["em_true"], truth["had_true"], truth["tower_forward"]
        assert em_t.sum() + had_t.sum() == pytest.approx(visible, rel=1e-9)
        towers = ev.X[:, 0] == ELEM_TOWER
        measured = ev.X[towers, 5].astype(np.float64).sum()
        # expected variance: sum over towers and parts of sigma(E)^2
        for e, stoch, const in ((em_t, np.where(fwd, CMS.fwd_stoch, CMS.ecal_stoch),
                                 np.where(fwd, CMS.fwd_const, CMS.ecal_const)),
                                (had_t, np.where(fwd, CMS.fwd_stoch, CMS.hcal_stoch),
                                 np.where(fwd, CMS.fwd_const, CMS.hcal_const))):
            var += (stoch**2 * e + (const * e) ** 2).sum()
        diff += measured - visible
    assert abs(diff) < 5 * np.sqrt(var), (diff, np.sqrt(var))
    assert abs(diff) > 0  # smearing happened


def test_noise_thresholds_lose_little_energy(simulated):
    lost = [(ev.X[ev.X[:, 0] == ELEM_TOWER, 5].sum(), t["em_true_all"].sum()
             + t["had_true_all"].sum()) for ev, t in simulated]
    measured, visible = np.sum(lost, axis=0)
    assert 0.85 < measured / visible < 1.05


def test_every_class_present_in_ttbar(simulated):
    counts = np.zeros(N_CLASSES, int)
    cand = np.zeros(N_CLASSES, int)
    for ev, _ in simulated:
        counts += np.bincount(ev.ygen[:, 0].astype(int), minlength=N_CLASSES)
        cand += np.bincount(ev.ycand[:, 0].astype(int), minlength=N_CLASSES)
    assert (counts > 0).all(), counts
    assert (cand[1:] > 0).all(), cand


def test_tower_targets_are_neutral_and_above_threshold(simulated):
    for ev, _ in simulated:
        tow = ev.X[:, 0] == ELEM_TOWER
        y = ev.ygen[tow]
        assert np.isin(y[:, 0], (0, CLS_N_HAD, CLS_PHOTON)).all()
        assert (y[:, 1] == 0).all()
        assert (y[y[:, 0] == CLS_N_HAD, 6] >= CMS.nhad_min_e).all()
        assert (y[y[:, 0] == 0] == 0).all()
        np.testing.assert_allclose(ev.X[tow, 5], ev.X[tow, 6] + ev.X[tow, 7], rtol=1e-5)


def test_qcd_and_pileup():
    rng = np.random.default_rng(3)
    qcd = [simulate(p, rng) for p in pythia_events("qcd", n=3)]
    for ev in qcd:
        pt = ev.X[:, 1]  # track pT or tower ET
        assert pt.sum() > 60  # pTHat > 30 GeV: two hard jets
    pu = [simulate(p, rng) for p in pythia_events("ttbar", n=3, pileup=20)]
    nopu = [simulate(p, rng) for p in pythia_events("ttbar", n=3)]
    assert np.mean([len(e) for e in pu]) > np.mean([len(e) for e in nopu]) + 100


def test_helix_propagation():
    pt = np.array([100.0, 100.0, 0.3, 0.3, 5.0])
    eta = np.array([0.0, 0.0, 0.0, 3.0, 1.0])
    phi = np.full(5, 1.0)
    q = np.array([1.0, 0.0, 1.0, -1.0, -1.0])
    eta_o, phi_o, reaches = propagate(pt, eta, phi, q)
    assert phi_o[0] == pytest.approx(1.0 - np.arcsin(0.3 * 3.8 * 1.29 / 200))
    assert (phi_o[1], eta_o[1]) == (1.0, 0.0)
    assert reaches.tolist() == [True, True, False, True, True]  # 0.3 GeV curls up centrally
    assert phi_o[4] > 1.0  # negative charges turn the other way
    assert eta_o[4] > 1.0  # the helix is longer than its chord: a larger |eta| position


def test_tower_grid_round_trip():
    rng = np.random.default_rng(0)
    eta, phi = rng.uniform(-4.99, 4.99, 1000), rng.uniform(-np.pi, np.pi, 1000)
    cell = tower_index(eta, phi)
    c_eta, c_phi = cell_centre(cell)
    assert (np.abs(c_eta - eta) < 0.1).all()
    assert (np.abs(np.angle(np.exp(1j * (c_phi - phi)))) < 0.09).all()
    np.testing.assert_array_equal(tower_index(c_eta, c_phi), cell)
    assert tower_index(np.array([5.2]), np.array([0.0]))[0] == -1


def test_empty_and_invisible_events():
    rng = np.random.default_rng(0)
    ev = simulate(Particles.from_rows(np.zeros((0, 6))), rng)
    assert ev.X.shape == (0, 12) and ev.ygen.shape == (0, 7)
    nu = Particles.from_rows([[12, 0, 10.0, 0, 0, 10.0], [13, -1, 0, 0, 50, 50.0]])
    assert len(simulate(nu, rng)) == 0  # a neutrino and a muon along the beam leave nothing
