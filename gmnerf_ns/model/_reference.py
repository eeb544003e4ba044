"""References for the model's fast ops (boolean-indexed or textbook twins), slow and simple on purpose."""

from __future__ import annotations

import copy
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from gmnerf_ns.geometry.camera_math import inside_image


def reference_slab_test(origins: Tensor, directions: Tensor, bbox: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The slab test ``ray_box_intersection`` was before it used nerfstudio's ``intersect_aabb``."""
    inv = 1.0 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0 = (bbox[0] - origins) * inv
    t1 = (bbox[1] - origins) * inv
    near = torch.minimum(t0, t1).max(dim=-1).values.clamp(min=0.0)
    far = torch.maximum(t0, t1).min(dim=-1).values
    hit = far > near
    return near, torch.where(hit, far, near), hit


def reference_positional_encoding(x: Tensor, num_frequencies: int) -> Tensor:
    """The encoding the pretrained weights were trained with: [x, sin(2^k pi x), cos(2^k pi x)], k < F."""
    if num_frequencies == 0:
        return x
    freqs = 2.0 ** torch.arange(num_frequencies, dtype=x.dtype) * torch.pi
    scaled = x[..., None] * freqs  # (N, D, F)
    return torch.cat([x, torch.sin(scaled).flatten(-2), torch.cos(scaled).flatten(-2)], dim=-1)


def reference_view_attention(att, query: Tensor, keys: Tensor, values: Tensor, valid: Tensor) -> Tuple[Tensor, Tensor]:
    """``ViewAttention`` as textbook multi-head attention: per-token key/value projections; (output, mean weights)."""
    n, t = keys.shape[:2]
    heads, hd = att.num_heads, att.head_dim
    qh = att.to_q(query).view(n, 1, heads, hd)
    kh, vh = att.to_k(keys).view(n, t, heads, hd), att.to_v(values).view(n, t, heads, hd)
    logits = (qh * kh).sum(-1) / hd**0.5
    mask = valid | ~valid.any(1, keepdim=True)
    w = torch.softmax(logits.masked_fill(~mask[..., None], float("-inf")), dim=1)
    return att.to_out((w[..., None] * vh).sum(1).reshape(n, -1)), w.mean(-1)


def reference_splat_depth(uv: Tensor, depth: Tensor, h: int, w: int) -> Tensor:
    """``splat_depth`` with boolean indexing: only the vertices inside the image are splatted, then min-pooled."""
    m = uv.shape[0]
    inside = inside_image(uv, depth, h, w)
    px = uv[..., 0].floor().long().clamp(0, w - 1)
    py = uv[..., 1].floor().long().clamp(0, h - 1)
    flat = (torch.arange(m)[:, None] * h * w + py * w + px)[inside]
    zbuffer = torch.full((m * h * w,), float("inf")).scatter_reduce_(0, flat, depth[inside], reduce="amin")
    return -F.max_pool2d(-zbuffer.view(m, 1, h, w), kernel_size=3, stride=1, padding=1)[:, 0]


def reference_splat_to_grid(codes: Tensor, points: Tensor, shape: Tuple[int, int, int]) -> Tensor:
    """``splat_to_grid`` with boolean indexing: trilinear splats of each corner that falls inside the grid."""
    nx, ny, nz = shape
    count, channels = codes.shape
    coords = (points.clamp(-1, 1) + 1) * 0.5 * points.new_tensor([nx - 1, ny - 1, nz - 1])
    base = coords.floor().long()
    frac = coords - base
    grid = codes.new_zeros(channels + 1, nz * ny * nx)
    values = torch.cat([codes, codes.new_ones(count, 1)], 1).T
    for corner in range(8):
        offset = torch.tensor([(corner >> 0) & 1, (corner >> 1) & 1, (corner >> 2) & 1])
        idx = base + offset
        weight = torch.prod(torch.where(offset.bool(), frac, 1 - frac), dim=1)
        ok = (idx[:, 0] < nx) & (idx[:, 1] < ny) & (idx[:, 2] < nz)
        flat = (idx[:, 2] * ny + idx[:, 1]) * nx + idx[:, 0]
        grid.index_add_(1, flat[ok], values[:, ok] * weight[ok])
    weight = grid[-1:]
    return torch.cat([grid[:-1] / weight.clamp(min=1e-6), weight.clamp(max=1.0)], 0).view(channels + 1, nz, ny, nx)


def reference_sample_volume(volume: Tensor, points: Tensor, padding_mode: str = "border") -> Tensor:
    """``sample_volume`` as one ``grid_sample`` call over all points: (P, C)."""
    return F.grid_sample(volume, points[None, :, None, None, :], mode="bilinear", padding_mode=padding_mode,
                         align_corners=True)[0, :, :, 0, 0].T


def reference_dilate(occupied: Tensor, radius: int) -> Tensor:
    """``dilate`` as one cubic ``max_pool3d``."""
    return F.max_pool3d(occupied, 2 * radius + 1, stride=1, padding=radius)


def reference_camera_rays(camera, coords_yx: Tensor) -> Tuple[Tensor, Tensor]:
    """``camera_rays`` as nerfstudio's own ``Cameras.generate_rays`` of a one-camera ``Cameras``: (origins, dirs)."""
    bare = copy.copy(camera)
    bare.metadata, bare.times = None, None
    bundle = bare.generate_rays(camera_indices=0, coords=coords_yx)
    return bundle.origins.view(-1, 3), bundle.directions.view(-1, 3)
