"""2D image encoder: per-view multi-scale feature maps of the m source images.

The paper trains a CNN encoder end to end; the backbone is not stated [UNVERIFIED]. We follow pixelNeRF/NHP: a ResNet
(torchvision resnet18/34 with ImageNet weights, downloaded into torch hub's cache when missing unless offline; see
:mod:`gmnerf_ns.core.weights`) or a small from-scratch CNN for CPU runs, with features from several strides upsampled to
half the input resolution and fused by a 1x1 convolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Type

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor, nn

from gmnerf_ns.core.weights import PretrainedWeightsUnavailable, pretrained_weights_path, warn_once


@dataclass
class ImageEncoderConfig(InstantiateConfig):
    """Configuration of the source-image encoder."""

    _target: Type = field(default_factory=lambda: ImageEncoder)
    backbone: Literal["small", "resnet18", "resnet34"] = "small"
    """'small': a 3-stage CNN trained from scratch (fast on CPU); 'resnet18'/'resnet34': torchvision ResNets."""
    pretrained_weights: Optional[Path] = None
    """ImageNet weights for the ResNet. None: torch hub's cache ($TORCH_HOME/hub/checkpoints), downloaded if missing."""
    channels: int = 16
    """Width of the small CNN's first stage (doubled at each later stage)."""
    out_channels: int = 32
    """Channels of the fused feature map."""


class ImageEncoder(nn.Module):
    """Maps (m, 3, H, W) images to (m, C, H/2, W/2) features."""

    def __init__(self, config: ImageEncoderConfig):
        super().__init__()
        self.config = config
        if config.backbone == "small":
            c = config.channels
            self.stages = nn.ModuleList(
                [
                    _conv_block(3, c, stride=2),  # H/2
                    _conv_block(c, 2 * c, stride=2),  # H/4
                    _conv_block(2 * c, 4 * c, stride=2),  # H/8
                ]
            )
            stage_channels = [c, 2 * c, 4 * c]
            self.weights_source = "trained from scratch (small CNN)"
        else:
            self.stages, stage_channels, self.weights_source = _resnet_stages(config)
        self.fuse = nn.Conv2d(sum(stage_channels), config.out_channels, kernel_size=1)
        CONSOLE.log(f"image encoder: {config.backbone}, {self.weights_source}")

    @property
    def out_channels(self) -> int:
        return self.config.out_channels

    def forward(self, images: Float[Tensor, "m 3 H W"]) -> Float[Tensor, "m C h w"]:
        x = (images - 0.45) / 0.225  # roughly ImageNet-normalised
        feats: List[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        # fuse(cat(upsample(f_i))) computed as sum_i upsample(fuse_i(f_i)): the same function (a 1x1 conv and bilinear
        # upsampling are both linear, so they commute), without the wide concatenated map at half resolution that
        # autograd would keep for the 1x1 conv.
        size = feats[0].shape[-2:]
        weights = self.fuse.weight.split([f.shape[1] for f in feats], dim=1)
        out = F.conv2d(feats[0], weights[0], self.fuse.bias)
        for f, w in zip(feats[1:], weights[1:]):
            out = out + F.interpolate(F.conv2d(f, w), size=size, mode="bilinear", align_corners=False)
        return out


def _conv_block(cin: int, cout: int, stride: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
    )


def _resnet_stages(config: ImageEncoderConfig):
    import torchvision

    net = getattr(torchvision.models, config.backbone)(weights=None)
    try:
        path = pretrained_weights_path(config.backbone, config.pretrained_weights)
    except PretrainedWeightsUnavailable as err:  # offline: the ResNet still trains, from scratch
        source = "trained from scratch (no ImageNet weights)"
        warn_once(f"image-encoder:{err}", f"Image encoder {config.backbone} trains from scratch: {err}")
    else:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        source = f"ImageNet weights from {path}"
    stages = nn.ModuleList(
        [
            nn.Sequential(net.conv1, net.bn1, net.relu),  # H/2, 64
            nn.Sequential(net.maxpool, net.layer1),  # H/4, 64
            net.layer2,  # H/8, 128
            net.layer3,  # H/16, 256
        ]
    )
    return stages, [64, 64, 128, 256], source
