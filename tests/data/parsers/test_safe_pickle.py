"""Dataset pickles (``annots.npy``, ``.pkl``) load as dicts, lists, strings, numbers and numpy arrays, and never run
code: a crafted file is refused with one line naming the file and the forbidden global."""

from __future__ import annotations

import codecs
import collections
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.parsers._files import load_pickled_dict
from tests.fixtures.datasets_zju import make_synthetic_dataset
from tests.fixtures.hostile_pickle import Payload


def payloads(marker: Path):
    """(object whose unpickling would create ``marker``, the global it names) for a shell call and a builtins one."""
    return [(Payload(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
            (Payload(eval, f"open({str(marker)!r}, 'w').close()"), "builtins.eval")]


def assert_refused(err: pytest.ExceptionInfo, path: Path, forbidden: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"{path}: refuses to unpickle {forbidden}: dataset files may only hold dicts, lists, strings, "
                       "numbers and numpy arrays")


@pytest.mark.parametrize("which", [0, 1])
def test_hostile_annots_npy_is_refused_and_runs_nothing(tmp_path, which):
    marker = tmp_path / "marker"
    payload, forbidden = payloads(marker)[which]
    path = tmp_path / "annots.npy"
    # hidden in an object array inside a list inside the dict, as a real annots.npy nests its entries
    np.save(path, {"cams": {"K": [np.eye(3)]}, "ims": [{"ims": np.array(["a.jpg", payload], dtype=object)}]})
    with pytest.raises(HumanDataError) as err:
        load_pickled_dict(path, "ZJU-MoCap annotations")
    assert_refused(err, path, forbidden)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_hostile_pkl_is_refused_and_runs_nothing(tmp_path, protocol):
    marker = tmp_path / "marker"
    for payload, forbidden in payloads(marker):
        path = tmp_path / "registration.pkl"
        path.write_bytes(pickle.dumps({"pose": np.zeros(72), "gender": payload}, protocol=protocol))
        with pytest.raises(HumanDataError) as err:
            load_pickled_dict(path, "MGN SMPL registration")
        assert_refused(err, path, forbidden)
        assert not marker.exists()


def test_doctor_refuses_a_hostile_annots_npy_and_runs_no_code(tmp_path, monkeypatch, capsys):
    from gmnerf_ns.cli import doctor

    data = tmp_path / "data"
    make_synthetic_dataset(data, subjects=(0, 1, 2), test=(2,), num_frames=1, num_vertices=600)
    annots_path = data / "subject_001" / "annots.npy"
    annots = np.load(annots_path, allow_pickle=True).item()
    marker = tmp_path / "marker"
    annots["cams"]["K"][0] = Payload(os.system, f"touch {marker}")
    np.save(annots_path, annots)
    monkeypatch.setattr(sys, "argv", ["gmnerf-doctor", "--data", str(data), "--resolution", "48",
                                      "--num-input-views", "3"])
    with pytest.raises(SystemExit) as info:
        doctor.entrypoint()
    out = " ".join(capsys.readouterr().out.split())
    assert info.value.code == 1
    assert f"{annots_path}: refuses to unpickle {os.system.__module__}.system" in out, out
    assert not marker.exists()


def test_dicts_of_numpy_arrays_lists_and_scalars_load(tmp_path):
    value = {
        "cams": {"K": [np.eye(3, dtype=np.float32)], "D": np.zeros((1, 5)), "T": [[1.0], [2.0], [3.0]]},
        "ims": [{"ims": ["Camera_B1/000000.jpg"], "kpts2d": np.zeros((1, 25, 3))}],
        "ids": np.arange(4, dtype=np.int64), "flags": np.array([True, False]), "names": np.array(["a", "bc"]),
        "objects": np.array([{"x": 1}, "s", None, [1, 2]], dtype=object), "half": np.ones(2, np.float16),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "scalar": np.float32(2.5), "count": np.int64(7),
        "ordered": collections.OrderedDict(a=(1, 2.0, 3j)), "raw": b"\x00\xff", "buffer": bytearray(b"ab"),
        "set": {1, 2}, "frozen": frozenset({"x"}), "dtype": np.dtype("<f4"), "none": None, "flag": True,
        "record": np.zeros(2, dtype=[("a", "<f4"), ("b", "O")]),
    }
    files = [tmp_path / "annots.npy"]
    np.save(files[0], value)
    for protocol in (2, 5):
        files.append(tmp_path / f"protocol{protocol}.pkl")
        files[-1].write_bytes(pickle.dumps(value, protocol=protocol))
    for path in files:
        loaded = load_pickled_dict(path, "test")
        assert sorted(loaded) == sorted(value), path
        for key, expected in value.items():
            got = loaded[key]
            assert type(got) is type(expected), (path, key)
            if isinstance(expected, np.ndarray):
                assert got.dtype == expected.dtype and got.shape == expected.shape, (path, key)
                assert got.tolist() == expected.tolist(), (path, key)
            elif key == "cams":
                assert np.array_equal(got["K"][0], expected["K"][0]) and got["T"] == expected["T"]
            elif key == "ims":
                assert got[0]["ims"] == expected[0]["ims"] and got[0]["kpts2d"].shape == (1, 25, 3)
            else:
                assert got == expected, (path, key)


# ---------------------------------------------------------------------------------------------- Python 2 pickles
def _py2_str(text: bytes) -> bytes:
    """A Python 2 ``str`` (SHORT_BINSTRING / BINSTRING)."""
    return (b"U" + bytes([len(text)]) if len(text) < 256 else b"T" + struct.pack("<i", len(text))) + text


def _py2_int(n: int) -> bytes:
    return b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n)


def _py2_array(array: np.ndarray) -> bytes:
    """The protocol-2 bytes Python 2 with numpy 1.x writes for a C-contiguous array of a simple dtype."""
    descr = array.dtype.str
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _py2_int(0) + b"\x85" + _py2_str(b"b")
            + b"\x87R(" + _py2_int(1) + b"(" + b"".join(_py2_int(n) for n in array.shape) + b"t"
            + b"cnumpy\ndtype\n" + _py2_str(descr[1:].encode()) + _py2_int(0) + _py2_int(1) + b"\x87R("
            + _py2_int(3) + _py2_str(descr[:1].encode()) + b"NNN" + _py2_int(-1) + _py2_int(-1) + _py2_int(0) + b"tb"
            + b"\x89" + _py2_str(array.tobytes()) + b"tb")


def test_python2_pickles_load(tmp_path):
    """Multi-garment's registration.pkl and old annots files were written by Python 2: str keys, numpy.core names,
    __builtin__ sets, array data as a byte str."""
    pose, betas = np.linspace(-1, 1, 72), np.arange(10, dtype=np.float32)
    items = (_py2_str(b"pose") + _py2_array(pose) + _py2_str(b"betas") + _py2_array(betas)
             + _py2_str(b"gender") + _py2_str(b"male") + _py2_str(b"frames") + b"]" + _py2_int(3) + _py2_int(300)
             + b"\x86ac__builtin__\nset\n]" + _py2_str(b"a") + b"a\x85R" + b"a"
             + _py2_str(b"scale") + b"G" + struct.pack(">d", 1.25))
    path = tmp_path / "registration.pkl"
    path.write_bytes(b"\x80\x02}(" + items + b"u.")
    with open(path, "rb") as handle:
        reference = pickle.load(handle, encoding="latin1")  # what the unrestricted loader made of it
    loaded = load_pickled_dict(path, "MGN SMPL registration")
    assert np.array_equal(loaded["pose"], pose) and loaded["pose"].dtype == np.float64
    assert np.array_equal(loaded["betas"], betas) and loaded["betas"].dtype == np.float32
    assert loaded["gender"] == "male" and loaded["frames"] == [(3, 300), {"a"}] and loaded["scale"] == 1.25
    assert str(loaded) == str(reference)


def test_a_bare_pickle_named_npy_is_unpickled_restrictedly(tmp_path):
    """``np.load`` also accepts a plain pickle under an ``.npy`` name; so do we, restricted."""
    path = tmp_path / "annots.npy"
    path.write_bytes(pickle.dumps({"cams": {"K": [np.eye(3)]}}, protocol=2))
    assert np.array_equal(load_pickled_dict(path, "annotations")["cams"]["K"][0], np.eye(3))
    marker = tmp_path / "marker"
    path.write_bytes(pickle.dumps({"cams": Payload(os.system, f"touch {marker}")}, protocol=2))
    with pytest.raises(HumanDataError, match="refuses to unpickle"):
        load_pickled_dict(path, "annotations")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ what a pickle may build
class Call:
    """Unpickles as ``func(*args)``, then ``state`` set on the result: allowed globals put to other uses."""

    def __init__(self, func, args: tuple, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _reconstruct(state=None, shape=(0,)) -> Call:
    """A numpy array as numpy pickles one (``_reconstruct``, then its state)."""
    from numpy.core.multiarray import _reconstruct

    return Call(_reconstruct, (np.ndarray, shape, b"b"), state)


def load_traced(path: Path):
    """``load_pickled_dict(path)`` and the peak of the memory it allocated."""
    import tracemalloc

    tracemalloc.start()
    try:
        load_pickled_dict(path, "ZJU-MoCap annotations")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


GIGA = 1_500_000_000
TINY_GADGETS = {  # a few dozen bytes that would make 1.5 GB
    "bytearray": (Call(bytearray, (GIGA,)), "a bytearray object"),
    "bytes": (Call(bytes, (GIGA,)), "a bytes object"),
    "array": (_reconstruct(shape=(GIGA,)), "a numpy array of int8"),
    "BYTEARRAY8": (b"\x80\x05\x96" + GIGA.to_bytes(8, "little") + b".", "a bytearray"),
}


@pytest.mark.parametrize("name", list(TINY_GADGETS))
def test_a_tiny_pickle_cannot_build_gigabytes(tmp_path, name):
    gadget, what = TINY_GADGETS[name]
    path = tmp_path / "annots.npy"  # np.load takes a bare pickle under that name too
    path.write_bytes(gadget if isinstance(gadget, bytes) else pickle.dumps(gadget, protocol=3))
    assert path.stat().st_size < 100
    with pytest.raises(HumanDataError) as err:
        load_traced(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: refuses to unpickle {what} of {GIGA:,} ")
    assert message.endswith(f"from a {path.stat().st_size}-byte pickle: more than the file can hold; the file is "
                            "damaged or crafted")


def test_copies_of_one_buffer_add_up(tmp_path):
    """Each copy is as big as the file, but a thousand of them are not."""
    buffer = bytes(100_000)
    path = tmp_path / "annots.npy"
    path.write_bytes(pickle.dumps([Call(bytearray, (buffer,)) for _ in range(1000)], protocol=3))
    with pytest.raises(HumanDataError, match=r"refuses to unpickle a bytearray object of 100,000 bytes \([0-9,]+ built "
                                             r"in all\) from a [0-9,]+-byte pickle: more than the file can hold"):
        load_traced(path)


def _codec_chain(levels: int, codec: str) -> Call:
    value = Call(codecs.encode, ("a" * 10, "latin1"))
    for _ in range(levels):  # doubles (hex of the bytes) or quadruples (utf-32 of their text) at each level
        value = Call(codecs.encode, (value, codec) if codec == "hex" else (Call(str, (value, "latin1")), codec))
    return value


def _nested(levels: int):
    value = ["x" * 8] * 4
    for _ in range(levels):
        value = [value] * 4  # the repr grows fourfold at each level, the pickle by a few bytes
    return Call(str, (value,))


@pytest.mark.parametrize("gadget, forbidden", [
    (lambda: b"\x80\x02cbuiltins\nbytes\nJ" + struct.pack("<i", GIGA) + b"\x85\x81.", "builtins.bytes through NEWOBJ"),
    (lambda: _codec_chain(20, "hex"), "_codecs.encode of anything but a str"),
    (lambda: _codec_chain(10, "utf-32"), "text in the 'utf-32' codec"),
    (lambda: _nested(10), "builtins.str of a list"),
    (lambda: Call(np.ndarray, ((GIGA,),)), "a direct numpy.ndarray call"),
])
def test_allowed_globals_cannot_grow_data(tmp_path, gadget, forbidden):
    path = tmp_path / "annots.npy"
    data = gadget()  # bytes(n) as NEWOBJ builds it with bytes.__new__, no call
    path.write_bytes(data if isinstance(data, bytes) else pickle.dumps(data, protocol=3))
    with pytest.raises(HumanDataError) as err:
        load_traced(path)
    assert_refused(err, path, forbidden)


@pytest.mark.parametrize("state, forbidden", [
    # numpy sizes an object array from the stated shape (1.5 GB here) before it looks at the list
    ((1, (GIGA // 8,), np.dtype("O"), False, []), "a numpy array of object of 187,500,000 items"),
    # and reads past a list shorter than the shape
    ((1, (5,), np.dtype("O"), False, [1]), "a numpy object array whose data does not match its shape"),
    # 10^12 elements of zero bytes each: nothing in memory, until someone iterates
    ((1, (10**12,), np.dtype("V0"), False, b""), "a numpy array of |V0 of 1,000,000,000,000 items"),
], ids=["huge-object", "short-list", "zero-size-items"])
def test_array_states_must_fit_the_file(tmp_path, state, forbidden):
    path = tmp_path / "annots.npy"
    path.write_bytes(pickle.dumps(_reconstruct(state), protocol=3))
    with pytest.raises(HumanDataError) as err:
        load_traced(path)
    assert f"{path}: refuses to unpickle {forbidden}" in str(err.value)


def test_states_cannot_turn_bytes_into_pointers_or_change_numpy(tmp_path):
    """A dtype's pickled flags say whether its items are object pointers: an object dtype without them makes the raw
    bytes of the file pointers, a float dtype with them makes floats pointers; a second state changes a dtype or an
    array under whoever uses it; a state for a function changes it for the whole process."""
    from gmnerf_ns.data.parsers._safe_pickle import _FROMBUFFER

    pointers = (0x4141414141414141).to_bytes(8, "little")
    no_flags = Call(np.dtype, ("O8", False, True), (3, "|", None, None, None, -1, -1, 0))
    numpy_float64 = Call(np.dtype, ("f8", False, False), (3, "<", None, None, None, -1, -1, 63))  # numpy's own
    array_state = (1, (1,), np.dtype("f8"), False, bytes(8))
    defaults = (b"\x80\x02c" + f"{_FROMBUFFER.__module__}\n_frombuffer\n".encode()  # state (None, {__defaults__: (1,)})
                + b"N}X\x0c\x00\x00\x00__defaults__K\x01\x85s\x86b.")
    cases = [
        (_reconstruct((1, (1,), no_flags, False, pointers)), "a numpy dtype whose pickled flags or layout do not match "
                                                             "its fields"),
        (numpy_float64, "a numpy dtype state that does not follow its reconstruction"),
        (pickle.dumps(_reconstruct(array_state), protocol=3)[:-1] + pickle.dumps(array_state, protocol=3)[2:-1]
         + b"b.", "a numpy ndarray state that does not follow its reconstruction"),
        (defaults, f"a state for {_FROMBUFFER.__module__}._frombuffer"),
    ]
    for gadget, forbidden in cases:
        path = tmp_path / "annots.npy"
        path.write_bytes(gadget if isinstance(gadget, bytes) else pickle.dumps(gadget, protocol=3))
        with pytest.raises(HumanDataError) as err:
            load_pickled_dict(path, "annotations")
        assert_refused(err, path, forbidden)
    assert not np.dtype("f8").hasobject and _FROMBUFFER.__defaults__ is None


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_numpy_values_load_as_pickle_makes_them(tmp_path, protocol):
    """Every kind of dtype numpy pickles (byte order, strings, dates, void, objects, records, aligned, offsets,
    titles, sub-arrays, metadata) passes the checks of dtype and array states unchanged."""
    dtypes = [np.dtype(d) for d in ("<f4", ">f8", "<c16", "<U7", "|S3", "<M8[s]", ">m8[ms]", "|V5", "O",
                                    [("a", "<f4"), ("b", "O")], [("a", "<f4"), ("b", ">i8", (2, 3))], ("O", (2,)),
                                    [("n", [("p", "<f4"), ("q", "O")]), ("r", "<i8")])]
    dtypes += [np.dtype([("a", "u1"), ("b", "<f8")], align=True), np.dtype({"names": ["x"], "formats": ["<i4"],
               "offsets": [4], "itemsize": 12, "titles": ["The X"]}), np.dtype("<f8", metadata={"unit": "mm"})]
    value = {"dtypes": dtypes, "arrays": [np.ones((2, 3), d) if not d.hasobject else np.zeros(3, d) for d in dtypes],
             "scalars": [np.zeros(1, d)[0] for d in dtypes[:8]] + [np.float32(2.5), np.datetime64("2020-01-01")],
             "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "strided": np.arange(20.0)[::3]}
    path = tmp_path / "values.pkl"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    expected, got = pickle.loads(path.read_bytes()), load_pickled_dict(path, "test")
    assert repr(got) == repr(expected)
    for a, b in zip(got["dtypes"], expected["dtypes"]):
        assert (a, a.flags, a.itemsize, a.alignment, a.metadata) == (b, b.flags, b.itemsize, b.alignment, b.metadata)
    for a, b in zip(got["arrays"] + [got["fortran"]], expected["arrays"] + [expected["fortran"]]):
        assert a.dtype == b.dtype and a.flags.f_contiguous == b.flags.f_contiguous and repr(a) == repr(b)
