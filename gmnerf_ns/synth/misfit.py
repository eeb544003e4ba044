"""Capture imperfections of the built-in data: a body proxy that does not fit the person, and imperfect masks.

Real captures come with an SMPL fit that is never exact (per-joint pose error, wrong body shape, a global offset of a
few centimetres) and with masks from a segmentation network (a few pixels too wide or too narrow, with holes). The
generator reproduces these so that a model can be trained and evaluated on them. Everything is drawn from the random
streams the generator hands in, so a seed still gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class ProxyError:
    """How far a subject's saved proxy is from the body under the clothes (all 0 = exact)."""

    pose_noise: float = 0.0
    """Std (radians) of per-joint noise on the proxy's pose, drawn anew for every frame."""
    shape_error: float = 0.0
    """Fraction of the way from the true body shape towards another random body shape (fixed per subject)."""
    offset: float = 0.0
    """Std (metres, per axis) of a global translation of the proxy, drawn anew for every frame."""

    def scaled(self, factor: float) -> "ProxyError":
        """The same kind of error, ``factor`` times as strong."""
        return ProxyError(self.pose_noise * factor, self.shape_error * factor, self.offset * factor)

    @property
    def exact(self) -> bool:
        return self.pose_noise <= 0 and self.shape_error <= 0 and self.offset <= 0


def wrong_shape(
    coeffs: Float[Tensor, "K"], samples: Float[Tensor, "N K"], rng: np.random.Generator, error: float
) -> Float[Tensor, "K"]:
    """Shape coefficients ``error`` of the way towards a random other body (what a shape fit gets wrong)."""
    if error <= 0:
        return coeffs
    other = samples[int(rng.integers(len(samples)))].to(coeffs)
    return coeffs + error * (other - coeffs)


def global_offset(rng: np.random.Generator, std: float) -> np.ndarray:
    """A (3,) translation error in metres (zeros when ``std`` is 0)."""
    return rng.normal(0.0, std, 3) if std > 0 else np.zeros(3)


def degrade_mask(mask: np.ndarray, rng: np.random.Generator, max_pixels: int) -> np.ndarray:
    """A segmentation-like copy of a binary uint8 mask {0, 255}: eroded or dilated by up to ``max_pixels``, and in one
    mask of three a hole of up to ``max_pixels`` radius punched inside the person. Never returns an empty mask.

    Segmentation networks miss by a pixel or two at 256 px; erosion removes thin limbs quickly, so keep this small."""
    if max_pixels <= 0:
        return mask
    radius = int(rng.integers(-max_pixels, max_pixels + 1))
    m = torch.from_numpy(mask > 127).float()[None, None]
    if radius > 0:
        m = F.max_pool2d(m, 2 * radius + 1, stride=1, padding=radius)
    elif radius < 0:
        m = 1.0 - F.max_pool2d(1.0 - m, -2 * radius + 1, stride=1, padding=-radius)
    out = m[0, 0].numpy() > 0.5
    ys, xs = np.nonzero(out)
    if len(ys):
        height, width = out.shape
        yy, xx = np.ogrid[:height, :width]
        for _ in range(int(rng.random() < 1 / 3)):
            k = int(rng.integers(len(ys)))
            r = float(rng.uniform(1.0, max_pixels + 1.0))
            out &= (yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 > r * r
    if not out.any():  # a tiny person eroded away: keep the exact mask rather than none
        return mask
    return out.astype(np.uint8) * 255
