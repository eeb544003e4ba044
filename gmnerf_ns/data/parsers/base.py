"""The shared nerfstudio dataparser for multi-view human datasets.

A dataset module in ``gmnerf_ns.data.parsers`` only says where its subjects are (:meth:`find_subjects`), how its folders
are recognised (:meth:`HumanDataParserConfig.detect`) and how one subject's files are read (:meth:`read_subject`, a
:class:`SubjectReader`); this base class applies the protocol (subject split, frame sampling, views), reads every
subject the same way (:meth:`parse_subject`) and turns the records into nerfstudio's :class:`DataparserOutputs`
(docs/new_dataset.md):

* ``image_filenames``/``cameras``: every view of every sampled frame of the training subjects (``train``), or the
  protocol's *target* views of the held-out subjects (``val``/``test``); source views are not targets at evaluation.
* ``cameras.metadata``: per camera ``subject_index`` (into ``metadata["subject_names"]``, the same list for every split),
  ``frame_id`` and ``camera_index``, so any nerfstudio tool that only passes a camera (ns-eval, ns-render, viewer) still
  tells the model which subject-frame to condition on.
* ``metadata["human"]``: the split's :class:`HumanCollection`.

Every parsed subject's units are checked (:func:`check_scale`): its first frame's posed proxy must be the size of a
person and its cameras a plausible distance away, so a capture in millimetres or a wrong scale factor is one error
naming the subject, the file and the factor that would fix it, before anything trains.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.core.options import OptionCheck
from gmnerf_ns.data.human_record import (
    FrameRecord,
    HumanCollection,
    HumanDataWarning,
    SubjectRecord,
    ViewRecord,
    load_vertices,
    proxy_bbox,
)
from gmnerf_ns.data.protocol import FrameSampling, Protocol, load_protocol
from gmnerf_ns.geometry.camera_math import opencv_w2c_to_nerfstudio_c2w

from .scale import check_scale, unit_advice
from .subject_reader import MISSING, UNFIT, SkipFrame, SubjectReader

DATA_ROOT_ENV = "GMNERF_DATA"
"""Environment variable naming the folder that short dataset names (``zju/313``, ``synthetic``) resolve against."""


def data_root() -> Path:
    """The data root: ``$GMNERF_DATA`` or ``./data``."""
    return Path(os.environ.get(DATA_ROOT_ENV, "data"))


def existing_data_path(data: Path) -> Optional[Path]:
    """``data`` if it exists, else ``data`` under the data root if that exists, else None (how ``--data`` resolves)."""
    for candidate in (Path(data), data_root() / data):
        if candidate.exists():
            return candidate
    return None


DATASET_CONFIGS: Dict[str, Type["HumanDataParserConfig"]] = {}
"""Each dataset's parser config by its :attr:`~HumanDataParserConfig.dataset` name; complete once the package is
imported (gmnerf_ns/data/parsers/__init__.py imports every dataset's module)."""


@dataclass
class HumanDataParserConfig(DataParserConfig):
    """Options shared by every human dataset; each dataset's config subclasses this."""

    _target: Type = field(default_factory=lambda: HumanDataParser)
    data: Path = Path("synthetic")
    """Dataset folder, a single subject's folder, or a short name resolved against $GMNERF_DATA (default ./data)."""
    protocol: str = "synthetic"
    """Protocol preset name (see gmnerf_ns/data/protocols/) or a path to a protocol YAML file."""
    train_subjects: Optional[Tuple[str, ...]] = None
    """Override the protocol's training subjects."""
    test_subjects: Optional[Tuple[str, ...]] = None
    """Override the protocol's held-out (evaluation) subjects."""
    resolution: Optional[int] = None
    """Override the protocol's output image height in pixels."""
    num_input_views: Optional[int] = None
    """Override the protocol's number of source views m."""
    max_eval_frames_per_subject: Optional[int] = None
    """Keep at most this many evenly spaced evaluation frames per held-out subject (None = all the protocol samples)."""
    dataset: ClassVar[Optional[str]] = None
    """The dataset a subclass reads, as ns-train names its dataparser; setting it registers the subclass in
    :data:`DATASET_CONFIGS`, where gmnerf-auto finds its :meth:`detect`."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("dataset"):
            DATASET_CONFIGS[cls.dataset] = cls

    @classmethod
    def detect(cls, folder: Path) -> Optional[str]:
        """Why ``folder`` (a dataset root or one subject folder) is laid out as this dataset, else None. gmnerf-auto
        and the parsers' "looks like another dataset" hints ask every dataset in a fixed order
        (``_layouts.DETECTION_ORDER``); only file names are looked at."""
        return cls.detect_subject(folder)

    @classmethod
    def detect_subject(cls, folder: Path) -> Optional[str]:
        """Why ``folder`` is one subject of this dataset by its own files, else None; also asked of the sub-folders
        of a folder that nothing detects (a dataset root)."""
        return None

    def validate(self, prefix: str = "--") -> None:
        """Checks the numeric options' ranges before any data is read (called by ns-train; gmnerf_ns/core/options.py).

        Raises:
            OptionError: naming each option out of range (as ``--resolution``, which follows the dataparser's
                subcommand on the command line) and its range.
        """
        check = OptionCheck(self, prefix)
        check.integer("resolution", low=16, optional=True)
        check.integer("num_input_views", low=1, optional=True)
        check.integer("max_eval_frames_per_subject", low=1, optional=True)
        check.done()


class HumanDataParser(DataParser):
    """Base class: subclasses implement :meth:`find_subjects` and :meth:`read_subject`."""

    config: HumanDataParserConfig
    subject_file: Optional[str] = None
    """The file that makes a folder a subject for :meth:`find_subjects` (``annots.npy``), if there is one: a subject
    of the split whose folder lacks it is reported as that missing file, not as a subject that is not there."""

    def __init__(self, config: HumanDataParserConfig):
        super().__init__(config=config)
        self._protocol: Optional[Protocol] = None

    def find_subjects(self, root: Path) -> Dict[str, Path]:
        """Maps subject name -> folder for every subject found under ``root`` (or ``root`` itself if it is one)."""
        raise NotImplementedError

    def read_subject(self, name: str, folder: Path, resolution: int) -> SubjectReader:
        """One subject's files (its cameras, frames, views, proxies, faces) for :meth:`parse_subject`; views are
        ``resolution`` pixels high."""
        raise NotImplementedError

    def parse_subject(self, name: str, folder: Path, frames: FrameSampling, resolution: int) -> SubjectRecord:
        """The subject's :class:`SubjectRecord` with its ``frames`` that have every file, read through
        :meth:`read_subject`: frames lacking a view file or a body fit are skipped with one warning per kind, no frame
        left is an error, and the faces must index the first proxy's vertices."""
        with self.read_subject(name, folder, resolution) as subject:
            available = subject.frame_ids()
            sampled = frames.select(available)
            if not sampled:
                raise HumanDataError(f"{subject.source}: frame sampling {frames} selects none of its {len(available)} "
                                     "frames")
            subject.prepare(sampled)
            skipped: Dict[str, List[str]] = {MISSING: [], UNFIT: []}
            views = {}
            for frame in sampled:
                try:
                    views[frame] = subject.views(frame)
                except SkipFrame as skip:
                    skipped[skip.kind].append(skip.detail)
            if skipped[MISSING]:
                _warn(f"{subject.where}: skipped {len(skipped[MISSING])} frame(s) with missing {subject.missing_files}, "
                      f"e.g. {skipped[MISSING][0]}")
            proxies = subject.proxies(list(views), lambda skip: skipped[skip.kind].append(skip.detail))
            if skipped[UNFIT]:
                _warn(subject.unfit_warning(skipped[UNFIT]))
            subject.finish()
            records = tuple(FrameRecord(subject=name, frame_id=subject.frame_id(frame), views=views[frame],
                                        vertices_path=proxies[frame], vertices_scale=subject.vertices_scale)
                            for frame in views if frame in proxies)
            if not records:
                raise HumanDataError(subject.no_frames())
            num_vertices = load_vertices(records[0]).shape[0]  # validates shape / NaN once, with the file name
            faces = subject.faces(records)
            if faces is not None and faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
                raise HumanDataError(subject.faces_error(faces, num_vertices, records[0]))
            return SubjectRecord(name=name, camera_names=tuple(subject.camera_names), frames=records, faces=faces,
                                 gt_mesh_dir=subject.gt_mesh_dir, camera_ids=subject.camera_ids)

    def dataset_split(self, root: Path) -> Optional[Tuple[List[str], List[str]]]:
        """The dataset's own (train, test) subject split, if it ships one; used when the protocol lists none."""
        return None

    def scale_advice(self, factor: float, what: str) -> str:
        """How to fix a scale that is off by ``factor`` (metres = parsed units x ``factor``), for the error of
        :func:`check_scale`. ``what`` is the part that is off ("the data" or "the camera translations"). Datasets with
        a units option name it (GeneBody: ``--units-per-metre``); the default says which unit the data looks like."""
        return unit_advice(factor, what)

    def stored_image_height(self, record: SubjectRecord) -> Optional[int]:
        """Height in pixels of the stored images a subject's views are made from, when each view is a whole stored
        image resized to the protocol's resolution; None when views are crops (GeneBody), whose size varies."""
        return None

    @property
    def protocol(self) -> Protocol:
        """The protocol preset with this config's overrides applied."""
        if self._protocol is None:
            protocol = load_protocol(self.config.protocol)
            overrides = {}
            if self.config.resolution is not None:
                overrides["resolution"] = self.config.resolution
            if self.config.num_input_views is not None:
                overrides["num_input_views"] = self.config.num_input_views
            if overrides:
                protocol = Protocol(**{**protocol.__dict__, **overrides})
            self._protocol = protocol
        return self._protocol

    def resolve_root(self) -> Path:
        """The dataset folder: ``config.data`` if it exists, else ``config.data`` under the data root."""
        path = Path(self.config.data)
        found = existing_data_path(path)
        if found is not None:
            return found
        candidate = data_root() / path
        for parent in (path.parent, candidate.parent):  # a subject that is not there: list the ones that are
            if str(path.parent) not in ("", ".") and parent.is_dir():
                try:
                    found = self.find_subjects(parent)
                except HumanDataError:
                    found = {}
                if found:
                    raise HumanDataError(
                        f"subject {path.name!r} not found in {parent}; available subjects: {', '.join(sorted(found))}"
                    )
        raise HumanDataError(
            f"dataset folder {path} not found (also looked in {candidate}; set ${DATA_ROOT_ENV} to your data root)"
        )

    def split_subjects(self, subjects: Dict[str, Path], root: Path) -> Tuple[List[str], List[str]]:
        """(train, test) subject names after protocol, dataset split file and CLI overrides."""
        train = self.config.train_subjects or self.protocol.train_subjects
        test = self.config.test_subjects or self.protocol.test_subjects
        if train is None or test is None:
            own = self.dataset_split(root)
            if own is not None:
                train = train if train is not None else own[0]
                test = test if test is not None else own[1]
        for wanted in {*(train or ()), *(test or ())} - set(subjects):
            self.check_subject_folder(wanted, root)
        names = sorted(subjects)
        if len(subjects) == 1:  # a single subject folder: train and evaluate on it (per-subject protocols, fine-tuning)
            train = test = names
        if train is None or test is None:
            raise HumanDataError(f"{root}: the protocol {self.protocol.name!r} lists no subject split and the dataset "
                                 "has no split file; pass --train-subjects and --test-subjects")
        # Short subject ids (ZJU "313") match folder names like "CoreView_313".
        train, test = [self._match(s, subjects, root) for s in train], [self._match(s, subjects, root) for s in test]
        return [t for t in train if t is not None], [t for t in test if t is not None]

    def check_subject_folder(self, wanted: str, root: Path) -> None:
        """Raises if the split's subject ``wanted`` has its folder under ``root`` but not its :attr:`subject_file`
        (``find_subjects`` skips such a folder, so the subject would otherwise be reported as not found)."""
        if self.subject_file is None or (root / self.subject_file).exists() or not root.is_dir():
            return  # no marker file, or ``root`` is itself a subject folder
        folders = [p for p in root.iterdir() if p.is_dir() and (p.name == wanted or p.name.endswith(f"_{wanted}"))]
        if len(folders) == 1 and not (folders[0] / self.subject_file).exists():
            raise HumanDataError(f"{folders[0] / self.subject_file}: file not found; subject {folders[0].name} has a "
                                 f"folder but no {self.subject_file} (an incomplete download or copy?)")

    def _match(self, wanted: str, subjects: Dict[str, Path], root: Path) -> Optional[str]:
        if wanted in subjects:
            return wanted
        hits = [n for n in subjects if n.endswith(f"_{wanted}") or n.split("_")[-1] == wanted]
        if len(hits) == 1:
            return hits[0]
        if len(subjects) == 1:
            return None  # a single-subject folder ignores the protocol's subject list
        raise HumanDataError(
            f"{root}: subject {wanted!r} not found; available subjects: {', '.join(sorted(subjects)) or '(none)'}"
            + self.layout_hint(root)
        )

    def layout_hint(self, folder: Path) -> str:
        """``"; <folder> looks like <another dataset> ..."`` when ``folder`` is laid out as a dataset this parser does
        not read, else ``""``; the dataset parsers answer it from their layout rules."""
        return ""

    def all_subject_names(self) -> List[str]:
        """Every subject of both splits, sorted: ``subject_index`` in camera metadata indexes this list."""
        root = self.resolve_root()
        train, test = self.split_subjects(self.find_subjects(root), root)
        return sorted(set(train) | set(test))

    def collect(self, split: str) -> HumanCollection:
        """The :class:`HumanCollection` of a split (``train``, ``val`` or ``test``)."""
        root = self.resolve_root()
        subjects = self.find_subjects(root)
        if not subjects:
            raise HumanDataError(f"{root}: no subjects found (is this a {type(self).__name__} dataset folder?)")
        train, test = self.split_subjects(subjects, root)
        names = train if split == "train" else test
        if not names:
            raise HumanDataError(f"{root}: the {split} split has no subjects")
        protocol = self.protocol
        records = []
        for name in names:
            record = self.parse_subject(name, subjects[name], protocol.frames_for(split, name), protocol.resolution)
            if record.frames:
                check_scale(record, self.scale_advice)
            if split != "train" and self.config.max_eval_frames_per_subject:
                keep = _evenly(len(record.frames), self.config.max_eval_frames_per_subject)
                record = SubjectRecord(**{**record.__dict__, "frames": tuple(record.frames[i] for i in keep)})
            if not record.frames:
                raise HumanDataError(f"{subjects[name]}: no frames left for subject {name} after frame sampling")
            records.append(record)
        heights = [h for h in map(self.stored_image_height, records) if h is not None]
        if heights and min(heights) < protocol.resolution:
            warnings.warn(f"{root}: images are stored {min(heights)} px high but the protocol's resolution is "
                          f"{protocol.resolution} px, so they are upscaled (pass --resolution {min(heights)} to use "
                          "them at their stored size)", HumanDataWarning, stacklevel=2)
        return HumanCollection(
            subjects=records,
            input_views=protocol.input_views,
            target_views=protocol.target_views,
            target_views_per_subject={
                self._match(k, subjects, root) or k: v for k, v in protocol.target_views_per_subject.items()
                if k in subjects or any(n.split("_")[-1] == k for n in subjects)
            },
            bbox_padding=protocol.bbox_padding,
        )

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        collection = self.collect(split)
        all_names = self.all_subject_names()
        views: List[Tuple[int, FrameRecord, int, ViewRecord]] = []
        for subject in collection.subjects:
            subject_index = all_names.index(subject.name)
            if split == "train":
                cams = range(len(subject.camera_names))
            else:
                try:
                    cams = collection.targets_for(subject, self.protocol.num_input_views)
                except HumanDataError as err:
                    raise HumanDataError(f"protocol {self.protocol.name}: {err}") from err
            for frame in subject.frames:
                for cam in cams:
                    views.append((subject_index, frame, cam, frame.views[cam]))
        if not views:
            raise HumanDataError(f"{self.config.data}: the {split} split has no views")
        cameras = cameras_from_views([v for *_, v in views])
        cameras.metadata = {
            "subject_index": torch.tensor([[s] for s, *_ in views], dtype=torch.long),
            "frame_id": torch.tensor([[f.frame_id] for _, f, _, _ in views], dtype=torch.long),
            "camera_index": torch.tensor([[c] for _, _, c, _ in views], dtype=torch.long),
        }
        CONSOLE.log(
            f"[{split}] {len(collection.subjects)} subjects, "
            f"{sum(len(s.frames) for s in collection.subjects)} frames, {len(views)} target views "
            f"(protocol {self.protocol.name}, m={self.protocol.num_input_views}, {self.protocol.resolution}px)"
        )
        return DataparserOutputs(
            image_filenames=[v.image_path for *_, v in views],
            cameras=cameras,
            scene_box=SceneBox(aabb=torch.from_numpy(self._scene_aabb(collection))),
            metadata={"human": collection, "subject_names": all_names, "protocol": self.protocol},
        )

    def _scene_aabb(self, collection: HumanCollection) -> np.ndarray:
        """Union of the first frame's proxy box of each subject, padded by 1 m (only used by the viewer)."""
        boxes = [proxy_bbox(load_vertices(s.frames[0]), 1.0) for s in collection.subjects]
        return np.stack([np.min([b[0] for b in boxes], 0), np.max([b[1] for b in boxes], 0)]).astype(np.float32)


def cameras_from_views(views: List[ViewRecord]) -> Cameras:
    """nerfstudio :class:`Cameras` (model-ready intrinsics, OpenGL poses) for a list of views."""
    Ks = np.stack([v.output_intrinsics for v in views])  # already nerfstudio's pixel convention (human_record.py)
    c2w = np.stack([opencv_w2c_to_nerfstudio_c2w(v.R, v.T) for v in views])
    return Cameras(
        camera_to_worlds=torch.from_numpy(c2w).float(),
        fx=torch.from_numpy(Ks[:, 0, 0:1]).float(),
        fy=torch.from_numpy(Ks[:, 1, 1:2]).float(),
        cx=torch.from_numpy(Ks[:, 0, 2:3]).float(),
        cy=torch.from_numpy(Ks[:, 1, 2:3]).float(),
        width=torch.tensor([[v.out_size[0]] for v in views], dtype=torch.long),
        height=torch.tensor([[v.out_size[1]] for v in views], dtype=torch.long),
        camera_type=CameraType.PERSPECTIVE,
    )


def _warn(message: str) -> None:
    warnings.warn(message, HumanDataWarning, stacklevel=4)


def _evenly(n: int, k: int) -> List[int]:
    if k >= n:
        return list(range(n))
    return sorted({int(round(i * (n - 1) / max(k - 1, 1))) for i in range(k)})
