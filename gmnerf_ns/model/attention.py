"""Geometry-guided attention over the m source views.

GM-NeRF registers the multi-view 2D appearance codes onto the geometry proxy with attention, to absorb the misalignment
between an imperfect body fit and the pixels [PAPER, abstract]. The equations are not available to us; we implement
the reconstruction in ``paper.md`` §1.2 (c) and (e) [INFER]:

* :class:`VertexRegistration`: each proxy vertex attends over the views that *see* it (depth-tested visibility masks
  invisible views); its query comes from its position and the mean of its visible features, keys from each view's
  feature at the vertex's projection plus the viewing direction.
* :class:`PointAppearance`: each 3D sample attends over the views its projection falls in; the query is the sample's
  *geometry code* (from the registered proxy volume), keys/values the pixel-aligned features, colours and the
  direction of each source ray relative to the target ray (IBRNet-style). The attention weights also blend the source
  colours, which gives the field a strong, well-conditioned colour prior.

Both share :class:`ViewAttention`, a masked multi-head attention whose softmax runs over views.
"""

from __future__ import annotations

from typing import Tuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn


class ViewAttention(nn.Module):
    """Multi-head attention of one query per point over that point's m views, with a validity mask.

    Points with no valid view attend over all views (their output is still defined; callers get ``any_valid``).
    """

    def __init__(self, query_dim: int, key_dim: int, value_dim: int, hidden_dim: int, num_heads: int, out_dim: int):
        super().__init__()
        assert hidden_dim % num_heads == 0, "hidden_dim must be divisible by num_heads"
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.to_q = nn.Linear(query_dim, hidden_dim)
        self.to_k = nn.Linear(key_dim, hidden_dim)
        self.to_v = nn.Linear(value_dim, hidden_dim)
        self.to_out = nn.Linear(hidden_dim, out_dim)

    def forward(
        self,
        query: Float[Tensor, "N Dq"],
        keys: Float[Tensor, "N m Dk"],
        values: Float[Tensor, "N m Dv"],
        valid: Bool[Tensor, "N m"],
    ) -> Tuple[Float[Tensor, "N out"], Float[Tensor, "N m"], Bool[Tensor, "N"]]:
        """Returns the attended output, the head-averaged weights over views, and whether any view was valid."""
        n, m = keys.shape[:2]
        q = self.to_q(query).view(n, 1, self.num_heads, self.head_dim)
        k = self.to_k(keys).view(n, m, self.num_heads, self.head_dim)
        v = self.to_v(values).view(n, m, self.num_heads, self.head_dim)
        logits = (q * k).sum(-1) / self.head_dim**0.5  # (N, m, heads)
        any_valid = valid.any(dim=1)
        mask = valid | ~any_valid[:, None]  # all views for points that no view sees
        logits = logits.masked_fill(~mask[..., None], float("-inf"))
        weights = torch.softmax(logits, dim=1)  # (N, m, heads)
        out = (weights[..., None] * v).sum(1).reshape(n, -1)  # (N, hidden)
        return self.to_out(out), weights.mean(-1), any_valid


def positional_encoding(x: Float[Tensor, "N D"], num_frequencies: int) -> Float[Tensor, "N D*(2F+1)"]:
    """NeRF sinusoidal encoding (identity + sin/cos at octave frequencies) of coordinates roughly in [-1, 1]."""
    if num_frequencies == 0:
        return x
    freqs = 2.0 ** torch.arange(num_frequencies, device=x.device, dtype=x.dtype) * torch.pi
    scaled = x[..., None] * freqs  # (N, D, F)
    return torch.cat([x, torch.sin(scaled).flatten(-2), torch.cos(scaled).flatten(-2)], dim=-1)


class VertexRegistration(nn.Module):
    """Registers per-view features sampled at the proxy vertices into one code per vertex."""

    def __init__(self, feature_dim: int, code_dim: int, hidden_dim: int = 64, num_heads: int = 4, pe_freqs: int = 4):
        super().__init__()
        self.pe_freqs = pe_freqs
        pos_dim = 3 * (2 * pe_freqs + 1)
        self.query = nn.Sequential(nn.Linear(pos_dim + feature_dim, hidden_dim), nn.ReLU(inplace=True))
        self.attention = ViewAttention(hidden_dim, feature_dim + 4, feature_dim, hidden_dim, num_heads, code_dim)

    def forward(
        self,
        positions: Float[Tensor, "V 3"],
        features: Float[Tensor, "V m C"],
        directions: Float[Tensor, "V m 3"],
        visible: Bool[Tensor, "V m"],
    ) -> Float[Tensor, "V code"]:
        """``positions`` normalised to the proxy box ([-1, 1]); ``directions`` unit vectors vertex -> camera."""
        weights = visible.float()[..., None]
        mean = (features * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        query = self.query(torch.cat([positional_encoding(positions, self.pe_freqs), mean], dim=-1))
        keys = torch.cat([features, directions, visible.float()[..., None]], dim=-1)
        code, _, any_visible = self.attention(query, keys, features, visible)
        return code * any_visible[:, None].float()  # vertices that no view sees carry no appearance


class PointAppearance(nn.Module):
    """Fuses the pixel-aligned features of a 3D sample across views, queried by the sample's geometry code."""

    def __init__(self, geometry_dim: int, feature_dim: int, out_dim: int, hidden_dim: int = 64, num_heads: int = 4):
        super().__init__()
        key_dim = feature_dim + 3 + 4 + 2  # features, colour, relative direction (dot + diff), source mask, occlusion
        self.attention = ViewAttention(geometry_dim, key_dim, key_dim, hidden_dim, num_heads, out_dim)

    def forward(
        self,
        geometry: Float[Tensor, "N G"],
        features: Float[Tensor, "N m C"],
        colors: Float[Tensor, "N m 3"],
        source_cues: Float[Tensor, "N m 2"],
        relative_dirs: Float[Tensor, "N m 4"],
        valid: Bool[Tensor, "N m"],
    ) -> Tuple[Float[Tensor, "N out"], Float[Tensor, "N 3"]]:
        """Returns the appearance code and the attention-blended source colour. ``source_cues``: the source mask at the
        projection and how far the point lies behind the proxy surface seen by that view."""
        tokens = torch.cat([features, colors, relative_dirs, source_cues], dim=-1)
        code, weights, _ = self.attention(geometry, tokens, tokens, valid)
        blended = (weights[..., None] * colors).sum(1)
        return code, blended
