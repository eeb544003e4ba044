"""Small file readers shared by the dataset parsers, each failing with a :class:`HumanDataError` that names the file."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
from PIL import Image

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import HumanDataWarning

from ._safe_numpy import load_npy
from ._safe_pickle import load_pickle


def warn(message: str) -> None:
    """Emits a :class:`HumanDataWarning` (something was skipped so the rest can go on)."""
    warnings.warn(message, HumanDataWarning, stacklevel=3)


def subject_folders(root: Path, is_subject: Callable[[Path], bool]) -> Dict[str, Path]:
    """Subject name -> folder: ``root`` itself if it is a subject, else its subfolders that are (sorted by name);
    empty if ``root`` is neither a subject nor a folder."""
    if is_subject(root):
        return {root.name: root}
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and is_subject(p)}


class DatasetFolder:
    """A dataset (or subject) folder whose files may only name files inside it.

    Paths named by dataset files, or built from names found in them, are resolved as the system would open them:
    an absolute path elsewhere, ``..`` that climbs out, or a symlink whose target lies outside makes :meth:`check` raise,
    so a dataset cannot make us read (or copy into a cache) any other file on the machine. The folder itself may be a
    symlink or a relative path; symlinks that stay inside it are fine. Each directory is resolved once.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.real = os.path.realpath(self.root)
        self._dirs: Dict[str, str] = {}

    def check(self, path: Path, source: Optional[Path] = None, what: str = "file") -> Path:
        """``path`` unchanged if it resolves inside the folder, else a :class:`HumanDataError` naming ``source`` (the
        file that names ``path``), ``what`` it is, the path and the rule."""
        text = os.fspath(path)
        parent, name = os.path.split(text)
        if name in ("", ".", ".."):
            real = os.path.realpath(text)
        else:
            if parent not in self._dirs:
                self._dirs[parent] = os.path.realpath(parent or ".")
            real = os.path.join(self._dirs[parent], name)
            if os.path.islink(real):
                real = os.path.realpath(real)
        if _within(real, self.real):
            return path
        if _within(os.path.abspath(text), os.path.abspath(self.root)):
            reason = f"a symlink leads to {real}"
        else:
            reason = "'..' climbs out of it" if ".." in Path(text).parts else "an absolute path elsewhere"
        where = f"{source}: {what} {text}" if source is not None else f"{text}: {what}"
        raise HumanDataError(f"{where} is outside the dataset folder {self.root} ({reason}); a dataset may only "
                             "reference files inside its folder: fix the path or copy the file in")


def inside_root(path: Path, root: Path, source: Optional[Path] = None, what: str = "file") -> Path:
    """``path`` if it resolves inside ``root`` (see :class:`DatasetFolder`), else a :class:`HumanDataError`."""
    return DatasetFolder(root).check(path, source, what)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def load_pickled_dict(path: Path, what: str) -> Dict[str, Any]:
    """Loads a pickled dict saved with ``np.save`` (``annots.npy``) or ``pickle`` (``.pkl``, Python-2 pickles too).

    Only dicts, lists, strings, numbers and numpy arrays are unpickled (:mod:`._safe_pickle`): a file naming any other
    Python global is refused with a :class:`HumanDataError`, and no code from it runs.
    """
    if not path.is_file():
        raise HumanDataError(f"{path}: {what} file is missing")
    try:
        if path.suffix == ".npy":
            value = load_npy(path)
            value = value.item() if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 0 else value
        else:
            value = load_pickle(path)
    except HumanDataError:
        raise
    except Exception as err:  # truncated or foreign file: say which one
        raise HumanDataError(f"{path}: cannot read {what} ({type(err).__name__}: {err})") from err
    if not isinstance(value, dict):
        raise HumanDataError(f"{path}: {what} should hold a dict, found {type(value).__name__}")
    return value


def require_key(mapping: Dict[str, Any], key: str, path: Path, what: str = "") -> Any:
    """``mapping[key]`` or an error naming the file and the keys it has."""
    if key not in mapping:
        keys = ", ".join(sorted(str(k) for k in mapping)) or "(none)"
        raise HumanDataError(f"{path}: {what or 'file'} has no {key!r} entry (found: {keys})")
    return mapping[key]


def finite_array(value: Any, shape: Tuple[int, ...], where: str) -> np.ndarray:
    """``value`` (list or array) as float64 of ``shape`` (-1 = any), finite, or an error naming ``where``."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise HumanDataError(f"{where}: not numeric ({err})") from err
    if array.ndim != len(shape) or any(s not in (-1, a) for s, a in zip(shape, array.shape)):
        want = "x".join("N" if s == -1 else str(s) for s in shape)
        raise HumanDataError(f"{where}: shape {array.shape}, expected {want}")
    if not np.isfinite(array).all():
        raise HumanDataError(f"{where}: contains NaN or inf")
    return array


def image_size(path: Path) -> Tuple[int, int]:
    """(width, height) of an image from its header only (no pixel decoding)."""
    if not path.is_file():
        raise HumanDataError(f"{path}: image file is missing")
    try:
        with Image.open(path) as image:
            return image.size
    except Exception as err:
        raise HumanDataError(f"{path}: image file is unreadable or corrupt ({err})") from err


def read_obj_faces(path: Path) -> np.ndarray:
    """(F, 3) zero-based triangle indices of an OBJ file's ``f`` lines (polygons fanned, ``v/vt/vn`` allowed)."""
    faces, num_vertices = [], 0
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("v "):
                    num_vertices += 1
                elif line.startswith("f "):
                    idx = [int(tok.split("/")[0]) for tok in line.split()[1:]]
                    idx = [i - 1 if i > 0 else num_vertices + i for i in idx]  # OBJ: 1-based, negative = relative
                    faces.extend([idx[0], idx[i], idx[i + 1]] for i in range(1, len(idx) - 1))
    except (OSError, ValueError) as err:
        raise HumanDataError(f"{path}: cannot read OBJ faces ({err})") from err
    if not faces:
        raise HumanDataError(f"{path}: OBJ file has no faces")
    return np.asarray(faces, dtype=np.int64)
