"""Range checks of the model's options, run by ns-train before anything is built (gmnerf_ns/core/options.py)."""

from __future__ import annotations

import math
from typing import Any

from gmnerf_ns.model.precision import AUTOCAST_DTYPES


def check_model_options(cfg: Any, prefix: str) -> None:
    """Checks every numeric option of ``cfg`` (a ``GMNeRFModelConfig``); options are named as ``{prefix}.num-samples``.

    Raises:
        OptionError: naming each option out of range and its range.
    """
    from gmnerf_ns.core.options import OptionCheck, group_norm_channels

    check = OptionCheck(cfg, prefix)
    check.integer("registration_window", low=1)
    check.require(not isinstance(cfg.registration_window, int) or cfg.registration_window < 1
                  or cfg.registration_window % 2 == 1,
                  "registration_window", "must be odd (a k x k window centred on the projection)")
    check.number("registration_spacing", low=0.0, low_open=True)
    for name in ("vertex_code_dim", "num_samples", "appearance_dim", "hidden_dim", "feature_dim", "renderer_width",
                 "max_proxy_vertices", "eval_num_rays_per_chunk", "volume_resolution", "visibility_resolution"):
        check.integer(name, low=1)
    check.integer("pe_frequencies", low=0)
    check.require(cfg.autocast in AUTOCAST_DTYPES, "autocast", f"must be one of {', '.join(AUTOCAST_DTYPES)}")
    check.require(isinstance(cfg.compile_networks, bool), "compile_networks", "must be true or false")
    channels = cfg.volume_channels
    check.require(len(channels) > 0 and all(isinstance(c, int) and c >= 1 and group_norm_channels(c)
                                            for c in channels),
                  "volume_channels", "must be one or more channel counts, each 1-7 or a multiple of 8 (GroupNorm)")
    check.number("grad_ray_fraction", low=0.0, high=1.0, low_open=True)
    for name in ("occupancy_margin", "visibility_tolerance", "rgb_loss_mult", "perceptual_loss_mult",
                 "mask_loss_mult", "lowres_rgb_loss_mult", "opacity_loss_mult"):
        check.number(name, low=0.0)
    encoder = cfg.encoder
    check.integer("encoder.channels", low=1, value=encoder.channels)
    if encoder.backbone == "small" and isinstance(encoder.channels, int):
        check.require(all(group_norm_channels(c * encoder.channels) for c in (1, 2, 4)), "encoder.channels",
                      "must be 1, 2, 4 or a multiple of 8 (GroupNorm over 1x, 2x and 4x this many channels)",
                      value=encoder.channels)
    check.integer("encoder.out_channels", low=1, value=encoder.out_channels)
    perceptual = cfg.perceptual_loss
    check.require(len(perceptual.layers) == len(perceptual.layer_weights), "perceptual_loss.layer_weights",
                  f"must have one weight per layer of --{prefix.lstrip('-')}.perceptual-loss.layers "
                  f"({len(perceptual.layers)})", value=perceptual.layer_weights)
    check.require(all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0
                      for w in perceptual.layer_weights),
                  "perceptual_loss.layer_weights", "must be numbers >= 0", value=perceptual.layer_weights)
    check.done()
