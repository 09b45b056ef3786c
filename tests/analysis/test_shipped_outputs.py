"""The shipped tables are what the commands make from the shipped logs: `make figures`, the
claim-1 report and the pre-registered claim-2 test rebuilt into a temporary folder give the
same text files, byte for byte (figures are images: left out)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlpf.paths import FIGURES_DIR, RESULTS_DIR, ROOT

TEXT = (".md", ".csv", ".tex", ".json")


def _run(*args):
    r = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]


def _as_committed(table: Path, tmp_path: Path) -> Path:
    """``table`` (and its metadata ``.json``) as the last commit holds them: a table that a
    running ``make lctable`` grows in the working tree is compared with the report committed
    beside it. In a clean clone, or outside a git checkout, the table itself."""
    files = [table, table.with_suffix(".json")]
    rels = [f.relative_to(ROOT).as_posix() for f in files]
    changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *rels], cwd=ROOT,
                             capture_output=True)
    if changed.returncode != 1:  # unchanged (0), or no git checkout to ask
        return table
    out = tmp_path / "committed"
    out.mkdir(parents=True, exist_ok=True)
    for f, rel in zip(files, rels):
        shown = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=ROOT, capture_output=True)
        assert shown.returncode == 0, shown.stderr.decode()[-500:]
        (out / f.name).write_bytes(shown.stdout)
    return out / table.name


def _differ(made: Path, shipped: Path) -> list[str]:
    out = []
    for f in sorted(p for p in made.rglob("*") if p.suffix in TEXT):
        rel = f.relative_to(made)
        if not (shipped / rel).is_file() or (shipped / rel).read_bytes() != f.read_bytes():
            out.append(str(rel))
    return out


def _live_logs(scale: str) -> bool:
    return any((RESULTS_DIR / scale).glob("*/seed*/metadata.json"))


@pytest.mark.skipif(not _live_logs("small"), reason="no shipped live searches at small")
def test_make_figures_rebuilds_the_shipped_tables(tmp_path):
    _run("analysis.make_figures", "--scale", "small", "--out", str(tmp_path))
    made = tmp_path / "small"
    assert any(made.glob("*.md"))
    # the sub-reports (claim1/, replay*/, physics) are other commands' outputs
    top = [f for f in _differ(made, FIGURES_DIR / "small") if "/" not in f]
    assert not top, f"stale shipped outputs (make figures): {top}"


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in
                                          (FIGURES_DIR / "small").glob("*/claim2.md")
                                          if (p.parent / "per_seed.csv").is_file()))
def test_claim2_verdict_rebuilds_from_the_shipped_per_seed_metrics(tmp_path, folder):
    shipped = FIGURES_DIR / "small" / folder
    _run("analysis.claim2", "--per-seed", str(shipped / "per_seed.csv"), "--out", str(tmp_path))
    assert not [f for f in _differ(tmp_path, shipped)], "stale claim2.md / claim2.csv"


@pytest.mark.skipif(not (RESULTS_DIR / "small" / "claim1").is_dir(),
                    reason="no shipped claim-1 references")
def test_claim1_report_rebuilds_from_the_shipped_references_and_table(tmp_path):
    table = _as_committed(RESULTS_DIR / "small" / "lctable.csv", tmp_path)
    _run("analysis.claim1", "--scale", "small", "--table", str(table), "--out", str(tmp_path))
    stale = _differ(tmp_path / "small" / "claim1", FIGURES_DIR / "small" / "claim1")
    assert not stale, f"stale claim-1 report (python -m analysis.claim1 ...): {stale}"


@pytest.mark.parametrize("folder", ["replay", "replay_power", "replay_surrogate"])
def test_aggregate_rebuilds_from_the_shipped_per_seed_metrics(tmp_path, folder):
    shipped = FIGURES_DIR / "small" / folder
    if not (shipped / "per_seed.csv").is_file():
        pytest.skip(f"no shipped {folder} replays")
    _run("analysis.aggregate", "--per-seed", str(shipped / "per_seed.csv"), "--out",
         str(tmp_path))
    assert (tmp_path / "aggregate.md").is_file()
    assert not _differ(tmp_path, shipped), "stale aggregate.md / aggregate.csv"
