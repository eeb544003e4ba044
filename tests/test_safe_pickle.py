"""Dataset pickles (``annots.npy``, ``.pkl``) load as dicts, lists, strings, numbers and numpy arrays, and never run
code: a crafted file is refused with one line naming the file and the forbidden global (issue #13, item 1)."""

from __future__ import annotations

import collections
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from gmnerf_ns.dataparsers._files import load_pickled_dict

from gmnerf_ns.data.human_record import HumanDataError
from tests.fixtures_human import make_synthetic_dataset


class Payload:
    """Unpickling this calls ``call(argument)``: with the unrestricted loaders, it creates the marker file."""

    def __init__(self, call, argument: str):
        self.call, self.argument = call, argument

    def __reduce__(self):
        return self.call, (self.argument,)


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
    from gmnerf_ns import doctor

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
