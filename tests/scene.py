"""A tiny procedural scene for model tests: a textured cylinder 'person' seen by a ring of cameras."""

from __future__ import annotations

import math

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType

from gmnerf_ns.geometry.camera_math import opencv_w2c_to_nerfstudio_c2w
from gmnerf_ns.model.sources import SourceViews


def look_at(center: torch.Tensor, target: torch.Tensor):
    """OpenCV world-to-camera (R, T) of a camera at ``center`` looking at ``target`` with world z up."""
    z = (target - center) / (target - center).norm()
    x = torch.linalg.cross(z, torch.tensor([0.0, 0.0, 1.0]))
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])
    return R, -R @ center


def ring_cameras(num: int, size: int, radius: float = 3.0):
    """(K, Rs, Ts) of ``num`` cameras on a ring looking at the cylinder's middle."""
    K = torch.tensor([[size * 1.6, 0.0, size / 2], [0.0, size * 1.6, size / 2], [0.0, 0.0, 1.0]])
    Rs, Ts = [], []
    for k in range(num):
        a = 2 * math.pi * k / num
        R, T = look_at(torch.tensor([radius * math.cos(a), radius * math.sin(a), 0.9]), torch.tensor([0.0, 0.0, 0.85]))
        Rs.append(R)
        Ts.append(T)
    return K, torch.stack(Rs), torch.stack(Ts)


def cylinder_vertices(n: int = 1500, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    th = torch.rand(n, generator=g) * 2 * math.pi
    z = torch.rand(n, generator=g) * 1.7
    return torch.stack([0.25 * torch.cos(th), 0.18 * torch.sin(th), z], dim=-1)


def render_cylinder(K, R, T, size: int):
    """Analytic render of the cylinder (x/0.25)^2 + (y/0.18)^2 <= 1, 0 <= z <= 1.7: colour by height and angle."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    d_cam = torch.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], torch.ones_like(xs)], -1)
    d = d_cam @ R  # R^T d
    o = -R.T @ T
    a = (d[..., 0] / 0.25) ** 2 + (d[..., 1] / 0.18) ** 2
    b = 2 * (o[0] * d[..., 0] / 0.25**2 + o[1] * d[..., 1] / 0.18**2)
    c = (o[0] / 0.25) ** 2 + (o[1] / 0.18) ** 2 - 1
    disc = b * b - 4 * a * c
    t = (-b - disc.clamp(min=0).sqrt()) / (2 * a)
    p = o + t[..., None] * d
    hit = (disc > 0) & (p[..., 2] >= 0) & (p[..., 2] <= 1.7)
    angle = torch.atan2(p[..., 1], p[..., 0])
    rgb = torch.stack([0.5 + 0.4 * torch.sin(3 * angle), (p[..., 2] / 1.7).clamp(0, 1), 0.5 + 0.4 * torch.cos(6 * p[..., 2])], -1)
    mask = hit.float()[..., None]
    return rgb * mask, mask


def cylinder_sources(cams=(0, 2, 4, 6), num_cameras: int = 8, size: int = 32) -> SourceViews:
    K, Rs, Ts = ring_cameras(num_cameras, size)
    images, masks = zip(*[render_cylinder(K, Rs[c], Ts[c], size) for c in cams])
    verts = cylinder_vertices()
    return SourceViews(
        images=torch.stack(images).permute(0, 3, 1, 2).contiguous(),
        masks=torch.stack(masks).permute(0, 3, 1, 2).contiguous(),
        intrinsics=K.expand(len(cams), 3, 3).clone(),
        rotations=Rs[list(cams)].clone(),
        translations=Ts[list(cams)].clone(),
        vertices=verts,
        bbox=torch.stack([verts.min(0).values - 0.05, verts.max(0).values + 0.05]),
        subject_index=0,
        frame_id=0,
        camera_indices=tuple(cams),
    )


def nerfstudio_camera(cam: int, num_cameras: int = 8, size: int = 32) -> Cameras:
    """The nerfstudio camera of ring camera ``cam``, with subject/frame metadata."""
    K, Rs, Ts = ring_cameras(num_cameras, size)
    c2w = torch.from_numpy(opencv_w2c_to_nerfstudio_c2w(Rs[cam].numpy(), Ts[cam].numpy())).float()
    camera = Cameras(camera_to_worlds=c2w[None], fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2], width=size,
                     height=size, camera_type=CameraType.PERSPECTIVE)
    camera.metadata = {"subject_index": torch.tensor([[0]]), "frame_id": torch.tensor([[0]])}
    return camera


def target_image(cam: int, num_cameras: int = 8, size: int = 32):
    K, Rs, Ts = ring_cameras(num_cameras, size)
    return render_cylinder(K, Rs[cam], Ts[cam], size)
