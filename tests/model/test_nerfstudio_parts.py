"""nerfstudio's components used in place of our own compute what ours computed.

Each test checks ours against the replaced implementation, kept in ``gmnerf_ns/model/_reference.py``. The shipped
pretrained weights were trained with the references, so the encodings must agree feature for feature, in the same
order.
"""

from __future__ import annotations

import pytest
import torch
from nerfstudio.utils.math import intersect_aabb

from gmnerf_ns.model._reference import reference_positional_encoding, reference_slab_test
from gmnerf_ns.model.attention import PositionalEncoding
from gmnerf_ns.model.rays import ray_box_intersection


def test_ray_box_intersection_equals_the_slab_test():
    torch.manual_seed(0)
    bbox = torch.tensor([[-0.5, -1.0, 0.0], [0.6, 0.9, 1.8]])
    origins = torch.randn(20000, 3) * 3
    targets = bbox.mean(0) + torch.randn(20000, 3)  # about half of the rays hit the box
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)
    origins[:5] = bbox.mean(0)  # rays starting inside the box: near is clamped to 0
    near, far, hit = ray_box_intersection(origins, directions, bbox)
    ref_near, ref_far, ref_hit = reference_slab_test(origins, directions, bbox)
    assert torch.equal(hit, ref_hit) and 0.05 < hit.float().mean() < 0.95 and hit[:5].all()
    # intersect_aabb divides where the reference multiplied by the reciprocal: the same distances up to rounding
    torch.testing.assert_close(near[hit], ref_near[hit], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(far[hit], ref_far[hit], rtol=1e-6, atol=1e-6)
    assert torch.equal(near[:5], torch.zeros(5))
    # a miss is an empty, finite span at 0 (intersect_aabb itself reports 1e10)
    assert torch.equal(near[~hit], far[~hit]) and (near[~hit] == 0).all()


def test_ray_box_intersection_of_axis_parallel_rays_on_a_face_plane():
    """A zero direction component over a zero distance to the slab is 0/0 in intersect_aabb; ours stays finite."""
    bbox = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    origins = torch.tensor([[-3.0, 1.0, 0.0], [-3.0, 0.0, 0.0], [-3.0, 5.0, 0.0], [-3.0, 0.0, 0.0]])
    directions = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    raw_near, _ = intersect_aabb(origins, directions, bbox.reshape(6))
    assert raw_near[0].isnan()  # why ray_box_intersection nudges zero direction components
    near, far, hit = ray_box_intersection(origins, directions, bbox)
    ref_near, ref_far, ref_hit = reference_slab_test(origins, directions, bbox)
    assert torch.isfinite(near).all() and torch.isfinite(far).all()
    assert hit.tolist() == ref_hit.tolist() == [False, True, False, False]  # grazing the face plane is a miss
    torch.testing.assert_close(near[hit], ref_near[hit])
    torch.testing.assert_close(far[hit], ref_far[hit])
    assert near[1].item() == pytest.approx(2.0) and far[1].item() == pytest.approx(4.0)


@pytest.mark.parametrize("num_frequencies", [0, 1, 4, 6])
def test_positional_encoding_equals_the_pretrained_weights_encoding(num_frequencies):
    torch.manual_seed(0)
    x = torch.rand(5000, 3) * 2.4 - 1.2  # box coordinates, a little beyond [-1, 1] as samples near the box edge
    encoding = PositionalEncoding(3, num_frequencies)
    ours, reference = encoding(x), reference_positional_encoding(x, num_frequencies)
    assert ours.shape == reference.shape == (5000, encoding.get_out_dim())
    sines = slice(3, 3 + 3 * num_frequencies)
    assert torch.equal(ours[:, :3], x) and torch.equal(ours[:, sines], reference[:, sines])
    # NeRFEncoding takes the cosine as sin(y + pi / 2): float32 rounding of y + pi / 2, y up to 2^5 pi 1.2
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


def test_positional_encoding_has_no_state():
    """The pretrained weights' state dict has no entry for it."""
    assert PositionalEncoding(3, 6).state_dict() == {}

