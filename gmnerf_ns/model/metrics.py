"""Image metrics computed the way the human-NeRF literature computes them: the model reports them during training
(nerfstudio's ``get_image_metrics_and_images``), ns-eval (:mod:`gmnerf_ns.eval`) per held-out image.

Image metrics follow the Neural Body / NHP evaluators (docs/datasets.md, "Evaluation region and metrics"):

- the evaluation region is the 2D projection of the subject's padded 3D bbox, rasterised as its 6 faces
  (:func:`bbox_mask_from_corners`, Neural Body's ``get_bound_2d_mask``);
- PSNR is computed over the pixels inside that mask only (:func:`masked_psnr`);
- SSIM is computed on the ``cv2.boundingRect`` crop of that mask, pixels of the crop outside the mask set to the same
  background value in both images (:func:`bbox_crop_ssim`), as Neural Body scatters the rendered rays onto a canvas;
- LPIPS (not in NB/NHP; GM-NeRF reports it) is computed on the same crop, and only with real pretrained weights
  (:class:`LPIPSMetric`). Without them (offline) it is *unavailable* (``None``), never a number from random weights.

Geometry metrics (P2S, Chamfer) are in :mod:`gmnerf_ns.eval.geometry`, with the meshes they compare.

The backbone's weights come from :mod:`gmnerf_ns.core.weights` (torch hub's cache, downloaded there when missing).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, Literal, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from jaxtyping import Bool, Float, Shaped
from skimage.metrics import structural_similarity
from torch import Tensor, nn

from gmnerf_ns.core.weights import (
    expected_weights_path,
    load_torchvision_features,
    missing_weights_hint,
    pretrained_weights_path,
    warn_once,
)

Image = Union[Float[np.ndarray, "H W 3"], Float[np.ndarray, "3 H W"], Float[Tensor, "H W 3"], Float[Tensor, "3 H W"]]
"""An RGB image in [0, 1], channels-last or channels-first, numpy or torch."""
Mask = Union[Shaped[np.ndarray, "H W"], Shaped[Tensor, "H W"]]
"""A 2D mask; non-zero = inside."""

MAX_PSNR = 100.0
"""PSNR of a perfect prediction (MSE below 1e-10), so that one perfect view doesn't make a mean infinite."""


def bbox_corners(bbox: Float[np.ndarray, "2 3"]) -> Float[np.ndarray, "8 3"]:
    """The 8 corners of an axis-aligned box ``[min_xyz, max_xyz]``; corner ``i`` has bits (x, y, z) = i (z fastest).

    Same order as Neural Body's ``get_bound_corners``, which the face list of :func:`bbox_mask_from_corners` assumes.
    """
    bbox = np.asarray(bbox, dtype=np.float64)
    idx = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)])  # (8, 3) in {0, 1}
    return np.where(idx == 0, bbox[0], bbox[1])


def project_bbox_corners(
    bbox: Float[np.ndarray, "2 3"],
    K: Float[np.ndarray, "3 3"],
    R: Float[np.ndarray, "3 3"],
    T: Union[Float[np.ndarray, "3"], Float[np.ndarray, "3 1"]],
) -> Float[np.ndarray, "8 2"]:
    """Projects the 8 corners of a world-space bbox with an OpenCV camera (``x_cam = R x_world + T``).

    Args:
        bbox: ``[min_xyz, max_xyz]`` in world units (the padded proxy box of docs/datasets.md).
        K: Intrinsics.
        R: World-to-camera rotation.
        T: World-to-camera translation.

    Returns:
        Pixel coordinates (u, v) of the corners, in :func:`bbox_corners` order.

    Raises:
        ValueError: If a corner is at or behind the camera plane (the projected polygon would be meaningless).
    """
    corners = bbox_corners(bbox)
    x_cam = corners @ np.asarray(R, dtype=np.float64).T + np.asarray(T, dtype=np.float64).reshape(1, 3)
    if np.any(x_cam[:, 2] <= 1e-8):
        raise ValueError("bbox corner at or behind the camera; the projected-bbox evaluation mask is undefined")
    uvw = x_cam @ np.asarray(K, dtype=np.float64).T
    return uvw[:, :2] / uvw[:, 2:]


# The 6 faces as closed corner loops (Neural Body's get_bound_2d_mask, whose second face reads [4, 5, 7, 6, 5]: a typo
# with no effect, since the other five faces already cover the silhouette).
_BOX_FACES = ((0, 1, 3, 2, 0), (4, 5, 7, 6, 4), (0, 1, 5, 4, 0), (2, 3, 7, 6, 2), (0, 2, 6, 4, 0), (1, 3, 7, 5, 1))


def bbox_mask_from_corners(corners_uv: Float[np.ndarray, "8 2"], height: int, width: int) -> Bool[np.ndarray, "H W"]:
    """Rasterises the projected 3D bbox: its 6 faces filled with ``cv2.fillPoly`` (Neural Body's ``get_bound_2d_mask``).

    This is (up to boundary pixels) the set of pixels whose ray hits the 3D box, Neural Body's ``mask_at_box``.

    Args:
        corners_uv: Projected corners in :func:`bbox_corners` order (:func:`project_bbox_corners`).
        height: Image height.
        width: Image width.

    Returns:
        Boolean mask, True inside the projected box.
    """
    corners = np.round(np.asarray(corners_uv, dtype=np.float64)).astype(np.int32)  # (8, 2), rounded as NB
    mask = np.zeros((height, width), dtype=np.uint8)
    for face in _BOX_FACES:
        cv2.fillPoly(mask, [corners[list(face)]], 1)
    return mask.astype(bool)


def _to_hwc(image: Image) -> Float[np.ndarray, "H W C"]:
    """float64 numpy, channels-last (channels-last is tried first when both ends could be channels)."""
    if isinstance(image, Tensor):
        image = image.detach().float().cpu().numpy()
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, 3) or (3, H, W) image, got shape {image.shape}")
    if image.shape[-1] in (1, 3):
        return image
    if image.shape[0] in (1, 3):
        return np.moveaxis(image, 0, -1)
    raise ValueError(f"expected an (H, W, 3) or (3, H, W) image, got shape {image.shape}")


def _to_mask(mask: Mask, shape: Tuple[int, int]) -> Bool[np.ndarray, "H W"]:
    if isinstance(mask, Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} does not match image shape {tuple(shape)}")
    mask = mask != 0
    if not mask.any():
        raise ValueError("evaluation mask is empty (does the bbox project into the image?)")
    return mask


def masked_psnr(pred: Image, gt: Image, mask: Mask) -> float:
    """PSNR (data range 1) over the pixels inside ``mask`` only, as Neural Body's evaluator.

    Written out in float64 rather than taken from torchmetrics' ``peak_signal_noise_ratio``, which converts from the
    natural log with a float32 constant (a small rounding error) and returns infinity for a perfect prediction.

    .. math::
        \\mathrm{PSNR} = -10 \\log_{10} \\frac{1}{3|M|} \\sum_{p \\in M} \\lVert \\hat I_p - I_p \\rVert^2

    Returns:
        PSNR in dB, capped at :data:`MAX_PSNR` for a perfect prediction.
    """
    pred, gt = _to_hwc(pred), _to_hwc(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ")
    mask = _to_mask(mask, pred.shape[:2])
    mse = float(np.mean((pred[mask] - gt[mask]) ** 2))
    return float(-10.0 * np.log10(max(mse, 10.0 ** (-MAX_PSNR / 10.0))))


def crop_to_mask_bbox(
    pred: Image, gt: Image, mask: Mask, background: Optional[float] = 0.0
) -> Tuple[Float[np.ndarray, "h w 3"], Float[np.ndarray, "h w 3"]]:
    """Crops both images to ``cv2.boundingRect(mask)``.

    Args:
        pred: Predicted image.
        gt: Ground-truth image.
        mask: Evaluation mask (projected bbox).
        background: Value given to crop pixels outside ``mask`` in *both* images, as Neural Body scatters the rendered
            rays onto a constant canvas (0, or 1 with a white background). ``None`` keeps the pixels as they are.

    Returns:
        ``(pred_crop, gt_crop)``, float64 channels-last.
    """
    pred, gt = _to_hwc(pred), _to_hwc(gt)
    mask = _to_mask(mask, pred.shape[:2])
    if background is not None:
        pred = np.where(mask[..., None], pred, background)
        gt = np.where(mask[..., None], gt, background)
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return pred[y : y + h, x : x + w], gt[y : y + h, x : x + w]


def bbox_crop_ssim(pred: Image, gt: Image, mask: Mask, background: Optional[float] = 0.0) -> float:
    """SSIM on the bounding-rect crop of ``mask`` (NHP's ``ssim_metric``; skimage defaults: 7x7 uniform window).

    Args:
        pred: Predicted image.
        gt: Ground-truth image.
        mask: Evaluation mask (projected bbox).
        background: See :func:`crop_to_mask_bbox`.
    """
    pred_crop, gt_crop = crop_to_mask_bbox(pred, gt, mask, background)
    if min(pred_crop.shape[:2]) < 7:
        raise ValueError(f"SSIM needs a crop of at least 7x7 pixels, got {pred_crop.shape[:2]}")
    return float(structural_similarity(gt_crop, pred_crop, channel_axis=-1, data_range=1.0))


class FrozenNetHolder(nn.Module):
    """Holds a frozen pretrained network outside ``parameters()`` and ``state_dict()``, yet moved by ``.to()``.

    Keeping the backbone out of the state dict means checkpoints don't carry it (80-500 MB) and load the same whether
    or not the weights were found on the loading machine; keeping it out of ``parameters()`` means no optimizer can
    pick it up. It stays in eval mode whatever ``.train()`` is called on the parent.
    """

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "frozen_net", None)

    def set_frozen_net(self, net: nn.Module) -> None:
        """Freezes ``net`` (eval mode, no grad) and stores it unregistered."""
        net.eval().requires_grad_(False)
        object.__setattr__(self, "frozen_net", net)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.frozen_net is not None:
            self.frozen_net._apply(fn, recurse)
        return self


class LPIPSMetric(FrozenNetHolder):
    """LPIPS (``lpips`` package, v0.1 linear layers) computed only with real pretrained weights.

    The backbone checkpoint is downloaded into torch hub's cache when missing (:mod:`gmnerf_ns.core.weights`); the
    linear layers ship with the ``lpips`` package. When the backbone cannot be had (offline), ``available`` is False,
    ``reason`` says which file is missing and calls return ``None``: an LPIPS from a randomly initialised backbone is
    not LPIPS.

    Args:
        net: Backbone: ``"alex"`` (the LPIPS authors' recommendation for a metric, and torchmetrics' default) or
            ``"vgg"``. GM-NeRF does not say which it used [INFER].
        weights_path: torchvision AlexNet / VGG16 checkpoint; ``None``: torch hub's cache, downloaded if missing.
    """

    def __init__(self, net: Literal["alex", "vgg"] = "alex", weights_path: Optional[Path] = None) -> None:
        super().__init__()
        self.net = net
        self.reason: Optional[str] = None
        arch = {"alex": "alexnet", "vgg": "vgg16"}[net]
        self.weights_path = expected_weights_path(arch, weights_path)
        try:
            self.set_frozen_net(build_lpips(net, pretrained_weights_path(arch, weights_path)))
        except Exception as err:  # missing weights offline, or an unreadable checkpoint, must never stop an evaluation
            self.reason = f"LPIPS metric disabled: {err}"
            warn_once(f"lpips-metric:{self.weights_path}", self.reason)

    @property
    def available(self) -> bool:
        """Whether real pretrained weights were loaded."""
        return self.frozen_net is not None

    @torch.no_grad()
    def forward(
        self, pred: Image, gt: Image, mask: Optional[Mask] = None, background: Optional[float] = 0.0
    ) -> Optional[float]:
        """LPIPS between two images in [0, 1] (scaled to [-1, 1] internally), on the ``mask`` bbox crop if given.

        Returns:
            The LPIPS distance (lower is better), or ``None`` if the metric is unavailable.

        Raises:
            ValueError: If the (cropped) image is smaller than 32 px (AlexNet) / 16 px (VGG) on a side.
        """
        if self.frozen_net is None:
            return None
        if mask is not None:
            pred, gt = crop_to_mask_bbox(pred, gt, mask, background)
        pred, gt = _to_hwc(pred), _to_hwc(gt)
        min_side = 32 if self.net == "alex" else 16
        if min(pred.shape[:2]) < min_side:
            raise ValueError(f"LPIPS-{self.net} needs images of at least {min_side} px per side, got {pred.shape[:2]}")
        device = next(self.frozen_net.parameters()).device

        def to_input(img: np.ndarray) -> Float[Tensor, "1 3 H W"]:
            return torch.from_numpy(img).float().permute(2, 0, 1)[None].to(device) * 2.0 - 1.0

        return float(self.frozen_net(to_input(pred), to_input(gt)).mean())


def build_lpips(net: Literal["alex", "vgg"], backbone_path: Path) -> nn.Module:
    """An ``lpips.LPIPS`` with its packaged linear layers and the torchvision backbone loaded from ``backbone_path``.

    Raises:
        FileNotFoundError: If the backbone checkpoint or the packaged linear weights are missing.
    """
    import lpips

    arch = {"alex": "alexnet", "vgg": "vgg16"}[net]
    linear_path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    if not linear_path.is_file():
        raise FileNotFoundError(f"lpips' packaged linear weights are missing: reinstall lpips ({linear_path})")
    if not backbone_path.is_file():
        raise FileNotFoundError(f"pretrained {arch} weights not found; {missing_weights_hint(arch, backbone_path)}")
    features = load_torchvision_features(backbone_path)
    with warnings.catch_warnings():
        # pnet_rand=True builds the backbone with pretrained=False (no download); silence torchvision's deprecation.
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pnet_rand=True, pretrained=True, model_path=str(linear_path), verbose=False)
    # lpips splits torchvision's `features` into slice1..5 keeping the global indices: "slice2.5.weight" = "5.weight".
    state = {name: features[name.split(".", 1)[1]] for name in model.net.state_dict()}
    model.net.load_state_dict(state, strict=True)
    return model


def image_metrics(
    pred: Image,
    gt: Image,
    bbox_mask: Mask,
    lpips: Optional[LPIPSMetric] = None,
    background: Optional[float] = 0.0,
) -> Dict[str, Optional[float]]:
    """PSNR / SSIM / LPIPS of one view, in the projected-bbox region (the single entry point for ns-eval and benchmarks).

    ``pred`` is clipped to [0, 1] first (what a saved PNG would hold). ``gt`` should already have its background
    outside the human mask set to the background colour, as the dataparsers deliver it (docs/datasets.md).

    Args:
        pred: Rendered image in [0, 1].
        gt: Ground-truth image in [0, 1].
        bbox_mask: Projected 3D bbox (:func:`bbox_mask_from_corners`).
        lpips: LPIPS metric; ``None`` (or an unavailable one) gives ``"lpips": None``.
        background: Canvas value outside the mask inside the crop (see :func:`crop_to_mask_bbox`).

    Returns:
        ``{"psnr": float, "ssim": float, "lpips": float | None}``.
    """
    pred = np.clip(_to_hwc(pred), 0.0, 1.0)
    gt = _to_hwc(gt)
    return {
        "psnr": masked_psnr(pred, gt, bbox_mask),
        "ssim": bbox_crop_ssim(pred, gt, bbox_mask, background),
        "lpips": lpips(pred, gt, bbox_mask, background) if lpips is not None else None,
    }
