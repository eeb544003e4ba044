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


def _pretrain(tmp_path: Path, name: str, kit: Path, seconds: int = 400) -> tuple:
    work, out = tmp_path / name / "work", tmp_path / name / "out"
    (work / "logs").mkdir(parents=True)
    out.mkdir(parents=True)
    env = {**os.environ, "PY": sys.executable, "REPO": str(ROOT), "KIT": str(kit), "WORK": str(work), "OUT": str(out),
           "DEVICE": "cpu", "GPU_KIT_PRETRAIN_STEPS": "4", "GPU_KIT_PRETRAIN_SUBJECTS": "3",
           "GPU_KIT_PRETRAIN_TEST_SUBJECTS": "1", "GPU_KIT_PRETRAIN_SAVE": "2",
           "GPU_KIT_PRETRAIN_WORKERS": "1", "OMP_NUM_THREADS": "1"}
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

    (kit / "resume").mkdir(parents=True)
    shutil.copy(returned[0], kit / "resume")
    out2, stdout2, logs2, _ = _pretrain(tmp_path, "second", kit)  # a fresh machine: nothing of the first run there
    assert "from step-000000003.ckpt" in stdout2
    assert "nothing left to train" in logs2  # resumed at the end of the 4-step schedule, not started over
    assert [p.name for p in out2.glob("step-*.ckpt")] == ["step-000000003.ckpt"]


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
           "GPU_KIT_PRETRAIN_STEPS": "2", "GPU_KIT_PRETRAIN_SUBJECTS": "3", "GPU_KIT_PRETRAIN_TEST_SUBJECTS": "1",
           "GPU_KIT_PRETRAIN_SAVE": "2", "GPU_KIT_PRETRAIN_WORKERS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "throughput" / "gpu_kit" / "run.sh")], env=env,
                            capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "returned step-000000001.ckpt" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz", "step-000000001.ckpt", "summary.json",
                                                     "summary.txt"]
    with tarfile.open(out / "logs.tar.gz") as archive:
        names = archive.getnames()
    assert "logs/pretrain/config.yml" in names and "logs/pretrain/train_seconds.txt" in names
