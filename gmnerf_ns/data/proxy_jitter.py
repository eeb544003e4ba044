"""Training-time misfit of the body proxy: a random, smooth, pose-like perturbation of its posed vertices.

A fitted SMPL never matches the person: limbs are a few degrees off, the body is shifted by a few centimetres and the
surface bulges where the shape is wrong. A model trained only on exact proxies learns to trust them and loses several
dB on a misfit one. Perturbing the proxy of every training sample teaches the geometry-guided attention to pick the
right pixels anyway (the paper's motivation; the perturbation itself is [INFER]).

The perturbation needs nothing but the vertices (the model takes any template): a few *bends*, rotations about random
points on the body whose angle falls off smoothly with distance (a joint rotating a limb), a smooth displacement field
(a wrong body shape), and a global offset. Its size scales with the body's extent, so it is the same in metres and in
millimetres.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

NUM_BENDS = 4
"""Bends per sample."""
NUM_BUMPS = 3
"""Radial-basis bumps of the displacement field per sample."""


def _rotate(points: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues rotation of ``points`` (N, 3) about the unit ``axis`` by per-point ``angle`` (N,)."""
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return points * cos + np.cross(axis, points) * sin + (points @ axis)[:, None] * axis * (1.0 - cos)


def jitter_proxy(
    vertices: Float[np.ndarray, "V 3"], rng: np.random.Generator, strength: float
) -> Float[np.ndarray, "V 3"]:
    """A randomly misfit copy of posed proxy ``vertices``.

    Args:
        vertices: posed proxy vertices (any unit; sizes follow the body's extent, taken as 1.7 units tall).
        rng: the sample's random stream (the result is a pure function of it).
        strength: typical bend angle in radians (0 = exact). Each sample scales it by a random factor in [0, 2], so
            training sees exact proxies as well as twice the typical error. At 0.05 and a 1.7 m body the vertices move
            about 2-3 cm on average, like SMPL fits with 0.05 rad of per-joint pose error.
    """
    if strength <= 0 or len(vertices) == 0:
        return vertices
    points = np.asarray(vertices, dtype=np.float64)
    scale = float(np.ptp(points, axis=0).max()) / 1.7  # units per metre of a typical body
    if not np.isfinite(scale) or scale <= 0:
        return vertices
    level = strength * rng.uniform(0.0, 2.0)
    out = points.copy()
    for _ in range(NUM_BENDS):
        centre = points[rng.integers(len(points))]
        radius = rng.uniform(0.15, 0.35) * scale
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis) + 1e-12
        weight = np.exp(-((points - centre) ** 2).sum(-1) / (2.0 * radius**2))
        out = centre + _rotate(out - centre, axis, rng.normal(0.0, 3.0 * level) * weight)
    for _ in range(NUM_BUMPS):
        centre = points[rng.integers(len(points))]
        radius = rng.uniform(0.1, 0.3) * scale
        weight = np.exp(-((points - centre) ** 2).sum(-1) / (2.0 * radius**2))
        out += weight[:, None] * rng.normal(0.0, 0.2 * level * scale, 3)
    out += rng.normal(0.0, 0.4 * level * scale, 3)
    return out.astype(np.asarray(vertices).dtype)
