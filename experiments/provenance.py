"""Where a result came from: package versions, git commit, timestamps and the machine.

    python -m experiments.provenance            # print the machine record as JSON
    python -m experiments.provenance --out F    # write it to F (e.g. beside shipped logs)

Every search's and table's metadata records these. Host names of containers and batch nodes
say little, so the machine record also names the CPU model, the cores this process may use,
the memory, the operating system and the GPUs (``nvidia-smi -L``, or torch if it is loaded).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from mlpf.cli import usable_cores  # one definition: the command lines cap workers with it

PACKAGES = ("deephyper", "mpi4py", "numpy", "pandas", "scikit-learn", "ConfigSpace", "torch",
            "torch_geometric", "optuna")


def versions(extra: tuple[str, ...] = ()) -> dict:
    """Python's version and those of the packages that change results (None: not installed)."""
    out = {"python": platform.python_version()}
    for pkg in (*PACKAGES, *extra):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit() -> str | None:
    """HEAD of the project's checkout, ``-dirty`` when tracked files differ; None without git."""
    from mlpf.paths import ROOT

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        return (sha + ("-dirty" if dirty.strip() else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def iso(t: float) -> str:
    """A time.time() value as an ISO 8601 UTC timestamp (seconds)."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gpus() -> list[str]:
    """GPU names from ``nvidia-smi -L``, else from torch when it is already loaded."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=10).stdout
            return [line.split(":", 1)[1].split("(UUID")[0].strip()
                    for line in out.splitlines() if line.startswith("GPU ") and ":" in line]
        except (OSError, subprocess.SubprocessError):
            pass
    if "torch" not in sys.modules:  # importing torch only for this is slow
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def machine_info() -> dict:
    """CPU model, usable and total cores, memory (GiB), OS, GPUs seen by torch, host."""
    return {
        "host": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cores_usable": usable_cores(),
        "cores_total": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "gpus": _gpus(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.provenance",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="write the JSON here instead of stdout")
    a = p.parse_args(argv)
    import torch  # noqa: F401  (so that GPUs are listed)

    text = json.dumps(machine_info(), indent=2, sort_keys=True) + "\n"
    if a.out:
        Path(a.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
