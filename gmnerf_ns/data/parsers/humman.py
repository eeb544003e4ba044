"""HuMMan v1.0 reconstruction subset (HuMMan-Recon: 10 Kinect views per sequence) onto the shared human records.

Layout (caizhongang/humman_toolbox ``humman_recon/README.md``)::

    <root>/pxxxxxx_axxxxxx/cameras.json                    # kinect_color_00N / kinect_depth_00N: K, R, T (world2cam)
    <root>/pxxxxxx_axxxxxx/kinect_color/kinect_00N/000000.png   # 000000, 000006, ...: sparse frame ids
    <root>/pxxxxxx_axxxxxx/kinect_mask/kinect_00N/000000.png    # matting masks (kinect_mask_manual: test split only)
    <root>/pxxxxxx_axxxxxx/smpl_params/000000.npz          # global_orient (3), body_pose (69), betas (10), transl (3)

Quirks: only the ``kinect_color_*`` cameras are used (``cameras.json`` also holds the depth sensors, with other
intrinsics and poses); frame ids are sparse (every 6th); the world frame is camera ``kinect_color_000``'s (OpenCV: y
down); the SMPL fits are standard SMPL (neutral) in that world, posed with the user's model files
(``--body-model-dir``) and cached (``_derived.py``). The suggested ``train.txt``/``test.txt`` splits are used when they
sit in the root.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import FrameRecord, ViewRecord, check_camera
from gmnerf_ns.data.parsers.base import HumanDataParser

from ._body_models import BodyModels, BodyParams
from ._derived import DerivedFiles, common_frame
from ._files import DatasetFolder, finite_array, image_size, require_key, subject_folders, warn
from ._layouts import HUMMAN
from .body_model_config import BodyModelParserConfig
from .subject_reader import UNFIT, SkipFrame, SubjectReader, require_files

COLOR_CAMERA = re.compile(r"^kinect_color_(\d+)$")
SMPL_KEYS = {"global_orient": 3, "body_pose": 69, "betas": -1, "transl": 3}


@dataclass
class HuMManDataParserConfig(BodyModelParserConfig):
    """HuMMan-Recon: the release root (``pxxxxxx_axxxxxx`` sequences) or one sequence folder. HuMMan ships SMPL
    parameters only: --body-model-dir with smpl/SMPL_NEUTRAL.pkl (its toolbox poses them with the neutral model)."""

    dataset: ClassVar[str] = HUMMAN
    same_layout: ClassVar[Tuple[str, ...]] = (HUMMAN,)
    """Datasets laid out as this parser reads them (see _layouts.other_dataset)."""
    _target: Type = field(default_factory=lambda: HuMManDataParser)
    data: Path = Path("humman")
    """Release root or a sequence folder; short names resolve against $GMNERF_DATA (default ./data)."""
    protocol: str = "humman"
    """Protocol preset (humman: 4 of the 10 Kinects as sources, train.txt/test.txt split) or a YAML path."""
    mask_dir: str = "kinect_mask"
    """Mask folder: kinect_mask (matting, every split) or kinect_mask_manual (hand-annotated, test split only)."""
    mask_threshold: int = 127
    """A mask pixel is foreground when its value is above this (the matting masks are soft)."""
    opencv_pixel_centres: bool = True
    """cameras.json K is an OpenCV calibration (pixel centres at integers); cx, cy get +0.5."""

    @classmethod
    def detect_subject(cls, folder: Path) -> Optional[str]:
        return f"{folder.name}/ has cameras.json and kinect_color/" if is_sequence(folder) else None


class HuMManDataParser(HumanDataParser):
    """Maps HuMMan-Recon sequences onto :class:`SubjectRecord`."""

    config: HuMManDataParserConfig

    def find_subjects(self, root: Path) -> Dict[str, Path]:
        return subject_folders(root, is_sequence)

    def dataset_split(self, root: Path) -> Optional[Tuple[List[str], List[str]]]:
        paths = [root / "train.txt", root / "test.txt"]
        if not all(p.is_file() for p in paths):
            return None
        present = set(self.find_subjects(root))
        out = []
        for path in paths:
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            absent = [n for n in names if n not in present]
            if absent:
                warn(f"{path}: {len(absent)} sequence(s) not downloaded, skipped: {', '.join(absent[:5])}")
            out.append([n for n in names if n in present])
        return out[0], out[1]

    def read_subject(self, name: str, folder: Path, resolution: int) -> "HuMManSubject":
        return HuMManSubject(self, name, folder, resolution)

    def _cameras(self, path: Path) -> List[Tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """(Kinect number, K, R, T) of each ``kinect_color_*`` camera; the depth cameras are left out."""
        try:
            cams = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise HumanDataError(f"{path}: cannot read the HuMMan cameras ({err})") from err
        if not isinstance(cams, dict):
            raise HumanDataError(f"{path}: expected a dict of kinect_color_00N / kinect_depth_00N cameras")
        color = sorted((int(m.group(1)), key) for key in cams if (m := COLOR_CAMERA.match(str(key))))
        if not color:
            raise HumanDataError(f"{path}: no kinect_color_00N cameras (found: {', '.join(sorted(cams)[:4]) or 'none'}"
                                 "; the kinect_depth_* cameras do not see the color images)")
        out = []
        for number, key in color:
            cam = cams[key]
            if not isinstance(cam, dict):
                raise HumanDataError(f"{path}: {key} should hold K, R, T")
            where = f"{path} {key}"
            K, R, T = check_camera(*(require_key(cam, k, path, key) for k in ("K", "R", "T")), where)
            if self.config.opencv_pixel_centres:
                K[:2, 2] += 0.5
            out.append((number, K, R, T))
        return out



class HuMManSubject(SubjectReader):
    """One HuMMan-Recon sequence: frames are the (sparse) ``kinect_color`` image numbers, proxies its posed SMPL fits."""

    missing_files = "images"
    needs = "its color images and an SMPL fit"
    fit_name = "SMPL"

    def __init__(self, parser: HuMManDataParser, name: str, folder: Path, resolution: int):
        super().__init__(name, folder)
        self.config, self.resolution = parser.config, resolution
        self.inside = inside = DatasetFolder(folder)  # its files, symlinks included, must stay inside the folder
        cameras = parser._cameras(inside.check(folder / "cameras.json", what="cameras file"))
        self.present = present = [(number, K, R, T) for number, K, R, T in cameras
                                  if (folder / "kinect_color" / f"kinect_{number:03d}").is_dir()]
        lost = [f"kinect_{n:03d}" for n, *_ in cameras if n not in {p[0] for p in present}]
        if not present:
            raise HumanDataError(f"{folder / 'kinect_color'}: none of the color camera folders of cameras.json exist "
                                 f"(kinect_{cameras[0][0]:03d}, ...)")
        if lost:
            warn(f"{folder}: color camera folders {', '.join(lost)} are missing; sequence {name} goes on without them")
        self.color_dirs = [folder / "kinect_color" / f"kinect_{n:03d}" for n, *_ in present]
        self.stems = sorted((p.stem for p in self.color_dirs[0].glob("*.png") if p.stem.isdigit()), key=int)
        if not self.stems:
            raise HumanDataError(f"{self.color_dirs[0]}: no <frame>.png color images")
        self.camera_names = tuple(f"kinect_color_{n:03d}" for n, *_ in present)
        self.camera_ids = tuple(n for n, *_ in present)
        self.fits_where = folder / "smpl_params"

    def frame_ids(self) -> List[str]:
        return self.stems

    def prepare(self, frames: Sequence[str]) -> None:
        sizes = [image_size(self.inside.check(d / f"{frames[0]}.png", what="image")) for d in self.color_dirs]
        self.out_size, self.crops = common_frame(sizes, self.resolution)
        self.mask_dir = self.folder / self.config.mask_dir
        if not self.mask_dir.is_dir():
            raise HumanDataError(f"{self.mask_dir}: no mask folder (kinect_mask/ from matting for every split, "
                                 "kinect_mask_manual/ for the test split; --mask-dir)")
        self.models = BodyModels(self.config.body_model_dir, self.config.gender)
        try:
            self.model_file = self.models.path("smpl")
        except HumanDataError as err:
            raise HumanDataError(f"{self.fits_where}: HuMMan ships SMPL parameters only; {err}") from None
        self.cache = DerivedFiles(self.config.cache_dir, "proxies", self.folder,
                                  f"humman|{self.model_file}|{self.config.gender}")

    def views(self, stem: str) -> Tuple[ViewRecord, ...]:
        images = [d / f"{stem}.png" for d in self.color_dirs]
        require_files(stem, images)
        masks = [self.mask_dir / f"kinect_{n:03d}" / f"{stem}.png" for n, *_ in self.present]
        for image, mask in zip(images, masks):
            self.inside.check(image, what="image")
            self.inside.check(mask, what="mask")
        return tuple(
            ViewRecord(image_path=image, mask_paths=(mask,), K=K, R=R, T=T, camera_name=f"kinect_color_{n:03d}",
                       out_size=self.out_size, crop=crop, mask_threshold=self.config.mask_threshold)
            for image, mask, (n, K, R, T), crop in zip(images, masks, self.present, self.crops)
        )

    def proxy(self, stem: str) -> Path:
        params = self.fits_where / f"{stem}.npz"
        if not params.is_file():
            raise SkipFrame(f"frame {stem} ({params})", UNFIT)
        self.inside.check(params, what="SMPL fit")
        return self.cache.vertices(stem, [params, self.model_file], partial(_posed, self.models, params))

    def faces(self, frames: Sequence[FrameRecord]) -> Optional[np.ndarray]:
        return self.models.faces("smpl")


def _posed(models: BodyModels, path: Path) -> np.ndarray:
    """World vertices of one ``smpl_params/<frame>.npz`` (standard SMPL: global_orient, body_pose, betas, transl)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(require_key(dict(data), k, path, "SMPL fit")) for k in SMPL_KEYS}
    except HumanDataError:
        raise
    except Exception as err:
        raise HumanDataError(f"{path}: cannot read the SMPL fit ({err})") from err
    rows = {k: finite_array(v.reshape(1, -1), (1, n), f"{path} {k!r}") for (k, v), n in
            zip(arrays.items(), SMPL_KEYS.values())}
    params = BodyParams(model_type="smpl", betas=rows["betas"], body_pose=rows["body_pose"],
                        global_orient=rows["global_orient"], transl=rows["transl"])
    return models.pose(params)[0]


def is_sequence(folder: Path) -> bool:
    """A HuMMan-Recon sequence folder: ``cameras.json`` and ``kinect_color/``."""
    return (folder / "cameras.json").is_file() and (folder / "kinect_color").is_dir()
