"""The default dataparser: tells from ``--data`` which dataset it is and hands over to that dataset's parser.

So ``ns-train gm-nerf --data zju/313`` works without naming the dataparser. In this order:

1. ``--data`` exists as given: its folder layout is detected (below).
2. Its first part is a dataset's short name (``zju/<id>``, ``genebody[/<subject>]``, ``synthetic``,
   ``thuman2_render``, ``multigarment_render``: each parser's default ``--data``): that parser, which resolves the
   name against ``$GMNERF_DATA`` (default ./data) as usual.
3. It exists under ``$GMNERF_DATA``: its folder layout is detected.

Layouts (a dataset root or one subject folder; files are only stat-ed, plus one ``subject.json``):

* built-in (``gmnerf-synth``, ``gmnerf-render-scans``): ``split.json`` at the root, or a ZJU-layout subject with
  ``subject.json``/``body_model.npz``. ``subject.json``'s ``dataset`` (written by gmnerf-render-scans) tells rendered
  THuman2.0 and Multi-garment scans from gmnerf-synth's humans.
* GeneBody: ``genebody_split.npy`` at the root, or subjects with ``annots.npy`` and ``image/``, ``mask/``, ``smpl/``.
* ZJU-MoCap: subjects with ``annots.npy`` and ``Camera_B<n>``/``Camera (<n>)`` folders.
* Marked by a file of their own, in the folder or its sub-folders: EasyMocap captures (your own rig: ``intri.yml`` +
  ``extri.yml``), HuMMan sequences (``cameras.json`` + ``kinect_color/``), MVHumanNet outfits
  (``camera_extrinsics.json`` + ``camera_scale.pkl``), DNA-Rendering (``main/*.smc``, ``*.smc``, or one ``.smc``).

A folder laid out as one of these but lacking a file its parser needs (an MVHumanNet outfit without
``camera_scale.pkl``, a GeneBody subject without ``smpl/``) is reported as that missing file; a parser pointed at
another dataset's folder says which dataset it looks like (:func:`other_dataset`).

The detected dataset's parser gets the shared options (``--data``, ``--protocol``, subject lists, ``--resolution``,
``--num-input-views``, ``--max-eval-frames-per-subject``) and its own defaults for the rest; its own options need
its subcommand (``ns-train gm-nerf zju-mocap --help``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple, Type

from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.data.human_dataparser import (
    DATA_ROOT_ENV,
    HumanDataParser,
    HumanDataParserConfig,
    data_root,
    existing_data_path,
)
from gmnerf_ns.data.human_record import HumanDataError

from .dnarendering import DNARenderingDataParserConfig, is_dna_rendering
from .easymocap import EasyMocapDataParserConfig, is_capture
from .genebody import GeneBodyDataParserConfig
from .humman import HuMManDataParserConfig, is_sequence
from .multigarment import MultiGarmentDataParserConfig
from .mvhumannet import MVHumanNetDataParserConfig, is_outfit
from .synthetic import SyntheticDataParserConfig
from .thuman2 import THuman2DataParserConfig
from .zju_mocap import CAMERA_FOLDER, ZJUMocapDataParserConfig, zju_short_name


class Dataset(NamedTuple):
    subcommand: str
    """The dataset's own dataparser (``ns-train gm-nerf <subcommand>``)."""
    config: Type[HumanDataParserConfig]
    label: str


ZJU = Dataset("zju-mocap", ZJUMocapDataParserConfig, "ZJU-MoCap")
GENEBODY = Dataset("genebody", GeneBodyDataParserConfig, "GeneBody")
SYNTHETIC = Dataset("gmnerf-synthetic", SyntheticDataParserConfig, "built-in synthetic humans (gmnerf-synth)")
THUMAN2 = Dataset("thuman2", THuman2DataParserConfig, "THuman2.0 renders (gmnerf-render-scans)")
MULTIGARMENT = Dataset("multi-garment", MultiGarmentDataParserConfig, "Multi-garment renders (gmnerf-render-scans)")
EASYMOCAP = Dataset("easymocap", EasyMocapDataParserConfig, "a capture in EasyMocap's layout")
HUMMAN = Dataset("humman", HuMManDataParserConfig, "HuMMan-Recon")
MVHUMANNET = Dataset("mvhumannet", MVHumanNetDataParserConfig, "MVHumanNet")
DNA_RENDERING = Dataset("dna-rendering", DNARenderingDataParserConfig, "DNA-Rendering")
DATASETS = (ZJU, GENEBODY, SYNTHETIC, THUMAN2, MULTIGARMENT, EASYMOCAP, HUMMAN, MVHUMANNET, DNA_RENDERING)

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


@dataclass
class AutoDataParserConfig(HumanDataParserConfig):
    """Detects the dataset from --data and uses its dataparser (see dataparsers/auto.py); default of the gm-nerf
    methods."""

    _target: Type = field(default_factory=lambda: HumanDataParser)
    """Not instantiated: :meth:`setup` returns the detected dataset's parser (tyro wants a class here)."""
    data: Path = Path("synthetic")
    """zju/<id>, genebody[/<subject>], synthetic, thuman2_render, multigarment_render (under $GMNERF_DATA, default
    ./data), or a dataset / subject folder, whose layout tells the dataset."""
    protocol: Optional[str] = None
    """Protocol preset or YAML path (None = the detected dataset's default)."""
    body_model_dir: Optional[Path] = None
    """Your SMPL/SMPL-X model files, for datasets that ship fitted parameters (EasyMocap smpl/, HuMMan, DNA-Rendering,
    MVHumanNet); passed on to the detected dataset's parser."""

    def detect(self) -> Tuple[HumanDataParserConfig, Dataset, str]:
        """(the detected dataset's parser config with the shared options copied, the dataset, why it was chosen)."""
        dataset, why = detect_dataset(Path(self.data))
        config = dataset.config()
        for f in fields(HumanDataParserConfig):
            value = getattr(self, f.name)
            if f.name != "_target" and not (f.name == "protocol" and value is None):
                setattr(config, f.name, value)
        if self.body_model_dir is not None and hasattr(config, "body_model_dir"):
            config.body_model_dir = self.body_model_dir
        return config, dataset, why

    def setup(self, **kwargs) -> HumanDataParser:
        """The detected dataset's dataparser."""
        config, dataset, why = self.detect()
        CONSOLE.log(f"[bold]--data {self.data}[/bold]: {dataset.label} ({why}); using the {dataset.subcommand} "
                    f"dataparser (its own options: ns-train <method> {dataset.subcommand} --help)")
        return config.setup(**kwargs)


def detect_dataset(data: Path) -> Tuple[Dataset, str]:
    """The dataset ``--data`` names and why; raises :class:`HumanDataError` saying what was looked for."""
    path = Path(data)
    if path.exists():
        return _detect_folder(path, data)
    zju = zju_short_name(path)
    if zju is not None:
        return ZJU, f"short name zju/... = {zju}"
    for dataset in DATASETS:
        short = Path(dataset.config.data)
        if path.parts and path.parts[0] == short.parts[0]:
            return dataset, f"short name {short} = {data_root() / path}"
    found = existing_data_path(path)
    if found is not None:
        return _detect_folder(found, data)
    for parent in path.parents:  # a missing subject of an existing dataset: its parser lists the available ones
        if parent != Path(".") and parent.is_dir():
            try:
                dataset, why = _detect_folder(parent, data)
            except HumanDataError:
                break
            return dataset, f"{path.name} is not in {parent}, which is {why}"
    names = ", ".join(["zju/<id>"] + [str(d.config.data) for d in DATASETS if d is not ZJU])
    raise HumanDataError(f"--data {data}: no such folder (also looked in {data_root() / path}; set ${DATA_ROOT_ENV} "
                         f"to your data root) and not a dataset short name ({names}). {_explicit()}")


def _detect_folder(folder: Path, data: Path) -> Tuple[Dataset, str]:
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
                         + "; ".join(LOOKED_FOR) + f". {_explicit()}")


def _near_miss(folder: Path, config: Optional[HumanDataParserConfig] = None
               ) -> Optional[Tuple[Dataset, Path, List[str], Tuple[str, ...], str]]:
    """(dataset, folder, missing files, files it has, what it would be) for ``folder`` or the first sub-folder that
    has the files telling a dataset (:data:`NEAR_MISSES`; only ``config``'s, if given) but lacks one its parser
    needs."""
    folder = Path(folder)
    candidates = [folder] + (sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else [])
    for candidate in candidates:
        for dataset, tells, needs, noun in NEAR_MISSES:
            if config is not None and not _same_layout(config, dataset):
                continue
            if all(_has(candidate, name) for name in tells):
                missing = [name for name in needs if not _has(candidate, name)]
                if missing:
                    return dataset, candidate, missing, tells, noun
    return None


def near_miss(folder: Path, config: Optional[HumanDataParserConfig] = None) -> Optional[str]:
    """``"<folder>/camera_scale.pkl: file not found; ..."`` when ``folder`` (or a sub-folder) is laid out as a dataset
    (``config``'s, if given) but lacks a file its parser needs (an incomplete download or copy), else None."""
    found = _near_miss(folder, config)
    if found is None:
        return None
    dataset, candidate, missing, tells, noun = found
    return (f"{candidate / missing[0]}: {'folder' if missing[0].endswith('/') else 'file'} not found; "
            f"{candidate.name}/ has {', '.join(tells)} like {noun}, which also needs {', '.join(missing)} (an "
            "incomplete download or copy?)")


def looks_like(folder: Path) -> Optional[Tuple[Dataset, str]]:
    """(dataset, why) of ``folder`` by the layout rules above (also a layout that lacks a file), or None; never
    raises. For parsers whose own layout check failed: they may have been pointed at another dataset."""
    try:
        return _detect_folder(Path(folder), Path(folder))
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


def other_dataset(folder: Path, config: HumanDataParserConfig) -> str:
    """``"; <folder> looks like GeneBody (<why>): ..."`` when ``folder`` is laid out as another dataset than the one
    ``config``'s parser reads (for that parser's error), else ``""``."""
    found = looks_like(folder)
    if found is None:
        return ""
    dataset, why = found
    if _same_layout(config, dataset):
        return ""
    return (f"; {folder} looks like {dataset.label} ({why}): use ns-train gm-nerf {dataset.subcommand} --data ..., or "
            "leave the dataparser out to detect it")


def _same_layout(config: HumanDataParserConfig, dataset: Dataset) -> bool:
    """Whether ``config``'s parser reads ``dataset`` (its own, or a parser of the same layout: ZJU and built-in)."""
    return issubclass(type(config), dataset.config) or issubclass(dataset.config, type(config))


def _has(folder: Path, name: str) -> bool:
    return (folder / name).is_dir() if name.endswith("/") else (folder / name).is_file()


def _subjects(folder: Path) -> List[Path]:
    """``folder`` if it is a subject (has annots.npy), else its sub-folders that are."""
    if (folder / "annots.npy").is_file():
        return [folder]
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_dir() and (p / "annots.npy").is_file()]


def _built_in(subjects: List[Path], why: str) -> Tuple[Dataset, str]:
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


def _explicit() -> str:
    return ("Or name the dataset: " + ", ".join(f"ns-train gm-nerf {d.subcommand} --data ..." for d in DATASETS))
