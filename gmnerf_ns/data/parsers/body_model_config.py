"""The options of every dataset whose body proxies are posed from fitted SMPL/SMPL-H/SMPL-X parameters, written once.

A dataset config that poses fits subclasses :class:`BodyModelParserConfig`; it may narrow a default (DNA-Rendering's
``gender`` is ``file``) but keeps the help text here. The models themselves are built in ``_body_models.py`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from .base import HumanDataParserConfig


@dataclass
class BodyModelParserConfig(HumanDataParserConfig):
    """Options shared by the datasets that ship fitted body-model parameters (EasyMocap, HuMMan, MVHumanNet,
    DNA-Rendering)."""

    body_model_dir: Optional[Path] = None
    """Your SMPL/SMPL-H/SMPL-X model files, laid out as smplx expects (smpl/SMPL_NEUTRAL.pkl, smplx/SMPLX_NEUTRAL.npz,
    ...), to pose the dataset's fitted parameters (the dataset's description says which model and what is used
    without them)."""
    gender: Literal["neutral", "male", "female"] = "neutral"
    """Which model file poses the fits; file (where a dataset records the actor's gender) = that gender."""
    cache_dir: Optional[Path] = None
    """Where posed proxies (and files taken out of containers) are cached; None = under $XDG_CACHE_HOME/gmnerf_ns
    (~/.cache)."""
