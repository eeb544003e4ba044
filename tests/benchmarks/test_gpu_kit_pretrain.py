"""The GPU kit's training stage (benchmarks/throughput/gpu_kit/pretrain.sh) on the CPU: it trains the pretrained run,
returns its newest checkpoint, and a later kit run given that checkpoint goes on from it instead of starting over."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN = ROOT / "benchmarks" / "throughput" / "gpu_kit" / "pretrain.sh"


def _pretrain(tmp_path: Path, name: str, kit: Path, seconds: int = 400, **extra_env: str) -> tuple:
    work, out = tmp_path / name / "work", tmp_path / name / "out"
    (work / "logs").mkdir(parents=True)
    out.mkdir(parents=True)
    env = {**os.environ, "PY": sys.executable, "REPO": str(ROOT), "KIT": str(kit), "WORK": str(work), "OUT": str(out),
           "DEVICE": "cpu", "GPU_KIT_PRETRAIN_METHOD": "gm-nerf-small", "GPU_KIT_PRETRAIN_STEPS": "4",
           "GPU_KIT_PRETRAIN_SUBJECTS": "3",
           "GPU_KIT_PRETRAIN_TEST_SUBJECTS": "1", "GPU_KIT_PRETRAIN_SAVE": "2",
           "GPU_KIT_PRETRAIN_WORKERS": "1", "OMP_NUM_THREADS": "1", **extra_env}
    result = subprocess.run(["bash", str(PRETRAIN), str(seconds)], env=env, capture_output=True, text=True, check=False,
                            timeout=seconds + 60)
    logs = "".join(p.read_text() for p in sorted((work / "logs").glob("pretrain-*.log")))
    assert result.returncode == 0, result.stdout + result.stderr + logs[-3000:]
    return out, result.stdout, logs, work


def test_trains_returns_its_checkpoint_and_the_next_run_resumes_from_it(tmp_path):
    kit = tmp_path / "kit"
    out, stdout, _, work = _pretrain(tmp_path, "first", kit)
    returned = sorted(out.glob("step-*.ckpt"))
    assert [p.name for p in returned] == ["step-000000003.ckpt"], stdout  # the run's last step
    state = torch.load(returned[0], map_location="cpu", weights_only=False)
    assert state["step"] == 3
    saved = work / "logs" / "pretrain"
    assert (saved / "config.yml").is_file() and float((saved / "train_seconds.txt").read_text()) > 0

    first_seconds = float((out / "train_seconds.txt").read_text())
    assert first_seconds > 0

    (kit / "resume").mkdir(parents=True)
    shutil.copy(returned[0], kit / "resume")
    shutil.copy(out / "train_seconds.txt", kit / "resume")  # as prepare.sh carries them
    out2, stdout2, logs2, _ = _pretrain(tmp_path, "second", kit)  # a fresh machine: nothing of the first run there
    assert "from step-000000003.ckpt" in stdout2
    assert "nothing left to train" in logs2  # resumed at the end of the 4-step schedule, not started over
    assert [p.name for p in out2.glob("step-*.ckpt")] == ["step-000000003.ckpt"]
    assert float((out2 / "train_seconds.txt").read_text()) >= first_seconds  # summed over both machines


def test_too_little_time_left_after_the_world_trains_nothing(tmp_path):
    out, stdout, _, _ = _pretrain(tmp_path, "short", tmp_path / "kit", seconds=59)
    assert "not trained" in stdout
    assert not list(out.glob("*.ckpt"))


def test_run_sh_ends_with_the_pretrain_stage(tmp_path):
    """run.sh's own path to the stage (dry mode, as tests/benchmarks/test_gpu_kit.py): the checkpoint comes back beside
    the summary, and the run's config and event file are in the logs archive."""
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OUT": str(out), "GPU_KIT_WORK": str(work), "GPU_KIT_DEVICE": "cpu", "GPU_KIT_INSTALL": "0",
           "GPU_KIT_PYTHON": sys.executable, "GPU_KIT_STAGES": "pretrain", "GPU_KIT_DIR": str(tmp_path / "kit"),
           "GPU_KIT_SMALL_RESOLUTION": "48", "GPU_KIT_SUBJECTS": "2", "GPU_KIT_FRAMES": "1",
           "GPU_KIT_PRETRAIN_METHOD": "gm-nerf-small", "GPU_KIT_PRETRAIN_STEPS": "2", "GPU_KIT_PRETRAIN_SUBJECTS": "3",
           "GPU_KIT_PRETRAIN_TEST_SUBJECTS": "1",
           "GPU_KIT_PRETRAIN_SAVE": "2", "GPU_KIT_PRETRAIN_WORKERS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "throughput" / "gpu_kit" / "run.sh")], env=env,
                            capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "returned step-000000001.ckpt" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz", "step-000000001.ckpt", "summary.json",
                                                     "summary.txt", "train_seconds.txt"]
    with tarfile.open(out / "logs.tar.gz") as archive:
        names = archive.getnames()
    assert "logs/pretrain/config.yml" in names and "logs/pretrain/train_seconds.txt" in names


def test_a_checkpoint_over_the_file_limit_comes_back_without_moments_in_parts_and_trains_on(tmp_path):
    """gm-nerf's checkpoint (about 56 MB) is over the 16 MiB a device call returns; the same path on gm-nerf-small
    with a smaller limit: the returned parts join into the checkpoint minus Adam's moments, and the recipe resumes
    from them and trains on."""
    sys.path.insert(0, str(PRETRAIN.parent))
    from checkpoint_parts import pack

    from gmnerf_ns.core.checkpoints import model_weights, read_checkpoint

    limit = 1_000_000
    out, stdout, _, work = _pretrain(tmp_path, "first", tmp_path / "kit", GPU_KIT_MAX_BYTES=str(limit))
    parts = sorted(p.name for p in out.glob("step-*"))
    assert len(parts) >= 2 and parts == [f"step-000000003.ckpt.part-{i}" for i in range(len(parts))], stdout
    assert all((out / p).stat().st_size <= limit for p in parts) and f"returned {parts[-1]}" in stdout
    run = next((work / "pretrain" / "pretrained" / "gm-nerf-small").iterdir())
    middle = sorted((run / "nerfstudio_models").glob("step-*.ckpt"))[0]  # a checkpoint before the last step
    original = read_checkpoint(middle)
    assert original["step"] < 3
    returned = pack(middle, tmp_path / "returned", max_bytes=limit)
    assert [p.name for p in returned] == [f"{middle.name}.part-{i}" for i in range(len(returned))]
    assert len(returned) >= 2 and all(p.stat().st_size <= limit for p in returned)

    recipe = [sys.executable, str(ROOT / "scripts" / "train_pretrained.py"), "--steps", "4", "--subjects", "3",
              "--test-subjects", "1", "--world", str(work / "world-gm-nerf-small"), "--runs", str(tmp_path / "runs"),
              "--steps-per-save", "2", "--only", "train", "--resume-from", str(returned[0])]
    result = subprocess.run(recipe, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            check=False, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Resuming from" in result.stdout + result.stderr
    models = tmp_path / "runs" / "pretrained" / "gm-nerf-small" / "world-seed0-4" / "nerfstudio_models"
    joined = read_checkpoint(models / middle.name)
    weights = model_weights(joined)
    assert weights.keys() == model_weights(original).keys()
    assert all(torch.equal(weights[k], v) for k, v in model_weights(original).items())
    assert joined["schedulers"] == original["schedulers"] and joined["step"] == original["step"]
    for name, optimizer in joined["optimizers"].items():
        assert optimizer["state"] == {} and original["optimizers"][name]["state"]  # the moments are what was dropped
        assert optimizer["param_groups"] == original["optimizers"][name]["param_groups"]
    trained_on = read_checkpoint(models / "step-000000003.ckpt")
    assert trained_on["optimizers"]["fields"]["state"]  # Adam's moments again, from the steps after the resume
    assert not all(torch.equal(model_weights(trained_on)[k], v) for k, v in weights.items())
