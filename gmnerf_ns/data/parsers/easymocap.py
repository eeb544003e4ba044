"""Your own multi-view capture, laid out the way EasyMocap writes it, onto the shared human records.

Layout (one capture folder = one subject; a folder of capture folders = several subjects)::

    <capture>/intri.yml, extri.yml         # OpenCV FileStorage YAML: names, K_/dist_/H_/W_<cam>; R_ (Rodrigues) or
                                           # Rot_ (3x3) and T_<cam> (metres), world-to-camera, OpenCV axes
    <capture>/images/<cam>/<frame>.jpg     # (or .png)
    <capture>/mask/<cam>/<frame>.png       # or masks/ (--mask-dir); foreground > 127 (--mask-threshold)
    <capture>/output*/smpl/<frame>.json    # [{id, Rh, Th, poses, shapes[, expression, handl, handr]}, ...]
    <capture>/output*/vertices/<frame>.json  # [{id, vertices}, ...]

Cameras are read as EasyMocap reads them (zju3dv/EasyMocap ``easymocap/mytools/camera_utils.py`` ``read_camera``):
``names`` from ``intri.yml`` (else ``extri.yml``), ``R_<cam>`` as a Rodrigues vector (``Rot_<cam>`` when there is
none), ``dist_<cam>`` or ``D_<cam>``. Cameras only one of the two files calibrates (the extrinsics of a subset) are
skipped with one warning. The image defines a camera's size: images a few pixels off the calibrated (``W_/H_``) or
the rig's common size are reported and cut to it, not silently padded. Bodies are either posed from the
SMPL/SMPL-H/SMPL-X parameters with the user's model files (``--body-model-dir``; EasyMocap's ``V = R(Rh) X + Th``, see
``_body_models.py``) or read from ``vertices/`` when no model files are given. Posed proxies are written once to a cache (``_derived.py``). Parsing reads the camera files, one
image header per camera and the fits of the sampled frames.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ClassVar, Dict, List, Literal, NamedTuple, Optional, Tuple, Type

import cv2
import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import FrameRecord, SubjectRecord, ViewRecord, check_camera
from gmnerf_ns.data.parsers.base import HumanDataParser, HumanDataParserConfig
from gmnerf_ns.data.protocol import FrameSampling

from ._body_models import (
    TEMPLATE_SIZES,
    BodyModels,
    easymocap_params,
    easymocap_vertices,
    read_person_list,
)
from ._derived import DerivedFiles, common_frame
from ._files import DatasetFolder, image_size, subject_folders, warn
from ._layouts import EASYMOCAP, explain_no_subjects, is_capture

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_DIRS = ("mask", "masks", "mask-schp")
"""Mask folders tried in this order when ``--mask-dir`` is not given."""


class Camera(NamedTuple):
    """One camera of ``intri.yml``/``extri.yml``; K in the file's (OpenCV) pixel convention."""

    name: str
    K: np.ndarray
    dist: Optional[np.ndarray]
    R: np.ndarray
    T: np.ndarray
    size: Optional[Tuple[int, int]]
    """(W, H) from ``W_<cam>``/``H_<cam>``, when written."""


@dataclass
class EasyMocapDataParserConfig(HumanDataParserConfig):
    """A capture in EasyMocap's layout (intri.yml, extri.yml, images/, mask/, output*/smpl or output*/vertices)."""

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
    body_model_dir: Optional[Path] = None
    """Your SMPL/SMPL-H/SMPL-X model files, laid out as smplx expects (smpl/SMPL_NEUTRAL.pkl, smplx/SMPLX_NEUTRAL.npz);
    needed to pose output*/smpl fits. Without it the vertices in output*/vertices are used."""
    body_model_type: Literal["auto", "smpl", "smplh", "smplx"] = "auto"
    """Body model of the fits; auto = from the pose length (EasyMocap's layouts, see _body_models.py)."""
    gender: Literal["neutral", "male", "female"] = "neutral"
    """Which model file (EasyMocap fits with the neutral model by default)."""
    person_id: Optional[int] = None
    """The person to use in a multi-person capture; None = the smallest id."""
    undistort: bool = True
    """Undistort images and masks with dist_<cam> (EasyMocap captures are stored raw)."""
    opencv_pixel_centres: bool = True
    """intri.yml is an OpenCV calibration (pixel centres at integers); cx, cy get +0.5 for our records' convention."""
    cache_dir: Optional[Path] = None
    """Where posed proxies are cached; None = $XDG_CACHE_HOME/gmnerf_ns/proxies (~/.cache)."""


class EasyMocapDataParser(HumanDataParser):
    """Maps EasyMocap capture folders onto :class:`SubjectRecord`."""

    config: EasyMocapDataParserConfig

    def find_subjects(self, root: Path) -> Dict[str, Path]:
        found = subject_folders(root, is_capture)
        if not found:
            explain_no_subjects(root, self.config.same_layout, "no EasyMocap capture (intri.yml and extri.yml)")
        return found

    def parse_subject(self, name: str, folder: Path, frames: FrameSampling, resolution: int) -> SubjectRecord:
        cameras = read_cameras(folder / "intri.yml", folder / "extri.yml", self.protocol.num_input_views + 1)
        image_dirs, inside = [], DatasetFolder(folder)  # camera names may not lead out of the capture folder
        for cam in cameras:
            path = inside.check(folder / "images" / cam.name, folder / "intri.yml", f"camera {cam.name!r} folder")
            if not path.is_dir():
                raise HumanDataError(f"{path}: no image folder for camera {cam.name!r}, which intri.yml lists in "
                                     "'names'")
            image_dirs.append(path)
        mask_dir = self._mask_dir(folder)
        stems = sorted((p.stem for p in image_dirs[0].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_order)
        if not stems:
            raise HumanDataError(f"{image_dirs[0]}: no images (<frame>.jpg or .png)")
        sampled = frames.select(stems)
        if not sampled:
            raise HumanDataError(f"{folder}: frame sampling {frames} selects none of its {len(stems)} frames")

        suffixes = [_image_suffix(d, sampled[0]) for d in image_dirs]
        sizes = [image_size(inside.check(d / f"{sampled[0]}{s}", what="image")) for d, s in zip(image_dirs, suffixes)]
        sizes = self._used_sizes(cameras, sizes, folder)
        Ks = [self._intrinsics(cam, size, folder / "intri.yml") for cam, size in zip(cameras, sizes)]
        out_size, crops = common_frame(sizes, resolution)  # crops from (0, 0): the used part starts there

        fits = self._fits(folder, name)
        records, missing = [], []
        for stem in sampled:
            images = [d / f"{stem}{s}" for d, s in zip(image_dirs, suffixes)]
            lost = [p for p in images if not p.is_file()]
            if lost:
                missing.append(f"frame {stem} ({lost[0]})")
                continue
            for cam, image in zip(cameras, images):
                for path, what in ((image, "image"), (mask_dir / cam.name / f"{stem}.png", "mask"),
                                   (mask_dir / cam.name / f"{stem}.jpg", "mask")):
                    inside.check(path, what=what)
            views = tuple(
                ViewRecord(image_path=image, mask_paths=(mask_dir / cam.name / f"{stem}.png",
                                                         mask_dir / cam.name / f"{stem}.jpg"),
                           K=K, R=cam.R, T=cam.T, camera_name=cam.name, out_size=out_size,
                           dist=cam.dist if self.config.undistort else None, crop=crop,
                           mask_threshold=self.config.mask_threshold)
                for cam, image, K, crop in zip(cameras, images, Ks, crops)
            )
            records.append((stem, views))
        if missing:
            warn(f"{folder}: skipped {len(missing)} frame(s) with missing images, e.g. {missing[0]}")
        proxies, faces = fits.proxies([stem for stem, _ in records])
        position = {stem: i for i, stem in enumerate(stems)}
        frames_out = tuple(FrameRecord(subject=name, frame_id=_frame_id(stem, position[stem]), views=views,
                                       vertices_path=proxies[stem])
                           for stem, views in records if stem in proxies)
        if not frames_out:
            raise HumanDataError(f"{folder}: no sampled frame has both its images and a body fit")
        return SubjectRecord(name=name, camera_names=tuple(c.name for c in cameras), frames=frames_out, faces=faces)

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

    def proxies(self, stems: List[str]) -> Tuple[Dict[str, Path], Optional[np.ndarray]]:
        """({stem: cached vertices file} for the frames with a fit of the chosen person, faces or None)."""
        present = [s for s in stems if self.path(s).is_file()]
        if not present:
            raise HumanDataError(f"{self.fit_dir}: no sampled frame has a fit (looked for <frame>.json, e.g. "
                                 f"{self.path(stems[0]) if stems else self.fit_dir}); "
                                 f"{'no frame has its images' if not stems else 'run EasyMocap on these frames'}")
        people = read_person_list(self.path(present[0]), f"EasyMocap {self.mode}")
        ids = sorted({p["id"] for p in people})
        person = self.config.person_id if self.config.person_id is not None else (ids[0] if ids else 0)
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

        out: Dict[str, Path] = {}
        unfit: List[str] = []
        for stem in stems:
            fit = self.path(stem)
            if not fit.is_file():
                unfit.append(f"frame {stem} ({fit.name} missing)")
                continue
            try:
                out[stem] = cache.vertices(stem, [fit, *model_sources], partial(self._posed, fit, person))
            except _NoPerson:
                unfit.append(f"frame {stem} (no person {person} in {fit.name})")
        if unfit:
            warn(f"{self.fit_dir}: {len(unfit)} of {len(stems)} frame(s) have no fit for person {person} and are "
                 f"skipped, e.g. {unfit[0]}")
        if not out:
            raise HumanDataError(f"{self.fit_dir}: no sampled frame has a fit for person {person}")
        return out, self._faces(out, kind)

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

    def _faces(self, proxies: Dict[str, Path], kind: Optional[str]) -> Optional[np.ndarray]:
        """The template's faces (body model files given), checked against every frame's vertex count."""
        counts = {stem: int(np.load(path, mmap_mode="r").shape[0]) for stem, path in proxies.items()}
        first = next(iter(counts))
        for stem, count in counts.items():
            if count != counts[first]:
                raise HumanDataError(f"{self.path(stem)}: person has {count} vertices but frame {first} has "
                                     f"{counts[first]}; every frame must use the same template")
        if self.config.body_model_dir is None:
            return None
        if kind is None:  # vertices: the template of that size (or the type named by --body-model-type)
            kind = self.config.body_model_type if self.config.body_model_type != "auto" else \
                TEMPLATE_SIZES.get(counts[first])
            if kind is None:
                CONSOLE.log(f"{self.name}: {counts[first]} proxy vertices match no SMPL/SMPL-X template; no faces "
                            "(visibility uses vertex splats)")
                return None
        faces = self.models.faces(kind)
        if faces.size and int(faces.max()) >= counts[first]:
            raise HumanDataError(f"{self.path(first)}: {counts[first]} vertices, but the {kind.upper()} faces of "
                                 f"{self.models.path(kind)} index {int(faces.max()) + 1}")
        return faces


def _few_pixels_off(size: Tuple[int, int], expected: Tuple[int, int]) -> bool:
    """Whether an image of ``size`` is one of ``expected`` with a few pixels more or less (up to 4 or 1 % per side),
    not a resized one."""
    return tuple(size) != tuple(expected) and all(abs(a - b) <= max(4.0, 0.01 * b) for a, b in zip(size, expected))


class _NoPerson(Exception):
    """The chosen person is not in a frame's fit file (that frame has no fit)."""


def read_cameras(intri: Path, extri: Path, min_cameras: int = 1) -> List[Camera]:
    """The cameras of ``intri.yml``/``extri.yml`` in ``names`` order (EasyMocap's ``read_camera``).

    ``names`` is read from ``intri.yml`` (else ``extri.yml``; names only the other file lists come after). A camera
    that only one file calibrates (EasyMocap after calibrating the extrinsics of a subset) is skipped, with one warning
    naming them all; an error when fewer than ``min_cameras`` remain.
    """
    intri_fs, extri_fs = _open(intri), _open(extri)
    try:
        names = _names(intri_fs, intri, extri_fs, extri)
        cameras, no_intri, no_extri = [], [], []
        for cam in names:
            if not _has(intri_fs, f"K_{cam}"):
                no_intri.append(cam)
                continue
            if not any(_has(extri_fs, f"{key}_{cam}") for key in ("R", "Rot", "T")):
                no_extri.append(cam)
                continue
            cameras.append(_camera(cam, intri_fs, intri, extri_fs, extri))
    finally:
        intri_fs.release()
        extri_fs.release()
    if no_intri or no_extri:
        skipped = "; ".join(f"{_compact(missing)} (no {what})" for missing, what in (
            (no_extri, f"R_/T_ in {extri.name}"), (no_intri, f"K_ in {intri.name}")) if missing)
        if len(cameras) < min_cameras:
            raise HumanDataError(f"{intri.parent}: only {len(cameras)} of {len(names)} cameras are in both "
                                 f"{intri.name} and {extri.name}, fewer than the {min_cameras} needed (the protocol's "
                                 f"source views + 1); without a calibration: {skipped}")
        warn(f"{intri.parent}: using the {len(cameras)} of {len(names)} cameras calibrated in both {intri.name} and "
             f"{extri.name}; skipped {len(no_intri) + len(no_extri)}: {skipped}")
    return cameras


def _camera(cam: str, intri_fs: "cv2.FileStorage", intri: Path, extri_fs: "cv2.FileStorage", extri: Path) -> Camera:
    """One camera that both files calibrate."""
    K = _matrix(intri_fs, f"K_{cam}", intri, (3, 3))
    dist = _matrix(intri_fs, f"dist_{cam}", intri)
    if dist is None:
        dist = _matrix(intri_fs, f"D_{cam}", intri)
    if dist is not None:
        dist = dist.reshape(-1)
        if dist.size not in (4, 5, 8, 12, 14):
            raise HumanDataError(f"{intri}: dist_{cam} has {dist.size} coefficients, expected 5 (OpenCV)")
        dist = dist if np.any(dist) else None
    width, height = _int(intri_fs, f"W_{cam}"), _int(intri_fs, f"H_{cam}")
    rvec = _matrix(extri_fs, f"R_{cam}", extri)
    if rvec is not None and rvec.size == 3:
        R = cv2.Rodrigues(rvec.reshape(3, 1))[0]
    elif rvec is not None and rvec.size == 9:
        R = rvec.reshape(3, 3)
    else:
        R = _matrix(extri_fs, f"Rot_{cam}", extri, (3, 3))
    T = _matrix(extri_fs, f"T_{cam}", extri)
    if R is None or T is None:
        missing = " and ".join(k for k, v in ((f"R_{cam} (or Rot_{cam})", R), (f"T_{cam}", T)) if v is None)
        raise HumanDataError(f"{extri}: camera {cam!r} (listed in {intri.name} names) has no {missing}")
    K, R, T = check_camera(K, R, T, f"{extri} camera {cam!r}")
    size = (width, height) if width and height and width > 0 and height > 0 else None
    return Camera(cam, K, dist, R, T, size)


def _compact(names: List[str], limit: int = 12) -> str:
    """``1-10, 12, 14-23``: runs of consecutive numbers collapsed, at most ``limit`` items then how many more."""
    items: List[str] = []
    start = prev = None
    for name in names + [None]:
        if name is not None and prev is not None and name.isdigit() and prev.isdigit() and int(name) == int(prev) + 1:
            prev = name
            continue
        if start is not None:
            items.append(start if start == prev else f"{start}-{prev}")
        start = prev = name
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _open(path: Path) -> "cv2.FileStorage":
    if not path.is_file():
        raise HumanDataError(f"{path}: camera file is missing")
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except cv2.error as err:
        raise HumanDataError(f"{path}: not an OpenCV FileStorage YAML file ({str(err).strip().splitlines()[-1]})"
                             ) from err
    if not fs.isOpened():
        raise HumanDataError(f"{path}: cannot open it as an OpenCV FileStorage YAML file")
    return fs


def _names(intri_fs: "cv2.FileStorage", intri: Path, extri_fs: "cv2.FileStorage", extri: Path) -> List[str]:
    """``names`` of ``intri.yml`` then the ones only ``extri.yml`` lists (either file may hold the list)."""
    names = _name_list(intri_fs, intri)
    names += [n for n in _name_list(extri_fs, extri) if n not in names]
    if not names:
        raise HumanDataError(f"{intri}: no 'names' list of cameras (nor in {extri.name})")
    return names


def _name_list(fs: "cv2.FileStorage", path: Path) -> List[str]:
    node = fs.getNode("names")
    if node.empty() or node.isNone():
        return []
    if not node.isSeq():
        raise HumanDataError(f"{path}: 'names' should be a list of camera names")
    names = []
    for i in range(node.size()):
        item = node.at(i)
        value = item.string() if item.isString() else str(int(item.real()))
        if value != "none":  # EasyMocap skips placeholder entries
            names.append(value)
    return names


def _has(fs: "cv2.FileStorage", key: str) -> bool:
    node = fs.getNode(key)
    return not (node.empty() or node.isNone())


def _matrix(fs: "cv2.FileStorage", key: str, path: Path, shape: Optional[Tuple[int, int]] = None
            ) -> Optional[np.ndarray]:
    node = fs.getNode(key)
    if node.empty() or node.isNone():
        return None
    value = node.mat()
    if value is None:
        raise HumanDataError(f"{path}: {key} is not an !!opencv-matrix")
    value = np.asarray(value, dtype=np.float64)
    if shape is not None and value.shape != shape:
        raise HumanDataError(f"{path}: {key} has shape {value.shape}, expected {shape[0]}x{shape[1]}")
    if not np.isfinite(value).all():
        raise HumanDataError(f"{path}: {key} contains NaN or inf")
    return value


def _int(fs: "cv2.FileStorage", key: str) -> Optional[int]:
    node = fs.getNode(key)
    return None if node.empty() or node.isNone() else int(node.real())


def _order(stem: str) -> Tuple[int, object]:
    return (0, int(stem)) if stem.isdigit() else (1, stem)


def _frame_id(stem: str, position: int) -> int:
    return int(stem) if stem.isdigit() else position


def _image_suffix(folder: Path, stem: str) -> str:
    for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
        if (folder / f"{stem}{suffix}").is_file():
            return suffix
    raise HumanDataError(f"{folder / stem}.jpg: image file is missing (also looked for .png)")
