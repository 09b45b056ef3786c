"""The Makefile is the map of the pipeline: `make help` lists every documented target."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from mlpf.paths import ROOT


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_help_lists_every_documented_target():
    targets = re.findall(r"^([^\s:#=]+):[^=\n]*## ", (ROOT / "Makefile").read_text(), re.M)
    assert {"benchmark", "test", "figures", "claim1", "claim2", "lctable"} <= set(targets)
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60).stdout
    listed = {line.split()[0] for line in out.splitlines()[1:] if line.strip()}
    assert set(targets) <= listed, sorted(set(targets) - listed)
