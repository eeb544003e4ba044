"""The sync-free training step: fixed-shape rewrites compute what the boolean-indexed originals computed, and a
gm-nerf-small step stays within the sync budget (benchmarks/throughput/profile_step.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType

from gmnerf_ns.geometry.rasterize import rasterize, rasterize_depth
from gmnerf_ns.model._reference import (
    reference_camera_rays,
    reference_dilate,
    reference_sample_volume,
    reference_splat_depth,
    reference_splat_to_grid,
)
from gmnerf_ns.model.rays import camera_rays
from gmnerf_ns.model.sources import splat_depth
from gmnerf_ns.model.volume import dilate, sample_volume, splat_to_grid
from gmnerf_ns.synth.body import BodyModel

ROOT = Path(__file__).resolve().parents[2]


def _body_views(resolution: int, num_views: int = 4):
    body = BodyModel.load()
    vertices, _ = body.shape(body.shape_samples[0])
    vertices = (vertices - vertices.mean(0)).float()
    verts_cam, Ks = [], []
    for k in range(num_views):
        angle = 1.3 * k
        spin = torch.tensor([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]],
                            dtype=torch.float32)
        R = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]) @ spin  # z up -> camera looking along +y
        verts_cam.append(vertices @ R.T + torch.tensor([0.05 * k, 0.0, 3.0]))
        f = 1.6 * resolution
        Ks.append(torch.tensor([[f, 0, resolution / 2 + 0.3 * k], [0, f, resolution / 2], [0, 0, 1.0]]))
    return torch.stack(verts_cam), body.faces, torch.stack(Ks)


@pytest.mark.parametrize("resolution", [64, 128, 256])
@pytest.mark.parametrize("compact,max_pairs", [(False, 1 << 22), (True, 1 << 22), (True, 500)])
def test_windowed_depth_equals_the_scanline_rasteriser(resolution, compact, max_pairs):
    """Both paths (fixed shapes for GPUs; per-footprint windows of the covering pairs, the CPU default), in one chunk
    or many."""
    verts_cam, faces, Ks = _body_views(resolution)
    fixed = rasterize_depth(verts_cam, faces, Ks, resolution, resolution, max_window=64, compact=compact,
                            max_pairs=max_pairs)
    for k in range(len(Ks)):
        reference = rasterize(verts_cam[k], faces, Ks[k], resolution, resolution).depth
        assert torch.isfinite(reference).sum() > 100
        assert torch.equal(fixed[k], reference)


def test_large_triangles_fall_back_to_the_scanline_rasteriser():
    verts = torch.tensor([[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, 2.5]])[None]
    faces = torch.tensor([[0, 1, 2]])
    K = torch.tensor([[40.0, 0, 32], [0, 40.0, 32], [0, 0, 1]])[None]
    fixed = rasterize_depth(verts, faces, K, 64, 64, max_window=4)
    assert torch.equal(fixed[0], rasterize(verts[0], faces, K[0], 64, 64).depth)
    assert torch.isfinite(fixed).sum() > 200


def test_splatted_depth_equals_the_boolean_indexed_original():
    torch.manual_seed(0)
    uv = torch.rand(3, 500, 2) * 40 - 4  # some vertices fall outside the 32 x 32 image
    depth = torch.rand(3, 500) * 3 - 0.2  # some lie behind the camera
    reference = reference_splat_depth(uv, depth, 32, 32)
    assert torch.isfinite(reference).any()
    assert torch.equal(splat_depth(uv, depth, 32, 32), reference)


def test_grid_splatting_equals_the_boolean_indexed_original():
    torch.manual_seed(1)
    codes, points, shape = torch.randn(400, 5), torch.rand(400, 3) * 2.2 - 1.1, (6, 5, 7)
    reference = reference_splat_to_grid(codes, points, shape)
    assert reference.shape == (6, 7, 5, 6)
    torch.testing.assert_close(splat_to_grid(codes, points, shape), reference, rtol=0, atol=1e-6)


def _camera(camera_type=CameraType.PERSPECTIVE, distortion=None) -> Cameras:
    angle = 0.7
    R = torch.tensor([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]],
                     dtype=torch.float32)
    c2w = torch.cat([R, torch.tensor([[0.3], [1.2], [-2.0]])], 1)[None]
    return Cameras(camera_to_worlds=c2w, fx=300.0, fy=310.0, cx=128.5, cy=120.2, width=256, height=256,
                   camera_type=camera_type, distortion_params=distortion)


@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_split_volume_lookup_equals_one_grid_sample(padding_mode, parts):
    """``sample_volume`` (points split into batch entries, one per CPU thread) gives grid_sample's values exactly,
    also when the points do not divide evenly, and the volume's gradient up to summation order."""
    torch.manual_seed(0)
    volume = torch.randn(1, 5, 6, 7, 4, requires_grad=True)
    points = torch.rand(1001, 3) * 2.4 - 1.2  # some outside the box (border clamps, zeros pads)
    reference = reference_sample_volume(volume, points, padding_mode=padding_mode)
    split = sample_volume(volume, points, padding_mode=padding_mode, parts=parts)
    assert split.shape == (1001, 5)
    assert torch.equal(split, reference)
    weights = torch.randn(1001, 5)
    (grad_reference,) = torch.autograd.grad((reference * weights).sum(), volume)
    (grad_split,) = torch.autograd.grad((split * weights).sum(), volume)
    assert grad_split.abs().max() > 1.0
    torch.testing.assert_close(grad_split, grad_reference, rtol=1e-5, atol=1e-5)
    assert sample_volume(volume, points[:0], parts=parts).shape == (0, 5)


@pytest.mark.parametrize("radius", [1, 3])
def test_separable_dilation_equals_max_pool3d(radius):
    occupied = (torch.rand(1, 1, 24, 18, 20, generator=torch.Generator().manual_seed(radius)) > 0.998).float()
    reference = reference_dilate(occupied, radius)
    assert 0 < reference.mean() < 1
    assert torch.equal(dilate(occupied, radius), reference)



@pytest.mark.parametrize("kind", ["pinhole", "fisheye", "distorted"])
def test_camera_rays_match_nerfstudio(kind):
    distortion = torch.tensor([[0.05, 0.01, 0.0, 0.0, 0.001, 0.0]]) if kind == "distorted" else None
    camera = _camera(CameraType.FISHEYE if kind == "fisheye" else CameraType.PERSPECTIVE, distortion)
    coords = torch.rand(500, 2, generator=torch.Generator().manual_seed(2)) * 256
    origins, directions = camera_rays(camera, coords)
    ref_origins, ref_directions = reference_camera_rays(camera, coords)
    torch.testing.assert_close(origins, ref_origins, rtol=0, atol=1e-6)
    torch.testing.assert_close(directions, ref_directions, rtol=0, atol=1e-6)


def test_every_method_uses_fused_adam():
    from gmnerf_ns.training.method_configs import gm_nerf, gm_nerf_finetune, gm_nerf_small

    for spec in (gm_nerf, gm_nerf_small, gm_nerf_finetune):
        for group in spec.config.optimizers.values():
            params = [torch.nn.Parameter(torch.zeros(2))]
            optimizer = group["optimizer"].setup(params)
            assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"] is True


def _profile_step_module():
    path = ROOT / "benchmarks" / "throughput" / "profile_step.py"
    spec = importlib.util.spec_from_file_location("profile_step", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["profile_step"] = module
    spec.loader.exec_module(module)
    return module


def test_profile_step_reports_a_step_within_the_sync_budget(tmp_path):
    from gmnerf_ns.synth.config import SynthConfig
    from gmnerf_ns.synth.generator import generate

    # Built-in people (a real body mesh: small triangles at the visibility resolution, like SMPL on real data).
    data = generate(SynthConfig(out=tmp_path / "data", num_subjects=3, num_test_subjects=1, num_cameras=6,
                                num_frames=1, resolution=64, supersample=1, progress=False))
    module = _profile_step_module()
    result = module.main(module.Profile(method="gm-nerf-small", steps=2, warmup=1, data=data, resolution=64,
                                        patch_size=32, threads=1, json_path=tmp_path / "profile.json"))
    assert (tmp_path / "profile.json").is_file()
    ms = result["ms_per_step"]
    assert ms["total"] > 0 and abs(ms["total"] - ms["data"] - ms["forward_loss"] - ms["backward_step"]) < 1e-6
    assert result["aten_ops_per_step"] > 1000
    assert result["sync_ops_per_step"] <= 16, result["sync_ops_by_name"]


def test_gpu_kernel_time_counts_each_kernel_once():
    """The busy share on CUDA sums kernel events only: a CPU op's device time is its kernels' time again."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    module = _profile_step_module()
    launch = SimpleNamespace(device_type=DeviceType.CPU, device_time=7.0)  # aten op whose kernels took 7 us
    kernels = [SimpleNamespace(device_type=DeviceType.CUDA, device_time=3.0),
               SimpleNamespace(device_type=DeviceType.CUDA, device_time=4.0)]
    assert module.kernel_microseconds([launch, *kernels]) == 7.0
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch.ones(8, 8).matmul(torch.ones(8, 8))
    assert module.kernel_microseconds(prof.events()) == 0.0  # no GPU: nothing counted
