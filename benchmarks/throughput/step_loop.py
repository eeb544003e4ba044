"""Wall and process-CPU time per training step as ns-train runs it: the pipeline's own step (data from the
datamanager's prefetching decode threads, forward, loss, backward, optimizer), without the trainer's logging, evals
and checkpoints. ``profile_step.py`` (beside this file) times the phases apart with synchronous data; this loop shows
what the decode threads and the torch thread count do to a whole step.

    python benchmarks/throughput/step_loop.py --data DIR [--threads N] [--workers N] [--steps N]

Set ``OMP_WAIT_POLICY`` in the environment to compare OpenMP wait policies (it is read when torch loads).
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (e.g. gmnerf-synth output)")
    parser.add_argument("--method", default="gm-nerf-small", help="gm-nerf-small, gm-nerf or gm-nerf-finetune")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--workers", type=int, default=2, help="decode threads (--pipeline.datamanager.num-workers)")
    parser.add_argument("--steps", type=int, default=20, help="measured steps, after 3 unmeasured ones")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from nerfstudio.engine.optimizers import Optimizers
    from nerfstudio.plugins.registry import discover_methods

    config = copy.deepcopy(discover_methods()[0][args.method])
    datamanager = config.pipeline.datamanager
    datamanager.data = datamanager.dataparser.data = args.data
    datamanager.num_workers = args.workers
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    pipeline.train()
    optimizers = Optimizers(config.optimizers, {k: v for k, v in pipeline.get_param_groups().items() if v})

    def step(i: int) -> None:
        _, losses, _ = pipeline.get_train_loss_dict(i)
        optimizers.zero_grad_all()
        sum(losses.values()).backward()
        optimizers.optimizer_step_all()
        optimizers.scheduler_step_all(i)

    for i in range(3):
        step(i)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(3, 3 + args.steps):
        step(i)
    wall, cpu = (time.perf_counter() - wall) / args.steps, (time.process_time() - cpu) / args.steps
    print(f"{args.method}: threads {torch.get_num_threads()}, decode workers {args.workers}, "
          f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}: {1000 * wall:.0f} ms/step wall, "
          f"{1000 * cpu:.0f} ms/step process CPU")
    close = getattr(pipeline.datamanager, "close", None)
    if close is not None:
        close()


if __name__ == "__main__":
    main()
