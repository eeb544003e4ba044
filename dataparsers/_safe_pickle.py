"""Restricted unpickling of dataset files: dicts, lists, strings, numbers and numpy arrays come back, code never runs.

ZJU-MoCap's and GeneBody's ``annots.npy``, GeneBody's split file, THuman2.0's SMPL-X fits and Multi-garment's
``registration.pkl`` are pickles. ``pickle.load`` (and ``np.load(allow_pickle=True)``) call whatever global a file
names, so a crafted file runs code the moment a tool opens it. :class:`DatasetUnpickler` resolves only the globals in
:data:`ALLOWED_GLOBALS` (plain containers and scalars, and numpy's array, dtype and scalar reconstruction) and refuses
anything else with a :class:`HumanDataError` naming the file and the global.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import pickle
from pathlib import Path
from typing import IO, Any, Callable, Dict, Tuple

import numpy as np

from gmnerf_ns.data.human_record import HumanDataError

ALLOWED_GLOBALS = frozenset({
    *(("builtins", name) for name in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int",
                                      "float", "complex", "bool")),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, "latin1")
    # numpy arrays, dtypes and scalars; numpy 1 writes numpy.core.*, numpy 2 numpy._core.*
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    *((package + module, name) for package in ("numpy.core.", "numpy._core.")
      for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))),
})
"""``(module, name)`` globals a dataset pickle may name, after Python 2 names are mapped to Python 3 ones. Checked with
numpy 1.26 and 2.4, protocols 0-5, Python 2 pickles: arrays of every fixed-size dtype (object, structured and
datetime included), dtypes and numpy scalars use no other global. numpy 2's variable-width ``StringDType`` (which no
dataset uses) pickles through a private numpy function and is refused."""

REFUSAL = "dataset files may only hold dicts, lists, strings, numbers and numpy arrays"


_NUMPY_CORE = "numpy._core." if int(np.__version__.split(".")[0]) >= 2 else "numpy.core."


def _resolve(module: str, name: str) -> Any:
    # numpy 1 pickles name numpy.core.*, numpy 2 pickles numpy._core.*: resolve both in the installed numpy's own
    # module (numpy 2 warns on numpy.core, numpy 1 has no numpy._core.numeric).
    for prefix in ("numpy.core.", "numpy._core."):
        if module.startswith(prefix):
            module = _NUMPY_CORE + module[len(prefix):]
    return getattr(importlib.import_module(module), name)


class DatasetUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that resolves only :data:`ALLOWED_GLOBALS`; ``path`` names the file in errors."""

    def __init__(self, file: IO[bytes], path: Path, encoding: str = "latin1"):
        super().__init__(file, encoding=encoding)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__.set, copy_reg, ...) as pickle's own find_class maps them; no Python 3 module
        # has those names, so mapping them in any protocol changes nothing else.
        key: Tuple[str, str] = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        key = (_compat_pickle.IMPORT_MAPPING.get(key[0], key[0]), key[1])
        if key not in ALLOWED_GLOBALS:
            raise HumanDataError(f"{self.path}: refuses to unpickle {key[0]}.{key[1]}: {REFUSAL}")
        return _resolve(*key)

    def persistent_load(self, pid: Any) -> Any:
        raise HumanDataError(f"{self.path}: refuses to unpickle a persistent reference: {REFUSAL}")


def load_pickle(path: Path, encoding: str = "latin1") -> Any:
    """Unpickles ``path`` with :class:`DatasetUnpickler` (``latin1`` also reads Python 2 pickles of numpy arrays)."""
    with open(path, "rb") as handle:
        return DatasetUnpickler(handle, path, encoding=encoding).load()


_HEADER_READERS: Dict[Tuple[int, int], Callable] = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def load_npy(path: Path) -> Any:
    """``np.load(path, allow_pickle=True)`` without running code: an ``.npy`` of objects (``np.save`` of a dict) is
    unpickled with :class:`DatasetUnpickler`, other arrays are read with pickling off, and a bare pickle saved under
    an ``.npy`` name (which ``np.load`` also accepts) is unpickled restrictedly."""
    with open(path, "rb") as handle:
        if handle.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            handle.seek(0)
            return DatasetUnpickler(handle, path).load()
        handle.seek(0)
        version = np.lib.format.read_magic(handle)
        if version in _HEADER_READERS:
            _, _, dtype = _HEADER_READERS[version](handle)
        else:  # version 3.0 (utf-8 field names) has no public reader
            _, _, dtype = np.lib.format._read_array_header(handle, version)
        if not dtype.hasobject:
            handle.seek(0)
            return np.lib.format.read_array(handle, allow_pickle=False)
        # np.save of an object array: the header, then pickle.dump(array); the array itself is in the pickle.
        value = DatasetUnpickler(handle, path).load()
    if not isinstance(value, np.ndarray):
        raise HumanDataError(f"{path}: an .npy file of objects should hold a numpy array, found {type(value).__name__}")
    return value
