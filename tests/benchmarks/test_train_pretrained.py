"""The pretrained model's recipe (scripts/train_pretrained.py): resuming a run from its own or a returned checkpoint,
and stopping the tool it runs when it is stopped."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _recipe_module():
    spec = importlib.util.spec_from_file_location("train_pretrained", ROOT / "scripts" / "train_pretrained.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_pretrained"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


recipe_module = _recipe_module()


def _checkpoint(folder: Path, step: int, text: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:09d}.ckpt"
    path.write_text(text or str(step))
    return path


def test_train_command_resumes_and_names_the_device(tmp_path):
    recipe = recipe_module.Recipe(world=tmp_path / "world", runs=tmp_path / "runs", steps=40000, subjects=320,
                                  device="cuda", steps_per_save=250)
    fresh = recipe.train_command()
    assert fresh[:2] == ["ns-train", "gm-nerf-small"] and "--load-dir" not in fresh
    assert fresh[fresh.index("--machine.device-type") + 1] == "cuda"
    assert fresh[fresh.index("--steps-per-save") + 1] == "250"
    assert fresh[fresh.index("--optimizers.fields.scheduler.max-steps") + 1] == "40000"
    resumed = recipe.train_command(resume=True)
    assert resumed[resumed.index("--load-dir") + 1] == str(recipe.run_dir / "nerfstudio_models")
    assert "--num-subjects 320 " in recipe.world_options
    assert "--machine.device-type" not in recipe_module.Recipe().train_command()  # gm-nerf-small trains on the CPU


def test_gm_nerf_is_pretrained_on_a_512_px_world_of_its_own():
    recipe = recipe_module.Recipe(method="gm-nerf", world=Path("data/world-512"), steps=40000, device="cuda")
    command = recipe.train_command()
    assert command[:2] == ["ns-train", "gm-nerf"]
    assert command[command.index("--machine.device-type") + 1] == "cuda"
    assert "--resolution 512 " in recipe.world_options and "--resolution 256" not in recipe.world_options
    assert "--resolution 256 " in recipe_module.Recipe().world_options
    assert recipe.run_dir.parts[-2:] == ("gm-nerf", "world-seed0-40000")
    on_cpu = recipe_module.Recipe(method="gm-nerf").train_command()  # gm-nerf's own default device is auto
    assert on_cpu[on_cpu.index("--machine.device-type") + 1] == "cpu"

def test_a_returned_checkpoint_is_taken_only_when_newer(tmp_path):
    elsewhere = tmp_path / "returned"
    recipe = recipe_module.Recipe(runs=tmp_path / "runs", steps=40000)
    own = recipe.run_dir / "nerfstudio_models"
    _checkpoint(own, 500)
    _checkpoint(own, 1000)
    recipe.resume_from = _checkpoint(elsewhere, 2500, "from the gpu")
    recipe.take_checkpoint()
    assert [p.name for p in recipe.checkpoints()] == [f"step-{s:09d}.ckpt" for s in (500, 1000, 2500)]
    assert (own / "step-000002500.ckpt").read_text() == "from the gpu"

    recipe.resume_from = _checkpoint(elsewhere, 2000, "older")
    recipe.take_checkpoint()
    assert not (own / "step-000002000.ckpt").exists()

    recipe.resume_from = elsewhere / "step-000009000.ckpt"
    with pytest.raises(SystemExit, match="file not found"):
        recipe.take_checkpoint()
    with pytest.raises(SystemExit, match="not a checkpoint name"):
        recipe_module.checkpoint_step(elsewhere / "latest.ckpt")


def test_a_checkpoint_returned_in_parts_is_joined_in_order(tmp_path):
    elsewhere = tmp_path / "returned"
    elsewhere.mkdir()
    for index, text in enumerate(["ab", "cd", "e"] + ["f"] * 9):  # part-10 and part-11 sort after part-9
        (elsewhere / f"step-000004000.ckpt.part-{index}").write_text(text)
    recipe = recipe_module.Recipe(runs=tmp_path / "runs", steps=40000, only="take", world=tmp_path / "no-world",
                                  resume_from=elsewhere / "step-000004000.ckpt.part-0")
    (elsewhere / "train_seconds.txt").write_text("1234\n")  # the training time so far, sent beside it
    recipe_module.main(recipe)  # --only take: no world, no training
    assert [p.name for p in recipe.checkpoints()] == ["step-000004000.ckpt"]
    assert (recipe.run_dir / "train_seconds.txt").read_text() == "1234\n"
    assert recipe.checkpoints()[0].read_text() == "abcde" + "f" * 9
    assert not list((recipe.run_dir / "nerfstudio_models").glob("*.partial"))

    (elsewhere / "step-000004000.ckpt.part-1").unlink()
    recipe = recipe_module.Recipe(runs=tmp_path / "runs2", resume_from=elsewhere / "step-000004000.ckpt.part-0")
    with pytest.raises(SystemExit, match="parts missing"):
        recipe.take_checkpoint()
    assert not recipe.checkpoints()

def test_checkpoints_sort_by_step_not_by_name(tmp_path):
    recipe = recipe_module.Recipe(runs=tmp_path / "runs")
    folder = recipe.run_dir / "nerfstudio_models"
    folder.mkdir(parents=True)
    for name in ("step-10000.ckpt", "step-9500.ckpt"):  # names without zero padding sort the wrong way
        (folder / name).write_text("")
    assert [p.name for p in recipe.checkpoints()] == ["step-9500.ckpt", "step-10000.ckpt"]


def test_sigterm_stops_the_tool_too(tmp_path):
    """A time limit on the recipe (the GPU kit's ``timeout``) must not leave ns-train running on its own."""
    (tmp_path / "sleeper.py").write_text(textwrap.dedent(f"""\
        import os, time
        open({str(tmp_path / 'pid')!r}, "w").write(str(os.getpid()))
        time.sleep(60)
    """))
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""\
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("r", {str(ROOT / 'scripts' / 'train_pretrained.py')!r})
        r = importlib.util.module_from_spec(spec); sys.modules["r"] = r; spec.loader.exec_module(r)
        r.TOOLS["sleep"] = "sleeper"
        r.run(["sleep"])
    """))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen([sys.executable, str(driver)], env=env, stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "pid"
    for _ in range(300):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    child = int(pid_file.read_text())
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode != 0 and "CalledProcessError" in stderr
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the tool kept running after the recipe was stopped")


def test_training_time_is_written_while_training_and_summed_over_sessions(tmp_path, monkeypatch):
    path = tmp_path / "run" / "train_seconds.txt"
    path.parent.mkdir()
    monkeypatch.setattr(recipe_module, "CLOCK_SECONDS", 0.02)
    with recipe_module.TrainingClock(path):
        for _ in range(200):  # a session killed now keeps what is written so far
            if path.exists():
                break
            time.sleep(0.01)
        assert path.exists()

    class FakeTime:
        now = 1000.0

        def time(self) -> float:
            return self.now

    fake = FakeTime()
    monkeypatch.setattr(recipe_module, "time", fake)
    monkeypatch.setattr(recipe_module, "CLOCK_SECONDS", 3600.0)
    path.write_text("100\n")  # earlier sessions
    with recipe_module.TrainingClock(path):
        fake.now += 30.0
    assert path.read_text() == "130\n"
