"""The GM-NeRF field: maps 3D samples (given encoded source views) to density, colour and a feature vector.

Per sample ``x`` seen along target direction ``d`` [INFER, docs/paper_notes.md §1.2 (e)-(f)]:

* geometry code ``G(x)``: trilinear lookup of the registered proxy volume (multi-scale);
* pixel-aligned features ``P_k(x)``, colours and masks of the m source views at the projections of ``x``;
* appearance code ``A(x)``: attention over views queried by ``G(x)`` (:class:`PointAppearance`); its keys include how
  far ``x`` lies behind the proxy surface seen by each view (a geometry-guided occlusion cue);
* density from geometry: ``sigma = MLP_sigma(G(x), PE(x), hull(x))``, where ``hull(x)`` (mean and min of the source
  masks at the projections) is a silhouette cue that keeps geometry clean for loose clothing off the body proxy;
* feature ``f(x) = MLP_f(h(x), A(x), blended colour)`` and an RGB head that refines the attention-blended colour.

The field does no sampling or compositing: the model owns those. With ``autocast_dtype`` (the model's ``autocast``
option) the view attention and the MLPs run under autocast and their outputs return to fp32; projections and map
lookups stay fp32 (gmnerf_ns/model/precision.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Literal, Optional

import torch
from jaxtyping import Float
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.mlp import MLP
from torch import Tensor, nn

from gmnerf_ns.geometry.camera_math import inside_image, project_to_views
from gmnerf_ns.model.attention import PointAppearance, PositionalEncoding, masked_view_mean
from gmnerf_ns.model.precision import networks_autocast, to_fp32
from gmnerf_ns.model.sources import SourceViews, sample_maps
from gmnerf_ns.model.volume import ProxyVolume, normalize_points

OCCLUSION_RANGE = 0.1
"""Metres over which "in front of / behind the proxy surface seen by a view" saturates in the occlusion cue."""


@dataclass
class EncodedSources:
    """Everything the field needs about the source views, computed once per subject-frame by the model."""

    sources: SourceViews
    feature_maps: Float[Tensor, "m C h w"]
    volumes: List[Tensor]
    """Multi-scale proxy feature volumes (each (1, c, z, y, x))."""
    occupancy: Float[Tensor, "1 1 Z Y X"]
    """Dilated proxy occupancy: samples where it is 0 are empty space and skip the field."""
    depth_maps: Float[Tensor, "m 1 h w"]
    """Depth of the proxy's front surface in each source view (occlusion cue for the view attention)."""


class GMNeRFField(nn.Module):
    """Density + feature field conditioned on :class:`EncodedSources`."""

    def __init__(
        self,
        geometry_dim: int,
        image_feature_dim: int,
        appearance_dim: int = 64,
        hidden_dim: int = 64,
        feature_dim: int = 16,
        pe_frequencies: int = 6,
        use_silhouette_hull: bool = True,
        implementation: Literal["tcnn", "torch"] = "torch",
        geometry_from_pixels: bool = False,
        appearance_fusion: Literal["attention", "mean"] = "attention",
        autocast_dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        # the attention and MLPs run under autocast to this dtype (None: fp32); projections and lookups stay fp32
        self.autocast_dtype = autocast_dtype
        # no-proxy baseline (pixelNeRF-style): the geometry code is the mean of the pixel-aligned features
        self.geometry_from_pixels = geometry_from_pixels
        self.pixel_geometry = nn.Linear(image_feature_dim, geometry_dim) if geometry_from_pixels else None
        self.position_encoding = PositionalEncoding(3, pe_frequencies)
        self.use_silhouette_hull = use_silhouette_hull
        self.feature_dim = feature_dim
        self.appearance = PointAppearance(geometry_dim, image_feature_dim, appearance_dim, hidden_dim=hidden_dim,
                                          fusion=appearance_fusion)
        density_in = geometry_dim + self.position_encoding.get_out_dim() + (2 if use_silhouette_hull else 0)
        self.geometry_mlp = MLP(density_in, 3, hidden_dim, out_dim=hidden_dim + 1, implementation=implementation)
        self.feature_mlp = MLP(hidden_dim + appearance_dim + 3, 2, hidden_dim, out_dim=feature_dim + 3,
                               implementation=implementation)

    def forward(
        self,
        positions: Float[Tensor, "N 3"],
        directions: Float[Tensor, "N 3"],
        encoded: EncodedSources,
    ) -> Dict[str, Tensor]:
        """Returns ``density`` (N, 1), ``rgb`` (N, 3) in [0, 1] and ``features`` (N, feature_dim)."""
        src = encoded.sources
        height, width = src.image_size
        box = normalize_points(positions, src.bbox)
        uv, depth = project_to_views(positions, src.intrinsics, src.rotations, src.translations)  # (m, N, 2)
        valid = inside_image(uv, depth, height, width).T  # (N, m)
        feats = sample_maps(encoded.feature_maps, uv, height, width).transpose(0, 1)  # (N, m, C)
        if self.geometry_from_pixels:
            with networks_autocast(positions.device, self.autocast_dtype):
                geometry = self.pixel_geometry(masked_view_mean(feats, valid))
            geometry = to_fp32(geometry, self.autocast_dtype)
        else:
            geometry = ProxyVolume.query(encoded.volumes, box)  # (N, G)
        colors = sample_maps(src.images, uv, height, width).transpose(0, 1)  # (N, m, 3)
        masks = sample_maps(src.masks, uv, height, width).transpose(0, 1)  # (N, m, 1)
        # how far the sample lies behind the proxy surface seen by each view: > 0 means probably occluded there
        front = sample_maps(encoded.depth_maps, uv, height, width)[..., 0]  # (m, N)
        behind = ((depth - front) / OCCLUSION_RANGE).clamp(-1.0, 1.0).T[..., None]  # (N, m, 1)

        source_dirs = positions[None] - src.camera_centers[:, None]  # (m, N, 3) camera -> point
        source_dirs = (source_dirs / source_dirs.norm(dim=-1, keepdim=True).clamp(min=1e-8)).transpose(0, 1)
        target_dirs = directions[:, None, :].expand_as(source_dirs)
        relative = torch.cat([(source_dirs * target_dirs).sum(-1, keepdim=True), target_dirs - source_dirs], dim=-1)
        with networks_autocast(positions.device, self.autocast_dtype):
            appearance, blended = self.appearance(geometry, feats, colors, torch.cat([masks, behind], -1), relative,
                                                  valid)

        inputs = [geometry, self.position_encoding(box)]
        if self.use_silhouette_hull:
            hull = masks[..., 0].masked_fill(~valid, 0.0)
            inputs += [hull.mean(1, keepdim=True), hull.min(1, keepdim=True).values]
        with networks_autocast(positions.device, self.autocast_dtype):
            h = self.geometry_mlp(torch.cat(inputs, dim=-1))
            out = self.feature_mlp(torch.cat([h[:, 1:], appearance, blended], dim=-1))
        h, out, blended = (to_fp32(x, self.autocast_dtype) for x in (h, out, blended))
        density = trunc_exp(h[:, :1] - 1.0)
        logit = torch.logit(blended.clamp(1e-3, 1 - 1e-3))
        rgb = torch.sigmoid(out[:, :3] + logit)
        return {"density": density, "rgb": rgb, "features": out[:, 3:]}
