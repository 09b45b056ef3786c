"""The safe reader and atomic writer of Delphes-format files (mlpf/data/io.py, inspect.py)."""

import bz2
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from mlpf.data import io
from mlpf.data.format import ELEM_TOWER, ELEM_TRACK, Event
from mlpf.data.inspect import main as inspect_main


def make_event(n=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 12)).astype(np.float32)
    X[:, 0] = np.where(np.arange(n) % 2, ELEM_TRACK, ELEM_TOWER)
    y = np.zeros((n, 7), np.float32)
    y[:, 0] = np.arange(n) % 6
    y[:, 1] = np.where(y[:, 0] == 1, 1.0, 0.0)
    y[:, 2:] = rng.normal(size=(n, 5))
    return Event(X, y, y.copy())


def dump(path, obj, protocol=4):
    path.write_bytes(bz2.compress(pickle.dumps(obj, protocol=protocol)))
    return path


def as_dict(events):
    return {k: [getattr(e, k) for e in events] for k in ("X", "ygen", "ycand")}


def test_round_trip(tmp_path):
    events = [make_event(5, 0), make_event(9, 1)]
    io.write_file(tmp_path / "a.pkl.bz2", events)
    back = io.read_file(tmp_path / "a.pkl.bz2")
    assert len(back) == 2
    for a, b in zip(events, back):
        for k in ("X", "ygen", "ycand"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
            assert getattr(b, k).dtype == np.float32
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_same_events_same_bytes(tmp_path):
    events = [make_event(7, 3)]
    io.write_file(tmp_path / "a.pkl.bz2", events)
    io.write_file(tmp_path / "b.pkl.bz2", events)
    assert (tmp_path / "a.pkl.bz2").read_bytes() == (tmp_path / "b.pkl.bz2").read_bytes()


def test_folder_sorted_and_max_events(tmp_path):
    for i in (2, 0, 1):
        io.write_file(tmp_path / f"f{i}.pkl.bz2", [make_event(3 + i, i)])
    (tmp_path / "notes.txt").write_text("ignored")
    events = io.load_events(tmp_path)
    assert [len(e) for e in events] == [3, 4, 5]
    assert len(io.load_events([tmp_path], max_events=2)) == 2


def test_float64_and_protocol2_files_are_read(tmp_path):
    # Older numpy/python writers: protocol 2 uses _codecs.encode for the array bytes.
    ev = make_event(4)
    obj = {"X": [ev.X.astype(np.float64)], "ygen": [ev.ygen], "ycand": [ev.ycand]}
    back = io.read_file(dump(tmp_path / "p2.pkl.bz2", obj, protocol=2))
    np.testing.assert_allclose(back[0].X, ev.X)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __reduce__(self):
        return (eval, ("1+1",))


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_file_carrying_code_is_refused_and_never_runs(tmp_path, payload):
    marker = tmp_path / "pwned"
    bad = _RunsCode(marker) if payload == "system" else _Eval()
    ev = make_event(3)
    path = dump(tmp_path / "evil.pkl.bz2", {"X": [ev.X, bad], "ygen": [], "ycand": []})
    with pytest.raises(io.DataError, match="refused to load") as exc:
        io.read_file(path)
    assert str(path) in str(exc.value)
    assert not marker.exists()
    # sanity: the same file with plain pickle would have run the command
    if payload == "system":
        pickle.loads(bz2.decompress(path.read_bytes()))
        assert marker.exists()


def _malformed(tmp_path):
    ev = make_event(4)
    good = as_dict([ev])
    nan = ev.X.copy()
    nan[1, 3] = np.nan
    badtype = ev.X.copy()
    badtype[0, 0] = 3
    badcls = ev.ygen.copy()
    badcls[0, 0] = 7
    badcharge = ev.ygen.copy()
    badcharge[0, 1] = 2
    cases = {
        "not a dict": ([ev.X], "expected a dict"),
        "missing key": ({"X": [ev.X], "ygen": [ev.ygen]}, "missing key"),
        "not a list": ({**good, "X": ev.X}, "expected a list"),
        "lengths": ({**good, "ygen": []}, "different numbers of events"),
        "width": ({**good, "X": [ev.X[:, :11]]}, "expected \\(n, 12\\)"),
        "rows": ({**good, "ycand": [ev.ycand[:3]]}, "different element counts"),
        "1d": ({**good, "X": [ev.X[0]]}, "shape"),
        "nan": ({**good, "X": [nan]}, "non-finite"),
        "element type": ({**good, "X": [badtype]}, "element type 3"),
        "class id": ({**good, "ygen": [badcls]}, "class ids"),
        "charge": ({**good, "ygen": [badcharge]}, "charges"),
        "object dtype": ({**good, "X": [ev.X.astype(object)]}, "non-numeric"),
        "not array": ({**good, "X": [ev.X.tolist()]}, "expected an array"),
    }
    return {name: (dump(tmp_path / f"{i}.pkl.bz2", obj), msg)
            for i, (name, (obj, msg)) in enumerate(cases.items())}


def test_every_malformed_case_is_one_clear_error(tmp_path):
    for name, (path, msg) in _malformed(tmp_path).items():
        with pytest.raises(io.DataError, match=msg) as exc:
            io.read_file(path)
        text = str(exc.value)
        assert text.startswith(str(path)), name
        assert "\n" not in text, name


def test_truncated_and_corrupt_files(tmp_path):
    io.write_file(tmp_path / "good.pkl.bz2", [make_event(50)])
    data = (tmp_path / "good.pkl.bz2").read_bytes()
    (tmp_path / "trunc.pkl.bz2").write_bytes(data[: len(data) // 2])
    with pytest.raises(io.DataError, match="truncated"):
        io.read_file(tmp_path / "trunc.pkl.bz2")
    (tmp_path / "text.pkl.bz2").write_text("hello, not bz2")
    with pytest.raises(io.DataError, match="not a readable bz2"):
        io.read_file(tmp_path / "text.pkl.bz2")
    # a valid bz2 stream holding a cut pickle
    raw = pickle.dumps(as_dict([make_event(5)]), protocol=4)
    (tmp_path / "cut.pkl.bz2").write_bytes(bz2.compress(raw[:-40]))
    with pytest.raises(io.DataError):
        io.read_file(tmp_path / "cut.pkl.bz2")
    (tmp_path / "junk.pkl.bz2").write_bytes(bz2.compress(b"\x80\x04junkjunkjunk"))
    with pytest.raises(io.DataError):
        io.read_file(tmp_path / "junk.pkl.bz2")


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    io.write_file(tmp_path / "a.pkl.bz2", [make_event(200)])
    monkeypatch.setattr(io, "MAX_DECOMPRESSED_BYTES", 1000)
    with pytest.raises(io.DataError, match="size limit"):
        io.read_file(tmp_path / "a.pkl.bz2")


def test_missing_paths(tmp_path):
    with pytest.raises(io.DataError, match="no such file"):
        io.load_events(tmp_path / "nope")
    with pytest.raises(io.DataError, match="holds no .pkl.bz2"):
        io.load_events(tmp_path)


def test_inspect_reports_numbers(tmp_path, capsys):
    io.write_file(tmp_path / "a.pkl.bz2", [make_event(6, 0), make_event(10, 1)])
    assert inspect_main([str(tmp_path), "--json"]) == 0
    out = capsys.readouterr().out
    import json

    rows = json.loads(out)
    total = rows[-1]
    assert total["name"] == "total"
    assert total["events"] == 2
    assert total["elements_mean"] == 8.0 and total["elements_max"] == 10
    assert total["tracks_per_event"] == 4.0  # odd rows are tracks: 3 + 5
    assert total["ygen_class_counts"]["none"] == 1 + 2  # class = row % 6


def test_inspect_cli_bad_file_exit_2_one_line(tmp_path):
    io.write_file(tmp_path / "good.pkl.bz2", [make_event(4)])
    (tmp_path / "bad.pkl.bz2").write_bytes(b"BZh9 broken")
    r = subprocess.run([sys.executable, "-m", "mlpf.data.inspect", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.pkl.bz2" in lines[0]
    assert "good.pkl.bz2" in r.stdout  # the good file is still summarised


def _layout(a, layout):
    return {"c": a, "fortran": np.asfortranarray(a), "strided": np.repeat(a, 2, axis=1)[:, ::2],
            "float64": a.astype(np.float64), "bigendian": a.astype(">f8"),
            "float16": a.astype(np.float16), "int": a.astype(np.int32), "empty": a[:0]}[layout]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("layout", ["c", "fortran", "strided", "float64", "bigendian", "float16",
                                    "int", "empty"])
def test_plain_pickle_files_read_as_pickle_reads_them(tmp_path, protocol, layout):
    # Reference: what pickle.loads gives for this (trusted) file, converted as the reader does.
    events = [make_event(6, 0), make_event(3, 1)]
    obj = {k: [_layout(getattr(e, k), layout) for e in events] for k in ("X", "ygen", "ycand")}
    path = dump(tmp_path / "p.pkl.bz2", obj, protocol)
    ref = pickle.loads(bz2.decompress(path.read_bytes()))
    back = io.read_file(path)
    for i, ev in enumerate(back):
        for k in ("X", "ygen", "ycand"):
            want, got = ref[k][i].astype(np.float32), getattr(ev, k)
            np.testing.assert_array_equal(got, want)
            assert got.dtype == np.float32 and got.flags.writeable
            assert got.flags.f_contiguous == want.flags.f_contiguous


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_1x_module_names_are_read(tmp_path, protocol):
    # numpy 1.x pickles name numpy.core.*, numpy 2.x numpy._core.*; the bytes differ only there
    events = [make_event(4, 2)]
    raw = pickle.dumps(as_dict(events), protocol=protocol)
    for new in (b"multiarray", b"numeric"):
        old_name, new_name = b"numpy._core." + new, b"numpy.core." + new
        if protocol == 2:
            raw = raw.replace(old_name + b"\n", new_name + b"\n")
        else:  # SHORT_BINUNICODE: the length byte changes too
            raw = raw.replace(bytes([0x8C, len(old_name)]) + old_name,
                              bytes([0x8C, len(new_name)]) + new_name)
    assert b"numpy._core" not in raw and b"numpy.core" in raw
    (tmp_path / "old.pkl.bz2").write_bytes(bz2.compress(raw))
    back = io.read_file(tmp_path / "old.pkl.bz2")
    np.testing.assert_array_equal(back[0].X, events[0].X)


def test_data_error_survives_pickling():
    """A worker process's DataError reaches the parent as itself (multiprocessing pickles it)."""
    import pickle

    from mlpf.data.io import DataError

    e = pickle.loads(pickle.dumps(DataError("/x/y.pkl.bz2", "not bz2")))
    assert isinstance(e, DataError) and (e.path, e.problem) == ("/x/y.pkl.bz2", "not bz2")
    assert str(e) == "/x/y.pkl.bz2: not bz2"
