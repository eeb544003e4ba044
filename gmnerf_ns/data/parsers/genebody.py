"""GeneBody (GNR, 48 views) onto the shared human records.

Layout: ``<subject>/image/<vv>/<ffff>.jpg``, ``mask/<vv>/mask<ffff>.png`` (foreground > 128), ``smpl/<ffff>.obj``
(SMPL-X proxy), ``annots.npy`` = ``{'cams': {'<vv>': {'K', 'D', 'c2w' (OpenCV)}}}``. World units are metres: GNR's
own loader (generalizable-neural-performer/gnr ``lib/data/GeneBodyDataset.py``) uses ``c2w`` and the meshes as stored,
and the meshes are SMPL-X (a metres model) times a per-person ``smplx_scale`` near 1. The ``/ 2.87`` in the
genebody-benchmarks loaders rescales data for *their* pretrained models ("trained with a different calibration
scale"); ``--units-per-metre 2.87`` reproduces it. See docs/datasets.md.
Cameras are keyed by view folder name (several subjects lack views). Each view is cropped as GNR does: the mask's
bounding box padded by 10 %, made square, resized to the protocol resolution.

The crop needs every sampled mask once. The mask bounding boxes are cached in a JSON file under
``$XDG_CACHE_HOME/gmnerf_ns/genebody_crops/`` (``~/.cache`` by default; ``--crop-cache-dir`` to move it), keyed by
mask file, size and modification time, so re-parsing reads no mask. The cache lives outside the dataset because dataset
folders are often shared or read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple, Type

import cv2
import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import FrameRecord, ViewRecord, check_camera
from gmnerf_ns.data.parsers.base import HumanDataParser, HumanDataParserConfig

from ._files import DatasetFolder, finite_array, load_pickled_dict, read_obj_faces, require_key, warn
from ._layouts import GENEBODY, other_dataset
from .subject_reader import SubjectReader, require_files

CACHE_VERSION = 1


@dataclass
class GeneBodyDataParserConfig(HumanDataParserConfig):
    """GeneBody: the dataset root (with genebody_split.npy) or one subject folder."""

    dataset: ClassVar[str] = GENEBODY
    same_layout: ClassVar[Tuple[str, ...]] = (GENEBODY,)
    """Datasets laid out as this parser reads them (see _layouts.other_dataset)."""
    _target: Type = field(default_factory=lambda: GeneBodyDataParser)
    data: Path = Path("genebody")
    """Dataset root or a subject folder; short names resolve against $GMNERF_DATA (default ./data)."""
    protocol: str = "genebody-test10"
    """Protocol preset (genebody-test10: the benchmarks' Test10, sources 01/13/25/37) or a YAML path."""
    units_per_metre: float = 1.0
    """GeneBody world units per metre; camera translations and proxy vertices are divided by it. The annotations are
    in metres (1.0); 2.87 is the genebody-benchmarks loaders' rescaling for their pretrained models."""
    crop_padding: float = 0.1
    """Padding of the mask bounding box before the square crop, as a fraction of its size (GNR: 0.1)."""
    undistort: bool = False
    """Undistort with the annotated D. GNR and the GeneBody benchmarks do not, so metrics compare raw crops."""
    crop_cache_dir: Optional[Path] = None
    """Where the mask bounding-box cache goes; None = $XDG_CACHE_HOME/gmnerf_ns/genebody_crops (~/.cache)."""

    @classmethod
    def detect(cls, folder: Path) -> Optional[str]:
        """The root with ``genebody_split.npy``, or a subject."""
        if (folder / "genebody_split.npy").is_file():
            return f"{folder}/genebody_split.npy"
        return cls.detect_subject(folder)

    @classmethod
    def detect_subject(cls, folder: Path) -> Optional[str]:
        """A subject: ``annots.npy`` with ``image/``, ``mask/`` and ``smpl/``."""
        if (folder / "annots.npy").is_file() and all((folder / sub).is_dir() for sub in ("image", "mask", "smpl")):
            return f"{folder.name}/ has annots.npy, image/, mask/, smpl/"
        return None


class GeneBodyDataParser(HumanDataParser):
    """Maps GeneBody folders onto :class:`SubjectRecord`; reads each sampled mask once (then cached) for the crop."""

    config: GeneBodyDataParserConfig
    subject_file = "annots.npy"

    def layout_hint(self, folder: Path) -> str:
        return other_dataset(folder, self.config.same_layout)

    def find_subjects(self, root: Path) -> Dict[str, Path]:
        if (root / "annots.npy").is_file():
            return {root.name: root}
        return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and (p / "annots.npy").is_file()}

    def dataset_split(self, root: Path) -> Optional[Tuple[List[str], List[str]]]:
        path = root / "genebody_split.npy"
        if not path.is_file():
            return None
        split = load_pickled_dict(path, "GeneBody split")
        present = set(self.find_subjects(root))
        out = []
        for key in ("train", "test"):
            names = [str(s) for s in require_key(split, key, path, "split")]
            absent = [s for s in names if s not in present]
            if absent:
                warn(f"{path}: {len(absent)} {key} subject(s) not downloaded, skipped: {', '.join(absent[:5])}")
            out.append([s for s in names if s in present])
        return out[0], out[1]

    def read_subject(self, name: str, folder: Path, resolution: int) -> "GeneBodySubject":
        return GeneBodySubject(self, name, folder, resolution)

    def scale_advice(self, factor: float, what: str) -> str:
        """Names ``--units-per-metre`` with the value that would fix the scale: 1 (GeneBody's metres) or 2.87 (the
        benchmarks' rescaled world) when within 1.4x of it, else the estimate itself."""
        value = float(f"{self.config.units_per_metre / factor:.3g}")
        value = next((known for known in (1.0, 2.87) if 1 / 1.4 < value / known < 1.4), value)
        off = f"{factor:.3g}x too small" if factor > 1 else f"{1 / factor:.3g}x too large"
        return (f"GeneBody annotations are in metres and {what} come out {off} with --units-per-metre "
                f"{self.config.units_per_metre:g}: pass --units-per-metre {value:g}")

    def _camera(self, cam: dict, where: str) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray, np.ndarray]:
        """(K, D, R, T metres) of one GeneBody camera (``c2w`` is OpenCV camera-to-world in GeneBody units)."""
        if not isinstance(cam, dict):
            raise HumanDataError(f"{where}: expected a dict with K, D, c2w")
        c2w = finite_array(require_key(cam, "c2w", Path(where), "camera"), (-1, 4), f"{where} c2w")
        if c2w.shape[0] not in (3, 4):
            raise HumanDataError(f"{where}: c2w has shape {c2w.shape}, expected 4x4 or 3x4")
        rotation = c2w[:3, :3]
        w2c_R = rotation.T
        w2c_T = -rotation.T @ (c2w[:3, 3] / self.config.units_per_metre)
        K, R, T = check_camera(require_key(cam, "K", Path(where), "camera"), w2c_R, w2c_T, where)
        K[:2, 2] += 0.5  # OpenCV calibration (centres at integers) -> our half-pixel centres
        dist = None
        if cam.get("D") is not None:
            dist = finite_array(np.asarray(cam["D"], dtype=np.float64).reshape(-1), (-1,), f"{where} D")
        return K, dist, R, T

    def _cache_path(self, folder: Path) -> Path:
        base = self.config.crop_cache_dir
        if base is None:
            base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gmnerf_ns" / "genebody_crops"
        key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
        return Path(base) / f"{folder.name}-{key}.json"



class GeneBodySubject(SubjectReader):
    """One GeneBody subject folder: frames are the ``smpl/<frame>.obj`` numbers; views are GNR's mask crops."""

    needs = "all its images and masks"

    def __init__(self, parser: GeneBodyDataParser, name: str, folder: Path, resolution: int):
        super().__init__(name, folder)
        self.parser, self.config, self.resolution = parser, parser.config, resolution
        self.inside = inside = DatasetFolder(folder)  # its files, symlinks included, must stay inside the folder
        annots_path = inside.check(folder / "annots.npy", what="annotations file")
        cams = require_key(load_pickled_dict(annots_path, "GeneBody annotations"), "cams", annots_path, "annots")
        if not isinstance(cams, dict):
            raise HumanDataError(f"{annots_path}: 'cams' should map view names ('00', '01', ...) to K/D/c2w")
        cams = {_view_name(k): v for k, v in cams.items()}
        for sub in ("image", "mask", "smpl"):
            if not (folder / sub).is_dir():
                raise HumanDataError(f"{folder}: missing the {sub}/ folder of a GeneBody subject"
                                     f"{parser.layout_hint(folder)}")
        on_disk = sorted(p.name for p in (folder / "image").iterdir() if p.is_dir() and p.name.isdigit())
        unannotated = [v for v in on_disk if v not in cams]
        if unannotated:
            warn(f"{annots_path}: no camera for view folders {', '.join(unannotated)}; subject {name} skips them")
        self.camera_names = views = tuple(v for v in on_disk if v in cams)
        if not views:
            raise HumanDataError(f"{folder / 'image'}: no view folder with a camera in {annots_path}")
        absent = sorted(set(cams) - set(on_disk))
        if absent:  # known for several subjects (e.g. joseph_matanda lacks 39, 40, 42-47)
            CONSOLE.log(f"GeneBody {name}: views {', '.join(absent)} are not in the dataset; using {len(views)} views")
        self.cameras = {v: parser._camera(cams[v], f"{annots_path} view {v}") for v in views}
        self.camera_ids = tuple(int(v) for v in views)
        self.stems = {int(p.stem): p.stem for p in (folder / "smpl").glob("*.obj") if p.stem.isdigit()}
        if not self.stems:
            raise HumanDataError(f"{folder / 'smpl'}: no <frame>.obj proxy meshes")
        self.vertices_scale = 1.0 / self.config.units_per_metre
        self.empty: List[Path] = []

    def frame_ids(self) -> List[int]:
        return sorted(self.stems)

    def prepare(self, frames: Sequence[int]) -> None:
        self.cache = _CropCache(self.parser._cache_path(self.folder))

    def views(self, frame_id: int) -> Tuple[ViewRecord, ...]:
        stem, folder = self.stems[frame_id], self.folder
        paths = [(folder / "image" / v / f"{stem}.jpg", folder / "mask" / v / f"mask{stem}.png")
                 for v in self.camera_names]
        require_files(stem, [p for pair in paths for p in pair])
        for image_path, mask_path in paths:
            self.inside.check(image_path, what="image")
            self.inside.check(mask_path, what="mask")
        views = []
        for v, (image_path, mask_path) in zip(self.camera_names, paths):
            (height, width), box = self.cache.mask_box(mask_path)
            if box is None:
                self.empty.append(mask_path)
            K, dist, R, T = self.cameras[v]
            views.append(ViewRecord(
                image_path=image_path, mask_paths=(mask_path,), K=K, R=R, T=T, camera_name=v,
                out_size=(self.resolution, self.resolution), dist=dist if self.config.undistort else None,
                crop=gnr_crop(width, height, box, self.config.crop_padding), mask_threshold=128,
            ))
        return tuple(views)

    def proxy(self, frame_id: int) -> Path:
        return self.inside.check(self.folder / "smpl" / f"{self.stems[frame_id]}.obj", what="proxy mesh")

    def finish(self) -> None:
        self.cache.save()
        if self.empty:
            warn(f"{self.folder}: {len(self.empty)} empty mask(s), cropped to the whole image, e.g. {self.empty[0]}")

    def faces(self, frames: Sequence[FrameRecord]) -> Optional[np.ndarray]:
        return read_obj_faces(frames[0].vertices_path)

    def faces_error(self, faces: np.ndarray, num_vertices: int, first: FrameRecord) -> str:
        return f"{first.vertices_path}: faces index past its {num_vertices} vertices"


def _view_name(key) -> str:
    """Annotation keys as the view folders are named: ``'01'`` (ints become two-digit strings)."""
    return f"{int(key):02d}" if isinstance(key, (int, np.integer)) or str(key).isdigit() else str(key)


Box = Optional[Tuple[int, int, int, int]]
"""Inclusive (top, left, bottom, right) of the nonzero mask pixels, None for an empty mask."""


def gnr_crop(width: int, height: int, box: Box, padding: float = 0.1) -> Tuple[int, int, int, int]:
    """GNR's square crop (x0, y0, x1, y1) around a mask box (generalizable-neural-performer/gnr ``image_cropping``).

    Kept bit-for-bit, including the left side padded by the box *height*, so crops match the published benchmarks.
    An empty mask keeps the whole image.
    """
    if box is None:
        return 0, 0, width, height
    top, left, bottom, right = box
    box_h, box_w = bottom - top, right - left
    bottom = min(int(box_h * padding + bottom), height)
    top = max(int(top - box_h * padding), 0)
    right = min(int(box_w * padding + right), width)
    left = max(int(left - box_h * padding), 0)
    box_h, box_w = bottom - top, right - left
    if box_h >= box_w:
        centre, size = (left + right) / 2, box_h
        if centre - size / 2 < 0:
            left, right = 0, size
        elif centre + size / 2 >= width:
            left, right = width - size, width
        else:
            left = int(centre - size / 2)
            right = left + size
    else:
        centre, size = (top + bottom) / 2, box_w
        if centre - size / 2 < 0:
            top, bottom = 0, size
        elif centre + size / 2 >= height:
            top, bottom = height - size, height
        else:
            top = int(centre - size / 2)
            bottom = top + size
    return int(left), int(top), int(right), int(bottom)


class _CropCache:
    """Mask sizes and bounding boxes, keyed by mask path, invalidated by file size and modification time."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: Dict[str, list] = {}
        self.dirty = False
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("version") == CACHE_VERSION:
                    self.entries = dict(data.get("masks", {}))
            except (OSError, ValueError, AttributeError):
                self.entries = {}  # a damaged cache is rebuilt

    def mask_box(self, mask_path: Path) -> Tuple[Tuple[int, int], Box]:
        """((height, width), box) of a mask, from the cache or by reading it once."""
        stat = mask_path.stat()
        key = f"{mask_path.parent.name}/{mask_path.name}"  # one cache file per subject folder
        entry = self.entries.get(key)
        if entry is not None and entry[:2] == [stat.st_mtime_ns, stat.st_size]:
            _, _, h, w, *box = entry
            return (h, w), (tuple(box) if box[0] >= 0 else None)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise HumanDataError(f"{mask_path}: mask file is unreadable or corrupt")
        if mask.ndim == 3:
            mask = mask.max(axis=2)
        x, y, w, h = cv2.boundingRect((mask != 0).astype(np.uint8))  # GNR crops around any nonzero pixel
        box = (y, x, y + h - 1, x + w - 1) if w > 0 and h > 0 else None
        self.entries[key] = [stat.st_mtime_ns, stat.st_size, mask.shape[0], mask.shape[1], *(box or (-1, -1, -1, -1))]
        self.dirty = True
        return mask.shape[:2], box

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps({"version": CACHE_VERSION, "masks": self.entries}))
            tmp.replace(self.path)
        except OSError as err:
            warn(f"{self.path}: cannot write the GeneBody crop cache ({err}); masks will be read again next time")
        self.dirty = False
