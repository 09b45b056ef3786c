"""Every DeepHyper internal the project uses still exists (fails loudly on an upgrade)."""

from __future__ import annotations

import inspect

import pytest

from experiments import dhcompat
from experiments.schedulers import ASHAStopper, HyperbandSearch
from experiments.space import problem_for


async def _run(job):
    return 0.0


@pytest.fixture
def evaluator():
    ev = dhcompat.Evaluator.create(_run, "serial")
    yield ev
    ev.close()


def test_evaluator_internals(evaluator):
    missing = [a for a in dhcompat.EVALUATOR_ATTRIBUTES if not hasattr(evaluator, a)]
    assert not missing, f"DeepHyper Evaluator lost: {missing}"
    assert isinstance(dhcompat.running(evaluator), list)
    assert isinstance(dhcompat.search_id(evaluator), str)


def test_search_and_history_internals(tmp_path, evaluator):
    search = HyperbandSearch(problem_for("smoke"), 9, 3, 1, random_state=0,
                             log_dir=str(tmp_path))
    missing = [a for a in dhcompat.SEARCH_ATTRIBUTES if not hasattr(search, a)]
    missing += [f"history.{a}" for a in dhcompat.HISTORY_ATTRIBUTES
                if not hasattr(search.history, a)]
    assert not missing, f"DeepHyper Search lost: {missing}"
    dhcompat.attach(evaluator, search)
    assert evaluator.search is search and dhcompat.stopper(search) is None


def test_stopper_internals():
    stopper = ASHAStopper(max_steps=9, grace=1, eta=3)
    missing = [a for a in dhcompat.STOPPER_ATTRIBUTES if not hasattr(stopper, a)]
    assert not missing, f"DeepHyper SuccessiveHalvingStopper lost: {missing}"


def test_jobs_can_be_reserved_rebuilt_and_collected(evaluator):
    dhcompat.reserve_job_ids(evaluator, 3)
    sid = dhcompat.search_id(evaluator)
    assert evaluator.job_id_gathered == [f"{sid}.0", f"{sid}.1", f"{sid}.2"]
    job = dhcompat.logged_job(evaluator, 1, {"x": 1}, {"objective": -0.5, "metadata": {}},
                              "DONE")
    assert job.id == f"{sid}.1" and job.objective == -0.5
    assert job.status == dhcompat.JobStatus.DONE
    assert dhcompat.finished_unharvested(evaluator) == []
    assert "create_running_job" in dir(job)
    # the signatures the replay evaluator calls
    assert list(inspect.signature(evaluator._create_job).parameters) == \
        ["job_id", "args", "run_function", "storage"]


def test_process_pool_internals():
    from experiments.backends.live import SurvivingPoolEvaluator

    ev = SurvivingPoolEvaluator(_sync_run, 1)
    try:
        missing = [a for a in dhcompat.POOL_ATTRIBUTES if not hasattr(ev, a)]
        assert not missing, f"DeepHyper ProcessPoolEvaluator lost: {missing}"
    finally:
        ev.executor.shutdown(wait=True)


def _sync_run(job):
    return 0.0
