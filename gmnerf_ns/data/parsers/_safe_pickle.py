"""Restricted unpickling of dataset files: dicts, lists, strings, numbers and numpy arrays come back, code never runs.

ZJU-MoCap's and GeneBody's ``annots.npy``, GeneBody's split file, THuman2.0's SMPL-X fits, Multi-garment's
``registration.pkl`` and the SMPL body models are pickles. ``pickle.load`` (and ``np.load(allow_pickle=True)``) call
whatever global a file names, so a crafted file runs code the moment a tool opens it. :class:`DatasetUnpickler`
resolves only the globals in :data:`ALLOWED_GLOBALS` (plain containers and scalars, and numpy's array, dtype and scalar
reconstruction) and refuses anything else with a :class:`HumanDataError` naming the file and the global.

The allowed globals can still be misused: ``bytearray(1500000000)`` is a few bytes of pickle, numpy sizes an object
array from the shape a pickle states before it looks at the data, and a dtype's pickled flags can turn raw bytes into
object pointers. So the unpickler is the pure-Python one, whose steps can be checked before they run: every call and
every array or dtype state is checked first, and nothing may build more than the file could hold (:meth:`allow`).
"""

from __future__ import annotations

import _codecs
import _compat_pickle
import codecs
import collections
import importlib
import io
import operator
import os
import pickle
from pathlib import Path
from typing import IO, Any, Callable, Dict, Optional, Tuple

import numpy as np

from gmnerf_ns.core.errors import HumanDataError

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

MIN_LIMIT = 1 << 20
"""What any file may build in one piece, however small it is (bytes or items)."""

TOTAL_LIMITS = 4
"""What one file may build in all, in limits (its arrays, their data and the bytes that spell them come to about 2)."""

TEXT_CODECS = {"iso8859-1": 1, "ascii": 1, "utf-8": 4}
"""Codecs a pickle may encode or decode text with, and the bytes per character they may produce; others (``hex``,
``unicode_escape``, ``utf-32``...) can be chained to grow a string without bound and no pickler uses them."""

_NUMPY_CORE = "numpy._core." if int(np.__version__.split(".")[0]) >= 2 else "numpy.core."


def _resolve(module: str, name: str) -> Any:
    # numpy 1 pickles name numpy.core.*, numpy 2 pickles numpy._core.*: resolve both in the installed numpy's own
    # module (numpy 2 warns on numpy.core, numpy 1 has no numpy._core.numeric).
    for prefix in ("numpy.core.", "numpy._core."):
        if module.startswith(prefix):
            module = _NUMPY_CORE + module[len(prefix):]
    return getattr(importlib.import_module(module), name)


_RECONSTRUCT = _resolve("numpy.core.multiarray", "_reconstruct")
_SCALAR = _resolve("numpy.core.multiarray", "scalar")
_FROMBUFFER = _resolve("numpy.core.numeric", "_frombuffer")


def _bytes_left(stream: IO[bytes]) -> int:
    """Bytes from the position of ``stream`` to its end."""
    try:
        return os.fstat(stream.fileno()).st_size - stream.tell()
    except (AttributeError, OSError, io.UnsupportedOperation):
        position = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        stream.seek(position)
        return end - position


def _count(shape: Any) -> Optional[int]:
    """Elements of an array of ``shape`` (an int or a sequence of ints), or None if it is no shape."""
    try:
        dims = [operator.index(shape)] if not isinstance(shape, (tuple, list)) else [operator.index(n) for n in shape]
    except TypeError:
        return None
    count = 1
    for n in dims:
        count *= max(n, 0)
    return count


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _canonical_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype numpy builds from ``dtype``'s description, with the flags numpy derives from it."""
    if dtype.fields is not None:
        fields = [dtype.fields[name] for name in dtype.names]
        spec = {"names": list(dtype.names), "formats": [f[0] for f in fields], "offsets": [f[1] for f in fields],
                "itemsize": dtype.itemsize}
        if any(len(f) > 2 for f in fields):
            spec["titles"] = [f[2] if len(f) > 2 else None for f in fields]
        return np.dtype(spec, align=dtype.isalignedstruct)
    if dtype.subdtype is not None:
        return np.dtype(dtype.subdtype)
    return np.dtype(dtype.str)


class DatasetUnpickler(pickle._Unpickler):
    """A pure-Python unpickler that resolves only :data:`ALLOWED_GLOBALS` and checks each call, object and array state
    before it runs; ``path`` names the file in errors, ``size`` is the pickle's length (the rest of ``file`` if None).

    :data:`STAND_INS` maps further globals to classes standing in for them (a loader of another kind of file sets it):
    only those are built with ``NEWOBJ``; a state (``BUILD``) goes only to those, to OrderedDicts, and to arrays and
    dtypes fresh from their reconstruction.
    """

    STAND_INS: Dict[Tuple[str, str], type] = {}
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: IO[bytes], path: Path, encoding: str = "latin1", size: Optional[int] = None):
        self.size = _bytes_left(file) if size is None else size
        # read whole: a length stated in the pickle then never sizes a read buffer, and reads are fast
        super().__init__(io.BytesIO(file.read(self.size)), encoding=encoding)
        self.path = path
        self.limit = max(self.size, MIN_LIMIT)
        self.built = 0
        self.unbuilt: Dict[int, Any] = {}  # id -> array or dtype just reconstructed, waiting for its one state

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__.set, copy_reg, ...) as pickle's own find_class maps them; no Python 3 module
        # has those names, so mapping them in any protocol changes nothing else.
        key: Tuple[str, str] = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        key = (_compat_pickle.IMPORT_MAPPING.get(key[0], key[0]), key[1])
        if key in self.STAND_INS:
            return self.STAND_INS[key]
        if key not in ALLOWED_GLOBALS:
            self.refuse(f"{key[0]}.{key[1]}")
        return _resolve(*key)

    def persistent_load(self, pid: Any) -> Any:
        self.refuse("a persistent reference")

    def refuse(self, what: str) -> None:
        raise HumanDataError(f"{self.path}: refuses to unpickle {what}: {REFUSAL}")

    def allow(self, count: int, what: str, unit: str = "bytes") -> None:
        """Counts ``count`` bytes (or items) the file asks to build as ``what``; refuses them beyond what a file of its
        size can hold: one piece above :attr:`limit`, or :data:`TOTAL_LIMITS` limits in all."""
        self.built += count
        if count > self.limit or self.built > TOTAL_LIMITS * self.limit:
            raise HumanDataError(
                f"{self.path}: refuses to unpickle {what} of {count:,} {unit} ({self.built:,} built in all) from a "
                f"{self.size:,}-byte pickle: more than the file can hold; the file is damaged or crafted")

    # ---------------------------------------------------------------------------------------------- opcodes
    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self.call(self.stack[-1], args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _instantiate(self, klass: Any, args: list) -> None:  # protocol 0/1 INST and OBJ
        self.append(self.call(klass, tuple(args)))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self.new(cls, args, {}))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self.new(cls, args, kwargs))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_bytearray8(self) -> None:
        size = int.from_bytes(self.read(8), "little")
        self.allow(size, "a bytearray")
        self.append(bytearray(self.read(size)))

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def load_build(self) -> None:
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, (np.ndarray, np.dtype, np.generic)):
            if self.unbuilt.get(id(inst)) is not inst:  # numpy states only complete a fresh reconstruction
                kind = "scalar" if isinstance(inst, np.generic) else type(inst).__mro__[-2].__name__  # dtype or ndarray
                self.refuse(f"a numpy {kind} state that does not follow its reconstruction")
            if isinstance(inst, np.ndarray):
                self._check_array_state(state)
            else:
                self._check_no_unbuilt(state)  # a dtype among its own fields is refused too
            del self.unbuilt[id(inst)]
        elif not isinstance(inst, (collections.OrderedDict, *self.STAND_INS.values())):  # nor classes, nor functions
            self.refuse(f"a state for {_name(inst) if callable(inst) else 'a ' + type(inst).__name__}")
        pickle._Unpickler.load_build(self)
        if isinstance(inst, np.dtype) and not self._consistent(inst):
            self.refuse("a numpy dtype whose pickled flags or layout do not match its fields")

    dispatch[pickle.BUILD[0]] = load_build

    # ---------------------------------------------------------------------------------------------- checks
    def new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if cls not in self.STAND_INS.values():  # no allowed global is meant to be built this way
            self.refuse(f"{_name(cls)} through NEWOBJ")
        if args or kwargs:
            self.refuse(f"{_name(cls)} with arguments")
        return cls.__new__(cls)

    def call(self, func: Any, args: Any) -> Any:
        """``func(*args)`` once :meth:`allow` agreed to what it builds."""
        if type(args) is not tuple:
            self.refuse(f"a call to {_name(func)} with {type(args).__name__} arguments")
        try:
            check = _CALL_CHECKS.get(func)
        except TypeError:  # unhashable, so no allowed callable; calling it fails
            check = None
        if check is not None:
            check(self, func, args)
        result = func(*args)
        if func is _RECONSTRUCT or (func is np.dtype and len(args) > 2 and args[2]):  # a new array or dtype copy
            self.unbuilt[id(result)] = result
        return result

    def _check_bytes(self, func: Any, args: tuple) -> None:
        """``bytes``/``bytearray``: of a string in a text codec, of a size, or a copy of a buffer or sequence."""
        if not args:
            return
        source = args[0]
        if isinstance(source, str):
            count = len(source) * self._codec(args[1] if len(args) > 1 else "utf-8")
        else:  # in Python's order: a size, a buffer, an iterable
            try:
                count = operator.index(source)
            except TypeError:
                try:
                    count = memoryview(source).nbytes
                except TypeError:
                    count = len(source) if hasattr(source, "__len__") else 0
        self.allow(count, f"a {func.__name__} object")

    def _check_str(self, func: Any, args: tuple) -> None:
        """``str``: of a number or string, or text decoded from bytes (the repr of a container can grow without
        bound)."""
        if len(args) == 1 and not isinstance(args[0], (str, int, float, complex, type(None))):
            self.refuse(f"builtins.str of a {type(args[0]).__name__}")
        if len(args) > 1:
            self._codec(args[1])
            self.allow(4 * len(args[0]) if hasattr(args[0], "__len__") else 0, "a str")

    def _check_encode(self, func: Any, args: tuple) -> None:
        """``_codecs.encode``: text to bytes in a text codec."""
        if not args or not isinstance(args[0], str):
            self.refuse("_codecs.encode of anything but a str")
        self.allow(len(args[0]) * self._codec(args[1] if len(args) > 1 else "utf-8"), "bytes")

    def _codec(self, encoding: Any) -> int:
        """Bytes per character of a codec in :data:`TEXT_CODECS`."""
        try:
            return TEXT_CODECS[codecs.lookup(encoding).name]
        except (KeyError, LookupError, TypeError):
            self.refuse(f"text in the {encoding!r} codec")

    def _check_container(self, func: Any, args: tuple) -> None:
        if args:
            self.allow(len(args[0]) if hasattr(args[0], "__len__") else 0, f"a {func.__name__}", "items")

    def _check_ndarray(self, func: Any, args: tuple) -> None:
        self.refuse("a direct numpy.ndarray call")  # numpy pickles rebuild arrays with _reconstruct

    def _check_dtype(self, func: Any, args: tuple) -> None:
        if not args or not isinstance(args[0], (str, bytes)):  # numpy pickles give a type string, the rest as state
            self.refuse("a numpy dtype of anything but a type string")

    def _check_reconstruct(self, func: Any, args: tuple) -> None:
        if len(args) != 3 or args[0] is not np.ndarray:
            self.refuse("numpy's _reconstruct of anything but an ndarray")
        self._check_no_unbuilt(args[2])
        self._check_size(args[1], np.dtype(args[2]), "a numpy array")

    def _check_scalar(self, func: Any, args: tuple) -> None:
        if args:
            self._check_no_unbuilt(args)
            self.allow(getattr(args[0], "itemsize", 0), "a numpy scalar")

    def _check_frombuffer(self, func: Any, args: tuple) -> None:
        self._check_no_unbuilt(args)

    def _check_size(self, shape: Any, dtype: Any, what: str) -> None:
        count = _count(shape)
        if count is None or not isinstance(dtype, np.dtype):
            self.refuse(f"{what} of shape {type(shape).__name__} and dtype {type(dtype).__name__}")
        self.allow(count, f"{what} of {dtype}", "items")
        self.allow(count * dtype.itemsize, f"{what} of {dtype}")

    def _check_array_state(self, state: Any) -> None:
        """``(version, shape, dtype, is_fortran, data)``: its size, and object data with one item per element (numpy
        reads past a shorter list)."""
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            self.refuse("a numpy array state that is not numpy's")
        shape, dtype, _, data = state[-4:]
        self._check_no_unbuilt(dtype)
        self._check_size(shape, dtype, "a numpy array")
        if dtype.hasobject and not (isinstance(data, list) and len(data) == _count(shape)):
            self.refuse("a numpy object array whose data does not match its shape")

    def _check_no_unbuilt(self, value: Any) -> None:
        """Refuses using a dtype that has not had its state yet (a later state would change it under its user)."""
        pending, seen = [value], set()
        while pending:
            item = pending.pop()
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, np.dtype) and self.unbuilt.get(id(item)) is item:
                self.refuse("a numpy dtype used before its state")
            if isinstance(item, (tuple, list)):
                pending.extend(item)
            elif isinstance(item, dict):
                pending.extend(item.values())
        self.allow(len(seen), "nested values", "items")

    @staticmethod
    def _consistent(dtype: np.dtype) -> bool:
        try:
            canonical = _canonical_dtype(dtype)
        except (TypeError, ValueError, KeyError):
            return False
        return (canonical == dtype and canonical.flags == dtype.flags and canonical.itemsize == dtype.itemsize
                and canonical.alignment == dtype.alignment)


_CALL_CHECKS: Dict[Any, Callable[[DatasetUnpickler, Any, tuple], None]] = {
    bytes: DatasetUnpickler._check_bytes,
    bytearray: DatasetUnpickler._check_bytes,
    str: DatasetUnpickler._check_str,
    _codecs.encode: DatasetUnpickler._check_encode,
    **{kind: DatasetUnpickler._check_container for kind in (dict, list, tuple, set, frozenset,
                                                             collections.OrderedDict)},
    np.ndarray: DatasetUnpickler._check_ndarray,
    np.dtype: DatasetUnpickler._check_dtype,
    _RECONSTRUCT: DatasetUnpickler._check_reconstruct,
    _SCALAR: DatasetUnpickler._check_scalar,
    _FROMBUFFER: DatasetUnpickler._check_frombuffer,
}
"""What each allowed callable may build, checked before it is called (``int``, ``float``, ``complex`` and ``bool``
build numbers the size of their text)."""


def load_pickle(path: Path, encoding: str = "latin1") -> Any:
    """Unpickles ``path`` with :class:`DatasetUnpickler` (``latin1`` also reads Python 2 pickles of numpy arrays)."""
    with open(path, "rb") as handle:
        return DatasetUnpickler(handle, path, encoding=encoding).load()
