"""Camera rays of the rendered pixels and where they cross the proxy's box.

Ray generation and the slab test only: sampling along the rays and compositing are in
:mod:`gmnerf_ns.model.rendering`.
"""

from __future__ import annotations

import copy
from typing import Tuple

import torch
from jaxtyping import Bool, Float
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.utils.math import intersect_aabb
from torch import Tensor


def pixel_centres(y0: int, x0: int, height: int, width: int, factor: int,
                  device: torch.device) -> Float[Tensor, "R 2"]:
    """(y, x) full-resolution coordinates of the centres of a (height, width) grid of ``factor`` x ``factor`` pixel
    cells whose top-left corner is pixel (y0, x0), row-major."""
    ys = y0 + (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * factor
    xs = x0 + (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * factor
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).view(-1, 2)


def camera_rays(camera: Cameras, coords_yx: Float[Tensor, "R 2"]) -> Tuple[Float[Tensor, "R 3"], Float[Tensor, "R 3"]]:
    """World-space rays of one camera through the given (y, x) image coordinates (pixel centres at +0.5).

    An undistorted pinhole camera (every camera the gm-nerf dataparsers make) is unprojected here with nerfstudio's
    formulas: nerfstudio's general ray generation dispatches on camera types with boolean masks, about ten host syncs
    per call. Other cameras (fisheye, equirectangular, distortion; e.g. from ``ns-render`` camera paths) use
    nerfstudio's ray generation on a metadata-free copy, so no per-ray metadata is gathered.
    """
    if camera.distortion_params is None and int(camera.camera_type.reshape(-1)[0]) == CameraType.PERSPECTIVE.value:
        y = coords_yx[:, 0]
        x = coords_yx[:, 1]
        fx, fy, cx, cy = (v.reshape(()) for v in (camera.fx, camera.fy, camera.cx, camera.cy))
        c2w = camera.camera_to_worlds.reshape(3, 4)
        local = torch.stack([(x - cx) / fx, -((y - cy) / fy), -torch.ones_like(x)], -1)  # OpenCV -> OpenGL axes
        directions = torch.sum(local[:, None, :] * c2w[:, :3], dim=-1)
        directions = directions / torch.linalg.vector_norm(directions, dim=-1, keepdim=True)
        return c2w[:, 3].expand_as(directions), directions
    bare = copy.copy(camera)
    bare.metadata = None
    bare.times = None
    bundle = bare.generate_rays(camera_indices=0, coords=coords_yx)
    return bundle.origins.view(-1, 3), bundle.directions.view(-1, 3)


def ray_box_intersection(
    origins: Float[Tensor, "R 3"], directions: Float[Tensor, "R 3"], bbox: Float[Tensor, "2 3"]
) -> Tuple[Float[Tensor, "R"], Float[Tensor, "R"], Bool[Tensor, "R"]]:
    """Near/far distances of each ray through the box (near clamped at 0), and whether it hits at all.

    nerfstudio's ``intersect_aabb`` slab test, with two changes: direction components below 1e-9 are nudged to 1e-9
    (its division gives 0/0 = NaN for an axis-parallel ray starting on a face plane), and a miss reads near = far = 0
    rather than its 1e10, so that the samples of a missing ray stay finite.
    """
    directions = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    near, far = intersect_aabb(origins, directions, bbox.reshape(6))
    hit = far > near
    near = torch.where(hit, near, 0.0)
    return near, torch.where(hit, far, near), hit
