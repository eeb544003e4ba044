"""MVHumanNet (and MVHumanNet++) outfit folders onto the shared human records.

Layout (GAP-LAB-CUHK-SZ/MVHumanNet ``README.md`` and ``visual_smpl/``; file names as GIGA's loader reads them)::

    <root>/<outfit id>/camera_extrinsics.json   # {"1_<cam>.png": {rotation, translation (mm), focal_length, image_center}}
    <root>/<outfit id>/camera_intrinsics.json   # {"intrinsics": 3x3, "dist": []}: the same K for every camera
    <root>/<outfit id>/camera_scale.pkl         # pickled float: 120/65 (4096x3000 rig) or 100/65 (2448x2048 rig)
    <root>/<outfit id>/images_lr/<cam>/0005_img.jpg         # (or images/) half resolution, frames 5, 10, ...
    <root>/<outfit id>/fmask_lr/<cam>/0005_img_fmask.png    # (or fmask/) soft masks
    <root>/<outfit id>/smplx/smpl/000000.json   # SMPL-X in EasyMocap's JSON (87 poses); fit i is image frame 5 (i + 1)
    <root>/<outfit id>/smplx/smplx_mesh/000000.obj          # the same fit as a mesh

Quirks handled: translations are in millimetres *and* scaled by the rig's ``camera_scale`` (``T = t / 1000 *
scale``, ``read_camera_mvhumannet`` in the dataset's ``visual_smpl/mytools/camera_utils.py``); the intrinsics are for
the full-resolution images (principal point at the centre: full size ``2 c + 1``) while images and masks are stored
at half resolution, so K is scaled to the stored images; masks are soft (foreground > 200, as GIGA); fit ``i`` belongs
to image frame ``5 (i + 1)``; some outfits have fewer cameras than calibrated (the missing ones are skipped, the
others keep their numbers); some fits are incomplete (those frames are skipped with one warning). Camera names are
the serial in the calibration key (``1_CC32871A059.png`` -> ``CC32871A059``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import FrameRecord, ViewRecord, check_camera
from gmnerf_ns.data.parsers.base import HumanDataParser

from ._body_models import BodyModels
from ._derived import DerivedFiles, common_frame
from ._files import DatasetFolder, finite_array, image_size, read_obj_faces, subject_folders
from ._layouts import MVHUMANNET, explain_no_subjects, near_miss
from ._safe_pickle import load_pickle
from .body_model_config import BodyModelParserConfig
from .easymocap_params import easymocap_params, read_person_list
from .subject_reader import UNFIT, SkipFrame, SubjectReader, require_files


@dataclass
class MVHumanNetDataParserConfig(BodyModelParserConfig):
    """MVHumanNet: the dataset root (outfit id folders) or one outfit folder. --body-model-dir (smplx/SMPLX_NEUTRAL.npz,
    the neutral model as the dataset's own tools) poses smplx/smpl/*.json; without it the fits' meshes in
    smplx/smplx_mesh/ are used."""

    dataset: ClassVar[str] = MVHUMANNET
    same_layout: ClassVar[Tuple[str, ...]] = (MVHUMANNET,)
    """Datasets laid out as this parser reads them (see _layouts.other_dataset)."""
    _target: Type = field(default_factory=lambda: MVHumanNetDataParser)
    data: Path = Path("mvhumannet")
    """Dataset root or an outfit folder; short names resolve against $GMNERF_DATA (default ./data)."""
    protocol: str = "mvhumannet"
    """Protocol preset (mvhumannet: 4 evenly spaced sources) or a YAML path."""
    image_dirs: Tuple[str, ...] = ("images_lr", "images")
    """Image folders tried in this order (the release's half-resolution images)."""
    mask_dirs: Tuple[str, ...] = ("fmask_lr", "fmask")
    """Mask folders tried in this order."""
    mask_threshold: int = 200
    """The masks are soft: foreground above this (GIGA's loader uses > 200)."""
    frame_step: int = 5
    """Image frame of fit i is frame_step * (i + 1) (the images are every 5th frame from 0005)."""
    opencv_pixel_centres: bool = True
    """The calibration puts pixel centres at integers (principal point (W-1)/2); cx, cy get +0.5."""

    @classmethod
    def detect_subject(cls, folder: Path) -> Optional[str]:
        return f"{folder.name}/ has camera_extrinsics.json and camera_scale.pkl" if is_outfit(folder) else None


class MVHumanNetDataParser(HumanDataParser):
    """Maps MVHumanNet outfit folders onto :class:`SubjectRecord`."""

    config: MVHumanNetDataParserConfig

    def find_subjects(self, root: Path) -> Dict[str, Path]:
        found = subject_folders(root, is_outfit)
        if not found:
            explain_no_subjects(root, self.config.same_layout,
                                "no MVHumanNet outfit (<outfit id>/camera_extrinsics.json with camera_scale.pkl)")
        return found

    def check_subject_folder(self, wanted: str, root: Path) -> None:
        """An outfit of the split whose folder lacks one of its two marker files is reported as that file."""
        folder = root / wanted
        if root.is_dir() and not is_outfit(root) and folder.is_dir() and not is_outfit(folder):
            problem = near_miss(folder, self.config.same_layout)
            if problem is not None:
                raise HumanDataError(problem)

    def read_subject(self, name: str, folder: Path, resolution: int) -> "MVHumanNetSubject":
        return MVHumanNetSubject(self, name, folder, resolution)

    def _cameras(self, folder: Path, scale: float) -> List[tuple]:
        """(name, K (OpenCV, full resolution), R, T metres, full (W, H)) per calibrated camera, in file order."""
        path = folder / "camera_extrinsics.json"
        extrinsics = _read_json(path, "MVHumanNet extrinsics")
        shared = _read_json(folder / "camera_intrinsics.json", "MVHumanNet intrinsics") \
            if (folder / "camera_intrinsics.json").is_file() else {}
        if not isinstance(extrinsics, dict) or not extrinsics:
            raise HumanDataError(f"{path}: expected {{'1_<cam>.png': {{rotation, translation}}, ...}}")
        cameras = []
        for key, cam in extrinsics.items():
            name = str(key).split(".")[0].split("_")[-1]
            where = f"{path} {key}"
            if not isinstance(cam, dict) or "rotation" not in cam or "translation" not in cam:
                raise HumanDataError(f"{where}: expected 'rotation' (3x3) and 'translation' (mm)")
            if "focal_length" in cam and "image_center" in cam:
                (fx, fy), (cx, cy) = finite_array(cam["focal_length"], (2,), f"{where} focal_length"), \
                    finite_array(cam["image_center"], (-1,), f"{where} image_center")[:2]
                K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
            elif "intrinsics" in shared:
                K = finite_array(shared["intrinsics"], (3, 3), f"{folder / 'camera_intrinsics.json'} intrinsics")
            else:
                raise HumanDataError(f"{where}: no focal_length/image_center and no camera_intrinsics.json")
            T = finite_array(cam["translation"], (3,), f"{where} translation") / 1000.0 * scale  # mm x rig scale
            K, R, T = check_camera(K, cam["rotation"], T, where)
            full = (int(round(2 * K[0, 2] + 1)), int(round(2 * K[1, 2] + 1)))  # centred principal point: W = 2 cx + 1
            cameras.append((name, K, R, T, full))
        return cameras



class MVHumanNetSubject(SubjectReader):
    """One outfit folder: frames are the image numbers (5, 10, ...), fit ``i`` belongs to frame ``frame_step (i + 1)``."""

    missing_files = "images"
    fit_name = "SMPL-X"

    def __init__(self, parser: MVHumanNetDataParser, name: str, folder: Path, resolution: int):
        super().__init__(name, folder)
        self.config, self.resolution = parser.config, resolution
        self.image_root = image_root = _first_dir(folder, self.config.image_dirs, "image")
        self.mask_root = mask_root = _first_dir(folder, self.config.mask_dirs, "mask")
        calibrated = parser._cameras(folder, read_camera_scale(folder / "camera_scale.pkl"))
        self.inside = inside = DatasetFolder(folder)  # camera names may not lead out of the outfit folder
        for cam in calibrated:
            inside.check(image_root / cam[0], folder / "camera_extrinsics.json", f"camera {cam[0]!r} folder")
            inside.check(mask_root / cam[0], folder / "camera_extrinsics.json", f"camera {cam[0]!r} folder")
        self.present = present = [(i, cam) for i, cam in enumerate(calibrated) if (image_root / cam[0]).is_dir()]
        if not present:
            raise HumanDataError(f"{image_root}: none of the {len(calibrated)} calibrated cameras has an image folder "
                                 f"(e.g. {calibrated[0][0]})")
        if len(present) < len(calibrated):  # known: some people were captured by fewer cameras
            CONSOLE.log(f"MVHumanNet {name}: {len(present)} of {len(calibrated)} calibrated cameras have images")
        first_dir = image_root / present[0][1][0]
        self.numbers = sorted(int(p.name.split("_")[0]) for p in first_dir.glob("*_img.jpg")
                              if p.name.split("_")[0].isdigit())
        if not self.numbers:
            raise HumanDataError(f"{first_dir}: no <frame>_img.jpg images")
        self.camera_names = tuple(cam[0] for _, cam in present)
        self.camera_ids = tuple(i for i, _ in present)

    def frame_ids(self) -> List[int]:
        return self.numbers

    def prepare(self, frames: Sequence[int]) -> None:
        full_sizes = [cam[4] for _, cam in self.present]
        sizes = [image_size(self.inside.check(self.image_root / cam[0] / f"{frames[0]:04d}_img.jpg", what="image"))
                 for _, cam in self.present]
        shift = 0.5 if self.config.opencv_pixel_centres else 0.0
        self.Ks = [_stored_intrinsics(cam[1], full, size, self.folder / "camera_extrinsics.json", cam[0], shift)
                   for (_, cam), full, size in zip(self.present, full_sizes, sizes)]
        self.out_size, self.crops = common_frame(sizes, self.resolution)
        self.bodies = _Bodies(self.folder, self.config)
        self.fits_where = self.bodies.where
        self.needs = f"its images and an SMPL-X fit (in {self.bodies.where})"

    def views(self, number: int) -> Tuple[ViewRecord, ...]:
        images = [self.image_root / cam[0] / f"{number:04d}_img.jpg" for _, cam in self.present]
        require_files(number, images)
        masks = [self.mask_root / cam[0] / f"{number:04d}_img_fmask.png" for _, cam in self.present]
        for path in images + masks:
            self.inside.check(path, what="image or mask")
        return tuple(
            ViewRecord(image_path=image, mask_paths=(mask,), K=K, R=cam[2], T=cam[3], camera_name=cam[0],
                       out_size=self.out_size, crop=crop, mask_threshold=self.config.mask_threshold)
            for image, mask, (_, cam), K, crop in zip(images, masks, self.present, self.Ks, self.crops)
        )

    def proxy(self, number: int) -> Path:
        fit = number // self.config.frame_step - 1
        proxy = self.bodies.proxy(fit) if number % self.config.frame_step == 0 and fit >= 0 else None
        if proxy is None:
            raise SkipFrame(f"frame {number} (fit {fit:06d})", UNFIT)
        return proxy

    def faces(self, frames: Sequence[FrameRecord]) -> Optional[np.ndarray]:
        return self.bodies.faces(frames[0].vertices_path)

    def faces_error(self, faces: np.ndarray, num_vertices: int, first: FrameRecord) -> str:
        return f"{first.vertices_path}: {num_vertices} vertices, but the SMPL-X faces index {int(faces.max()) + 1}"


def _stored_intrinsics(K: np.ndarray, full: Tuple[int, int], size: Tuple[int, int], path: Path, cam: str,
                       shift: float) -> np.ndarray:
    """K of the stored (half-resolution) image, in our half-pixel-centre convention (``shift`` 0.5 from OpenCV's)."""
    (W, H), (w, h) = full, size
    sx, sy = w / W, h / H
    if abs(sx - sy) > 0.02 * sx:
        raise HumanDataError(f"{path}: camera {cam} is calibrated for {W}x{H} images (principal point at the centre) "
                             f"but its images are {w}x{h}, another aspect ratio")
    K = K.copy()
    K[:2, 2] += shift  # OpenCV calibration -> pixel corners, where a resize is an exact scale
    K[0] *= sx
    K[1] *= sy
    return K


class _Bodies:
    """An outfit's SMPL-X fits: posed from ``smplx/smpl/*.json`` with the model files, else ``smplx/smplx_mesh``."""

    def __init__(self, folder: Path, config: MVHumanNetDataParserConfig):
        self.config = config
        self.params_dir, self.mesh_dir = folder / "smplx" / "smpl", folder / "smplx" / "smplx_mesh"
        self.models: Optional[BodyModels] = None
        if config.body_model_dir is not None and self.params_dir.is_dir():
            self.models = BodyModels(config.body_model_dir, config.gender)
            model_file = self.models.path("smplx")
            self.cache = DerivedFiles(config.cache_dir, "proxies", folder, f"mvhumannet|{model_file}|{config.gender}")
            self.sources = [model_file]
            self.where = self.params_dir
        elif self.mesh_dir.is_dir():
            self.where = self.mesh_dir
        else:
            raise HumanDataError(f"{folder / 'smplx'}: no smplx_mesh/ meshes" + (
                "" if config.body_model_dir is not None else
                " (with --body-model-dir the smplx/smpl/*.json parameters are posed instead)"))

    def proxy(self, fit: int) -> Optional[Path]:
        if self.models is None:
            path = self.mesh_dir / f"{fit:06d}.obj"
            return path if path.is_file() else None
        path = self.params_dir / f"{fit:06d}.json"
        if not path.is_file():
            return None
        return self.cache.vertices(f"{fit:06d}", [path, *self.sources], partial(self._posed, path))

    def _posed(self, path: Path) -> np.ndarray:
        people = read_person_list(path, "MVHumanNet SMPL-X")
        if not people:
            raise HumanDataError(f"{path}: no person in the SMPL-X fit")
        return self.models.pose(easymocap_params(people[0], path))[0]

    def faces(self, first: Path) -> np.ndarray:
        """The SMPL-X template's faces (posed parameters), else the first fit mesh's."""
        return self.models.faces("smplx") if self.models is not None else read_obj_faces(first)


def read_camera_scale(path: Path) -> float:
    """The rig scale in ``camera_scale.pkl`` (a pickled number), read with the restricted unpickler."""
    if not path.is_file():
        raise HumanDataError(f"{path}: camera scale file is missing (translations are mm times this scale)")
    try:
        value = load_pickle(path)
    except HumanDataError:
        raise
    except Exception as err:
        raise HumanDataError(f"{path}: cannot read the camera scale ({type(err).__name__}: {err})") from err
    try:
        scale = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError) as err:
        raise HumanDataError(f"{path}: camera scale should be a number, found {type(value).__name__}") from err
    if not np.isfinite(scale) or scale <= 0:
        raise HumanDataError(f"{path}: camera scale {scale} is not a positive number")
    return scale


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise HumanDataError(f"{path}: cannot read the {what} ({err})") from err


def _first_dir(folder: Path, names: Tuple[str, ...], what: str) -> Path:
    for name in names:
        if (folder / name).is_dir():
            return folder / name
    raise HumanDataError(f"{folder}: no {what} folder; expected {' or '.join(f'{n}/' for n in names)}")


def is_outfit(folder: Path) -> bool:
    """An MVHumanNet outfit folder: ``camera_extrinsics.json`` and ``camera_scale.pkl``."""
    return (folder / "camera_extrinsics.json").is_file() and (folder / "camera_scale.pkl").is_file()
