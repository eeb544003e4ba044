"""THuman2.0 scans rendered by ``scripts/render_scans.py thuman2`` into our built-in layout (see docs/datasets.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Tuple, Type

from ._layouts import SYNTHETIC, THUMAN2, ZJU
from .synthetic import SyntheticDataParser, SyntheticDataParserConfig


@dataclass
class THuman2DataParserConfig(SyntheticDataParserConfig):
    """THuman2.0 rendered on our perspective ring, SMPL-X proxy; split from the render's split.json."""

    dataset: ClassVar[str] = THUMAN2
    same_layout: ClassVar[Tuple[str, ...]] = (ZJU, SYNTHETIC, THUMAN2)
    """Datasets laid out as this parser reads them (see _layouts.other_dataset): not Multi-garment renders."""
    _target: Type = field(default_factory=lambda: THuman2DataParser)
    data: Path = Path("thuman2_render")
    """Output folder of render_scans.py thuman2 (a short name resolves against $GMNERF_DATA, default ./data)."""
    protocol: str = "thuman2"
    """Protocol preset (ours: see docs/datasets.md) or a YAML path."""


class THuman2DataParser(SyntheticDataParser):
    """Reads rendered THuman2.0 scans (the built-in layout: one frame per subject)."""

    missing_hint = ("render the scans first: python scripts/render_scans.py thuman2 --scans THuman2.0_Release "
                    "--smplx-params THuman2.0_Smpl_X_Paras --body-model-dir <models> --output data/thuman2_render")
