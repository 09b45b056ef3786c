"""The Makefile is the map of the pipeline: `make help` lists every documented target."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from mlpf.paths import ROOT


def _clean_env(env=None) -> dict:
    """The environment without what a parent make passes down (under `make test` the suite
    runs inside make: MAKEFLAGS would carry its variables, MAKELEVEL adds "Entering
    directory" lines)."""
    env = dict(os.environ if env is None else env)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(k, None)
    return env



@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_help_lists_every_documented_target():
    targets = re.findall(r"^([^\s:#=]+):[^=\n]*## ", (ROOT / "Makefile").read_text(), re.M)
    assert {"benchmark", "test", "figures", "claim1", "claim2", "lctable"} <= set(targets)
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, env=_clean_env(), capture_output=True,
                         text=True,
                         timeout=60).stdout
    listed = {line.split()[0] for line in out.splitlines()[1:] if line.strip()}
    assert set(targets) <= listed, sorted(set(targets) - listed)


# Values that would run `touch MARKER` if they reached a shell (or make's $(shell)) as typed.
HOSTILE = [
    ("WORKERS", "2; touch {m}", "benchmark"),
    ("WORKERS", "$$(touch {m})", "benchmark"),
    ("WORKERS", "", "benchmark"),
    ("METHODS", 'asha"; touch {m}; "', "benchmark"),
    ("METHODS", "$(shell touch {m})", "benchmark"),
    ("SEEDS", "0 `touch {m}`", "benchmark"),
    ("EVALUATOR", "process; touch {m}", "benchmark"),
    ("EVALUATOR", "nope", "benchmark"),
    ("SCALE", "$(shell touch {m})", "figures"),
    ("SCALE", "small; touch {m}", "figures"),
    ("REPLAY_SEEDS", "1)); touch {m}; echo $$((1", "replay"),
    ("POWER_SEEDS", "1)); touch {m}; echo $$((1", "replay-power"),
    ("CLAIM2_SEEDS", "1)); touch {m}; echo $$((1", "claim2"),
    ("CLAIM2_CONFIGS", "1; touch {m}", "claim2"),
    ("CLAIM1_SEEDS", "1; touch {m}", "claim1"),
    ("PHYSICS_SEEDS", "1; touch {m}", "physics"),
    ("CONFIGS", "1; touch {m}", "lctable"),
    ("NPROC", "1; touch {m}", "replay"),
    ("LCTABLE", "x.csv; touch {m}", "replay"),
]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("var,value,target", HOSTILE)
def test_hostile_variables_stop_make_before_any_shell(tmp_path, var, value, target):
    marker = tmp_path / "ran"
    p = subprocess.run(["make", "-n", f"{var}={value.format(m=marker)}", target], cwd=ROOT,
                       env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert not marker.exists(), f"{var}: a command ran"
    assert p.returncode != 0 and p.stdout == "", p.stdout
    assert len(p.stderr.splitlines()) == 1 and var in p.stderr, p.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_hostile_variables_from_the_environment_stop_make_too(tmp_path):
    marker = tmp_path / "ran"
    env = {**_clean_env(), "METHODS": f"$(shell touch {marker})",
           "WORKERS": f"2; touch {marker}"}
    p = subprocess.run(["make", "-n", "benchmark"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    assert not marker.exists() and p.returncode != 0 and p.stdout == "", p.stdout
    assert len(p.stderr.splitlines()) == 1, p.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_ordinary_variables_still_pass():
    for args in (["benchmark", "SCALE=smoke", "SEEDS=0 1", "WORKERS=4", "EVALUATOR=mpi",
                  "METHODS=random asha_bo"], ["replay", "REPLAY_SEEDS=3", "NPROC=2"],
                 ["lctable", "CONFIGS=", "SCALE=paper"], ["lctable", "CONFIGS=64"]):
        p = subprocess.run(["make", "-n", *args], cwd=ROOT, env=_clean_env(),
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, (args, p.stderr)
    p = subprocess.run(["make", "-n", "benchmark", "WORKERS=3", "METHODS=random asha"],
                       cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=60)
    assert "--methods 'random asha'" in p.stdout and "--workers '3'" in p.stdout, p.stdout
