"""The mapping of the study's schedule to a scale (mlpf/scales.py: the schedule rule)."""

from __future__ import annotations

import math

import pytest

from experiments.space import problem_for
from mlpf.scales import SCALES, STUDY_DEFAULT, get_scale, schedule_factor
from mlpf.train import _lr_lambda, apply_overrides, config_for_scale


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
    assert cfg.lr_decay_steps == 10_000 and cfg.step_scale == pytest.approx(1e-3)
    unmapped = STUDY_DEFAULT["lr_decay_rate"] ** (_run_steps("small", 20) / 10_000)
    assert unmapped > 0.999


@pytest.mark.parametrize("scale", ["small", "paper"])  # smoke's 200 events: ceil rounding
def test_space_decay_steps_are_the_papers_and_decay_as_in_the_paper(scale):
    """The space keeps the paper's 10 to 2,000 steps; a sampled schedule ends a run of the
    scale where it ends the paper's run (same batch size)."""
    hp = problem_for(scale).space["lr_decay_steps"]
    assert list(hp.sequence) == list(range(10, 2001, 10))
    cfg = config_for_scale(scale)
    for steps, rate, batch in ((10, 0.9, 128), (500, 0.95, 16), (2000, 0.99, 64)):
        c = apply_overrides(cfg, dict(lr_decay_steps=steps, lr_decay_rate=rate,
                                      batch_size=batch))
        n = _run_steps(scale, batch)
        paper = rate ** (-(-40_000 // batch) * 200 / steps)
        got = _lr_lambda(c, n)(n)
        # in log: the runs differ only by rounding batches up (4 of 3.9 batches per epoch)
        assert math.log(got) == pytest.approx(math.log(paper), rel=0.05)
