"""Your own multi-view capture, laid out the way EasyMocap writes it, onto the shared human records.

Layout (one capture folder = one subject; a folder of capture folders = several subjects)::

    <capture>/intri.yml, extri.yml         # OpenCV FileStorage YAML: names, K_/dist_/H_/W_<cam>; R_ (Rodrigues) or
                                           # Rot_ (3x3) and T_<cam> (metres), world-to-camera, OpenCV axes
    <capture>/images/<cam>/<frame>.jpg     # (or .png)
    <capture>/mask/<cam>/<frame>.png       # or masks/ (--mask-dir); foreground > 127 (--mask-threshold)
    <capture>/output*/smpl/<frame>.json    # [{id, Rh, Th, poses, shapes[, expression, handl, handr]}, ...]
    <capture>/output*/vertices/<frame>.json  # [{id, vertices}, ...]

Cameras are read as EasyMocap reads them (easymocap_cameras.py); cameras only one of the two files calibrates (the
extrinsics of a subset) are skipped with one warning. The image defines a camera's size: images a few pixels off the
calibrated (``W_/H_``) or the rig's common size are reported and cut to it, not silently padded. Bodies are either
posed from the SMPL/SMPL-H/SMPL-X parameters with the user's model files (``--body-model-dir``; EasyMocap's
``V = R(Rh) X + Th``, see ``_body_models.py``) or read from ``vertices/`` when no model files are given. Posed proxies
are written once to a cache (``_derived.py``). Parsing reads the camera files, one image header per camera and the
fits of the sampled frames.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, ClassVar, Dict, List, Literal, Optional, Sequence, Tuple, Type

import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import FrameRecord, ViewRecord
from gmnerf_ns.data.parsers.base import HumanDataParser

from ._body_models import TEMPLATE_SIZES, BodyModels
from ._derived import DerivedFiles, common_frame
from ._files import DatasetFolder, image_size, subject_folders, warn
from ._layouts import EASYMOCAP, explain_no_subjects
from .body_model_config import BodyModelParserConfig
from .easymocap_cameras import Camera, read_cameras
from .easymocap_params import easymocap_params, easymocap_vertices, read_person_list
from .subject_reader import UNFIT, SkipFrame, SubjectReader, require_files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_DIRS = ("mask", "masks", "mask-schp")
"""Mask folders tried in this order when ``--mask-dir`` is not given."""


@dataclass
class EasyMocapDataParserConfig(BodyModelParserConfig):
    """A capture in EasyMocap's layout (intri.yml, extri.yml, images/, mask/, output*/smpl or output*/vertices).
    --body-model-dir poses the output*/smpl fits (EasyMocap fits with the neutral model); without it the vertices in
    output*/vertices are used."""

    dataset: ClassVar[str] = EASYMOCAP
    same_layout: ClassVar[Tuple[str, ...]] = (EASYMOCAP,)
    """Datasets laid out as this parser reads them (see _layouts.other_dataset)."""
    _target: Type = field(default_factory=lambda: EasyMocapDataParser)
    data: Path = Path("easymocap")
    """A capture folder (with intri.yml and extri.yml) or a folder of them; short names resolve against $GMNERF_DATA."""
    protocol: str = "easymocap"
    """Protocol preset (easymocap: 4 evenly spaced sources, every frame) or a YAML path."""
    mask_dir: Optional[str] = None
    """Mask folder inside the capture; None = the first of mask/, masks/, mask-schp/ that exists."""
    mask_threshold: int = 127
    """A mask pixel is foreground when its value is above this."""
    output_dir: Optional[str] = None
    """Fits folder inside the capture (holding smpl/ or vertices/); None = the output* folder that has them."""
    body_model_type: Literal["auto", "smpl", "smplh", "smplx"] = "auto"
    """Body model of the fits; auto = from the pose length (EasyMocap's layouts, see _body_models.py)."""
    person_id: Optional[int] = None
    """The person to use in a multi-person capture; None = the smallest id."""
    undistort: bool = True
    """Undistort images and masks with dist_<cam> (EasyMocap captures are stored raw)."""
    opencv_pixel_centres: bool = True
    """intri.yml is an OpenCV calibration (pixel centres at integers); cx, cy get +0.5 for our records' convention."""

    @classmethod
    def detect_subject(cls, folder: Path) -> Optional[str]:
        return f"{folder.name}/ has intri.yml and extri.yml" if is_capture(folder) else None


class EasyMocapDataParser(HumanDataParser):
    """Maps EasyMocap capture folders onto :class:`SubjectRecord`."""

    config: EasyMocapDataParserConfig

    def find_subjects(self, root: Path) -> Dict[str, Path]:
        found = subject_folders(root, is_capture)
        if not found:
            explain_no_subjects(root, self.config.same_layout, "no EasyMocap capture (intri.yml and extri.yml)")
        return found

    def read_subject(self, name: str, folder: Path, resolution: int) -> "EasyMocapSubject":
        return EasyMocapSubject(self, name, folder, resolution)

    def _mask_dir(self, folder: Path) -> Path:
        names = (self.config.mask_dir,) if self.config.mask_dir else MASK_DIRS
        for mask_name in names:
            if (folder / mask_name).is_dir():
                return folder / mask_name
        raise HumanDataError(f"{folder}: no mask folder; expected {' or '.join(f'{n}/' for n in names)} "
                             "(<mask dir>/<cam>/<frame>.png; --mask-dir names another)")

    def _used_sizes(self, cameras: List[Camera], sizes: List[Tuple[int, int]], folder: Path
                    ) -> List[Tuple[int, int]]:
        """The (W, H) of each camera's images that its views use: the stored size, except for images a few pixels
        off their calibrated size (W_/H_) or, without one, off the rig's most common size (EasyMocap's convention:
        the image defines the size). Those are reported, and keep their top-left region of the expected size (where
        the calibration's pixels are) instead of the whole rig being padded to their shape."""
        common = Counter(sizes).most_common(1)[0][0]
        used, odd = [], []
        for cam, (w, h) in zip(cameras, sizes):
            W, H = cam.size if cam.size is not None else common
            if _few_pixels_off((w, h), (W, H)):
                source = f"W_{cam.name}/H_{cam.name}" if cam.size is not None else "the other cameras' size"
                odd.append(f"camera {cam.name} is {w}x{h}, not {W}x{H} ({source})")
                w, h = min(w, W), min(h, H)
            used.append((w, h))
        if odd:
            warn(f"{folder / 'images'}: images a few pixels off the expected size: {'; '.join(odd)}. Using the "
                 "expected size's top-left region (K as calibrated; a smaller image is padded)")
        return used

    def _intrinsics(self, cam: Camera, size: Tuple[int, int], intri: Path) -> np.ndarray:
        """K of the stored image in our pixel convention (scaled when H_/W_ describe another resolution)."""
        K = cam.K.copy()
        if self.config.opencv_pixel_centres:
            K[:2, 2] += 0.5
        if cam.size is not None and tuple(cam.size) != tuple(size) and not _few_pixels_off(size, cam.size):
            (W, H), (w, h) = cam.size, size
            if abs(w / W - h / H) > 0.01 * (w / W):
                raise HumanDataError(f"{intri}: camera {cam.name!r} is calibrated for {W}x{H} (W_/H_) but its images "
                                     f"are {w}x{h}, another aspect ratio")
            K[0] *= w / W  # exact with half-pixel centres
            K[1] *= h / H
        return K

    def _fits(self, folder: Path, name: str) -> "EasyMocapFits":
        outputs = ([folder / self.config.output_dir] if self.config.output_dir
                   else sorted(p for p in folder.glob("output*") if p.is_dir()))
        if self.config.output_dir and not outputs[0].is_dir():
            raise HumanDataError(f"{outputs[0]}: no such fits folder (--output-dir)")
        smpl = [o / "smpl" for o in outputs if (o / "smpl").is_dir()]
        verts = [o / "vertices" for o in outputs if (o / "vertices").is_dir()]
        if not smpl and not verts:
            raise HumanDataError(f"{folder}: no body fits; expected output*/smpl/<frame>.json (SMPL parameters) or "
                                 "output*/vertices/<frame>.json (vertices)")
        if self.config.body_model_dir is not None and smpl:
            mode, chosen = "smpl", smpl
        elif verts:
            mode, chosen = "vertices", verts
        else:
            raise HumanDataError(f"{smpl[0]}: the capture has SMPL parameters but no output*/vertices/; pass "
                                 "--body-model-dir with your SMPL/SMPL-X model files to pose them")
        if len(chosen) > 1:
            CONSOLE.log(f"{name}: fits in {', '.join(str(c.relative_to(folder)) for c in chosen)}; using "
                        f"{chosen[0].relative_to(folder)} (--output-dir to choose)")
        return EasyMocapFits(chosen[0], mode, self.config, name, folder)



class EasyMocapSubject(SubjectReader):
    """One capture folder: frames are the image stems of the first camera; proxies come from the chosen fits."""

    missing_files = "images"

    def __init__(self, parser: EasyMocapDataParser, name: str, folder: Path, resolution: int):
        super().__init__(name, folder)
        self.parser, self.config, self.resolution = parser, parser.config, resolution
        self.cameras = read_cameras(folder / "intri.yml", folder / "extri.yml", parser.protocol.num_input_views + 1)
        self.image_dirs, self.inside = [], DatasetFolder(folder)  # camera names may not lead out of the capture
        for cam in self.cameras:
            path = self.inside.check(folder / "images" / cam.name, folder / "intri.yml", f"camera {cam.name!r} folder")
            if not path.is_dir():
                raise HumanDataError(f"{path}: no image folder for camera {cam.name!r}, which intri.yml lists in "
                                     "'names'")
            self.image_dirs.append(path)
        self.mask_dir = parser._mask_dir(folder)
        self.stems = sorted((p.stem for p in self.image_dirs[0].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                            key=_order)
        if not self.stems:
            raise HumanDataError(f"{self.image_dirs[0]}: no images (<frame>.jpg or .png)")
        self.position = {stem: i for i, stem in enumerate(self.stems)}
        self.camera_names = tuple(c.name for c in self.cameras)

    def frame_ids(self) -> List[str]:
        return self.stems

    def prepare(self, frames: Sequence[str]) -> None:
        self.suffixes = [_image_suffix(d, frames[0]) for d in self.image_dirs]
        sizes = [image_size(self.inside.check(d / f"{frames[0]}{s}", what="image"))
                 for d, s in zip(self.image_dirs, self.suffixes)]
        sizes = self.parser._used_sizes(self.cameras, sizes, self.folder)
        self.Ks = [self.parser._intrinsics(cam, size, self.folder / "intri.yml") for cam, size in zip(self.cameras, sizes)]
        self.out_size, self.crops = common_frame(sizes, self.resolution)  # crops from (0, 0): the used part
        self.fits = self.parser._fits(self.folder, self.name)

    def views(self, stem: str) -> Tuple[ViewRecord, ...]:
        images = [d / f"{stem}{s}" for d, s in zip(self.image_dirs, self.suffixes)]
        require_files(stem, images)
        masks = [(self.mask_dir / cam.name / f"{stem}.png", self.mask_dir / cam.name / f"{stem}.jpg")
                 for cam in self.cameras]
        for image, (png, jpg) in zip(images, masks):
            for path, what in ((image, "image"), (png, "mask"), (jpg, "mask")):
                self.inside.check(path, what=what)
        return tuple(
            ViewRecord(image_path=image, mask_paths=mask_paths, K=K, R=cam.R, T=cam.T, camera_name=cam.name,
                       out_size=self.out_size, dist=cam.dist if self.config.undistort else None, crop=crop,
                       mask_threshold=self.config.mask_threshold)
            for cam, image, mask_paths, K, crop in zip(self.cameras, images, masks, self.Ks, self.crops)
        )

    def proxies(self, frames: Sequence[str], skip: Callable[[SkipFrame], None]) -> Dict[str, Path]:
        self.frames_with_images = len(frames)
        return self.fits.proxies(list(frames), skip)

    def frame_id(self, stem: str) -> int:
        return _frame_id(stem, self.position[stem])

    def unfit_warning(self, skipped: List[str]) -> str:
        return (f"{self.fits.fit_dir}: {len(skipped)} of {self.frames_with_images} frame(s) have no fit for person "
                f"{self.fits.person} and are skipped, e.g. {skipped[0]}")

    def no_frames(self) -> str:
        return f"{self.fits.fit_dir}: no sampled frame has a fit for person {self.fits.person}"

    def faces(self, frames: Sequence[FrameRecord]) -> Optional[np.ndarray]:
        return self.fits.faces()

    def faces_error(self, faces: np.ndarray, num_vertices: int, first: FrameRecord) -> str:
        kind, models = self.fits.faces_kind, self.fits.models
        return (f"{self.fits.path(self.fits.first)}: {num_vertices} vertices, but the {kind.upper()} faces of "
                f"{models.path(kind)} index {int(faces.max()) + 1}")


class EasyMocapFits:
    """The fits of one capture (``smpl/`` parameters or ``vertices/``) turned into cached proxy files."""

    def __init__(self, fit_dir: Path, mode: str, config: EasyMocapDataParserConfig, name: str, folder: Path):
        self.fit_dir, self.mode, self.config, self.name = fit_dir, mode, config, name
        self.models = BodyModels(config.body_model_dir, config.gender)
        self.folder = folder

    def path(self, stem: str) -> Path:
        path = self.fit_dir / f"{stem}.json"
        if not path.is_file() and stem.isdigit():
            path = self.fit_dir / f"{int(stem):06d}.json"
        return path

    def proxies(self, stems: List[str], skip: Callable[[SkipFrame], None]) -> Dict[str, Path]:
        """{stem: cached vertices file} for the frames with a fit of the chosen person; the others go to ``skip``."""
        present = [s for s in stems if self.path(s).is_file()]
        if not present:
            raise HumanDataError(f"{self.fit_dir}: no sampled frame has a fit (looked for <frame>.json, e.g. "
                                 f"{self.path(stems[0]) if stems else self.fit_dir}); "
                                 f"{'no frame has its images' if not stems else 'run EasyMocap on these frames'}")
        people = read_person_list(self.path(present[0]), f"EasyMocap {self.mode}")
        ids = sorted({p["id"] for p in people})
        self.person = person = self.config.person_id if self.config.person_id is not None else (ids[0] if ids else 0)
        if self.config.person_id is None and len(ids) > 1:
            CONSOLE.log(f"{self.name}: {len(ids)} people in {self.path(present[0]).name} (ids "
                        f"{', '.join(map(str, ids))}); using id {person} (--person-id to choose another)")
        options = (f"{self.mode}|{self.fit_dir.resolve()}|{person}|{self.config.body_model_dir}|"
                   f"{self.config.body_model_type}|{self.config.gender}")
        cache = DerivedFiles(self.config.cache_dir, "proxies", self.folder, options)
        model_sources: List[Path] = []
        kind: Optional[str] = None
        if self.mode == "smpl":
            try:
                first = self._person(self.path(present[0]), person)
            except _NoPerson:
                raise HumanDataError(f"{self.path(present[0])}: no person with id {person} (ids: "
                                     f"{', '.join(map(str, ids)) or 'none'}; --person-id)") from None
            kind = easymocap_params(first, self.path(present[0]), self.config.body_model_type).model_type
            model_sources = [self.models.path(kind)]

        self.kind = kind
        self.out: Dict[str, Path] = {}
        for stem in stems:
            fit = self.path(stem)
            if not fit.is_file():
                skip(SkipFrame(f"frame {stem} ({fit.name} missing)", UNFIT))
                continue
            try:
                self.out[stem] = cache.vertices(stem, [fit, *model_sources], partial(self._posed, fit, person))
            except _NoPerson:
                skip(SkipFrame(f"frame {stem} (no person {person} in {fit.name})", UNFIT))
        return self.out

    def _posed(self, fit: Path, person: int) -> np.ndarray:
        """World vertices of ``person`` in one fit file."""
        entry = self._person(fit, person)
        if self.mode == "smpl":
            return self.models.pose(easymocap_params(entry, fit, self.config.body_model_type))[0]
        return easymocap_vertices(entry, fit)

    def _person(self, fit: Path, person: int) -> dict:
        people = read_person_list(fit, f"EasyMocap {self.mode}")
        match = [p for p in people if p["id"] == person]
        if not match:
            raise _NoPerson
        return match[0]

    def faces(self) -> Optional[np.ndarray]:
        """The template's faces (body model files given) after checking that every frame has the same vertex count;
        :attr:`faces_kind` and :attr:`first` say which template and frame, for the base class's index check."""
        counts = {stem: int(np.load(path, mmap_mode="r").shape[0]) for stem, path in self.out.items()}
        self.first = first = next(iter(counts))
        for stem, count in counts.items():
            if count != counts[first]:
                raise HumanDataError(f"{self.path(stem)}: person has {count} vertices but frame {first} has "
                                     f"{counts[first]}; every frame must use the same template")
        if self.config.body_model_dir is None:
            return None
        kind = self.kind
        if kind is None:  # vertices: the template of that size (or the type named by --body-model-type)
            kind = self.config.body_model_type if self.config.body_model_type != "auto" else \
                TEMPLATE_SIZES.get(counts[first])
            if kind is None:
                CONSOLE.log(f"{self.name}: {counts[first]} proxy vertices match no SMPL/SMPL-X template; no faces "
                            "(visibility uses vertex splats)")
                return None
        self.faces_kind = kind
        return self.models.faces(kind)


def _few_pixels_off(size: Tuple[int, int], expected: Tuple[int, int]) -> bool:
    """Whether an image of ``size`` is one of ``expected`` with a few pixels more or less (up to 4 or 1 % per side),
    not a resized one."""
    return tuple(size) != tuple(expected) and all(abs(a - b) <= max(4.0, 0.01 * b) for a, b in zip(size, expected))


class _NoPerson(Exception):
    """The chosen person is not in a frame's fit file (that frame has no fit)."""


def _order(stem: str) -> Tuple[int, object]:
    return (0, int(stem)) if stem.isdigit() else (1, stem)


def _frame_id(stem: str, position: int) -> int:
    return int(stem) if stem.isdigit() else position


def _image_suffix(folder: Path, stem: str) -> str:
    for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
        if (folder / f"{stem}{suffix}").is_file():
            return suffix
    raise HumanDataError(f"{folder / stem}.jpg: image file is missing (also looked for .png)")


def is_capture(folder: Path) -> bool:
    """A folder with EasyMocap's ``intri.yml`` and ``extri.yml``."""
    return (folder / "intri.yml").is_file() and (folder / "extri.yml").is_file()
