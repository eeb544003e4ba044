"""Which dataset a folder is laid out as, asked of the dataset parsers, and spoken of by dataset name.

Each dataset's parser config says whether a folder is laid out as its dataset (:meth:`HumanDataParserConfig.detect`);
:func:`detect_folder` asks them in :data:`DETECTION_ORDER`, for gmnerf-auto (gmnerf_ns/data/parsers/auto.py) and for
the parsers' errors that name another dataset. A dataset is its subcommand (``ns-train gm-nerf <subcommand>``, e.g.
``genebody``) with a label for messages (:data:`LABELS`). The configs are found through
:data:`~gmnerf_ns.data.parsers.base.DATASET_CONFIGS`, so this module imports no parser and every parser may import it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Collection, List, Optional, Tuple

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.parsers.base import DATA_ROOT_ENV, DATASET_CONFIGS

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

DETECTION_ORDER = (SYNTHETIC, THUMAN2, MULTIGARMENT, GENEBODY, EASYMOCAP, HUMMAN, MVHUMANNET, DNA_RENDERING, ZJU)
"""The order the datasets are asked: the files of a root (split.json, genebody_split.npy) first, the built-in data
before ZJU-MoCap (whose layout it extends), ZJU-MoCap last."""


def has_camera_folders(folder: Path) -> bool:
    """A folder with ZJU-MoCap's camera folders (``Camera_B<n>``, ``Camera (<n>)``)."""
    return folder.is_dir() and any(p.is_dir() and CAMERA_FOLDER.match(p.name) for p in folder.iterdir())


NEAR_MISSES = (
    (EASYMOCAP, ("intri.yml",), ("extri.yml",), "an EasyMocap capture"),
    (EASYMOCAP, ("extri.yml",), ("intri.yml",), "an EasyMocap capture"),
    (HUMMAN, ("kinect_color/",), ("cameras.json",), "a HuMMan sequence"),
    (MVHUMANNET, ("camera_extrinsics.json",), ("camera_scale.pkl",), "an MVHumanNet outfit"),
    (GENEBODY, ("annots.npy", "image/"), ("mask/", "smpl/"), "a GeneBody subject"),
)
"""Layouts missing a file: (dataset, what a folder has that tells the dataset, what its parser also needs, what the
folder would be)."""

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
    """(dataset, why) of an existing ``folder`` (``--data`` ``data``): the first dataset of :data:`DETECTION_ORDER`
    that detects the folder itself, else the first that detects one of its sub-folders (in name order) as a subject;
    raises :class:`HumanDataError` naming a missing file of a layout, or what was looked for."""
    configs = [DATASET_CONFIGS[name] for name in DETECTION_ORDER]
    for config in configs:
        why = config.detect(folder)
        if why:
            return config.dataset, why
    for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
        for config in configs if sub.is_dir() else ():
            why = config.detect_subject(sub)
            if why:
                return config.dataset, why
    subjects = annots_subjects(folder)
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


def annots_subjects(folder: Path) -> List[Path]:
    """``folder`` if it is a subject of the ZJU-MoCap-like layouts (has annots.npy), else its sub-folders that are."""
    if (folder / "annots.npy").is_file():
        return [folder]
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_dir() and (p / "annots.npy").is_file()]
