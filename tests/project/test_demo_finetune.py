"""``scripts/demo.sh`` fine-tunes the shipped pretrained gm-nerf-small: its training stage starts from those weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

from gmnerf_ns.cli.pretrained import PretrainedRun, write_run
from gmnerf_ns.core.checkpoints import list_checkpoints, model_weights, read_checkpoint
from gmnerf_ns.training.method_configs import gm_nerf_small
from tests.fixtures.shared_run import make_tiny_data

ROOT = Path(__file__).resolve().parents[2]
NS_TRAIN = Path(sys.executable).with_name("ns-train")


def demo_finetune_flags(checkpoint: Path, steps: int) -> List[str]:
    """The ns-train options demo.sh's ``finetune_flags`` gives for ``checkpoint`` and ``steps``."""
    code = 'eval "$(sed -n "/^finetune_flags()/,/^}/p" "$0")" && finetune_flags "$1" "$2"'
    proc = subprocess.run(["bash", "-c", code, str(ROOT / "scripts" / "demo.sh"), str(checkpoint), str(steps)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, f"scripts/demo.sh has no working finetune_flags: {proc.stderr}"
    return proc.stdout.splitlines()


def test_demo_fine_tuning_starts_from_the_pretrained_weights(tmp_path):
    data = make_tiny_data(tmp_path / "data")
    pretrained = write_run(PretrainedRun(data=data, output_dir=tmp_path / "out", experiment_name="zero-shot",
                                         resolution=48))
    (_, source), = list_checkpoints(pretrained.parent / "nerfstudio_models")
    flags = demo_finetune_flags(source, 1)
    assert flags[:2] == ["--pipeline.pretrained-checkpoint", str(source)]
    lrs = [float(flags[i + 1]) for i, flag in enumerate(flags) if flag.endswith(".optimizer.lr")]
    assert len(lrs) == 3 and max(lrs) < gm_nerf_small.config.optimizers["fields"]["optimizer"].lr  # gentler

    command = [str(NS_TRAIN), "gm-nerf-small", "--data", str(data), "--output-dir", str(tmp_path / "out"),
               "--experiment-name", "demo", "--timestamp", "finetune", "--vis", "tensorboard",
               "--max-num-iterations", "1", "--steps-per-eval-batch", "100", "--steps-per-eval-image", "100",
               "--pipeline.datamanager.patch-size", "32", "--pipeline.model.num-samples", "8",
               "--pipeline.model.volume-resolution", "16", "--pipeline.model.eval-num-rays-per-chunk", "1024",
               *flags, "gmnerf-synthetic", "--resolution", "48", "--num-input-views", "3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "initialised gm-nerf from" in " ".join(proc.stdout.split())

    (step, checkpoint), = list_checkpoints(tmp_path / "out" / "demo" / "gm-nerf-small" / "finetune" / "nerfstudio_models")
    state = read_checkpoint(checkpoint)
    assert step == 0
    assert all(group["param_groups"][0]["initial_lr"] == lr
               for group, lr in zip(state["optimizers"].values(), lrs))
    start, tuned = model_weights(read_checkpoint(source)), model_weights(state)
    assert tuned.keys() == start.keys()
    # One Adam step moves each weight by at most the learning rate; weights of a fresh model are nowhere near.
    moved = {key: (tuned[key].float() - start[key].float()).abs().max().item() for key in start
             if start[key].numel()}
    assert max(moved.values()) <= 1.01 * max(lrs), sorted(moved.items(), key=lambda kv: -kv[1])[:3]
    assert max(moved.values()) > 0  # and it did train
