"""Adam in torch's fused form for every gm-nerf parameter group.

nerfstudio's ``AdamOptimizerConfig`` builds ``torch.optim.Adam`` with torch's default implementation, the per-tensor
loop: for each parameter it reads the step counter back to the host (``.item()``, a device sync on CUDA) and launches
about ten small kernels. gm-nerf has about a hundred parameter tensors, so the optimizer step alone issued about a
hundred syncs and a thousand ops per training step (``benchmarks/throughput/profile_step.py``). ``fused=True``
updates every tensor of a group in one kernel with the step kept on the device, on CPU and CUDA alike; the update is
the same Adam. Checkpoints are unchanged (the optimizer's state dict has the same layout).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

import torch
from nerfstudio.engine.optimizers import AdamOptimizerConfig


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """Adam with torch's fused implementation (one kernel per parameter group, no host sync per tensor)."""

    _target: Type = field(default_factory=lambda: torch.optim.Adam)
    fused: bool = True
    """Use torch's fused Adam (False: torch's default per-tensor loop, which syncs once per parameter tensor)."""
