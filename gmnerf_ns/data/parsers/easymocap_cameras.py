"""EasyMocap's camera files (``intri.yml``, ``extri.yml``: OpenCV FileStorage YAML) read as EasyMocap reads them.

zju3dv/EasyMocap ``easymocap/mytools/camera_utils.py`` ``read_camera``: ``names`` from ``intri.yml`` (else
``extri.yml``), ``K_/dist_/H_/W_<cam>``, ``R_<cam>`` as a Rodrigues vector (``Rot_<cam>`` when there is none) and
``T_<cam>`` in metres, world-to-camera with OpenCV axes.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

import cv2
import numpy as np

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import check_camera

from ._files import warn


class Camera(NamedTuple):
    """One camera of ``intri.yml``/``extri.yml``; K in the file's (OpenCV) pixel convention."""

    name: str
    K: np.ndarray
    dist: Optional[np.ndarray]
    R: np.ndarray
    T: np.ndarray
    size: Optional[Tuple[int, int]]
    """(W, H) from ``W_<cam>``/``H_<cam>``, when written."""


def read_cameras(intri: Path, extri: Path, min_cameras: int = 1) -> List[Camera]:
    """The cameras of ``intri.yml``/``extri.yml`` in ``names`` order (EasyMocap's ``read_camera``).

    ``names`` is read from ``intri.yml`` (else ``extri.yml``; names only the other file lists come after). A camera
    that only one file calibrates (EasyMocap after calibrating the extrinsics of a subset) is skipped, with one warning
    naming them all; an error when fewer than ``min_cameras`` remain.
    """
    intri_fs, extri_fs = _open(intri), _open(extri)
    try:
        names = _names(intri_fs, intri, extri_fs, extri)
        cameras, no_intri, no_extri = [], [], []
        for cam in names:
            if not _has(intri_fs, f"K_{cam}"):
                no_intri.append(cam)
                continue
            if not any(_has(extri_fs, f"{key}_{cam}") for key in ("R", "Rot", "T")):
                no_extri.append(cam)
                continue
            cameras.append(_camera(cam, intri_fs, intri, extri_fs, extri))
    finally:
        intri_fs.release()
        extri_fs.release()
    if no_intri or no_extri:
        skipped = "; ".join(f"{_compact(missing)} (no {what})" for missing, what in (
            (no_extri, f"R_/T_ in {extri.name}"), (no_intri, f"K_ in {intri.name}")) if missing)
        if len(cameras) < min_cameras:
            raise HumanDataError(f"{intri.parent}: only {len(cameras)} of {len(names)} cameras are in both "
                                 f"{intri.name} and {extri.name}, fewer than the {min_cameras} needed (the protocol's "
                                 f"source views + 1); without a calibration: {skipped}")
        warn(f"{intri.parent}: using the {len(cameras)} of {len(names)} cameras calibrated in both {intri.name} and "
             f"{extri.name}; skipped {len(no_intri) + len(no_extri)}: {skipped}")
    return cameras


def _camera(cam: str, intri_fs: "cv2.FileStorage", intri: Path, extri_fs: "cv2.FileStorage", extri: Path) -> Camera:
    """One camera that both files calibrate."""
    K = _matrix(intri_fs, f"K_{cam}", intri, (3, 3))
    dist = _matrix(intri_fs, f"dist_{cam}", intri)
    if dist is None:
        dist = _matrix(intri_fs, f"D_{cam}", intri)
    if dist is not None:
        dist = dist.reshape(-1)
        if dist.size not in (4, 5, 8, 12, 14):
            raise HumanDataError(f"{intri}: dist_{cam} has {dist.size} coefficients, expected 5 (OpenCV)")
        dist = dist if np.any(dist) else None
    width, height = _int(intri_fs, f"W_{cam}"), _int(intri_fs, f"H_{cam}")
    rvec = _matrix(extri_fs, f"R_{cam}", extri)
    if rvec is not None and rvec.size == 3:
        R = cv2.Rodrigues(rvec.reshape(3, 1))[0]
    elif rvec is not None and rvec.size == 9:
        R = rvec.reshape(3, 3)
    else:
        R = _matrix(extri_fs, f"Rot_{cam}", extri, (3, 3))
    T = _matrix(extri_fs, f"T_{cam}", extri)
    if R is None or T is None:
        missing = " and ".join(k for k, v in ((f"R_{cam} (or Rot_{cam})", R), (f"T_{cam}", T)) if v is None)
        raise HumanDataError(f"{extri}: camera {cam!r} (listed in {intri.name} names) has no {missing}")
    K, R, T = check_camera(K, R, T, f"{extri} camera {cam!r}")
    size = (width, height) if width and height and width > 0 and height > 0 else None
    return Camera(cam, K, dist, R, T, size)


def _compact(names: List[str], limit: int = 12) -> str:
    """``1-10, 12, 14-23``: runs of consecutive numbers collapsed, at most ``limit`` items then how many more."""
    items: List[str] = []
    start = prev = None
    for name in names + [None]:
        if name is not None and prev is not None and name.isdigit() and prev.isdigit() and int(name) == int(prev) + 1:
            prev = name
            continue
        if start is not None:
            items.append(start if start == prev else f"{start}-{prev}")
        start = prev = name
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _open(path: Path) -> "cv2.FileStorage":
    if not path.is_file():
        raise HumanDataError(f"{path}: camera file is missing")
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except cv2.error as err:
        raise HumanDataError(f"{path}: not an OpenCV FileStorage YAML file ({str(err).strip().splitlines()[-1]})"
                             ) from err
    if not fs.isOpened():
        raise HumanDataError(f"{path}: cannot open it as an OpenCV FileStorage YAML file")
    return fs


def _names(intri_fs: "cv2.FileStorage", intri: Path, extri_fs: "cv2.FileStorage", extri: Path) -> List[str]:
    """``names`` of ``intri.yml`` then the ones only ``extri.yml`` lists (either file may hold the list)."""
    names = _name_list(intri_fs, intri)
    names += [n for n in _name_list(extri_fs, extri) if n not in names]
    if not names:
        raise HumanDataError(f"{intri}: no 'names' list of cameras (nor in {extri.name})")
    return names


def _name_list(fs: "cv2.FileStorage", path: Path) -> List[str]:
    node = fs.getNode("names")
    if node.empty() or node.isNone():
        return []
    if not node.isSeq():
        raise HumanDataError(f"{path}: 'names' should be a list of camera names")
    names = []
    for i in range(node.size()):
        item = node.at(i)
        value = item.string() if item.isString() else str(int(item.real()))
        if value != "none":  # EasyMocap skips placeholder entries
            names.append(value)
    return names


def _has(fs: "cv2.FileStorage", key: str) -> bool:
    node = fs.getNode(key)
    return not (node.empty() or node.isNone())


def _matrix(fs: "cv2.FileStorage", key: str, path: Path, shape: Optional[Tuple[int, int]] = None
            ) -> Optional[np.ndarray]:
    node = fs.getNode(key)
    if node.empty() or node.isNone():
        return None
    value = node.mat()
    if value is None:
        raise HumanDataError(f"{path}: {key} is not an !!opencv-matrix")
    value = np.asarray(value, dtype=np.float64)
    if shape is not None and value.shape != shape:
        raise HumanDataError(f"{path}: {key} has shape {value.shape}, expected {shape[0]}x{shape[1]}")
    if not np.isfinite(value).all():
        raise HumanDataError(f"{path}: {key} contains NaN or inf")
    return value


def _int(fs: "cv2.FileStorage", key: str) -> Optional[int]:
    node = fs.getNode(key)
    return None if node.empty() or node.isNone() else int(node.real())
