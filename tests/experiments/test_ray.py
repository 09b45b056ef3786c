"""Ray: the engine (``--evaluator ray``), the Ray Tune peers (``experiments.peers.ray_tune``)
and our ASHA's decisions against Ray Tune's own AsyncHyperBandScheduler.

Everything that imports ray is skipped without it (``make ray`` installs it; ``make test``
does too). Ray clusters started here are local, of 2 CPUs, and listen on loopback only."""

from __future__ import annotations

import copy
import importlib.util
import json
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from experiments import logs
from experiments.methods import settings_for
from experiments.peers.ray_tune import RAY_PEERS, check_peer, ray_hyperband_brackets
from experiments.schedulers import asha_bracket, asha_rungs
from experiments.search import search_command
from mlpf.paths import ROOT

from .conftest import PY, load, synthetic_env

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed: `make ray` "
                               "installs requirements-ray.txt")
SMOKE = settings_for("smoke")  # max_t 9, grace 1, eta 3


# ------------------------------------------------------------------------------ helpers
def listening(pid: int) -> set[str]:
    """Addresses that process ``pid`` and its descendants listen on (TCP)."""
    import psutil

    out = set()
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return out
    for p in procs:
        try:
            out |= {c.laddr.ip for c in p.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    return out


def loopback(ip: str) -> bool:
    return ip in ("127.0.0.1", "::1") or ip.startswith("::ffff:127.")


def run_watched(cmd: list[str], env: dict, timeout: float = 300,
                stop_after_lines: tuple | None = None):
    """Run ``cmd``, collecting the addresses its process tree listens on; with
    ``stop_after_lines=(path, n)`` send SIGTERM once ``path`` has more than ``n`` lines.
    Returns (return code, stderr, addresses)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen: set[str] = set()
    t0 = time.time()
    while proc.poll() is None:
        seen |= listening(proc.pid)
        if stop_after_lines:
            path, n = stop_after_lines
            if path.exists() and len(path.read_text().splitlines()) > n:
                proc.send_signal(signal.SIGTERM)
                stop_after_lines = None
        if time.time() - t0 > timeout:
            proc.kill()
            raise TimeoutError(cmd)
        time.sleep(0.3)
    _, err = proc.communicate()
    return proc.returncode, err, seen


def peer_cmd(method: str, out, *extra: str) -> list[str]:
    return [PY, "-m", "experiments.peers.ray_tune", "--method", method, "--scale", "smoke",
            "--seed", "0", "--workers", "2", "--trainable", "synthetic", "--out", str(out),
            "--time-budget", "0", *extra]


def check_peer_logs(out, method: str):
    res, lc, meta = load(out)
    assert tuple(lc.columns) == logs.LC_COLUMNS
    assert not lc.duplicated([logs.JOB_ID, logs.EPOCH]).any() and res.job_id.is_unique
    per_job = lc.groupby(logs.JOB_ID)[logs.EPOCH].agg(["min", "max", "count"])
    for _, row in res.iterrows():  # a resumed Hyperband trial continues its own curve
        first, last, n = per_job.loc[row.job_id]
        assert first == 1 and n == row["m:epochs"] == last
    assert set(res["m:status"]) <= {"ok", "stopped", "failed"}
    assert (res.loc[res["m:status"] == "ok", "m:epochs"] == SMOKE.max_t).all()
    assert int(res["m:epochs"].sum()) == meta["epochs_trained"] == len(lc)
    assert (lc[logs.T_END] >= lc[logs.T_START]).all() and (lc[logs.WORKER] < 2).all()
    assert meta["method"] == method and meta["status"] == "complete"
    assert meta["evaluator"] == "ray_tune" and meta["versions"]["ray"]
    assert meta["method_settings"]["settings"]["max_t"] == SMOKE.max_t
    return res, lc, meta


# ------------------------------------------------------------------------------ no ray needed
def test_search_command_launches_the_ray_tune_cli_for_ray_peers(tmp_path):
    cmd, _ = search_command("ray_asha", "smoke", 3, workers=4, evaluator="mpi", trainable="mlpf",
                            resume=True, budget=27, out=tmp_path, time_budget=50.0,
                            device_budget=100.0)
    assert cmd[:3] == [PY, "-m", "experiments.peers.ray_tune"]  # never under mpiexec
    assert cmd[3:] == ["--method", "ray_asha", "--scale", "smoke", "--seed", "3",
                       "--workers", "4", "--trainable", "mlpf", "--resume", "--budget", "27",
                       "--time-budget", "50.0", "--device-budget", "100.0", "--out",
                       str(tmp_path)]
    cmd, _ = search_command("asha", "smoke", 0, workers=2, evaluator="ray",
                            trainable="synthetic")
    assert cmd[1:3] == ["-m", "experiments.search"] and "--evaluator" in cmd


def test_campaign_names_the_ray_peers_and_what_they_need(capsys):
    from experiments.campaign import main

    assert main(["--backend", "live", "--scale", "smoke", "--methods", "ray_nope"]) == 2
    assert "unknown Ray Tune peer 'ray_nope'" in capsys.readouterr().err
    assert main(["--backend", "replay", "--scale", "smoke", "--methods", "ray_asha"]) == 2
    if HAVE_RAY:
        assert check_peer("ray_asha") is RAY_PEERS["ray_asha"]
    else:
        with pytest.raises(ValueError, match="make ray"):
            check_peer("ray_asha")


def test_ray_hyperband_brackets_as_ray_computes_them():
    # max_t 9, eta 3: s_max + 1 = 3 brackets, (n_0, r_0) = (3, 9), (5, 3), (9, 1)
    assert ray_hyperband_brackets(9, 3) == [[3, 9], [5, 3], [9, 1]]
    assert ray_hyperband_brackets(16, 4) == [[3, 16], [6, 4], [16, 1]]
    # paper: r_0 of the 5th bracket would be 0 epochs: Ray skips it
    assert ray_hyperband_brackets(200, 4)[-1] == [80, 3]
    if HAVE_RAY:  # as Ray's own scheduler sizes them
        from ray.tune.schedulers import HyperBandScheduler

        for max_t, eta in ((9, 3), (16, 4), (200, 4)):
            hb = HyperBandScheduler(max_t=max_t, reduction_factor=eta)
            want = [[hb._get_n0(s), hb._get_r0(s)] for s in range(hb._s_max_1)]
            assert ray_hyperband_brackets(max_t, eta) == [b for b in want if b[1]]


# ------------------------------------------------------------------------------ search space
@needs_ray
@pytest.mark.parametrize("scale", ["smoke", "small", "paper"])
def test_ray_space_gives_optuna_the_optuna_peers_distributions(scale):
    from ray.tune.search.optuna import OptunaSearch

    from experiments.peers.optuna_peers import optuna_distributions
    from experiments.peers.ray_tune import ray_space
    from experiments.space import problem_for

    problem = problem_for(scale)
    space = ray_space(problem)
    assert OptunaSearch.convert_search_space(space) == optuna_distributions(problem)
    # Ray's own random sampling draws exactly the values of each grid, ends included
    rng = np.random.RandomState(0)
    for hp in problem.space.values():
        if hasattr(hp, "sequence"):
            drawn = set(space[hp.name].sample(size=4000, random_state=rng))
            assert drawn == {logs.native(v) for v in hp.sequence}, hp.name


# ------------------------------------------------------------------------------ the engine
def _engine_plan(tmp_path):
    from experiments.driver import new_metadata, plan_search

    plan = plan_search("asha", "smoke", 0, evaluator="ray", workers=2, out=tmp_path / "o",
                       trainable="synthetic")
    return plan, new_metadata(plan, 2, time.time())


@needs_ray
@pytest.mark.parametrize("given,env,expected", [
    ("ray://head:10001", None, {"address": "ray://head:10001"}),
    (None, "10.1.2.3:6379", {"address": "10.1.2.3:6379"}),
    (None, None, {"address": "local", "_node_ip_address": "127.0.0.1", "num_cpus": 2}),
])
def test_the_ray_address_reaches_ray_init(tmp_path, monkeypatch, given, env, expected):
    import ray

    from experiments.backends.live import open_backend

    class Called(Exception):
        pass

    seen = {}

    def fake_init(**kw):
        seen.update(kw)
        raise Called

    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    from ray._private import ray_constants

    for var in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED"):
        monkeypatch.delenv(var, raising=False)  # restored after the test
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    backend = open_backend("ray", given)
    plan, meta = _engine_plan(tmp_path)
    backend.annotate(meta)
    with pytest.raises(Called), backend.evaluator(plan, meta):
        pass
    assert {k: seen.get(k) for k in expected} == expected
    assert meta["ray_cluster"] == (given or env or "local (loopback)")
    # a local cluster takes 127.0.0.1 as its node's address; a remote one is left alone
    assert ray_constants.ENABLE_RAY_CLUSTER == bool(given or env)
    assert not list((tmp_path / "o").glob(".slots-*"))  # removed with the evaluator


def test_search_passes_ray_address_to_the_backend(tmp_path, monkeypatch):
    import experiments.search as search

    class Opened(Exception):
        pass

    seen = {}

    def fake_open(name, ray_address=None):
        seen.update(name=name, ray_address=ray_address)
        raise Opened

    monkeypatch.setenv("EXP_SYNTHETIC", "{}")
    monkeypatch.setattr(search, "open_backend", fake_open)
    with pytest.raises(Opened):
        search.main(["--method", "asha", "--scale", "smoke", "--evaluator", "ray",
                     "--ray-address", "head:6379", "--trainable", "synthetic", "--out",
                     str(tmp_path / "s")])
    assert seen == {"name": "ray", "ray_address": "head:6379"}


@needs_ray
@pytest.mark.slow
def test_engine_on_a_local_ray_cluster(tmp_path):
    out = tmp_path / "asha"
    env = synthetic_env(sleep=0.02)
    env.pop("RAY_ADDRESS", None)
    rc, err, seen = run_watched(
        [PY, "-m", "experiments.search", "--method", "asha", "--scale", "smoke", "--seed", "0",
         "--evaluator", "ray", "--workers", "2", "--trainable", "synthetic", "--out",
         str(out), "--budget", "27", "--time-budget", "0", "--quiet"], env)
    assert rc == 0, err
    res, lc, meta = load(out)
    assert meta["status"] == "complete" and meta["evaluator"] == "ray"
    assert meta["ray_cluster"] == "local (loopback)"
    assert int(res["m:epochs"].sum()) == len(lc) >= 27
    rungs = asha_rungs(SMOKE.max_t, SMOKE.grace, SMOKE.eta)
    assert set(res.loc[res["m:status"] == "stopped", "m:epochs"]) <= set(rungs)
    assert seen and all(loopback(ip) for ip in seen), seen


# ------------------------------------------------------------------------------ the peers
@needs_ray
@pytest.mark.slow
def test_ray_asha_peer_runs_with_our_logs_and_budgets(tmp_path):
    out = tmp_path / "ray_asha"
    rc, err, seen = run_watched(peer_cmd("ray_asha", out, "--budget", "27"),
                                synthetic_env(sleep=0.02))
    assert rc == 0, err
    assert seen and all(loopback(ip) for ip in seen), seen
    res, lc, meta = check_peer_logs(out, "ray_asha")
    assert meta["stopped_by"] == "epochs" and meta["budget_epochs"] == 27
    # ended trials reach the epoch budget, running trials then finish (1 per worker at most)
    assert 27 <= meta["epochs_trained"] <= 27 + 2 * SMOKE.max_t
    assert meta["method_settings"]["scheduler"] == "AsyncHyperBandScheduler"
    assert meta["method_settings"]["max_concurrent_trials"] == 2
    stopped = res[res["m:status"] == "stopped"]
    assert set(stopped["m:epochs"]) <= set(asha_rungs(SMOKE.max_t, SMOKE.grace, SMOKE.eta))
    # the hyperparameters are the scale's, every one of them
    from experiments.space import problem_for

    names = problem_for("smoke").hyperparameter_names
    assert sorted(c[2:] for c in res.columns if c.startswith("p:")) == sorted(names)
    # the analysis reads it like any method
    from analysis.logs import load_scale

    root = tmp_path / "scale"
    (root / "ray_asha").mkdir(parents=True)
    (out).rename(root / "ray_asha" / "seed0")
    runs = load_scale(root)
    assert len(runs["ray_asha"][0].results) == len(res)
    # a complete search is kept: the same command again changes nothing
    before = (root / "ray_asha" / "seed0" / logs.RESULTS_CSV).read_bytes()
    p = subprocess.run(peer_cmd("ray_asha", root / "ray_asha" / "seed0"), cwd=ROOT,
                       env=synthetic_env(), capture_output=True, text=True)
    assert p.returncode == 0 and "already complete" in p.stderr
    assert (root / "ray_asha" / "seed0" / logs.RESULTS_CSV).read_bytes() == before


@needs_ray
@pytest.mark.slow
def test_ray_hyperband_tpe_peer_pauses_resumes_and_stops_at_the_device_budget(tmp_path):
    out = tmp_path / "ray_hyperband_tpe"
    # 0.02 s epochs: about 480 epochs of budget; Ray's Hyperband runs its brackets of 9, 3 and
    # 1 epochs (27 + 15 + 9 epochs) before it resumes the first promoted trials, which leaves
    # room for epochs four times as long on a loaded machine (2.4 s did not, and 4.8 s once
    # ended before any resume on a clean CI run)
    budget = 9.6
    rc, err, _ = run_watched(peer_cmd("ray_hyperband_tpe", out, "--device-budget", str(budget),
                                      "--budget", "1000"), synthetic_env(sleep=0.02),
                              timeout=900)  # 137 s idle; 0.4 epochs/s beside a busy pool
    assert rc == 0, err
    res, lc, meta = check_peer_logs(out, "ray_hyperband_tpe")
    assert meta["stopped_by"] == "device_budget" and meta["budget_device_s"] == budget
    spent = float((lc[logs.EPOCH_SECONDS] * lc[logs.DEVICES]).sum())
    # the cut counts running trials: each stops after its current epoch
    assert budget <= spent <= budget + 2 * 0.05, spent
    # the search closed when the ledger reached the budget: every trial that was running or
    # paused then ends with reason device_budget; none may when the epoch that spent the budget
    # completed its trial at max_t while the next trials had not started (a loaded machine)
    cut = res[res["m:reason"].fillna("") == "device_budget"]
    crossing = lc.loc[lc[logs.T_END].idxmax()]
    if cut.empty:
        last = res.set_index(logs.JOB_ID).loc[int(crossing[logs.JOB_ID])]
        assert last["m:status"] == "ok" and last["m:epochs"] == SMOKE.max_t, last
        # and it was the last epoch trained: nothing ran once the budget was spent
        assert spent - crossing[logs.EPOCH_SECONDS] * crossing[logs.DEVICES] < budget
    else:
        assert set(cut["m:status"]) == {"stopped"}
    # Ray's Hyperband paused trials at rungs and resumed them: a curve with a gap in time
    gaps = [(g.t_start.to_numpy()[1:] - g.t_end.to_numpy()[:-1]).max()
            for _, g in lc.sort_values("epoch").groupby(logs.JOB_ID) if len(g) > 1]
    assert max(gaps) > 0.5
    assert meta["method_settings"]["brackets"] == [[3, 9], [5, 3], [9, 1]]


@needs_ray
def test_ray_summary_of_a_trial_never_started_does_not_fail_the_peer(tmp_path):
    """A trial created but not yet started when the stopper ends the experiment (a loaded
    machine) breaks Ray's ResultGrid after the run; the peer passes over that failure alone."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial
    from ray.tune.registry import register_trainable
    from ray.tune.result_grid import ResultGrid

    from experiments.peers.ray_tune import fit

    register_trainable("never_started", lambda config: None)
    pending = Trial("never_started", config={},
                    storage=StorageContext(storage_path=str(tmp_path), experiment_dir_name="e"))

    class Analysis:
        trials, trial_dataframes, _fs = [pending], {}, None

    class Tuner:
        def __init__(self, error=None):
            self.error = error

        def fit(self):
            if self.error:
                raise self.error
            return ResultGrid(Analysis())

    with pytest.raises(RuntimeError, match="trial_dir_name"):
        Tuner().fit()  # what Ray 2.60 does
    fit(Tuner())
    with pytest.raises(RuntimeError, match="elsewhere"):
        fit(Tuner(RuntimeError("elsewhere")))


@needs_ray
@pytest.mark.slow
def test_ray_peer_interrupted_refuses_to_overwrite_and_starts_again(tmp_path):
    out = tmp_path / "ray_asha"
    rc, err, _ = run_watched(peer_cmd("ray_asha", out), synthetic_env(sleep=0.3),
                             stop_after_lines=(out / logs.LEARNING_CURVES_CSV, 3))
    assert rc == 143, err
    meta = json.loads((out / logs.METADATA_JSON).read_text())
    assert meta["status"] == "interrupted"
    lc = pd.read_csv(out / logs.LEARNING_CURVES_CSV)
    assert len(lc) >= 3
    p = subprocess.run(peer_cmd("ray_asha", out), cwd=ROOT, env=synthetic_env(),
                       capture_output=True, text=True)
    assert p.returncode == 2 and "--resume" in p.stderr
    p = subprocess.run(peer_cmd("ray_asha", out, "--resume", "--budget", "9"), cwd=ROOT,
                       env=synthetic_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    check_peer_logs(out, "ray_asha")


# ------------------------------------------------------------------------------ decisions
class _Trial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def synthetic_arrivals(n_trials: int, max_t: int, seed: int, levels: int = 6):
    """Epoch arrivals of an asynchronous run on 4 workers, with values on a coarse grid (many
    ties at every rung): yields (trial, epoch, objective) in arrival order and takes back
    whether the trial continues (a stopped trial reports nothing more)."""
    rng = np.random.default_rng(seed)
    speed = rng.uniform(0.5, 2.0, n_trials)  # seconds per epoch
    final = rng.integers(0, levels, n_trials)
    free_at, events = [0.0] * 4, []
    for t in range(n_trials):
        w = int(np.argmin(free_at))
        start = free_at[w]
        free_at[w] = start + speed[t] * max_t / 3  # about a third of trials run to max_t
        events += [(start + e * speed[t], t, e) for e in range(1, max_t + 1)]
    stopped = set()
    for _, t, e in sorted(events):
        if t not in stopped:
            if not (yield t, e, -float(final[t] + round(3.0 / e, 1))):
                stopped.add(t)


def recorded_arrivals():
    """The epochs of the shipped small ASHA search (results/small/asha/seed0) in the order they
    ended, with its settings (max_t, grace, eta); None when it is not there."""
    d = ROOT / "results" / "small" / "asha" / "seed0"
    if not (d / logs.LEARNING_CURVES_CSV).exists():
        return None
    s = json.loads((d / logs.METADATA_JSON).read_text())["method_settings"]
    lc = pd.read_csv(d / logs.LEARNING_CURVES_CSV).sort_values([logs.T_END, logs.JOB_ID])

    def gen():
        stopped = set()
        for r in lc.itertuples():
            if r.job_id not in stopped:
                if not (yield int(r.job_id), int(r.epoch), -float(r.val_loss)):
                    stopped.add(r.job_id)

    return gen(), s["max_t"], s["grace"], s["eta"]


def compare(arrivals, max_t: int, grace: int, eta: int, brackets: int,
            rule: str = "ray") -> tuple[int, int, int]:
    """Drive our ASHAStopper (``rule``; DeepHyper running jobs on one storage, as the
    workers run them) and Ray Tune's AsyncHyperBandScheduler (``on_trial_add``,
    ``on_trial_result``) with the same arrivals, fed our decision back.

    Returns (arrivals decided, of which at a rung of the trial's bracket, disagreements)."""
    from deephyper.evaluator import RunningJob
    from deephyper.evaluator.storage import MemoryStorage
    from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

    from experiments.schedulers import ASHAStopper

    storage = MemoryStorage()
    sid = storage.create_new_search()
    proto = ASHAStopper(max_t, grace, eta, brackets, rule=rule)
    ray = AsyncHyperBandScheduler(time_attr="epoch", metric="val_loss", mode="min",
                                  max_t=max_t, grace_period=grace, reduction_factor=eta,
                                  brackets=brackets)
    jobs, trials, rungs = {}, {}, {}
    n = at_rung = bad = 0
    try:
        t, e, value = next(arrivals)
        while True:
            if t not in jobs:
                jid = storage.create_new_job(sid)
                stopper = copy.deepcopy(proto)  # what DeepHyper does for every job
                jobs[t] = RunningJob(jid, {}, storage, stopper)
                stopper.job = jobs[t]
                trials[t] = _Trial(f"trial{t}")
                ray.on_trial_add(None, trials[t])
                # Ray draws a trial's bracket at random, ours hashes the job number: compare
                # the rule inside each bracket by putting Ray's trial in our bracket
                s = asha_bracket(int(str(jid).split(".")[-1]), brackets)
                ray._trial_info[trials[t].trial_id] = ray._brackets[s]
                rungs[t] = set(asha_rungs(max_t, grace, eta, s))
            jobs[t].record(e, value)
            ours = not jobs[t].stopped()
            theirs = ray.on_trial_result(None, trials[t], {"epoch": e, "val_loss": -value})
            n += 1
            at_rung += e in rungs[t]
            bad += ours != (theirs == TrialScheduler.CONTINUE)
            t, e, value = arrivals.send(ours)
    except StopIteration:
        return n, at_rung, bad


@needs_ray
def test_our_asha_decides_as_ray_tunes_asynchyperbandscheduler():
    """Every epoch arrival (at a rung, between rungs, at max_t) decided alike, ties included,
    for ASHA at the three scales' settings and asynchronous Hyperband (2 and 3 brackets)."""
    cases = [(9, 1, 3, 1), (16, 1, 4, 1), (200, 10, 4, 1), (9, 1, 3, 2), (27, 1, 3, 3)]
    total = rung_total = other = 0
    for k, (max_t, grace, eta, brackets) in enumerate(cases):
        n, at_rung, bad = compare(synthetic_arrivals(80, max_t, seed=k), max_t, grace, eta,
                                  brackets)
        assert bad == 0, (max_t, grace, eta, brackets, bad)
        total, rung_total = total + n, rung_total + at_rung
        # the comparison sees a difference where there is one: DeepHyper's own rule
        other += compare(synthetic_arrivals(80, max_t, seed=k), max_t, grace, eta, brackets,
                         rule="deephyper")[2]
    assert other > 0
    rec = recorded_arrivals()
    if rec is not None:
        n, at_rung, bad = compare(*rec, 1)
        assert bad == 0
        total, rung_total = total + n, rung_total + at_rung
    print(f"\nASHA decisions equal to Ray Tune's: {total} arrivals, {rung_total} at rungs")
    assert rung_total >= 300
