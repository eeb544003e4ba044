"""Learning-rate schedule whose checkpoints load under torch's ``weights_only`` default.

nerfstudio 1.1.5's ``ExponentialDecayScheduler`` returns numpy scalars, which end up in the optimizer and scheduler
state; torch >= 2.6 then refuses to ``torch.load`` the checkpoint in ``ns-eval``/``ns-render``/``--load-dir`` without
``weights_only=False``. This subclass returns plain Python floats, so no global allow-listing is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Type

from nerfstudio.engine.schedulers import ExponentialDecayScheduler, ExponentialDecaySchedulerConfig
from torch.optim import Optimizer, lr_scheduler


@dataclass
class FloatExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    """Exponential decay from the optimizer's lr to ``lr_final`` over ``max_steps`` (after a linear warmup)."""

    _target: Type = field(default_factory=lambda: FloatExponentialDecayScheduler)


class FloatExponentialDecayScheduler(ExponentialDecayScheduler):
    """nerfstudio's exponential decay, computed in Python floats."""

    config: FloatExponentialDecaySchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        cfg = self.config
        lr_final = cfg.lr_final if cfg.lr_final is not None else lr_init

        def multiplier(step: int) -> float:
            if step < cfg.warmup_steps:
                lr = cfg.lr_pre_warmup + (lr_init - cfg.lr_pre_warmup) * step / cfg.warmup_steps
            else:
                t = min(max((step - cfg.warmup_steps) / max(cfg.max_steps - cfg.warmup_steps, 1), 0.0), 1.0)
                lr = math.exp(math.log(lr_init) * (1 - t) + math.log(lr_final) * t)
            return float(lr / lr_init)

        return lr_scheduler.LambdaLR(optimizer, lr_lambda=multiplier)
