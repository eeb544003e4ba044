"""Benchmark modes (quick smoke test, full README run), the compared systems and the targets."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple

from gmnerf_ns.eval.geometry import DEFAULT_DENSITY_THRESHOLD

REFERENCE = "gm-nerf-small"
"""The full method; every ablation differs from it in one aspect (model-config overrides)."""
NO_PROXY = "registration=none"
NO_ATTENTION = "attention=mean"
FULL_RES = "neural_renderer=False"
NERFACTO = "nerfacto (per subject)"

GM_SYSTEMS: Dict[str, Dict[str, Any]] = {
    REFERENCE: {},
    "registration=mean": {"registration": "mean"},
    NO_ATTENTION: {"registration": "mean", "appearance_fusion": "mean"},
    NO_PROXY: {"registration": "none"},
    FULL_RES: {"neural_renderer": False},
    "grad_ray_fraction=1.0": {"grad_ray_fraction": 1.0},
    "perceptual_loss_mult=0": {"perceptual_loss_mult": 0.0},
}
"""gm-nerf-small and its ablations as ``GMNeRFModelConfig`` overrides (what each one tests:
benchmarks/quality/README.md)."""


@dataclass(frozen=True)
class Target:
    """One PASS/FAIL target: PASS when ``metric`` (a function of the results, see ``report.METRICS``) compares to
    ``threshold`` by ``op``. ``metric`` is ``name`` or ``name:argument``."""

    name: str
    metric: str
    op: Literal[">=", ">"]
    threshold: float


TARGETS: Tuple[Target, ...] = (
    Target(f"held-out PSNR gain over {NO_PROXY} (dB)", f"psnr_gain:{NO_PROXY}", ">=", 2.0),
    Target("held-out PSNR gain over per-subject nerfacto (dB)", f"psnr_gain:{NERFACTO}", ">", 0.0),
    Target("render speed-up over full-res volume rendering (warm)", "render_speedup", ">=", 3.0),
    Target("training peak memory, full / partial gradient", "memory_reduction", ">=", 2.0),
    Target(f"held-out PSNR gain over {NO_ATTENTION} (dB)", f"psnr_gain:{NO_ATTENTION}", ">", 0.0),
)
"""The benchmark issue's targets (their rationale: benchmarks/quality/README.md, *Targets*)."""


def slug(name: str) -> str:
    """A file-name-safe version of a system name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_")


@dataclass
class Mode:
    """Everything that differs between ``--quick`` and the full run."""

    name: str
    data: Path
    """Dataset folder (gmnerf-synth; generated when missing)."""
    num_subjects: int
    num_test_subjects: int
    num_cameras: int
    num_frames: int
    synth_resolution: int
    """Resolution the generator renders at."""
    resolution: Optional[int]
    """Resolution the dataparser loads at (None: the protocol's)."""
    budget_seconds: float
    """Wall-clock training budget per trained system (per held-out subject-frame for nerfacto)."""
    patch_size: int
    model_overrides: Dict[str, Any] = field(default_factory=dict)
    """Applied to every gm-nerf system before its ablation flag."""
    nerfacto_rays_per_batch: int = 4096
    nerfacto_eval_chunk: int = 8192
    """Rays per chunk when nerfacto renders a held-out view (bounds its peak memory)."""
    eval_frames: Literal["first", "all"] = "first"
    """Held-out frames evaluated: the one nerfacto is fitted to, or all."""
    max_eval_views: Optional[int] = None
    """At most this many evenly spaced target views per evaluated subject-frame (None: all)."""
    geometry_resolution: int = 64
    geometry_threshold: float = DEFAULT_DENSITY_THRESHOLD
    geometry_samples: int = 10_000
    """Surface samples per direction for Chamfer/P2S."""
    render_resolutions: Tuple[int, ...] = (256, 512, 1024)
    render_resolution: int = 512
    """The resolution of the render-speed target."""
    render_repeats: int = 2
    """Timed renders per measurement (the minimum is reported)."""
    memory_patch_sizes: Tuple[int, ...] = (32, 64, 128, 256)
    memory_steps: int = 3
    """Training steps per memory measurement."""
    child_timeout: float = 3600.0
    """Seconds (plus 3 budgets) after which a measurement is abandoned."""

    def with_overrides(self, **kwargs) -> "Mode":
        return replace(copy.deepcopy(self), **{k: v for k, v in kwargs.items() if v is not None})


QUICK = Mode(
    name="quick", data=Path("data/benchmark-quick"), num_subjects=3, num_test_subjects=1, num_cameras=6, num_frames=1,
    synth_resolution=64, resolution=64, budget_seconds=2.0, patch_size=32,
    model_overrides={"num_samples": 8, "volume_resolution": 16, "eval_num_rays_per_chunk": 4096},
    nerfacto_rays_per_batch=512, nerfacto_eval_chunk=1024, max_eval_views=1,
    # iso-level 1e-3: an almost untrained model still has a surface to compare
    geometry_resolution=16, geometry_threshold=1e-3, geometry_samples=500,
    render_resolutions=(32, 64, 128), render_resolution=64, render_repeats=1,
    memory_patch_sizes=(32,), memory_steps=2, child_timeout=600.0,
)
"""CI smoke test: tiny data, a shrunken model, 2 s per system. Its numbers say nothing about the methods."""

FULL = Mode(
    name="full", data=Path("data/synthetic"), num_subjects=8, num_test_subjects=2, num_cameras=12, num_frames=4,
    synth_resolution=512, resolution=None, budget_seconds=600.0, patch_size=64,
)
"""gmnerf-synth's defaults (the data ``scripts/demo.sh`` generates), gm-nerf-small as shipped."""

MODES = {"quick": QUICK, "full": FULL}
