"""Per-subject appearance: skin tone, hair, garment colours and procedural solid-texture patterns, plus shading.

Patterns are *solid textures*: functions of the canonical (A-pose) body position of each surface point, so they stick
to the body across poses and views. Colours and patterns are drawn independently of the body shape and the garment
geometry, so the appearance cannot be guessed from the silhouette.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from gmnerf_ns.synth.garments import BOTTOM, EYE, HAIR, INTERIOR, LEGWEAR, MATERIALS, SHOES, SKIN, TOP

SKIN_TONES = np.array(
    [[0.98, 0.85, 0.75], [0.93, 0.76, 0.63], [0.80, 0.60, 0.45], [0.62, 0.42, 0.30], [0.40, 0.26, 0.18],
     [0.27, 0.17, 0.12]]
)  # fmt: skip
"""Anchors of the skin-tone ramp (sRGB), light to dark."""
HAIR_COLOURS = np.array(
    [[0.05, 0.04, 0.04], [0.22, 0.13, 0.07], [0.45, 0.30, 0.16], [0.80, 0.65, 0.40], [0.55, 0.22, 0.10],
     [0.70, 0.70, 0.70]]
)  # fmt: skip
"""Hair colour anchors (black, dark brown, brown, blond, red, grey)."""
PATTERNS = ("plain", "stripes", "checks", "dots", "plaid")


@dataclass
class Fabric:
    """A garment's colours and pattern (all colours sRGB in [0, 1])."""

    pattern: str
    base: Tuple[float, float, float]
    accent: Tuple[float, float, float]
    frequency: float
    """Pattern repetitions per metre."""
    direction: Tuple[float, float, float]
    """Unit direction of stripes (the pattern varies along it)."""
    logo: bool
    """Draw a blob-shaped logo on the chest (tops only)."""
    logo_colour: Tuple[float, float, float]
    logo_shape: Tuple[float, float, float, float]
    """(radius m, lobe amplitude, lobe count, phase) of the logo blob."""


@dataclass
class Look:
    """Everything that decides a subject's colours and lighting."""

    skin: Tuple[float, float, float]
    hair: Tuple[float, float, float]
    iris: Tuple[float, float, float]
    shoes: Tuple[float, float, float]
    legwear: Tuple[float, float, float]
    top: Fabric
    bottom: Fabric
    light_dir: Tuple[float, float, float]
    """Unit direction towards the key light (world, Z up); fixed per subject so views agree."""
    ambient: float
    diffuse: float
    noise: Tuple[Tuple[float, float, float, float, float], ...]
    """Random 3-D sinusoids ``(kx, ky, kz, phase, amplitude)`` that modulate albedo (fabric/skin variation)."""
    tint: Optional[Tuple[float, float, float]] = None
    """Colour of the light (linear RGB gains); None = white."""

    def summary(self) -> Dict[str, object]:
        """JSON-friendly description."""

        def rgb(c):
            return [round(float(x), 3) for x in c]

        def fab(f: Fabric):
            return {"pattern": f.pattern, "base": rgb(f.base), "accent": rgb(f.accent), "logo": f.logo}

        return {
            "skin": rgb(self.skin),
            "hair": rgb(self.hair),
            "shoes": rgb(self.shoes),
            "top": fab(self.top),
            "bottom": fab(self.bottom),
            "light_dir": rgb(self.light_dir),
            "ambient": round(self.ambient, 3),
            **({} if self.tint is None else {"diffuse": round(self.diffuse, 3), "light_tint": rgb(self.tint)}),
        }


def vary_lighting(look: Look, rng: np.random.Generator, variety: float) -> Look:
    """``look`` under a wider range of lights: ambient and key strengths spread by ``variety`` in [0, 1] and a light
    tint (warm, cool or coloured studio light) of up to about 15% per channel at ``variety`` 1."""
    ambient = float(rng.uniform(0.35 - 0.2 * variety, 0.5 + 0.2 * variety))
    diffuse = float(look.diffuse * rng.uniform(1.0 - 0.4 * variety, 1.0 + 0.3 * variety))
    tint = np.clip(1.0 + rng.normal(0.0, 0.08 * variety, 3), 0.7, 1.3)
    return replace(look, ambient=ambient, diffuse=diffuse, tint=tuple(float(t) for t in tint))


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A garment colour: random hue, with a fair share of dark, light and muted colours."""
    hue = rng.random()
    sat = rng.choice([rng.uniform(0.05, 0.25), rng.uniform(0.35, 0.9)])
    val = rng.choice([rng.uniform(0.12, 0.35), rng.uniform(0.45, 0.95)])
    i = int(hue * 6) % 6
    f = hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    return np.array([(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i])


def _contrast(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """An accent colour that differs visibly from ``base``."""
    for _ in range(20):
        c = _random_colour(rng)
        if np.abs(c - base).sum() > 0.6:
            return c
    return 1.0 - base


def _fabric(rng: np.random.Generator, allow_logo: bool) -> Fabric:
    base = _random_colour(rng)
    accent = _contrast(rng, base)
    pattern = str(rng.choice(PATTERNS, p=[0.3, 0.25, 0.15, 0.15, 0.15]))
    direction = rng.normal(size=3) * np.array([0.3, 0.3, 1.0])
    direction /= np.linalg.norm(direction)
    return Fabric(
        pattern=pattern,
        base=tuple(base),
        accent=tuple(accent),
        frequency=float(rng.uniform(8.0, 25.0)),
        direction=tuple(direction),
        logo=bool(allow_logo and rng.random() < 0.5),
        logo_colour=tuple(_contrast(rng, base)),
        logo_shape=(
            float(rng.uniform(0.04, 0.075)),
            float(rng.uniform(0.1, 0.4)),
            float(rng.integers(3, 7)),
            float(rng.uniform(0, 2 * np.pi)),
        ),
    )


def sample_look(rng: np.random.Generator) -> Look:
    """Random skin tone, hair and garment fabrics, and a per-subject key light."""
    t = rng.random() * (len(SKIN_TONES) - 1)
    i = min(int(t), len(SKIN_TONES) - 2)
    skin = SKIN_TONES[i] * (1 - (t - i)) + SKIN_TONES[i + 1] * (t - i)
    skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 1)
    hair = np.clip(
        HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.8, 1.2) * rng.uniform(0.97, 1.03, 3), 0, 1
    )
    azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.2)
    light = np.array([np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation), np.sin(elevation)])
    noise = tuple(
        (*(rng.normal(size=3) * rng.uniform(5, 40)), rng.uniform(0, 2 * np.pi), rng.uniform(0.02, 0.05))
        for _ in range(4)
    )
    iris = np.clip(rng.choice([[0.25, 0.15, 0.08], [0.15, 0.3, 0.45], [0.3, 0.35, 0.2]]) * rng.uniform(0.7, 1.2), 0, 1)
    if rng.random() < 0.7:
        shoes = rng.choice([[0.06, 0.06, 0.06], [0.9, 0.9, 0.88], [0.35, 0.2, 0.1]])  # black, white, brown
    else:
        shoes = _random_colour(rng)
    return Look(
        skin=tuple(skin),
        hair=tuple(hair),
        iris=tuple(iris),
        shoes=tuple(shoes),
        legwear=tuple(_random_colour(rng) * 0.5),
        top=_fabric(rng, allow_logo=True),
        bottom=_fabric(rng, allow_logo=False),
        light_dir=tuple(light),
        ambient=float(rng.uniform(0.35, 0.5)),
        diffuse=float(rng.uniform(0.55, 0.75)),
        noise=noise,
    )


def _pattern(fabric: Fabric, p: Tensor, chest: Tensor) -> Tensor:
    """Albedo (P, 3) of a fabric at canonical points ``p`` (P, 3); ``chest`` is the logo centre (3,)."""
    base = p.new_tensor(fabric.base)
    accent = p.new_tensor(fabric.accent)
    f = fabric.frequency
    d = p.new_tensor(fabric.direction)
    if fabric.pattern == "stripes":
        s = torch.sin(2 * np.pi * f * (p @ d))
        w = torch.sigmoid(s * 8.0)
    elif fabric.pattern == "checks":
        cells = torch.floor(p * f * 0.7).long().sum(-1) % 2
        w = cells.to(p.dtype)
    elif fabric.pattern == "dots":
        q = p * f * 0.8
        dist = (q - torch.round(q)).norm(dim=-1)
        w = torch.sigmoid((0.28 - dist) * 40.0)
    elif fabric.pattern == "plaid":
        a = torch.sigmoid(torch.sin(2 * np.pi * f * 0.5 * p[:, 0]) * 6.0)
        b = torch.sigmoid(torch.sin(2 * np.pi * f * 0.5 * p[:, 2]) * 6.0)
        w = 0.5 * (a + b)
    else:
        w = torch.zeros_like(p[:, 0])
    albedo = base + (accent - base) * w[:, None]
    if fabric.logo:
        radius, amp, lobes, phase = fabric.logo_shape
        rel = p - chest
        ang = torch.atan2(rel[:, 2], rel[:, 0])
        r = torch.sqrt(rel[:, 0] ** 2 + rel[:, 2] ** 2)
        inside = (r < radius * (1 + amp * torch.sin(lobes * ang + phase))) & (rel[:, 1] < 0)  # front only (-Y)
        albedo = torch.where(inside[:, None], p.new_tensor(fabric.logo_colour), albedo)
    return albedo


def _srgb_to_linear(c: Tensor) -> Tensor:
    return c.clamp(0, 1) ** 2.2


def _linear_to_srgb(c: Tensor) -> Tensor:
    return c.clamp(0, 1) ** (1 / 2.2)


class Shader:
    """Turns interpolated surface attributes into colours for one subject."""

    def __init__(self, look: Look, texture_points: Tensor, face_material: Tensor, joints: Tensor, eyes: List[Tensor]):
        """``eyes``: canonical front-most point of each eye (iris centres); ``joints``: canonical joints (24, 3)."""
        self.look = look
        self.face_material = face_material
        front = texture_points[:, 1].min()
        self.chest = torch.stack([joints[9, 0], front, 0.6 * joints[9, 2] + 0.4 * joints[6, 2]]).float()
        self.eyes = [e.float() for e in eyes]
        self.light = torch.tensor(look.light_dir, dtype=torch.float32)

    def albedo(self, material: Int[Tensor, "P"], p: Float[Tensor, "P 3"]) -> Float[Tensor, "P 3"]:
        """sRGB albedo of surface points with canonical positions ``p``."""
        look = self.look
        out = torch.zeros_like(p)
        colours = {
            SKIN: look.skin,
            HAIR: look.hair,
            SHOES: look.shoes,
            INTERIOR: (0.25, 0.07, 0.07),
            LEGWEAR: look.legwear,
        }
        for m, c in colours.items():
            sel = material == m
            out[sel] = p.new_tensor(c)
        for m, fabric in ((TOP, look.top), (BOTTOM, look.bottom)):
            sel = material == m
            if sel.any():
                out[sel] = _pattern(fabric, p[sel], self.chest)
        sel = material == EYE
        if sel.any():
            q = p[sel]
            dist = torch.stack([(q - e)[:, [0, 2]].norm(dim=-1) for e in self.eyes]).amin(0)
            colour = torch.where((dist < 0.0055)[:, None], p.new_tensor(look.iris), p.new_tensor((0.92, 0.9, 0.88)))
            out[sel] = torch.where((dist < 0.0022)[:, None], p.new_zeros(3), colour)
        # Low-frequency albedo variation (fabric folds, skin) so that no region is perfectly flat.
        variation = torch.zeros_like(p[:, 0])
        for kx, ky, kz, phase, amp in look.noise:
            variation += amp * torch.sin(p @ p.new_tensor((kx, ky, kz)) + phase)
        return (out * (1 + variation[:, None])).clamp(0, 1)

    def shade(
        self,
        face_id: Int[Tensor, "P"],
        texture_points: Float[Tensor, "P 3"],
        normals: Float[Tensor, "P 3"],
        view_dirs: Float[Tensor, "P 3"],
    ) -> Float[Tensor, "P 3"]:
        """Lambert + ambient with a world-fixed light; two-sided (normals facing away from the camera flip)."""
        material = self.face_material[face_id]
        albedo = _srgb_to_linear(self.albedo(material, texture_points))
        n = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        n = torch.where(((n * view_dirs).sum(-1) > 0)[:, None], -n, n)  # view_dirs point from camera to surface
        lambert = (n @ self.light).clamp_min(0)
        sky = 0.5 + 0.5 * n[:, 2]  # hemispheric ambient: brighter from above
        light = self.look.ambient * (0.7 + 0.3 * sky) + self.look.diffuse * lambert
        if self.look.tint is not None:
            return _linear_to_srgb(albedo * light[:, None] * albedo.new_tensor(self.look.tint))
        return _linear_to_srgb(albedo * light[:, None])


def eye_centres(texture_points: Tensor, face_material: Tensor, faces: Tensor) -> List[Tensor]:
    """Front-most canonical point of each eye (left = +X, right = -X) from the eye faces."""
    verts = torch.unique(faces[face_material == EYE])
    pts = texture_points[verts]
    out = []
    for side in (pts[:, 0] > 0, pts[:, 0] <= 0):
        q = pts[side]
        out.append(q[q[:, 1].argmin()] if len(q) else texture_points.new_full((3,), 1e3))
    return out


__all__ = ["Look", "Fabric", "Shader", "sample_look", "eye_centres", "MATERIALS"]
