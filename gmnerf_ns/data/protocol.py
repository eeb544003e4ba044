"""Evaluation protocols (subject splits, input/target views, frame sampling, resolution) read from YAML presets.

Presets live in ``gmnerf_ns/data/protocols/`` (package data); a path to any YAML file with the same keys works too.
Keys::

    name: zju-nhp                      # preset name
    description: ...                   # one line, shown in --help and logs
    dataset: zju-mocap                 # which dataparser it is meant for
    train_subjects: [313, 315, ...]    # null = read the dataset's own split file
    test_subjects: [387, 393, 394]
    num_input_views: 3                 # m, the number of source views
    input_views: [0, 7, 15]            # camera indices used as sources at evaluation; null = evenly spaced
    target_views: [3, 5, 10, 12, 18, 20]   # null = all non-input cameras
    target_views_per_subject: {313: [3, 5, 10, 12, 18, 21]}
    train_frames: {begin: 0, interval: 1, count: null}           # default frame sampling
    test_frames: {begin: 0, interval: 30, count: null}
    frames_per_subject: {train: {313: {begin: 0, interval: 1, count: 60}}, test: {...}}
    resolution: 512                    # output image height in pixels
    bbox_padding: 0.05                 # metres

View indices are the dataset's camera numbers (``SubjectRecord.camera_ids``: ZJU-MoCap folder number - 1, GeneBody view
folder number), so they name the same physical camera when a subject lacks some cameras. Subject keys may be short ids
("313" for "CoreView_313").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

from gmnerf_ns.core.errors import HumanDataError


@dataclass(frozen=True)
class FrameSampling:
    """Which frames of a sequence to use: ``frames[begin : begin + count][::interval]`` (NHP semantics)."""

    begin: int = 0
    interval: int = 1
    count: Optional[int] = None
    """Length of the frame *range* before striding (as NHP's ``ni``); ``None`` = to the end."""

    def select(self, frame_ids: List[int]) -> List[int]:
        """Applies the sampling to a sorted list of available frame ids (by position, not by id)."""
        end = None if self.count is None else self.begin + self.count
        return frame_ids[self.begin : end : max(1, self.interval)]


@dataclass(frozen=True)
class Protocol:
    """A parsed protocol preset."""

    name: str
    description: str = ""
    dataset: str = ""
    train_subjects: Optional[Tuple[str, ...]] = None
    test_subjects: Optional[Tuple[str, ...]] = None
    num_input_views: int = 4
    input_views: Optional[Tuple[int, ...]] = None
    target_views: Optional[Tuple[int, ...]] = None
    target_views_per_subject: Dict[str, Tuple[int, ...]] = field(default_factory=dict)
    train_frames: FrameSampling = FrameSampling()
    test_frames: FrameSampling = FrameSampling()
    frames_per_subject: Dict[str, Dict[str, FrameSampling]] = field(default_factory=dict)
    resolution: int = 512
    bbox_padding: float = 0.05

    def frames_for(self, split: str, subject: str) -> FrameSampling:
        """Frame sampling of a subject in ``train`` or ``test``."""
        split = "train" if split == "train" else "test"
        per = self.frames_per_subject.get(split, {})
        # Presets key subjects by short id ("313") while folders are named "CoreView_313".
        for key in (subject, subject.split("_")[-1]):
            if key in per:
                return per[key]
        return self.train_frames if split == "train" else self.test_frames


def protocol_dir() -> Path:
    """The folder of the shipped protocol presets."""
    return Path(str(resources.files("gmnerf_ns.data") / "protocols"))


def available_protocols() -> List[str]:
    """Names of the shipped presets."""
    return sorted(p.stem for p in protocol_dir().glob("*.yaml"))


def load_protocol(name_or_path: str) -> Protocol:
    """Loads a preset by name (``zju-nhp``) or a YAML file by path; errors list the available presets."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = protocol_dir() / f"{name_or_path}.yaml"
    if not path.exists():
        raise HumanDataError(
            f"unknown protocol {name_or_path!r}: no such YAML file and no preset of that name; "
            f"presets: {', '.join(available_protocols())}"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise HumanDataError(f"{path}: not valid YAML ({err})") from err
    return protocol_from_dict(raw, where=str(path))


def protocol_from_dict(raw: dict, where: str = "<protocol>") -> Protocol:
    """Builds a :class:`Protocol` from the YAML mapping, validating keys and types."""
    known = set(Protocol.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise HumanDataError(f"{where}: unknown protocol keys {sorted(unknown)}; known keys: {sorted(known)}")

    def names(value) -> Optional[Tuple[str, ...]]:
        return None if value is None else tuple(str(v) for v in value)

    def ints(value) -> Optional[Tuple[int, ...]]:
        return None if value is None else tuple(int(v) for v in value)

    def sampling(value) -> FrameSampling:
        value = value or {}
        bad = set(value) - {"begin", "interval", "count"}
        if bad:
            raise HumanDataError(f"{where}: frame sampling has unknown keys {sorted(bad)}")
        return FrameSampling(**value)

    try:
        return Protocol(
            name=str(raw.get("name", Path(where).stem)),
            description=str(raw.get("description", "")),
            dataset=str(raw.get("dataset", "")),
            train_subjects=names(raw.get("train_subjects")),
            test_subjects=names(raw.get("test_subjects")),
            num_input_views=int(raw.get("num_input_views", 4)),
            input_views=ints(raw.get("input_views")),
            target_views=ints(raw.get("target_views")),
            target_views_per_subject={str(k): ints(v) for k, v in (raw.get("target_views_per_subject") or {}).items()},
            train_frames=sampling(raw.get("train_frames")),
            test_frames=sampling(raw.get("test_frames")),
            frames_per_subject={
                split: {str(s): sampling(v) for s, v in (per or {}).items()}
                for split, per in (raw.get("frames_per_subject") or {}).items()
            },
            resolution=int(raw.get("resolution", 512)),
            bbox_padding=float(raw.get("bbox_padding", 0.05)),
        )
    except (TypeError, ValueError) as err:
        raise HumanDataError(f"{where}: bad protocol value ({err})") from err
