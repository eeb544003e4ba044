"""ZJU-MoCap (``CoreView_<id>`` folders as used by Neural Body and NHP) onto the shared human records.

Quirks handled (see docs/datasets.md): ``Camera (N)`` folders with 21 cameras and long 1-based file names for 313/315
(and NHP's renamed short names), ``Camera_B<n>`` folders elsewhere; ``mask`` and/or ``mask_cihp`` (union);
``new_vertices`` preferred over ``vertices``; distortion D; T in millimetres; K/D/R/T as lists or arrays. The frames are
``annots['ims']``. Parsing reads ``annots.npy``, one image header per camera and the first frame's vertices, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import (
    FrameRecord,
    SubjectRecord,
    ViewRecord,
    check_camera,
    full_image_crop,
)
from gmnerf_ns.data.parsers.base import HumanDataParser, HumanDataParserConfig, data_root

from ._files import DatasetFolder, finite_array, image_size, load_pickled_dict, require_key, warn
from ._layouts import CAMERA_FOLDER, ZJU, ZJU_LAYOUT, has_camera_folders, other_dataset
from .subject_reader import SubjectReader, require_files

Camera = Tuple[np.ndarray, Optional[np.ndarray], np.ndarray, np.ndarray]
"""(K, D (5,) or None, R, T in metres) of one camera."""


@dataclass
class ZJUMocapDataParserConfig(HumanDataParserConfig):
    """ZJU-MoCap: ``--data zju/313`` (= ``$GMNERF_DATA/zju_mocap/CoreView_313``), a subject folder or the dataset root."""

    dataset: ClassVar[str] = ZJU
    same_layout: ClassVar[Tuple[str, ...]] = ZJU_LAYOUT
    """Datasets laid out as this parser reads them (see _layouts.other_dataset): ZJU-MoCap and the built-in data."""
    _target: Type = field(default_factory=lambda: ZJUMocapDataParser)
    data: Path = Path("zju")
    """Dataset root, one ``CoreView_<id>`` folder, or ``zju``/``zju/<id>`` under $GMNERF_DATA (default ./data)."""
    protocol: str = "zju-nhp"
    """Protocol preset (zju-nhp: NHP's 7/3 subject split; zju-neuralbody: per subject) or a YAML path."""
    use_new_fits: bool = True
    """Use ``new_vertices/`` (EasyMocap refit with pose blend shapes) when present, else ``vertices/``."""
    mask_dirs: Tuple[str, ...] = ("mask", "mask_cihp")
    """Mask folders whose union is the foreground (as NHP); folders that do not exist are skipped."""
    undistort: bool = True
    """Undistort images and masks with the annotated D, as Neural Body and NHP do."""
    opencv_pixel_centres: bool = True
    """The annotated K puts pixel centres at integer coordinates (OpenCV calibration, as real ZJU-MoCap); cx, cy then
    get +0.5 for our records' (nerfstudio's) half-pixel centres. gmnerf-synth and render_scans store that convention
    already."""
    check_files: bool = True
    """Check (stat only) that every sampled image and vertices file exists; frames missing one are skipped with a
    warning."""

    @classmethod
    def detect_subject(cls, folder: Path) -> Optional[str]:
        """A subject: ``annots.npy`` and camera folders."""
        if (folder / "annots.npy").is_file() and has_camera_folders(folder):
            return f"{folder.name}/ has annots.npy and camera folders"
        return None


def zju_short_name(data: Path) -> Optional[Path]:
    """Where a short name ``zju``/``zju/<id>[/...]`` points (``$GMNERF_DATA/zju_mocap[/CoreView_<id>...]``), or None
    if ``data`` is no such name (or exists as given: a real path wins)."""
    path = Path(data)
    if path.exists() or not path.parts or path.parts[0] != "zju":
        return None
    rest = list(path.parts[1:])
    if rest and rest[0].isdigit():
        rest[0] = f"CoreView_{rest[0]}"
    return (data_root() / "zju_mocap").joinpath(*rest)


class ZJUMocapDataParser(HumanDataParser):
    """Maps ZJU-MoCap's ``annots.npy`` and folders onto :class:`SubjectRecord`."""

    config: ZJUMocapDataParserConfig
    subject_file = "annots.npy"

    def layout_hint(self, folder: Path) -> str:
        return other_dataset(folder, self.config.same_layout)

    def resolve_root(self) -> Path:
        path = Path(self.config.data)
        candidate = zju_short_name(path)
        if candidate is None:
            return super().resolve_root()
        if candidate.exists():
            return candidate
        base = data_root() / "zju_mocap"
        if len(path.parts) > 1 and base.is_dir():
            available = ", ".join(sorted(self.find_subjects(base))) or "(none)"
            raise HumanDataError(f"{path}: no subject folder {candidate}; available subjects: {available}")
        raise HumanDataError(f"{path}: ZJU-MoCap not found at {candidate} (set $GMNERF_DATA to the folder holding "
                             "zju_mocap/, or pass the dataset path)")

    def find_subjects(self, root: Path) -> Dict[str, Path]:
        if (root / "annots.npy").is_file():
            return {root.name: root}
        return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and (p / "annots.npy").is_file()}

    def read_subject(self, name: str, folder: Path, resolution: int) -> "ZJUSubject":
        return ZJUSubject(self, name, folder, resolution)

    def stored_image_height(self, record: SubjectRecord) -> Optional[int]:
        return min(view.source_crop_size[1] for view in record.frames[0].views)  # whole images, resized



class ZJUSubject(SubjectReader):
    """One ``CoreView_<id>`` folder: frames are the positions in ``annots['ims']``."""

    def __init__(self, parser: ZJUMocapDataParser, name: str, folder: Path, resolution: int):
        super().__init__(name, folder)
        self.config, self.resolution = parser.config, resolution
        self.inside = inside = DatasetFolder(folder)  # annots.npy may only name files of this subject folder
        self.source = annots_path = inside.check(folder / "annots.npy", what="annotations file")
        annots = load_pickled_dict(annots_path, "ZJU-MoCap annotations")
        try:
            self.cameras = _read_cameras(require_key(annots, "cams", annots_path, "annots"), annots_path,
                                         0.5 if self.config.opencv_pixel_centres else 0.0)
        except HumanDataError as err:  # another dataset's annots.npy (GeneBody's)? say which
            raise HumanDataError(f"{err}{parser.layout_hint(folder)}") from err
        self.ims = ims = require_key(annots, "ims", annots_path, "annots")
        if not isinstance(ims, (list, tuple, np.ndarray)) or len(ims) == 0:
            raise HumanDataError(f"{annots_path}: 'ims' should be a non-empty list of frames")
        first = _frame_images(ims, 0, annots_path, inside)
        self.folders, self.present = _camera_folders(name, folder, annots_path, first, len(self.cameras))
        self.mask_dirs = [d for d in self.config.mask_dirs if (folder / d).is_dir()]
        if not self.mask_dirs:
            raise HumanDataError(f"{folder}: no mask folder; expected one of {', '.join(self.config.mask_dirs)}")
        verts_dir = folder / "new_vertices"
        if not (self.config.use_new_fits and verts_dir.is_dir()):
            verts_dir = folder / "vertices"
        if not verts_dir.is_dir():
            raise HumanDataError(f"{folder}: no proxy vertices folder; expected {verts_dir} (or new_vertices/)")
        self.verts_dir = verts_dir
        self.camera_names = tuple(self.folders[i] for i in self.present)
        self.camera_ids = tuple(_camera_id(self.folders[i], i) for i in self.present)
        self.ids: Dict[int, int] = {}
        self.vertices: Dict[int, Path] = {}

    def frame_ids(self) -> List[int]:
        return list(range(len(self.ims)))

    def prepare(self, frames: Sequence[int]) -> None:
        """Naming scheme (original vs NHP-renamed) and stored size per camera, from the first sampled frame."""
        rels0 = _frame_images(self.ims, frames[0], self.source, self.inside)
        self.renamed = {i: _pick_name(self.folder, rels0[i]) for i in self.present}
        self.sizes = {i: image_size(self.inside.check(_image_path(self.folder, rels0[i], self.renamed[i]),
                                                      self.source, "image")) for i in self.present}

    def views(self, position: int) -> Tuple[ViewRecord, ...]:
        rels = _frame_images(self.ims, position, self.source, self.inside)
        if len(rels) != len(self.cameras):
            raise HumanDataError(f"{self.source}: ims[{position}] lists {len(rels)} images, expected "
                                 f"{len(self.cameras)}")
        frame_id = self.ids[position] = _frame_number(rels[self.present[0]], self.source)
        views = tuple(self._view(rels[i], i) for i in self.present)
        for view in views:
            self.inside.check(view.image_path, self.source, "image")
            for mask in view.mask_paths:
                self.inside.check(mask, self.source, "mask")
        vertices = self.vertices[position] = self.inside.check(self.verts_dir / f"{frame_id}.npy",
                                                               what="proxy vertices")
        if self.config.check_files:
            require_files(frame_id, [vertices] + [v.image_path for v in views])
        return views

    def _view(self, rel: str, i: int) -> ViewRecord:
        """Camera ``i``'s view of a frame: image ``rel`` (its stored size resized to the protocol's rows)."""
        K, dist, R, T = self.cameras[i]
        width, height = self.sizes[i]
        return ViewRecord(
            image_path=_image_path(self.folder, rel, self.renamed[i]),
            mask_paths=_mask_paths(self.folder, rel, self.mask_dirs),
            K=K, R=R, T=T, camera_name=self.folders[i],
            out_size=(int(round(width * self.resolution / height)), self.resolution),
            dist=dist if self.config.undistort else None,
            crop=full_image_crop(width, height),
        )

    def proxy(self, position: int) -> Path:
        return self.vertices[position]

    def frame_id(self, position: int) -> int:
        return self.ids[position]

    def faces(self, frames: Sequence[FrameRecord]) -> Optional[np.ndarray]:
        self.faces_path = self.inside.check(self.folder / "body_model.npz", what="body model")
        return _read_faces(self.faces_path)

    def faces_error(self, faces: np.ndarray, num_vertices: int, first: FrameRecord) -> str:
        return f"{self.faces_path}: 'faces' index vertices up to {faces.max()} but the proxy has {num_vertices}"


def _read_cameras(cams: dict, path: Path, centre_shift: float) -> List[Camera]:
    """Per camera (K, D (5,) or None, R, T in metres) from ``annots['cams']`` (lists or arrays; T in millimetres).

    ``centre_shift`` (0.5 for OpenCV calibrations) is added to cx, cy: records use half-pixel centres.
    """
    if not isinstance(cams, dict):
        raise HumanDataError(f"{path}: 'cams' should be a dict with K, R, T (and D) lists")
    K, R, T = (require_key(cams, key, path, "'cams'") for key in ("K", "R", "T"))
    D = cams.get("D")
    counts = {key: len(value) for key, value in (("K", K), ("R", R), ("T", T), ("D", D)) if value is not None}
    if len(set(counts.values())) != 1:
        raise HumanDataError(f"{path}: camera count mismatch inside 'cams': {counts}")
    cameras = []
    for i in range(counts["K"]):
        where = f"{path} camera {i}"
        k, r, t = check_camera(K[i], R[i], np.asarray(T[i], dtype=np.float64) / 1000.0, where)  # T: mm -> m
        k[:2, 2] += centre_shift
        d = None
        if D is not None:
            d = finite_array(np.asarray(D[i], dtype=np.float64).reshape(-1), (-1,), f"{where} distortion D")
            if d.size not in (4, 5, 8, 12, 14):
                raise HumanDataError(f"{where}: distortion D has {d.size} coefficients, expected 5 (OpenCV)")
            d = d if np.any(d) else None  # zeros: already undistorted
        cameras.append((k, d, r, t))
    return cameras


def _camera_folders(name: str, folder: Path, annots_path: Path, first: List[str], num_cameras: int
                    ) -> Tuple[List[str], List[int]]:
    """The camera folder of each annotated camera (from the first frame's images ``first``) and the positions of those
    that exist; fails on a camera count that does not match, warns about missing folders."""
    if len(first) != num_cameras:
        raise HumanDataError(f"{annots_path}: camera count mismatch: 'cams' has {num_cameras} cameras but "
                             f"ims[0] lists {len(first)} images")
    folders = [rel.split("/")[0] for rel in first]
    on_disk = sorted(p.name for p in folder.iterdir() if p.is_dir() and CAMERA_FOLDER.match(p.name))
    extra = sorted(set(on_disk) - set(folders))
    if extra:
        raise HumanDataError(f"{folder}: camera count mismatch: {len(on_disk)} camera folders on disk but "
                             f"{annots_path} describes {num_cameras}; not in the annotations: {', '.join(extra)}")
    present = [i for i, c in enumerate(folders) if (folder / c).is_dir()]
    if len(present) < len(folders):
        missing = [folders[i] for i in range(len(folders)) if i not in present]
        if not present:
            raise HumanDataError(f"{folder}: none of the camera folders in {annots_path} exist "
                                 f"(looked for {', '.join(folders[:3])}, ...)")
        warn(f"{folder}: camera folders {', '.join(missing)} are missing; subject {name} goes on without them")
    return folders, present


def _frame_images(ims: Sequence, index: int, path: Path, inside: DatasetFolder) -> List[str]:
    """Relative image paths of frame ``index`` (``ims[index]['ims']``), with forward slashes; each must stay inside
    the subject folder ``inside``."""
    entry = ims[index]
    paths = entry.get("ims") if isinstance(entry, dict) else entry
    if paths is None or isinstance(paths, str):
        raise HumanDataError(f"{path}: ims[{index}] should be a dict with an 'ims' list of image paths")
    rels = [str(p).replace("\\", "/") for p in paths]
    for rel in rels:
        inside.check(inside.root / rel, path, f"ims[{index}] image")
    return rels


def _frame_number(rel: str, path: Path) -> int:
    """The frame number in an image name: ``000123.jpg``, NHP's ``0001.jpg``, or token 4 of the long 313/315 names."""
    stem = Path(rel).stem
    if stem.isdigit():
        return int(stem)
    tokens = stem.split("_")
    if len(tokens) > 4 and tokens[4].isdigit():
        return int(tokens[4])  # CoreView_313_Camera_(1)_0001_2019-...: 1-based, as params/vertices of 313/315
    raise HumanDataError(f"{path}: cannot read a frame number from image name {rel!r}")


def _short_name(rel: str) -> Optional[str]:
    """NHP's renamed stem for a long 313/315 name (``0001``), or None for names that were never renamed."""
    tokens = Path(rel).stem.split("_")
    return tokens[4] if len(tokens) > 4 and tokens[4].isdigit() else None


def _pick_name(folder: Path, rel: str) -> bool:
    """True if this camera's images carry NHP's renamed short names instead of the names in ``annots['ims']``."""
    if (folder / rel).is_file():
        return False
    short = _short_name(rel)
    if short is not None and (folder / Path(rel).parent / f"{short}.jpg").is_file():
        return True
    also = f" or {folder / Path(rel).parent / f'{short}.jpg'}" if short else ""
    raise HumanDataError(f"{folder / rel}: image listed in annots.npy is missing{also}")


def _image_path(folder: Path, rel: str, renamed: bool) -> Path:
    return folder / Path(rel).parent / f"{_short_name(rel)}.jpg" if renamed else folder / rel


def _mask_paths(folder: Path, rel: str, mask_dirs: Sequence[str]) -> Tuple[Path, ...]:
    """Candidate masks of an image, unioned by the view loader (missing ones are skipped).

    NHP's rename script renames ``mask_cihp`` of 313/315 to short names but breaks ``mask`` (every file of a camera
    folder gets the same name), so short-named ``mask`` files are never used.
    """
    camera, stem, short = Path(rel).parent, Path(rel).stem, _short_name(rel)
    paths = [folder / d / camera / f"{stem}.png" for d in mask_dirs]
    if short is not None:
        paths += [folder / d / camera / f"{short}.png" for d in mask_dirs if d != "mask"]
    return tuple(paths)


def _camera_id(folder_name: str, position: int) -> int:
    """The dataset camera number: folder number - 1 (``Camera (22)`` -> 21), else the annotation position."""
    match = CAMERA_FOLDER.match(folder_name)
    return int(match.group(1)) - 1 if match else position


def _read_faces(path: Path) -> Optional[np.ndarray]:
    """Proxy faces from ``body_model.npz`` (written by gmnerf-synth and render_scans), if the file exists."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            faces = np.asarray(require_key(dict(data), "faces", path, "body model"))
    except HumanDataError:
        raise
    except Exception as err:
        raise HumanDataError(f"{path}: cannot read body model faces ({err})") from err
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise HumanDataError(f"{path}: 'faces' has shape {faces.shape} / dtype {faces.dtype}; expected (F, 3) integers")
    return faces.astype(np.int64)
