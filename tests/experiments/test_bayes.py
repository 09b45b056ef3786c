"""The study's Bayesian optimisers (experiments/bayes.py): valid proposals, learning, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.bayes import GPProposer, ModelSearch, TPEProposer
from experiments.methods import get_method, method_metadata, settings_for
from experiments.space import dimensions, problem_for


def _valid(problem, cfg) -> bool:
    for d in dimensions(problem):
        v = cfg[d.name]
        if d.kind in ("float", "int"):
            if not d.lower <= v <= d.upper:
                return False
        elif v not in d.values:
            return False
    return set(cfg) == set(problem.hyperparameter_names)


def _loss(cfg) -> float:
    """A smooth function of the space: best at lr 3e-3 and 3 node messages."""
    return abs(math.log(cfg["lr"] / 3e-3)) + 0.3 * abs(cfg["num_node_messages"] - 3)


@pytest.mark.parametrize("proposer", [GPProposer, TPEProposer])
def test_proposals_are_configurations_of_the_space(proposer):
    problem = problem_for("small")
    s = ModelSearch(problem, proposer, random_state=0, log_dir=".", n_initial_points=3)
    for _ in range(6):
        cfgs = s._ask(2)
        assert len(cfgs) == 2 and all(_valid(problem, c) for c in cfgs)
        s._tell([(c, -_loss(c)) for c in cfgs])


@pytest.mark.parametrize("proposer,n", [(TPEProposer, 60), (GPProposer, 22)])
def test_the_model_proposes_better_than_its_random_start(proposer, n):
    problem = problem_for("smoke")
    s = ModelSearch(problem, proposer, random_state=1, log_dir=".", n_initial_points=8)
    losses = []
    for _ in range(n):
        c = s._ask(1)[0]
        losses.append(_loss(c))
        s._tell([(c, -losses[-1])])
    assert np.median(losses[-8:]) < np.median(losses[:8])


@pytest.mark.parametrize("proposer", [GPProposer, TPEProposer])
def test_restore_takes_logged_results_and_failures(proposer):
    problem = problem_for("smoke")
    logged = ModelSearch(problem, proposer, random_state=2, log_dir=".")._ask(4)
    s = ModelSearch(problem, proposer, random_state=3, log_dir=".")
    s.restore([("F_diverged" if i == 0 else -_loss(c), c)[::-1] for i, c in enumerate(logged)])
    # the failure came first: nothing to count it as yet, so it is left out; the rest count
    assert s.worst == max(_loss(c) for c in logged[1:])
    s.restore([(logged[0], "F_oom")])  # now it counts as the worst seen
    assert all(_valid(problem, c) for c in s._ask(2))


def test_methods_record_their_model():
    s = settings_for("small")
    gp, tpe = method_metadata("asha_gp", s), method_metadata("asha_tpe", s)
    assert gp["stopper"] == "ASHA" and gp["skopt"]["base_estimator"] == "GP"
    assert tpe["hyperopt"]["algorithm"] == "hyperopt.tpe.suggest"
    assert gp["n_initial_points"] == tpe["n_initial_points"] == s.n_initial_points
    assert get_method("asha_gp").stopper == get_method("asha_tpe").stopper == "asha"


def test_gp_regressor_predicts_what_skopt_predicts_and_shares_one_prediction_per_decision():
    from skopt.learning import GaussianProcessRegressor
    from skopt.learning.gaussian_process.kernels import ConstantKernel, Matern

    from experiments.bayes import gp_regressor_class

    rng = np.random.default_rng(0)
    X, y = rng.random((40, 5)), rng.random(40)
    params = dict(kernel=ConstantKernel(1.0) * Matern(length_scale=np.ones(5), nu=2.5),
                  normalize_y=True, noise="gaussian", n_restarts_optimizer=0, random_state=1)
    ref = GaussianProcessRegressor(**params).fit(X, y)
    ours = gp_regressor_class()(**params).fit(X, y)
    Q = rng.random((300, 5))
    m0, s0 = ref.predict(Q, return_std=True)
    m1, s1 = ours.predict(Q, return_std=True)
    np.testing.assert_allclose(m1, m0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s1, s0, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.predict(Q), ref.predict(Q), rtol=1e-12)  # mean only: skopt's
    m1[:] = 0  # a caller's change of a returned array does not reach the kept prediction
    again = ours.predict(Q, return_std=True)
    np.testing.assert_allclose(again[0], m0, rtol=1e-12)
    ours.fit(X, y[::-1].copy())  # refitted: the same array is predicted anew
    np.testing.assert_allclose(ours.predict(Q, return_std=True)[0],
                               ref.fit(X, y[::-1].copy()).predict(Q), rtol=1e-9)
