"""Peak memory and time of the data reader on hostile files vs a real-sized file.

    .venv/bin/python benchmarks/bench_hostile_io.py                  # ~1 minute, < 1 GB
    .venv/bin/python benchmarks/bench_hostile_io.py --real data/smoke/train/<file>.pkl.bz2

Each file is summarised by ``python -m mlpf.data.inspect FILE`` in a fresh process; the
table gives its exit status, the first line of its stderr, its peak resident memory
(ru_maxrss from wait4, so only that process) and wall time. The reference is a 100-event
file written by mlpf/data/io.py's writer with 5000 elements per event (the size of a public
Delphes file at pileup 200) and, with ``--real``, any file given. The hostile files are the
fault classes of a review of the reader: dtype flags that make numpy read file bytes as
object pointers, a deeply nested dict key, declared sizes far above the bytes present, one
event reached 100 times through the pickle memo, a bz2 stream that decompresses past the cap,
an opcode flood, and a FIFO. ``--tree DIR`` runs the reader of another checkout (for a
before/after comparison). Writes a Markdown table to stdout and benchmarks/out/hostile_io.json.
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a plain script

from mlpf.data import io  # noqa: E402
from mlpf.data.format import Event  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "hostile_io.json"
TIMEOUT_S = 120


# -- pickle protocol-4 pieces, assembled by hand (nothing here is ever unpickled) ---------------
def su(s: str) -> bytes:
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def i4(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def glob(module: str, name: str) -> bytes:
    return su(module) + su(name) + b"\x93"


def tup(*parts: bytes) -> bytes:
    return b"(" + b"".join(parts) + b"t"


def dtype(name: str, order: str, flags: int) -> bytes:
    state = tup(i4(3), su(order), b"NNN", i4(-1), i4(-1), i4(flags))
    return glob("numpy", "dtype") + su(name) + b"\x89\x88\x87R" + state + b"b"


def array(shape, data: bytes, dt: bytes) -> bytes:
    head = glob("numpy._core.multiarray", "_reconstruct") + glob("numpy", "ndarray")
    head += i4(0) + b"\x85" + b"C\x01b" + b"\x87R"
    nbytes = b"\x8e" + struct.pack("<Q", len(data)) + data  # BINBYTES8
    return head + tup(i4(1), tup(*map(i4, shape)), dt, b"\x89", nbytes) + b"b"


def whole(x: bytes) -> bytes:
    """{"X": [x]}: the hostile part sits where an event's X array belongs."""
    return b"\x80\x04}" + su("X") + b"]" + x + b"as."


def real_sized_events(n_events=100, n_elem=5000, seed=0) -> list[Event]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_events):
        X = rng.normal(size=(n_elem, 12)).astype(np.float32)
        X[:, 0] = rng.integers(1, 3, n_elem)
        y = np.zeros((n_elem, 7), np.float32)
        y[:, 0] = rng.integers(0, 6, n_elem)
        y[:, 2:] = rng.normal(size=(n_elem, 5))
        out.append(Event(X, y, y.copy()))
    return out


def build(folder: Path) -> list[tuple[str, Path, str]]:
    """(fault class, file, what it declares) for every case."""
    cases: list[tuple[str, bytes | list[bytes], str]] = []  # a list: pieces of one stream
    f8 = dtype("f8", "<", 0)
    # the 156-byte class: a float dtype whose state sets the object/REFCOUNT flags
    cases.append(("dtype flags 63 on f8", whole(array((4,), b"\x41" * 32, dtype("f8", "|", 63))),
                  "file bytes as PyObject pointers"))
    cases.append(("object dtype O8", whole(array((4,), b"\x41" * 32, dtype("O8", "|", 63))),
                  "object array"))
    # the 65-byte class: a dict key nested 300,000 tuples deep
    cases.append(("nested key 300k", b"\x80\x04}]" + b"\x85" * 300_000 + i4(1) + b"s.",
                  "300,000 levels"))
    # the 213-byte class: a 2e7 x 12 array with 96 bytes of data
    cases.append(("shape 2e7x12, 96 B", whole(array((20_000_000, 12), b"\0" * 96, f8)),
                  "1.9 GB array"))
    cases.append(("bytes declared 960 MB", whole(b"\x8e" + struct.pack("<Q", 960_000_000)
                                                 + b"\0" * 96), "960 MB bytes object"))
    # one event (6400 x 12 float32) reached 100 times through the memo
    x = np.zeros((6400, 12), "<f4")
    x[:, 0] = 1
    memo = _memo_bomb(x, np.zeros((6400, 7), "<f4"))
    cases.append(("memo reuse x100", memo, "100 x 436 kB of arrays"))
    # a bz2 stream of valid-looking 9.6 MB zero arrays past the decompression cap
    chunk = array((100_000, 12), b"\0" * 9_600_000, f8)
    n = io.MAX_DECOMPRESSED_BYTES // 9_600_000 + 2
    cases.append(("bz2 bomb past the cap", [b"\x80\x04}" + su("X") + b"]("] + [chunk] * n
                  + [b"eu."], f"{n * 9.6 / 1000:.2f} GB decompressed"))
    cases.append(("opcode flood (lists)", b"\x80\x04" + b"]" * 2_000_000 + b".",
                  "2,000,000 empty lists"))
    out = []
    for k, (name, raw, declares) in enumerate(cases):
        path = folder / f"hostile{k}.pkl.bz2"
        comp = bz2.BZ2Compressor(9)
        with open(path, "wb") as f:
            for piece in raw if isinstance(raw, list) else [raw]:
                f.write(comp.compress(piece))
            f.write(comp.flush())
        out.append((name, path, declares))
    fifo = folder / "fifo.pkl.bz2"
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo)
        out.append(("FIFO", fifo, "never written"))
    return out


def _memo_bomb(x: np.ndarray, y: np.ndarray) -> bytes:
    """{"X": [x] * 100, "ygen": [y] * 100, "ycand": [y] * 100}: one BINPUT, 99 BINGETs each."""
    raw = b"\x80\x04}("
    for idx, (k, a) in enumerate((("X", x), ("ygen", y), ("ycand", y))):
        raw += su(k) + b"](" + array(a.shape, a.tobytes(), dtype("f4", "<", 0))
        raw += b"r" + struct.pack("<I", idx)  # LONG_BINPUT
        raw += (b"j" + struct.pack("<I", idx)) * 99 + b"e"  # LONG_BINGET x 99, APPENDS
    return raw + b"u."  # SETITEMS


# Forks the CLI from a small process: a child's ru_maxrss starts at its parent's resident size
# at fork time, so forking from this (larger) process would hide small peaks.
LAUNCHER = r"""
import json, os, signal, sys, time
path, timeout = sys.argv[1], float(sys.argv[2])
r, w = os.pipe()
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.close(r)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.dup2(w, 2)
    os.execv(sys.executable, [sys.executable, "-m", "mlpf.data.inspect", path])
os.close(w)
timed_out = False
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    if time.perf_counter() - t0 > timeout:
        os.kill(pid, signal.SIGKILL)
        timed_out = True
        done, status, usage = os.wait4(pid, 0)
        break
    time.sleep(0.01)
err = os.read(r, 1 << 16).decode(errors="replace")
print(json.dumps({"rc": "timeout" if timed_out else os.waitstatus_to_exitcode(status),
                  "wall_s": round(time.perf_counter() - t0, 2),
                  "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stderr": err}))
"""


def measure(path: Path, tree: Path) -> dict:
    """The inspect CLI on one file in a fresh process: exit status, stderr, peak RSS, time."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", LAUNCHER, str(path), str(TIMEOUT_S)], cwd=tree,
                         env=env, capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    err = r.pop("stderr").strip().splitlines()
    return {**r, "stderr_lines": len(err), "traceback": any("Traceback" in e for e in err),
            "first_line": err[0] if err else ""}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", nargs="*", default=[], help="more real files to measure")
    ap.add_argument("--tree", default=str(ROOT), help="checkout whose reader runs")
    args = ap.parse_args(argv)
    tree = Path(args.tree).resolve()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ref = folder / "real_sized_100ev.pkl.bz2"
        io.write_file(ref, real_sized_events())
        files = [("real-sized 100 events x 5000", ref, "valid")]
        files += [(f"given: {Path(p).name}", Path(p).resolve(), "valid") for p in args.real]
        files += build(folder)
        base = measure(folder / "missing.pkl.bz2", tree)  # interpreter + imports only
        files.insert(0, ("(no file: imports only)", folder / "missing.pkl.bz2", ""))
        for name, path, declares in files:
            r = base if name.startswith("(no file") else measure(path, tree)
            size = path.stat().st_size if path.is_file() else None
            rows.append({"case": name, "file_bytes": size, "declares": declares, **r})
    table = [[r["case"], r["file_bytes"], r["declares"], r["rc"], r["peak_rss_mb"], r["wall_s"],
              r["stderr_lines"], "yes" if r["traceback"] else "no",
              r["first_line"].split(": ", 2)[-1][:70]] for r in rows]
    print(f"reader: {tree}  (MAX_DECOMPRESSED_BYTES of this checkout: "
          f"{io.MAX_DECOMPRESSED_BYTES})")
    print(tabulate(table, headers=["case", "file B", "declares", "rc", "peak RSS MB", "wall s",
                                   "stderr lines", "traceback", "message"],
                   tablefmt="github"))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"tree": str(tree), "python": sys.version.split()[0],
                               "numpy": np.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
