"""Mechanisms of the GM-NeRF model on a procedural cylinder scene (CPU, seconds)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from nerfstudio.data.scene_box import SceneBox

from gmnerf_ns.model._reference import reference_view_attention
from gmnerf_ns.model.attention import VertexRegistration, ViewAttention, window_offsets
from gmnerf_ns.model.gmnerf_model import GMNeRFModel, GMNeRFModelConfig
from gmnerf_ns.model.losses import PerceptualLossConfig
from gmnerf_ns.model.rays import ray_box_intersection
from gmnerf_ns.model.sources import proxy_depth_maps, vertex_visibility
from gmnerf_ns.model.volume import grid_shape, normalize_points, splat_to_grid
from tests.fixtures.scene import cylinder_sources, nerfstudio_camera, target_image


def small_model(**overrides) -> GMNeRFModel:
    torch.manual_seed(0)
    cfg = GMNeRFModelConfig(
        volume_resolution=24, volume_channels=(8, 8, 16), num_samples=16, appearance_dim=16, hidden_dim=32,
        feature_dim=8, renderer_width=16, vertex_code_dim=8, visibility_resolution=32,
        **{"perceptual_loss": PerceptualLossConfig(), **overrides},
    )
    cfg.encoder.channels = 8
    cfg.encoder.out_channels = 8
    model = GMNeRFModel(cfg, scene_box=SceneBox(torch.tensor([[-1.0, -1, 0], [1, 1, 2]])), num_train_data=1)
    sources = cylinder_sources()
    model.source_provider = lambda subject, frame: sources
    model.set_condition(0, 0)
    return model


def test_view_attention_ignores_invalid_views():
    torch.manual_seed(0)
    att = ViewAttention(4, 6, 6, 8, 2, 5)
    q, k = torch.randn(10, 4), torch.randn(10, 3, 6)
    valid = torch.tensor([[True, False, True]] * 10)
    out, weights, any_valid = att(q, k, k, valid)
    assert out.shape == (10, 5) and weights.shape == (10, 3)
    assert torch.all(weights[:, 1] == 0) and torch.allclose(weights.sum(1), torch.ones(10))
    # changing an invalid view's features must not change the output
    k2 = k.clone()
    k2[:, 1] = 100.0
    out2, _, _ = att(q, k2, k2, valid)
    assert torch.allclose(out, out2, atol=1e-6)
    assert any_valid.all()


def test_view_attention_equals_standard_multi_head_attention():
    """The projection-free formulation is the textbook one (per-token key/value projections), gradients included."""
    torch.manual_seed(0)
    att = ViewAttention(4, 6, 5, 8, 2, 3)
    for layer in (att.to_k, att.to_v):
        torch.nn.init.normal_(layer.bias)  # biases must cancel / pass through exactly, so make them non-zero
    q = torch.randn(7, 4, requires_grad=True)
    k, v = torch.randn(7, 9, 6), torch.randn(7, 9, 5)
    valid = torch.rand(7, 9) > 0.4
    valid[0] = False  # a point with no valid token attends over all of them

    assert (att.num_heads, att.head_dim) == (2, 4)
    out, weights, _ = att(q, k, v, valid)
    ref_out, ref_weights = reference_view_attention(att, q, k, v, valid)
    assert torch.allclose(out, ref_out, atol=1e-5) and torch.allclose(weights, ref_weights, atol=1e-6)
    grad, = torch.autograd.grad(out.square().sum(), q)
    ref_grad, = torch.autograd.grad(ref_out.square().sum(), q)
    assert torch.allclose(grad, ref_grad, atol=1e-5)


def test_vertex_registration_zero_code_without_visible_views():
    reg = VertexRegistration(feature_dim=6, code_dim=4, hidden_dim=8, num_heads=2)
    visible = torch.zeros(5, 3, dtype=torch.bool)
    visible[:2, 0] = True
    offsets = window_offsets(3)
    codes = reg(torch.rand(5, 3), torch.randn(5, 3, 9, 6), torch.randn(5, 3, 3), visible, offsets)
    assert codes.shape == (5, 4)
    assert torch.all(codes[2:] == 0) and codes[:2].abs().sum() > 0


def test_vertex_registration_ignores_every_window_sample_of_invisible_views():
    torch.manual_seed(0)
    reg = VertexRegistration(feature_dim=6, code_dim=4, hidden_dim=8, num_heads=2)
    visible = torch.tensor([[True, False, True]] * 4)
    feats, dirs, offsets = torch.randn(4, 3, 9, 6), torch.randn(4, 3, 3), window_offsets(3)
    feats2 = feats.clone()
    feats2[:, 1] = 50.0  # every window sample of the hidden view
    positions = torch.rand(4, 3)
    assert torch.allclose(reg(positions, feats, dirs, visible, offsets), reg(positions, feats2, dirs, visible, offsets),
                          atol=1e-6)
    feats3 = feats.clone()
    feats3[:, 0, 0] = 50.0  # a corner sample of a visible view does count
    assert not torch.allclose(reg(positions, feats, dirs, visible, offsets), reg(positions, feats3, dirs, visible, offsets))


def test_window_offsets_centre_and_spacing():
    offsets = window_offsets(3)
    assert offsets.shape == (9, 2)
    assert torch.equal(offsets[4], torch.zeros(2))  # centre sample = the projection itself
    assert torch.equal(offsets[0], torch.tensor([-1.0, -1.0])) and torch.equal(offsets[5], torch.tensor([1.0, 0.0]))
    assert torch.equal(window_offsets(1), torch.zeros(1, 2))


def test_visibility_front_and_back():
    src = cylinder_sources(cams=(0, 4), size=64)
    vis = vertex_visibility(src, proxy_depth_maps(src, resolution=64))
    verts = src.vertices
    facing_cam0 = verts[:, 0] > 0.2  # camera 0 sits on +x, camera 4 on -x
    assert vis[0][facing_cam0].float().mean() > 0.95
    assert vis[1][facing_cam0].float().mean() < 0.05


def test_splat_to_grid_preserves_codes_and_occupancy():
    points = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    bbox = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    shape = grid_shape(bbox, 8)
    grid = splat_to_grid(torch.tensor([[1.0], [3.0]]), normalize_points(points, bbox), shape)
    assert grid.shape == (2, 8, 8, 8)
    assert (grid[1] > 0).sum() >= 2  # occupancy channel marks both points
    assert torch.isclose(grid[0][grid[1] > 0].max(), torch.tensor(3.0))


def test_ray_box_intersection():
    bbox = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    origins = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 5.0, 0.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    near, far, hit = ray_box_intersection(origins, dirs, bbox)
    assert hit.tolist() == [True, False]
    assert torch.allclose(near[0], torch.tensor(2.0)) and torch.allclose(far[0], torch.tensor(4.0))


def test_set_condition_drops_the_cached_encoding():
    model = small_model()
    model.eval()
    model.get_outputs_for_camera(nerfstudio_camera(1))
    assert model.cached_condition == (0, 0)  # bare cameras render the default subject-frame, encoded once
    model.set_condition(0, 1)
    assert model.default_source_key == (0, 1) and model.cached_condition is None
    model.get_outputs_for_camera(nerfstudio_camera(1))
    model.clear_encoding_cache()
    assert model.cached_condition is None


def test_half_resolution_feature_image_and_full_resolution_output():
    model = small_model()
    model.eval()
    out = model.get_outputs_for_camera(nerfstudio_camera(1))
    assert out["rgb"].shape == (32, 32, 3)
    assert out["rgb_lowres"].shape == (16, 16, 3)  # volume rendering happens at half resolution
    assert out["accumulation_lowres"].shape == (16, 16, 1)


def test_partial_gradient_only_selected_rays_reach_the_field():
    model = small_model(grad_ray_fraction=0.25)
    model.train()
    sources = cylinder_sources()
    out = model(nerfstudio_camera(1), sources=sources, patch=(0, 0, 32, 32))
    grad_rays = out["grad_rays"]
    assert grad_rays.sum() == round(0.25 * 16 * 16)
    low = out["rgb_lowres"].reshape(-1, 3)
    field_params = list(model.field.parameters())
    g_sel = torch.autograd.grad(low[grad_rays].sum(), field_params, retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in g_sel)
    g_rest = torch.autograd.grad(low[~grad_rays].sum(), field_params, retain_graph=True, allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for g in g_rest)  # no-grad rays carry no gradient into the field
    # the 2D renderer sees the full image: a pixel fed by a no-grad ray still trains the renderer
    pixel = torch.nonzero(~grad_rays.view(16, 16))[0] * 2
    g_ren = torch.autograd.grad(out["rgb"][pixel[0], pixel[1]].sum(), list(model.renderer.parameters()))
    assert sum(g.abs().sum() for g in g_ren) > 0


def test_full_gradient_when_fraction_is_one():
    model = small_model(grad_ray_fraction=1.0)
    model.train()
    out = model(nerfstudio_camera(1), sources=cylinder_sources(), patch=(0, 0, 32, 32))
    assert out["grad_rays"].all() and out["rgb_lowres"].requires_grad


def test_get_outputs_for_camera_renders_the_person_not_black():
    model = small_model()
    model.eval()
    out = model.get_outputs_for_camera(nerfstudio_camera(3))
    _, mask = target_image(3)
    assert out["rgb"][mask[..., 0] > 0].mean() > 0.05  # both nerfstudio peer plugins return all-zero images here
    assert torch.isfinite(out["rgb"]).all()


def test_camera_without_metadata_uses_default_subject():
    model = small_model()
    model.eval()
    camera = nerfstudio_camera(3)
    camera.metadata = None
    assert model.get_outputs_for_camera(camera)["rgb"].shape == (32, 32, 3)


def test_short_overfit_lowers_the_loss():
    model = small_model(grad_ray_fraction=0.5)
    model.train()
    sources = cylinder_sources()
    image, mask = target_image(1)
    batch = {"image": image, "mask": mask}
    params = [p for group in model.get_param_groups().values() for p in group]
    opt = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(nerfstudio_camera(1), sources=sources, patch=(0, 0, 32, 32))
        loss = sum(model.get_loss_dict(out, batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, f"loss went {first:.4f} -> {last:.4f}"


def test_ablations_build_and_render():
    for overrides in ({"registration": "mean"}, {"registration": "none"}, {"neural_renderer": False},
                      {"registration": "mean", "appearance_fusion": "mean"}, {"registration_window": 1}):
        model = small_model(**overrides)
        model.eval()
        out = model.get_outputs_for_camera(nerfstudio_camera(3))
        assert out["rgb"].shape == (32, 32, 3) and torch.isfinite(out["rgb"]).all(), overrides
        if overrides.get("registration") == "none":
            assert model.volume is None and model.registration is None
        if overrides.get("appearance_fusion") == "mean":
            assert model.field.appearance.attention is None


def test_mean_appearance_fusion_averages_the_views_a_sample_projects_into():
    from gmnerf_ns.model.attention import PointAppearance

    fuse = PointAppearance(geometry_dim=5, feature_dim=4, out_dim=3, fusion="mean")
    colors = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]] * 2)
    valid = torch.tensor([[True, True, False], [False, False, False]])
    code, blended = fuse(torch.randn(2, 5), torch.randn(2, 3, 4), colors, torch.randn(2, 3, 2), torch.randn(2, 3, 4),
                         valid)
    assert code.shape == (2, 3)
    assert torch.allclose(blended[0], torch.tensor([0.5, 0.5, 0.0]))  # the hidden third view is ignored
    assert torch.allclose(blended[1], torch.full((3,), 1 / 3))  # no valid view: all of them


def test_encoder_fuses_like_concatenated_upsampled_stages():
    """The per-stage 1x1 fuse equals the textbook fuse of the concatenated, upsampled stage maps (resolution-linear)."""
    from gmnerf_ns.model.encoder import ImageEncoderConfig

    torch.manual_seed(0)
    for backbone in ("small", "resnet18"):
        encoder = ImageEncoderConfig(backbone=backbone, channels=8, out_channels=6,
                                     pretrained_weights=Path("/nonexistent.pth")).setup()
        torch.nn.init.normal_(encoder.fuse.bias)
        images = torch.rand(2, 3, 64, 48)
        out = encoder(images)
        x, feats = (images - 0.45) / 0.225, []
        for stage in encoder.stages:
            x = stage(x)
            feats.append(x)
        size = feats[0].shape[-2:]
        up = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        assert out.shape == (2, 6, *size)
        assert torch.allclose(out, encoder.fuse(torch.cat(up, dim=1)), atol=1e-5)


def test_training_patch_that_misses_the_proxy_still_backpropagates_without_the_2d_renderer():
    """A patch whose gradient rays all skip empty space renders a constant; backward() must still work (nerfstudio's
    trainer calls it every step), with zero gradient."""
    model = small_model(neural_renderer=False)
    model.train()
    out = model(nerfstudio_camera(1), sources=cylinder_sources(), patch=(0, 0, 2, 2))  # a corner: background only
    assert out["accumulation"].abs().max() == 0  # nothing near the proxy there
    loss = out["rgb"].square().mean() + out["accumulation"].mean()
    loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.field.parameters())


def test_perceptual_weights_are_looked_up_only_when_a_loss_is_computed(tmp_path):
    """Rendering and evaluating never touch the VGG weights (ns-eval and the viewer would download 550 MB)."""
    missing = PerceptualLossConfig(weights_path=tmp_path / "missing-vgg19.pth", allow_fallback=False)
    model = small_model(perceptual_loss=missing)  # would raise here if the loss were built with the model
    model.eval()
    with torch.no_grad():
        out = model.get_outputs_for_camera(nerfstudio_camera(1))
    assert out["rgb"].shape[-1] == 3 and model._perceptual is None
    try:
        model.perceptual
    except Exception as err:  # the first loss computation is where a missing file is reported
        assert "missing-vgg19.pth" in str(err)
    else:
        raise AssertionError("a missing weights file with allow_fallback=False must be reported")
    assert sorted(model.state_dict()) == sorted(small_model().state_dict())
