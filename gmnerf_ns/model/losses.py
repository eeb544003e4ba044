"""Training losses: perceptual (VGG19 features or LPIPS, weights-free fallback), mask BCE, masked MSE / L1.

GM-NeRF trains on random patches with a perceptual loss ("the perceptual loss requires a large enough image as input",
docs/paper_notes.md §2 [PAPER]); the paper text available to us names neither the network nor its weights. The default here, a
Johnson-style L1 loss on ImageNet-normalised VGG19 relu1_2..relu5_2 features with pix2pixHD's layer weights, and the
LPIPS-VGG alternative, are our choice [INFER].

Pretrained weights come from ``PerceptualLossConfig.weights_path``, else torch hub's cache
(``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``, ``vgg16-397923af.pth`` for LPIPS), downloaded there from
torchvision when missing (:mod:`gmnerf_ns.core.weights`; ``GMNERF_OFFLINE=1`` forbids it). Without them the loss falls
back to the weights-free ``1 - MS-SSIM`` (``1 - SSIM`` on patches too small for 5 MS-SSIM scales), says so once,
loudly, with the file path to fill, and records it in ``PerceptualLoss.kind`` / ``.reason``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from pytorch_msssim import ms_ssim, ssim
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.vgg import cfgs, make_layers

from gmnerf_ns.core.weights import (
    PretrainedWeightsUnavailable,
    expected_weights_path,
    load_torchvision_features,
    pretrained_weights_path,
    warn_once,
)
from gmnerf_ns.model.metrics import FrozenNetHolder, build_lpips

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MS_SSIM_MIN_SIDE = 161
"""pytorch_msssim's 5-scale MS-SSIM with an 11-px window needs patches larger than (11 - 1) * 2**4 px."""


@dataclass
class PerceptualLossConfig(InstantiateConfig):
    """Configuration for the perceptual loss."""

    _target: Type = field(default_factory=lambda: PerceptualLoss)
    backbone: Literal["vgg", "lpips"] = "vgg"
    """``vgg``: L1 on VGG19 features (Johnson et al. / pix2pixHD). ``lpips``: LPIPS v0.1 with a VGG16 trunk."""
    weights_path: Optional[Path] = None
    """torchvision VGG19 (``vgg``) or VGG16 (``lpips``) checkpoint. None: torch hub's cache, downloaded if missing."""
    layers: Tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
    """VGG19 activations compared by the ``vgg`` backbone."""
    layer_weights: Tuple[float, ...] = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
    """Weight of each layer's L1 term (pix2pixHD's VGGLoss weights)."""
    allow_fallback: bool = True
    """Without pretrained weights, use ``1 - MS-SSIM`` instead of raising ``FileNotFoundError``."""


def vgg19_layer_names() -> List[str]:
    """Names of ``torchvision.models.vgg19().features`` modules by index: conv1_1, relu1_1, conv1_2, ..., pool5."""
    names, block, conv = [], 1, 0
    for v in cfgs["E"]:
        if v == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            conv += 1
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return names


class VGG19Features(nn.Module):
    """The VGG19 trunk up to the deepest requested layer; returns the requested activations of a [0, 1] image.

    Args:
        features_state: ``features.*`` weights of a torchvision VGG19 checkpoint, prefix stripped.
        layers: Activation names (see :func:`vgg19_layer_names`).
    """

    def __init__(self, features_state: Dict[str, Tensor], layers: Tuple[str, ...]) -> None:
        super().__init__()
        names = vgg19_layer_names()
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError(f"unknown VGG19 layers {unknown}; choose from {names}")
        self.indices = [names.index(name) for name in layers]
        self.trunk = make_layers(cfgs["E"])[: max(self.indices) + 1]
        for module in self.trunk:
            if isinstance(module, nn.ReLU):
                module.inplace = False  # the returned activations must not be overwritten
        state = {k: v for k, v in features_state.items() if int(k.split(".")[0]) < len(self.trunk)}
        self.trunk.load_state_dict(state, strict=True)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Float[Tensor, "batch 3 H W"]) -> List[Tensor]:
        """Activations in the order of ``layers``."""
        x = (image - self.mean) / self.std
        acts: Dict[int, Tensor] = {}
        for i, module in enumerate(self.trunk):
            x = module(x)
            if i in self.indices:
                acts[i] = x
        return [acts[i] for i in self.indices]


class PerceptualLoss(FrozenNetHolder):
    """Perceptual loss between a predicted and a target image in [0, 1].

    The pretrained network is frozen, in eval mode, moved by ``.to()``, and kept out of ``parameters()`` and
    ``state_dict()`` (see :class:`~gmnerf_ns.model.metrics.FrozenNetHolder`).

    Attributes:
        kind: ``"vgg"``, ``"lpips"`` or ``"ssim-fallback"``: what ``forward`` actually computes.
        reason: Why the fallback is used (``None`` otherwise).
        weights_path: The checkpoint path that was looked up.
    """

    config: PerceptualLossConfig

    def __init__(self, config: PerceptualLossConfig) -> None:
        super().__init__()
        self.config = config
        if len(config.layers) != len(config.layer_weights):
            raise ValueError(f"{len(config.layers)} layers but {len(config.layer_weights)} layer weights")
        arch = "vgg19" if config.backbone == "vgg" else "vgg16"
        self.weights_path = expected_weights_path(arch, config.weights_path)
        self.kind: str = config.backbone
        self.reason: Optional[str] = None
        try:
            try:
                path = pretrained_weights_path(arch, config.weights_path)
            except PretrainedWeightsUnavailable as err:
                suffix = " (or set weights_path)" if config.weights_path is None else ""
                raise PretrainedWeightsUnavailable(f"{err}{suffix}") from err
            if config.backbone == "vgg":
                net = VGG19Features(load_torchvision_features(path), config.layers)
            else:
                net = build_lpips("vgg", path)
        except Exception as err:  # offline without weights (or with a broken file) must not stop training
            if not config.allow_fallback:
                raise
            self.kind = "ssim-fallback"
            self.reason = (
                f"Perceptual loss ({config.backbone}) falls back to the weights-free 1 - MS-SSIM "
                f"(1 - SSIM below {MS_SSIM_MIN_SIDE} px): {err}"
            )
            warn_once(f"perceptual-loss:{config.backbone}:{self.weights_path}", self.reason)
            return
        self.set_frozen_net(net)

    def forward(self, pred: Float[Tensor, "batch 3 H W"], target: Float[Tensor, "batch 3 H W"]) -> Float[Tensor, ""]:
        """Loss averaged over the batch; gradients flow to ``pred`` only."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        target = target.detach()
        if self.kind == "ssim-fallback":
            return structural_loss(pred, target)
        if self.kind == "lpips":
            return self.frozen_net(pred, target, normalize=True).mean()
        pred_feats = self.frozen_net(pred)
        with torch.no_grad():
            target_feats = self.frozen_net(target)
        loss = pred.new_zeros(())
        for weight, p, t in zip(self.config.layer_weights, pred_feats, target_feats):
            loss = loss + weight * F.l1_loss(p, t)
        return loss


def structural_loss(pred: Float[Tensor, "batch 3 H W"], target: Float[Tensor, "batch 3 H W"]) -> Float[Tensor, ""]:
    """``1 - MS-SSIM`` (data range 1), or ``1 - SSIM`` when a side is under :data:`MS_SSIM_MIN_SIDE` px."""
    pred, target = pred.float(), target.float()
    side = min(pred.shape[-2:])
    if side >= MS_SSIM_MIN_SIDE:
        return 1.0 - ms_ssim(pred, target, data_range=1.0, size_average=True)
    win_size = min(11, side if side % 2 == 1 else side - 1)  # odd, no larger than the patch
    return 1.0 - ssim(pred, target, data_range=1.0, size_average=True, win_size=max(win_size, 1))


def mask_loss(
    pred: Float[Tensor, "*bs"], target: Float[Tensor, "*bs"], logits: bool = False, eps: float = 1e-4
) -> Float[Tensor, ""]:
    """Binary cross-entropy between a predicted opacity / mask and a target mask in [0, 1].

    Args:
        pred: Probabilities (e.g. accumulated opacity) or, with ``logits=True``, logits.
        target: Target mask; soft values are allowed, values outside [0, 1] are clamped.
        logits: Whether ``pred`` holds logits.
        eps: Probabilities are clamped to ``[eps, 1 - eps]``. The clamp is straight-through, so an opacity
            saturated at exactly 1 where the target is 0 still gets a gradient.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    target = target.float().clamp(0.0, 1.0)
    if logits:
        return F.binary_cross_entropy_with_logits(pred.float(), target)
    prob = pred.float()
    prob = prob + (prob.clamp(eps, 1.0 - eps) - prob).detach()
    # Written out rather than F.binary_cross_entropy, which refuses to run under CUDA autocast.
    return -(target * torch.log(prob) + (1.0 - target) * torch.log1p(-prob)).mean()


def mse(
    pred: Float[Tensor, "*bs C"], target: Float[Tensor, "*bs C"], mask: Optional[Float[Tensor, "*bs 1"]] = None
) -> Float[Tensor, ""]:
    """Mean squared error, over the pixels where ``mask`` > 0 (weighted by it) when given."""
    return _masked_mean((pred - target) ** 2, mask)


def l1(
    pred: Float[Tensor, "*bs C"], target: Float[Tensor, "*bs C"], mask: Optional[Float[Tensor, "*bs 1"]] = None
) -> Float[Tensor, ""]:
    """Mean absolute error, over the pixels where ``mask`` > 0 (weighted by it) when given."""
    return _masked_mean((pred - target).abs(), mask)


def _masked_mean(err: Tensor, mask: Optional[Tensor]) -> Tensor:
    if mask is None:
        return err.mean()
    weight = mask.to(err).expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1e-8)
