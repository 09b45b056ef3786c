"""Every command the README prints runs as printed.

Commands are the lines of its ```bash blocks and its inline code spans that start with
``python -m``, ``.venv/bin/python -m``, ``make `` or ``./run_all.sh`` (optional parts in
``[...]`` dropped). Quick ones run for real (an ``--out`` moved to a temporary folder, so no
shipped file changes); long ones must parse: ``make -n`` for make targets, ``--help`` for
modules; and the README's first screen (up to its claims table) fits 60 lines.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from mlpf.paths import ROOT

README = (ROOT / "README.md").read_text()
# modules whose printed commands take seconds and write nothing shipped (or take --out)
QUICK = {"experiments.table", "experiments.lcbench", "analysis.claim1", "analysis.claim2"}
FIRST_SCREEN = 60


def _commands() -> list[str]:
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():  # continued lines joined
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    for span in re.findall(r"`([^`\n]+)`", README):
        if re.match(r"(\.venv/bin/)?python -m |make [a-z]|\./run_all\.sh", span):
            out.append(span)
    cleaned = []
    for c in out:
        c = re.sub(r"\s*\[[^\]]*\]", "", c).strip()
        if c not in cleaned and "..." not in c:  # "..." marks a placeholder, not a command
            cleaned.append(c)
    return cleaned


COMMANDS = _commands()


def test_the_readme_prints_the_reviewers_commands():
    assert any(c.startswith("make test") for c in COMMANDS)
    assert any("analysis.claim2" in c for c in COMMANDS)
    assert len(COMMANDS) >= 10, COMMANDS


def test_first_screen_fits_60_lines():
    first = README.split("\n## The paper's claims here")[0]
    assert first.count("\n") + 1 <= FIRST_SCREEN


def _env():
    env = dict(os.environ, CI="true", MPLBACKEND="Agg")
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):  # a parent make's
        env.pop(k, None)
    return env


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith(("make", "./run_all"))])
def test_make_commands_parse(command):
    argv = shlex.split(command)
    if argv[0] == "./run_all.sh":  # its make lines, dry
        r = subprocess.run(["bash", "-n", "run_all.sh"], cwd=ROOT, capture_output=True)
        assert r.returncode == 0, r.stderr
        return
    r = subprocess.run(["make", "-n", *argv[1:]], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("command", [c for c in COMMANDS if " -m " in c])
def test_python_commands_run_as_printed(command, tmp_path):
    argv = shlex.split(command)
    module = argv[argv.index("-m") + 1]
    args = argv[argv.index("-m") + 2:]
    if module in QUICK:
        if "--out" in args:
            args[args.index("--out") + 1] = str(tmp_path / "out")
        elif module == "analysis.claim1":
            args += ["--out", str(tmp_path / "out")]
    else:
        args = ["--help"]
    r = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{command}: {r.stderr[-2000:]}"
