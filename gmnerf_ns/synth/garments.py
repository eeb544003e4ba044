"""Clothed surfaces: the body pushed out along its normals per garment, plus an optional skirt tube.

The rendered (and ground-truth) surface is this clothed mesh, while the saved proxy is the naked body, so the proxy is
misaligned with the images the way a fitted SMPL is misaligned with real clothed people: loose sleeves, hair volume,
skirts. Everything is built once per subject in the canonical A-pose and posed with the body's LBS transforms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from gmnerf_ns.synth.body import BodyModel, vertex_normals

MATERIALS = ("skin", "hair", "top", "bottom", "shoes", "eye", "interior", "legwear")
"""Surface materials; a face's material picks its albedo in :mod:`gmnerf_ns.synth.appearance`."""
SKIN, HAIR, TOP, BOTTOM, SHOES, EYE, INTERIOR, LEGWEAR = range(len(MATERIALS))

BottomKind = Literal["trousers", "shorts", "skirt", "dress"]


@dataclass
class Outfit:
    """Garment geometry of one subject (lengths are body coordinates, offsets metres)."""

    sleeve: float
    """Arm coordinate where sleeves end: 0 sleeveless, 0.5 elbow, 1 wrist."""
    sleeve_flare: float
    """Extra offset at the sleeve hem (loose sleeves)."""
    top_ease: float
    """Offset of the top over the torso."""
    top_hem: float
    """Top hem height as a fraction from the hip joints (0) up to the lower spine joint (1)."""
    top_hem_flare: float
    """Extra offset at the top's hem."""
    neckline: float
    """Radius around the neck joint left uncovered by the top."""
    bottom: BottomKind
    """Lower garment kind (a dress is a skirt in the top's fabric)."""
    bottom_length: float
    """Leg coordinate of the bottom's hem: 0 at the hip joints, 1 at the ankles."""
    bottom_ease: float
    """Offset of the bottom over the legs."""
    bottom_flare: float
    """Extra offset (trousers) or radius (skirts) at the hem."""
    legwear: bool
    """Opaque tights under shorts/skirts instead of bare legs."""
    shoe_height: float
    """Leg coordinate above the ankle that shoes (boots) cover."""
    hair_front: float
    """Hairline height at the forehead (fraction of the head height above the head joint)."""
    hair_back: float
    """Hairline height at the back (lower values = longer hair)."""
    hair_thickness: float
    """Hair volume (offset at the crown)."""

    def summary(self) -> Dict[str, object]:
        """JSON-friendly description."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def sample_outfit(rng: np.random.Generator) -> Outfit:
    """Random outfit: sleeve length and looseness, trousers/shorts/skirt/dress, shoes and hair style."""
    bottom = str(rng.choice(["trousers", "shorts", "skirt", "dress"], p=[0.45, 0.2, 0.2, 0.15]))
    loose = rng.random() < 0.35
    if bottom in ("skirt", "dress"):
        length = rng.uniform(0.3, 0.6)
    elif bottom == "shorts":
        length = rng.uniform(0.2, 0.45)
    else:
        length = rng.uniform(0.95, 1.05)
    return Outfit(
        sleeve=float(rng.choice([0.0, rng.uniform(0.2, 0.35), rng.uniform(0.45, 0.7), rng.uniform(0.9, 1.0)])),
        sleeve_flare=float(rng.uniform(0.015, 0.04) if loose else rng.uniform(0.0, 0.006)),
        top_ease=float(rng.uniform(0.006, 0.018)),
        top_hem=float(rng.uniform(-0.6, 0.2)),
        top_hem_flare=float(rng.uniform(0.0, 0.025) if loose else 0.0),
        neckline=float(rng.uniform(0.07, 0.12)),
        bottom=bottom,  # type: ignore[arg-type]
        bottom_length=float(length),
        bottom_ease=float(rng.uniform(0.004, 0.012)),
        bottom_flare=float(rng.uniform(0.05, 0.12) if bottom in ("skirt", "dress") else rng.uniform(0.0, 0.03)),
        legwear=bool(bottom != "trousers" and rng.random() < 0.3),
        shoe_height=float(rng.choice([0.0, rng.uniform(0.05, 0.2)], p=[0.7, 0.3])),
        hair_front=float(rng.uniform(0.62, 0.78)),
        hair_back=float(rng.uniform(-0.45, 0.35)),
        hair_thickness=float(rng.uniform(0.006, 0.03)),
    )


@dataclass
class ClothedBody:
    """Canonical clothed mesh of a subject: body vertices first, then the skirt's."""

    vertices: Float[Tensor, "Vc 3"]
    """Canonical (A-pose) clothed vertices."""
    faces: Int[Tensor, "Fc 3"]
    """Triangles (the body's faces first)."""
    weights: Float[Tensor, "Vc 24"]
    """LBS weights (the body's, blended for the skirt)."""
    texture_points: Float[Tensor, "Vc 3"]
    """Canonical position of the underlying body point, for solid textures that stick to the body."""
    face_material: Int[Tensor, "Fc"]
    """Material index of each face (see :data:`MATERIALS`)."""

    def pose(self, transforms: Float[Tensor, "24 4 4"]) -> Float[Tensor, "Vc 3"]:
        """Posed clothed vertices for the body's per-joint transforms."""
        return BodyModel.skin(self.vertices, self.weights, transforms.to(self.vertices.dtype))


def _smoothstep(x: Tensor, lo: float, hi: float) -> Tensor:
    t = ((x - lo) / (hi - lo)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def body_coordinates(body: BodyModel, vertices: Tensor, joints: Tensor) -> Dict[str, Tensor]:
    """Per-vertex garment coordinates on the canonical body: arm, leg and head coordinates."""
    region = body.vertex_region
    name = {n: i for i, n in enumerate(body.region_names)}
    left = vertices[:, 0] >= 0
    shoulder = torch.where(left[:, None], joints[16], joints[17])
    elbow = torch.where(left[:, None], joints[18], joints[19])
    wrist = torch.where(left[:, None], joints[20], joints[21])

    def along(a: Tensor, b: Tensor) -> Tensor:
        d = b - a
        return ((vertices - a) * d).sum(-1) / (d * d).sum(-1)

    t_upper = along(shoulder, elbow)
    t_lower = along(elbow, wrist)
    arm = torch.full_like(t_upper, -1.0)
    arm = torch.where(region == name["upper_arm"], 0.5 * t_upper.clamp(max=1.0), arm)
    arm = torch.where(region == name["lower_arm"], 0.5 + 0.5 * t_lower.clamp(min=0.0), arm)
    arm = torch.where(region == name["hand"], (0.5 + 0.5 * t_lower).clamp(min=1.0), arm)
    hip_z = 0.5 * (joints[1, 2] + joints[2, 2])
    ankle_z = 0.5 * (joints[7, 2] + joints[8, 2])
    leg = (hip_z - vertices[:, 2]) / (hip_z - ankle_z)
    head_top = vertices[region == name["head"], 2].max()
    head_h = (vertices[:, 2] - joints[15, 2]) / (head_top - joints[15, 2])
    head_back = (vertices[:, 1] - joints[15, 1]) / 0.1  # canonical bodies face -Y: positive = back of the head
    return {"arm": arm, "leg": leg, "head_h": head_h, "head_back": head_back}


def dress(body: BodyModel, vertices: Tensor, joints: Tensor, outfit: Outfit) -> ClothedBody:
    """Builds the canonical clothed mesh of a body shape wearing ``outfit``."""
    dtype = vertices.dtype
    region = body.vertex_region
    rid = {n: i for i, n in enumerate(body.region_names)}
    coords = body_coordinates(body, vertices, joints)
    arm, leg, z = coords["arm"], coords["leg"], vertices[:, 2]
    normals = vertex_normals(vertices, body.faces)
    is_region = {n: region == i for n, i in rid.items()}
    torso = is_region["chest"] | is_region["abdomen"] | is_region["hips"]
    hip_z = 0.5 * (joints[1, 2] + joints[2, 2])
    waist_z = joints[3, 2]
    skirt = outfit.bottom in ("skirt", "dress")

    material = torch.full_like(region, SKIN)
    offset = torch.zeros_like(z)

    # Hair: head (and, for long hair, neck-back) vertices above a hairline that drops from forehead to nape.
    hairline = outfit.hair_front + (outfit.hair_back - outfit.hair_front) * _smoothstep(coords["head_back"], -0.3, 0.5)
    hair = (is_region["head"] | is_region["neck"]) & (coords["head_h"] > hairline) & (coords["head_back"] > -0.9)
    hair &= ~(is_region["neck"] & (coords["head_back"] < 0.3))
    material[hair] = HAIR
    offset[hair] = outfit.hair_thickness * (0.4 + 0.6 * coords["head_h"][hair].clamp(0, 1))

    # Bottom: from just below the waist down to the hem (legs only for trousers/shorts; the skirt tube does the rest).
    bottom_top_z = waist_z - 0.25 * (waist_z - hip_z)
    legs = is_region["hips"] | is_region["abdomen"] | is_region["upper_leg"] | is_region["lower_leg"]
    bottom = legs & (z < bottom_top_z) & (leg <= (0.02 if skirt else outfit.bottom_length))
    material[bottom] = TOP if outfit.bottom == "dress" else BOTTOM
    if not skirt:
        flare = outfit.bottom_flare * (leg[bottom].clamp(0, 1) / max(outfit.bottom_length, 0.2)) ** 2
        offset[bottom] = outfit.bottom_ease + flare
    else:
        offset[bottom] = outfit.bottom_ease
    if outfit.legwear:
        tights = legs & ~bottom & (leg > 0) & (leg <= 1.02)
        material[tights] = LEGWEAR
        offset[tights] = 0.001

    # Top: torso above the hem and arms up to the sleeve, minus the neckline.
    hem_z = hip_z + outfit.top_hem * (waist_z - hip_z)
    hem_flare = outfit.top_hem_flare
    if skirt:  # tucked into the skirt (or one piece for a dress): the top ends where the skirt tube starts
        hem_z, hem_flare = bottom_top_z - 0.005, 0.0
    rel = vertices - joints[12]
    neck_dist = (rel * rel.new_tensor([1.8, 1.0, 1.0])).norm(dim=-1)  # narrower sideways: keep the shoulders covered
    arms = is_region["upper_arm"] | is_region["lower_arm"]  # arm < 0 on the shoulder cap: always covered
    top = (torso & (z > hem_z) & (neck_dist > outfit.neckline)) | (arms & (arm <= outfit.sleeve))
    material[top] = TOP
    sleeve_t = (arm[top] / max(outfit.sleeve, 0.05)).clamp(0, 1)
    hem_t = 1.0 - ((z[top] - hem_z) / 0.15).clamp(0, 1)
    offset[top] = (
        outfit.top_ease
        + outfit.sleeve_flare * torch.where(arms[top], sleeve_t**2, torch.zeros_like(sleeve_t))
        + hem_flare * torch.where(arms[top], torch.zeros_like(hem_t), hem_t**2)
    )

    # Shoes.
    shoes = is_region["foot"] | ((is_region["lower_leg"]) & (leg > 1.0 - outfit.shoe_height))
    material[shoes] = SHOES
    offset[shoes] = 0.006
    material[is_region["eye"]] = EYE
    material[is_region["interior"]] = INTERIOR

    clothed = vertices + offset[:, None].to(dtype) * normals
    faces = body.faces
    face_material = _face_materials(material, faces)
    weights = body.weights.to(dtype)
    texture = vertices
    if skirt:
        skirt_mat = TOP if outfit.bottom == "dress" else BOTTOM
        sv, sf, sw = _skirt(vertices, joints, weights, legs, outfit, float(bottom_top_z))
        faces = torch.cat([faces, sf + len(clothed)])
        face_material = torch.cat([face_material, torch.full((len(sf),), skirt_mat, dtype=torch.long)])
        clothed = torch.cat([clothed, sv])
        texture = torch.cat([texture, sv])
        weights = torch.cat([weights, sw])
    return ClothedBody(clothed, faces, weights, texture, face_material)


def _face_materials(material: Tensor, faces: Tensor) -> Tensor:
    """Face material: garments win over skin when a face straddles a hem; eyes/interior need all three vertices."""
    corner = material[faces]
    out = torch.full((len(faces),), SKIN, dtype=torch.long)
    for m in (EYE, INTERIOR):
        out[(corner == m).all(1)] = m
    for m in (LEGWEAR, HAIR, SHOES, BOTTOM, TOP):  # later ones win
        out[(corner == m).any(1)] = m
    return out


def _skirt(
    vertices: Tensor, joints: Tensor, weights: Tensor, legs: Tensor, outfit: Outfit, top_z: float
) -> tuple[Tensor, Tensor, Tensor]:
    """A flared tube from the waist to the hem, wide enough for the legs of the walk to stay inside."""
    dtype = vertices.dtype
    rings, segments = 12, 72
    hip_z = float(0.5 * (joints[1, 2] + joints[2, 2]))
    ankle_z = float(0.5 * (joints[7, 2] + joints[8, 2]))
    hem_z = hip_z - outfit.bottom_length * (hip_z - ankle_z)
    centre = torch.stack([joints[0, 0], 0.5 * (joints[0, 1] + joints[3, 1])]).to(dtype)
    theta = torch.arange(segments, dtype=dtype) * (2 * np.pi / segments)  # 0 = +X (the subject's left)
    ring_z = torch.linspace(top_z, hem_z, rings, dtype=dtype)

    # Body extent per angle bin and ring (the legs and hips below the waist), made non-decreasing downwards.
    sel = legs & (vertices[:, 2] < top_z + 0.03)
    pts = vertices[sel]
    rel = pts[:, :2] - centre
    r = rel.norm(dim=-1)
    ang_bin = (torch.atan2(rel[:, 1], rel[:, 0]) % (2 * np.pi) / (2 * np.pi) * segments).long() % segments
    extent = torch.zeros(rings, segments, dtype=dtype)
    for k in range(rings):
        near = (pts[:, 2] - ring_z[k]).abs() < 0.04
        if near.any():
            extent[k].scatter_reduce_(0, ang_bin[near], r[near], reduce="amax")
    extent = torch.stack([torch.roll(extent, s, 1) for s in (-2, -1, 0, 1, 2)]).amax(0)
    extent = torch.cummax(extent, dim=0).values
    depth = (top_z - ring_z) / max(top_z - hem_z, 1e-3)  # 0 at the waist, 1 at the hem
    # Room for the legs swinging forward/back (front and back of the skirt, growing with the distance to the hips).
    swing = (hip_z - ring_z).clamp(min=0)[:, None] * np.tan(0.4) * torch.sin(theta).abs()[None]
    radius = extent + outfit.bottom_ease + swing * depth[:, None] + outfit.bottom_flare * depth[:, None] ** 1.5
    kernel = torch.stack([torch.roll(radius, s, 1) for s in range(-3, 4)]).mean(0)
    radius = torch.maximum(kernel, extent + outfit.bottom_ease)
    xy = centre + radius[..., None] * torch.stack([torch.cos(theta), torch.sin(theta)], -1)[None]
    skirt_v = torch.cat([xy, ring_z[:, None, None].expand(rings, segments, 1)], -1).reshape(-1, 3)

    # Skinning: the top ring follows the nearest body vertex; lower rings blend in the hip joints by side.
    top_ring = skirt_v[:segments]
    nearest = torch.cdist(top_ring, vertices).argmin(1)
    w_top = weights[nearest]  # (segments, 24)
    lam = (0.5 + 0.35 * torch.cos(theta))[:, None]
    w_legs = torch.zeros(segments, 24, dtype=dtype)
    w_legs[:, 1:2] = lam
    w_legs[:, 2:3] = 1 - lam
    blend = (0.6 * depth)[:, None, None]
    skirt_w = ((1 - blend) * w_top[None] + blend * w_legs[None]).reshape(-1, 24)

    i = torch.arange(rings - 1)[:, None]
    j = torch.arange(segments)[None]
    a, b = i * segments + j, i * segments + (j + 1) % segments
    c, d = a + segments, b + segments
    # Counter-clockwise seen from outside (outward normals): z decreases with the ring index, theta grows to the left.
    skirt_f = torch.cat([torch.stack([a, c, b], -1), torch.stack([b, c, d], -1)], 0).reshape(-1, 3)
    return skirt_v, skirt_f.long(), skirt_w
