"""Geometry-guided attention over the m source views.

GM-NeRF registers the multi-view 2D appearance codes onto the geometry proxy with attention, to absorb the misalignment
between an imperfect body fit and the pixels [PAPER, abstract]. The equations are not available to us; we implement
the reconstruction in docs/paper_notes.md §1.2 (c) and (e) [INFER]:

* :class:`VertexRegistration`: each proxy vertex attends over the views that *see* it (depth-tested visibility masks
  invisible views) and, optionally (``registration_window`` > 1; off by default, see
  benchmarks/generalization/README.md), over a small k x k window of pixels around each projection. Its query comes
  from its position and the mean of its visible features; keys from each window sample's feature, its offset from the
  projection and the viewing direction. The window is what lets a vertex of a misfitted or naked body proxy pick the
  pixels the person actually covers, instead of whatever lies under its projection (the misalignment GM-NeRF's
  registration is meant to absorb); the ``mean`` ablation averages the features at the projections only.
* :class:`PointAppearance`: each 3D sample attends over the views its projection falls in; the query is the sample's
  *geometry code* (from the registered proxy volume), keys/values the pixel-aligned features, colours and the
  direction of each source ray relative to the target ray (IBRNet-style). The attention weights also blend the source
  colours, which gives the field a strong, well-conditioned colour prior.

Both share :class:`ViewAttention`, a masked multi-head attention whose softmax runs over views.
"""

from __future__ import annotations

from typing import Literal, Tuple

import torch
from jaxtyping import Bool, Float
from nerfstudio.field_components.encodings import NeRFEncoding
from torch import Tensor, nn


class ViewAttention(nn.Module):
    """Multi-head attention of one query per point over that point's tokens (views, window samples), with a mask.

    Points with no valid token attend over all of them (their output is still defined; callers get ``any_valid``).

    Computed without per-token key/value projections, which is the same function as standard attention with the
    ``to_k``/``to_v`` linear layers, by linearity: ``q . (W_k k_t + b_k) = (W_k^T q) . k_t + q . b_k`` (the second
    term is the same for every token, so the softmax ignores it), and ``sum_t a_t (W_v v_t + b_v) = W_v (sum_t a_t
    v_t) + b_v`` (the weights sum to one). Nothing of size tokens x hidden is built or saved for backward, which
    makes registering thousands of vertices over m views x a pixel window cheap in memory and time.
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
        keys: Float[Tensor, "N T Dk"],
        values: Float[Tensor, "N T Dv"],
        valid: Bool[Tensor, "N T"],
    ) -> Tuple[Float[Tensor, "N out"], Float[Tensor, "N T"], Bool[Tensor, "N"]]:
        """Returns the attended output, the head-averaged weights over tokens, and whether any token was valid."""
        n = keys.shape[0]
        heads, hd = self.num_heads, self.head_dim
        q = self.to_q(query).view(n, heads, hd)
        # per-head products as bmm over (heads, N, .) views: einsum takes twice the ops on CPU for the same products
        q_in_key_space = torch.bmm(q.transpose(0, 1), self.to_k.weight.view(heads, hd, -1)).transpose(0, 1) / hd**0.5
        logits = torch.bmm(keys, q_in_key_space.transpose(1, 2))  # (N, T, heads); bmm: no copies of the keys
        any_valid = valid.any(dim=1)
        mask = valid | ~any_valid[:, None]  # all tokens for points that no token is valid for
        logits = logits.masked_fill(~mask[..., None], float("-inf"))
        weights = torch.softmax(logits, dim=1)  # (N, T, heads)
        pooled = torch.bmm(weights.transpose(1, 2), values)  # (N, heads, Dv)
        out = torch.bmm(pooled.transpose(0, 1), self.to_v.weight.view(heads, hd, -1).transpose(1, 2)).transpose(0, 1)
        out = out + self.to_v.bias.view(heads, hd)
        return self.to_out(out.reshape(n, -1)), weights.mean(-1), any_valid


def masked_view_mean(values: Float[Tensor, "N m C"], valid: Bool[Tensor, "N m"]) -> Float[Tensor, "N C"]:
    """Mean of ``values`` over the valid views of each point (zero where no view is valid)."""
    weights = valid.float()[..., None]
    return (values * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class PositionalEncoding(nn.Module):
    """NeRF's sinusoidal encoding ``[x, sin(2^k pi x), cos(2^k pi x)]`` (k < F) of coordinates roughly in [-1, 1].

    The sinusoids are nerfstudio's :class:`NeRFEncoding` (its frequencies ``2 pi 2^j`` for j from -1 are our
    ``2^k pi``). The input comes first, where the shipped pretrained weights expect it, not last as ``NeRFEncoding``'s
    ``include_input`` puts it.
    """

    def __init__(self, in_dim: int, num_frequencies: int):
        super().__init__()
        self.in_dim = in_dim
        self.sinusoids = NeRFEncoding(in_dim, num_frequencies, min_freq_exp=-1.0, max_freq_exp=num_frequencies - 2.0)

    def get_out_dim(self) -> int:
        """Channels of the encoding: ``in_dim * (2F + 1)``."""
        return self.in_dim + self.sinusoids.get_out_dim()

    def forward(self, x: Float[Tensor, "*bs D"]) -> Float[Tensor, "*bs out"]:
        """Encodes each coordinate; the channels are ``[x, sin (D x F, frequency fastest), cos (likewise)]``."""
        return torch.cat([x, self.sinusoids(x)], dim=-1)


class VertexRegistration(nn.Module):
    """Registers per-view features sampled in a window around each proxy vertex's projections into one code per vertex.

    Tokens are (view, window offset) pairs: ``features`` (V, m, W, C) with W = k*k window samples, the window's
    offsets (W, 2) in units of the window spacing (the centre is (0, 0)). With W = 1 this is attention over views.
    """

    def __init__(self, feature_dim: int, code_dim: int, hidden_dim: int = 64, num_heads: int = 4, pe_freqs: int = 4):
        super().__init__()
        self.position_encoding = PositionalEncoding(3, pe_freqs)
        query_dim = self.position_encoding.get_out_dim() + feature_dim
        self.query = nn.Sequential(nn.Linear(query_dim, hidden_dim), nn.ReLU(inplace=True))
        # key: feature, direction to the camera, visibility, window offset
        self.attention = ViewAttention(hidden_dim, feature_dim + 4 + 2, feature_dim, hidden_dim, num_heads, code_dim)

    def forward(
        self,
        positions: Float[Tensor, "V 3"],
        features: Float[Tensor, "V m W C"],
        directions: Float[Tensor, "V m 3"],
        visible: Bool[Tensor, "V m"],
        offsets: Float[Tensor, "W 2"],
    ) -> Float[Tensor, "V code"]:
        """``positions`` normalised to the proxy box ([-1, 1]); ``directions`` unit vectors vertex -> camera."""
        num_vertices, m, window, channels = features.shape
        centre = features[:, :, window // 2]  # the projection itself (odd k: the middle sample)
        query = self.query(torch.cat([self.position_encoding(positions), masked_view_mean(centre, visible)], dim=-1))
        expand = lambda x: x[:, :, None].expand(-1, -1, window, -1)  # noqa: E731  per view -> per token
        keys = torch.cat([
            features,
            expand(directions),
            expand(visible.float()[..., None]),
            offsets[None, None].expand(num_vertices, m, -1, -1),
        ], dim=-1).reshape(num_vertices, m * window, -1)
        valid = visible[:, :, None].expand(-1, -1, window).reshape(num_vertices, m * window)
        values = keys[..., :channels]  # the features again, as a view: one (V, m*W, .) tensor is kept for backward
        code, _, any_visible = self.attention(query, keys, values, valid)
        return code * any_visible[:, None].float()  # vertices that no view sees carry no appearance


def window_offsets(size: int, device: torch.device | None = None) -> Float[Tensor, "W 2"]:
    """(dx, dy) of a ``size`` x ``size`` window in units of its spacing, row-major, centre at index W // 2."""
    r = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=-1)


class PointAppearance(nn.Module):
    """Fuses the pixel-aligned features of a 3D sample across views, queried by the sample's geometry code.

    ``fusion="mean"`` is the naive-projection ablation (pixelNeRF/NHP-style average pooling): the same tokens averaged
    over the views the sample projects into, and the plain mean source colour; the geometry code then plays no part
    in choosing views.
    """

    def __init__(self, geometry_dim: int, feature_dim: int, out_dim: int, hidden_dim: int = 64, num_heads: int = 4,
                 fusion: Literal["attention", "mean"] = "attention"):
        super().__init__()
        key_dim = feature_dim + 3 + 4 + 2  # features, colour, relative direction (dot + diff), source mask, occlusion
        self.attention = ViewAttention(geometry_dim, key_dim, key_dim, hidden_dim, num_heads, out_dim) \
            if fusion == "attention" else None
        self.mean_projection = nn.Linear(key_dim, out_dim) if fusion == "mean" else None

    def forward(
        self,
        geometry: Float[Tensor, "N G"],
        features: Float[Tensor, "N m C"],
        colors: Float[Tensor, "N m 3"],
        source_cues: Float[Tensor, "N m 2"],
        relative_dirs: Float[Tensor, "N m 4"],
        valid: Bool[Tensor, "N m"],
    ) -> Tuple[Float[Tensor, "N out"], Float[Tensor, "N 3"]]:
        """Returns the appearance code and the blended source colour. ``source_cues``: the source mask at the
        projection and how far the point lies behind the proxy surface seen by that view."""
        tokens = torch.cat([features, colors, relative_dirs, source_cues], dim=-1)
        if self.attention is not None:
            code, weights, _ = self.attention(geometry, tokens, tokens, valid)
        else:
            use = valid | ~valid.any(dim=1, keepdim=True)  # all views for samples outside every view
            weights = use.float() / use.float().sum(1, keepdim=True)
            code = self.mean_projection((weights[..., None] * tokens).sum(1))
        blended = (weights[..., None] * colors).sum(1)
        return code, blended
