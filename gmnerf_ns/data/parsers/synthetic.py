"""Our built-in layout (gmnerf-synth output and rendered scans): ZJU-MoCap folders plus ``split.json`` and meshes.

``<root>/split.json`` = ``{"train": [...], "test": [...]}``; ``<root>/<subject>/`` is a ZJU-MoCap subject folder
(``Camera_B<n>/``, ``mask/``, ``annots.npy`` with T in mm, ``vertices/<i>.npy``) plus ``meshes/<i>.ply`` (ground-truth
surfaces), ``body_model.npz`` (proxy faces) and ``subject.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Tuple, Type

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.parsers.base import DATA_ROOT_ENV, HumanDataParser, data_root

from ._layouts import MULTIGARMENT, SYNTHETIC, THUMAN2, annots_subjects, has_camera_folders
from .zju_mocap import ZJUMocapDataParser, ZJUMocapDataParserConfig, ZJUSubject


@dataclass
class SyntheticDataParserConfig(ZJUMocapDataParserConfig):
    """Built-in synthetic humans written by ``gmnerf-synth`` (ZJU-MoCap layout with ground-truth meshes)."""

    dataset: ClassVar[str] = SYNTHETIC
    _target: Type = field(default_factory=lambda: SyntheticDataParser)
    data: Path = Path("synthetic")
    """Dataset root (with split.json) or one subject folder; short names resolve against $GMNERF_DATA (./data)."""
    protocol: str = "synthetic"
    """Protocol preset or YAML path; the subject split comes from ``<root>/split.json``."""
    opencv_pixel_centres: bool = False
    """Our renderers store K with nerfstudio's half-pixel centres (unlike real ZJU-MoCap's OpenCV calibration)."""

    @classmethod
    def detect(cls, folder: Path) -> Optional[str]:
        """A root with ``split.json``, or a subject; ``subject.json``'s ``dataset`` (written by gmnerf-render-scans)
        tells rendered THuman2.0 and Multi-garment scans from gmnerf-synth's humans."""
        if (folder / "split.json").is_file():
            return cls._if_ours(*built_in_dataset(annots_subjects(folder), "split.json"))
        return cls.detect_subject(folder)

    @classmethod
    def detect_subject(cls, folder: Path) -> Optional[str]:
        """A ZJU-MoCap-layout subject with ``subject.json`` or ``body_model.npz``."""
        if (folder / "annots.npy").is_file() and has_camera_folders(folder) and \
                any((folder / name).is_file() for name in ("subject.json", "body_model.npz")):
            why = f"{folder.name}/ has camera folders and subject.json or body_model.npz"
            return cls._if_ours(*built_in_dataset([folder], why))
        return None

    @classmethod
    def _if_ours(cls, dataset: str, why: str) -> Optional[str]:
        return why if dataset == cls.dataset else None


class SyntheticDataParser(ZJUMocapDataParser):
    """The ZJU-MoCap parser plus the dataset's own split file and ground-truth meshes."""

    config: SyntheticDataParserConfig
    missing_hint = "generate it with `gmnerf-synth`"
    """Said when the dataset folder does not exist."""

    def resolve_root(self) -> Path:
        path = Path(self.config.data)
        if len(path.parts) <= 1 and not (path.exists() or (data_root() / path).exists()):
            raise HumanDataError(f"dataset folder {path} not found (also looked in {data_root() / path}; set "
                                 f"${DATA_ROOT_ENV} to your data root); {self.missing_hint}")
        return HumanDataParser.resolve_root(self)

    def find_subjects(self, root: Path) -> Dict[str, Path]:
        if (root / "manifest.json").is_file() and not (root / "split.json").is_file():
            # gmnerf-synth writes manifest.json first and split.json last: it was interrupted in between
            raise HumanDataError(f"{root}: incomplete gmnerf-synth dataset (manifest.json but no split.json: the "
                                 "generator was interrupted); rerun the same gmnerf-synth command to finish it")
        return super().find_subjects(root)

    def dataset_split(self, root: Path) -> Optional[Tuple[List[str], List[str]]]:
        path = root / "split.json"
        if not path.is_file():
            return None
        try:
            split = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise HumanDataError(f"{path}: not a readable JSON split file ({err})") from err
        if not (isinstance(split, dict) and all(isinstance(split.get(k), list) for k in ("train", "test"))):
            raise HumanDataError(f'{path}: expected {{"train": [...], "test": [...]}} lists of subject names')
        return [str(s) for s in split["train"]], [str(s) for s in split["test"]]

    def read_subject(self, name: str, folder: Path, resolution: int) -> ZJUSubject:
        subject = super().read_subject(name, folder, resolution)
        if (folder / "meshes").is_dir():
            subject.gt_mesh_dir = folder / "meshes"
        return subject


RENDERED_SCANS = {"THuman2.0": THUMAN2, "Multi-garment": MULTIGARMENT}
"""``subject.json``'s ``dataset`` as gmnerf-render-scans writes it."""


def built_in_dataset(subjects: List[Path], why: str) -> Tuple[str, str]:
    """(dataset, why): gmnerf-synth's humans, or rendered scans if the first readable subject.json says which dataset
    they came from."""
    for subject in subjects:
        path = subject / "subject.json"
        if path.is_file():
            try:
                source = json.loads(path.read_text()).get("dataset")
            except (OSError, ValueError, AttributeError):
                continue
            if source in RENDERED_SCANS:
                return RENDERED_SCANS[source], f"{why}; subject.json: dataset {source}"
            break
    return SYNTHETIC, why
