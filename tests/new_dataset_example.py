"""A parser for a made-up "turntable" layout: the worked example of docs/new_dataset.md, parsed by its test.

    <root>/<subject>/cameras.json               # {"<camera>": {"K", "R", "T"}}: world-to-camera, OpenCV axes, metres;
                                                # K with pixel centres at +0.5 (nerfstudio's, as the records use)
    <root>/<subject>/images/<camera>/<frame>.png  # frames numbered 000000, 000001, ...
    <root>/<subject>/masks/<camera>/<frame>.png
    <root>/<subject>/proxy/<frame>.npy          # the posed body's vertices (N, 3) in metres
    <root>/<subject>/faces.npy                  # the body's triangles (F, 3), optional
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Type

import numpy as np

from gmnerf_ns.data.human_record import FrameRecord, ViewRecord, check_camera, full_image_crop
from gmnerf_ns.data.parsers._files import DatasetFolder, image_size, subject_folders
from gmnerf_ns.data.parsers.base import HumanDataParser, HumanDataParserConfig
from gmnerf_ns.data.parsers.subject_reader import UNFIT, SkipFrame, SubjectReader, require_files


@dataclass
class TurntableDataParserConfig(HumanDataParserConfig):
    """Turntable captures: a folder of subjects (cameras.json, images/, masks/, proxy/) or one subject folder."""

    _target: Type = field(default_factory=lambda: TurntableDataParser)
    data: Path = Path("turntable")
    """Dataset root or one subject folder; short names resolve against $GMNERF_DATA (default ./data)."""
    protocol: str = "easymocap"
    """Protocol preset or YAML path (easymocap: one subject trains and evaluates on itself, 4 sources)."""

    @classmethod
    def detect_subject(cls, folder: Path) -> Optional[str]:
        if (folder / "cameras.json").is_file() and (folder / "proxy").is_dir():
            return f"{folder.name}/ has cameras.json and proxy/"
        return None


class TurntableDataParser(HumanDataParser):
    """Finds the subject folders; :class:`TurntableSubject` reads one."""

    config: TurntableDataParserConfig

    def find_subjects(self, root: Path) -> Dict[str, Path]:
        return subject_folders(root, lambda folder: self.config.detect_subject(folder) is not None)

    def read_subject(self, name: str, folder: Path, resolution: int) -> "TurntableSubject":
        return TurntableSubject(name, folder, resolution)


class TurntableSubject(SubjectReader):
    """One subject folder: its frames are the first camera's image numbers."""

    missing_files = "images or masks"
    needs = "its images, masks and proxy"

    def __init__(self, name: str, folder: Path, resolution: int):
        super().__init__(name, folder)
        self.resolution, self.fits_where = resolution, folder / "proxy"
        self.inside = DatasetFolder(folder)  # camera names from cameras.json may not lead out of the folder
        cameras = json.loads((folder / "cameras.json").read_text())
        self.camera_names = tuple(sorted(cameras))
        self.cameras = [check_camera(cameras[c]["K"], cameras[c]["R"], cameras[c]["T"], f"{folder} camera {c}")
                        for c in self.camera_names]
        for c in self.camera_names:
            self.inside.check(folder / "images" / c, folder / "cameras.json", f"camera {c!r} folder")

    def frame_ids(self) -> List[int]:
        return sorted(int(p.stem) for p in (self.folder / "images" / self.camera_names[0]).glob("*.png"))

    def prepare(self, frames: Sequence[int]) -> None:
        self.sizes = [image_size(self.folder / "images" / c / f"{frames[0]:06d}.png") for c in self.camera_names]

    def views(self, frame: int) -> Tuple[ViewRecord, ...]:
        images = [self.folder / "images" / c / f"{frame:06d}.png" for c in self.camera_names]
        masks = [self.folder / "masks" / c / f"{frame:06d}.png" for c in self.camera_names]
        require_files(frame, images + masks)
        return tuple(
            ViewRecord(image_path=image, mask_paths=(mask,), K=K, R=R, T=T, camera_name=name,
                       out_size=(int(round(w * self.resolution / h)), self.resolution), crop=full_image_crop(w, h))
            for name, image, mask, (K, R, T), (w, h) in zip(self.camera_names, images, masks, self.cameras, self.sizes)
        )

    def proxy(self, frame: int) -> Path:
        path = self.folder / "proxy" / f"{frame:06d}.npy"
        if not path.is_file():
            raise SkipFrame(f"frame {frame} ({path.name} missing)", UNFIT)
        return path

    def faces(self, frames: Sequence[FrameRecord]) -> Optional[np.ndarray]:
        path = self.folder / "faces.npy"
        return np.load(path).astype(np.int64) if path.is_file() else None
