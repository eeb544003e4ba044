"""Which dataset a folder is laid out as, told by its files and spoken of by dataset name.

The rules gmnerf-auto detects ``--data`` by (listed in gmnerf_ns/data/parsers/auto.py) and the parsers use to name
another dataset in their errors. A dataset is its subcommand (``ns-train gm-nerf <subcommand>``, e.g. ``genebody``)
with a label for messages (:data:`LABELS`); auto.py maps the names to parser configs. So this module imports no parser
and every parser may import it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Collection, List, Optional, Tuple

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.parsers.base import DATA_ROOT_ENV

ZJU = "zju-mocap"
GENEBODY = "genebody"
SYNTHETIC = "gmnerf-synthetic"
THUMAN2 = "thuman2"
MULTIGARMENT = "multi-garment"
EASYMOCAP = "easymocap"
HUMMAN = "humman"
MVHUMANNET = "mvhumannet"
DNA_RENDERING = "dna-rendering"

LABELS = {
    ZJU: "ZJU-MoCap",
    GENEBODY: "GeneBody",
    SYNTHETIC: "built-in synthetic humans (gmnerf-synth)",
    THUMAN2: "THuman2.0 renders (gmnerf-render-scans)",
    MULTIGARMENT: "Multi-garment renders (gmnerf-render-scans)",
    EASYMOCAP: "a capture in EasyMocap's layout",
    HUMMAN: "HuMMan-Recon",
    MVHUMANNET: "MVHumanNet",
    DNA_RENDERING: "DNA-Rendering",
}
"""Each dataset's subcommand and label, in the order messages list them."""

ZJU_LAYOUT = (ZJU, SYNTHETIC, THUMAN2, MULTIGARMENT)
"""ZJU-MoCap's layout, which gmnerf-synth and gmnerf-render-scans also write."""

CAMERA_FOLDER = re.compile(r"^Camera(?:_B| \()(\d+)\)?$")
"""ZJU-MoCap's ``Camera_B7`` or ``Camera (7)``; the number is 1-based."""


def is_capture(folder: Path) -> bool:
    """A folder with EasyMocap's ``intri.yml`` and ``extri.yml``."""
    return (folder / "intri.yml").is_file() and (folder / "extri.yml").is_file()


def is_sequence(folder: Path) -> bool:
    """A HuMMan-Recon sequence folder: ``cameras.json`` and ``kinect_color/``."""
    return (folder / "cameras.json").is_file() and (folder / "kinect_color").is_dir()


def is_outfit(folder: Path) -> bool:
    """An MVHumanNet outfit folder: ``camera_extrinsics.json`` and ``camera_scale.pkl``."""
    return (folder / "camera_extrinsics.json").is_file() and (folder / "camera_scale.pkl").is_file()


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


MARKED = (
    (EASYMOCAP, is_capture, "intri.yml and extri.yml"),
    (HUMMAN, is_sequence, "cameras.json and kinect_color/"),
    (MVHUMANNET, is_outfit, "camera_extrinsics.json and camera_scale.pkl"),
    (DNA_RENDERING, is_dna_rendering, "DNA-Rendering .smc files"),
)
"""Layouts told by files of their own: (dataset, test of a subject folder, what the test looks for)."""

NEAR_MISSES = (
    (EASYMOCAP, ("intri.yml",), ("extri.yml",), "an EasyMocap capture"),
    (EASYMOCAP, ("extri.yml",), ("intri.yml",), "an EasyMocap capture"),
    (HUMMAN, ("kinect_color/",), ("cameras.json",), "a HuMMan sequence"),
    (MVHUMANNET, ("camera_extrinsics.json",), ("camera_scale.pkl",), "an MVHumanNet outfit"),
    (GENEBODY, ("annots.npy", "image/"), ("mask/", "smpl/"), "a GeneBody subject"),
)
"""Layouts missing a file: (dataset, what a folder has that tells the dataset, what its parser also needs, what the
folder would be)."""

RENDERED_SCANS = {"THuman2.0": THUMAN2, "Multi-garment": MULTIGARMENT}
"""``subject.json``'s ``dataset`` as gmnerf-render-scans writes it."""

LOOKED_FOR = (
    "ZJU-MoCap: <subject>/annots.npy with Camera_B<n>/ or 'Camera (<n>)'/ folders (short name zju/<id> = "
    f"${DATA_ROOT_ENV}/zju_mocap/CoreView_<id>)",
    "GeneBody: genebody_split.npy, or <subject>/annots.npy with image/, mask/, smpl/",
    "built-in (gmnerf-synth, gmnerf-render-scans): split.json, or a ZJU-layout <subject>/ with subject.json",
    "EasyMocap capture: intri.yml and extri.yml (with images/, mask/, output*/), or sub-folders holding them",
    "HuMMan-Recon: <sequence>/cameras.json with kinect_color/",
    "MVHumanNet: <outfit id>/camera_extrinsics.json with camera_scale.pkl",
    "DNA-Rendering: main/<seq>.smc with annotations/<seq>_annots.smc, <seq>.smc files, or one main .smc",
)

NAME_THE_DATASET = "Or name the dataset: " + ", ".join(f"ns-train gm-nerf {name} --data ..." for name in LABELS)
"""The way out of a failed detection, closing its message."""


def detect_folder(folder: Path, data: Path) -> Tuple[str, str]:
    """(dataset, why) of an existing ``folder`` (``--data`` ``data``); raises :class:`HumanDataError` naming a
    missing file of a layout, or what was looked for."""
    if (folder / "split.json").is_file():
        return _built_in(_subjects(folder), "split.json")
    if (folder / "genebody_split.npy").is_file():
        return GENEBODY, f"{folder}/genebody_split.npy"
    for dataset, marked, what in MARKED:
        if marked(folder):
            return dataset, f"{folder.name}/ has {what}"
    subjects = _subjects(folder)
    for subject in subjects:
        if all((subject / sub).is_dir() for sub in ("image", "mask", "smpl")):
            return GENEBODY, f"{subject.name}/ has annots.npy, image/, mask/, smpl/"
        if any(p.is_dir() and CAMERA_FOLDER.match(p.name) for p in subject.iterdir()):
            if (subject / "subject.json").is_file() or (subject / "body_model.npz").is_file():
                return _built_in([subject], f"{subject.name}/ has camera folders and subject.json or body_model.npz")
            return ZJU, f"{subject.name}/ has annots.npy and camera folders"
    for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
        for dataset, marked, what in MARKED:
            if sub.is_dir() and marked(sub):
                return dataset, f"{sub.name}/ has {what}"
    if (folder / "manifest.json").is_file() and "gmnerf-synth" in (folder / "manifest.json").read_text(errors="replace"):
        raise HumanDataError(f"--data {data}: {folder} is an incomplete gmnerf-synth dataset (manifest.json but no "
                             "split.json: generation was interrupted); rerun the same gmnerf-synth command to finish it")
    missing = near_miss(folder)
    if missing is not None:
        raise HumanDataError(f"--data {data}: {missing}")
    found = (f"{len(subjects)} folder(s) with annots.npy but neither camera folders nor image/mask/smpl"
             if subjects else "none of the files below")
    raise HumanDataError(f"--data {data}: cannot tell which dataset {folder} is ({found}). Looked for: "
                         + "; ".join(LOOKED_FOR) + f". {NAME_THE_DATASET}")


def _near_miss(folder: Path, own: Optional[Collection[str]] = None
               ) -> Optional[Tuple[str, Path, List[str], Tuple[str, ...], str]]:
    """(dataset, folder, missing files, files it has, what it would be) for ``folder`` or the first sub-folder that
    has the files telling a dataset (:data:`NEAR_MISSES`; only datasets in ``own``, if given) but lacks one its parser
    needs."""
    folder = Path(folder)
    candidates = [folder] + (sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else [])
    for candidate in candidates:
        for dataset, tells, needs, noun in NEAR_MISSES:
            if own is not None and dataset not in own:
                continue
            if all(_has(candidate, name) for name in tells):
                missing = [name for name in needs if not _has(candidate, name)]
                if missing:
                    return dataset, candidate, missing, tells, noun
    return None


def near_miss(folder: Path, own: Optional[Collection[str]] = None) -> Optional[str]:
    """``"<folder>/camera_scale.pkl: file not found; ..."`` when ``folder`` (or a sub-folder) is laid out as a dataset
    (one of ``own``, if given) but lacks a file its parser needs (an incomplete download or copy), else None."""
    found = _near_miss(folder, own)
    if found is None:
        return None
    dataset, candidate, missing, tells, noun = found
    return (f"{candidate / missing[0]}: {'folder' if missing[0].endswith('/') else 'file'} not found; "
            f"{candidate.name}/ has {', '.join(tells)} like {noun}, which also needs {', '.join(missing)} (an "
            "incomplete download or copy?)")


def looks_like(folder: Path) -> Optional[Tuple[str, str]]:
    """(dataset, why) of ``folder`` by the layout rules (also a layout that lacks a file), or None; never raises. For
    parsers whose own layout check failed: they may have been pointed at another dataset."""
    try:
        return detect_folder(Path(folder), Path(folder))
    except (HumanDataError, OSError):
        pass
    try:
        found = _near_miss(Path(folder))
    except OSError:
        return None
    if found is None:
        return None
    dataset, candidate, missing, tells, _ = found
    return dataset, f"{candidate.name}/ has {', '.join(tells)} but no {', '.join(missing)}"


def other_dataset(folder: Path, own: Collection[str]) -> str:
    """``"; <folder> looks like GeneBody (<why>): ..."`` when ``folder`` is laid out as a dataset not in ``own`` (the
    datasets whose folders the erring parser reads, its config's ``same_layout``), else ``""``."""
    found = looks_like(folder)
    if found is None:
        return ""
    dataset, why = found
    if dataset in own:
        return ""
    return (f"; {folder} looks like {LABELS[dataset]} ({why}): use ns-train gm-nerf {dataset} --data ..., or leave the "
            "dataparser out to detect it")


def explain_no_subjects(root: Path, own: Collection[str], wanted: str) -> None:
    """Raises one line when a parser whose layout is ``own`` found no subject under ``root`` and the folder tells why:
    it lacks a file its layout needs (:func:`near_miss`), or it is another dataset's (:func:`other_dataset`).
    ``wanted`` names what was looked for, e.g. "no EasyMocap capture (intri.yml and extri.yml)"."""
    problem = near_miss(root, own)
    if problem is not None:
        raise HumanDataError(problem)
    hint = other_dataset(root, own)
    if hint:
        raise HumanDataError(f"{root}: {wanted}{hint}")


def _has(folder: Path, name: str) -> bool:
    return (folder / name).is_dir() if name.endswith("/") else (folder / name).is_file()


def _subjects(folder: Path) -> List[Path]:
    """``folder`` if it is a subject (has annots.npy), else its sub-folders that are."""
    if (folder / "annots.npy").is_file():
        return [folder]
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_dir() and (p / "annots.npy").is_file()]


def _built_in(subjects: List[Path], why: str) -> Tuple[str, str]:
    """gmnerf-synth's humans, or rendered scans if the first subject.json says which dataset they came from."""
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
