"""Multi-garment (MGN) scans rendered by ``scripts/render_scans.py multigarment`` into our built-in layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Tuple, Type

from ._layouts import MULTIGARMENT, SYNTHETIC, ZJU
from .synthetic import SyntheticDataParser, SyntheticDataParserConfig


@dataclass
class MultiGarmentDataParserConfig(SyntheticDataParserConfig):
    """Multi-garment scans rendered on our perspective ring, SMPL proxy from registration.pkl; split from split.json."""

    dataset: ClassVar[str] = MULTIGARMENT
    same_layout: ClassVar[Tuple[str, ...]] = (ZJU, SYNTHETIC, MULTIGARMENT)
    """Datasets laid out as this parser reads them (see _layouts.other_dataset): not THuman2.0 renders."""
    _target: Type = field(default_factory=lambda: MultiGarmentDataParser)
    data: Path = Path("multigarment_render")
    """Output folder of render_scans.py multigarment (a short name resolves against $GMNERF_DATA, default ./data)."""
    protocol: str = "multigarment"
    """Protocol preset (ours: see docs/datasets.md) or a YAML path."""


class MultiGarmentDataParser(SyntheticDataParser):
    """Reads rendered Multi-garment scans (the built-in layout: one frame per subject)."""

    missing_hint = ("render the scans first: python scripts/render_scans.py multigarment --scans "
                    "Multi-Garment_dataset --body-model-dir <models> --output data/multigarment_render")
