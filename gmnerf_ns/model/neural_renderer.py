"""2D neural renderer: upsamples the half-resolution volume-rendered feature image x2 to RGB and a mask.

The paper volume-renders a feature image at H/2 x W/2 and a 2D network produces the H x W image [PAPER, "Efficient
Training"]; its architecture is not available to us [INFER]: residual conv blocks at half resolution, one PixelShuffle
x2 stage, one block at full resolution. The receptive field stays small (a few pixels) so that renders remain
multi-view consistent. The RGB output refines the bilinearly upsampled low-resolution colour (a skip path, as in
StyleNeRF/EG3D super-resolution), which makes early training stable.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x + self.body(x), 0.2)


class NeuralRenderer(nn.Module):
    """(1, 3 + C + 1, h, w) [low-res RGB, features, opacity] -> (1, 3, 2h, 2w) RGB and (1, 1, 2h, 2w) mask logits."""

    def __init__(self, in_channels: int, width: int = 32, num_blocks: int = 2):
        super().__init__()
        self.head = nn.Conv2d(in_channels, width, 3, padding=1)
        self.low = nn.Sequential(*[_ResBlock(width) for _ in range(num_blocks)])
        self.up = nn.Sequential(nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(0.2))
        self.high = _ResBlock(width)
        self.out = nn.Conv2d(width, 4, 3, padding=1)

    def forward(
        self,
        rgb: Float[Tensor, "1 3 h w"],
        features: Float[Tensor, "1 C h w"],
        opacity: Float[Tensor, "1 1 h w"],
    ) -> Dict[str, Tensor]:
        x = self.high(self.up(self.low(self.head(torch.cat([rgb, features, opacity], dim=1)))))
        out = self.out(x)
        rgb_up = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False)
        opacity_up = F.interpolate(opacity, scale_factor=2, mode="bilinear", align_corners=False)
        rgb_full = torch.sigmoid(out[:, :3] + torch.logit(rgb_up.clamp(1e-3, 1 - 1e-3)))
        mask_logits = out[:, 3:] + torch.logit(opacity_up.clamp(1e-3, 1 - 1e-3))
        return {"rgb": rgb_full, "mask_logits": mask_logits}
