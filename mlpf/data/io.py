"""Safe reader and atomic writer for Delphes-format ``.pkl.bz2`` files.

The public dataset is pickled, and unpickling runs whatever callables a file names. Files
come from the internet, so :class:`_SafeUnpickler` admits only what the dataset needs
(dict, list, numpy arrays and dtypes) and refuses everything else before anything runs.

    events = load_events(["data/small/train"])           # a folder, or files
    for ev in iter_events(paths): ev.X, ev.ygen, ev.ycand
"""

from __future__ import annotations

import bz2
import os
import pickle
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from mlpf.data.format import ELEM_TYPES, KEYS, N_CLASSES, N_X, N_Y, Event

SUFFIX = ".pkl.bz2"
# A decompression bomb is refused before it fills memory: no real file is near this.
MAX_DECOMPRESSED_BYTES = 4 << 30

# (module, name) pairs a numpy array pickle refers to, numpy 1.x and 2.x spellings, and
# the latin-1 bytes helper of pickle protocol 2. Nothing here can run arbitrary code.
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
    ("builtins", "dict"),
    ("builtins", "list"),
}


class DataError(ValueError):
    """A file that cannot be used: names the file and the problem in one line."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: the file names a callable the dataset "
                "format does not use (possible code execution)"
            )
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id: not part of the dataset format")


class _SizeLimitExceeded(Exception):
    pass


class _CappedReader:
    """File-like view that refuses to hand out more than ``limit`` decompressed bytes."""

    def __init__(self, raw, limit: int):
        self._raw, self._left = raw, limit

    def _count(self, n: int) -> None:
        self._left -= n
        if self._left < 0:
            raise _SizeLimitExceeded

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._count(len(data))
        return data

    def readline(self) -> bytes:
        data = self._raw.readline()
        self._count(len(data))
        return data

    def readinto(self, buf) -> int:
        n = self._raw.readinto(buf)
        self._count(n)
        return n


def _validate(obj, path) -> list[Event]:
    if not isinstance(obj, dict):
        raise DataError(path, f"top level is {type(obj).__name__}, expected a dict")
    missing = [k for k in KEYS if k not in obj]
    if missing:
        raise DataError(path, f"missing key(s) {', '.join(missing)}; has {sorted(map(str, obj))}")
    lists = [obj[k] for k in KEYS]
    for k, v in zip(KEYS, lists):
        if not isinstance(v, list):
            raise DataError(path, f"{k} is {type(v).__name__}, expected a list of arrays")
    if len({len(v) for v in lists}) != 1:
        raise DataError(path, "X, ygen, ycand have different numbers of events: "
                        + ", ".join(str(len(v)) for v in lists))
    events = []
    for i, (x, yg, yc) in enumerate(zip(*lists)):
        arrays = {}
        for key, a, width in (("X", x, N_X), ("ygen", yg, N_Y), ("ycand", yc, N_Y)):
            if not isinstance(a, np.ndarray):
                raise DataError(path, f"event {i}: {key} is {type(a).__name__}, expected an array")
            if a.dtype.kind not in "fiub":
                raise DataError(path, f"event {i}: {key} has non-numeric dtype {a.dtype}")
            if a.ndim != 2 or a.shape[1] != width:
                raise DataError(path, f"event {i}: {key} has shape {a.shape}, "
                                f"expected (n, {width})")
            a = a.astype(np.float32)
            if not np.isfinite(a).all():
                raise DataError(path, f"event {i}: {key} has non-finite values")
            arrays[key] = a
        n = {a.shape[0] for a in arrays.values()}
        if len(n) != 1:
            raise DataError(path, f"event {i}: X, ygen, ycand have different element counts "
                            + str([a.shape[0] for a in arrays.values()]))
        bad_type = ~np.isin(arrays["X"][:, 0], ELEM_TYPES)
        if bad_type.any():
            raise DataError(path, f"event {i}: element type {arrays['X'][bad_type][0, 0]:g} "
                            f"(allowed: {list(ELEM_TYPES)})")
        for key in ("ygen", "ycand"):
            cls = arrays[key][:, 0]
            if ((cls != np.round(cls)) | (cls < 0) | (cls >= N_CLASSES)).any():
                raise DataError(path, f"event {i}: {key} has class ids outside 0..{N_CLASSES - 1}")
            if (~np.isin(arrays[key][:, 1], (-1.0, 0.0, 1.0))).any():
                raise DataError(path, f"event {i}: {key} has charges outside -1, 0, 1")
        events.append(Event(**arrays))
    return events


def read_file(path: str | os.PathLike) -> list[Event]:
    """Read and validate one file. Raises :class:`DataError` with a one-line reason."""
    path = Path(path)
    try:
        with bz2.open(path, "rb") as f:
            obj = _SafeUnpickler(_CappedReader(f, MAX_DECOMPRESSED_BYTES)).load()
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory") from None
    except _SizeLimitExceeded:
        raise DataError(path, f"decompressed data exceeds the size limit "
                        f"({MAX_DECOMPRESSED_BYTES} bytes)") from None
    except pickle.UnpicklingError as e:
        raise DataError(path, f"unsafe or corrupt pickle: {e}") from None
    except EOFError:
        raise DataError(path, "truncated file (ended before the end of the data)") from None
    except OSError as e:  # bz2 raises OSError on a stream that is not bz2
        raise DataError(path, f"not a readable bz2 file ({e})") from None
    except Exception as e:  # malformed opcodes raise all sorts of errors
        raise DataError(path, f"corrupt pickle ({type(e).__name__}: {e})") from None
    return _validate(obj, path)


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders replaced by their ``*.pkl.bz2`` files in sorted order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*" + SUFFIX))
            if not found:
                raise DataError(p, f"folder holds no {SUFFIX} files")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise DataError(p, "no such file or folder")
    return out


def iter_events(paths: Iterable[str | os.PathLike]) -> Iterator[Event]:
    """Validated events from files and folders, one file in memory at a time."""
    for f in expand_paths(paths):
        yield from read_file(f)


def load_events(paths: Iterable[str | os.PathLike] | str | os.PathLike,
                max_events: int | None = None) -> list[Event]:
    """All events (up to ``max_events``) from files and folders, validated."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    events: list[Event] = []
    for ev in iter_events(paths):
        if max_events is not None and len(events) >= max_events:
            break
        events.append(ev)
    return events


def write_file(path: str | os.PathLike, events: Sequence[Event]) -> None:
    """Write events in the dataset format, atomically: a temporary name, then a rename.

    An interrupted write leaves no file under ``path``; the same events give the same bytes.
    """
    path = Path(path)
    obj = {k: [np.ascontiguousarray(getattr(ev, k), dtype=np.float32) for ev in events]
           for k in KEYS}
    data = bz2.compress(pickle.dumps(obj, protocol=4), compresslevel=9)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
