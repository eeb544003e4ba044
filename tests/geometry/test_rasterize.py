"""Tests of the rasteriser (gmnerf_ns/geometry/rasterize.py): coverage, depth, barycentrics, the pixel convention,
supersampling, and agreement with embree's ray casts on the body asset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gmnerf_ns.geometry.camera_math import project_points, world_to_camera
from gmnerf_ns.geometry.rasterize import area_downsample, coverage_mask, interpolate, rasterize, scale_intrinsics

pytestmark = pytest.mark.usefixtures("one_thread")


def _camera(f: float = 10.0, c: float = 5.0) -> torch.Tensor:
    return torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def test_single_triangle_coverage_depth_and_barycentrics():
    """Coverage is exactly the pixel centres inside the projected triangle; depth/bary match the ray-plane hit."""
    K = _camera()
    verts = torch.tensor([[-0.2, -0.2, 1.0], [0.3, -0.2, 1.0], [-0.2, 0.3, 2.0]])
    r = rasterize(verts, torch.tensor([[0, 1, 2]]), K, 10, 10)
    uv, _ = project_points(verts, K, torch.eye(3), torch.zeros(3))
    ys, xs = torch.meshgrid(torch.arange(10) + 0.5, torch.arange(10) + 0.5, indexing="ij")
    a, b, c = uv

    def edge(p, q):
        return (q[0] - p[0]) * (ys - p[1]) - (q[1] - p[1]) * (xs - p[0])

    inside = (edge(a, b) >= 0) & (edge(b, c) >= 0) & (edge(c, a) >= 0)
    assert inside.sum() == 8
    assert torch.equal(r.face_id >= 0, inside)
    assert torch.isinf(r.depth[~inside]).all() and (r.bary[~inside] == 0).all()
    # The barycentric combination of the vertices lies on the pixel's ray, at the reported depth.
    point = (r.bary[inside][:, :, None] * verts[None]).sum(1)
    assert torch.allclose(point[:, 2], r.depth[inside], atol=1e-5)
    proj = point @ K.T
    assert torch.allclose(proj[:, :2] / proj[:, 2:], torch.stack([xs[inside], ys[inside]], -1), atol=1e-4)
    assert torch.allclose(r.bary[inside].sum(-1), torch.ones(8))


def test_nearest_triangle_wins_and_chunking_is_exact():
    """Two overlapping triangles: the nearer one is visible whatever the order; tiny chunks give the same result."""
    K = _camera(20.0, 8.0)
    tri = torch.tensor([[-0.5, -0.5, 1.0], [0.5, -0.5, 1.0], [0.0, 0.5, 1.0]])
    verts = torch.cat([tri * 2.0, tri])  # face 0 at depth 2, face 1 at depth 1 (same image footprint)
    for faces in (torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[3, 4, 5], [0, 1, 2]])):
        r = rasterize(verts, faces, K, 16, 16)
        hit = r.face_id >= 0
        assert hit.any() and (faces[r.face_id[hit]].min(1).values == 3).all()
        assert torch.allclose(r.depth[hit], torch.ones(int(hit.sum())))
        small = rasterize(verts, faces, K, 16, 16, max_pairs=7)
        assert torch.equal(small.face_id, r.face_id) and torch.equal(small.depth, r.depth)


def test_project_points_pixel_convention():
    """A point projecting to uv lies in pixel floor(uv); the optical axis hits the image centre W/2."""
    K = torch.tensor([[100.0, 0.0, 32.0], [0.0, 100.0, 32.0], [0.0, 0.0, 1.0]])
    R, T = torch.eye(3), torch.tensor([0.0, 0.0, 2.0])
    uv, depth = project_points(torch.tensor([[0.0, 0.0, 0.0], [0.01, -0.02, 1.0]]), K, R, T)
    assert torch.allclose(uv[0], torch.tensor([32.0, 32.0])) and torch.allclose(depth, torch.tensor([2.0, 3.0]))
    # A tiny triangle around the point (31.5, 40.2) covers pixel (31, 40) only, whose centre is (31.5, 40.5).
    centre = torch.tensor([31.5, 40.4])
    offsets = torch.tensor([[-0.3, -0.3], [0.3, -0.3], [0.0, 0.3]])
    pix = centre + offsets
    verts = torch.cat([(pix - 32.0) / 100.0, torch.ones(3, 1)], -1)
    r = rasterize(verts, torch.tensor([[0, 1, 2]]), K, 64, 64)
    assert torch.nonzero(r.face_id >= 0).tolist() == [[40, 31]]


def test_supersampling_helpers():
    """Box-filter downsampling and the thresholded coverage mask."""
    face_id = torch.full((4, 4), -1)
    face_id[:2, :2] = 0  # one full 2x2 block
    face_id[2, 2:] = 0  # half of another block
    face_id[0, 2] = 0  # a quarter of a third
    mask = coverage_mask(face_id, 2)
    assert mask.tolist() == [[True, False], [False, True]]
    img = (face_id >= 0).float()[..., None].repeat(1, 1, 3)
    assert torch.allclose(area_downsample(img, 2)[..., 0], torch.tensor([[1.0, 0.25], [0.0, 0.5]]))
    assert torch.equal(scale_intrinsics(_camera(), 2)[:2], _camera()[:2] * 2)


def test_rasterizer_matches_embree(body):
    """Face ids equal trimesh+embreex first hits at (almost) every pixel of a body view."""
    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("embreex")
    from trimesh.ray.ray_pyembree import RayMeshIntersector

    verts = body.template.float()
    faces = body.faces
    res = 96
    R = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # camera at -Y looking at the body's front
    T = -R @ torch.tensor([0.0, -3.0, 0.0])
    K = torch.tensor([[0.8 * res * 3 / 1.9, 0.0, res / 2], [0.0, 0.8 * res * 3 / 1.9, res / 2], [0.0, 0.0, 1.0]])
    r = rasterize(world_to_camera(verts, R, T), faces, K, res, res)
    ys, xs = np.mgrid[0:res, 0:res]
    pix = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs)], -1).reshape(-1, 3).astype(np.float64)
    d = pix @ np.linalg.inv(K.double().numpy()).T @ R.double().numpy()
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    origin = (-R.T @ T).double().numpy()
    mesh = trimesh.Trimesh(verts.double().numpy(), faces.numpy(), process=False)
    hits = RayMeshIntersector(mesh).intersects_first(np.repeat(origin[None], len(d), 0), d)
    ours = r.face_id.reshape(-1).numpy()
    assert (ours >= 0).sum() > 500
    assert ((hits >= 0) == (ours >= 0)).mean() > 0.999
    assert (hits == ours).mean() > 0.995


def test_interpolate_constant_attribute(body):
    """Interpolating a constant gives the constant at every covered pixel."""
    verts = body.template.float()
    r = rasterize(
        verts[:, [0, 2, 1]] * torch.tensor([1.0, -1.0, 1.0]) + torch.tensor([0.0, 0.0, 3.0]),
        body.faces,
        _camera(40.0, 32.0),
        64,
        64,
    )
    values, mask = interpolate(torch.full((body.num_vertices, 2), 7.0), body.faces, r)
    assert mask.sum() > 50 and torch.allclose(values, torch.full_like(values, 7.0))
