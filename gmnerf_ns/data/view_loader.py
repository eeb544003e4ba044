"""Turns a :class:`ViewRecord` into model-ready pixels: read, undistort, crop, resize, mask. Same code for every dataset."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import HumanDataWarning, ViewRecord

cv2.setNumThreads(1)  # decoding runs in the datamanager's workers; OpenCV's own pool would oversubscribe 2 cores


JPEG_SOI, JPEG_EOI, JPEG_SOS = b"\xff\xd8", b"\xff\xd9", 0xDA


def jpeg_problem(data: bytes) -> Optional[str]:
    """Why the JPEG bytes ``data`` are incomplete, or None.

    libjpeg decodes a truncated JPEG without an error: it warns "Premature end of JPEG file" (naming no file) and fills
    the rest with grey, and ``cv2.imread`` returns that image. A complete JPEG ends with the end-of-image marker
    ``FF D9``, which cannot occur inside the compressed scan data (an ``FF`` there is followed by ``00`` or a restart
    marker). Usually it is the last two bytes; when bytes follow it (padding, appended data), it must still come after
    the first start-of-scan marker, which the header segments are walked to find (an embedded EXIF thumbnail has its
    own ``FF D9`` before that).
    """
    if data.rstrip(b"\x00").endswith(JPEG_EOI):
        return None
    pos = len(JPEG_SOI)
    while pos + 4 <= len(data):  # header segments: FF <marker> <2-byte length, itself included>
        if data[pos] != 0xFF:
            return f"bad segment marker at byte {pos}"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == JPEG_SOS:
            return None if data.find(JPEG_EOI, pos) >= 0 else "truncated: no end-of-image marker"
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return "truncated inside the header"


def _decode(path: Path, flags: int, what: str) -> np.ndarray:
    """Decodes an image file with OpenCV, rejecting truncated JPEGs (:func:`jpeg_problem`) and undecodable files."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise HumanDataError(f"{path}: {what} file is unreadable ({err.strerror or err})") from err
    if data.startswith(JPEG_SOI):
        problem = jpeg_problem(data)
        if problem is not None:
            raise HumanDataError(f"{path}: {what} file is corrupt (JPEG {problem}; an interrupted download or copy?)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:  # also every truncated PNG: libpng stops with an error
        raise HumanDataError(f"{path}: {what} file is unreadable or corrupt")
    return image


def read_image(path: Path) -> np.ndarray:
    """Reads an RGB image as uint8 (H, W, 3); a clear error names a missing, truncated or corrupt file."""
    if not path.exists():
        raise HumanDataError(f"{path}: image file is missing")
    return cv2.cvtColor(_decode(path, cv2.IMREAD_COLOR, "image"), cv2.COLOR_BGR2RGB)


def read_mask(path: Path, threshold: int) -> np.ndarray:
    """Reads a mask as bool (H, W): foreground where the value is above ``threshold``."""
    mask = _decode(path, cv2.IMREAD_UNCHANGED, "mask")
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    return mask > threshold


def load_view(view: ViewRecord) -> Tuple[np.ndarray, np.ndarray]:
    """Loads one view as (uint8 RGB (H, W, 3) with black background, bool mask (H, W)) at ``view.out_size``.

    Raises:
        HumanDataError: missing/corrupt files, masks of another size, or no mask file at all.
    """
    image = read_image(view.image_path)
    masks = [read_mask(p, view.mask_threshold) for p in view.mask_paths if p.exists()]
    if not masks:
        listed = ", ".join(str(p) for p in view.mask_paths) or "(none listed)"
        raise HumanDataError(f"{view.image_path}: no mask found; looked for {listed}")
    mask = np.zeros(image.shape[:2], dtype=bool)
    for path, m in zip([p for p in view.mask_paths if p.exists()], masks):
        if m.shape != mask.shape:
            raise HumanDataError(f"{path}: mask is {m.shape[1]}x{m.shape[0]} but image {view.image_path} is "
                                 f"{mask.shape[1]}x{mask.shape[0]}")
        mask |= m
    if view.dist is not None and np.any(np.abs(np.asarray(view.dist)) > 0):
        K = np.asarray(view.K, dtype=np.float64).copy()
        K[:2, 2] -= 0.5  # OpenCV wants pixel centres at integers; records use half-pixel centres (human_record.py)
        dist = np.asarray(view.dist, dtype=np.float64).reshape(-1)
        image = cv2.undistort(image, K, dist)
        mask = cv2.undistort(mask.astype(np.uint8), K, dist) > 0
    if view.crop is not None:
        x0, y0, x1, y1 = view.crop
        image, mask = _crop_padded(image, x0, y0, x1, y1), _crop_padded(mask, x0, y0, x1, y1)
    out_w, out_h = view.out_size
    if (image.shape[1], image.shape[0]) != (out_w, out_h):
        shrink = out_w < image.shape[1]
        image = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        mask = cv2.resize(mask.astype(np.uint8), (out_w, out_h), interpolation=cv2.INTER_NEAREST) > 0
    if not mask.any():
        warnings.warn(f"{view.image_path}: its mask is empty (no foreground pixel)", HumanDataWarning, stacklevel=2)
    image = np.where(mask[..., None], image, 0).astype(np.uint8)
    return image, mask


def _crop_padded(array: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Crops ``array[y0:y1, x0:x1]``, padding with zeros where the box leaves the image."""
    h, w = array.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + array.shape[2:], dtype=array.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out
