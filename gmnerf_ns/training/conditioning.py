"""Which subject-frame a render is conditioned on, chosen by name from the command line or the viewer.

GM-NeRF renders a person from that subject-frame's source views. Cameras that carry ``subject_index``/``frame_id``
metadata (dataset cameras) are conditioned on their own subject-frame; cameras built by a tool (camera paths, orbits,
the viewer) carry none, so the tool either attaches metadata (:func:`with_condition`) or sets the model's default
(:func:`set_default_condition`). Subject names are the dataset's (``subject_002``, ``CoreView_387``); a unique
suffix such as ``387`` or ``002`` works too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import torch
from nerfstudio.cameras.cameras import Cameras

if TYPE_CHECKING:  # imported lazily: the datamanager imports the dataparsers, which is slow and not always needed
    from gmnerf_ns.data.datamanager import GMNeRFDataManager
    from gmnerf_ns.model.gmnerf_model import GMNeRFModel


class ConditioningError(ValueError):
    """An unknown subject or frame; the message lists what is available."""


@dataclass(frozen=True)
class SubjectChoice:
    """A subject the model can be conditioned on and the frames it has in this run's data."""

    index: int
    """Index into ``datamanager.subject_names`` (the ``subject_index`` of camera metadata)."""
    name: str
    held_out: bool
    """Whether the subject is one of the protocol's evaluation (unseen) subjects."""
    frame_ids: Tuple[int, ...]

    @property
    def label(self) -> str:
        """Display name, e.g. ``subject_002 (held-out)``."""
        return f"{self.name} ({'held-out' if self.held_out else 'training'})"


def available_subjects(datamanager: "GMNeRFDataManager") -> List[SubjectChoice]:
    """Every subject of the run's data, held-out subjects first (each with the union of its frames in both splits)."""
    frames: dict = {}
    held_out = {s.name for s in datamanager.eval_collection.subjects}
    for collection in (datamanager.eval_collection, datamanager.train_collection):
        for subject in collection.subjects:
            frames.setdefault(subject.name, set()).update(f.frame_id for f in subject.frames)
    order = [s.name for s in datamanager.eval_collection.subjects]
    order += [s.name for s in datamanager.train_collection.subjects if s.name not in held_out]
    return [
        SubjectChoice(datamanager.subject_names.index(name), name, name in held_out, tuple(sorted(frames[name])))
        for name in order
    ]


def describe_subjects(choices: Sequence[SubjectChoice]) -> str:
    """One line per group: ``held-out: subject_002 (frames 0-1); training: ...``."""
    def fmt(c: SubjectChoice) -> str:
        ids = c.frame_ids
        span = f"{ids[0]}" if len(ids) == 1 else (f"{ids[0]}-{ids[-1]}" if ids == tuple(range(ids[0], ids[-1] + 1))
                                                  else ", ".join(map(str, ids[:8])) + (" ..." if len(ids) > 8 else ""))
        return f"{c.name} (frames {span})"

    groups = [("held-out", [c for c in choices if c.held_out]), ("training", [c for c in choices if not c.held_out])]
    return "; ".join(f"{label}: {', '.join(fmt(c) for c in group)}" for label, group in groups if group)


def choose_subject(datamanager: "GMNeRFDataManager", name: Optional[str] = None) -> SubjectChoice:
    """The subject called ``name`` (exact, or a unique ``_<suffix>``); ``None`` = the first held-out subject.

    Raises:
        ConditioningError: If no subject (or several) match; the message lists the available subjects.
    """
    choices = available_subjects(datamanager)
    if name is None:
        return choices[0]
    exact = [c for c in choices if c.name == name]
    hits = exact or [c for c in choices if c.name.endswith(f"_{name}") or c.name.split("_")[-1] == name]
    if len(hits) == 1:
        return hits[0]
    what = "is ambiguous" if hits else "is not in this run's data"
    raise ConditioningError(f"subject {name!r} {what}; available subjects: {describe_subjects(choices)}")


def choose_frames(subject: SubjectChoice, frame: Optional[int] = None,
                  frames: Optional[Sequence[int]] = None, all_frames: bool = False) -> Tuple[int, ...]:
    """The frame ids to condition on: ``frames`` (a sequence), all of the subject's, ``frame``, or its first frame.

    Raises:
        ConditioningError: If a frame is not available for the subject; the message lists the available ones.
    """
    if all_frames:
        return subject.frame_ids
    wanted = tuple(frames) if frames else ((frame,) if frame is not None else subject.frame_ids[:1])
    missing = [f for f in wanted if f not in subject.frame_ids]
    if missing:
        raise ConditioningError(
            f"subject {subject.name} has no frame {', '.join(map(str, missing))} in this run's data; available frames: "
            f"{', '.join(map(str, subject.frame_ids))}"
        )
    return wanted


def set_default_condition(model: "GMNeRFModel", subject_index: int, frame_id: int) -> None:
    """Conditions cameras without metadata (viewer, plain ns-render) on a subject-frame; drops the cached encoding."""
    model.set_condition(subject_index, frame_id)


def frame_schedule(num_cameras: int, frame_ids: Sequence[int]) -> List[int]:
    """The frame of each of ``num_cameras`` cameras of a free-viewpoint video: the sequence spread over the path."""
    count = len(frame_ids)
    return [int(frame_ids[min(count - 1, i * count // max(num_cameras, 1))]) for i in range(num_cameras)]


def with_condition(cameras: Cameras, subject_index: int, frame_ids: Sequence[int]) -> Cameras:
    """``cameras`` with per-camera ``subject_index``/``frame_id`` metadata (``frame_ids`` spread over the cameras).

    Existing metadata (e.g. ns-render's ``cam_idx``) is kept. The tensors are (N, 1) like the dataparser's, so
    slicing ``cameras[i : i + 1]`` keeps each camera's own frame.
    """
    num = cameras.size
    schedule = frame_schedule(num, frame_ids)
    metadata = dict(cameras.metadata or {})
    device = cameras.device
    metadata["subject_index"] = torch.full((num, 1), int(subject_index), dtype=torch.long, device=device)
    metadata["frame_id"] = torch.tensor(schedule, dtype=torch.long, device=device).view(num, 1)
    cameras.metadata = metadata
    return cameras
