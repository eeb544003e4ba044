"""Volume rendering of rays through the proxy's box: stratified samples, empty-space skipping, alpha compositing.

Sampling and compositing are written out rather than taken from nerfstudio's ``UniformSampler`` and
``RaySamples.get_weights``: only samples near the proxy reach the field (the occupancy skip, a compaction those classes
have no place for), the stratified jitter draws one position per bin (``UniformSampler`` jitters the bin edges, so
training would sample differently), and the weights are the cumulative product the shipped weights were trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from gmnerf_ns.model.field import EncodedSources
from gmnerf_ns.model.rays import ray_box_intersection
from gmnerf_ns.model.volume import normalize_points, sample_volume


@dataclass
class BoxSamples:
    """Samples along rays between where they enter and leave the proxy's box."""

    t: Float[Tensor, "R S"]
    """Distance of each sample along its ray."""
    delta: Float[Tensor, "R S"]
    """Length of each sample's bin."""
    points: Float[Tensor, "R S 3"]
    directions: Float[Tensor, "R 3"]
    hit: Bool[Tensor, "R"]
    """Whether the ray crosses the box (a missing ray has all its samples at its origin)."""

    @property
    def num_rays(self) -> int:
        return self.t.shape[0]

    @property
    def num_samples(self) -> int:
        return self.t.shape[1]


def stratified_box_samples(origins: Float[Tensor, "R 3"], directions: Float[Tensor, "R 3"], bbox: Float[Tensor, "2 3"],
                           num_samples: int, perturb: bool) -> BoxSamples:
    """``num_samples`` equal bins between the box's near and far distance, one sample per bin: uniformly jittered in
    its bin when ``perturb`` (training), else at its centre."""
    near, far, hit = ray_box_intersection(origins, directions, bbox)
    num_rays = origins.shape[0]
    steps = torch.linspace(0.0, 1.0, num_samples + 1, device=origins.device)[:-1]
    offsets = torch.rand(num_rays, num_samples, device=origins.device) if perturb else torch.full(
        (num_rays, num_samples), 0.5, device=origins.device)
    span = (far - near).clamp(min=0.0)  # (R,)
    t = near[:, None] + (steps[None] + offsets / num_samples) * span[:, None]  # (R, S)
    delta = (span / num_samples)[:, None].expand_as(t)
    points = origins[:, None] + t[..., None] * directions[:, None]  # (R, S, 3)
    return BoxSamples(t=t, delta=delta, points=points, directions=directions, hit=hit)


def occupied_samples(samples: BoxSamples, occupancy: Float[Tensor, "1 1 Z Y X"],
                     bbox: Float[Tensor, "2 3"]) -> Int[Tensor, "N"]:
    """Flat indices (ray-major) of the samples of hitting rays where the dilated proxy occupancy is non-zero: the
    only ones the field evaluates; the others are empty space."""
    box = normalize_points(samples.points.reshape(-1, 3), bbox)
    occ = sample_volume(occupancy, box, padding_mode="zeros")
    active = (occ.reshape(-1) > 1e-3) & samples.hit[:, None].expand(-1, samples.num_samples).reshape(-1)
    return active.nonzero(as_tuple=True)[0]


def field_at_samples(field: nn.Module, samples: BoxSamples, idx: Int[Tensor, "N"], encoded: EncodedSources,
                     feature_dim: int, keep_graph: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """Density (R, S, 1), RGB (R, S, 3) and features (R, S, feature_dim) of every sample: the field's output at the
    samples ``idx``, zero elsewhere.

    With ``keep_graph`` and no sample to evaluate, the (all-zero) density keeps a zero-gradient graph to the field, so
    that ``backward()`` works when nothing else carries gradient (``neural_renderer=False``).
    """
    num_rays, num_samples = samples.num_rays, samples.num_samples
    flat = samples.points.reshape(-1, 3)
    density = flat.new_zeros(flat.shape[0], 1)
    rgb = flat.new_zeros(flat.shape[0], 3)
    feats = flat.new_zeros(flat.shape[0], feature_dim)
    if idx.numel() > 0:
        dirs = samples.directions[:, None].expand(-1, num_samples, -1).reshape(-1, 3)
        out = field(flat[idx], dirs[idx], encoded)
        density = density.index_copy(0, idx, out["density"])
        rgb = rgb.index_copy(0, idx, out["rgb"])
        feats = feats.index_copy(0, idx, out["features"])
    elif keep_graph:
        density = density + 0.0 * sum(p.view(-1)[0] for p in field.parameters())
    density, rgb, feats = (x.view(num_rays, num_samples, -1) for x in (density, rgb, feats))
    return density, rgb, feats


def composite(density: Float[Tensor, "R S 1"], rgb: Float[Tensor, "R S 3"], feats: Float[Tensor, "R S C"],
              samples: BoxSamples) -> Dict[str, Tensor]:
    """Alpha compositing along each ray: rgb (R, 3), features (R, C), accumulation (R, 1) and the expected depth of
    the rendered opacity (R, 1)."""
    alpha = 1.0 - torch.exp(-density[..., 0] * samples.delta)  # (R, S)
    ones = alpha.new_ones(samples.num_rays, 1)
    trans = torch.cumprod(torch.cat([ones, 1.0 - alpha + 1e-10], dim=1), dim=1)[:, :-1]
    weights = (alpha * trans)[..., None]  # (R, S, 1)
    acc = weights.sum(1)
    return {
        "rgb": (weights * rgb).sum(1),
        "features": (weights * feats).sum(1),
        "accumulation": acc,
        "depth": (weights[..., 0] * samples.t).sum(1, keepdim=True) / acc.clamp(min=1e-6),
    }


def render_box_rays(field: nn.Module, origins: Float[Tensor, "R 3"], directions: Float[Tensor, "R 3"],
                    encoded: EncodedSources, num_samples: int, feature_dim: int, perturb: bool,
                    keep_graph: bool) -> Dict[str, Tensor]:
    """Samples rays inside the proxy's box, evaluates the field near the proxy only and composites the samples."""
    bbox = encoded.sources.bbox
    samples = stratified_box_samples(origins, directions, bbox, num_samples, perturb)
    idx = occupied_samples(samples, encoded.occupancy, bbox)
    density, rgb, feats = field_at_samples(field, samples, idx, encoded, feature_dim, keep_graph)
    return composite(density, rgb, feats, samples)


RayRenderer = Callable[[Tensor, Tensor], Dict[str, Tensor]]
"""(origins, directions) -> per-ray outputs, each (R, ·)."""


def render_in_chunks(render: RayRenderer, origins: Float[Tensor, "R 3"], directions: Float[Tensor, "R 3"],
                     chunk: int) -> Dict[str, Tensor]:
    """Renders rays ``chunk`` at a time (bounds the memory of whole-image renders) and concatenates the outputs."""
    parts = [render(origins[i : i + chunk], directions[i : i + chunk]) for i in range(0, origins.shape[0], chunk)]
    return parts[0] if len(parts) == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def render_partial_gradient(
    render: RayRenderer,
    render_chunks: Callable[[Tensor, Tensor, int], Dict[str, Tensor]],
    origins: Float[Tensor, "R 3"],
    directions: Float[Tensor, "R 3"],
    fraction: float,
    min_chunk: int,
) -> Tuple[Dict[str, Tensor], Bool[Tensor, "R"], Int[Tensor, "K"]]:
    """CIPS-3D partial gradient backpropagation: a random ``fraction`` of the rays is rendered with autograd, the rest
    under ``no_grad`` (``render_chunks``, in chunks of at least ``min_chunk`` rays), scattered back into ray order.

    Returns the per-ray outputs, which rays carry gradient, and their indices.
    """
    num_rays = origins.shape[0]
    grad_rays = torch.zeros(num_rays, dtype=torch.bool, device=origins.device)
    k = max(1, int(round(fraction * num_rays)))
    perm = torch.randperm(num_rays, device=origins.device)
    gi, ni = perm[:k], perm[k:]
    grad_rays[gi] = True
    with_grad = render(origins[gi], directions[gi])
    if ni.numel() > 0:
        # in chunks of whole-image renders' size (or k rays if larger): their transient buffers stay within what an
        # eval render needs, and each chunk costs a field call and a host sync
        with torch.no_grad():
            without = render_chunks(origins[ni], directions[ni], max(k, min_chunk))
    rays = {}
    for key, value in with_grad.items():
        out = value.new_zeros(num_rays, value.shape[-1]).index_copy(0, gi, value)
        rays[key] = out.index_copy(0, ni, without[key]) if ni.numel() > 0 else out
    return rays, grad_rays, gi
