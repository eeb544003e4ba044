"""A vectorised torch z-buffer triangle rasteriser (CPU or CUDA, no extra dependency).

Used by the synthetic data generator to render people and by the model to find which proxy vertices each source view
sees. It enumerates (triangle, pixel) pairs with ``repeat_interleave`` over each triangle's scanline spans (the
pixels between its edges on each row, about a third of its bounding box), keeps the pairs whose pixel centre passes
the barycentric inside test, and resolves visibility with one ``scatter_reduce(amin)`` on a packed int64 key
(float32 depth bits in the high word, face id in the low word), so ties are broken by the lower face id and the
result does not depend on evaluation order. Interpolation is perspective-correct (1/z is affine in screen space).

Pixel convention (the same as nerfstudio's ray generation): camera coordinates follow OpenCV (``x_cam = R x + T``,
x right, y down, z forward) and ``K`` maps them to continuous image coordinates in which pixel ``(i, j)`` (column i,
row j) covers ``[i, i+1) x [j, j+1)`` and has its centre at ``(i + 0.5, j + 0.5)``. A point that projects to
``uv = (u, v)`` therefore lies in pixel ``(floor(u), floor(v))``, and an image of width W has its optical centre at
``cx = W / 2``. The rasteriser samples each pixel at its centre.

Anti-aliasing (for the generator) is by supersampling: rasterise with :func:`scale_intrinsics` ``(K, s)`` at
``s x`` the size, shade, then :func:`area_downsample` the colours. The mask is kept exactly binary by thresholding the
coverage (:func:`coverage_mask`): a pixel is foreground when at least half of its ``s x s`` sub-samples hit the
surface, which is the area analogue of the pixel-centre test of a ``1 x`` rendering.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

_NO_HIT = torch.iinfo(torch.int64).max


class Rasterized(NamedTuple):
    """Per-pixel result of :func:`rasterize`."""

    face_id: Int[Tensor, "H W"]
    """Index of the visible face, -1 for background."""
    bary: Float[Tensor, "H W 3"]
    """Perspective-correct barycentric coordinates of the pixel centre in the visible face (zeros for background)."""
    depth: Float[Tensor, "H W"]
    """Camera-space z of the visible surface (``inf`` for background)."""


def _triangle_setup(
    tri_uv: Float[Tensor, "*bs 3 2"], tri_z: Float[Tensor, "*bs 3"], near: float
) -> Tuple[Float[Tensor, "*bs 9"], Float[Tensor, "*bs"]]:
    """Per-triangle parameters of the coverage and depth tests, and the signed screen-space area.

    Edge functions as affine maps of the pixel offset from vertex 0, normalised to barycentrics (local offsets keep
    float32 exact enough for tiny triangles far from the image origin): ``params`` = (u0, v0, four barycentric
    coefficients, 1/z of the three vertices).
    """
    d1 = tri_uv[..., 1, :] - tri_uv[..., 0, :]
    d2 = tri_uv[..., 2, :] - tri_uv[..., 0, :]
    area = d1[..., 0] * d2[..., 1] - d1[..., 1] * d2[..., 0]
    inv_area = 1.0 / torch.where(area == 0, torch.ones_like(area), area)
    # b1 = cross(p, d2) / area... written out: b1 = (d2y px - d2x py) / area, b2 = (d1x py - d1y px) / area.
    inv_z = 1.0 / tri_z.clamp_min(near)
    params = torch.stack(
        [
            tri_uv[..., 0, 0],
            tri_uv[..., 0, 1],
            d2[..., 1] * inv_area,
            -d2[..., 0] * inv_area,
            -d1[..., 1] * inv_area,
            d1[..., 0] * inv_area,
            inv_z[..., 0],
            inv_z[..., 1],
            inv_z[..., 2],
        ],
        -1,
    )
    return params, area


def _barycentrics(params: Float[Tensor, "*bs 9"], px: Tensor, py: Tensor) -> Tuple[Tensor, Tensor]:
    """Screen-space barycentrics (b1, b2) of vertices 1 and 2 at pixel centres ``(px + 0.5, py + 0.5)``."""
    dx = px.float() + 0.5 - params[..., 0]
    dy = py.float() + 0.5 - params[..., 1]
    return params[..., 2] * dx + params[..., 3] * dy, params[..., 4] * dx + params[..., 5] * dy


def _inverse_depth(params: Float[Tensor, "*bs 9"], b1: Tensor, b2: Tensor) -> Tensor:
    """1/z at barycentrics (b1, b2): 1/z is affine in screen space."""
    return (1.0 - b1 - b2) * params[..., 6] + b1 * params[..., 7] + b2 * params[..., 8]


@torch.no_grad()
def rasterize(
    verts_cam: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    K: Float[Tensor, "3 3"],
    height: int,
    width: int,
    near: float = 1e-3,
    max_pairs: int = 1 << 21,
) -> Rasterized:
    """Z-buffer rasterisation of a triangle mesh given in OpenCV camera coordinates, sampled at pixel centres.

    Both faces orientations are drawn (no back-face culling). Triangles with a vertex closer than ``near`` are
    dropped (no clipping); a pixel centre exactly on a shared edge is covered by both triangles and the nearer wins.

    Args:
        verts_cam: vertices in camera coordinates (metres, z forward).
        faces: vertex indices of each triangle.
        K: intrinsics, pixel-centre convention of the module docstring.
        height: image height in pixels.
        width: image width in pixels.
        near: minimum vertex depth of a drawn triangle.
        max_pairs: (triangle, pixel) pairs processed at once; bounds the memory (~60 bytes per pair).
    """
    device = verts_cam.device
    verts = verts_cam.float()
    faces = faces.long().to(device)
    K = torch.as_tensor(K, dtype=torch.float32, device=device)
    z = verts[:, 2]
    uv = (verts @ K.T)[:, :2] / z.clamp_min(near)[:, None]
    tri_uv = uv[faces]  # (F, 3, 2)
    tri_z = z[faces]  # (F, 3)
    params, area = _triangle_setup(tri_uv, tri_z, near)  # (F, 9), (F,)
    row_face, row_y, col_lo, counts = _scanline_spans(tri_uv, tri_z, area, near, height, width)
    zbuf = _depth_buffer(params, row_face, row_y, col_lo, counts, height, width, max_pairs)
    return _resolve(zbuf, params, height, width)


def _scanline_spans(
    tri_uv: Float[Tensor, "F 3 2"], tri_z: Float[Tensor, "F 3"], area: Float[Tensor, "F"], near: float, height: int,
    width: int
) -> Tuple[Int[Tensor, "R"], Int[Tensor, "R"], Int[Tensor, "R"], Int[Tensor, "R"]]:
    """The pixel rows each drawn triangle can cover and, per (face, row), its first column and column count:
    ``(row_face, row_y, col_lo, counts)``."""
    device = tri_uv.device
    # Rows whose pixel centres (j + 0.5) can meet the triangle.
    y_lo = torch.ceil(tri_uv[..., 1].amin(1) - 0.5).clamp(min=0)
    y_hi = torch.floor(tri_uv[..., 1].amax(1) - 0.5).clamp(max=height - 1)
    x_min, x_max = tri_uv[..., 0].amin(1), tri_uv[..., 0].amax(1)
    keep = (tri_z > near).all(1) & (area.abs() > 1e-10) & (y_hi >= y_lo) & (x_max > -0.5) & (x_min < width + 0.5)
    face_ids = torch.nonzero(keep)[:, 0]
    rows_per_face = (y_hi - y_lo + 1)[face_ids].long()

    # Scanline spans: each (face, row) gets the columns between its edges' crossings of the row's centre line, widened
    # by a hair so that the barycentric test stays the only judge of coverage.
    row_face = torch.repeat_interleave(face_ids, rows_per_face)
    first_row = torch.cumsum(rows_per_face, 0) - rows_per_face
    row_in_face = torch.arange(len(row_face), device=device) - torch.repeat_interleave(first_row, rows_per_face)
    row_y = y_lo[row_face].long() + row_in_face
    tri = tri_uv[row_face]  # (R, 3, 2)
    a, b = tri, tri.roll(-1, dims=1)  # edges 0-1, 1-2, 2-0
    yc = row_y.float()[:, None] + 0.5
    dy = b[..., 1] - a[..., 1]
    t = (yc - a[..., 1]) / torch.where(dy == 0, torch.ones_like(dy), dy)
    crosses = (dy != 0) & (t >= -1e-4) & (t <= 1 + 1e-4)
    x = a[..., 0] + t.clamp(0, 1) * (b[..., 0] - a[..., 0])
    span_lo = torch.where(crosses, x, torch.full_like(x, float("inf"))).amin(1)
    span_hi = torch.where(crosses, x, torch.full_like(x, -float("inf"))).amax(1)
    col_lo = torch.ceil(span_lo - 0.5 - 1e-3).clamp(min=0)
    col_hi = torch.floor(span_hi - 0.5 + 1e-3).clamp(max=width - 1)
    counts = torch.where(torch.isfinite(span_lo), col_hi - col_lo + 1, torch.zeros_like(col_lo)).clamp(min=0).long()
    return row_face, row_y, col_lo.long(), counts


def _depth_buffer(
    params: Float[Tensor, "F 9"], row_face: Int[Tensor, "R"], row_y: Int[Tensor, "R"], col_lo: Int[Tensor, "R"],
    counts: Int[Tensor, "R"], height: int, width: int, max_pairs: int
) -> Int[Tensor, "num_pixels"]:
    """Per pixel, the packed (depth bits, face id) key of the nearest covering face (``_NO_HIT`` for background),
    from the (row, pixel) pairs of the scanline spans that pass the barycentric inside test."""
    device = params.device
    zbuf = torch.full((height * width,), _NO_HIT, dtype=torch.int64, device=device)
    # Group consecutive rows into chunks of about max_pairs (row, pixel) pairs (a single huge row is its own chunk).
    chunk = torch.div(torch.cumsum(counts, 0) - 1, max_pairs, rounding_mode="floor")
    change = torch.nonzero(chunk[1:] != chunk[:-1])[:, 0] + 1
    bounds = [0] + change.tolist() + [len(row_face)] if len(row_face) else [0]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        cnt = counts[start:stop]
        pair = torch.repeat_interleave(torch.arange(start, stop, device=device), cnt)
        px = col_lo[pair] + torch.arange(int(cnt.sum()), device=device) - (torch.cumsum(cnt, 0) - cnt)[pair - start]
        py = row_y[pair]
        f = row_face[pair]
        p = params[f]
        b1, b2 = _barycentrics(p, px, py)
        inside = (b1 >= 0) & (b2 >= 0) & (b1 + b2 <= 1)
        p, b1, b2 = p[inside], b1[inside], b2[inside]
        key = ((1.0 / _inverse_depth(p, b1, b2)).view(torch.int32).long() << 32) | f[inside]
        zbuf.scatter_reduce_(0, (py * width + px)[inside], key, reduce="amin", include_self=True)
    return zbuf


def _resolve(zbuf: Int[Tensor, "num_pixels"], params: Float[Tensor, "F 9"], height: int, width: int) -> Rasterized:
    """Face ids, perspective-correct barycentrics and depths of the visible surface from the depth buffer's keys."""
    device = zbuf.device
    hit = zbuf != _NO_HIT
    face_id = torch.where(hit, zbuf & 0xFFFFFFFF, torch.full_like(zbuf, -1))
    bary = torch.zeros(height * width, 3, dtype=torch.float32, device=device)
    depth_img = torch.full((height * width,), float("inf"), dtype=torch.float32, device=device)
    pix = torch.nonzero(hit)[:, 0]
    if len(pix):
        p = params[face_id[pix]]
        b1, b2 = _barycentrics(p, pix % width, torch.div(pix, width, rounding_mode="floor"))
        b = torch.stack([1.0 - b1 - b2, b1, b2], -1)
        w = b.clamp_min(0) * p[:, 6:9]  # screen-space weights over depth: perspective-correct interpolation
        bary[pix] = w / w.sum(-1, keepdim=True)
        depth_img[pix] = (zbuf[pix] >> 32).int().view(torch.float32)
    return Rasterized(face_id.reshape(height, width), bary.reshape(height, width, 3), depth_img.reshape(height, width))


@torch.no_grad()
def rasterize_depth(
    verts_cam: Float[Tensor, "m V 3"],
    faces: Int[Tensor, "F 3"],
    K: Float[Tensor, "m 3 3"],
    height: int,
    width: int,
    near: float = 1e-3,
    max_window: int = 6,
    max_pairs: int = 1 << 22,
    compact: Optional[bool] = None,
) -> Float[Tensor, "m H W"]:
    """Depth images (``inf`` for background) of one mesh seen by m cameras: :func:`rasterize`'s depth, in fixed shapes.

    For small triangles (the body proxy at the model's visibility resolution covers one to a few pixels per face) every
    (view, face) pair tests the same ``k x k`` window of pixel centres, where k is the largest footprint of any face, so
    no step depends on how many pixels a face covers: one host read (k), no boolean compaction. The coverage test
    (barycentrics at pixel centres) and the depth (1/z interpolated in screen space, nearest wins) are
    :func:`rasterize`'s, so the depth images are the same. Views whose faces need a window larger than ``max_window``
    go through :func:`rasterize`.

    ``compact`` (default: on CPU) first drops the (view, face) pairs that cover no pixel centre and tests the others
    with the window their own footprint needs (1 x 1, 2 x 2 or k x k): the same tests on the same candidates, so the
    same depth images, at 3 more host reads. At the model's visibility resolution most pairs cover nothing and most
    others need one pixel, so on a CPU this skips most of the work; on a GPU the fixed shapes keep the step free of
    host syncs.
    """
    device = verts_cam.device
    verts = verts_cam.float()
    faces = faces.long().to(device)
    K = torch.as_tensor(K, dtype=torch.float32, device=device)
    m = verts.shape[0]
    z = verts[..., 2]  # (m, V)
    uv = torch.bmm(verts, K.transpose(1, 2))[..., :2] / z.clamp_min(near)[..., None]
    tri_uv, tri_z = uv[:, faces], z[:, faces]  # (m, F, 3, 2), (m, F, 3)
    params, area = _triangle_setup(tri_uv, tri_z, near)  # (m, F, 9), (m, F)
    y_lo = torch.ceil(tri_uv[..., 1].amin(-1) - 0.5).clamp(min=0)
    y_hi = torch.floor(tri_uv[..., 1].amax(-1) - 0.5).clamp(max=height - 1)
    x_lo = torch.ceil(tri_uv[..., 0].amin(-1) - 0.5 - 1e-3).clamp(min=0)
    x_hi = torch.floor(tri_uv[..., 0].amax(-1) - 0.5 + 1e-3).clamp(max=width - 1)
    keep = (tri_z > near).all(-1) & (area.abs() > 1e-10) & (y_hi >= y_lo) & (x_hi >= x_lo)
    extent = torch.where(keep, torch.maximum(y_hi - y_lo, x_hi - x_lo), torch.zeros_like(y_lo))
    window = int(extent.max()) + 1 if extent.numel() else 1  # the one host read
    if window > max_window:
        return torch.stack([rasterize(verts[k], faces, K[k], height, width, near).depth for k in range(m)])
    zbuf = torch.full((m * height * width + 1,), float("inf"), device=device)  # the last cell takes misses
    if compact if compact is not None else device.type == "cpu":
        for size, pairs in ((1, keep & (extent == 0)), (2, keep & (extent == 1)), (window, keep & (extent >= 2))):
            view, face = torch.nonzero(pairs, as_tuple=True)  # a host read each (CPU: free)
            step = max(1, max_pairs // (size * size))
            for i in range(0, view.numel(), step):
                v, f = view[i : i + step], face[i : i + step]
                _depth_window(zbuf, params[v, f], y_lo[v, f], x_lo[v, f], y_hi[v, f], x_hi[v, f], v, size, height,
                              width, m)
    else:  # every (view, face) pair, a chunk of views at a time
        views_per_chunk = max(1, max_pairs // max(1, faces.shape[0] * window * window))
        for start in range(0, m, views_per_chunk):
            view = slice(start, start + views_per_chunk)
            first = torch.arange(start, min(start + views_per_chunk, m), device=device)[:, None]  # (v, 1)
            _depth_window(zbuf, params[view], y_lo[view], x_lo[view], y_hi[view], x_hi[view], first, window, height,
                          width, m, keep=keep[view])
    return zbuf[:-1].view(m, height, width)


def _depth_window(zbuf: Float[Tensor, "cells"], params: Float[Tensor, "*P 9"], y_lo: Float[Tensor, "*P"],
                  x_lo: Float[Tensor, "*P"], y_hi: Float[Tensor, "*P"], x_hi: Float[Tensor, "*P"], view: Int[Tensor, "*P"],
                  size: int, height: int, width: int, m: int, keep: Optional[Bool[Tensor, "*P"]] = None) -> None:
    """Nearest-depth writes of (view, face) pairs (any leading shape; ``view`` broadcasts), each testing the
    ``size x size`` pixel centres from its corner (:func:`rasterize_depth`'s coverage test and depth; misses, and pairs
    not in ``keep``, go to the buffer's last cell)."""
    offsets = torch.arange(size, device=zbuf.device)
    py = y_lo[..., None] + offsets.repeat_interleave(size)  # (*P, size*size)
    px = x_lo[..., None] + offsets.repeat(size)
    p = params[..., None, :]
    b1, b2 = _barycentrics(p, px, py)
    inside = (b1 >= 0) & (b2 >= 0) & (b1 + b2 <= 1) & (py <= y_hi[..., None]) & (px <= x_hi[..., None])
    if keep is not None:
        inside = inside & keep[..., None]
    depth = 1.0 / _inverse_depth(p, b1, b2)
    cell = torch.where(inside, (view[..., None] * height + py.long()) * width + px.long(), m * height * width)
    zbuf.scatter_reduce_(0, cell.reshape(-1), depth.reshape(-1), reduce="amin", include_self=True)


def interpolate(
    attributes: Float[Tensor, "V C"], faces: Int[Tensor, "F 3"], rast: Rasterized
) -> Tuple[Float[Tensor, "P C"], Bool[Tensor, "H W"]]:
    """Barycentric interpolation of per-vertex attributes at the covered pixels.

    Returns:
        values: one row per covered pixel, in row-major pixel order.
        mask: the covered pixels.
    """
    mask = rast.face_id >= 0
    f = rast.face_id[mask]
    corner = attributes[faces[f]]  # (P, 3, C)
    values = (corner * rast.bary[mask][:, :, None].to(attributes.dtype)).sum(1)
    return values, mask


def scale_intrinsics(K: Float[Tensor, "3 3"], scale: float) -> Float[Tensor, "3 3"]:
    """Intrinsics of the same camera at ``scale x`` the resolution (exact in the pixel-centre convention)."""
    K = torch.as_tensor(K).clone()
    K[:2] = K[:2] * scale
    return K


def area_downsample(image: Float[Tensor, "sH sW C"], scale: int) -> Float[Tensor, "H W C"]:
    """Box-filter average of ``scale x scale`` blocks (the anti-aliasing step of supersampling)."""
    if scale == 1:
        return image
    total = image[0::scale, 0::scale].clone()
    for i in range(scale):
        for j in range(scale):
            if i or j:
                total += image[i::scale, j::scale]
    return total / (scale * scale)


def coverage_mask(face_id: Int[Tensor, "sH sW"], scale: int, threshold: float = 0.5) -> Bool[Tensor, "H W"]:
    """Exact binary mask from a supersampled rasterisation: at least ``threshold`` of the sub-samples covered."""
    covered = (face_id >= 0).float()[..., None]
    return area_downsample(covered, scale)[..., 0] >= threshold
