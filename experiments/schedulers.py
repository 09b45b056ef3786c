"""Early stopping and multi-fidelity scheduling on top of DeepHyper 0.13 searches.

- :class:`ASHAStopper`: asynchronous successive halving (Li et al. 2020, arXiv 1810.05934) with
  rungs at ``grace * eta**(s + k)`` epochs like Ray Tune's ASHA; with ``brackets > 1`` it is
  asynchronous Hyperband: each job is put in bracket ``s = crc32(job number) % brackets`` (its
  minimum early-stopping rate) and competes only with jobs of its bracket.
- :func:`hyperband_brackets`: the bracket table of Hyperband (Li et al. 2018, JMLR, Alg. 1).
- :class:`HyperbandSearch`: synchronous Hyperband as a DeepHyper ``Search`` that hands out
  ``(config, budget)`` jobs rung by rung and opens the next bracket whenever the open ones wait
  at a rung barrier, so no worker idles. A promoted configuration **continues from its
  checkpoint** (like Ray Tune's HyperBandScheduler pausing and resuming trials): rung ``i``
  costs ``n_i * (r_i - r_{i-1})`` epochs, each epoch is trained and logged once. Checkpoints of
  configurations that are not promoted are deleted as soon as their rung is complete.
- :class:`ModelSampler`: BOHB-style proposals (Falkner et al. 2018): a surrogate fitted on the
  largest budget with enough results, a fraction of configurations drawn at random.
"""

from __future__ import annotations

import math
import shutil
import zlib
from collections import deque
from numbers import Number
from pathlib import Path

import numpy as np
from deephyper.hpo import CBO

from experiments import logs
from experiments.dhcompat import Search, Stopper, SuccessiveHalvingStopper

# Keys a scheduled job carries next to the hyperparameters (p:<key> in results.csv), from the
# log schema: the epochs to train it for, Hyperband's bracket number, rung index, trial number.
from experiments.logs import BUDGET_KEY, HB_BRACKET, HB_RUNG, HB_TRIAL, SCHEDULE_KEYS


def asha_bracket(job_number: int, brackets: int) -> int:
    """Bracket (minimum early-stopping rate) of a job: a hash of its number, not its order."""
    return 0 if brackets <= 1 else zlib.crc32(str(int(job_number)).encode()) % brackets


def asha_rungs(max_t: int, grace: int, eta: int, s: int = 0) -> list[int]:
    """Rung budgets ``grace * eta**(s+k)`` below ``max_t`` (epochs where a job may be stopped)."""
    out, k = [], 0
    while grace * eta ** (s + k) < max_t:
        out.append(grace * eta ** (s + k))
        k += 1
    return out


ASHA_RULES = ("ray", "deephyper")


def ray_continues(value: float, earlier: list[float], eta: int) -> bool:
    """Ray Tune's ``AsyncHyperBandScheduler`` cutoff (the paper's ASHA): a trial reaching a
    rung continues unless its value (larger is better) is below the ``(1 - 1/eta)`` quantile
    (numpy's linear interpolation) of the values recorded at that rung before it; the first
    trial at a rung always continues."""
    if not earlier:
        return True
    return not value < float(np.nanpercentile(earlier, (1 - 1 / eta) * 100))


class ASHAStopper(SuccessiveHalvingStopper):
    """ASHA with Ray Tune's rung schedule; ``brackets > 1`` gives asynchronous Hyperband.

    At rung ``k`` (after ``grace * eta**(s+k)`` epochs) a job continues only if its objective
    passes the rule's cutoff among the jobs of its bracket that reached that rung so far (the
    first ones to arrive always continue: ASHA never waits). ``rule``: ``"ray"``
    (:func:`ray_continues`, the paper's scheduler) or ``"deephyper"``
    (:func:`deephyper_continues`, one survivor per rung stricter). Rung values live in the
    evaluator's storage, shared by every worker process or MPI rank.
    """

    def __init__(self, max_steps: int, grace: int = 1, eta: int = 3, brackets: int = 1,
                 rule: str = "ray"):
        super().__init__(max_steps=max_steps, min_steps=grace, reduction_factor=eta)
        if rule not in ASHA_RULES:
            raise ValueError(f"unknown ASHA rule {rule!r}; choose one of {ASHA_RULES}")
        self.grace, self.eta, self.brackets, self.rule = int(grace), int(eta), int(brackets), rule

    def stop(self) -> bool:
        if self.rule == "deephyper":
            return super().stop()
        if Stopper.stop(self):  # max_t reached
            return True
        if self._budget < self._compute_halting_budget():
            return False
        values = self._get_competiting_objectives()  # this job's value is among them once
        values.remove(self._objective)
        if ray_continues(self._objective, values, self.eta):
            self._rung += 1
            return False
        return True

    def to_json(self):
        return {"type": type(self).__name__, "max_t": self.max_steps, "grace": self.grace,
                "eta": self.eta, "brackets": self.brackets, "rule": self.rule}

    @property
    def bracket(self) -> int:
        return asha_bracket(logs.job_number(self.job.id), self.brackets)

    @staticmethod
    def rung_key(bracket: int, rung: int) -> str:
        return f"_completed_rung_b{bracket}_{rung}"

    def _compute_halting_budget(self):
        return self.grace * self.eta ** (self.bracket + self._rung)

    def _get_competiting_objectives(self) -> list:
        search_id = logs.job_search(self.job.id)
        values = self.job.storage.load_metadata_from_all_jobs(
            search_id, self.rung_key(self.bracket, self._rung))
        return [v for v in values if isinstance(v, Number)]

    def observe(self, budget: float, objective: float):
        Stopper.observe(self, budget, objective)
        self._budget, self._objective = budget, objective
        if budget >= self._compute_halting_budget():
            self.job.storage.store_job_metadata(
                self.job.id, self.rung_key(self.bracket, self._rung), objective)
            self._list_completed_rung.append(self._rung)

    def restore(self, storage, job_id: str, curve: dict[int, float]) -> None:
        """Store the rung values of a logged job (``curve``: epoch -> objective) on resume."""
        s = asha_bracket(logs.job_number(job_id), self.brackets)
        for k, r in enumerate(asha_rungs(self.max_steps, self.grace, self.eta, s)):
            if r in curve and np.isfinite(curve[r]):
                storage.store_job_metadata(job_id, self.rung_key(s, k), float(curve[r]))
        if self.max_steps in curve:
            storage.store_job_metadata(job_id, "_completed", True)


def hyperband_brackets(max_t: int, eta: int, min_t: int = 1) -> list[list[tuple[int, int]]]:
    """Hyperband's brackets, most exploratory first: ``[[(n_0, r_0), (n_1, r_1), ...], ...]``.

    ``s_max = floor(log_eta(max_t / min_t))``; bracket ``s`` starts ``n = ceil((s_max+1)/(s+1) *
    eta**s)`` configurations with ``r = max_t * eta**-s`` epochs and keeps ``floor(n / eta**i)``
    of them for ``r * eta**i`` epochs at rung ``i`` (Li et al. 2018, Algorithm 1 and Table 1).
    """
    s_max = int(math.floor(math.log(max_t / min_t) / math.log(eta) + 1e-9))
    table = []
    for s in range(s_max, -1, -1):
        n = int(math.ceil((s_max + 1) / (s + 1) * eta**s - 1e-9))
        r = max_t / eta**s
        table.append([(n // eta**i, max(1, int(math.floor(r * eta**i + 0.5))))
                      for i in range(s + 1)])
    return table


def i_epoch_bracket(i: int, max_t: int, n: int) -> list[list[tuple[int, int]]]:
    """The i-Epoch baseline (Egele et al. 2024, arXiv:2404.04111) as one bracket to cycle
    through: ``n`` new configurations trained ``i`` epochs, the best of them continued to
    ``max_t`` (its checkpoint resumed), round after round until the budget is spent."""
    if not 1 <= i < max_t or n < 2:
        raise ValueError(f"i-Epoch needs 1 <= i < max_t ({max_t}) and n >= 2, got i={i}, n={n}")
    return [[(n, i), (1, max_t)]]


class RandomSampler:
    """Configurations drawn uniformly from the problem (seeded)."""

    def __init__(self, problem, seed: int):
        self.space = problem.space
        self.space.seed(int(seed))
        self.names = problem.hyperparameter_names

    def ask(self, n: int) -> list[dict]:
        if n <= 0:
            return []
        samples = self.space.sample_configuration(size=n)
        samples = samples if isinstance(samples, list) else [samples]
        return [{k: logs.native(dict(c)[k]) for k in self.names} for c in samples]

    def observe(self, budget: int, config: dict, objective) -> None:
        pass


class ModelSampler(RandomSampler):
    """BOHB-style sampler: a surrogate fitted on the largest budget with ``n_min`` results.

    Falkner et al. (2018) fit TPE on the largest budget with at least ``d + 1`` observations and
    draw a fraction ``random_fraction`` of configurations at random; here the surrogate is
    DeepHyper's CBO (extra trees, UCB, sampled acquisition optimiser).
    """

    def __init__(self, problem, seed: int, log_dir: str, n_min: int | None = None,
                 random_fraction: float = 1 / 3):
        super().__init__(problem, seed)
        self.problem, self.log_dir = problem, log_dir
        self.n_min = n_min or len(self.names) + 1
        self.random_fraction = random_fraction
        self.rng = np.random.default_rng(seed)
        self.seed = int(seed)
        self.obs: dict[int, list[tuple[dict, float]]] = {}
        self.n_model_asks = 0  # configurations proposed by the model (tests read this)

    def observe(self, budget, config, objective):
        if isinstance(objective, Number) and np.isfinite(objective):
            self.obs.setdefault(int(budget), []).append((config, float(objective)))

    def ask(self, n):
        ready = [b for b, rows in self.obs.items() if len(rows) >= self.n_min]
        if n <= 0 or not ready:
            return super().ask(n)
        rows = self.obs[max(ready)]
        model = CBO(self.problem, random_state=self.seed + len(rows), log_dir=self.log_dir,
                    checkpoint_history_to_csv=False, surrogate_model="ET", acq_func="UCB",
                    acq_optimizer="sampling", acq_optimizer_kwargs={"n_points": 2000},
                    multi_point_strategy="qUCB", n_initial_points=self.n_min)
        model.tell([(c, y) for c, y in rows])
        n_model = int(np.sum(self.rng.random(n) >= self.random_fraction))
        out = [{k: logs.native(c[k]) for k in self.names} for c in model.ask(n_model)] \
            if n_model else []
        self.n_model_asks += len(out)
        return out + super().ask(n - len(out))


class _Bracket:
    """One Hyperband bracket: rungs ``[(n_i, r_i)]``, results per rung, a queue of jobs."""

    def __init__(self, index: int, rungs: list[tuple[int, int]], on_drop=None):
        self.index, self.rungs = index, rungs
        self.on_drop = on_drop or (lambda trial: None)  # a trial will not be trained again
        self.configs: dict[int, dict] = {}  # trial -> hyperparameters
        self.results: list[dict[int, object]] = [{} for _ in rungs]  # rung -> trial -> obj
        self.expected = [rungs[0][0]] + [None] * (len(rungs) - 1)  # jobs awaited per rung
        self.queue: deque[tuple[int, int]] = deque()  # (trial, rung) to hand out
        self.issued: list[set[int]] = [set() for _ in rungs]

    def complete(self, i: int) -> bool:
        return self.expected[i] is not None and len(self.results[i]) >= self.expected[i]

    def promote(self, i: int) -> None:
        """Rung ``i`` is complete: queue the best ``n_{i+1}`` successful trials for rung i+1."""
        if i + 1 >= len(self.rungs):
            for t in self.results[i]:
                self.on_drop(t)
            return
        if self.expected[i + 1] is not None:
            return
        ok = [(t, y) for t, y in self.results[i].items()
              if isinstance(y, Number) and np.isfinite(y)]
        ok.sort(key=lambda ty: (-ty[1], ty[0]))  # maximise the objective (= -val_loss)
        top = [t for t, _ in ok[: self.rungs[i + 1][0]]]
        for t in set(self.results[i]) - set(top):
            self.on_drop(t)
        self.expected[i + 1] = len(top)
        for t in top:
            if t not in self.results[i + 1] and t not in self.issued[i + 1]:
                self.queue.append((t, i + 1))
        if self.complete(i + 1):  # nothing promoted, or all already done (restore)
            self.promote(i + 1)

    def record(self, trial: int, rung: int, objective) -> None:
        self.results[rung][trial] = objective
        if self.complete(rung):
            self.promote(rung)


class HyperbandSearch(Search):
    """Synchronous Hyperband (Li et al. 2018) that keeps every worker busy.

    ``ask(n)`` returns ``n`` jobs: queued jobs of the oldest open bracket first; when every open
    bracket waits at a rung barrier, the next bracket of the table is opened (brackets cycle
    through the table, Hyperband iterations repeat until the driver's budget is spent). Each job
    carries ``budget`` (epochs), ``hb_bracket``, ``hb_rung`` and ``hb_trial``; the worker keeps
    the training state of trial ``t`` in ``checkpoint_dir(t)`` (when given) so that a promotion
    continues it.
    """

    def __init__(self, problem, max_t: int, eta: int, min_t: int = 1, random_state=None,
                 log_dir: str = ".", sampler: str = "random", checkpoint_dir=None,
                 random_fraction: float = 1 / 3, checkpoint_history_to_csv: bool = True,
                 table: list[list[tuple[int, int]]] | None = None):
        super().__init__(problem, random_state, log_dir,
                         checkpoint_history_to_csv=checkpoint_history_to_csv)
        self.checkpoint_dir = checkpoint_dir  # trial -> folder, removed once a trial is dropped
        self.max_t, self.eta, self.min_t = max_t, eta, min_t
        # brackets to cycle through: Hyperband's, or another table (the i-Epoch baselines)
        self.table = table or hyperband_brackets(max_t, eta, min_t)
        seed = self._random_state.randint(0, 2**31 - 1)
        self.sampler = (ModelSampler(self._problem, seed, self._log_dir,
                                     random_fraction=random_fraction) if sampler == "model"
                        else RandomSampler(self._problem, seed))
        self.brackets: list[_Bracket] = []
        self.n_trials = 0

    def _drop(self, trial: int) -> None:
        if self.checkpoint_dir is not None:
            shutil.rmtree(self.checkpoint_dir(trial), ignore_errors=True)

    def _new_bracket(self, index: int) -> _Bracket:
        b = _Bracket(index, self.table[index % len(self.table)], self._drop)
        while len(self.brackets) <= index:
            self.brackets.append(None)
        self.brackets[index] = b
        return b

    def _fill_rung0(self, b: _Bracket) -> None:
        missing = b.rungs[0][0] - len(b.results[0]) - len(b.issued[0])
        for cfg in self.sampler.ask(missing):
            b.configs[self.n_trials] = cfg
            b.queue.append((self.n_trials, 0))
            self.n_trials += 1

    def _ask(self, n: int = 1) -> list[dict]:
        out = []
        while len(out) < n:
            b = next((b for b in self.brackets if b is not None and b.queue), None)
            if b is None:
                b = self._new_bracket(len(self.brackets))
                self._fill_rung0(b)
                continue
            trial, rung = b.queue.popleft()
            b.issued[rung].add(trial)
            out.append({**b.configs[trial], BUDGET_KEY: b.rungs[rung][1],
                        HB_BRACKET: b.index, HB_RUNG: rung, HB_TRIAL: trial})
        return out

    def _tell(self, results) -> None:
        for cfg, obj in results:
            b = self.brackets[int(cfg[HB_BRACKET])]
            hp = {k: v for k, v in cfg.items() if k not in SCHEDULE_KEYS}
            self.sampler.observe(int(cfg[BUDGET_KEY]), hp, obj)
            b.record(int(cfg[HB_TRIAL]), int(cfg[HB_RUNG]), obj)

    def restore(self, results) -> None:
        """Rebuild brackets and rungs from logged ``(config, objective)`` pairs of finished jobs.

        Jobs that were running when the search stopped are queued again (new job ids); missing
        configurations of a first rung are drawn anew.
        """
        for cfg, obj in results:
            i = int(cfg[HB_BRACKET])
            b = self.brackets[i] if i < len(self.brackets) and self.brackets[i] else \
                self._new_bracket(i)
            t, r = int(cfg[HB_TRIAL]), int(cfg[HB_RUNG])
            b.configs[t] = {k: v for k, v in cfg.items() if k not in SCHEDULE_KEYS}
            b.results[r][t] = obj
            self.sampler.observe(int(cfg[BUDGET_KEY]), b.configs[t], obj)
            self.n_trials = max(self.n_trials, t + 1)
        if self.checkpoint_dir is not None:
            # Trials that were running in a first rung are replaced by new configurations:
            # their numbers are not reused and their training states are deleted.
            known = {t for b in self.brackets if b for t in b.configs}
            for d in Path(self.checkpoint_dir(0)).parent.glob("trial*"):
                t = int(d.name[len("trial"):])
                self.n_trials = max(self.n_trials, t + 1)
                if t not in known:
                    shutil.rmtree(d, ignore_errors=True)
        for i, b in enumerate(self.brackets):
            b = b or self._new_bracket(i)
            self._fill_rung0(b)
            for r in range(len(b.rungs)):
                if b.complete(r):
                    b.promote(r)


class FixedSearch(Search):
    """Evaluates a fixed list of configurations once each (the untuned default)."""

    def __init__(self, problem, configs: list[dict], random_state=None, log_dir: str = ".",
                 checkpoint_history_to_csv: bool = True):
        super().__init__(problem, random_state, log_dir,
                         checkpoint_history_to_csv=checkpoint_history_to_csv)
        self.pending = deque(dict(c) for c in configs)

    def _ask(self, n: int = 1) -> list[dict]:
        return [self.pending.popleft() for _ in range(min(n, len(self.pending)))]

    def _tell(self, results) -> None:
        pass

    def restore(self, results) -> None:
        for _ in results:  # finished ones are not run again
            if self.pending:
                self.pending.popleft()
