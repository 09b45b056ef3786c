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


def data_dir(scale: str, split: str) -> Path:
    """Folder of generated Delphes-format files: ``data/<scale>/<split>/``."""
    return DATA_DIR / scale / split


def results_dir(scale: str, method: str, seed: int) -> Path:
    """Raw logs of one search: ``results/<scale>/<method>/seed<k>/``."""
    return RESULTS_DIR / scale / method / f"seed{seed}"
