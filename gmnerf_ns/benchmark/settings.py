"""Benchmark modes (quick smoke test, full README run) and the compared systems."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from gmnerf_ns.tools.geometry import DEFAULT_DENSITY_THRESHOLD

REFERENCE = "gm-nerf-small"
"""The full method; every ablation differs from it in one aspect (model-config overrides)."""
NO_PROXY = "registration=none"
NO_ATTENTION = "attention=mean"
"""Both geometry-guided attentions (vertex registration and per-sample view fusion) replaced by means over views."""
FULL_RES = "neural_renderer=False"
FULL_GRAD = "grad_ray_fraction=1.0"
NERFACTO = "nerfacto (per subject)"

GM_SYSTEMS: Dict[str, Dict[str, Any]] = {
    REFERENCE: {},
    "registration=mean": {"registration": "mean"},
    NO_ATTENTION: {"registration": "mean", "appearance_fusion": "mean"},
    NO_PROXY: {"registration": "none"},
    FULL_RES: {"neural_renderer": False},
    FULL_GRAD: {"grad_ray_fraction": 1.0},
    "perceptual_loss_mult=0": {"perceptual_loss_mult": 0.0},
}
"""gm-nerf-small and its ablations: model-config overrides (``GMNeRFModelConfig`` fields)."""

SYSTEM_NOTES: Dict[str, str] = {
    REFERENCE: "full method (geometry-guided attention, proxy volume, half-res features + 2D renderer, partial gradient)",
    "registration=mean": "vertex registration by a plain mean over visible views (per-sample attention kept)",
    NO_ATTENTION: "no geometry-guided attention: vertex codes and per-sample appearance are plain means over views "
    "(naive projection)",
    NO_PROXY: "no geometry proxy: pixelNeRF-style, geometry code from pixel-aligned features (proxy only bounds the box)",
    FULL_RES: "full-resolution volume rendering of RGB, no 2D neural renderer",
    FULL_GRAD: "every ray carries gradient (no partial gradient backpropagation)",
    "perceptual_loss_mult=0": "no perceptual loss",
    NERFACTO: "nerfstudio's nerfacto fitted from scratch to the same 4 input views of each held-out subject-frame",
}


def slug(name: str) -> str:
    """A file-name-safe version of a system name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_")


@dataclass
class Mode:
    """Everything that differs between ``--quick`` and the full run."""

    name: str
    # ---- data (gmnerf-synth) ----
    data: Path
    """Dataset folder (generated when missing, reused when complete with the same settings)."""
    num_subjects: int
    num_test_subjects: int
    num_cameras: int
    num_frames: int
    synth_resolution: int
    """Resolution the generator renders at."""
    resolution: Optional[int]
    """Resolution the dataparser loads at (None = the protocol's, 256 for the built-in data)."""
    # ---- training ----
    budget_seconds: float
    """Wall-clock training budget per trained system (per held-out subject for nerfacto)."""
    patch_size: int
    model_overrides: Dict[str, Any] = field(default_factory=dict)
    """Applied to every gm-nerf system before its ablation flag (quick mode shrinks the model)."""
    nerfacto_rays_per_batch: int = 4096
    nerfacto_eval_chunk: int = 8192
    """Rays per chunk when nerfacto renders a held-out view (bounds its peak memory; nerfstudio's default is 32768)."""
    # ---- evaluation ----
    eval_frames: str = "first"
    """Held-out frames evaluated: 'first' (the frame nerfacto is fitted to, per held-out subject) or 'all'."""
    max_eval_views: Optional[int] = None
    """At most this many target views per evaluated subject-frame (evenly spaced; None = all of them)."""
    geometry_resolution: int = 64
    geometry_threshold: float = DEFAULT_DENSITY_THRESHOLD
    geometry_samples: int = 10_000
    """Surface samples per direction for Chamfer/P2S (ns-eval's default is 10 000)."""
    # ---- speed and memory ----
    render_resolutions: Tuple[int, ...] = (256, 512, 1024)
    render_resolution: int = 512
    """The resolution of the render-speed target ('one 512x512 view')."""
    render_repeats: int = 2
    """Timed renders per measurement (the minimum is reported: the machine may be shared)."""
    memory_patch_sizes: Tuple[int, ...] = (32, 64, 128, 256)
    """Training patch sizes of the memory measurements (gm-nerf-small trains on 64; the paper's GPU config on 256;
    256 covers a whole 256-px view of the built-in data; a step takes a few seconds on one CPU thread)."""
    memory_steps: int = 3
    """Training steps per memory measurement."""
    child_timeout: float = 3600.0
    """Seconds after which a measurement is abandoned (reported as an error)."""
    notes: Tuple[str, ...] = ()

    def with_overrides(self, **kwargs) -> "Mode":
        return replace(copy.deepcopy(self), **{k: v for k, v in kwargs.items() if v is not None})


QUICK = Mode(
    name="quick",
    data=Path("data/benchmark-quick"),
    num_subjects=3,
    num_test_subjects=1,
    num_cameras=6,
    num_frames=1,
    synth_resolution=64,
    resolution=64,
    budget_seconds=2.0,
    patch_size=32,
    model_overrides={"num_samples": 8, "volume_resolution": 16, "eval_num_rays_per_chunk": 4096},
    nerfacto_rays_per_batch=512,
    nerfacto_eval_chunk=1024,
    max_eval_views=1,
    geometry_resolution=16,
    geometry_threshold=1e-3,
    geometry_samples=500,
    render_resolutions=(32, 64, 128),
    render_resolution=64,
    render_repeats=1,
    memory_patch_sizes=(32,),
    memory_steps=2,
    child_timeout=600.0,
    notes=(
        "QUICK MODE (smoke test): 64-px data, shrunken model (8 samples/ray, 16^3 volume), 2 s of training per "
        "system, 64x64 instead of 512x512 renders. The numbers only show that the plumbing works; they say nothing "
        "about the methods.",
        "Quick mode extracts geometry at density iso-level 1e-3 (instead of the default) so that an almost untrained "
        "model still has a surface to compare; its Chamfer/P2S are not meaningful.",
    ),
)

FULL = Mode(
    name="full",
    data=Path("data/synthetic"),
    num_subjects=8,
    num_test_subjects=2,
    num_cameras=12,
    num_frames=4,
    synth_resolution=512,
    resolution=None,
    budget_seconds=600.0,
    patch_size=64,
)
"""gmnerf-synth's defaults (the data ``scripts/demo.sh`` generates), gm-nerf-small as shipped."""

MODES = {"quick": QUICK, "full": FULL}
