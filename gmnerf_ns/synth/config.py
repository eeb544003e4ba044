"""Options of the synthetic dataset generator (``gmnerf-synth``), their validation, and the settings a dataset records
so that a resumed run with other settings is refused."""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from gmnerf_ns import __version__
from gmnerf_ns.synth.body import DEFAULT_ASSET
from gmnerf_ns.synth.cameras import RigRanges
from gmnerf_ns.synth.misfit import ProxyError

GENERATOR = f"gmnerf-synth {__version__}"


class SynthError(RuntimeError):
    """The generator refuses to run (existing data, bad settings); the message says what to do."""


def _default_out() -> Path:
    return Path(os.environ.get("GMNERF_DATA", "data")) / "synthetic"


@functools.lru_cache(maxsize=None)
def asset_digest(path: Path = DEFAULT_ASSET) -> str:
    """Short SHA-256 of the body asset: a re-exported asset must not be mixed into a resumed dataset."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@dataclass
class SynthConfig:
    """Options of the synthetic dataset generator."""

    out: Path = field(default_factory=_default_out)
    """Output folder (default: $GMNERF_DATA/synthetic, i.e. where the synthetic dataparser looks)."""
    num_subjects: int = 8
    """Number of subjects."""
    num_test_subjects: int = 2
    """The last this-many subjects are held out (``test`` in split.json)."""
    num_cameras: int = 12
    """Cameras on the ring (the smallest count when ``max_num_cameras`` is larger)."""
    max_num_cameras: Optional[int] = None
    """Rig variety: each subject gets a random camera count in [num_cameras, max_num_cameras] (None = num_cameras)."""
    camera_distance: Tuple[float, float] = (2.6, 3.8)
    """Range of the cameras' horizontal distance from the capture centre (metres)."""
    camera_height: Tuple[float, float] = (0.5, 2.3)
    """Range of the cameras' height above the floor (metres)."""
    zoom_out: Tuple[float, float] = (0.88, 1.0)
    """Range of each camera's focal length as a fraction of the tightest one that frames the capture volume."""
    aspect: Tuple[float, float] = (1.0, 1.0)
    """Range of a subject's image width / height (1 = square; the height is ``resolution``)."""
    num_frames: int = 4
    """Frames per subject."""
    resolution: int = 512
    """Image height in pixels (and width, unless ``aspect`` says otherwise)."""
    seed: int = 0
    """Dataset seed; subject k is derived from (seed, k) only."""
    force: bool = False
    """Delete and regenerate an existing dataset (complete, or generated with other settings)."""
    skip_if_complete: bool = False
    """If the output already holds the complete dataset with these settings, report it and succeed (for scripts)."""
    supersample: int = 2
    """Anti-aliasing: render at this factor and box-filter the colours (1 = off). The mask stays binary."""
    frame_interval: float = 0.25
    """Seconds between frames."""
    proxy_pose_noise: float = 0.0
    """Std (radians) of per-joint noise on the saved proxy's pose, to mimic body-fitting error (0 = exact)."""
    proxy_shape_error: float = 0.0
    """Body-shape error of the saved proxy: the fraction of the way towards another random body (0 = exact)."""
    proxy_offset: float = 0.0
    """Std (metres, per axis) of a per-frame global offset of the saved proxy (0 = exact)."""
    misfit_per_subject: bool = False
    """Scale each subject's proxy errors by its own random factor in [0, 1], so the set spans exact to full misfit."""
    mask_error: int = 0
    """Imperfect masks: erode or dilate each mask by up to this many pixels and punch up to 2 holes (0 = exact)."""
    light_variety: float = 0.0
    """Lighting variety in [0, 1]: wider ambient/key-light strengths and a coloured light tint (0 = the default)."""
    shape_variety: float = 0.0
    """Probability that a subject's body blends two of the asset's body shapes (more shapes than the asset holds)."""
    jpeg_quality: int = 95
    """JPEG quality of the images."""
    threads: int = 1
    """Torch CPU threads per process. One is best: the work is many small tensor ops, and on shared cores torch's
    thread pool spin-waits (benchmarks/throughput/README.md). Use ``workers`` for more cores."""
    workers: int = 1
    """Processes generating subjects in parallel (each with ``threads`` threads); the output does not change."""
    progress: bool = True
    """Show a progress bar."""

    def settings(self) -> Dict[str, object]:
        """Everything that changes the output (compared when resuming)."""
        keys = (
            "num_subjects",
            "num_test_subjects",
            "num_cameras",
            "num_frames",
            "resolution",
            "seed",
            "supersample",
            "frame_interval",
            "proxy_pose_noise",
            "jpeg_quality",
        )
        # Options added later count only when set, so datasets written before them stay valid.
        defaults = SynthConfig.__dataclass_fields__
        extra = {k: _plain(getattr(self, k)) for k in _LATER_OPTIONS if getattr(self, k) != defaults[k].default}
        return {"generator": GENERATOR, "body_asset_sha256": asset_digest(), **{k: getattr(self, k) for k in keys},
                **extra}

    @property
    def proxy_error(self) -> ProxyError:
        """The saved proxy's error before the per-subject factor."""
        return ProxyError(self.proxy_pose_noise, self.proxy_shape_error, self.proxy_offset)

    @property
    def rig_ranges(self) -> RigRanges:
        return RigRanges(distance=tuple(self.camera_distance), height=tuple(self.camera_height),
                         zoom_out=tuple(self.zoom_out))

    def validate(self) -> None:
        """Raises :class:`SynthError` on impossible settings."""
        if self.num_subjects < 1 or not 0 <= self.num_test_subjects <= self.num_subjects:
            raise SynthError("need num_subjects >= 1 and 0 <= num_test_subjects <= num_subjects")
        if self.num_cameras < 1 or self.num_frames < 1:
            raise SynthError("need at least one camera and one frame")
        if self.threads < 1 or self.workers < 1:
            raise SynthError("threads and workers must be >= 1")
        if self.resolution < 16 or self.supersample < 1:
            raise SynthError("resolution must be >= 16 and supersample >= 1")
        if self.max_num_cameras is not None and self.max_num_cameras < self.num_cameras:
            raise SynthError(f"--max-num-cameras {self.max_num_cameras} is below --num-cameras {self.num_cameras}")
        for name in ("camera_distance", "camera_height", "zoom_out", "aspect"):
            low, high = getattr(self, name)
            if not 0 < low <= high and not (name == "camera_height" and low <= high):
                raise SynthError(f"--{name.replace('_', '-')} {low} {high}: need 0 < low <= high")
        if min(self.camera_distance) <= 0.5:
            raise SynthError("--camera-distance must keep the cameras more than 0.5 m from the capture centre")
        if max(self.zoom_out) > 1.0:
            raise SynthError("--zoom-out must be <= 1 (1 = the tightest framing that keeps the person in view)")
        for name in ("proxy_pose_noise", "proxy_shape_error", "proxy_offset", "light_variety", "shape_variety"):
            if getattr(self, name) < 0:
                raise SynthError(f"--{name.replace('_', '-')} must be >= 0")
        if self.light_variety > 1 or self.shape_variety > 1:
            raise SynthError("--light-variety and --shape-variety are in [0, 1]")
        if self.mask_error < 0:
            raise SynthError("--mask-error must be >= 0 pixels")


_LATER_OPTIONS = ("max_num_cameras", "camera_distance", "camera_height", "zoom_out", "aspect", "proxy_shape_error",
                  "proxy_offset", "misfit_per_subject", "mask_error", "light_variety", "shape_variety")


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
