"""The study's own Bayesian optimisers as DeepHyper searches: scikit-optimize's GP and
HyperOpt's TPE, each composable with our ASHA stopper (methods ``asha_gp``, ``asha_tpe``).

The study (arXiv:2203.01112) ran Ray Tune's ``SkOptSearch`` (a ``skopt.Optimizer`` with a
Gaussian process, as ``gp_minimize`` builds it) and ``HyperOptSearch`` (TPE) with 10 random
initial points, under ASHA. :class:`ModelSearch` is a DeepHyper search whose proposals come from
a :class:`Proposer` (ask for configurations, tell their results); the stopper, the budget, the
logs and the workers are those of every other method, so only the model differs from
``asha_bo`` (DeepHyper CBO with extra trees).

As in Ray Tune's searchers, a trial's result is its last reported objective: the val_loss at the
epoch where it stopped (an ASHA-stopped trial at its rung, the others at max_t). A failed trial
is told as the worst loss seen so far (as our CBO does), or left out before any success.

The space (:func:`experiments.space.dimensions`): floats as floats (log scale where the space
says so); integer grids and other ordered grids as the index into their values (an integer
range, so the model keeps their order); flags and names as categoricals.

    >>> from experiments.space import problem_for
    >>> s = ModelSearch(problem_for("smoke"), GPProposer, random_state=0, log_dir="/tmp")
    >>> len(s.ask(2))
    2
"""

from __future__ import annotations

import math
import warnings
from functools import cache
from numbers import Number
from typing import Protocol

import numpy as np
from deephyper.hpo import Search

from experiments import logs
from experiments.space import CHOICE, FLOAT, INT, dimensions

N_INITIAL_POINTS = 10  # random configurations before the model proposes (the study's)
GP_ACQ_POINTS = 2_000  # points the GP's acquisition is evaluated on (as CBO_KWARGS)
GP_SETTINGS = dict(base_estimator="GP", acq_func="gp_hedge", acq_optimizer="sampling",
                   acq_optimizer_kwargs={"n_points": GP_ACQ_POINTS})
GP_FIT = "kernel hyperparameters: one L-BFGS run warm-started from the previous fit"
TPE_SETTINGS = dict(algorithm="hyperopt.tpe.suggest", gamma=0.25, n_EI_candidates=24)


class Proposer(Protocol):
    """What proposes configurations of a problem from the results told so far."""

    def ask(self, n: int) -> list[dict]: ...

    def tell(self, config: dict, loss: float) -> None: ...


def _index_of(values: tuple, v) -> int:
    """Position of ``v`` in ``values`` (nearest for numbers; KeyError for an unknown name)."""
    if v in values:
        return values.index(v)
    if isinstance(v, Number) and all(isinstance(x, Number) for x in values):
        return int(np.argmin([abs(float(x) - float(v)) for x in values]))
    raise KeyError(f"{v!r} is not one of {values}")


# ----------------------------------------------------------------------------- GP (skopt)
class GPProposer:
    """scikit-optimize's ``Optimizer`` with a Gaussian process, as ``gp_minimize`` sets it
    (``base_estimator="GP"``, ``acq_func="gp_hedge"``), ``n_initial_points`` random points,
    the acquisition optimised over :data:`GP_ACQ_POINTS` sampled points (skopt samples 10,000
    when a space has categoricals: 3.5 s per decision at 25 results on this machine, 1.1 s with
    2,000, the number our CBO uses). The kernel's hyperparameters (a Matern 5/2 with one length
    scale per dimension) are fitted by one L-BFGS run started from the previous fit's, where
    skopt restarts 2 more times from random points at every result: the same model, but 0.7 s
    instead of 13 s per decision at 120 results (13 s would make a 200-seed replay cost days).
    Its predictions come from :func:`gp_regressor_class` (the same numbers, faster). Several
    proposals at once use the constant liar (``cl_min``)."""

    def __init__(self, problem, seed: int, n_initial_points: int = N_INITIAL_POINTS):
        from skopt import Optimizer
        from skopt.space import Categorical, Integer, Real

        self.dims = dimensions(problem)
        space = []
        for d in self.dims:
            if d.kind == FLOAT:
                space.append(Real(d.lower, d.upper, prior="log-uniform" if d.log else "uniform",
                                  name=d.name))
            elif d.kind == INT:
                space.append(Integer(d.lower, d.upper, prior="log-uniform" if d.log
                                     else "uniform", name=d.name))
            elif d.kind == CHOICE:
                space.append(Categorical(list(range(len(d.values))), name=d.name,
                                         transform="onehot"))
            else:  # ordered grids: their index
                space.append(Integer(0, len(d.values) - 1, name=d.name))
        self.opt = Optimizer(space, n_initial_points=n_initial_points, random_state=int(seed),
                             **GP_SETTINGS)
        # the same regressor (kernel, noise, random state as skopt cooked it), faster predictions
        cooked = self.opt.base_estimator_.get_params(deep=False)
        self.opt.base_estimator_ = gp_regressor_class()(**cooked)
        self.rng = np.random.default_rng(seed)

    def _to_config(self, x) -> dict:
        out = {}
        for d, v in zip(self.dims, x):
            out[d.name] = logs.native(v) if d.kind in (FLOAT, INT) else d.values[int(v)]
        return out

    def _to_point(self, config: dict) -> list:
        return [config[d.name] if d.kind in (FLOAT, INT) else _index_of(d.values, config[d.name])
                for d in self.dims]

    def ask(self, n: int) -> list[dict]:
        if n <= 0:
            return []
        xs = self.opt.ask(n_points=n, strategy="cl_min") if n > 1 else [self.opt.ask()]
        return [self._to_config(x) for x in xs]

    def tell(self, config: dict, loss: float) -> None:
        self.opt.tell(self._to_point(config), float(loss))
        if self.opt.models:  # warm start of the next fit (see the class docstring)
            self.opt.base_estimator_.set_params(kernel=self.opt.models[-1].kernel_,
                                                n_restarts_optimizer=0)


@cache
def gp_regressor_class():
    """scikit-optimize's ``GaussianProcessRegressor`` with the predictive standard deviation
    computed by matrix products, and one prediction shared by the acquisitions of a decision.

    skopt computes the variance ``k(x, x) - k_x^T K^-1 k_x`` of m points with
    ``einsum("ki,kj,ij->k")``, a triple loop without BLAS: 9 of the 21 s of one ``asha_gp``
    replay (157 results). ``rowsum((K_x K^-1) * K_x)`` is the same sum in another order (equal
    to rounding, about 1e-16 relative). ``gp_hedge`` then evaluates its three acquisitions (EI,
    LCB, PI) on the same sampled points with the same model: the last prediction is kept and
    returned again for the same array (the very object, held here so it cannot be another one)
    until the model is refitted."""
    from skopt.learning import GaussianProcessRegressor

    class GPRegressor(GaussianProcessRegressor):
        def fit(self, X, y):
            self._last = None
            return super().fit(X, y)

        def predict(self, X, return_std=False, return_cov=False, return_mean_grad=False,
                    return_std_grad=False):
            if not return_std or return_cov or return_mean_grad or return_std_grad \
                    or not hasattr(self, "X_train_"):
                return super().predict(X, return_std=return_std, return_cov=return_cov,
                                       return_mean_grad=return_mean_grad,
                                       return_std_grad=return_std_grad)
            last = getattr(self, "_last", None)
            if last is not None and last[0] is X:
                return last[1].copy(), last[2].copy()
            Xc = np.asarray(X, dtype=float)
            k = self.kernel_(Xc, self.X_train_)
            mean = self.y_train_std_ * k.dot(self.alpha_) + self.y_train_mean_
            var = self.kernel_.diag(Xc) - np.einsum("ij,ij->i", k @ self.K_inv_, k)
            if np.any(var < 0):
                warnings.warn("Predicted variances smaller than 0. Setting those variances "
                              "to 0.", stacklevel=2)
                var[var < 0] = 0.0
            std = np.sqrt(var * self.y_train_std_ ** 2)
            self._last = (X, mean, std)
            return mean.copy(), std.copy()

    return GPRegressor


# ----------------------------------------------------------------------------- TPE (hyperopt)
class TPEProposer:
    """HyperOpt's TPE (``tpe.suggest``, ``n_startup_jobs`` random points) driven ask/tell, as
    Ray Tune's ``HyperOptSearch`` drives it: a trial document per proposal, completed with its
    loss when the result comes back."""

    def __init__(self, problem, seed: int, n_initial_points: int = N_INITIAL_POINTS):
        import hyperopt as hpo

        self.hpo = hpo
        self.dims = dimensions(problem)
        space = {}
        for d in self.dims:
            if d.kind == FLOAT:
                space[d.name] = hpo.hp.loguniform(d.name, math.log(d.lower), math.log(d.upper)) \
                    if d.log else hpo.hp.uniform(d.name, d.lower, d.upper)
            elif d.kind == CHOICE:
                space[d.name] = hpo.hp.choice(d.name, list(range(len(d.values))))
            elif d.kind == INT:
                space[d.name] = hpo.hp.quniform(d.name, d.lower - 0.5, d.upper + 0.5, 1)
            else:  # ordered grids: their index, as an ordered (quantised) number
                space[d.name] = hpo.hp.quniform(d.name, -0.5, len(d.values) - 0.5, 1)
        self.domain = hpo.Domain(lambda spc: spc, space)
        self.trials = hpo.Trials()
        self.rng = np.random.default_rng(seed)
        self.n_initial_points = int(n_initial_points)
        self.pending: dict[tuple, list[int]] = {}  # config key -> tids waiting for a result

    @staticmethod
    def _key(config: dict) -> tuple:
        return tuple(sorted((k, repr(v)) for k, v in config.items()))

    def _to_config(self, vals: dict) -> dict:
        out = {}
        for d in self.dims:
            v = vals[d.name][0]
            if d.kind == FLOAT:
                out[d.name] = float(v)
            elif d.kind == INT:
                out[d.name] = int(min(max(round(v), d.lower), d.upper))
            else:  # CHOICE: an index; grids: a quantised index
                out[d.name] = d.values[int(min(max(round(v), 0), len(d.values) - 1))]
        return out

    def _to_vals(self, config: dict) -> dict:
        vals = {}
        for d in self.dims:
            v = config[d.name]
            vals[d.name] = float(v) if d.kind in (FLOAT, INT) else \
                float(_index_of(d.values, v)) if d.kind != CHOICE else _index_of(d.values, v)
        return vals

    def ask(self, n: int) -> list[dict]:
        from functools import partial

        from hyperopt import tpe

        suggest = partial(tpe.suggest, n_startup_jobs=self.n_initial_points)
        out = []
        for _ in range(max(0, n)):
            tid = self.trials.new_trial_ids(1)
            self.trials.refresh()
            docs = suggest(tid, self.domain, self.trials, int(self.rng.integers(2**31 - 1)))
            self.trials.insert_trial_docs(docs)
            self.trials.refresh()
            cfg = self._to_config(docs[0]["misc"]["vals"])
            self.pending.setdefault(self._key(cfg), []).append(docs[0]["tid"])
            out.append(cfg)
        return out

    def tell(self, config: dict, loss: float) -> None:
        hpo = self.hpo
        tids = self.pending.get(self._key(config))
        if tids:
            tid = tids.pop(0)
            doc = next(t for t in self.trials._dynamic_trials if t["tid"] == tid)
        else:  # a result this proposer did not ask for (a resumed search): add its document
            tid = self.trials.new_trial_ids(1)[0]
            vals = self._to_vals(config)
            misc = {"tid": tid, "cmd": self.domain.cmd, "workdir": None,
                    "idxs": {k: [tid] for k in vals}, "vals": {k: [v] for k, v in vals.items()}}
            doc = self.trials.new_trial_docs([tid], [None], [{"status": "new"}], [misc])[0]
            self.trials.insert_trial_docs([doc])
            self.trials.refresh()
            doc = next(t for t in self.trials._dynamic_trials if t["tid"] == tid)
        doc["state"] = hpo.JOB_STATE_DONE
        doc["result"] = {"loss": float(loss), "status": hpo.STATUS_OK}
        doc["refresh_time"] = hpo.utils.coarse_utcnow()
        self.trials.refresh()


PROPOSERS = {"skopt_gp": GPProposer, "hyperopt_tpe": TPEProposer}


# ----------------------------------------------------------------------------- the search
class ModelSearch(Search):
    """A DeepHyper search whose configurations come from a :class:`Proposer` factory
    (``proposer(problem, seed, n_initial_points)``): the GP or the TPE of the study."""

    def __init__(self, problem, proposer, random_state=None, log_dir: str = ".",
                 n_initial_points: int = N_INITIAL_POINTS, checkpoint_history_to_csv: bool = True,
                 stopper=None):
        super().__init__(problem, random_state, log_dir, stopper=stopper,
                         checkpoint_history_to_csv=checkpoint_history_to_csv)
        self.n_initial_points = int(n_initial_points)
        seed = self._random_state.randint(0, 2**31 - 1)
        self.names = problem.hyperparameter_names
        self.proposer = proposer(problem, seed, n_initial_points)
        self.worst = -math.inf  # the worst loss told so far: what a failed trial counts as

    def _ask(self, n: int = 1) -> list[dict]:
        return self.proposer.ask(n)

    def _tell(self, results) -> None:
        for cfg, obj in results:
            hp = {k: logs.native(cfg[k]) for k in self.names}
            if isinstance(obj, Number) and math.isfinite(obj):
                loss = -float(obj)  # DeepHyper maximises -val_loss
                self.worst = max(self.worst, loss)
            elif math.isfinite(self.worst):
                loss = self.worst  # a failure
            else:
                continue
            self.proposer.tell(hp, loss)

    def restore(self, results) -> None:
        """Tell the logged ``(config, objective)`` pairs of a resumed search."""
        self._tell(results)
