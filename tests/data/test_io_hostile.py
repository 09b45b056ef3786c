"""Hostile data files, by pickle opcode family: the reader (mlpf/data/io.py) refuses each one
with a one-line DataError, without running code, without crashing, and without allocating
what the file declares. Files are assembled opcode by opcode; nothing here unpickles them.
"""

import bz2
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
from io import BytesIO

import numpy as np
import pytest

from mlpf.data import io

# -- a tiny pickle assembler (protocol 4 opcodes) ---------------------------------------------
PROTO4 = b"\x80\x04"
MARK, STOP, REDUCE, BUILD, TUPLE, TUPLE1, TUPLE3 = b"(", b".", b"R", b"b", b"t", b"\x85", b"\x87"
EMPTY_DICT, EMPTY_LIST, APPEND, SETITEM, MEMOIZE = b"}", b"]", b"a", b"s", b"\x94"
NONE, TRUE, FALSE = b"N", b"\x88", b"\x89"


def su(s: str) -> bytes:  # SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def i(n: int) -> bytes:  # BININT
    return b"J" + struct.pack("<i", n)


def bb(b: bytes) -> bytes:  # BINBYTES
    return b"B" + struct.pack("<I", len(b)) + b


def glob(module: str, name: str) -> bytes:  # STACK_GLOBAL
    return su(module) + su(name) + b"\x93"


def tup(*parts: bytes) -> bytes:
    return MARK + b"".join(parts) + TUPLE


def dtype(name="f4", state=None, args=None) -> bytes:
    """numpy.dtype(name, False, True) with BUILD state, as numpy pickles it."""
    state = state if state is not None else tup(i(3), su("<"), NONE, NONE, NONE, i(-1), i(-1), i(0))
    args = args if args is not None else su(name) + FALSE + TRUE + TUPLE3
    return glob("numpy", "dtype") + args + REDUCE + state + BUILD


def array(shape, raw: bytes, dt: bytes | None = None, version=True) -> bytes:
    """numpy's _reconstruct(ndarray, (0,), b'b') + BUILD (1, shape, dtype, False, raw)."""
    dt = dt if dt is not None else dtype()
    head = glob("numpy._core.multiarray", "_reconstruct") + glob("numpy", "ndarray")
    head += i(0) + TUPLE1 + bb(b"b") + TUPLE3 + REDUCE
    state = tup(*([i(1)] if version else []), tup(*map(i, shape)), dt, FALSE, bb(raw))
    return head + state + BUILD


def in_file(x: bytes) -> bytes:
    """A whole pickle: {"X": [x]} (the hostile part is always reached before validation)."""
    return PROTO4 + EMPTY_DICT + su("X") + EMPTY_LIST + x + APPEND + SETITEM + STOP


def write(path, raw: bytes):
    path.write_bytes(bz2.compress(raw))
    return path


def good_event_file(n=3) -> bytes:
    """A complete valid file through the assembler: 1 event of n tracks, all-zero targets."""
    X = np.zeros((n, 12), "<f4")
    X[:, 0] = 2
    parts = [PROTO4, EMPTY_DICT]
    for key, a in (("X", X), ("ygen", np.zeros((n, 7), "<f4")), ("ycand", np.zeros((n, 7), "<f4"))):
        parts += [su(key), EMPTY_LIST, array(a.shape, a.tobytes()), APPEND, SETITEM]
    return b"".join(parts) + STOP


def refused(tmp_path, raw: bytes, match: str, name="bad.pkl.bz2"):
    path = write(tmp_path / name, raw)
    with pytest.raises(io.DataError, match=match) as exc:
        io.read_file(path)
    text = str(exc.value)
    assert text.startswith(str(path)) and "\n" not in text
    return text


# -- the assembler writes what numpy writes ----------------------------------------------------
def test_assembled_array_is_numpys_format(tmp_path):
    a = np.arange(24, dtype="<f4").reshape(2, 12)
    raw = PROTO4 + array(a.shape, a.tobytes()) + STOP
    np.testing.assert_array_equal(pickle.loads(raw), a)  # our own benign bytes
    events = io.read_file(write(tmp_path / "ok.pkl.bz2", good_event_file(4)))
    assert len(events) == 1 and events[0].X.shape == (4, 12)
    no_version = PROTO4 + array(a.shape, a.tobytes(), version=False) + STOP
    np.testing.assert_array_equal(pickle.loads(no_version), a)


# -- GLOBAL / REDUCE: only the names a numpy array pickle uses, only as numpy uses them ---------
@pytest.mark.parametrize("module,name", [
    ("posix", "system"), ("os", "system"), ("builtins", "eval"), ("builtins", "getattr"),
    ("numpy", "frombuffer"), ("numpy.core.multiarray", "scalar"), ("numpy", "load"),
    ("builtins", "dict"), ("copyreg", "_reconstructor"), ("numpy.lib.format", "read_array"),
])
def test_disallowed_callable(tmp_path, module, name):
    raw = in_file(glob(module, name) + tup(su("touch pwned")) + REDUCE)
    refused(tmp_path, raw, f"refused to load {module}.{name}")
    text_global = PROTO4 + b"c" + f"{module}\n{name}\n".encode() + STOP  # the GLOBAL opcode
    refused(tmp_path, text_global, "refused to load", "g.pkl.bz2")


@pytest.mark.parametrize("call,match", [
    (glob("numpy", "ndarray") + tup(i(3)) + REDUCE, "calls numpy.ndarray"),
    (glob("numpy._core.multiarray", "_reconstruct") + glob("numpy", "ndarray")
     + tup(i(10**9)) + bb(b"b") + TUPLE3 + REDUCE, "_reconstruct with arguments"),
    (glob("_codecs", "encode") + su("abc") + su("rot13") + b"\x86" + REDUCE, "_codecs.encode"),
    (glob("builtins", "bytes") + tup(i(10**9)) + REDUCE, "builtins.bytes with arguments"),
    (glob("numpy._core.numeric", "_frombuffer") + tup(bb(b"\0" * 8), dtype(), tup(i(2)),
                                                      su("K")) + REDUCE, "_frombuffer"),
    (su("x") + tup() + REDUCE, "calls str"),
])
def test_allowed_name_used_another_way(tmp_path, call, match):
    refused(tmp_path, in_file(call), match)


# -- dtypes: only plain numeric names, only numpy's plain state -------------------------------
def _state(order="<", sub=NONE, names=NONE, fields=NONE, elsize=-1, align=-1, flags=0, extra=b""):
    return tup(i(3), su(order), sub, names, fields, i(elsize), i(align), i(flags), extra)


@pytest.mark.parametrize("dt,match", [
    (dtype("O8", state=_state("|", flags=63)), "non-numeric dtype 'O8'"),
    (dtype("O", state=_state("|")), "non-numeric dtype 'O'"),
    (dtype("V8", state=_state("|")), "non-numeric dtype 'V8'"),
    (dtype("U4"), "non-numeric dtype 'U4'"),
    (dtype("M8"), "non-numeric dtype 'M8'"),
    # the REFCOUNT / ITEM_HASOBJECT flags on a float: numpy would read file bytes as pointers
    (dtype("f8", state=_state("|", flags=1)), "dtype state"),
    (dtype("f8", state=_state("|", flags=63)), "dtype state"),
    (dtype("f8", state=_state(elsize=64)), "dtype state"),
    (dtype("f8", state=_state(fields=EMPTY_DICT)), "dtype state"),
    (dtype("f8", state=_state(names=tup(su("a")))), "dtype state"),
    (dtype("f8", state=_state(sub=tup(dtype(), tup(i(2))))), "dtype state"),
    (dtype("f8", state=_state(extra=EMPTY_DICT)), "dtype state"),  # version-4 metadata
    (dtype("f8", state=_state(order="!")), "dtype state"),
    (dtype("f8", state=tup(i(4), su("<"), NONE, NONE, NONE, i(-1), i(-1), i(0), NONE)),
     "dtype state"),
    (dtype("f8", args=su("f8") + i(2) + i(1) + TUPLE3), "numpy.dtype with arguments"),
    (dtype("f8", args=su("f8") + FALSE + su("x") + TUPLE3), "numpy.dtype with arguments"),
    (dtype("f8", args=i(8) + TUPLE1), "numpy.dtype with arguments"),
    (dtype() + _state() + BUILD, "BUILD on a dtype"),  # a second state
])
def test_crafted_dtype(tmp_path, dt, match):
    refused(tmp_path, in_file(array((1,), b"\0" * 8, dt)), match)


@pytest.mark.parametrize("dt,ref", [
    (dtype("f8", state=_state(">")), ">f8"),
    (dtype("f4", args=su("f4") + i(0) + i(1) + TUPLE3), "<f4"),  # older numpy: ints, not bools
    (dtype("i2", args=su("i2") + TUPLE1), "<i2"),
    (dtype("u1", state=_state("|")), "u1"),
    (dtype("b1", state=_state("|")), "?"),
])
def test_other_numeric_dtypes_are_read(dt, ref):
    a = (np.arange(8) % 2).astype(ref).reshape(2, 4)
    obj, _ = io._load(BytesIO(PROTO4 + array(a.shape, a.tobytes(), dt) + STOP), 1 << 20)
    assert io._unwrap(obj).dtype == a.dtype
    np.testing.assert_array_equal(io._unwrap(obj), a)


# -- array data: shape x itemsize must be exactly the bytes in the file ------------------------
@pytest.mark.parametrize("shape,nbytes", [((2, 12), 95), ((2, 12), 97), ((0, 12), 4),
                                          ((3,), 0)])
def test_byte_count_not_matching_shape(tmp_path, shape, nbytes):
    refused(tmp_path, in_file(array(shape, b"\0" * nbytes)), "needs .* bytes, the file holds")


@pytest.mark.parametrize("state,match", [
    (tup(i(1), tup(i(-1), i(12)), dtype(), FALSE, bb(b"")), "shape"),
    (tup(i(1), tup(*[i(1)] * 9), dtype(), FALSE, bb(b"\0" * 4)), "shape"),
    (tup(i(1), tup(i(2), su("12")), dtype(), FALSE, bb(b"")), "shape"),
    (tup(i(1), tup(i(1)), su("f4"), FALSE, bb(b"\0" * 4)), "dtype is str"),
    (tup(i(1), tup(i(1)), dtype(), FALSE, EMPTY_LIST), "array data is list"),
    (tup(i(2), tup(i(1)), dtype(), FALSE, bb(b"\0" * 4)), "array state"),
    (tup(i(1), tup(i(1)), dtype(), i(5), bb(b"\0" * 4)), "array state"),
])
def test_crafted_array_state(tmp_path, state, match):
    head = glob("numpy.core.multiarray", "_reconstruct") + glob("numpy", "ndarray")
    head += i(0) + TUPLE1 + bb(b"b") + TUPLE3 + REDUCE
    refused(tmp_path, in_file(head + state + BUILD), match)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_huge_declared_shape_with_few_bytes_allocates_nothing(tmp_path):
    # 2e7 x 12 float32 (960 MB) declared, 96 bytes present: refused on the byte count
    path = write(tmp_path / "shape.pkl.bz2", in_file(array((20_000_000, 12), b"\0" * 96)))
    peak = _peak_bytes(lambda: pytest.raises(io.DataError, io.read_file, path))
    assert peak < 2 << 20, peak
    # the same bytes declared through BINBYTES8: the declared length is refused before reading
    decl = b"\x8e" + struct.pack("<Q", 960_000_000) + b"\0" * 96
    path = write(tmp_path / "bytes.pkl.bz2", in_file(decl))
    with pytest.raises(io.DataError, match="larger than any array"):
        io.read_file(path)
    peak = _peak_bytes(lambda: pytest.raises(io.DataError, io.read_file, path))
    assert peak < 2 << 20, peak


def test_rows_per_event_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "MAX_ELEMENTS_PER_EVENT", 10)
    refused(tmp_path, good_event_file(11), "11 elements, more than the limit of 10")
    assert len(io.read_file(write(tmp_path / "ok.pkl.bz2", good_event_file(10)))) == 1


# -- structure: nesting, keys, opcodes outside the subset --------------------------------------
DEEP = 300_000


def test_deep_nesting_in_a_subprocess(tmp_path):
    # a dict key nested 300,000 tuples deep (hashing it recursed in C) and a deep list chain
    key = PROTO4 + EMPTY_DICT + EMPTY_LIST + TUPLE1 * DEEP + i(1) + SETITEM + STOP
    lists = PROTO4 + EMPTY_LIST * DEEP + APPEND * (DEEP - 1) + STOP
    tuples = PROTO4 + MARK * 60 + i(1) + TUPLE * 60 + TUPLE1 * DEEP + STOP
    paths = [write(tmp_path / f"{n}.pkl.bz2", raw)
             for n, raw in (("key", key), ("lists", lists), ("tuples", tuples))]
    r = subprocess.run([sys.executable, "-m", "mlpf.data.inspect", *map(str, paths)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr[-500:])
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and len(lines) == 3, r.stderr[-2000:]
    for p, line in zip(paths, lines):
        assert str(p) in line and "nested more than 64" in line, line


def test_nesting_limit_is_exact(tmp_path):
    ok = PROTO4 + i(1) + TUPLE1 * io.MAX_DEPTH + STOP
    obj, _ = io._load(BytesIO(ok), 1 << 20)
    refused(tmp_path, PROTO4 + i(1) + TUPLE1 * (io.MAX_DEPTH + 1) + STOP, "nested more than")
    refused(tmp_path, PROTO4 + MARK * (io.MAX_DEPTH + 1) + STOP, "MARKs nested")


def test_dict_key_must_be_a_plain_value(tmp_path):
    raw = PROTO4 + EMPTY_DICT + i(1) + TUPLE1 + i(2) + SETITEM + STOP
    refused(tmp_path, raw, "dict key of type tuple")


def test_container_changed_after_placing_is_refused(tmp_path):
    # L = []; D = {"X": L}; then L grows: a way to deepen a structure after its depth was known
    raw = PROTO4 + EMPTY_LIST + MEMOIZE + EMPTY_DICT + su("X") + b"h\x00" + SETITEM
    raw += b"h\x00" + i(1) + APPEND + STOP
    refused(tmp_path, raw, "changes a list after placing it")


@pytest.mark.parametrize("raw,match", [
    (b"(dp0\nS'X'\n.", "no PROTO"),  # protocol 0 (text)
    (b"\x80\x01}.", "protocol 1"),
    (b"\x80\x06}.", "protocol 6"),
    (PROTO4 + b"\x80\x04}.", "opcode PROTO"),
    (PROTO4 + b"P1\n.", "opcode PERSID"),
    (PROTO4 + b"\x97.", "opcode NEXT_BUFFER"),
    (PROTO4 + b"\x82\x01.", "opcode EXT1"),
    (PROTO4 + b"(" + glob("builtins", "object") + b"\x81.", "refused to load"),
    (PROTO4 + b"i__main__\nX\n.", "opcode INST"),
    (PROTO4 + b"I1\n.", "opcode INT"),
    (PROTO4 + b"\x8b\xff\xff\xff\x7f.", "opcode LONG4"),
    (PROTO4 + b"\x8a\x09" + b"\1" * 9 + b".", "9-byte integer"),
    (PROTO4 + b"h\x05.", "memo entry 5"),
    (PROTO4 + b"0.", "stack underflow"),
    (PROTO4 + b"(0.", "stack underflow"),
    (PROTO4 + b"NN.", "exactly one object"),
    (PROTO4 + b"\x8c\x02\xff\xfe.", "not UTF-8"),
    (PROTO4 + b"c" + b"a" * 300 + b"\n", "GLOBAL name longer"),
    (PROTO4 + b"N" * 5 + b"u.", "MARK expected"),
    (PROTO4 + b"(" + b"N" * 3 + b"d.", "odd number"),
    (PROTO4 + b"\x8c\x01x" + b"N" + b"b.", "BUILD on str"),
])
def test_opcodes_outside_the_format(tmp_path, raw, match):
    refused(tmp_path, raw, match)


def test_opcode_count_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "MAX_OPCODES", 1000)
    refused(tmp_path, PROTO4 + b"N0" * 600 + b"N.", "more than 1000 opcodes")
    obj, _ = io._load(BytesIO(PROTO4 + b"N0" * 400 + b"N."), 1 << 20)
    assert obj is None


@pytest.mark.parametrize("top,match", [
    (i(3), "top level is int"),
    (EMPTY_LIST, "top level is list"),
    (array((1,), b"\0" * 4), "top level is an array, expected a dict"),
    (glob("numpy._core.multiarray", "_reconstruct") + glob("numpy", "ndarray")
     + i(0) + TUPLE1 + bb(b"b") + TUPLE3 + REDUCE, "top level is an array without data"),
    (dtype(), "top level is a dtype"),
])
def test_wrong_top_level_type(tmp_path, top, match):
    refused(tmp_path, PROTO4 + top + STOP, match)


def test_unbuilt_array_in_the_lists(tmp_path):
    head = glob("numpy._core.multiarray", "_reconstruct") + glob("numpy", "ndarray")
    head += i(0) + TUPLE1 + bb(b"b") + TUPLE3 + REDUCE
    raw = PROTO4 + EMPTY_DICT
    for key in ("X", "ygen", "ycand"):
        raw += su(key) + EMPTY_LIST + head + APPEND + SETITEM
    refused(tmp_path, raw + STOP, "event 0: X is an array without data")


# -- memo reuse: one array reached many times --------------------------------------------------
def test_memo_reuse_bomb_is_refused_before_converting(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 12)).astype(np.float32)
    X[:, 0] = 1
    y = np.zeros((2000, 7), np.float32)
    obj = {"X": [X] * 100, "ygen": [y] * 100, "ycand": [y] * 100}  # pickle memoizes: BINGET
    path = write(tmp_path / "memo.pkl.bz2", pickle.dumps(obj, protocol=4))
    with pytest.raises(io.DataError, match="referenced many times over"):
        io.read_file(path)
    peak = _peak_bytes(lambda: pytest.raises(io.DataError, io.read_file, path))
    one_copy = X.nbytes + 2 * y.nbytes  # 208 kB; the 100 references would be 20.8 MB
    assert peak < 6 * one_copy, peak


def test_ycand_sharing_ygen_is_still_read(tmp_path):
    X = np.zeros((500, 12), np.float32)
    X[:, 0] = 2
    y = [np.zeros((500, 7), np.float32)]
    path = write(tmp_path / "shared.pkl.bz2", pickle.dumps({"X": [X], "ygen": y, "ycand": y}, 4))
    ev = io.read_file(path)[0]
    assert ev.ygen.shape == ev.ycand.shape == (500, 7) and ev.ygen is not ev.ycand


# -- decompression: the cap holds while reading ------------------------------------------------
def test_decompression_cap_is_checked_while_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "MAX_DECOMPRESSED_BYTES", 1 << 20)
    # 8 MB of zeros in one declared bytes object (~50 bytes compressed): refused at the
    # declaration, before any of it is decompressed
    decl = b"\x8e" + struct.pack("<Q", 8 << 20) + b"\0" * (8 << 20)
    path = write(tmp_path / "bomb.pkl.bz2", in_file(decl))
    assert path.stat().st_size < 1000
    peak = _peak_bytes(lambda: pytest.raises(io.DataError, io.read_file, path))
    assert peak < 1 << 20, peak
    refused(tmp_path, in_file(decl), "size limit")
    # many small objects past the cap (2 MB of 200-byte strings): stops at the cap
    refused(tmp_path, PROTO4 + (su("z" * 200) + b"0") * 10_000 + b"N.", "size limit", "s.pkl.bz2")


def test_truncated_declared_object(tmp_path):
    decl = b"\x8e" + struct.pack("<Q", 5 << 20) + b"\0" * 100
    refused(tmp_path, PROTO4 + decl, "truncated")


# -- special files -----------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_passed_to_inspect_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.pkl.bz2"
    os.mkfifo(fifo)
    r = subprocess.run([sys.executable, "-m", "mlpf.data.inspect", str(fifo)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {fifo}: is a FIFO, expected a regular "
                                             ".pkl.bz2 file"]
    with pytest.raises(io.DataError, match="is a FIFO"):
        io.load_events(tmp_path)  # also inside a folder


def test_directory_and_device_refused(tmp_path):
    with pytest.raises(io.DataError, match="is a directory"):
        io.read_file(tmp_path)
    if os.path.exists("/dev/zero"):
        with pytest.raises(io.DataError, match="is a character device"):
            io.read_file("/dev/zero")
    with pytest.raises(io.DataError, match="no such file"):
        io.read_file(tmp_path / "missing.pkl.bz2")
    with pytest.raises(io.DataError, match="cannot open"):
        io.read_file("a\0b")


def test_inspect_on_hostile_files_one_line_each(tmp_path):
    """The review's crash classes through the CLI, in one process: exit 2, one line each."""
    crafted = {
        "flags": in_file(array((1,), b"\x41" * 8, dtype("f8", state=_state("|", flags=63)))),
        "object": in_file(array((1,), b"\x41" * 8, dtype("O8", state=_state("|", flags=63)))),
        "shape": in_file(array((20_000_000, 12), b"\0" * 96)),
        "eval": in_file(glob("builtins", "eval") + tup(su("1+1")) + REDUCE),
        "trunc": in_file(array((4, 12), b"\0" * 192))[:-30],
    }
    paths = [write(tmp_path / f"{k}.pkl.bz2", v) for k, v in crafted.items()]
    good = write(tmp_path / "good.pkl.bz2", good_event_file(3))
    r = subprocess.run([sys.executable, "-m", "mlpf.data.inspect", *map(str, paths), str(good)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == len(paths) and "Traceback" not in r.stderr, r.stderr
    for p, line in zip(paths, lines):
        assert line.startswith(f"error: {p}: "), line
    assert "good.pkl.bz2" in r.stdout
