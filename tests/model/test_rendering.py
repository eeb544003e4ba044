"""Ray sampling in the proxy's box, empty-space skipping, compositing and partial-gradient rendering
(gmnerf_ns/model/rendering.py), checked on hand-made rays and fields."""

from __future__ import annotations

import math

import torch
from torch import nn

from gmnerf_ns.model.rays import pixel_centres
from gmnerf_ns.model.rendering import (
    composite,
    field_at_samples,
    occupied_samples,
    render_in_chunks,
    render_partial_gradient,
    stratified_box_samples,
)

BBOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
ORIGINS = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 5.0, 0.0]])  # the first crosses the box, the second misses it
DIRECTIONS = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])


def test_pixel_centres_of_half_resolution_cells():
    coords = pixel_centres(4, 10, 2, 3, 2, torch.device("cpu"))
    assert coords.tolist() == [[5.0, 11.0], [5.0, 13.0], [5.0, 15.0], [7.0, 11.0], [7.0, 13.0], [7.0, 15.0]]


def test_unperturbed_samples_sit_at_bin_centres_and_missing_rays_collapse():
    samples = stratified_box_samples(ORIGINS, DIRECTIONS, BBOX, 4, perturb=False)
    assert samples.hit.tolist() == [True, False]
    assert torch.allclose(samples.t[0], torch.tensor([2.25, 2.75, 3.25, 3.75]))  # the box spans t in [2, 4]
    assert torch.allclose(samples.delta[0], torch.full((4,), 0.5))
    assert torch.allclose(samples.points[0, :, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    assert torch.all(samples.t[1] == 0) and torch.all(samples.delta[1] == 0)
    assert torch.equal(samples.points[1], ORIGINS[1].expand(4, 3))


def test_perturbed_samples_stay_one_per_bin():
    torch.manual_seed(0)
    samples = stratified_box_samples(ORIGINS[:1].expand(100, 3), DIRECTIONS[:1].expand(100, 3), BBOX, 4, perturb=True)
    bins = ((samples.t - 2.0) / 0.5).floor()
    assert torch.equal(bins, torch.arange(4.0).expand(100, 4))
    assert samples.t.std(0).min() > 0.1  # jittered, not at the centres


def test_only_occupied_samples_of_hitting_rays_reach_the_field():
    samples = stratified_box_samples(ORIGINS, DIRECTIONS, BBOX, 4, perturb=False)
    occupancy = torch.zeros(1, 1, 8, 8, 8)
    occupancy[..., 4:] = 1.0  # x > 0 is occupied
    assert occupied_samples(samples, occupancy, BBOX).tolist() == [2, 3]

    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))
            self.seen = 0

        def forward(self, points, directions, encoded):
            self.seen += points.shape[0]
            n = points.shape[0]
            return {"density": self.scale * torch.ones(n, 1), "rgb": torch.ones(n, 3), "features": torch.ones(n, 2)}

    field = Constant()
    density, rgb, feats = field_at_samples(field, samples, torch.tensor([2, 3]), None, 2, keep_graph=True)
    assert field.seen == 2 and density.shape == (2, 4, 1) and feats.shape == (2, 4, 2)
    assert density[0, :, 0].tolist() == [0.0, 0.0, 1.0, 1.0] and torch.all(rgb[1] == 0)
    empty, _, _ = field_at_samples(field, samples, torch.tensor([], dtype=torch.long), None, 2, keep_graph=True)
    assert field.seen == 2 and torch.all(empty == 0)
    empty.sum().backward()  # a zero-gradient graph to the field, so backward() works without any sample
    assert field.scale.grad == 0


def test_compositing_of_a_uniform_medium():
    samples = stratified_box_samples(ORIGINS, DIRECTIONS, BBOX, 4, perturb=False)
    density = torch.full((2, 4, 1), 2.0)
    out = composite(density, torch.full((2, 4, 3), 0.5), torch.ones(2, 4, 1), samples)
    opacity = 1.0 - math.exp(-2.0 * 2.0)  # density 2 over the box's length 2
    assert math.isclose(out["accumulation"][0, 0].item(), opacity, rel_tol=1e-5)
    assert math.isclose(out["rgb"][0, 0].item(), 0.5 * opacity, rel_tol=1e-5)
    assert out["accumulation"][1, 0] == 0 and out["depth"][1, 0] == 0  # a missing ray renders nothing
    alpha = 1.0 - math.exp(-1.0)
    weights = [alpha * (1 - alpha) ** i for i in range(4)]
    depth = sum(w * t for w, t in zip(weights, [2.25, 2.75, 3.25, 3.75])) / sum(weights)
    assert math.isclose(out["depth"][0, 0].item(), depth, rel_tol=1e-5)


def render(origins, directions):
    return {"rgb": origins * 2.0 + directions, "accumulation": origins[:, :1]}


def test_chunked_rendering_equals_one_pass():
    origins, directions = torch.randn(10, 3), torch.randn(10, 3)
    chunked = render_in_chunks(render, origins, directions, 3)
    whole = render(origins, directions)
    assert all(torch.equal(chunked[k], whole[k]) for k in whole)


def test_partial_gradient_scatters_both_parts_back_in_ray_order():
    torch.manual_seed(0)
    origins = torch.randn(10, 3, requires_grad=True)
    directions = torch.randn(10, 3)
    chunk_sizes = []

    def chunks(o, d, chunk):
        chunk_sizes.append(chunk)
        assert not torch.is_grad_enabled()
        return render_in_chunks(render, o, d, chunk)

    rays, grad_rays, index = render_partial_gradient(render, chunks, origins, directions, 0.3, 2)
    assert grad_rays.sum() == 3 and sorted(index.tolist()) == grad_rays.nonzero()[:, 0].tolist()
    assert chunk_sizes == [3]  # at least the gradient rays' count per chunk
    whole = render(origins, directions)
    assert all(torch.equal(rays[k], whole[k]) for k in whole)
    rays["rgb"].sum().backward()
    assert torch.equal(origins.grad.abs().sum(1) > 0, grad_rays)  # only the gradient rays carry gradient
