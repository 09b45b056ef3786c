"""The mapping of the study's schedule to a scale (mlpf/scales.py: the schedule rule)."""

from __future__ import annotations

import pytest

from experiments.space import decay_steps, problem_for
from mlpf.scales import SCALES, STUDY_DEFAULT, get_scale, schedule_factor
from mlpf.train import _lr_lambda, config_for_scale


def _run_steps(scale: str, batch: int) -> int:
    sc = get_scale(scale)
    return -(-sc.n_train // batch) * sc.max_epochs


def test_schedule_factor_is_steps_per_run_over_the_study():
    assert get_scale("paper").schedule_factor == 1.0
    assert get_scale("small").schedule_factor == pytest.approx(500 * 16 / (40_000 * 200))
    assert schedule_factor(40_000, 100) == 0.5


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_the_default_decays_over_a_run_as_much_as_in_the_study(scale):
    """The rule's promise: the learning rate at max_t is the study's at its max_t (0.99 **
    (400,000 / 10,000) = 0.669 for the default's 20 events per step)."""
    cfg = config_for_scale(scale)
    steps = _run_steps(scale, cfg.batch_size)
    end = _lr_lambda(cfg, steps)(steps)
    study = STUDY_DEFAULT["lr_decay_rate"] ** (40_000 // 20 * 200 / STUDY_DEFAULT["lr_decay_steps"])
    # the scale's run rounds its batches up (ceil(n_train / batch)): at most one batch per epoch
    assert end == pytest.approx(study, rel=0.02)
    assert study == pytest.approx(0.669, abs=1e-3)


def test_unmapped_the_default_would_not_decay_at_small():
    cfg = config_for_scale("small")
    assert cfg.lr_decay_steps == 10.0  # 10,000 study steps x 1/1,000
    unmapped = STUDY_DEFAULT["lr_decay_rate"] ** (_run_steps("small", 20) / 10_000)
    assert unmapped > 0.999


def test_space_decay_steps_are_the_papers_times_the_factor():
    assert decay_steps("paper")[:3] == [10.0, 20.0, 30.0] and decay_steps("paper")[-1] == 2000
    small = decay_steps("small")
    assert small[0] == pytest.approx(0.01) and small[-1] == pytest.approx(2.0)
    assert len(small) == 200
    hp = problem_for("small").space["lr_decay_steps"]
    assert list(hp.sequence) == small
