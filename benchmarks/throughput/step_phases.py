"""Wall ms per training step spent in the model's stages (encode and its parts, the field, the renderer, losses,
backward, optimizer), by wrapping them with timers: synchronous data, 3 unmeasured steps first.

    python benchmarks/throughput/step_phases.py --data DIR [--threads N] [--steps N]

Nested stages overlap (``encode`` includes ``encode.*``; ``render_rays(all)`` includes ``field(all)``).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections import Counter
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (e.g. gmnerf-synth output)")
    parser.add_argument("--method", default="gm-nerf-small", help="gm-nerf-small, gm-nerf or gm-nerf-finetune")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--steps", type=int, default=8, help="measured steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from nerfstudio.engine.optimizers import Optimizers
    from nerfstudio.plugins.registry import discover_methods

    import gmnerf_ns.model.gmnerf_model as gm

    config = copy.deepcopy(discover_methods()[0][args.method])
    datamanager = config.pipeline.datamanager
    datamanager.data = datamanager.dataparser.data = args.data
    datamanager.num_workers = 0
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    pipeline.train()
    model = pipeline.model
    optimizers = Optimizers(config.optimizers, {k: v for k, v in pipeline.get_param_groups().items() if v})
    seconds: Counter = Counter()

    def timed(owner, name: str, label: str) -> None:
        inner = getattr(owner, name, None)
        if inner is None:  # an older tree without this stage
            return

        def wrapper(*a, **k):
            start = time.perf_counter()
            result = inner(*a, **k)
            seconds[label] += time.perf_counter() - start
            return result

        setattr(owner, name, wrapper)

    timed(model, "encode", "encode")
    timed(model.encoder, "forward", "encode.encoder")
    for module, label in ((model.volume, "encode.volume"), (model.registration, "encode.registration"),
                          (model.renderer, "renderer")):
        if module is not None:
            timed(module, "forward", label)
    for name in ("proxy_depth_maps", "vertex_visibility", "splat_to_grid", "dilate", "sample_maps"):
        timed(gm, name, f"encode.{name}")
    timed(model, "render_rays", "render_rays(all)")
    timed(model, "_render_chunks", "render_nograd")
    timed(model.field, "forward", "field(all)")
    timed(model, "get_loss_dict", "losses")

    def step(i: int) -> None:
        start = time.perf_counter()
        _, losses, _ = pipeline.get_train_loss_dict(i)
        loss = sum(losses.values())
        middle = time.perf_counter()
        optimizers.zero_grad_all()
        loss.backward()
        after_backward = time.perf_counter()
        optimizers.optimizer_step_all()
        optimizers.scheduler_step_all(i)
        end = time.perf_counter()
        seconds["data+forward+loss"] += middle - start
        seconds["backward"] += after_backward - middle
        seconds["optimizer"] += end - after_backward
        seconds["step total"] += end - start

    for i in range(3):
        step(i)
    seconds.clear()
    for i in range(3, 3 + args.steps):
        step(i)
    for label, total in sorted(seconds.items()):
        print(f"{label:24s} {1000 * total / args.steps:7.1f} ms/step")


if __name__ == "__main__":
    main()
