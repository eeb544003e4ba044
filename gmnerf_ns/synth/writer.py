"""Atomic, deterministic writers for the ZJU-MoCap layout, and per-frame completion markers.

Every file goes to a temporary name in the same folder and is renamed into place, so a killed run never leaves a
half-written file under a final name. A frame's marker (``<subject>/.done/frame_<i>.json``, listing the frame's files
and sizes) is written last: a frame counts as complete only if its marker exists and every listed file is present
with the recorded size. Byte-level determinism: npz archives carry a fixed timestamp, PLY/JSON are written by hand.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Dict, Iterable, Mapping

import cv2
import numpy as np

DONE_DIR = ".done"
"""Folder of completion markers inside a subject folder."""


def camera_name(index: int) -> str:
    """ZJU-style camera folder name of 0-based camera ``index`` (``Camera_B1`` ...)."""
    return f"Camera_B{index + 1}"


def image_name(frame: int) -> str:
    """ZJU-style image stem of 0-based ``frame``."""
    return f"{frame:06d}"


def atomic_write_bytes(path: Path, data: bytes) -> int:
    """Writes ``data`` to ``path`` through a temporary file and a rename; returns the size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
    return len(data)


def jpg_bytes(rgb: np.ndarray, quality: int) -> bytes:
    """JPEG encoding of an (H, W, 3) uint8 RGB image."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of an (H, W) uint8 image."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def npy_bytes(value) -> bytes:
    """``np.save`` bytes; dicts are pickled like ZJU-MoCap's ``annots.npy``/``params/*.npy``."""
    buf = io.BytesIO()
    np.save(buf, value, allow_pickle=isinstance(value, dict))
    return buf.getvalue()


def npz_bytes(arrays: Mapping[str, np.ndarray], compress: bool = True) -> bytes:
    """An ``.npz`` archive readable by ``np.load``, with fixed timestamps so equal arrays give equal bytes."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = 0o644 << 16
            archive.writestr(info, npy_bytes(np.asarray(value)))
    return buf.getvalue()


def ply_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """Binary little-endian PLY of a triangle mesh (float32 vertices, int32 indices)."""
    vertices = np.ascontiguousarray(vertices, dtype="<f4")
    faces = np.asarray(faces, dtype="<i4")
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment gmnerf-synth clothed surface, world metres, Z up\n"
        f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode("ascii")
    face_rec = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_rec["n"] = 3
    face_rec["idx"] = faces
    return header + vertices.tobytes() + face_rec.tobytes()


def json_bytes(value) -> bytes:
    """Stable, human-readable JSON."""
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")


def marker_path(subject_dir: Path, name: str) -> Path:
    """Completion marker of a frame (``frame_<i>``) or of the subject-level files (``subject``)."""
    return subject_dir / DONE_DIR / f"{name}.json"


def write_marker(subject_dir: Path, name: str, sizes: Dict[str, int]) -> None:
    """Marks a unit complete; ``sizes`` maps file paths relative to ``subject_dir`` to byte sizes."""
    atomic_write_bytes(marker_path(subject_dir, name), json_bytes({"files": sizes}))


def is_complete(subject_dir: Path, name: str) -> bool:
    """Whether a unit's marker exists and every file it lists is present with the recorded size."""
    path = marker_path(subject_dir, name)
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    for rel, size in files.items():
        try:
            if (subject_dir / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


class UnitWriter:
    """Collects the files of one unit (a frame or the subject files), each written atomically, then its marker."""

    def __init__(self, subject_dir: Path):
        self.subject_dir = subject_dir
        self.sizes: Dict[str, int] = {}

    def write(self, rel: str, data: bytes) -> None:
        self.sizes[rel] = atomic_write_bytes(self.subject_dir / rel, data)

    def finish(self, name: str) -> None:
        write_marker(self.subject_dir, name, self.sizes)


def remove_stale_temporaries(folders: Iterable[Path]) -> None:
    """Deletes ``.*.tmp<pid>`` leftovers of a killed run."""
    for folder in folders:
        if folder.is_dir():
            for tmp in folder.rglob(".*.tmp*"):
                if tmp.is_file():
                    tmp.unlink()
