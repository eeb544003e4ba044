"""Tests for gmnerf_ns.model.metrics (bbox evaluation region, masked PSNR, bbox-crop SSIM, LPIPS availability) and the
Chamfer/P2S of gmnerf_ns.eval.geometry."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import trimesh
from skimage.metrics import structural_similarity

from gmnerf_ns.core import weights
from gmnerf_ns.core.weights import MissingPretrainedWeightsWarning
from gmnerf_ns.eval.geometry import chamfer_and_p2s
from gmnerf_ns.model.metrics import (
    MAX_PSNR,
    LPIPSMetric,
    bbox_crop_ssim,
    bbox_mask_from_corners,
    image_metrics,
    masked_psnr,
    project_bbox_corners,
)


@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache and a fresh warn-once registry."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(weights, "_WARNED_KEYS", set())
    return tmp_path / "torch_home"


def _images(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.2, 0.8, size=(h, w, 3))  # away from 0/1 so +-0.1 errors are not clipped
    mask = np.zeros((h, w), dtype=bool)
    mask[10:40, 12:50] = True
    return gt, mask, rng


# ---------------------------------------------------------------------------------------------------------------------
# PSNR
# ---------------------------------------------------------------------------------------------------------------------


def test_psnr_perfect_prediction_is_capped():
    gt, mask, _ = _images()
    assert masked_psnr(gt, gt, mask) == pytest.approx(MAX_PSNR)


def test_psnr_known_errors():
    gt, mask, rng = _images(96, 96)
    mask[:] = True
    # +-0.1 on every value: MSE = 0.01 exactly -> PSNR = -10 log10(0.01) = 20 dB.
    sign = np.where(rng.uniform(size=gt.shape) < 0.5, -1.0, 1.0)
    assert masked_psnr(gt + 0.1 * sign, gt, mask) == pytest.approx(20.0, abs=1e-9)
    # Gaussian noise sigma = 0.05: E[MSE] = 0.0025 -> 26.02 dB; 27k samples put the estimate within ~0.04 dB.
    noisy = gt + rng.normal(0.0, 0.05, size=gt.shape)
    assert masked_psnr(noisy, gt, mask) == pytest.approx(-10 * np.log10(0.05**2), abs=0.1)


def test_psnr_ignores_pixels_outside_mask():
    gt, mask, rng = _images()
    pred = gt.copy()
    pred[mask] += 0.1  # inside: MSE 0.01 -> 20 dB
    garbage = pred.copy()
    garbage[~mask] = rng.uniform(size=(int((~mask).sum()), 3))
    assert masked_psnr(pred, gt, mask) == pytest.approx(20.0, abs=1e-9)
    assert masked_psnr(garbage, gt, mask) == masked_psnr(pred, gt, mask)
    # ...whereas a whole-image PSNR would see them.
    assert masked_psnr(garbage, gt, np.ones_like(mask)) < 19.0


def test_psnr_accepts_chw_torch_and_uint8_mask():
    gt, mask, _ = _images()
    pred = gt + 0.05
    ref = masked_psnr(pred, gt, mask)
    chw = torch.from_numpy(pred).permute(2, 0, 1).float()
    assert masked_psnr(chw, torch.from_numpy(gt).permute(2, 0, 1), torch.from_numpy(mask.astype(np.uint8))) == (
        pytest.approx(ref, abs=1e-4)
    )


def test_empty_mask_raises():
    gt, mask, _ = _images()
    with pytest.raises(ValueError, match="empty"):
        masked_psnr(gt, gt, np.zeros_like(mask))


# ---------------------------------------------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------------------------------------------


def test_ssim_perfect_is_one():
    gt, mask, _ = _images()
    assert bbox_crop_ssim(gt, gt, mask) == pytest.approx(1.0)


def test_ssim_is_computed_on_the_bounding_rect_crop():
    gt, mask, rng = _images()
    mask[:] = False
    mask[10:40, 12:50] = True  # rectangular mask: crop == mask, no background fill involved
    pred = np.clip(gt + rng.normal(0, 0.05, gt.shape), 0, 1)
    expected = structural_similarity(gt[10:40, 12:50], pred[10:40, 12:50], channel_axis=-1, data_range=1.0)
    assert bbox_crop_ssim(pred, gt, mask) == pytest.approx(expected, abs=1e-12)
    # Pixels outside the bounding rect don't matter.
    pred[:5] = 0.0
    pred[:, 55:] = 1.0
    assert bbox_crop_ssim(pred, gt, mask) == pytest.approx(expected, abs=1e-12)


def test_ssim_fills_crop_pixels_outside_mask_with_background():
    gt, mask, rng = _images()
    mask[10:20, 12:20] = False  # a notch: inside the bounding rect, outside the mask
    pred = gt.copy()
    pred[10:20, 12:20] = rng.uniform(size=(10, 8, 3))
    assert bbox_crop_ssim(pred, gt, mask, background=0.0) == pytest.approx(1.0)
    assert bbox_crop_ssim(pred, gt, mask, background=None) < 0.99


# ---------------------------------------------------------------------------------------------------------------------
# Projected-bbox mask
# ---------------------------------------------------------------------------------------------------------------------

BOX = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
K = np.array([[40.0, 0.0, 32.0], [0.0, 40.0, 32.0], [0.0, 0.0, 1.0]])


def test_bbox_mask_of_cube_seen_head_on():
    # Camera at the origin looking down +z, cube centred 5 units ahead: the near face (depth 4) projects to
    # u, v in 32 +- 40 * 1/4 = [22, 42]; the far face (depth 6) to 32 +- 6.67, inside it. fillPoly includes the
    # polygon border, so rows and columns 22..42 inclusive: a 21 x 21 square.
    corners = project_bbox_corners(BOX, K, np.eye(3), np.array([0.0, 0.0, 5.0]))
    mask = bbox_mask_from_corners(corners, 64, 64)
    expected = np.zeros((64, 64), dtype=bool)
    expected[22:43, 22:43] = True
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, expected)


def test_bbox_mask_matches_pixels_whose_ray_hits_the_box():
    # Oblique view: the silhouette is a hexagon. Compare with a ray / AABB slab test at pixel centres (NB's mask_at_box).
    h = w = 128
    k = np.array([[160.0, 0.0, 64.0], [0.0, 160.0, 64.0], [0.0, 0.0, 1.0]])
    R = cv2.Rodrigues(np.array([0.3, -0.5, 0.2]))[0]
    T = np.array([0.1, -0.2, 6.0])
    mask = bbox_mask_from_corners(project_bbox_corners(BOX, k, R, T), h, w)

    v, u = np.mgrid[0:h, 0:w]
    dirs_cam = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones((h, w))], -1)
    origin = -R.T @ T
    dirs = dirs_cam.reshape(-1, 3) @ R  # R^T d, row-wise
    with np.errstate(divide="ignore"):
        t0, t1 = (BOX[0] - origin) / dirs, (BOX[1] - origin) / dirs
    near = np.minimum(t0, t1).max(-1)
    far = np.maximum(t0, t1).min(-1)
    hits = (far > np.maximum(near, 0)).reshape(h, w)

    assert hits.sum() > 4000  # 4497 pixels for this view
    border = cv2.dilate(hits.astype(np.uint8), np.ones((3, 3))) != cv2.erode(hits.astype(np.uint8), np.ones((3, 3)))
    disagree = mask != hits
    assert not np.any(disagree & ~border), "mask and ray hits may only differ on the silhouette border"
    # fillPoly also paints the polygon outline, so the mask is a superset of the hits up to corner rounding.
    assert (hits & ~mask).sum() <= 0.005 * hits.sum()
    assert disagree.sum() < 0.05 * hits.sum()


def test_projection_behind_camera_raises():
    with pytest.raises(ValueError, match="behind"):
        project_bbox_corners(BOX, K, np.eye(3), np.array([0.0, 0.0, 0.5]))


# ---------------------------------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------------------------------


def test_lpips_unavailable_returns_none_with_reason(offline_torch_home):
    expected_file = offline_torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    with pytest.warns(MissingPretrainedWeightsWarning):
        lpips = LPIPSMetric("alex")
    assert not lpips.available
    assert str(expected_file) in lpips.reason
    gt, mask, _ = _images()
    assert lpips(gt, gt, mask) is None
    out = image_metrics(gt, gt, mask, lpips)
    assert out["lpips"] is None
    assert out["psnr"] == pytest.approx(MAX_PSNR) and out["ssim"] == pytest.approx(1.0)


def test_lpips_available_with_local_weights(tmp_path, monkeypatch):
    import torchvision

    # Random AlexNet weights stand in for the real checkpoint: this tests the lookup and loading, not the values.
    ckpt = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    ckpt.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(
        {f"features.{k}": v for k, v in torchvision.models.alexnet(weights=None).features.state_dict().items()}, ckpt
    )
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    lpips = LPIPSMetric("alex")
    assert lpips.available and lpips.reason is None
    assert list(lpips.state_dict()) == [] and list(lpips.parameters()) == []
    loaded = lpips.frozen_net.net.slice1[0].weight
    saved = torch.load(ckpt)["features.0.weight"]
    assert torch.equal(loaded, saved)

    gt, mask, rng = _images(64, 80)
    mask[:] = False
    mask[4:60, 4:76] = True
    assert lpips(gt, gt, mask) == pytest.approx(0.0, abs=1e-6)
    out = image_metrics(rng.uniform(size=gt.shape), gt, mask, lpips)
    assert isinstance(out["lpips"], float) and out["lpips"] > 0.0


def test_explicit_missing_weights_path_is_reported(offline_torch_home, tmp_path):
    path = Path(tmp_path / "nowhere" / "vgg16.pth")
    with pytest.warns(MissingPretrainedWeightsWarning):
        lpips = LPIPSMetric("vgg", weights_path=path)
    assert not lpips.available and str(path) in lpips.reason


# ---------------------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------------------


def _plane(z=0.0):
    verts = np.array([[0.0, 0.0, z], [1.0, 0.0, z], [1.0, 1.0, z], [0.0, 1.0, z]])
    return verts, np.array([[0, 1, 2], [0, 2, 3]])


def test_chamfer_of_mesh_with_itself_is_zero():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    out = chamfer_and_p2s(sphere.vertices, sphere.vertices, sphere.faces, pred_faces=sphere.faces, num_samples=2000)
    assert out["chamfer_cm"] == pytest.approx(0.0, abs=1e-6)
    assert out["p2s_cm"] == pytest.approx(0.0, abs=1e-6)


def test_chamfer_of_plane_shifted_by_1cm():
    # A unit square (metres) moved 1 cm along its normal: every point is exactly 1 cm from the other surface.
    gt_v, faces = _plane(0.0)
    pred_v, _ = _plane(0.01)
    out = chamfer_and_p2s(pred_v, gt_v, faces, pred_faces=faces, num_samples=2000)
    assert out["p2s_cm"] == pytest.approx(1.0, abs=1e-6)
    assert out["chamfer_cm"] == pytest.approx(1.0, abs=1e-6)
    # Point-cloud prediction (e.g. marching-cubes vertices): P2S is still exact.
    pred_points = trimesh.Trimesh(pred_v, faces).sample(5000, seed=0)
    assert chamfer_and_p2s(pred_points, gt_v, faces, num_samples=2000)["p2s_cm"] == pytest.approx(1.0, abs=1e-6)


def test_chamfer_of_sphere_grown_by_1cm():
    gt = trimesh.creation.icosphere(subdivisions=4, radius=0.50)
    pred = trimesh.creation.icosphere(subdivisions=4, radius=0.51)
    out = chamfer_and_p2s(pred.vertices, gt.vertices, gt.faces, pred_faces=pred.faces, num_samples=3000)
    # Tessellation: the faces sit up to r (1 - cos(edge / 2r)) ~ 0.5 mm inside the true sphere.
    assert out["p2s_cm"] == pytest.approx(1.0, abs=0.05)
    assert out["chamfer_cm"] == pytest.approx(1.0, abs=0.05)
