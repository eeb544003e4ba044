"""DNA-Rendering sequences (``.smc`` HDF5 files) onto the shared human records.

Layout (DNA-Rendering/DNA-Rendering ``scripts/3DGS/SMCReader.py`` and ``dataset_readers.py``, the official loaders)::

    <root>/main/0012_03.smc                      # Camera_5mp/<0..47>/color/<frame>, Camera_12mp/<48..59>/color/<frame>:
                                                 # JPEG bytes; attrs: gender, ...
    <root>/annotations/0012_03_annots.smc        # Camera_Parameter/<NN>/{K, D, RT (camera-to-world), Color_Calibration}
                                                 # Mask/<id>/mask/<frame>: encoded masks
                                                 # SMPLx/{fullpose (N,55,3), betas, expression, transl, scale}

(``<seq>.smc`` next to ``<seq>_annots.smc`` in one folder works too, and ``--data`` may be one main ``.smc`` file.)

Quirks handled: ``RT`` is camera-to-world (inverted here); the 5 MP (2448x2048, cameras 0-47) and 12 MP (4096x3000,
48-59) groups have different image shapes, so a subject using both pads its views to one aspect ratio
(``--camera-groups``; 5 MP only by default, as the official loaders); images are undistorted with ``D`` as the official
loader does; masks live in the annotation file (and may be 3-channel: the maximum counts, foreground > 127); SMPL-X
``fullpose`` is split as the official loader splits it (root, 21 body joints, jaw, eyes, 15 + 15 hand joints;
``flat_hand_mean=False``, no PCA), with the gender of the main file's attributes. Some annotation files are short:
``betas`` with one row (used for every frame), ``expression`` with fewer frames than ``fullpose`` (zero expression for
the rest, one warning), ``fullpose`` with fewer frames than the images (those frames are skipped, one warning).

The view loader reads image files, so the sampled frames' images and masks are copied out of the ``.smc`` files once
(the encoded bytes, not decoded) into ``$XDG_CACHE_HOME/gmnerf_ns/dna_rendering/`` (``--cache-dir``), as are the posed
proxies: expect about 1 MB per 5 MP view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Literal, Optional, Sequence, Tuple, Type

import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import FrameRecord, ViewRecord, check_camera
from gmnerf_ns.data.parsers.base import HumanDataParser

from ._body_models import BodyModels, BodyParams
from ._derived import DerivedFiles, common_frame
from ._files import DatasetFolder, finite_array, image_size, warn
from ._layouts import DNA_RENDERING
from .body_model_config import BodyModelParserConfig
from .subject_reader import UNFIT, SkipFrame, SubjectReader


@dataclass
class DNARenderingDataParserConfig(BodyModelParserConfig):
    """DNA-Rendering: the root (main/ and annotations/), a folder of .smc files, or one main .smc file. It ships SMPL-X
    parameters only: --body-model-dir with smplx/SMPLX_<GENDER>.npz, the gender of the main .smc's actor by default
    (as the official loader). Extracted images and masks are cached with the posed proxies (--cache-dir)."""

    dataset: ClassVar[str] = DNA_RENDERING
    same_layout: ClassVar[Tuple[str, ...]] = (DNA_RENDERING,)
    """Datasets laid out as this parser reads them (see _layouts.other_dataset)."""
    _target: Type = field(default_factory=lambda: DNARenderingDataParser)
    data: Path = Path("dna_rendering")
    """Dataset root, a folder of .smc files or one main .smc; short names resolve against $GMNERF_DATA."""
    protocol: str = "dna-rendering"
    """Protocol preset (dna-rendering: 4 of the 48 5 MP cameras as sources, every 10th frame) or a YAML path."""
    camera_groups: Tuple[Literal["Camera_5mp", "Camera_12mp"], ...] = ("Camera_5mp",)
    """Camera groups to use: the 48 5 MP cameras (2448x2048) and/or the 12 MP ones (4096x3000, padded to one shape)."""
    mask_threshold: int = 127
    """A mask pixel is foreground when its value is above this (the official loaders: mask / 255 >= 0.5)."""
    undistort: bool = True
    """Undistort images and masks with D, as the official 3DGS loader does (GIGA does not)."""
    gender: Literal["file", "neutral", "male", "female"] = "file"
    apply_smplx_scale: bool = False
    """Multiply the posed SMPL-X by SMPLx/scale (about the world origin). The official loader ignores it."""
    opencv_pixel_centres: bool = True
    """K is an OpenCV calibration (pixel centres at integers); cx, cy get +0.5."""

    @classmethod
    def detect_subject(cls, folder: Path) -> Optional[str]:
        return f"{folder.name}/ has DNA-Rendering .smc files" if is_dna_rendering(folder) else None


class DNARenderingDataParser(HumanDataParser):
    """Maps DNA-Rendering ``.smc`` pairs onto :class:`SubjectRecord`."""

    config: DNARenderingDataParserConfig

    def find_subjects(self, root: Path) -> Dict[str, Path]:
        if root.is_file():
            return {root.stem: root} if is_main_smc(root) else {}
        folder = root / "main" if (root / "main").is_dir() else root
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(folder.glob("*.smc")) if is_main_smc(p)}

    def read_subject(self, name: str, folder: Path, resolution: int) -> "DNARenderingSubject":
        return DNARenderingSubject(self, name, folder, resolution)

    def _cameras(self, main, annots, main_path: Path, annots_path: Path) -> List[tuple]:
        """(group, id, K, D, R, T) of every camera of the chosen groups, world-to-camera (``RT`` is camera-to-world)."""
        if "Camera_Parameter" not in annots:
            raise HumanDataError(f"{annots_path}: no Camera_Parameter group (found: {', '.join(annots.keys())})")
        calibration = annots["Camera_Parameter"]
        cameras = []
        for group in self.config.camera_groups:
            if group not in main:
                CONSOLE.log(f"{main_path.name}: no {group} group; skipped")
                continue
            for cam in sorted(main[group].keys(), key=lambda k: int(k) if str(k).isdigit() else -1):
                if not str(cam).isdigit():
                    raise HumanDataError(f"{main_path}: camera key {group}/{cam!r} is not a number; DNA-Rendering "
                                         "numbers its cameras (Camera_5mp/0, Camera_12mp/48, ...)")
                key = f"{int(cam):02d}"
                where = f"{annots_path} Camera_Parameter/{key}"
                if key not in calibration:
                    raise HumanDataError(f"{annots_path}: no Camera_Parameter/{key} for {group} camera {cam} of "
                                         f"{main_path.name}")
                params = calibration[key]
                for entry in ("K", "RT"):
                    if entry not in params:
                        raise HumanDataError(f"{where}: no {entry} (found: {', '.join(params.keys())})")
                c2w = finite_array(_own(params["RT"], annots_path)[()], (-1, 4), f"{where} RT")
                if c2w.shape[0] not in (3, 4):
                    raise HumanDataError(f"{where}: RT has shape {c2w.shape}, expected 4x4 camera-to-world")
                R = c2w[:3, :3].T
                K, R, T = check_camera(_own(params["K"], annots_path)[()], R, -R @ c2w[:3, 3], where)
                if self.config.opencv_pixel_centres:
                    K[:2, 2] += 0.5
                dist = None
                if "D" in params:
                    dist = finite_array(np.asarray(_own(params["D"], annots_path)[()]).reshape(-1), (-1,),
                                        f"{where} D")
                    dist = dist if np.any(dist) else None
                cameras.append((group, str(cam), K, dist, R, T))
        if not cameras:
            raise HumanDataError(f"{main_path}: none of the camera groups {', '.join(self.config.camera_groups)} "
                                 f"(found: {', '.join(k for k in main.keys())})")
        return cameras

    def _extract(self, main, annots, files: DerivedFiles, main_path: Path, annots_path: Path, group: str, cam: str,
                 frame: int) -> Tuple[Path, Path]:
        """(image file, mask file) of one view, copied out of the .smc files (encoded bytes) once."""
        colors = main[group][cam]["color"]
        if str(frame) not in colors:
            raise _Missing(f"{main_path.name} {group}/{cam}/color/{frame}")
        masks = annots["Mask"][cam]["mask"] if "Mask" in annots and cam in annots["Mask"] else None
        if masks is None or str(frame) not in masks:
            raise _Missing(f"{annots_path.name} Mask/{cam}/mask/{frame}")
        image = files.raw(f"image_{int(cam):02d}_{frame:06d}", ".jpg", [main_path],
                          lambda: _bytes(_own(colors[str(frame)], main_path)))
        encoded = _own(masks[str(frame)], annots_path)
        suffix = ".png" if bytes(np.asarray(encoded[:4], dtype=np.uint8)) == b"\x89PNG" else ".jpg"
        mask = files.raw(f"mask_{int(cam):02d}_{frame:06d}", suffix, [annots_path], lambda: _bytes(encoded))
        return image, mask

    def _smplx(self, annots, path: Path) -> dict:
        if "SMPLx" not in annots:
            raise HumanDataError(f"{path}: no SMPLx group (found: {', '.join(annots.keys())})")
        group = annots["SMPLx"]
        for key in ("fullpose", "betas", "transl"):
            if key not in group:
                raise HumanDataError(f"{path}: SMPLx has no {key!r} (found: {', '.join(group.keys())})")
        def value(key: str) -> np.ndarray:
            return np.asarray(_own(group[key], path)[()])

        fullpose = finite_array(value("fullpose").reshape(-1, 55, 3), (-1, 55, 3), f"{path} fullpose")
        transl = finite_array(value("transl").reshape(-1, 3), (-1, 3), f"{path} SMPLx/transl")
        betas = finite_array(np.atleast_2d(value("betas")), (-1, -1), f"{path} SMPLx/betas")
        expression = (finite_array(np.atleast_2d(value("expression")), (-1, -1), f"{path} SMPLx/expression")
                      if "expression" in group else np.zeros((0, 10)))
        scale = float(value("scale").reshape(-1)[0]) if "scale" in group else 1.0
        count = min(len(fullpose), len(transl))
        if betas.shape[0] not in (1,) and betas.shape[0] < count:
            raise HumanDataError(f"{path}: SMPLx/betas has {betas.shape[0]} rows for {count} frames")
        return {"fullpose": fullpose, "transl": transl, "betas": betas, "expression": expression, "scale": scale,
                "count": count}

    def _gender(self, main, path: Path) -> str:
        if self.config.gender != "file":
            return self.config.gender
        value = main.attrs.get("gender", "neutral")
        value = (value.decode() if isinstance(value, bytes) else str(value)).strip().lower()
        if value not in ("male", "female", "neutral"):
            CONSOLE.log(f"{path.name}: actor gender {value!r}; using the neutral SMPL-X model")
            value = "neutral"
        return value



class DNARenderingSubject(SubjectReader):
    """One sequence (its main and annotation ``.smc``, open while it is read): frames are the color frame numbers;
    views and proxies are copied or posed into the cache."""

    missing_files = "images or masks"
    needs = "its images, masks and an SMPL-X fit"

    def __init__(self, parser: DNARenderingDataParser, name: str, main_path: Path, resolution: int):
        super().__init__(name, main_path)
        self.parser, self.config, self.resolution = parser, parser.config, resolution
        self.main_path, self.annots_path = main_path, annotations_of(main_path)
        inside = DatasetFolder(dataset_folder(main_path))
        if main_path != parser.resolve_root():  # a main .smc named by --data is the user's choice
            inside.check(main_path, what="DNA-Rendering file")
        inside.check(self.annots_path, what="annotation file")
        self.main = self.annots = None
        try:
            self.main = _open(main_path)
            self.annots = _open(self.annots_path)
            self.cameras = parser._cameras(self.main, self.annots, main_path, self.annots_path)
        except BaseException:
            self.close()
            raise
        self.camera_names = tuple(f"{g}/{c}" for g, c, *_ in self.cameras)
        self.camera_ids = tuple(int(c) for _, c, *_ in self.cameras)
        self.short_expression: List[int] = []
        self.out_size = None

    def close(self) -> None:
        for smc in (self.main, self.annots):
            if smc is not None:
                smc.close()

    def frame_ids(self) -> List[int]:
        group, cam = self.cameras[0][:2]
        frame_ids = sorted(int(k) for k in self.main[group][cam]["color"].keys() if str(k).isdigit())
        if not frame_ids:
            raise HumanDataError(f"{self.main_path}: {group}/{cam}/color holds no frames")
        return frame_ids

    def prepare(self, frames: Sequence[int]) -> None:
        self.smplx = self.parser._smplx(self.annots, self.annots_path)
        gender = self.parser._gender(self.main, self.main_path)
        self.models = BodyModels(self.config.body_model_dir, gender)
        try:
            self.model_file = self.models.path("smplx")
        except HumanDataError as err:
            raise HumanDataError(f"{self.annots_path}: DNA-Rendering ships SMPL-X parameters only; {err}") from None
        self.files = DerivedFiles(self.config.cache_dir, "dna_rendering", self.main_path,
                                  f"{self.model_file}|{gender}|{self.config.apply_smplx_scale}")

    def views(self, frame: int) -> Tuple[ViewRecord, ...]:
        if frame >= self.smplx["count"]:
            raise SkipFrame(f"frame {frame}", UNFIT)
        try:
            paths = [self.parser._extract(self.main, self.annots, self.files, self.main_path, self.annots_path,
                                          group, cam, frame) for group, cam, *_ in self.cameras]
        except _Missing as lost:
            raise SkipFrame(f"frame {frame} ({lost})") from None
        if frame >= len(self.smplx["expression"]):
            self.short_expression.append(frame)
        if self.out_size is None:  # the first frame with its files sets the shape every view is padded to
            self.out_size, self.crops = common_frame([image_size(image) for image, _ in paths], self.resolution)
        return tuple(
            ViewRecord(image_path=image, mask_paths=(mask,), K=K, R=R, T=T, camera_name=f"{group}/{cam}",
                       out_size=self.out_size, dist=dist if self.config.undistort else None, crop=crop,
                       mask_threshold=self.config.mask_threshold)
            for (image, mask), (group, cam, K, dist, R, T), crop in zip(paths, self.cameras, self.crops)
        )

    def proxy(self, frame: int) -> Path:
        params = _frame_params(self.smplx, frame, self.config.apply_smplx_scale)
        return self.files.vertices(f"smplx_{frame:06d}", [self.annots_path, self.model_file],
                                   lambda: self.models.pose(params)[0])

    def unfit_warning(self, skipped: List[str]) -> str:
        return (f"{self.annots_path}: SMPLx/fullpose has {self.smplx['count']} frames; {len(skipped)} sampled "
                f"frame(s) after it have no fit and are skipped, e.g. {skipped[0]}")

    def finish(self) -> None:
        if self.short_expression:
            warn(f"{self.annots_path}: SMPLx/expression has {len(self.smplx['expression'])} frames, fewer than "
                 f"fullpose; {len(self.short_expression)} frame(s) use a zero expression, e.g. frame "
                 f"{self.short_expression[0]}")

    def faces(self, frames: Sequence[FrameRecord]) -> Optional[np.ndarray]:
        return self.models.faces("smplx")


class _Missing(Exception):
    """An image or mask of a sampled frame is not in the .smc files."""


def _frame_params(smplx: dict, frame: int, apply_scale: bool) -> BodyParams:
    """SMPL-X parameters of one frame, split as the official loader splits ``fullpose``."""
    pose = smplx["fullpose"][frame]
    betas = smplx["betas"][frame if smplx["betas"].shape[0] > 1 else 0][None]
    expression = smplx["expression"]
    expression = expression[frame][None] if frame < len(expression) else np.zeros((1, max(expression.shape[1], 10)))
    return BodyParams(
        model_type="smplx", betas=betas, global_orient=pose[0][None], body_pose=pose[1:22].reshape(1, 63),
        jaw_pose=pose[22][None], leye_pose=pose[23][None], reye_pose=pose[24][None],
        left_hand_pose=pose[25:40].reshape(1, 45), right_hand_pose=pose[40:55].reshape(1, 45), hand_pca=None,
        flat_hand_mean=False, expression=expression, transl=smplx["transl"][frame][None],
        scale=smplx["scale"] if apply_scale else 1.0,
    )


def _bytes(dataset) -> bytes:
    return np.asarray(dataset[()], dtype=np.uint8).tobytes()


OWN_DATA = "a .smc file may only hold its own data: use the files as released"
"""What the refusals of HDF5 features that read other files say to do."""


def _own(dataset, path: Path):
    """``dataset`` if its data lives in ``path`` itself: external storage and virtual datasets (which read other files,
    any file for external storage) are refused."""
    import h5py

    if isinstance(dataset, h5py.Dataset):
        if dataset.is_virtual:
            raise HumanDataError(f"{path}: dataset {dataset.name} is a virtual dataset mapping other files; {OWN_DATA}")
        if dataset.external:
            files = ", ".join(str(entry[0]) for entry in dataset.external)
            raise HumanDataError(f"{path}: dataset {dataset.name} keeps its data in other files (external storage: "
                                 f"{files}); {OWN_DATA}")
    return dataset


def _open(path: Path):
    """The .smc file, refused when it holds links to other files (soft links within the file are fine)."""
    import h5py

    if not path.is_file():
        raise HumanDataError(f"{path}: DNA-Rendering file is missing")
    try:
        smc = h5py.File(path, "r")
    except OSError as err:
        raise HumanDataError(f"{path}: not a readable .smc (HDF5) file ({err})") from err
    own = (h5py.h5l.TYPE_HARD, h5py.h5l.TYPE_SOFT)
    name = smc.id.links.visit(lambda name, info: None if info.type in own else name, info=True)
    if name is None:
        return smc
    name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    try:
        link = smc.get(name, getlink=True)
    except Exception:  # a user-defined link type h5py cannot describe
        link = None
    smc.close()
    target = f" to {link.filename}:{link.path}" if isinstance(link, h5py.ExternalLink) else ""
    raise HumanDataError(f"{path}: /{name} is an HDF5 external link{target}; {OWN_DATA}")


def dataset_folder(main: Path) -> Path:
    """The dataset folder of a main ``.smc``: the root above ``main/``, else the file's folder."""
    return main.parent.parent if main.parent.name == "main" else main.parent


def annotations_of(main: Path) -> Path:
    """The annotation file of a main ``.smc``: ``annotations/<seq>_annots.smc`` next to ``main/``, or beside it."""
    candidates = [main.with_name(f"{main.stem}_annots.smc")]
    if main.parent.name == "main":
        candidates.insert(0, main.parent.parent / "annotations" / f"{main.stem}_annots.smc")
    for path in candidates:
        if path.is_file():
            return path
    raise HumanDataError(f"{main}: no annotation file; expected {' or '.join(str(c) for c in candidates)}")


def is_main_smc(path: Path) -> bool:
    """A main DNA-Rendering file: ``<seq>.smc`` (not ``<seq>_annots.smc``)."""
    return path.suffix == ".smc" and path.is_file() and not path.stem.endswith("_annots")


def is_dna_rendering(path: Path) -> bool:
    """A main ``.smc``, a folder with ``main/*.smc``, or a folder holding main ``.smc`` files."""
    if path.is_file():
        return is_main_smc(path)
    for folder in (path / "main", path):
        if folder.is_dir() and any(is_main_smc(p) for p in folder.glob("*.smc")):
            return True
    return False
