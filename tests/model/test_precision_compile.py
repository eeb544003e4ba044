"""The model's ``autocast`` and ``compile_networks`` options on the tiny cylinder scene (CPU).

Off, both change nothing: a model whose config predates them renders, trains and backpropagates bitwise the same. bf16
runs the learned layers in bf16, keeps projections, compositing and losses in fp32, and renders within a measured
tolerance of fp32. Compiled networks match eager ones and keep the checkpoint's state_dict keys.
"""

from __future__ import annotations

import copy
import functools
from typing import Dict, List

import pytest
import torch
from nerfstudio.data.scene_box import SceneBox
from torch import nn

from gmnerf_ns.core.options import OptionError
from gmnerf_ns.model import gmnerf_model
from gmnerf_ns.model.gmnerf_model import GMNeRFModel, GMNeRFModelConfig
from gmnerf_ns.model.losses import PerceptualLossConfig
from gmnerf_ns.model.precision import CompileError, compile_errors, compile_modules
from tests.fixtures.scene import cylinder_sources, nerfstudio_camera, target_image

PATCH = (0, 0, 32, 32)

BF16_RGB_TOLERANCE = 1e-3
"""Max |bf16 - fp32| of a rendered value, same (untrained) weights: measured 8e-5 for RGB, 1.2e-4 for the
accumulation on this scene, where the colour comes mostly from the blended source colours (the skip path)."""


def small_config(**overrides) -> GMNeRFModelConfig:
    cfg = GMNeRFModelConfig(
        volume_resolution=24, volume_channels=(8, 8, 16), num_samples=16, appearance_dim=16, hidden_dim=32,
        feature_dim=8, renderer_width=16, vertex_code_dim=8, visibility_resolution=32,
        perceptual_loss=PerceptualLossConfig(), **overrides,
    )
    cfg.encoder.channels = 8
    cfg.encoder.out_channels = 8
    return cfg


def build(cfg: GMNeRFModelConfig) -> GMNeRFModel:
    torch.manual_seed(0)  # same weights for every config
    model = GMNeRFModel(cfg, scene_box=SceneBox(torch.tensor([[-1.0, -1, 0], [1, 1, 2]])), num_train_data=1)
    sources = cylinder_sources()
    model.source_provider = lambda subject, frame: sources
    model.set_condition(0, 0)
    return model


def batch() -> Dict[str, torch.Tensor]:
    image, mask = target_image(1)
    return {"image": image, "mask": mask}


def train_step(model: GMNeRFModel, seed: int = 1):
    """(outputs, losses, total loss, grads by name) of one training forward + backward with fixed random rays."""
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    outputs = model(nerfstudio_camera(1), sources=cylinder_sources(), patch=PATCH)
    losses = model.get_loss_dict(outputs, batch())
    total = sum(losses.values())
    total.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return outputs, losses, total, grads


def eval_render(model: GMNeRFModel) -> Dict[str, torch.Tensor]:
    model.eval()
    return model.get_outputs_for_camera(nerfstudio_camera(3))


# ---------------------------------------------------------------------------------------------------- off = unchanged
def test_off_is_bitwise_a_model_whose_config_predates_the_options():
    legacy = small_config()
    for name in ("autocast", "compile_networks"):  # as in a config.yml written before the options existed
        del legacy.__dict__[name]
    assert legacy.autocast == "off" and legacy.compile_networks is False  # the dataclass defaults fill in
    old, new = build(legacy), build(small_config(autocast="off", compile_networks=False))
    out_old, losses_old, _, grads_old = train_step(old)
    out_new, losses_new, _, grads_new = train_step(new)
    for key in ("rgb", "rgb_lowres", "accumulation", "mask", "depth"):
        assert torch.equal(out_old[key], out_new[key]), key
    assert all(torch.equal(losses_old[k], losses_new[k]) for k in losses_old)
    assert grads_old.keys() == grads_new.keys() and all(torch.equal(grads_old[k], grads_new[k]) for k in grads_old)
    assert torch.equal(eval_render(old)["rgb"], eval_render(new)["rgb"])


# ------------------------------------------------------------------------------------------------------------- bf16
def layer_dtypes(model: GMNeRFModel) -> Dict[str, List[torch.dtype]]:
    """Output dtypes of every Linear/Conv layer, by module name, recorded with forward hooks during one train step."""
    seen: Dict[str, List[torch.dtype]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)):
            hook = lambda m, args, out, name=name: seen.setdefault(name, []).append(out.dtype)  # noqa: E731
            handles.append(module.register_forward_hook(hook))
    train_step(model)
    for handle in handles:
        handle.remove()
    return seen


def test_bf16_runs_every_learned_layer_in_bf16_and_off_in_fp32():
    bf16 = layer_dtypes(build(small_config(autocast="bf16")))
    fp32 = layer_dtypes(build(small_config()))
    # encoder, registration, proxy volume, view attention, both MLPs and the 2D renderer all ran
    for prefix in ("encoder.", "registration.", "volume.", "field.appearance.", "field.geometry_mlp.",
                   "field.feature_mlp.", "renderer."):
        assert any(name.startswith(prefix) for name in bf16), prefix
    assert {d for dtypes in bf16.values() for d in dtypes} == {torch.bfloat16}
    assert {d for dtypes in fp32.values() for d in dtypes} == {torch.float32}


def test_bf16_outputs_and_losses_are_fp32_and_finite_and_gradients_fp32_and_finite():
    model = build(small_config(autocast="bf16"))
    outputs, losses, total, grads = train_step(model)
    for key in ("rgb", "rgb_lowres", "accumulation", "accumulation_lowres", "mask", "depth"):
        assert outputs[key].dtype == torch.float32 and torch.isfinite(outputs[key]).all(), key
    assert set(losses) >= {"rgb_loss", "mask_loss", "lowres_rgb_loss", "opacity_loss"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    assert total.dtype == torch.float32
    params = dict(model.named_parameters())
    assert all(params[name].dtype == torch.float32 for name in params)  # parameters (and so the optimizer) stay fp32
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())
    for prefix in ("encoder.", "registration.", "volume.", "field.", "renderer."):
        assert any(g.abs().sum() > 0 for name, g in grads.items() if name.startswith(prefix)), prefix


def test_bf16_renders_close_to_fp32_with_the_same_weights():
    fp32 = eval_render(build(small_config()))
    bf16 = eval_render(build(small_config(autocast="bf16")))
    assert bf16["rgb"].dtype == torch.float32
    diff = (bf16["rgb"] - fp32["rgb"]).abs()
    assert diff.max() < BF16_RGB_TOLERANCE, f"max |bf16 - fp32| = {diff.max():.4f}"
    assert 0 < diff.mean() < BF16_RGB_TOLERANCE / 5  # it did run in bf16, and only rounding differs
    assert (bf16["accumulation"] - fp32["accumulation"]).abs().max() < BF16_RGB_TOLERANCE


def test_bf16_and_nerfstudio_mixed_precision_are_refused_together():
    from gmnerf_ns.training.method_configs import gm_nerf_small

    config = copy.deepcopy(gm_nerf_small.config)
    config.pipeline.model.autocast = "bf16"
    config.validate()  # alone: fine
    config.mixed_precision = True
    with pytest.raises(OptionError, match="--mixed-precision True: nerfstudio's fp16 autocast .* --pipeline.model."
                                          "autocast bf16; use one of them"):
        config.validate()
    config.pipeline.model.autocast = "fp16"
    with pytest.raises(OptionError, match="--pipeline.model.autocast fp16: must be one of off, bf16"):
        config.pipeline.model.validate()


# ---------------------------------------------------------------------------------------------------------- compile
def test_compiled_networks_match_eager_and_keep_the_state_dict_keys(monkeypatch):
    # The option's own path with the aot_eager backend: the same dynamo graphs and AOT autograd as inductor, without
    # inductor's C++ code generation, which took 157 s for this test on 2 CPU cores (it passed with these tolerances).
    monkeypatch.setattr(gmnerf_model, "compile_modules", functools.partial(compile_modules, backend="aot_eager"))
    eager, compiled = build(small_config()), build(small_config(compile_networks=True))
    for module in (compiled.field.appearance, compiled.field.geometry_mlp, compiled.field.feature_mlp,
                   compiled.renderer):
        assert module._compiled_call_impl is not None  # compiled in place (torch.nn.Module.compile)
    assert eager.renderer._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # shipped checkpoints still load
    out_e, losses_e, total_e, grads_e = train_step(eager)
    out_c, losses_c, total_c, grads_c = train_step(compiled)
    for key in ("rgb", "accumulation", "rgb_lowres", "mask"):
        torch.testing.assert_close(out_c[key], out_e[key], rtol=1e-4, atol=1e-5, msg=key)
    torch.testing.assert_close(total_c, total_e, rtol=1e-4, atol=1e-6)
    assert grads_c.keys() == grads_e.keys()
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-3, atol=1e-5, msg=name)
    torch.testing.assert_close(eval_render(compiled)["rgb"], eval_render(eager)["rgb"], rtol=1e-4, atol=1e-5)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # still, after compiling
    compiled.load_state_dict(eager.state_dict())  # strict: a checkpoint of the eager model loads


def test_a_compile_failure_is_one_error_naming_the_option():
    from torch._dynamo.exc import BackendCompilerFailed

    with pytest.raises(CompileError, match="--pipeline.model.compile-networks: torch.compile failed .*no C.. compiler.*; train without it"):
        with compile_errors(True):
            raise BackendCompilerFailed(lambda *a: None, RuntimeError("no C++ compiler"), None)
    with pytest.raises(ValueError, match="unrelated"), compile_errors(True):
        raise ValueError("unrelated")
