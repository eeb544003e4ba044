"""``np.load`` of dataset files without running code: ``.npy`` and ``.npz`` arrays are read with pickling off, and only
arrays of objects (``np.save`` of a dict, as ZJU-MoCap's ``annots.npy``) go through the restricted unpickler of
:mod:`._safe_pickle`."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import IO, Any, Callable, Dict, Tuple

import numpy as np

from gmnerf_ns.core.errors import HumanDataError

from ._safe_pickle import DatasetUnpickler

_HEADER_READERS: Dict[Tuple[int, int], Callable] = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _npy_dtype(handle: IO[bytes]) -> np.dtype:
    """The dtype in the header of the ``.npy`` stream ``handle``, left just after the header."""
    version = np.lib.format.read_magic(handle)
    if version in _HEADER_READERS:
        return _HEADER_READERS[version](handle)[2]
    return np.lib.format._read_array_header(handle, version)[2]  # version 3.0 (utf-8 field names): no public reader


def load_npy(path: Path) -> Any:
    """``np.load(path, allow_pickle=True)`` without running code: an ``.npy`` of objects (``np.save`` of a dict) is
    unpickled with :class:`DatasetUnpickler`, other arrays are read with pickling off, and a bare pickle saved under
    an ``.npy`` name (which ``np.load`` also accepts) is unpickled restrictedly."""
    with open(path, "rb") as handle:
        if handle.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            handle.seek(0)
            return DatasetUnpickler(handle, path).load()
        handle.seek(0)
        if not _npy_dtype(handle).hasobject:
            handle.seek(0)
            return np.lib.format.read_array(handle, allow_pickle=False)
        # np.save of an object array: the header, then pickle.dump(array); the array itself is in the pickle.
        value = DatasetUnpickler(handle, path).load()
    if not isinstance(value, np.ndarray):
        raise HumanDataError(f"{path}: an .npy file of objects should hold a numpy array, found {type(value).__name__}")
    return value


def load_npz(path: Path) -> Dict[str, Any]:
    """``dict(np.load(path, allow_pickle=True))`` without running code: arrays are read with pickling off, arrays of
    objects are unpickled with :class:`DatasetUnpickler`, and members that are no ``.npy`` come back as bytes."""
    arrays: Dict[str, Any] = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            key = name[:-4] if name.endswith(".npy") else name
            with archive.open(name) as member:
                if member.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                    arrays[key] = archive.read(name)
                    continue
            with archive.open(name) as member:
                if not _npy_dtype(member).hasobject:
                    with archive.open(name) as again:
                        arrays[key] = np.lib.format.read_array(again, allow_pickle=False)
                    continue
                data = member.read()  # the pickle, read whole so that its size is known
            value = DatasetUnpickler(io.BytesIO(data), path, size=len(data)).load()
            if not isinstance(value, np.ndarray):
                raise HumanDataError(f"{path}: entry {key!r} should hold a numpy array, found {type(value).__name__}")
            arrays[key] = value
    return arrays
