"""Safe reader and atomic writer for Delphes-format ``.pkl.bz2`` files.

The public dataset is pickled, and files come from the internet. ``pickle.load`` runs whatever
callables a file names, and even numpy's own array and dtype reconstruction trusts the file
(a dtype state can mark file bytes as object pointers). So this module does not unpickle:
:class:`_Interpreter` executes the small subset of pickle opcodes the dataset needs (protocol
2-5 dicts, lists, tuples, strings, numbers, and numpy arrays as ``pickle.dumps`` of an ndarray
writes them with numpy 1.x and 2.x) and builds every array itself with ``np.frombuffer`` from
(shape, a dtype name on a short numeric allow-list, raw bytes). No object, dtype or callable
from the file reaches numpy or Python's unpickler.

Everything a file can make the reader allocate is bounded before it is allocated:
decompressed bytes (checked while reading), the size of one string or array, the number of
opcodes, the nesting depth, array bytes against the bytes actually in the file (so one array
referenced many times through the pickle memo is refused), and elements per event.

    events = load_events(["data/small/train"])           # a folder, or files
    for ev in iter_events(paths): ev.X, ev.ygen, ev.ycand
"""

from __future__ import annotations

import bz2
import math
import os
import pickle
import pickletools
import stat
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from mlpf.data.format import ELEM_TYPES, KEYS, N_CLASSES, N_X, N_Y, Event

SUFFIX = ".pkl.bz2"

# Limits. A real file (100 events of at most 6400 elements, float64 at worst) decompresses to
# about 133 MB and needs ~9,000 opcodes; every limit leaves a wide margin above that. A file
# within all of them can still make the reader hold about MAX_DECOMPRESSED_BYTES.
MAX_DECOMPRESSED_BYTES = 512 << 20  # checked while reading, before more is decompressed
MAX_ELEMENTS_PER_EVENT = 100_000  # rows of one event's X / ygen / ycand
# One string or array at most: a float64 X at the row limit.
MAX_OBJECT_BYTES = MAX_ELEMENTS_PER_EVENT * N_X * 8
# ~90 opcodes an event (protocol 2; 43 with protocol 5), so ~11,000 events a file. This also
# bounds the stack, the memo and the containers a file can make: ~100 MB at worst.
MAX_OPCODES = 1_000_000
MAX_DEPTH = 64  # containers in containers; the format needs 4
# Array bytes the event lists may reach per decompressed byte of the file: 1 without
# sharing; a writer that stores ycand as the same arrays as ygen reaches 26/19 = 1.37.
MAX_REUSE_FACTOR = 2

# Array element types a file may name (numpy's dtype names as pickled): numbers and bool only.
DTYPE_NAMES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"})
# The only dtype state numpy writes for those: (version, byte order, subarray, names, fields,
# elsize, alignment, flags). Flags 0 means no object references, no fields, no subarrays.
_DTYPE_BYTEORDERS = ("<", ">", "|", "=")
_DTYPE_STATE_REST = (None, None, None, -1, -1, 0)
_READ_CHUNK = 1 << 16

# (module, name) a numpy array pickle refers to, numpy 1.x and 2.x spellings, and the bytes
# helpers of protocol 2. They are never imported: each maps to a rule in _Interpreter._reduce.
_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("_codecs", "encode"): "encode",
    ("__builtin__", "bytes"): "bytes",
    ("builtins", "bytes"): "bytes",
}
_KEY_TYPES = (str, bytes, int, float, type(None))  # hashing these cannot recurse


class DataError(ValueError):
    """A file that cannot be used: names the file and the problem in one line."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # so that it crosses a process pool as itself, not a TypeError
        return (type(self), (self.path, self.problem))


class _Refused(Exception):
    """The pickle does something the dataset format does not; the message says what."""


class _Truncated(Exception):
    pass


class _SizeLimitExceeded(Exception):
    pass


class _Global:
    """A name from GLOBAL / STACK_GLOBAL that is on the allow-list; never imported."""

    __slots__ = ("kind", "name")

    def __init__(self, kind: str, name: str):
        self.kind, self.name = kind, name


class _Dtype:
    """``numpy.dtype(name)`` from the file, as a name on DTYPE_NAMES and a byte order."""

    __slots__ = ("name", "byteorder", "built")

    def __init__(self, name: str):
        self.name, self.byteorder, self.built = name, "=", False

    def numpy(self) -> np.dtype:
        return np.dtype(self.name).newbyteorder(self.byteorder)  # our constants only


class _PendingArray:
    """``_reconstruct(ndarray, (0,), b'b')``: an array whose BUILD state has not come yet."""

    __slots__ = ("array",)

    def __init__(self):
        self.array: np.ndarray | None = None


def _describe(obj) -> str:
    if isinstance(obj, _Global):
        return obj.name
    if isinstance(obj, _Dtype):
        return "a dtype"
    if isinstance(obj, _PendingArray):
        return "an array" if obj.array is not None else "an array without data"
    return type(obj).__name__


def _unwrap(obj):
    return obj.array if isinstance(obj, _PendingArray) and obj.array is not None else obj


def _same(a, b) -> bool:
    """``a == b`` for plain values, compared by type first so no file object's ``==`` runs."""
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _op_name(code: int) -> str:
    op = pickletools.code2op.get(chr(code))
    return op.name if op else f"0x{code:02x}"


class _Stream:
    """Decompressed bytes handed out on demand; refuses to go past ``limit`` in total.

    The limit is checked before each read, so a decompression bomb stops at the limit and an
    object declared larger than the limit is refused before any of it is decompressed.
    """

    def __init__(self, raw, limit: int):
        self._raw, self._limit = raw, limit
        self._buf, self._pos = b"", 0
        self.consumed = 0

    def _reserve(self, n: int) -> None:
        if n > self._limit - self.consumed:
            raise _SizeLimitExceeded
        self.consumed += n

    def _more(self) -> None:
        chunk = self._raw.read(_READ_CHUNK)
        if not chunk:
            raise _Truncated
        self._buf, self._pos = self._buf[self._pos:] + chunk, 0

    def byte(self) -> int:
        self._reserve(1)
        if self._pos >= len(self._buf):
            self._more()
        b = self._buf[self._pos]
        self._pos += 1
        return b

    def read(self, n: int) -> bytes:
        self._reserve(n)
        have = len(self._buf) - self._pos
        if n <= have:
            out = self._buf[self._pos:self._pos + n]
            self._pos += n
            return out
        parts = [self._buf[self._pos:]]
        self._buf, self._pos = b"", 0
        need = n - have
        while need:
            chunk = self._raw.read(min(need, _READ_CHUNK))
            if not chunk:
                raise _Truncated
            parts.append(chunk)
            need -= len(chunk)
        return b"".join(parts)

    def line(self, max_len: int) -> bytes:
        out = bytearray()
        while True:
            b = self.byte()
            if b == 0x0A:
                return bytes(out)
            out.append(b)
            if len(out) > max_len:
                raise _Refused(f"GLOBAL name longer than {max_len} bytes")


def _check_size(n: int, what: str) -> None:
    if n > MAX_OBJECT_BYTES:
        raise _Refused(f"a {n}-byte {what} is larger than any array of the format "
                       f"(limit {MAX_OBJECT_BYTES} bytes)")


def _make_array(raw, dtype, shape, fortran) -> np.ndarray:
    """An array over ``raw`` after checking that shape x itemsize is exactly its length."""
    if not isinstance(dtype, _Dtype):
        raise _Refused(f"array dtype is {_describe(dtype)}, expected numpy.dtype(...)")
    if not (isinstance(shape, tuple) and len(shape) <= 8
            and all(type(d) is int and 0 <= d < 1 << 31 for d in shape)):
        raise _Refused("array shape is not a tuple of at most 8 non-negative ints")
    if isinstance(raw, str):  # protocol-2 files from Python 2 carry the data as latin-1 text
        _check_size(len(raw), "string")
        try:
            raw = raw.encode("latin-1")
        except UnicodeEncodeError:
            raise _Refused("array data string is not latin-1") from None
    if not isinstance(raw, (bytes, bytearray)):
        raise _Refused(f"array data is {_describe(raw)}, expected bytes")
    dt = dtype.numpy()
    need = math.prod(shape) * dt.itemsize
    if need != len(raw):
        raise _Refused(f"array of shape {shape} and dtype {dt.str} needs {need} bytes, "
                       f"the file holds {len(raw)}")
    return np.frombuffer(raw, dtype=dt).reshape(shape, order="F" if fortran else "C")


class _Interpreter:
    """Executes the pickle opcodes the dataset format uses, and refuses every other one.

    Pickle's own machine, minus everything that can call code: globals are matched against
    _GLOBALS and stay names; REDUCE and BUILD have one fixed rule per allowed name. The value
    stack and memo hold plain Python containers, strings, numbers, and arrays built here.
    """

    def __init__(self, stream: _Stream):
        self.s = stream
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict[int, object] = {}
        # Nesting depth of each live container, and the containers already placed inside
        # another one. Pickle fills a container before placing it, so a placed container is
        # final; refusing later changes keeps every recorded depth exact. (A list may still
        # hold itself once; nothing here walks containers recursively.)
        self.depth: dict[int, int] = {}
        self.placed: set[int] = set()

    # -- containers ---------------------------------------------------------------------
    def new(self, c):
        self.depth.pop(id(c), None)  # depth 1 is the default; an id may be a freed object's
        self.placed.discard(id(c))
        return c

    def place(self, container, item) -> None:
        if isinstance(item, (list, dict, tuple)):
            d = self.depth.get(id(item), 1) + 1
            if d > MAX_DEPTH:
                raise _Refused(f"containers nested more than {MAX_DEPTH} deep")
            self.placed.add(id(item))
            if d > self.depth.get(id(container), 1):
                self.depth[id(container)] = d

    def mutable(self, c, kind):
        if not isinstance(c, kind):
            raise _Refused(f"adds items to {_describe(c)}, expected a {kind.__name__}")
        if id(c) in self.placed:
            raise _Refused(f"changes a {kind.__name__} after placing it in another container")
        return c

    def tuple_of(self, items) -> tuple:
        t = self.new(tuple(items))
        for item in items:
            self.place(t, item)
        return t

    def pop_mark(self) -> list:
        if not self.marks:
            raise _Refused("MARK expected on the stack")
        k = self.marks.pop()
        items = self.stack[k:]
        del self.stack[k:]
        return items

    def pop(self):
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise _Refused("stack underflow")
        return self.stack.pop()

    def set_items(self, d, items) -> None:
        if len(items) % 2:
            raise _Refused("odd number of items for a dict")
        self.mutable(d, dict)
        for k, v in zip(items[::2], items[1::2]):
            if not isinstance(k, _KEY_TYPES):
                raise _Refused(f"dict key of type {_describe(k)}")
            self.place(d, v)
            d[k] = v

    def append_items(self, lst, items) -> None:
        self.mutable(lst, list)
        for v in items:
            self.place(lst, v)
            lst.append(v)

    # -- the machine --------------------------------------------------------------------
    def run(self):
        s = self.s
        code = s.byte()
        if code != 0x80:
            raise _Refused("not a pickle of protocol 2 to 5 (no PROTO opcode)")
        proto = s.byte()
        if not 2 <= proto <= 5:
            raise _Refused(f"pickle protocol {proto}, expected 2 to 5")
        for _ in range(MAX_OPCODES):
            code = s.byte()
            if code == 0x2E:  # STOP
                if self.marks or len(self.stack) != 1:
                    raise _Refused("STOP with a stack that does not hold exactly one object")
                return self.stack[0]
            op = _OPS.get(code)
            if op is None:
                raise _Refused(f"opcode {_op_name(code)} is not used by the dataset format")
            op(self)
        raise _Refused(f"more than {MAX_OPCODES} opcodes")

    def u(self, fmt: str):
        return struct.unpack(fmt, self.s.read(struct.calcsize(fmt)))[0]

    def op_FRAME(self):
        self.u("<Q")  # framing is only a read-ahead hint; the stream is read as one

    def op_MARK(self):
        if len(self.marks) >= MAX_DEPTH:
            raise _Refused(f"MARKs nested more than {MAX_DEPTH} deep")
        self.marks.append(len(self.stack))

    def op_POP(self):
        self.pop()

    def op_POP_MARK(self):
        self.pop_mark()

    def op_DUP(self):
        self.stack.append(self.pop())
        self.stack.append(self.stack[-1])

    def op_NONE(self):
        self.stack.append(None)

    def op_NEWTRUE(self):
        self.stack.append(True)

    def op_NEWFALSE(self):
        self.stack.append(False)

    def op_BININT(self):
        self.stack.append(self.u("<i"))

    def op_BININT1(self):
        self.stack.append(self.s.byte())

    def op_BININT2(self):
        self.stack.append(self.u("<H"))

    def op_LONG1(self):
        n = self.s.byte()
        if n > 8:
            raise _Refused(f"a {n}-byte integer")
        self.stack.append(int.from_bytes(self.s.read(n), "little", signed=True))

    def op_BINFLOAT(self):
        self.stack.append(self.u(">d"))

    def text(self, n: int, what: str) -> str:
        _check_size(n, what)
        try:
            return self.s.read(n).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise _Refused(f"{what} is not UTF-8") from None

    def op_SHORT_BINUNICODE(self):
        self.stack.append(self.text(self.s.byte(), "string"))

    def op_BINUNICODE(self):
        self.stack.append(self.text(self.u("<I"), "string"))

    def op_BINUNICODE8(self):
        self.stack.append(self.text(self.u("<Q"), "string"))

    def raw(self, n: int, what: str) -> bytes:
        _check_size(n, what)
        return self.s.read(n)

    def op_SHORT_BINSTRING(self):  # protocol-2 str of Python 2; latin-1 keeps every byte
        self.stack.append(self.raw(self.s.byte(), "string").decode("latin-1"))

    def op_BINSTRING(self):
        n = self.u("<i")
        if n < 0:
            raise _Refused("negative string length")
        self.stack.append(self.raw(n, "string").decode("latin-1"))

    def op_SHORT_BINBYTES(self):
        self.stack.append(self.raw(self.s.byte(), "bytes object"))

    def op_BINBYTES(self):
        self.stack.append(self.raw(self.u("<I"), "bytes object"))

    def op_BINBYTES8(self):
        self.stack.append(self.raw(self.u("<Q"), "bytes object"))

    def op_BYTEARRAY8(self):
        self.stack.append(bytearray(self.raw(self.u("<Q"), "bytearray")))

    def op_EMPTY_DICT(self):
        self.stack.append(self.new({}))

    def op_EMPTY_LIST(self):
        self.stack.append(self.new([]))

    def op_EMPTY_TUPLE(self):
        self.stack.append(self.new(()))

    def op_TUPLE(self):
        self.stack.append(self.tuple_of(self.pop_mark()))

    def op_TUPLE1(self):
        self.tuple_n(1)

    def op_TUPLE2(self):
        self.tuple_n(2)

    def op_TUPLE3(self):
        self.tuple_n(3)

    def tuple_n(self, n: int):
        items = [self.pop() for _ in range(n)][::-1]
        self.stack.append(self.tuple_of(items))

    def op_LIST(self):
        lst = self.new([])
        self.append_items(lst, self.pop_mark())
        self.stack.append(lst)

    def op_DICT(self):
        d = self.new({})
        self.set_items(d, self.pop_mark())
        self.stack.append(d)

    def op_APPEND(self):
        v = self.pop()
        self.append_items(self.pop_peek(), [v])

    def op_APPENDS(self):
        items = self.pop_mark()
        self.append_items(self.pop_peek(), items)

    def op_SETITEM(self):
        v = self.pop()
        k = self.pop()
        self.set_items(self.pop_peek(), [k, v])

    def op_SETITEMS(self):
        items = self.pop_mark()
        self.set_items(self.pop_peek(), items)

    def pop_peek(self):
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise _Refused("stack underflow")
        return self.stack[-1]

    def put(self, idx: int):
        self.memo[idx] = self.pop_peek()

    def get(self, idx: int):
        if idx not in self.memo:
            raise _Refused(f"memo entry {idx} read before it was written")
        self.stack.append(self.memo[idx])

    def op_BINPUT(self):
        self.put(self.s.byte())

    def op_LONG_BINPUT(self):
        self.put(self.u("<I"))

    def op_MEMOIZE(self):
        self.put(len(self.memo))

    def op_BINGET(self):
        self.get(self.s.byte())

    def op_LONG_BINGET(self):
        self.get(self.u("<I"))

    def global_(self, module: str, name: str):
        kind = _GLOBALS.get((module, name))
        if kind is None:
            shown = f"{module}.{name}".encode("ascii", "backslashreplace").decode()[:120]
            raise _Refused(f"refused to load {shown}: the file names a callable the dataset "
                           "format does not use (possible code execution)")
        self.stack.append(_Global(kind, f"{module}.{name}"))

    def op_GLOBAL(self):
        module = self.s.line(256).decode("latin-1")
        name = self.s.line(256).decode("latin-1")
        self.global_(module, name)

    def op_STACK_GLOBAL(self):
        name, module = self.pop(), self.pop()
        if not (isinstance(module, str) and isinstance(name, str)):
            raise _Refused("STACK_GLOBAL of non-strings")
        self.global_(module, name)

    def op_REDUCE(self):
        args = self.pop()
        func = self.pop()
        if not isinstance(func, _Global):
            raise _Refused(f"calls {_describe(func)}")
        if not isinstance(args, tuple):
            raise _Refused(f"calls {func.name} with {_describe(args)} as arguments")
        self.stack.append(self.reduce(func, args))

    def reduce(self, func: _Global, args: tuple):
        kind = func.kind
        if kind == "reconstruct":
            if (len(args) == 3 and isinstance(args[0], _Global) and args[0].kind == "ndarray"
                    and _same(args[1], (0,)) and (_same(args[2], b"b") or _same(args[2], "b"))):
                return _PendingArray()
        elif kind == "dtype":
            # (name, align, copy); numpy wrote align and copy as ints 0, 1 before it wrote bools
            if (args and isinstance(args[0], str)
                    and (len(args) == 1 or (len(args) == 3 and all(
                        type(a) in (bool, int) and a in (0, 1) for a in args[1:])))):
                if args[0] not in DTYPE_NAMES:
                    name = args[0].encode("ascii", "backslashreplace").decode()[:20]
                    raise _Refused(f"non-numeric dtype {name!r} refused (allowed: "
                                   f"{', '.join(sorted(DTYPE_NAMES))})")
                return _Dtype(args[0])
        elif kind == "encode":  # protocol 2 writes bytes as _codecs.encode(text, 'latin1')
            if (len(args) == 2 and isinstance(args[0], str)
                    and args[1] in ("latin1", "latin-1")):
                try:
                    return args[0].encode("latin-1")
                except UnicodeEncodeError:
                    raise _Refused("_codecs.encode of text that is not latin-1") from None
        elif kind == "bytes":  # protocol 2 writes b"" as bytes()
            if args == ():
                return b""
        elif kind == "frombuffer":  # protocol 5: _frombuffer(buffer, dtype, shape, order)
            if len(args) == 4 and (_same(args[3], "C") or _same(args[3], "F")):
                return _make_array(args[0], args[1], args[2], args[3] == "F")
        raise _Refused(f"calls {func.name} with arguments the dataset format does not use")

    def op_BUILD(self):
        state = self.pop()
        obj = self.pop_peek()
        if isinstance(obj, _Dtype) and not obj.built:
            if not (isinstance(state, tuple) and len(state) == 8 and _same(state[0], 3)
                    and any(_same(state[1], b) for b in _DTYPE_BYTEORDERS)
                    and all(_same(a, b) for a, b in zip(state[2:], _DTYPE_STATE_REST))):
                raise _Refused("dtype state is not that of a plain numeric dtype "
                               "(fields, subarrays, object flags or metadata)")
            obj.byteorder, obj.built = state[1], True
        elif isinstance(obj, _PendingArray) and obj.array is None:
            if isinstance(state, tuple) and len(state) == 5 and _same(state[0], 1):
                state = state[1:]
            if not (isinstance(state, tuple) and len(state) == 4
                    and type(state[2]) in (bool, int) and state[2] in (0, 1)):
                raise _Refused("array state is not (version, shape, dtype, is_fortran, data)")
            shape, dtype, fortran, raw = state
            obj.array = _make_array(raw, dtype, shape, bool(fortran))
        else:
            raise _Refused(f"BUILD on {_describe(obj)}")


# opcode byte -> _Interpreter.op_<NAME>, for the opcodes it implements; any other is refused
_OPS = {ord(op.code): getattr(_Interpreter, "op_" + op.name) for op in pickletools.opcodes
        if hasattr(_Interpreter, "op_" + op.name)}


def _load(raw, limit: int) -> tuple[object, int]:
    """The object a pickle stream holds, and the decompressed bytes it took."""
    stream = _Stream(raw, limit)
    return _Interpreter(stream).run(), stream.consumed


def _show_keys(obj: dict) -> str:
    keys = [repr(k)[:40] for k in list(obj)[:8]]
    return "[" + ", ".join(keys) + (", ..." if len(obj) > 8 else "") + "]"


def _validate(obj, path, file_bytes: int) -> list[Event]:
    """Events from the loaded object, or a DataError; bounds are checked before converting."""
    if not isinstance(obj, dict):
        raise DataError(path, f"top level is {_describe(obj)}, expected a dict")
    missing = [k for k in KEYS if k not in obj]
    if missing:
        raise DataError(path, f"missing key(s) {', '.join(missing)}; has {_show_keys(obj)}")
    lists = [obj[k] for k in KEYS]
    for k, v in zip(KEYS, lists):
        if not isinstance(v, list):
            raise DataError(path, f"{k} is {_describe(v)}, expected a list of arrays")
    if len({len(v) for v in lists}) != 1:
        raise DataError(path, "X, ygen, ycand have different numbers of events: "
                        + ", ".join(str(len(v)) for v in lists))
    # Shapes and sizes of everything first, so nothing is converted for a file that fails.
    total_bytes = total_elements = 0
    for i, row in enumerate(zip(*lists)):
        for key, a, width in zip(KEYS, map(_unwrap, row), (N_X, N_Y, N_Y)):
            if not isinstance(a, np.ndarray):
                raise DataError(path, f"event {i}: {key} is {_describe(a)}, expected an array")
            if a.dtype.kind not in "fiub":  # cannot happen with DTYPE_NAMES; kept as a guard
                raise DataError(path, f"event {i}: {key} has non-numeric dtype {a.dtype}")
            if a.ndim != 2 or a.shape[1] != width:
                raise DataError(path, f"event {i}: {key} has shape {a.shape}, "
                                f"expected (n, {width})")
            if a.shape[0] > MAX_ELEMENTS_PER_EVENT:
                raise DataError(path, f"event {i}: {key} has {a.shape[0]} elements, more than "
                                f"the limit of {MAX_ELEMENTS_PER_EVENT}")
            total_bytes += a.nbytes
            total_elements += a.size
    # An array reached many times through the pickle memo would be converted many times.
    if total_bytes > MAX_REUSE_FACTOR * file_bytes:
        raise DataError(path, f"the event lists reach {total_bytes} bytes of arrays from "
                        f"{file_bytes} bytes of file: arrays referenced many times over "
                        f"(limit {MAX_REUSE_FACTOR}x)")
    if total_elements * 4 > MAX_DECOMPRESSED_BYTES:
        raise DataError(path, f"{total_elements} values would take more than the size limit "
                        f"({MAX_DECOMPRESSED_BYTES} bytes) as float32")
    events = []
    for i in range(len(lists[0])):
        arrays = {}
        sources = [_unwrap(v[i]) for v in lists]
        for v in lists:
            v[i] = None  # the file's bytes for this event go once converted
        for key, src in zip(KEYS, sources):
            a = src.astype(np.float32)  # a copy: writable, owns its memory
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


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path: Path):
    """A binary file object for ``path``, refusing anything but a regular file.

    Opened non-blocking, then checked with fstat on the open descriptor: a FIFO cannot hang
    the open, and the file cannot be swapped between the check and the read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise DataError(path, f"cannot open ({getattr(e, 'strerror', None) or e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataError(path, f"is {_file_kind(mode)}, expected a regular {SUFFIX} file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_file(path: str | os.PathLike) -> list[Event]:
    """Read and validate one file. Raises :class:`DataError` with a one-line reason."""
    path = Path(path)
    limit = MAX_DECOMPRESSED_BYTES
    with _open_regular(path) as raw:
        try:
            with bz2.BZ2File(raw) as f:
                obj, file_bytes = _load(f, limit)
        except _SizeLimitExceeded:
            raise DataError(path, f"decompressed data exceeds the size limit ({limit} bytes)") \
                from None
        except _Refused as e:
            raise DataError(path, f"unsafe or corrupt pickle: {e}") from None
        except (_Truncated, EOFError):
            raise DataError(path, "truncated file (ended before the end of the data)") from None
        except MemoryError:
            raise DataError(path, "out of memory while reading") from None
        except OSError as e:  # bz2 raises OSError on a stream that is not bz2
            raise DataError(path, f"not a readable bz2 file ({e})") from None
        except Exception as e:  # a bug here must still be one line naming the file
            raise DataError(path, f"corrupt pickle ({type(e).__name__}: {e})") from None
    return _validate(obj, path, file_bytes)


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
