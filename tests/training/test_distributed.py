"""Multi-process training on CPU (gloo): DDP gradients equal single-process gradient accumulation, ranks draw different
samples, only rank 0 writes; and ``ns-train ... --machine.device-type cpu --machine.num-devices 2`` runs end to end.

Equivalence design: two ranks each take one training sample (rank r draws global sample r), run one DDP step, and
rank 0 reports its averaged gradients and updated weights. The reference, in this process, builds the same model (same
seed), draws samples 0 and 1 in turn with the same per-sample torch seed as the matching rank, and accumulates
``loss / 2`` for each before one optimizer step: DDP's gradient average must equal that accumulation.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.fixtures.training_runs import make_data, tiny

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_SEED = 100
"""torch seed of sample r's random rays: SAMPLE_SEED + r (rank r, or the reference's r-th sample)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _signature(batch) -> list:
    return [batch["image_idx"], list(batch["patch"]), list(batch["sources"].camera_indices)]


def _build(data: Path, out: Path, rank: int, world_size: int):
    torch.manual_seed(0)  # identical initial weights everywhere (DDP would broadcast rank 0's anyway)
    config = tiny(data, out)
    trainer = config.setup(local_rank=rank, world_size=world_size)
    trainer.setup()
    return trainer


def _rank_main(rank: int, world_size: int, port: int, data: Path, out: Path) -> None:
    """One DDP training step on this rank; writes rank<r>.pt with its sample, loss, gradients and weights."""
    from nerfstudio.utils import comms

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    comms.LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    try:
        trainer = _build(data, out / "run", rank, world_size)
        datamanager = trainer.pipeline.datamanager
        seen = []
        next_train = datamanager.next_train
        datamanager.next_train = lambda step: seen.append(next_train(step)) or seen[-1]
        torch.manual_seed(SAMPLE_SEED + rank)
        loss, _, _ = trainer.train_iteration(0)
        model = trainer.pipeline.model
        torch.save({
            "sample": _signature(seen[0][1]),
            "loss": float(loss),
            "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            "weights": {n: p.detach().clone() for n, p in model.named_parameters()},
            "ddp": type(trainer.pipeline._model).__name__,
        }, out / f"rank{rank}.pt")
        trainer.save_checkpoint(0)  # every rank calls it (RNG states are gathered); only rank 0 writes
        datamanager.close()
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("ddp") / "data")


@pytest.mark.slow
def test_two_rank_step_equals_single_process_accumulation(data, tmp_path):
    mp.start_processes(_rank_main, args=(2, _free_port(), data, tmp_path), nprocs=2, join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", map_location="cpu") for r in (0, 1)]
    assert ranks[0]["ddp"] == "CpuDistributedDataParallel"
    assert ranks[0]["sample"] != ranks[1]["sample"]  # the ranks trained on different views

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = _build(data, tmp_path / "single", 0, 1)
        pipeline, optimizers = trainer.pipeline, trainer.optimizers
        optimizers.zero_grad_all()
        for r in (0, 1):  # the same two samples, accumulated: the effective batch of one 2-rank step
            torch.manual_seed(SAMPLE_SEED + r)
            camera, batch = pipeline.datamanager.next_train(r)
            assert _signature(batch) == ranks[r]["sample"]
            outputs = pipeline.model(camera, sources=batch["sources"], patch=batch["patch"])
            loss_dict = pipeline.model.get_loss_dict(outputs, batch, pipeline.model.get_metrics_dict(outputs, batch))
            loss = sum(loss_dict.values())
            assert float(loss) == pytest.approx(ranks[r]["loss"], rel=1e-5)
            (loss / 2).backward()
        grads = {n: p.grad.clone() for n, p in pipeline.model.named_parameters() if p.grad is not None}
        optimizers.optimizer_step_all()
        weights = {n: p.detach().clone() for n, p in pipeline.model.named_parameters()}
        pipeline.datamanager.close()
    finally:
        torch.set_num_threads(threads)

    # Both ranks end with the same averaged gradients and weights, equal to the accumulated ones.
    assert grads.keys() == ranks[0]["grads"].keys() == ranks[1]["grads"].keys()
    for name, grad in grads.items():
        scale = float(grad.abs().max()) + 1e-12
        for r in (0, 1):
            assert torch.allclose(ranks[r]["grads"][name], grad, rtol=1e-4, atol=1e-5 * scale), (r, name)
    for name, weight in weights.items():
        for r in (0, 1):
            assert torch.allclose(ranks[r]["weights"][name], weight, rtol=1e-5, atol=1e-6), (r, name)

    run = tmp_path / "run" / "tiny" / "gm-nerf-small" / "run"
    (checkpoint,) = (run / "nerfstudio_models").iterdir()
    state = torch.load(checkpoint, map_location="cpu")
    assert len(state["rng_states"]) == 2
    assert not torch.equal(state["rng_states"][0]["torch"], state["rng_states"][1]["torch"])
    assert len(list(run.rglob("events.out.tfevents*"))) == 1  # rank 1 logs nothing


@pytest.mark.slow
def test_ns_train_runs_on_two_cpu_processes(data, tmp_path):
    steps = 3
    command = [
        str(Path(sys.executable).parent / "ns-train"), "gm-nerf-small",
        "--machine.device-type", "cpu", "--machine.num-devices", "2",
        "--output-dir", str(tmp_path), "--experiment-name", "ddp", "--timestamp", "run", "--vis", "tensorboard",
        "--max-num-iterations", str(steps), "--steps-per-save", "2", "--steps-per-eval-batch", "2",
        "--steps-per-eval-image", "100", "--steps-per-eval-all-images", "1000000",
        "--pipeline.datamanager.patch-size", "32", "--pipeline.model.num-samples", "8",
        "--pipeline.model.volume-resolution", "16", "--pipeline.model.eval-num-rays-per-chunk", "1024",
        "--data", str(data), "gmnerf-synthetic", "--resolution", "48", "--num-input-views", "3",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    run = tmp_path / "ddp" / "gm-nerf-small" / "run"
    (checkpoint,) = (run / "nerfstudio_models").iterdir()
    assert checkpoint.name == f"step-{steps - 1:09d}.ckpt"
    state = torch.load(checkpoint, map_location="cpu")
    assert state["gmnerf"]["world_size"] == 2 and len(state["rng_states"]) == 2
    sampler = state["pipeline"]["datamanager._extra_state"]
    assert sampler["train_samples_consumed"] == 2 * steps  # each rank drew its own sample at every step
    assert len(list(run.rglob("events.out.tfevents*"))) == 1
    assert not (run / ".gmnerf.lock").exists()  # taken by the launching process, released by rank 0 at the end
    print(json.dumps({"stdout_tail": proc.stdout[-500:]}))
