"""Every path the project reads or writes, in one place (relative to the repository root).

Override the roots with MLPF_DATA_DIR / MLPF_RESULTS_DIR / MLPF_FIGURES_DIR, e.g. to keep
data on a cluster's scratch file system.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("MLPF_DATA_DIR", ROOT / "data"))
RESULTS_DIR = Path(os.environ.get("MLPF_RESULTS_DIR", ROOT / "results"))
FIGURES_DIR = Path(os.environ.get("MLPF_FIGURES_DIR", ROOT / "paper_figures"))

SPLITS = ("train", "val", "test")


def shown(path) -> str:
    """A path as logs record it: relative to the repository root when it lies inside it (a
    clone elsewhere records the same), else as it is; other text unchanged."""
    p = Path(str(path))
    if p.is_absolute():
        for q in (p, p.resolve()):  # as written (a venv's python is a link), then resolved
            try:
                return q.relative_to(ROOT).as_posix()
            except (ValueError, OSError):
                continue
    return str(path)


def command_line(argv: list[str]) -> list[str]:
    """The command that ran (interpreter and arguments), each path shown by :func:`shown`."""
    import sys

    return [shown(a) for a in (sys.executable, *argv)]


def name_part(name: str, what: str = "scale") -> str:
    """``name`` if it is one plain folder name (a scale, a method), else ValueError: a value
    with a path separator, ``..`` or nothing at all never becomes part of a path."""
    text = str(name)
    if text in ("", ".", "..") or "/" in text or os.sep in text or "\0" in text:
        raise ValueError(f"{what} {text!r} is not a name (no path separators)")
    return text


def data_dir(scale: str, split: str) -> Path:
    """Folder of generated Delphes-format files: ``data/<scale>/<split>/``."""
    return DATA_DIR / name_part(scale) / split


def results_dir(scale: str, method: str, seed: int) -> Path:
    """Raw logs of one search: ``results/<scale>/<method>/seed<k>/``."""
    return RESULTS_DIR / name_part(scale) / name_part(method, "method") / f"seed{seed}"
