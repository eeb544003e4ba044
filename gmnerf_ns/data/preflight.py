"""Pre-flight checks of a parsed dataset's geometry: does every camera see its person, and are the images the size
their intrinsics describe.

A camera turned away from the person or images resized after calibration parse and train without an error, only
worse. These checks are cheap enough for the start of every ``ns-train`` (the first frame of each subject, up to
``max_subjects`` spread-out subjects: one proxy file per subject and, per camera, the image and mask headers, never
their pixels) and print one warning line per problem; training goes on. ``gmnerf-doctor`` reports the same lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import SubjectRecord, ViewRecord, load_vertices

MAX_SUBJECTS = 32
"""Subjects checked by default (spread over the dataset), so startup does not grow with the dataset."""
MAX_BEHIND = 0.01
"""A camera with more of the proxy's vertices behind it than this fraction is turned away from the person."""
MIN_INSIDE = 0.5
"""A camera whose view holds less of the proxy than this fraction does not see the person."""
MAX_CENTRE_OFFSET = 0.2
"""A principal point further than this fraction of the image size from its centre belongs to another image size."""
MAX_LINES = 16
"""Warning lines printed at most; the rest are counted."""

TITLES = {
    "behind": ("the proxy is behind the camera", "camera turned away from the person, or R, T camera-to-world?"),
    "outside": ("the proxy projects mostly outside the image", "intrinsics or camera order wrong?"),
    "size": ("the image is not the size its intrinsics describe", "images resized after calibration? use the "
                                                                  "calibrated size or scale K"),
    "mask": ("mask and image sizes differ", "regenerate the masks at the image size"),
}
"""Problem kind -> (what is wrong, what to check)."""


@dataclass(frozen=True)
class CameraProblem:
    """One problem of one camera of one subject (first frame)."""

    subject: str
    camera: str
    kind: str
    """A key of :data:`TITLES`."""
    detail: str
    """The numbers, e.g. ``100% of its vertices``."""


def project_proxy(view: ViewRecord, vertices: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(in front (V,) bool, pixel coordinates (V, 2) in the model-ready view) of the proxy's vertices; the coordinates
    of vertices behind the camera are meaningless."""
    cam = vertices.astype(np.float64) @ np.asarray(view.R, dtype=np.float64).T + np.asarray(view.T).reshape(1, 3)
    front = cam[:, 2] > 1e-6
    uv = cam @ view.output_intrinsics.T
    uv = uv[:, :2] / np.where(front, uv[:, 2], 1.0)[:, None]
    return front, uv


def geometry_problem(subject: str, view: ViewRecord, vertices: np.ndarray) -> Optional[CameraProblem]:
    """The proxy behind the camera, or mostly outside its view; None if it is in view."""
    front, uv = project_proxy(view, vertices)
    behind = 1.0 - float(front.mean())
    if behind > MAX_BEHIND:
        return CameraProblem(subject, view.camera_name, "behind", f"{100 * behind:.0f}% of its vertices")
    width, height = view.out_size
    inside = float(((uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)).mean())
    if inside < MIN_INSIDE:
        return CameraProblem(subject, view.camera_name, "outside", f"{100 * inside:.0f}% inside its {width}x{height} "
                                                                   "view")
    return None


def size_problem(subject: str, view: ViewRecord) -> Optional[CameraProblem]:
    """Masks of another size than the image, or an image whose principal point is far from its centre (intrinsics of
    another image size); reads the file headers only. None if fine or a file is missing (training reports those)."""
    from gmnerf_ns.data.parsers._files import image_size

    try:
        width, height = image_size(view.image_path)
        for mask in (m for m in view.mask_paths if m.is_file()):
            mask_w, mask_h = image_size(mask)
            if (mask_w, mask_h) != (width, height):
                return CameraProblem(subject, view.camera_name, "mask",
                                     f"{mask.name} {mask_w}x{mask_h}, image {width}x{height}")
    except HumanDataError:
        return None
    cx, cy = float(view.K[0, 2]), float(view.K[1, 2])
    if abs(cx / width - 0.5) > MAX_CENTRE_OFFSET or abs(cy / height - 0.5) > MAX_CENTRE_OFFSET:
        return CameraProblem(subject, view.camera_name, "size",
                             f"{width}x{height} image, principal point ({cx:.0f}, {cy:.0f}): calibrated for about "
                             f"{2 * cx:.0f}x{2 * cy:.0f}?")
    return None


def check_subject(subject: SubjectRecord) -> List[CameraProblem]:
    """Problems of every camera of the subject's first frame (a size problem hides the geometry it distorts)."""
    frame = subject.frames[0]
    try:
        vertices = load_vertices(frame)
    except HumanDataError:
        vertices = None  # training and gmnerf-doctor report unreadable proxies
    problems = []
    for view in frame.views:
        size = size_problem(subject.name, view)
        try:
            geometry = None if vertices is None else geometry_problem(subject.name, view, vertices)
        except HumanDataError:
            geometry = None  # a view without a crop: the dataparser's error, reported when training loads it
        if geometry is not None and (size is None or size.kind != "size" or geometry.kind == "behind"):
            problems.append(geometry)
        if size is not None:
            problems.append(size)
    return problems


def spread_subjects(collections: Iterable, max_subjects: Optional[int] = MAX_SUBJECTS) -> List[SubjectRecord]:
    """The subjects of ``collections`` (HumanCollections; each name once), ``max_subjects`` spread out (None = all)."""
    subjects: Dict[str, SubjectRecord] = {}
    for collection in collections:
        for subject in collection.subjects:
            subjects.setdefault(subject.name, subject)
    chosen = list(subjects.values())
    if max_subjects is not None and 0 < max_subjects < len(chosen):
        step = (len(chosen) - 1) / max(max_subjects - 1, 1)
        chosen = [chosen[i] for i in sorted({int(round(k * step)) for k in range(max_subjects)})]
    return chosen


def check_collections(collections: Iterable, max_subjects: Optional[int] = MAX_SUBJECTS
                      ) -> Tuple[List[CameraProblem], Dict[str, int]]:
    """(problems, cameras checked per subject) of the first frame of up to ``max_subjects`` subjects."""
    subjects = spread_subjects(collections, max_subjects)
    return [p for s in subjects for p in check_subject(s)], {s.name: len(s.frames[0].views) for s in subjects}


def problem_lines(problems: Sequence[CameraProblem], cameras_per_subject: Optional[Dict[str, int]] = None,
                  max_lines: Optional[int] = MAX_LINES) -> List[str]:
    """One line per (subject, kind of problem), naming its cameras ("all N cameras" when every one has it) and the
    first camera's numbers; past ``max_lines`` one line counts the rest."""
    groups: Dict[Tuple[str, str], List[CameraProblem]] = {}
    for problem in problems:
        groups.setdefault((problem.subject, problem.kind), []).append(problem)
    lines = []
    for (subject, kind), group in groups.items():
        total = (cameras_per_subject or {}).get(subject)
        names = [p.camera for p in group]
        if total is not None and len(names) == total and total > 1:
            who = f"all {total} cameras"
        else:
            who = ("camera " if len(names) == 1 else "cameras ") + ", ".join(names)
        title, hint = TITLES[kind]
        lines.append(f"{subject} {who}: {title} ({group[0].camera}: {group[0].detail}); {hint}")
    if max_lines is not None and len(lines) > max_lines:
        rest = len(lines) - max_lines + 1
        lines = lines[: max_lines - 1] + [f"and {rest} more such lines (gmnerf-doctor lists them all)"]
    return lines


def preflight_lines(collections: Iterable, max_subjects: Optional[int] = MAX_SUBJECTS,
                    max_lines: Optional[int] = MAX_LINES) -> List[str]:
    """The warning lines of :func:`check_collections` (empty when every checked camera is fine)."""
    problems, cameras = check_collections(collections, max_subjects)
    return problem_lines(problems, cameras, max_lines)


def warn_preflight(collections: Iterable, max_subjects: Optional[int] = MAX_SUBJECTS) -> List[str]:
    """Prints the pre-flight warnings of ``collections`` on nerfstudio's console (training goes on); returns them."""
    from nerfstudio.utils.rich_utils import CONSOLE
    from rich.markup import escape

    lines = preflight_lines(collections, max_subjects)
    for line in lines:
        CONSOLE.print(f"[bold yellow]WARNING: pre-flight: {escape(line)}", soft_wrap=True, highlight=False)
    return lines
