"""What a dataset supplies for one subject: its cameras, its frames, one frame's views and proxy, the faces.

A parser's :meth:`~gmnerf_ns.data.parsers.base.HumanDataParser.read_subject` returns a :class:`SubjectReader` for one
subject folder; the base class's ``parse_subject`` does the rest, the same way for every dataset: it selects the
protocol's frames, asks for each frame's views and then its proxy, skips the frames that lack a file (one warning per
kind: :data:`MISSING` views, :data:`UNFIT` proxies), fails when no frame is left, and checks the faces against the
proxy's vertex count. docs/new_dataset.md walks through a complete example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from gmnerf_ns.data.human_record import FrameRecord, ViewRecord

MISSING = "missing"
"""A frame whose view files (images, masks) are not all there."""
UNFIT = "unfit"
"""A frame without a body fit, so without a proxy."""


class SkipFrame(Exception):
    """Raised by :meth:`SubjectReader.views` or :meth:`SubjectReader.proxy`: this frame is skipped (counted in one
    warning per ``kind``; ``detail`` is the example the warning names, e.g. ``frame 12 (<the missing file>)``)."""

    def __init__(self, detail: str, kind: str = MISSING):
        super().__init__(detail)
        self.detail, self.kind = detail, kind


def require_files(frame: Any, paths: Sequence[Path]) -> None:
    """Raises :class:`SkipFrame` naming the first of ``paths`` that is not a file."""
    for path in paths:
        if not Path(path).is_file():
            raise SkipFrame(f"frame {frame} ({path})")


class SubjectReader:
    """One subject's files as its dataset stores them; a dataset subclasses it and fills in the hooks.

    ``frame`` below is whatever :meth:`frame_ids` lists (a number, a file stem, a position); :meth:`frame_id` turns
    it into the record's integer frame id. A reader may hold open files: the base class uses it as a context manager
    and :meth:`close` releases them.
    """

    camera_names: Tuple[str, ...] = ()
    """The subject's cameras, in the order of every frame's views."""
    camera_ids: Optional[Tuple[int, ...]] = None
    """The dataset's numbers of those cameras, when it numbers them."""
    vertices_scale: float = 1.0
    """Metres per proxy-file unit."""
    gt_mesh_dir: Optional[Path] = None
    """Ground-truth surfaces, when the dataset has them."""
    missing_files = "files"
    """What the frames skipped as :data:`MISSING` lack, for the warning ("images", "images or masks")."""
    needs = "all its files"
    """What a usable frame has, for the error when none has it ("its images and an SMPL fit")."""
    fit_name = "body"
    """The body fit a frame skipped as :data:`UNFIT` lacks, for the warning ("SMPL", "SMPL-X")."""

    def __init__(self, name: str, folder: Path):
        self.name, self.folder = name, Path(folder)
        self.where = self.folder
        """The path the warnings and the no-frames error name."""
        self.source = self.folder
        """The file or folder the frames are listed in, named when the frame sampling selects none."""
        self.fits_where = self.folder
        """The folder of the body fits, named by the :data:`UNFIT` warning."""

    def __enter__(self) -> "SubjectReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Releases open files."""

    def frame_ids(self) -> List[Any]:
        """Every frame of the subject in order: what the protocol's frame sampling picks from (by position)."""
        raise NotImplementedError

    def prepare(self, frames: Sequence[Any]) -> None:
        """Reads what the sampled ``frames`` share (image sizes from the first one, body models), before any view."""

    def views(self, frame: Any) -> Tuple[ViewRecord, ...]:
        """One frame's views, one per camera; raises :class:`SkipFrame` when a file is missing."""
        raise NotImplementedError

    def proxy(self, frame: Any) -> Path:
        """One frame's posed proxy (vertices file); raises :class:`SkipFrame` (kind :data:`UNFIT`) without a fit."""
        raise NotImplementedError

    def proxies(self, frames: Sequence[Any], skip: Callable[[SkipFrame], None]) -> Dict[Any, Path]:
        """The proxies of ``frames`` (those that have all their views), passing each skipped frame to ``skip``; a
        dataset whose fits are read together (one person chosen for all frames) overrides this instead of
        :meth:`proxy`."""
        out = {}
        for frame in frames:
            try:
                out[frame] = self.proxy(frame)
            except SkipFrame as skipped:
                skip(skipped)
        return out

    def frame_id(self, frame: Any) -> int:
        """The record's frame id of ``frame``."""
        return int(frame)

    def faces(self, frames: Sequence[FrameRecord]) -> Optional[np.ndarray]:
        """The proxy's (F, 3) triangle faces, or None (visibility then uses vertex splats)."""
        return None

    def faces_error(self, faces: np.ndarray, num_vertices: int, first: FrameRecord) -> str:
        """The error when ``faces`` index past the first frame's ``num_vertices`` proxy vertices."""
        return f"{first.vertices_path}: {num_vertices} vertices, but the faces index {int(faces.max()) + 1}"

    def finish(self) -> None:
        """Runs after every frame is read: the dataset's own warnings, caches to save."""

    def unfit_warning(self, skipped: List[str]) -> str:
        """The one warning for the frames skipped as :data:`UNFIT`."""
        return (f"{self.fits_where}: {len(skipped)} frame(s) have no {self.fit_name} fit and are skipped, "
                f"e.g. {skipped[0]}")

    def no_frames(self) -> str:
        """The error when no sampled frame is left."""
        return f"{self.where}: no sampled frame has {self.needs}"
