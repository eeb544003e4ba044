"""Source views (the m conditioning images with cameras) and the posed geometry proxy, as the model receives them.

The datamanager builds a :class:`SourceViews` per subject-frame; it reaches the model as an argument (training) or
through a provider looked up by the target camera's metadata (ns-eval, ns-render, viewer), never as per-ray metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from gmnerf_ns.geometry.camera_math import inside_image, project_to_views, world_to_views
from gmnerf_ns.geometry.rasterize import rasterize_depth


@dataclass
class SourceViews:
    """m calibrated source images of one subject-frame plus its posed proxy. Cameras are OpenCV world-to-camera."""

    images: Float[Tensor, "m 3 H W"]
    """Source RGB in [0, 1], background black."""
    masks: Float[Tensor, "m 1 H W"]
    """Foreground masks in {0, 1}."""
    intrinsics: Float[Tensor, "m 3 3"]
    rotations: Float[Tensor, "m 3 3"]
    translations: Float[Tensor, "m 3"]
    vertices: Float[Tensor, "V 3"]
    """Posed proxy vertices, world metres (any template)."""
    bbox: Float[Tensor, "2 3"]
    """Padded axis-aligned box of the proxy: sampling happens only inside it."""
    faces: Optional[Int[Tensor, "F 3"]] = None
    """Proxy mesh faces when the template's are known; visibility falls back to vertex splatting otherwise."""
    subject_index: int = -1
    frame_id: int = -1
    camera_indices: Tuple[int, ...] = ()

    @property
    def num_views(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> Tuple[int, int]:
        """(height, width) of the source images."""
        return self.images.shape[-2], self.images.shape[-1]

    @property
    def camera_centers(self) -> Float[Tensor, "m 3"]:
        return -torch.bmm(self.translations[:, None], self.rotations)[:, 0]  # -R^T T, as T^T R: one bmm

    def to(self, device: torch.device | str) -> "SourceViews":
        """A copy with every tensor on ``device``."""
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = value.to(device) if isinstance(value, Tensor) else value
        return SourceViews(**values)


def normalize_uv(uv: Float[Tensor, "m N 2"], height: int, width: int) -> Float[Tensor, "m N 2"]:
    """Pixel coordinates -> grid_sample coordinates in [-1, 1] (align_corners=False)."""
    scale = uv.new_tensor([2.0 / width, 2.0 / height])
    return uv * scale - 1.0


def sample_maps(
    maps: Float[Tensor, "m C h w"], uv: Float[Tensor, "m N 2"], height: int, width: int
) -> Float[Tensor, "m N C"]:
    """Bilinearly samples per-view maps at pixel coordinates given in the *source image* resolution (H, W)."""
    grid = normalize_uv(uv, height, width)[:, :, None, :]  # (m, N, 1, 2)
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (m, C, N, 1)
    return out[..., 0].permute(0, 2, 1)


BACKGROUND_DEPTH = 1e3
"""Depth (metres) stored where no proxy surface is seen, so the maps stay finite for bilinear sampling."""


@torch.no_grad()
def proxy_depth_maps(sources: SourceViews, resolution: int = 128, use_mesh: bool = True) -> Float[Tensor, "m 1 h w"]:
    """Depth of the proxy's front surface in every source view, at ``resolution`` pixels along the longest side.

    With faces (and ``use_mesh``) the proxy mesh is rasterised; without faces (ZJU-MoCap ships vertices only) vertex
    depths are splatted into a z-buffer and dilated by one pixel so that the surface has no holes. Background pixels
    hold :data:`BACKGROUND_DEPTH`. Sample these maps with :func:`sample_maps` in source-image pixel coordinates.
    """
    height, width = sources.image_size
    scale = resolution / max(height, width)
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    K = sources.intrinsics.clone()
    K[:, :2] *= scale
    if use_mesh and sources.faces is not None:
        zbuffer = _mesh_depth(sources, K, h, w)
    else:
        uv, depth = project_to_views(sources.vertices, K, sources.rotations, sources.translations)
        zbuffer = splat_depth(uv, depth, h, w)
    return zbuffer.clamp(max=BACKGROUND_DEPTH)[:, None]


@torch.no_grad()
def vertex_visibility(
    sources: SourceViews,
    depth_maps: Float[Tensor, "m 1 h w"],
    depth_tolerance: float = 0.03,
) -> Bool[Tensor, "m V"]:
    """Per-view visibility of the proxy vertices: a vertex is visible when it projects inside the image and lies
    within ``depth_tolerance`` metres of the proxy's front surface (:func:`proxy_depth_maps`)."""
    height, width = sources.image_size
    h, w = depth_maps.shape[-2:]
    uv, depth = project_to_views(sources.vertices, sources.intrinsics, sources.rotations, sources.translations)
    px = (uv[..., 0] * w / width).floor().long().clamp(0, w - 1)
    py = (uv[..., 1] * h / height).floor().long().clamp(0, h - 1)
    front = torch.gather(depth_maps.reshape(depth_maps.shape[0], -1), 1, py * w + px)  # (m, V)
    return inside_image(uv, depth, height, width) & (depth <= front + depth_tolerance)


def splat_depth(uv: Float[Tensor, "m V 2"], depth: Float[Tensor, "m V"], h: int, w: int) -> Float[Tensor, "m h w"]:
    """Z-buffer of vertex depths splatted at their (u, v) pixels and min-pooled 3x3 (``inf`` where none is near).

    Vertices outside the image or behind the camera are ignored (fixed shapes: no boolean indexing, no host sync).
    """
    m = uv.shape[0]
    inside = inside_image(uv, depth, h, w)
    px = uv[..., 0].floor().long().clamp(0, w - 1)
    py = uv[..., 1].floor().long().clamp(0, h - 1)
    flat = torch.arange(m, device=uv.device)[:, None] * h * w + py * w + px
    flat = torch.where(inside, flat, m * h * w)  # outside vertices land in a spare cell: fixed shapes, no host sync
    zbuffer = torch.full((m * h * w + 1,), float("inf"), device=uv.device)
    zbuffer.scatter_reduce_(0, flat.reshape(-1), depth.reshape(-1), reduce="amin")
    zbuffer = zbuffer[:-1].view(m, 1, h, w)
    # min-pool (a 3x3 dilation of the splats) closes the gaps between vertices
    zbuffer = -F.max_pool2d(-zbuffer, kernel_size=3, stride=1, padding=1)
    return zbuffer[:, 0]


def _mesh_depth(sources: SourceViews, K: Float[Tensor, "m 3 3"], h: int, w: int) -> Float[Tensor, "m h w"]:
    return rasterize_depth(world_to_views(sources.vertices, sources.rotations, sources.translations), sources.faces, K,
                           h, w)
