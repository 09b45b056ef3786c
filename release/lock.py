"""The lock file: every package of the environment, pinned, with its sha256.

    python release/lock.py            # rewrite requirements.lock (needs the package index)
    python release/lock.py --check    # requirements.lock agrees with the requirement files
                                      # and with the installed .venv (offline)

``requirements.txt`` is resolved with its dependencies; ``requirements-peers.txt``,
``requirements-ray.txt`` and ``requirements-neps.txt`` are installed on top of it with
``--no-deps`` (as the Makefile does), so they are locked as they are. pip's installation
report (``pip install --dry-run --ignore-installed --report``) gives each package's version
and the sha256 of the file pip would install: torch's is the CPU wheel this machine installs
(a GPU node installs the CUDA build of the same version, whose hash differs: install it with
``requirements.txt`` there). Reinstall exactly this environment with

    pip install --require-hashes --no-deps -r requirements.lock
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
MAIN = "requirements.txt"
EXTRAS = ("requirements-peers.txt", "requirements-ray.txt", "requirements-neps.txt")
INSTALLERS = ("pip", "setuptools", "wheel")
PIN = re.compile(r"^([A-Za-z0-9_.\[\]-]+)==([^\s;#]+)")


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one -; extras dropped."""
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of the ``name==version`` lines of a requirement file."""
    out = {}
    for line in path.read_text().splitlines():
        m = PIN.match(line.strip())
        if m:
            out[canonical(m.group(1))] = m.group(2)
    return out


def _report(args: list[str]) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet",
                        "--ignore-installed", "--report", str(report), *args], check=True,
                       cwd=ROOT)
        return json.loads(report.read_text())["install"]


def resolve() -> dict[str, tuple[str, str]]:
    """{canonical name: (version, sha256)} of the whole environment."""
    found = {}
    items = _report(["-r", MAIN]) + _report(["--no-deps", *sum((["-r", f] for f in EXTRAS),
                                                                 [])])
    for it in items:
        name = canonical(it["metadata"]["name"])
        hashes = it.get("download_info", {}).get("archive_info", {}).get("hashes") or {}
        if "sha256" not in hashes:
            raise SystemExit(f"lock: no sha256 for {name} from {it['download_info']}")
        found[name] = (it["metadata"]["version"], hashes["sha256"])
    return dict(sorted(found.items()))


def write(found: dict[str, tuple[str, str]]) -> None:
    lines = ["# The whole environment, pinned with hashes: written by `python release/lock.py`",
             "# (make lock) from requirements.txt (resolved) and requirements-{peers,ray,neps}"
             ".txt (--no-deps).",
             "# Install exactly this: pip install --require-hashes --no-deps -r "
             "requirements.lock"]
    lines += [f"{n}=={v} \\\n    --hash=sha256:{h}" for n, (v, h) in found.items()]
    LOCK.write_text("\n".join(lines) + "\n")


def read_lock(path: Path = LOCK) -> dict[str, tuple[str, str]]:
    text = path.read_text().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})\s*$", line.strip())
        if m:
            out[m.group(1)] = (m.group(2), m.group(3))
    return out


def installed() -> dict[str, str]:
    """{canonical name: version} of the running interpreter's environment."""
    from importlib.metadata import distributions

    return {canonical(d.metadata["Name"]): d.version for d in distributions()}


def problems(lock: dict, have: dict | None) -> list[str]:
    """What disagrees: a pin of a requirement file that the lock lacks or pins otherwise, and
    (with ``have``) a locked package installed at another version or not at all."""
    out = []
    for f in (MAIN, *EXTRAS):
        for name, v in pins(ROOT / f).items():
            if name not in lock:
                out.append(f"{f}: {name}=={v} is not in requirements.lock")
            elif lock[name][0] != v and lock[name][0].split("+")[0] != v:  # 2.13.0+cpu
                out.append(f"{f}: {name}=={v}, requirements.lock has {lock[name][0]}")
    if have is not None:
        for name, (v, _) in lock.items():
            if name in INSTALLERS:  # come with the virtual environment, at its versions
                continue
            if have.get(name) is None:
                out.append(f"{name}=={v} is locked but not installed")
            elif have[name] != v:
                out.append(f"{name}: installed {have[name]}, locked {v}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python release/lock.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true",
                   help="compare requirements.lock with the requirement files and this "
                        "environment (offline)")
    p.add_argument("--no-env", action="store_true", help="with --check: skip the environment")
    a = p.parse_args(argv)
    if a.check:
        if not LOCK.is_file():
            print("error: no requirements.lock (make lock)", file=sys.stderr)
            return 2
        bad = problems(read_lock(), None if a.no_env else installed())
        for line in bad:
            print(f"lock: {line}", file=sys.stderr)
        print(f"requirements.lock: {len(read_lock())} packages, "
              f"{'agrees' if not bad else f'{len(bad)} disagreements'}")
        return 1 if bad else 0
    found = resolve()
    write(found)
    print(f"requirements.lock: {len(found)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
