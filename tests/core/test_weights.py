"""Tests for gmnerf_ns.core.weights: download into torch hub's cache (a file:// URL stands in for the network), the
GMNERF_OFFLINE switch and an unreachable URL (both fall back loudly), and gmnerf-doctor's weights rows."""

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision

from gmnerf_ns.cli.doctor_environment import weights_check
from gmnerf_ns.core import weights
from gmnerf_ns.core.weights import (
    OFFLINE_ENV,
    MissingPretrainedWeightsWarning,
    PretrainedWeightsUnavailable,
    pretrained_weights_path,
)
from gmnerf_ns.model.encoder import ImageEncoderConfig
from gmnerf_ns.model.losses import PerceptualLossConfig
from gmnerf_ns.model.metrics import LPIPSMetric

VGG19_FIRST_BLOCK = dict(layers=("relu1_2",), layer_weights=(1.0,))
"""A perceptual loss that needs only conv1_1 and conv1_2, so that the served checkpoint stays tiny."""


@pytest.fixture
def online(tmp_path, monkeypatch):
    """Downloads allowed, an empty torch hub cache under tmp_path, and a fresh warn-once registry."""
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(weights, "_WARNED_KEYS", set())
    return tmp_path / "torch_home" / "hub" / "checkpoints"


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """``serve(arch, state)`` saves ``state`` under a torchvision-style name and points ``arch``'s URL at it.

    The name carries the first 8 hex digits of the file's SHA-256, as torchvision's do, so the hash check runs.
    """

    def _serve(arch, state) -> Path:
        folder = tmp_path / "server"
        folder.mkdir(exist_ok=True)
        staging = folder / "staging.pth"
        torch.save(state, staging)
        digest = hashlib.sha256(staging.read_bytes()).hexdigest()
        served = staging.rename(folder / f"{arch}-{digest[:8]}.pth")
        monkeypatch.setitem(weights.TORCHVISION_URLS, arch, served.as_uri())
        return served

    return _serve


def _vgg19_first_block():
    torch.manual_seed(0)
    state = torchvision.models.vgg19(weights=None).features[:4].state_dict()
    return {f"features.{k}": v for k, v in state.items()}


def test_missing_weights_are_downloaded_into_the_hub_cache_once(online, serve):
    served = serve("vgg19", _vgg19_first_block())
    path = pretrained_weights_path("vgg19", progress=False)
    assert path == online / served.name  # torchvision's file name, in torch hub's checkpoint dir
    assert path.read_bytes() == served.read_bytes()
    assert list(online.iterdir()) == [path]  # no partial file left behind
    served.unlink()  # a second lookup finds the cached file and needs no network
    assert pretrained_weights_path("vgg19", progress=False) == path


def test_perceptual_loss_uses_downloaded_vgg(online, serve):
    state = _vgg19_first_block()
    serve("vgg19", state)
    loss = PerceptualLossConfig(**VGG19_FIRST_BLOCK).setup()
    assert loss.kind == "vgg" and loss.reason is None
    assert torch.equal(loss.frozen_net.trunk[2].weight, state["features.2.weight"])  # conv1_2


def test_lpips_metric_uses_downloaded_alexnet(online, serve):
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in torchvision.models.alexnet(weights=None).features.state_dict().items()}
    serve("alexnet", state)
    lpips = LPIPSMetric("alex")
    assert lpips.available and lpips.reason is None
    assert torch.equal(lpips.frozen_net.net.slice1[0].weight, state["features.0.weight"])


def test_resnet_encoder_uses_downloaded_imagenet_weights(online, serve):
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    served = serve("resnet18", state)
    encoder = ImageEncoderConfig(backbone="resnet18").setup()
    assert encoder.weights_source == f"ImageNet weights from {online / served.name}"
    assert torch.equal(encoder.stages[0][0].weight, state["conv1.weight"])


def test_hash_mismatch_is_refused_and_leaves_no_file(online, tmp_path, monkeypatch):
    bad = tmp_path / "vgg19-00000000.pth"
    torch.save(_vgg19_first_block(), bad)
    monkeypatch.setitem(weights.TORCHVISION_URLS, "vgg19", bad.as_uri())
    with pytest.raises(PretrainedWeightsUnavailable, match="invalid hash value"):
        pretrained_weights_path("vgg19", progress=False)
    assert not online.exists() or list(online.iterdir()) == []


def test_offline_switch_forbids_the_download_and_falls_back_loudly(online, serve, monkeypatch):
    serve("vgg19", _vgg19_first_block())
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.warns(MissingPretrainedWeightsWarning, match=OFFLINE_ENV) as caught:
        loss = PerceptualLossConfig(**VGG19_FIRST_BLOCK).setup()
    assert loss.kind == "ssim-fallback"
    expected = online / weights.checkpoint_file("vgg19")
    assert str(expected) in str(caught[0].message)  # names the file and where to put it
    assert not online.exists()


@pytest.mark.parametrize("url", ["missing-file", "http://127.0.0.1:9/vgg19-dcbb9e9d.pth"])
def test_unreachable_url_falls_back_loudly(online, tmp_path, monkeypatch, url):
    if url == "missing-file":
        url = (tmp_path / "nowhere" / "vgg19-dcbb9e9d.pth").as_uri()
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # a proxy would answer for 127.0.0.1 with its own error
    monkeypatch.setitem(weights.TORCHVISION_URLS, "vgg19", url)
    with pytest.warns(MissingPretrainedWeightsWarning, match="download failed"):
        loss = PerceptualLossConfig().setup()
    assert loss.kind == "ssim-fallback"
    assert f"put torchvision's vgg19-dcbb9e9d.pth ({url}) at {online / 'vgg19-dcbb9e9d.pth'}" in loss.reason


def test_explicit_path_is_never_downloaded_to(online, serve, tmp_path):
    serve("resnet18", {"unused": torch.zeros(1)})
    explicit = tmp_path / "mine" / "resnet18.pth"
    with pytest.raises(PretrainedWeightsUnavailable, match=str(explicit)):
        pretrained_weights_path("resnet18", explicit)
    assert not explicit.exists() and not online.exists()


def test_doctor_says_present_downloaded_or_missing(online, serve, monkeypatch):
    def row():
        return weights_check("perceptual loss", "vgg19", None, "vgg on vgg19", "falls back to 1 - MS-SSIM")

    serve("vgg19", _vgg19_first_block())
    will_download = row()
    assert will_download.status == "info" and "downloaded on first use" in will_download.detail
    monkeypatch.setenv(OFFLINE_ENV, "1")
    missing = row()
    assert missing.status == "warn" and OFFLINE_ENV in missing.detail and "falls back" in missing.detail
    monkeypatch.delenv(OFFLINE_ENV)
    pretrained_weights_path("vgg19", progress=False)
    assert row().status == "ok"
