"""The default dataparser: tells from ``--data`` which dataset it is and hands over to that dataset's parser.

So ``ns-train gm-nerf --data zju/313`` works without naming the dataparser. In this order:

1. ``--data`` exists as given: its folder layout is detected (below).
2. Its first part is a dataset's short name (``zju/<id>``, ``genebody[/<subject>]``, ``synthetic``,
   ``thuman2_render``, ``multigarment_render``: each parser's default ``--data``): that parser, which resolves the
   name against ``$GMNERF_DATA`` (default ./data) as usual.
3. It exists under ``$GMNERF_DATA``: its folder layout is detected.

Layouts (a dataset root or one subject folder; files are only stat-ed, plus one ``subject.json``): each dataset's
parser config says whether a folder is laid out as its dataset (``detect``), and
gmnerf_ns/data/parsers/_layouts.py asks them in a fixed order, which the parsers use too:

* built-in (``gmnerf-synth``, ``gmnerf-render-scans``): ``split.json`` at the root, or a ZJU-layout subject with
  ``subject.json``/``body_model.npz``. ``subject.json``'s ``dataset`` (written by gmnerf-render-scans) tells rendered
  THuman2.0 and Multi-garment scans from gmnerf-synth's humans.
* GeneBody: ``genebody_split.npy`` at the root, or subjects with ``annots.npy`` and ``image/``, ``mask/``, ``smpl/``.
* Marked by a file of their own, in the folder or its sub-folders: EasyMocap captures (your own rig: ``intri.yml`` +
  ``extri.yml``), HuMMan sequences (``cameras.json`` + ``kinect_color/``), MVHumanNet outfits
  (``camera_extrinsics.json`` + ``camera_scale.pkl``), DNA-Rendering (``main/*.smc``, ``*.smc``, or one ``.smc``).
* ZJU-MoCap: subjects with ``annots.npy`` and ``Camera_B<n>``/``Camera (<n>)`` folders.

A folder laid out as one of these but lacking a file its parser needs (an MVHumanNet outfit without
``camera_scale.pkl``, a GeneBody subject without ``smpl/``) is reported as that missing file; a parser pointed at
another dataset's folder says which dataset it looks like (:func:`._layouts.other_dataset`).

The detected dataset's parser gets the shared options (``--data``, ``--protocol``, subject lists, ``--resolution``,
``--num-input-views``, ``--max-eval-frames-per-subject``) and its own defaults for the rest; its own options need
its subcommand (``ns-train gm-nerf zju-mocap --help``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple, Optional, Tuple, Type

from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.parsers.base import (
    DATA_ROOT_ENV,
    DATASET_CONFIGS,
    HumanDataParser,
    HumanDataParserConfig,
    data_root,
    existing_data_path,
)

from . import _layouts
from ._layouts import LABELS, NAME_THE_DATASET, detect_folder
from .zju_mocap import zju_short_name


class Dataset(NamedTuple):
    subcommand: str
    """The dataset's own dataparser (``ns-train gm-nerf <subcommand>``), its name in :mod:`._layouts`."""
    config: Type[HumanDataParserConfig]
    label: str


DATASETS = tuple(Dataset(name, DATASET_CONFIGS[name], label) for name, label in LABELS.items())
BY_NAME = {dataset.subcommand: dataset for dataset in DATASETS}
ZJU = BY_NAME[_layouts.ZJU]


@dataclass
class AutoDataParserConfig(HumanDataParserConfig):
    """Detects the dataset from --data and uses its dataparser (see gmnerf_ns/data/parsers/auto.py); default of the
    gm-nerf methods."""

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
                         f"to your data root) and not a dataset short name ({names}). {NAME_THE_DATASET}")


def _detect_folder(folder: Path, data: Path) -> Tuple[Dataset, str]:
    name, why = detect_folder(folder, data)
    return BY_NAME[name], why
