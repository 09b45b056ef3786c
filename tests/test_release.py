"""The archival files agree with each other and with the environment: .zenodo.json,
CITATION.cff and pyproject.toml name one version, title and licence; requirements.lock pins
every package of the requirement files at their versions, each with a sha256; SHA256SUMS and
RELEASE.md name what `make release-check` checks; no tracked file reaches 5 MiB."""

from __future__ import annotations

import datetime
import json
import re
import sys
import tomllib

import pytest

from mlpf.paths import ROOT

sys.path.insert(0, str(ROOT / "release"))
import lock  # noqa: E402


def test_zenodo_citation_and_package_agree():
    yaml = pytest.importorskip("yaml")
    zen = json.loads((ROOT / ".zenodo.json").read_text())
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert zen["version"] == str(cff["version"]) == version
    assert zen["title"] == cff["title"] and zen["license"] == cff["license"] == "MIT"
    assert zen["upload_type"] == "software"
    assert datetime.date.fromisoformat(zen["publication_date"]) == cff["date-released"]
    rel = {(r["relation"], r["identifier"]) for r in zen["related_identifiers"]}
    assert ("isSupplementTo", cff["preferred-citation"]["doi"]) in rel


def test_lock_pins_every_requirement_with_a_hash():
    locked = lock.read_lock()
    assert len(locked) >= 100  # the whole environment, not only the direct pins
    assert not lock.problems(locked, None), lock.problems(locked, None)
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for _, h in locked.values())
    assert "torch" in locked and locked["torch"][0].startswith("2.13.0")


def test_lock_check_finds_a_drifted_pin(tmp_path):
    locked = dict(lock.read_lock())
    name = "numpy"
    locked[name] = ("0.0.1", locked[name][1])
    assert any(name in p for p in lock.problems(locked, None))
    assert any("not installed" in p for p in lock.problems(locked, {}))


def test_release_check_covers_what_release_md_asks():
    mk = (ROOT / "Makefile").read_text()
    body = mk[mk.index("release-check:"):mk.index("\nclean:")]
    for what in ("git status --porcelain", "SHA256SUMS", "release/lock.py --check",
                 "git clone", ".ci/run"):
        assert what in body, what
    assert "make release-check" in (ROOT / "RELEASE.md").read_text()


MAX_TRACKED_BYTES = 5 * 2**20  # the most one shipped file may hold


def test_every_tracked_file_is_under_5_mib():
    """Every file git tracks, as it is in this checkout, is under 5 MiB: the learning-curve
    table, which grows as `make lctable` runs, included (its cells are rounded for this)."""
    import subprocess

    r = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout")
    files = [ROOT / f for f in r.stdout.decode().split("\0") if f]
    assert len(files) > 100
    big = {str(f.relative_to(ROOT)): f.stat().st_size for f in files
           if f.is_file() and f.stat().st_size >= MAX_TRACKED_BYTES}
    assert not big, f"tracked files of 5 MiB or more: {big}"
