"""Tests for gmnerf_ns.model.losses: offline fallback, local-weights loading, gradients, mask BCE, masked MSE/L1."""

import warnings

import pytest
import torch
import torchvision
from torchvision.models.vgg import cfgs, make_layers

from gmnerf_ns.core import weights
from gmnerf_ns.core.weights import MissingPretrainedWeightsWarning
from gmnerf_ns.model.losses import (
    MS_SSIM_MIN_SIDE,
    PerceptualLoss,
    PerceptualLossConfig,
    l1,
    mask_loss,
    mse,
    vgg19_layer_names,
)


@pytest.fixture(autouse=True)
def fresh_warn_once(monkeypatch):
    monkeypatch.setattr(weights, "_WARNED_KEYS", set())


@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    return tmp_path / "empty_torch_home"


@pytest.fixture(scope="module")
def fake_torch_home(tmp_path_factory):
    """A torch hub cache holding randomly initialised VGG19 / VGG16 checkpoints under torchvision's file names.

    Only the ``features.*`` tensors are written (the 500 MB classifier is never read by the losses), plus a small
    stand-in classifier key to check it is ignored.
    """
    home = tmp_path_factory.mktemp("torch_home")
    ckpt_dir = home / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    torch.manual_seed(0)
    vgg19 = torchvision.models.vgg19(weights=None).features.state_dict()
    torch.save(
        {**{f"features.{k}": v for k, v in vgg19.items()}, "classifier.6.bias": torch.zeros(10)},
        ckpt_dir / "vgg19-dcbb9e9d.pth",
    )
    vgg16 = make_layers(cfgs["D"]).state_dict()  # the same keys as torchvision.models.vgg16().features
    torch.save({f"features.{k}": v for k, v in vgg16.items()}, ckpt_dir / "vgg16-397923af.pth")
    return home


def _pair(size=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, size, size, generator=gen)
    pred = torch.rand(2, 3, size, size, generator=gen).requires_grad_(True)
    return pred, target


def test_vgg19_layer_names():
    # conv1_1 relu1_1 conv1_2 relu1_2 | pool1 (4) | conv2_1 relu2_1 conv2_2 relu2_2 (8) | pool2 (9) | conv3_1 relu3_1
    # conv3_2 relu3_2 (13) ... relu4_2 = 22, relu5_2 = 31 (torchvision's vgg19().features indices).
    names = vgg19_layer_names()
    assert [names.index(n) for n in ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")] == [3, 8, 13, 22, 31]
    assert len(names) == len(torchvision.models.vgg.make_layers(cfgs["E"]))


# ---------------------------------------------------------------------------------------------------------------------
# Offline fallback
# ---------------------------------------------------------------------------------------------------------------------


def test_offline_falls_back_and_warns_exactly_once(offline_torch_home):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = PerceptualLossConfig().setup()
        second = PerceptualLossConfig().setup()
        pred, target = _pair()
        first(pred, target)
        second(pred, target)
    ours = [w for w in caught if issubclass(w.category, MissingPretrainedWeightsWarning)]
    assert len(ours) == 1
    expected_file = offline_torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert str(expected_file) in str(ours[0].message)
    for loss in (first, second):
        assert loss.kind == "ssim-fallback"
        assert str(expected_file) in loss.reason


@pytest.mark.parametrize("size", [32, MS_SSIM_MIN_SIDE])  # 1 - SSIM, then 1 - MS-SSIM
def test_fallback_loss_values_and_gradients(offline_torch_home, size):
    with pytest.warns(MissingPretrainedWeightsWarning):
        loss = PerceptualLossConfig().setup()
    pred, target = _pair(size)
    assert loss(target, target).item() == pytest.approx(0.0, abs=1e-5)
    value = loss(pred, target)
    assert value.item() > 0.5  # independent noise images are structurally unrelated
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_lpips_backbone_offline_falls_back(offline_torch_home):
    with pytest.warns(MissingPretrainedWeightsWarning):
        loss = PerceptualLossConfig(backbone="lpips").setup()
    assert loss.kind == "ssim-fallback" and "vgg16-397923af.pth" in loss.reason


def test_fallback_can_be_refused(offline_torch_home):
    with pytest.raises(FileNotFoundError, match="vgg19-dcbb9e9d.pth"):
        PerceptualLossConfig(allow_fallback=False).setup()


def test_broken_checkpoint_falls_back(offline_torch_home, tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.warns(MissingPretrainedWeightsWarning, match="not a readable torch checkpoint"):
        loss = PerceptualLossConfig(weights_path=bad).setup()
    assert loss.kind == "ssim-fallback" and str(bad) in loss.reason


# ---------------------------------------------------------------------------------------------------------------------
# Local weights
# ---------------------------------------------------------------------------------------------------------------------


def test_vgg_loss_with_local_weights(fake_torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(fake_torch_home))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingPretrainedWeightsWarning)
        loss = PerceptualLossConfig().setup()
    assert loss.kind == "vgg" and loss.reason is None
    saved = torch.load(fake_torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth")
    assert torch.equal(loss.frozen_net.trunk[28].weight, saved["features.28.weight"])  # conv5_1

    pred, target = _pair()
    assert loss(target, target).item() == 0.0
    value = loss(pred, target)
    assert value.item() > 0.0
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_frozen_backbone_is_not_trainable_nor_checkpointed(fake_torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(fake_torch_home))
    loss = PerceptualLossConfig().setup()
    net = loss.frozen_net
    assert list(loss.parameters()) == [] and list(loss.state_dict()) == []
    assert all(not p.requires_grad for p in net.parameters())
    loss.train()
    assert not net.training
    # .to() on a parent model reaches the unregistered backbone (no cuda here; dtype is the proxy for device).
    torch.nn.Sequential(loss).to(torch.float64)
    assert next(net.parameters()).dtype == torch.float64 and net.mean.dtype == torch.float64


def test_explicit_weights_path(fake_torch_home, offline_torch_home):
    path = fake_torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    loss = PerceptualLossConfig(weights_path=path, layers=("relu1_2", "relu2_2"), layer_weights=(1.0, 1.0)).setup()
    assert loss.kind == "vgg" and loss.weights_path == path
    assert len(loss.frozen_net.trunk) == 9  # up to relu2_2 only


def test_lpips_loss_with_local_weights(fake_torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(fake_torch_home))
    loss = PerceptualLoss(PerceptualLossConfig(backbone="lpips"))
    assert loss.kind == "lpips" and loss.reason is None
    pred, target = _pair()
    assert loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    value = loss(pred, target)
    assert value.item() > 0.0
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------------
# Mask and pixel losses
# ---------------------------------------------------------------------------------------------------------------------


def test_mask_loss_probs_match_logits():
    logits = torch.linspace(-4, 4, 50)
    target = (torch.arange(50) % 2).float()
    assert mask_loss(torch.sigmoid(logits), target).item() == pytest.approx(
        mask_loss(logits, target, logits=True).item(), rel=1e-5
    )
    # Hand-computed: p = 0.5 everywhere -> BCE = log 2.
    assert mask_loss(torch.full((8,), 0.5), target[:8]).item() == pytest.approx(0.693147, abs=1e-6)


def test_mask_loss_saturated_opacity_is_finite_and_still_has_gradient():
    opacity = torch.tensor([1.0, 0.0], requires_grad=True)  # fully wrong and saturated
    target = torch.tensor([0.0, 1.0])
    loss = mask_loss(opacity, target, eps=1e-4)
    assert loss.item() == pytest.approx(-torch.log(torch.tensor(1e-4)).item(), rel=1e-3)
    loss.backward()
    assert torch.isfinite(opacity.grad).all()
    assert opacity.grad[0] > 0 and opacity.grad[1] < 0  # pushes towards the target


def test_masked_mse_and_l1_ignore_pixels_outside_mask():
    pred = torch.zeros(4, 3)
    target = torch.tensor([[0.1] * 3, [0.1] * 3, [9.0] * 3, [9.0] * 3])
    mask = torch.tensor([[1.0], [1.0], [0.0], [0.0]])
    assert mse(pred, target, mask).item() == pytest.approx(0.01)
    assert l1(pred, target, mask).item() == pytest.approx(0.1)
    assert mse(pred, target).item() == pytest.approx((0.01 + 81.0) / 2)
