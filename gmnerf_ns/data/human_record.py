"""The one in-memory description of a multi-view human dataset that every dataset parser produces.

Datasets differ only in how they fill these records (folder layout, units, camera conventions). Everything downstream
(image loading, the cross-subject datamanager, the model) reads these records and never branches on the dataset.

Conventions (fixed for every dataset):
    * world units are metres;
    * cameras are OpenCV world-to-camera: ``x_cam = R @ x_world + T`` (x right, y down, z forward);
    * ``K`` is the intrinsics of the *stored* image file; the crop and output size turn it into the model's intrinsics;
    * ``K`` uses the pixel-corner convention of nerfstudio's rays and ``gmnerf_ns.geometry.rasterize``: pixel (i, j)
      covers [i, i+1) x [j, j+1) and its centre is (i + 0.5, j + 0.5). Calibrations made with OpenCV (ZJU-MoCap,
      GeneBody) put the centre at (i, j); their parsers add 0.5 to cx, cy;
    * proxy vertices are posed body-model vertices in world metres, any template (SMPL 6890, SMPL-X 10475, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from gmnerf_ns.core.errors import HumanDataError


class HumanDataWarning(UserWarning):
    """A dataset problem that is skipped so the rest can go on (e.g. a subject missing a camera or a frame)."""


@dataclass(frozen=True)
class ViewRecord:
    """One stored camera image of one subject-frame and how to turn it into a model-ready view."""

    image_path: Path
    """The stored RGB image."""
    mask_paths: Tuple[Path, ...]
    """Foreground masks; their union is used (e.g. ZJU-MoCap ``mask`` and ``mask_cihp``). Missing ones are skipped."""
    K: np.ndarray
    """(3, 3) intrinsics of the stored image, in its pixels."""
    R: np.ndarray
    """(3, 3) world-to-camera rotation (OpenCV)."""
    T: np.ndarray
    """(3,) world-to-camera translation in metres."""
    camera_name: str
    """The dataset's name of this camera (folder name)."""
    out_size: Tuple[int, int]
    """(width, height) of the view given to the model, after crop and resize."""
    dist: Optional[np.ndarray] = None
    """(5,) OpenCV distortion of the stored image; ``None`` or zeros means already undistorted."""
    crop: Optional[Tuple[int, int, int, int]] = None
    """(x0, y0, x1, y1) crop in stored (undistorted) pixels, applied before the resize; ``None`` = full image."""
    mask_threshold: int = 0
    """A mask pixel is foreground when its value is above this (0 for ZJU-MoCap, 128 for GeneBody)."""

    @property
    def output_intrinsics(self) -> np.ndarray:
        """(3, 3) intrinsics of the model-ready view (after crop and resize)."""
        K = np.asarray(self.K, dtype=np.float64).copy()
        x0, y0 = (self.crop[0], self.crop[1]) if self.crop is not None else (0, 0)
        # Exact in the pixel-corner convention (see the module docstring): a crop shifts, a resize scales.
        K[0, 2] -= x0
        K[1, 2] -= y0
        src_w, src_h = self.source_crop_size
        K[0, :] *= self.out_size[0] / src_w
        K[1, :] *= self.out_size[1] / src_h
        return K

    @property
    def source_crop_size(self) -> Tuple[int, int]:
        """(width, height) of the region of the stored image that becomes the view."""
        if self.crop is not None:
            return self.crop[2] - self.crop[0], self.crop[3] - self.crop[1]
        # Without a crop the stored size is implied by the principal point only approximately, so parsers that do not
        # crop must store the full image size as the crop: see ``full_image_crop``.
        raise HumanDataError(f"{self.image_path}: view has no crop; parsers must set crop=full_image_crop(w, h)")

    @property
    def camera_center(self) -> np.ndarray:
        """(3,) camera centre in world metres."""
        return -np.asarray(self.R).T @ np.asarray(self.T).reshape(3)


def full_image_crop(width: int, height: int) -> Tuple[int, int, int, int]:
    """The crop that keeps the whole stored image."""
    return (0, 0, int(width), int(height))


@dataclass(frozen=True)
class FrameRecord:
    """One time instant of one subject: its camera views and its posed geometry proxy."""

    subject: str
    """Subject name (unique within a dataset)."""
    frame_id: int
    """The dataset's frame number."""
    views: Tuple[ViewRecord, ...]
    """One view per camera of the subject, in the subject's camera order."""
    vertices_path: Path
    """Posed proxy vertices: ``.npy`` (V, 3) or ``.obj``."""
    vertices_scale: float = 1.0
    """Multiply loaded vertices by this to get metres (1 / GeneBody's ``--units-per-metre``)."""


@dataclass(frozen=True)
class SubjectRecord:
    """One person: camera names, frames, and optionally the proxy mesh faces."""

    name: str
    camera_names: Tuple[str, ...]
    frames: Tuple[FrameRecord, ...]
    faces: Optional[np.ndarray] = None
    """(F, 3) faces of the proxy template, when known (visibility then uses the mesh; otherwise vertex splats)."""
    gt_mesh_dir: Optional[Path] = None
    """Folder of ground-truth surface meshes per frame (``<frame>.ply``/``.obj``), for geometry metrics."""
    camera_ids: Optional[Tuple[int, ...]] = None
    """The dataset's camera number of each camera (ZJU ``Camera (22)`` -> 21, GeneBody ``32`` -> 32), which protocol
    view indices refer to; ``None`` = positions ``0..n-1``. Needed when a subject lacks some cameras."""

    def camera_position(self, number: int) -> Optional[int]:
        """Position in ``camera_names``/``frame.views`` of the dataset camera ``number``; ``None`` if it is missing."""
        if self.camera_ids is None:
            return number if 0 <= number < len(self.camera_names) else None
        try:
            return self.camera_ids.index(number)
        except ValueError:
            return None


@dataclass
class HumanCollection:
    """Everything a split of a dataset contains, plus the protocol's view choices."""

    subjects: List[SubjectRecord]
    input_views: Optional[Tuple[int, ...]] = None
    """Camera indices used as source views at evaluation; ``None`` = evenly spaced over the ring."""
    target_views: Optional[Tuple[int, ...]] = None
    """Camera indices rendered as targets at evaluation; ``None`` = every camera that is not an input view."""
    target_views_per_subject: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    """Per-subject override of ``target_views`` (e.g. ZJU-MoCap 313/315 have 21 cameras)."""
    bbox_padding: float = 0.05
    """Metres added on every side of the proxy's bounding box for sampling and metric crops."""

    def targets_for(self, subject: SubjectRecord, num_inputs: int) -> Tuple[int, ...]:
        """Target views of a subject under this protocol, as positions into ``frame.views``.

        Protocol view numbers are the dataset's camera numbers (``subject.camera_ids``); targets the subject lacks are
        skipped. A target that is also a source view is refused: an evaluation scores only views the model is not
        given.
        """
        inputs = self.inputs_for(subject, num_inputs)
        wanted = self.target_views_per_subject.get(subject.name, self.target_views)
        if wanted is None:
            return tuple(i for i in range(len(subject.camera_names)) if i not in inputs)
        positions = tuple(p for p in (subject.camera_position(v) for v in wanted) if p is not None)
        leaked = [p for p in positions if p in inputs]
        if leaked:
            number = (lambda p: p) if subject.camera_ids is None else (lambda p: subject.camera_ids[p])
            raise HumanDataError(
                f"subject {subject.name}: target view(s) {', '.join(str(number(p)) for p in leaked)} are also source "
                f"views (sources: {', '.join(str(number(p)) for p in inputs)}); an evaluation scores only views the "
                "model is not given: drop them from target_views or set input_views"
            )
        return positions

    def inputs_for(self, subject: SubjectRecord, num_inputs: int) -> Tuple[int, ...]:
        """Source views of a subject under this protocol, as positions into ``frame.views``."""
        if self.input_views is None:
            return evenly_spaced(len(subject.camera_names), num_inputs)
        positions = []
        for number in self.input_views:
            position = subject.camera_position(number)
            if position is None:
                ids = subject.camera_ids if subject.camera_ids is not None else range(len(subject.camera_names))
                raise HumanDataError(
                    f"subject {subject.name} has no camera {number}, which the protocol uses as a source view "
                    f"(its cameras: {', '.join(str(i) for i in ids)}); choose other input views"
                )
            positions.append(position)
        return tuple(positions)


def evenly_spaced(num_cameras: int, count: int, offset: int = 0) -> Tuple[int, ...]:
    """``count`` camera indices evenly spaced over a ring of ``num_cameras`` cameras."""
    if count > num_cameras:
        raise HumanDataError(f"asked for {count} source views but the subject has only {num_cameras} cameras")
    return tuple(int(round(offset + i * num_cameras / count)) % num_cameras for i in range(count))


def load_vertices(frame: FrameRecord, expected_count: Optional[int] = None) -> np.ndarray:
    """Loads the posed proxy vertices of a frame as float32 (V, 3) metres, with clear errors on bad files."""
    path = frame.vertices_path
    if not path.exists():
        raise HumanDataError(f"{path}: proxy vertices file is missing (subject {frame.subject}, frame {frame.frame_id})")
    try:
        if path.suffix == ".npy":
            verts = np.load(path, allow_pickle=False)
        elif path.suffix == ".obj":
            verts = read_obj_vertices(path)
        else:
            raise HumanDataError(f"{path}: unknown vertices format {path.suffix!r}; expected .npy or .obj")
    except HumanDataError:
        raise
    except Exception as err:  # corrupt file: say which one
        raise HumanDataError(f"{path}: cannot read proxy vertices ({err})") from err
    verts = np.asarray(verts, dtype=np.float32)
    if verts.ndim != 2 or verts.shape[1] != 3 or verts.shape[0] < 4:
        raise HumanDataError(f"{path}: proxy vertices have shape {verts.shape}; expected (V, 3)")
    if expected_count is not None and verts.shape[0] != expected_count:
        raise HumanDataError(f"{path}: {verts.shape[0]} vertices, but the subject's template has {expected_count}")
    if not np.isfinite(verts).all():
        raise HumanDataError(f"{path}: proxy vertices contain NaN or inf")
    return verts * np.float32(frame.vertices_scale)


def load_subject_vertices(subject: SubjectRecord, frame: FrameRecord) -> np.ndarray:
    """Loads a frame's proxy vertices (:func:`load_vertices`), refusing fewer than the subject's faces index (the
    proxy is meshed with those faces)."""
    expected = None if subject.faces is None else int(subject.faces.max()) + 1
    verts = load_vertices(frame)
    if expected is not None and verts.shape[0] < expected:
        raise HumanDataError(f"{frame.vertices_path}: {verts.shape[0]} vertices but the faces index {expected}")
    return verts


def read_obj_vertices(path: Path) -> np.ndarray:
    """Reads the ``v x y z`` lines of a Wavefront OBJ file."""
    rows = []
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("v "):
                rows.append([float(x) for x in line.split()[1:4]])
    if not rows:
        raise HumanDataError(f"{path}: OBJ file has no vertices")
    return np.asarray(rows, dtype=np.float32)


def proxy_bbox(vertices: np.ndarray, padding: float) -> np.ndarray:
    """(2, 3) axis-aligned bounding box of the proxy, padded on every side (metres)."""
    return np.stack([vertices.min(0) - padding, vertices.max(0) + padding]).astype(np.float32)


def check_camera(K: np.ndarray, R: np.ndarray, T: np.ndarray, where: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validates and normalises one camera's K, R, T (any array-likes); raises naming ``where`` on bad values."""
    try:
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        R = np.asarray(R, dtype=np.float64).reshape(3, 3)
        T = np.asarray(T, dtype=np.float64).reshape(3)
    except Exception as err:
        raise HumanDataError(f"{where}: camera K/R/T have wrong shapes ({err}); expected 3x3, 3x3, 3") from err
    for name, value in (("K", K), ("R", R), ("T", T)):
        if not np.isfinite(value).all():
            raise HumanDataError(f"{where}: camera {name} contains NaN or inf")
    if abs(np.linalg.det(R) - 1.0) > 1e-2:
        raise HumanDataError(f"{where}: camera R is not a rotation (det={np.linalg.det(R):.3f})")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise HumanDataError(f"{where}: camera K has non-positive focal length")
    return K, R, T


def subject_names(subjects: Sequence[SubjectRecord]) -> List[str]:
    """Names of the subjects, in order."""
    return [s.name for s in subjects]
