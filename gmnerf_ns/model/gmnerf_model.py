"""GM-NeRF model: generalizable model-based radiance field for humans (Chen et al., CVPR 2023).

Call graph of one render::

    encode(sources)                                 once per subject-frame
      encoder -> per-view feature maps
      proxy vertices -> projection + visibility -> per-view vertex features
      geometry-guided attention (VertexRegistration) -> one code per vertex
      splat into a grid over the padded proxy box -> ProxyVolume (Conv3d) -> multi-scale volumes
    render_rays(rays, encoded)                      per half-resolution ray
      ray/box intersection -> stratified samples -> skip empty space (dilated proxy occupancy)
      field (geometry code + view attention) -> density, colour, feature -> volume rendering
    neural renderer                                 half-resolution feature image -> full-resolution RGB + mask

Rays and the box test are in rays.py; sampling, empty-space skipping and compositing in rendering.py.

Training renders a random patch that overlaps the person; CIPS-3D partial gradient backpropagation renders only a
random ``grad_ray_fraction`` of the feature-image rays with autograd and the rest under ``no_grad``, scattered into
one image so the 2D renderer and the perceptual loss see the full patch [PAPER, "Efficient Training"].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils.external import TCNN_EXISTS
from torch import Tensor, nn
from torch.nn import Parameter

from gmnerf_ns.geometry.camera_math import project_to_views
from gmnerf_ns.model.attention import VertexRegistration, masked_view_mean, window_offsets
from gmnerf_ns.model.conditioning import SourceConditioning, SourceProvider  # noqa: F401 (imported from here)
from gmnerf_ns.model.config_checks import check_model_options
from gmnerf_ns.model.encoder import ImageEncoderConfig
from gmnerf_ns.model.field import EncodedSources, GMNeRFField
from gmnerf_ns.model.losses import PerceptualLoss, PerceptualLossConfig, mask_loss
from gmnerf_ns.model.neural_renderer import NeuralRenderer
from gmnerf_ns.model.precision import AUTOCAST_DTYPES, compile_errors, compile_modules, networks_autocast, to_fp32
from gmnerf_ns.model.rays import camera_rays, pixel_centres, ray_box_intersection  # noqa: F401 (imported from here)
from gmnerf_ns.model.rendering import render_box_rays, render_in_chunks, render_partial_gradient
from gmnerf_ns.model.sources import BACKGROUND_DEPTH, SourceViews, proxy_depth_maps, sample_maps, vertex_visibility
from gmnerf_ns.model.volume import ProxyVolume, dilate, grid_shape, normalize_points, splat_to_grid


@dataclass
class GMNeRFModelConfig(ModelConfig):
    """GM-NeRF model configuration. Defaults are the CPU-sized model; ``gm-nerf`` widens them for a GPU."""

    _target: Type = field(default_factory=lambda: GMNeRFModel)
    enable_collider: bool = False
    """Unused: rays are bounded by the proxy's box, not by near/far planes."""
    encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    """Source-image encoder."""
    registration: Literal["geometry-guided", "mean", "none"] = "geometry-guided"
    """How per-view vertex features become one code: the paper's attention, a mean over visible views (ablation), or
    'none' (pixelNeRF-style baseline: the proxy only bounds the sampling box)."""
    appearance_fusion: Literal["attention", "mean"] = "attention"
    """How a sample's pixel-aligned features are fused over the views: the paper's attention queried by its geometry
    code, or a plain mean over the views it projects into (naive-projection ablation)."""
    registration_window: int = 1
    """Registration attends over a k x k pixel window around each vertex projection (odd k; 1 = the projections
    only), so a misfitted proxy's vertices can reach the person's pixels; see benchmarks/generalization/README.md."""
    registration_spacing: float = 0.012
    """Spacing of the registration window's samples, as a fraction of the source image's longest side (3 px at
    256 px: a 3 x 3 window then reaches +-3 px, +-1.2 cm at 2 m on the built-in cameras)."""
    vertex_code_dim: int = 32
    """Channels of the registered vertex codes."""
    volume_resolution: int = 48
    """Cells of the proxy feature volume along the proxy box's longest side."""
    volume_channels: Tuple[int, ...] = (32, 32, 48, 48)
    """Channels of the Conv3d stages (each after the first halves the resolution)."""
    occupancy_margin: float = 0.10
    """Samples farther than about this (metres) from the proxy are empty space and skip the field."""
    num_samples: int = 32
    """Samples per ray inside the proxy box."""
    appearance_dim: int = 64
    """Channels of a sample's fused pixel-aligned appearance code (the view attention's output)."""
    hidden_dim: int = 64
    """Width of the field's MLP layers."""
    feature_dim: int = 16
    """Channels of the volume-rendered feature image (besides RGB and opacity)."""
    pe_frequencies: int = 6
    """Frequencies of the positional encoding of a sample's position in the proxy box (input of the density MLP)."""
    use_silhouette_hull: bool = True
    """Feed source-mask agreement at a sample's projections to the density head (a visual-hull cue)."""
    neural_renderer: bool = True
    """Volume-render at half resolution and upsample with the 2D renderer (paper); False = full-resolution volume
    rendering of RGB (ablation)."""
    renderer_width: int = 32
    """Channels of the 2D neural renderer's convolutions."""
    grad_ray_fraction: float = 0.25
    """Fraction of feature-image rays rendered with gradient during training (CIPS-3D); 1.0 = full gradient."""
    max_proxy_vertices: int = 6000
    """Vertices registered into the volume: a fixed, evenly strided subset when the template has more (the volume
    has fewer cells than SMPL-X/anny have vertices, so the rest add cost, not information)."""
    visibility: Literal["mesh", "splat"] = "mesh"
    """Visibility test against the rasterised proxy mesh (when faces are known) or against splatted vertex depths."""
    visibility_resolution: int = 128
    """Longest side (pixels) of the depth maps used for the visibility test."""
    visibility_tolerance: float = 0.03
    """Metres behind the front surface within which a vertex still counts as visible."""
    rgb_loss_mult: float = 1.0
    """Weight of the MSE between the rendered and the real patch (full resolution)."""
    perceptual_loss_mult: float = 0.1
    """Weight of the perceptual loss on the patch (VGG features; MS-SSIM without VGG weights)."""
    mask_loss_mult: float = 0.1
    """Weight of the cross-entropy between the 2D renderer's mask and the person's mask."""
    lowres_rgb_loss_mult: float = 0.5
    """Weight of the MSE of the volume-rendered half-resolution RGB on the gradient rays."""
    opacity_loss_mult: float = 0.1
    """Weight of the cross-entropy between the volume-rendered opacity and the mask on the gradient rays."""
    perceptual_loss: PerceptualLossConfig = field(default_factory=PerceptualLossConfig)
    """Perceptual loss network and layers."""
    implementation: Literal["auto", "tcnn", "torch"] = "auto"
    """MLP backend: tiny-cuda-nn when importable and on CUDA ('auto'), else pure torch."""
    eval_num_rays_per_chunk: int = 8192
    """Rays rendered at once when rendering whole images (ns-eval, ns-render, the viewer); bounds the memory."""
    autocast: Literal["off", "bf16"] = "off"
    """'bf16' runs the learned networks under ``torch.autocast(bfloat16)``; geometry, sampling and losses stay fp32.
    Not with --mixed-precision. See gmnerf_ns/model/precision.py and benchmarks/throughput/README.md."""
    compile_networks: bool = False
    """``torch.compile`` the field's attention and MLPs and the 2D renderer (checkpoints unchanged); meant for CUDA.
    See benchmarks/throughput/README.md."""

    def validate(self, prefix: str = "--pipeline.model") -> None:
        """Checks every numeric option's range before anything is built (called by ns-train; see
        gmnerf_ns/core/options.py).

        Raises:
            OptionError: naming each option out of range (as ``--pipeline.model.num-samples``) and its range.
        """
        check_model_options(self, prefix)


class GMNeRFModel(SourceConditioning, Model):
    """Renders a person from m source views and a posed body proxy."""

    config: GMNeRFModelConfig

    def populate_modules(self):
        super().populate_modules()
        cfg = self.config
        implementation = cfg.implementation
        if implementation == "auto":
            device = str(self.kwargs.get("device", "cpu"))
            implementation = "tcnn" if TCNN_EXISTS and device.startswith("cuda") else "torch"
        self.encoder = cfg.encoder.setup()
        feat = self.encoder.out_channels
        if cfg.registration_window < 1 or cfg.registration_window % 2 == 0:
            raise ValueError(f"registration_window must be a positive odd number, got {cfg.registration_window}")
        if cfg.autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be one of {', '.join(AUTOCAST_DTYPES)}, got {cfg.autocast!r}")
        self.registration = VertexRegistration(feat + 3, cfg.vertex_code_dim) if cfg.registration == "geometry-guided" else None
        self.mean_projection = nn.Linear(feat + 3, cfg.vertex_code_dim) if cfg.registration == "mean" else None
        self.volume = ProxyVolume(cfg.vertex_code_dim, cfg.volume_channels) if cfg.registration != "none" else None
        self.field = GMNeRFField(
            geometry_dim=sum(cfg.volume_channels),  # the proxy volume's multi-scale code, or its no-proxy stand-in
            geometry_from_pixels=cfg.registration == "none",
            image_feature_dim=feat,
            appearance_dim=cfg.appearance_dim,
            hidden_dim=cfg.hidden_dim,
            feature_dim=cfg.feature_dim,
            pe_frequencies=cfg.pe_frequencies,
            use_silhouette_hull=cfg.use_silhouette_hull,
            implementation=implementation,
            appearance_fusion=cfg.appearance_fusion,
            autocast_dtype=AUTOCAST_DTYPES[cfg.autocast],
        )
        self.renderer = NeuralRenderer(3 + cfg.feature_dim + 1, cfg.renderer_width) if cfg.neural_renderer else None
        self.autocast_dtype = AUTOCAST_DTYPES[cfg.autocast]
        """The learned networks compute in this dtype under autocast (None: fp32); see gmnerf_ns/model/precision.py."""
        if cfg.compile_networks:  # lazy: compiled at the first call; parameters and state_dict keys unchanged
            compile_modules(self.field.appearance, self.field.geometry_mlp, self.field.feature_mlp, self.renderer)
        self._perceptual: Optional[PerceptualLoss] = None
        self.init_conditioning()

    @property
    def perceptual(self) -> PerceptualLoss:
        """The perceptual loss, built when a loss is first computed: only training needs it, so ns-eval, ns-render,
        the viewer and gmnerf-pretrained never look up (or download) its VGG weights (about 550 MB). It holds no
        state-dict entries, so checkpoints are the same either way."""
        if self._perceptual is None:
            self._perceptual = self.config.perceptual_loss.setup().to(self.device)
        return self._perceptual

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        fields = [p for m in (self.registration, self.mean_projection, self.volume, self.field) if m is not None
                  for p in m.parameters()]
        groups = {"encoder": list(self.encoder.parameters()), "fields": fields}
        if self.config.neural_renderer:  # nerfstudio's optimizers reject empty groups
            groups["renderer"] = list(self.renderer.parameters())
        return groups

    def encode(self, sources: SourceViews) -> EncodedSources:
        """Encodes the source views and registers their appearance onto the proxy volume."""
        sources = sources.to(self.device)
        height, width = sources.image_size
        with self._networks():
            feature_maps = self.encoder(sources.images * sources.masks)  # (m, C, H/2, W/2)
        feature_maps = to_fp32(feature_maps, self.autocast_dtype)
        if self.config.registration == "none":
            # no-proxy baseline: nothing registered, no empty-space skipping, no occlusion cue
            depth_maps = torch.full((sources.num_views, 1, 1, 1), BACKGROUND_DEPTH, device=self.device)
            return EncodedSources(sources=sources, feature_maps=feature_maps, volumes=[],
                                  occupancy=torch.ones(1, 1, 2, 2, 2, device=self.device), depth_maps=depth_maps)
        verts = sources.vertices
        uv, _ = project_to_views(verts, sources.intrinsics, sources.rotations, sources.translations)  # (m, V, 2)
        depth_maps = proxy_depth_maps(sources, self.config.visibility_resolution, self.config.visibility == "mesh")
        visible = vertex_visibility(sources, depth_maps, self.config.visibility_tolerance)
        keep = proxy_subset(verts.shape[0], self.config.max_proxy_vertices, verts.device)
        verts, uv, visible = verts[keep], uv[:, keep], visible[:, keep]
        visible = visible.T  # (V, m)
        box = normalize_points(verts, sources.bbox)
        if self.config.registration == "geometry-guided":
            offsets = window_offsets(self.config.registration_window, device=self.device)  # (W, 2)
            spacing = self.config.registration_spacing * max(height, width)
            window_uv = (uv[:, :, None] + spacing * offsets).flatten(1, 2)  # (m, V*W, 2)
            vfeat = self._sample_sources(feature_maps, sources, window_uv)
            vfeat = vfeat.view(sources.num_views, verts.shape[0], offsets.shape[0], -1).transpose(0, 1)  # (V, m, W, C+3)
            to_cam = sources.camera_centers[None] - verts[:, None]  # (V, m, 3)
            to_cam = to_cam / to_cam.norm(dim=-1, keepdim=True).clamp(min=1e-8)
            with self._networks():
                codes = self.registration(box, vfeat, to_cam, visible, offsets)
        else:
            vfeat = self._sample_sources(feature_maps, sources, uv).transpose(0, 1)  # (V, m, C+3)
            with self._networks():
                codes = self.mean_projection(masked_view_mean(vfeat, visible))
        shape = grid_shape(sources.bbox, self.config.volume_resolution)
        grid = splat_to_grid(to_fp32(codes, self.autocast_dtype), box, shape)  # (C+1, Z, Y, X)
        with self._networks():
            volumes = self.volume(grid)
        volumes = [to_fp32(v, self.autocast_dtype) for v in volumes]
        voxel = float((sources.bbox[1] - sources.bbox[0]).max()) / self.config.volume_resolution
        radius = max(1, math.ceil(self.config.occupancy_margin / voxel))
        occupancy = dilate((grid[-1:] > 0).float()[None], radius)
        return EncodedSources(sources=sources, feature_maps=feature_maps, volumes=volumes, occupancy=occupancy,
                              depth_maps=depth_maps)

    def _networks(self):
        """Autocast context of the learned networks (``autocast`` option; a no-op when off)."""
        return networks_autocast(self.device, self.autocast_dtype)

    @staticmethod
    def _sample_sources(feature_maps: Tensor, sources: SourceViews, uv: Float[Tensor, "m N 2"]) -> Float[Tensor, "m N C+3"]:
        """Encoder features and source colours at pixel coordinates of each view."""
        height, width = sources.image_size
        return torch.cat([sample_maps(feature_maps, uv, height, width), sample_maps(sources.images, uv, height, width)],
                         dim=-1)

    def render_rays(
        self,
        origins: Float[Tensor, "R 3"],
        directions: Float[Tensor, "R 3"],
        encoded: EncodedSources,
        perturb: bool,
    ) -> Dict[str, Tensor]:
        """Volume-renders rays against the proxy box: rgb (R,3), features (R,C), accumulation (R,1), depth (R,1).

        Stratified samples in the box, the field only near the proxy, alpha compositing: see
        gmnerf_ns/model/rendering.py.
        """
        return render_box_rays(self.field, origins, directions, encoded, self.config.num_samples,
                               self.config.feature_dim, perturb, keep_graph=torch.is_grad_enabled() and self.training)

    def _render_chunks(self, origins: Tensor, directions: Tensor, encoded: EncodedSources, perturb: bool,
                       chunk: Optional[int] = None):
        return render_in_chunks(lambda o, d: self.render_rays(o, d, encoded, perturb), origins, directions,
                                chunk or self.config.eval_num_rays_per_chunk)

    def forward(  # type: ignore[override]
        self,
        camera: Cameras,
        sources: Optional[SourceViews] = None,
        patch: Optional[Tuple[int, int, int, int]] = None,
    ) -> Dict[str, Tensor]:
        with compile_errors(self.config.compile_networks):
            return self.get_outputs(camera, sources=sources, patch=patch)

    def get_outputs(  # type: ignore[override]
        self,
        camera: Cameras,
        sources: Optional[SourceViews] = None,
        patch: Optional[Tuple[int, int, int, int]] = None,
        encoded: Optional[EncodedSources] = None,
    ) -> Dict[str, Tensor]:
        """Renders ``camera`` (one camera) or the ``patch`` = (y0, x0, height, width) of it, in full-res pixels.

        Returns full-resolution ``rgb`` (H, W, 3), ``mask`` (H, W, 1), ``accumulation`` and ``depth`` (H, W, 1), the
        half-resolution ``rgb_lowres``/``accumulation_lowres`` (h, w, ·) and ``grad_rays`` (h*w,) bool.
        """
        if encoded is None:
            if sources is None:
                raise ValueError("get_outputs needs source views (or an encoding)")
            encoded = self.encode(sources)
        cam = camera[0] if camera.shape else camera
        # A training patch knows its size; reading the camera's would be a host sync.
        y0, x0, ph, pw = patch if patch is not None else (0, 0, int(cam.height), int(cam.width))
        factor = 2 if self.config.neural_renderer else 1
        h, w = math.ceil(ph / factor), math.ceil(pw / factor)
        origins, directions = camera_rays(cam.to(self.device), pixel_centres(y0, x0, h, w, factor, self.device))

        if self.training and torch.is_grad_enabled():
            rays, grad_rays, grad_index = render_partial_gradient(
                lambda o, d: self.render_rays(o, d, encoded, perturb=True),
                lambda o, d, chunk: self._render_chunks(o, d, encoded, perturb=True, chunk=chunk),
                origins, directions, self.config.grad_ray_fraction, self.config.eval_num_rays_per_chunk)
        else:
            grad_rays = torch.zeros(origins.shape[0], dtype=torch.bool, device=self.device)
            grad_index = torch.arange(origins.shape[0], device=self.device)
            rays = self._render_chunks(origins, directions, encoded, perturb=False)

        def image(key: str) -> Tensor:
            return rays[key].view(h, w, -1)

        outputs = {"rgb_lowres": image("rgb"), "accumulation_lowres": image("accumulation"), "grad_rays": grad_rays,
                   "grad_ray_index": grad_index}
        if self.config.neural_renderer:
            chw = lambda x: x.permute(2, 0, 1)[None]  # noqa: E731
            with self._networks():
                up = self.renderer(chw(image("rgb")), chw(image("features")), chw(image("accumulation")))
            up = {k: to_fp32(v, self.autocast_dtype) for k, v in up.items()}
            hwc = lambda x: x[0].permute(1, 2, 0)[:ph, :pw]  # noqa: E731
            outputs["rgb"] = hwc(up["rgb"])
            outputs["mask_logits"] = hwc(up["mask_logits"])
            outputs["mask"] = torch.sigmoid(outputs["mask_logits"])
            upsample = lambda x: hwc(F.interpolate(chw(x), scale_factor=2, mode="nearest"))  # noqa: E731
            outputs["accumulation"] = upsample(image("accumulation"))
            outputs["depth"] = upsample(image("depth"))
        else:
            outputs["rgb"] = image("rgb")
            outputs["accumulation"] = image("accumulation")
            outputs["mask"] = outputs["accumulation"]
            outputs["depth"] = image("depth")
        return outputs

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: Optional[OrientedBox] = None) -> Dict[str, Tensor]:
        """Full-image render for ns-eval, ns-render and the viewer: sources come from the camera's subject/frame."""
        encoded = self.encoded_for(camera)
        with compile_errors(self.config.compile_networks):
            outputs = self.get_outputs(camera, encoded=encoded)
        outputs.pop("grad_rays", None)  # training-only and 1-D: ns-render dataset and the viewer show every output
        outputs.pop("grad_ray_index", None)
        return {"rgb": outputs.pop("rgb"), **outputs}  # the viewer's "Output type" starts on the first key

    def train(self, mode: bool = True):
        self.clear_encoding_cache()  # weights change during training: never reuse an encoding across modes
        return super().train(mode)

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        """Training PSNR of the patch and the share of rays rendered with gradient.

        The PSNR is written out, not torchmetrics' ``peak_signal_noise_ratio``: that builds its observation count with
        ``torch.tensor(n, device=...)``, a blocking host-to-device copy on CUDA in every training step.
        """
        gt = batch["image"].to(self.device)
        mse = F.mse_loss(outputs["rgb"], gt)
        return {"psnr": -10.0 * torch.log10(mse.clamp(min=1e-10)), "grad_ray_fraction": outputs["grad_rays"].float().mean()}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        cfg = self.config
        gt = batch["image"].to(self.device)  # (H, W, 3)
        gt_mask = batch["mask"].to(self.device).float()  # (H, W, 1)
        losses = {"rgb_loss": cfg.rgb_loss_mult * F.mse_loss(outputs["rgb"], gt)}
        if cfg.perceptual_loss_mult > 0:
            losses["perceptual_loss"] = cfg.perceptual_loss_mult * self.perceptual(
                outputs["rgb"].permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None]
            )
        if cfg.neural_renderer:
            losses["mask_loss"] = cfg.mask_loss_mult * mask_loss(outputs["mask"], gt_mask)
            h, w = outputs["rgb_lowres"].shape[:2]
            # The gradient rays by index (a fixed count): boolean-mask selection would need a host sync.
            sel = outputs["grad_ray_index"]
            gt_low = _downsample(gt, h, w).reshape(-1, 3).index_select(0, sel)
            mask_low = _downsample(gt_mask, h, w).reshape(-1, 1).index_select(0, sel)
            losses["lowres_rgb_loss"] = cfg.lowres_rgb_loss_mult * F.mse_loss(
                outputs["rgb_lowres"].reshape(-1, 3).index_select(0, sel), gt_low)
            losses["opacity_loss"] = cfg.opacity_loss_mult * mask_loss(
                outputs["accumulation_lowres"].reshape(-1, 1).index_select(0, sel), mask_low)
        else:
            losses["opacity_loss"] = cfg.opacity_loss_mult * mask_loss(outputs["accumulation"], gt_mask)
        return losses

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        from gmnerf_ns.model.metrics import image_metrics

        gt = batch["image"].to(self.device)
        pred = outputs["rgb"].clamp(0, 1)
        bbox_mask = batch.get("bbox_mask")
        if bbox_mask is None:
            bbox_mask = torch.ones(gt.shape[:2], dtype=torch.bool)
        metrics = image_metrics(pred.cpu(), gt.cpu(), bbox_mask.cpu(), lpips=getattr(self, "lpips_metric", None))
        metrics = {k: float(v) for k, v in metrics.items() if v is not None}
        error = (pred - gt).abs().mean(-1, keepdim=True).clamp(0, 1).expand(-1, -1, 3)
        images = {
            "img": torch.cat([gt, pred, error], dim=1),
            "accumulation": outputs["accumulation"].expand(-1, -1, 3),
        }
        return metrics, images


def proxy_subset(num_vertices: int, limit: int, device: torch.device) -> Tensor:
    """Indices of an evenly strided subset of at most ``limit`` vertices (all of them when there are fewer)."""
    if num_vertices <= limit:
        return torch.arange(num_vertices, device=device)
    return torch.linspace(0, num_vertices - 1, limit, device=device).round().long()


def _downsample(image: Float[Tensor, "H W C"], h: int, w: int) -> Float[Tensor, "h w C"]:
    """Area-downsamples an image to (h, w) (the half-resolution target of the feature image)."""
    return F.adaptive_avg_pool2d(image.permute(2, 0, 1)[None], (h, w))[0].permute(1, 2, 0)

