"""The small scale's budgets against the shipped learning-curve table: a replayed search gets
at least 32 trainings of the median configuration, the live one half of that."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.methods import REPLAY_DEVICE_BUDGET, settings_for
from experiments.table import load_table, table_path

MIN_REPLAY_TRAININGS = 32  # the replay budget, in median full trainings


@pytest.fixture(scope="module")
def small_table():
    path = table_path("small")
    if not path.is_file():
        pytest.skip("no shipped small table")
    return load_table(path, "small")


def median_training_seconds(table) -> float:
    """Median over the table's configurations trained to max_t (first seed) of the seconds
    their max_t epochs took: what one full training costs a device."""
    full = [e for e in table.entries if e.failure is None and len(e.curve) >= table.max_t]
    return float(np.median([sum(c[2] for c in e.curve[:table.max_t]) for e in full]))


def test_replay_budget_is_at_least_32_median_trainings(small_table):
    med = median_training_seconds(small_table)
    assert REPLAY_DEVICE_BUDGET["small"] >= MIN_REPLAY_TRAININGS * med, (
        f"replay budget {REPLAY_DEVICE_BUDGET['small']:g} s < {MIN_REPLAY_TRAININGS} x the "
        f"median training ({med:.1f} s)")


def test_live_budget_is_the_first_half_of_the_replay_budget():
    assert settings_for("small").device_budget * 2 == REPLAY_DEVICE_BUDGET["small"]
    assert settings_for("small").time_budget >= 1.5 * settings_for("small").device_budget / 2
