"""Hyperband bracket table, ASHA rungs, the Hyperband search's rung logic and its restore."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.schedulers import (
    HyperbandSearch,
    ModelSampler,
    asha_bracket,
    asha_rungs,
    hyperband_brackets,
)
from experiments.space import problem_for


def test_hyperband_table_equals_li_et_al_table_1():
    # Li et al. 2018 (JMLR), Table 1: R = 81, eta = 3; (n_i, r_i) per bracket s = 4 ... 0.
    assert hyperband_brackets(81, 3) == [
        [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
        [(34, 3), (11, 9), (3, 27), (1, 81)],
        [(15, 9), (5, 27), (1, 81)],
        [(8, 27), (2, 81)],
        [(5, 81)],
    ]


def test_hyperband_table_paper_and_smoke_settings():
    assert hyperband_brackets(9, 3) == [[(9, 1), (3, 3), (1, 9)], [(5, 3), (1, 9)], [(3, 9)]]
    # max_t 200, eta 4, smallest budget = grace 10: s_max = 2, budgets end at max_t
    table = hyperband_brackets(200, 4, 10)
    assert [b[-1][1] for b in table] == [200, 200, 200]
    assert table[0][0] == (16, 13)


def test_asha_rungs_are_grace_times_eta_powers():
    assert asha_rungs(200, 10, 4) == [10, 40, 160]
    assert asha_rungs(9, 1, 3) == [1, 3]
    assert asha_rungs(81, 1, 3, s=2) == [9, 27]


def test_asha_bracket_is_deterministic_and_spread():
    b = [asha_bracket(i, 3) for i in range(300)]
    assert b == [asha_bracket(i, 3) for i in range(300)]
    assert set(b) == {0, 1, 2} and min(np.bincount(b)) > 60
    assert asha_bracket(5, 1) == 0


def _loss(cfg):  # a deterministic objective: smaller lr is better
    return -cfg["lr"]


def _run_iteration(search, n_jobs):
    """Ask/tell one job at a time (a single worker); returns the jobs in order."""
    jobs = []
    for _ in range(n_jobs):
        (job,) = search.ask(1)
        jobs.append(job)
        search.tell([(job, _loss(job))])
    return jobs


def test_hyperband_search_runs_brackets_rung_by_rung(tmp_path):
    s = HyperbandSearch(problem_for("smoke"), max_t=9, eta=3, random_state=0, log_dir=tmp_path)
    n = sum(ni for b in hyperband_brackets(9, 3) for ni, _ in b)  # 9+3+1 + 5+1 + 3 = 22
    jobs = _run_iteration(s, n)
    got = [(j["hb_bracket"], j["hb_rung"], j["budget"]) for j in jobs]
    assert got == [(0, 0, 1)] * 9 + [(0, 1, 3)] * 3 + [(0, 2, 9)] + \
        [(1, 0, 3)] * 5 + [(1, 1, 9)] + [(2, 0, 9)] * 3
    # promotions keep the best objectives (smallest lr here)
    rung0 = sorted((j for j in jobs[:9]), key=lambda j: j["lr"])
    assert {j["hb_trial"] for j in jobs[9:12]} == {j["hb_trial"] for j in rung0[:3]}
    assert jobs[12]["lr"] == rung0[0]["lr"]
    assert s.ask(1)[0]["hb_bracket"] == 3  # the next iteration starts again at s_max


def test_hyperband_search_refills_workers_at_a_rung_barrier(tmp_path):
    s = HyperbandSearch(problem_for("smoke"), max_t=9, eta=3, random_state=0, log_dir=tmp_path)
    first = s.ask(9)  # all of rung 0 of bracket 0
    more = s.ask(2)  # rung 0 is running: the next bracket fills the free workers
    assert {j["hb_bracket"] for j in first} == {0}
    assert [(j["hb_bracket"], j["budget"]) for j in more] == [(1, 3), (1, 3)]


def test_hyperband_restore_continues_without_rerunning(tmp_path):
    p = problem_for("smoke")
    s = HyperbandSearch(p, max_t=9, eta=3, random_state=0, log_dir=tmp_path)
    asked = s.ask(9)
    finished = asked[:7]  # 7 of 9 rung-0 jobs finished, 2 were running when stopped
    s.tell([(j, _loss(j)) for j in finished])

    r = HyperbandSearch(p, max_t=9, eta=3, random_state=1, log_dir=tmp_path)
    r.restore([(j, _loss(j)) for j in finished])
    redo = r.ask(2)  # the two unfinished slots of rung 0, with new configurations
    assert [(j["hb_bracket"], j["hb_rung"]) for j in redo] == [(0, 0), (0, 0)]
    assert {j["hb_trial"] for j in redo}.isdisjoint({j["hb_trial"] for j in finished})
    r.tell([(j, _loss(j)) for j in redo])
    promoted = r.ask(3)
    assert [(j["hb_rung"], j["budget"]) for j in promoted] == [(1, 3)] * 3
    best = sorted(finished + redo, key=lambda j: j["lr"])[:3]
    assert {j["hb_trial"] for j in promoted} == {j["hb_trial"] for j in best}


def test_model_sampler_uses_its_model_after_enough_results(tmp_path):
    p = problem_for("smoke")
    m = ModelSampler(p, seed=0, log_dir=str(tmp_path), random_fraction=0.0)
    cfgs = m.ask(m.n_min - 1)
    for c in cfgs:
        m.observe(3, c, _loss(c))
    m.ask(4)
    assert m.n_model_asks == 0  # not enough results on any budget yet
    for c in m.ask(2):
        m.observe(3, c, _loss(c))
    out = m.ask(4)
    assert m.n_model_asks == 4 and len(out) == 4
    assert all(set(c) == set(p.hyperparameter_names) for c in out)


@pytest.mark.parametrize("scale", ["smoke", "small", "paper"])
def test_space_keys_are_train_config_fields(scale):
    from experiments.schedulers import RandomSampler
    from mlpf.train import TrainConfig, apply_overrides, config_for_scale

    p = problem_for(scale)
    fields = set(TrainConfig.__dataclass_fields__)
    assert set(p.hyperparameter_names) <= fields
    for cfg in RandomSampler(p, 0).ask(10):
        apply_overrides(config_for_scale(scale), cfg)  # raises on an unknown key or bad value


def test_hyperband_restore_never_reuses_a_trial_with_a_checkpoint(tmp_path):
    p = problem_for("smoke")
    ckpt = lambda t: str(tmp_path / "checkpoints" / f"trial{t}")  # noqa: E731
    s = HyperbandSearch(p, max_t=9, eta=3, random_state=0, log_dir=tmp_path,
                        checkpoint_dir=ckpt)
    asked = s.ask(9)
    for j in asked:  # every trial has started training and saved a state
        (tmp_path / "checkpoints" / f"trial{j['hb_trial']}").mkdir(parents=True)
    finished = asked[:5]
    r = HyperbandSearch(p, max_t=9, eta=3, random_state=1, log_dir=tmp_path,
                        checkpoint_dir=ckpt)
    r.restore([(j, _loss(j)) for j in finished])
    redo = r.ask(4)
    assert min(j["hb_trial"] for j in redo) > max(j["hb_trial"] for j in asked)
    left = {int(d.name[5:]) for d in (tmp_path / "checkpoints").iterdir()}
    assert left == {j["hb_trial"] for j in finished}  # stale states of unfinished ones gone


def test_dimensions_classify_every_hyperparameter_once():
    from experiments.space import CHOICE, FLOAT, GRID, INT_GRID, dimensions, problem_for

    problem = problem_for("small")
    dims = {d.name: d for d in dimensions(problem)}
    assert list(dims) == problem.hyperparameter_names
    assert (dims["lr"].kind, dims["lr"].log) == (FLOAT, True)
    assert (dims["batch_size"].kind, dims["batch_size"].step) == (INT_GRID, 16)
    assert dims["batch_size"].values == tuple(range(16, 129, 16))
    assert dims["bin_size"].kind == GRID  # 3, 6, 10, 13, 16: no constant step
    assert (dims["layernorm"].kind, dims["layernorm"].values) == (CHOICE, (False, True))
