"""Where a gm-nerf training step spends its time, and how many kernels and host syncs it issues.

    python benchmarks/throughput/profile_step.py --method gm-nerf-small --device cpu --steps 5
    python benchmarks/throughput/profile_step.py --method gm-nerf --device cuda --steps 20 --data data/synthetic
    python benchmarks/throughput/profile_step.py --method gm-nerf-small --device cpu --steps 4 --subjects-per-step 2

Prints milliseconds per step split into data (building the batch: decoding, sources, patch), forward+loss and
backward+step (optimizer and scheduler), then the aten ops per step and the sync-forcing ops per step (``nonzero``,
``_local_scalar_dense`` i.e. ``.item()``/``float()``/``bool()`` of a tensor, ``masked_select``), counted by
``torch.profiler`` over the compute part of the steps. On CUDA each phase ends with a synchronize, so the split is
honest; the counts are the same on any device for the same code path. On CUDA it also runs the steps back to back
(one synchronize at the end, as in training) and reports that end-to-end time per step, the GPU kernel time per step
(from the profiler's CUDA activity) and their ratio, the share of the step the GPU is busy. With
``--subjects-per-step`` P each step trains on P samples (the datamanager option of that name); the times and counts
stay per step, and the milliseconds per sample (per step / P) are printed beside them.

Without ``--data`` a small built-in dataset is generated into a temporary folder first (a few seconds).
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Literal, Optional

import torch
import tyro

SYNC_OPS = ("aten::nonzero", "aten::_local_scalar_dense", "aten::masked_select")
"""Ops that make the host wait for the device (their output size or value is needed on the host)."""
FUSED_KERNELS = ("aten::_fused_adam_", "aten::_fused_adamw_")
"""One kernel on CUDA; their CPU implementation reads CPU scalars with ``item()``, which syncs nothing. Ops nested
inside them are not counted as sync-forcing."""


def kernel_microseconds(events) -> float:
    """Total duration of the GPU kernels among the profiler's events.

    Only the device-side events count: a CPU op's ``self_device_time_total`` is the time of the kernels it launched,
    so summing it over ``key_averages()`` (CPU ops and kernels) counts every kernel twice."""
    from torch.autograd import DeviceType

    return float(sum(event.device_time for event in events if event.device_type == DeviceType.CUDA))


def inside_fused_kernel(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in FUSED_KERNELS:
            return True
        parent = parent.cpu_parent
    return False


@dataclass
class Profile:
    """Profile gm-nerf training steps."""

    method: str = "gm-nerf-small"
    """gm-nerf, gm-nerf-small or gm-nerf-finetune."""
    device: str = "cpu"
    """cpu or cuda."""
    steps: int = 5
    """Measured steps (after ``warmup`` unmeasured ones)."""
    warmup: int = 2
    """Steps run first and not measured (allocator, caches, cuDNN autotuning)."""
    data: Optional[Path] = None
    """Dataset folder; default: a small generated built-in dataset."""
    resolution: Optional[int] = None
    """Override the protocol's image height."""
    patch_size: Optional[int] = None
    """Override the method's training patch size."""
    threads: Optional[int] = None
    """torch CPU threads (default: torch's)."""
    autocast: Optional[Literal["off", "bf16"]] = None
    """Override the model's ``--pipeline.model.autocast`` (default: the method's, off)."""
    compile_networks: Optional[bool] = None
    """Override the model's ``--pipeline.model.compile-networks`` (default: the method's, off)."""
    subjects_per_step: int = 1
    """Samples (subject-frames) per training step: ``--pipeline.datamanager.subjects-per-step``."""
    json_path: Optional[Path] = None
    """Also write the numbers to this JSON file."""


def small_dataset(folder: Path) -> Path:
    from gmnerf_ns.synth.config import SynthConfig
    from gmnerf_ns.synth.generator import generate

    return generate(SynthConfig(out=folder / "synthetic", num_subjects=3, num_test_subjects=1, num_cameras=6,
                                num_frames=1, resolution=256, progress=False))


def build(options: Profile, data: Path):
    """(pipeline, optimizers) of the method on ``data``, as ns-train builds them."""
    from nerfstudio.engine.optimizers import Optimizers
    from nerfstudio.plugins.registry import discover_methods

    configs, _ = discover_methods()
    if options.method not in configs:
        raise SystemExit(f"profile_step: unknown method {options.method!r}")
    config = copy.deepcopy(configs[options.method])
    datamanager = config.pipeline.datamanager
    datamanager.data = data
    datamanager.dataparser.data = data
    datamanager.num_workers = 0  # batches are built in the measured data phase, not in the background
    datamanager.subjects_per_step = options.subjects_per_step
    if options.resolution is not None:
        datamanager.dataparser.resolution = options.resolution
    if options.patch_size is not None:
        datamanager.patch_size = options.patch_size
    if options.autocast is not None:
        config.pipeline.model.autocast = options.autocast
    if options.compile_networks is not None:
        config.pipeline.model.compile_networks = options.compile_networks
    pipeline = config.pipeline.setup(device=options.device, test_mode="val")
    pipeline.train()
    groups = {name: params for name, params in pipeline.get_param_groups().items() if len(params) > 0}
    return pipeline, Optimizers(config.optimizers, groups)


def compute(pipeline, optimizers, samples, step: int, timings: Optional[Dict[str, float]], sync) -> None:
    """Forward, loss, backward and optimizer step of one step's samples (the pipeline's own training step after the
    data)."""
    start = time.perf_counter()
    _, losses, _ = pipeline.train_loss_dict_for_samples(samples)
    loss = sum(losses.values())
    sync()
    middle = time.perf_counter()
    optimizers.zero_grad_all()
    loss.backward()
    optimizers.optimizer_step_all()
    optimizers.scheduler_step_all(step)
    sync()
    if timings is not None:
        timings["forward_loss"] += middle - start
        timings["backward_step"] += time.perf_counter() - middle


def profile(options: Profile) -> Dict[str, Any]:
    if isinstance(options.subjects_per_step, bool) or options.subjects_per_step < 1:
        raise SystemExit(f"profile_step: --subjects-per-step {options.subjects_per_step}: must be an integer >= 1")
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    cuda = options.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        data = options.data if options.data is not None else small_dataset(Path(tmp))
        pipeline, optimizers = build(options, data)
        datamanager = pipeline.datamanager
        for step in range(options.warmup):
            compute(pipeline, optimizers, datamanager.next_train_samples(step), step, None, sync)
        timings = {"data": 0.0, "forward_loss": 0.0, "backward_step": 0.0}
        batches = []
        for step in range(options.warmup, options.warmup + options.steps):
            start = time.perf_counter()
            batches.append(datamanager.next_train_samples(step))
            sync()
            timings["data"] += time.perf_counter() - start
        for i, samples in enumerate(batches):
            compute(pipeline, optimizers, samples, options.warmup + i, timings, sync)
        end_to_end = None
        if cuda:  # back to back, no synchronize between phases or steps: the GPU's queue never drains on purpose
            torch.cuda.reset_peak_memory_stats()
            sync()
            start = time.perf_counter()
            for i, samples in enumerate(batches):
                compute(pipeline, optimizers, samples, options.warmup + i, None, lambda: None)
            sync()
            end_to_end = time.perf_counter() - start
        # The op counts come from a second pass over the same batches under the profiler (it slows the steps).
        counts: Counter = Counter()
        fused_items = 0
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with torch.profiler.profile(activities=activities) as prof:
            for i, samples in enumerate(batches):
                compute(pipeline, optimizers, samples, options.warmup + i, None, sync)
        kernel_us = kernel_microseconds(prof.events()) if cuda else 0.0
        for event in prof.events():
            if event.name.startswith("aten::"):
                counts[event.name] += 1
                if event.name in SYNC_OPS and inside_fused_kernel(event):
                    fused_items += 1
        close = getattr(datamanager, "close", None)
        if close is not None:
            close()
    n = options.steps
    aten = sum(counts.values()) / n
    syncs = {name: counts[name] / n for name in SYNC_OPS}
    syncs["aten::_local_scalar_dense"] -= fused_items / n
    gpu = {}
    if end_to_end is not None:
        gpu = {
            "gpu": torch.cuda.get_device_name(),
            "end_to_end_ms_per_step": 1000 * end_to_end / n,
            "gpu_kernel_ms_per_step": kernel_us / 1000 / n,
            "gpu_busy_fraction": (kernel_us / 1e6) / end_to_end,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        }
    return {
        "method": options.method,
        "device": options.device,
        "threads": torch.get_num_threads(),
        "autocast": pipeline.model.config.autocast,
        "compile_networks": pipeline.model.config.compile_networks,
        "steps": n,
        "subjects_per_step": options.subjects_per_step,
        "ms_per_step": {k: 1000 * v / n for k, v in timings.items()} | {"total": 1000 * sum(timings.values()) / n},
        "ms_per_sample": 1000 * sum(timings.values()) / (n * options.subjects_per_step),
        "aten_ops_per_step": aten,
        "sync_ops_per_step": sum(syncs.values()),
        "sync_ops_by_name": syncs,
        "top_ops": {name: c / n for name, c in counts.most_common(15)},
        **gpu,
    }


def main(options: Profile) -> Dict[str, Any]:
    result = profile(options)
    ms = result["ms_per_step"]
    print(f"{result['method']} on {result['device']} ({result['threads']} threads), {result['steps']} steps of "
          f"{result['subjects_per_step']} sample(s)")
    print(f"  ms/step: {ms['total']:.1f} = data {ms['data']:.1f} + forward+loss {ms['forward_loss']:.1f} + "
          f"backward+step {ms['backward_step']:.1f}; ms/sample: {result['ms_per_sample']:.1f}")
    print(f"  aten ops/step: {result['aten_ops_per_step']:.0f}")
    print(f"  sync-forcing ops/step: {result['sync_ops_per_step']:.1f} "
          + ", ".join(f"{k.split('::')[1]} {v:.1f}" for k, v in result["sync_ops_by_name"].items()))
    if "gpu" in result:
        print(f"  {result['gpu']}: {result['end_to_end_ms_per_step']:.1f} ms/step back to back, GPU kernels "
              f"{result['gpu_kernel_ms_per_step']:.1f} ms/step, busy {100 * result['gpu_busy_fraction']:.0f}%, "
              f"peak {result['peak_allocated_gib']:.2f} GiB")
    if options.json_path is not None:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(tyro.cli(Profile, description=__doc__.split("\n\n")[0]))
