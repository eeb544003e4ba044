"""Reliability end to end: exact resume after SIGKILL, atomic checkpoints, protected outputs, one clear error per bad
input (through ``ns-train``'s ``main`` and ``eval_setup``, in process), and ``gmnerf-doctor``.

The kill/resume runs are real processes (``python -m tests.training.test_reliability train ...``, which calls
nerfstudio's ``train.main`` exactly as ``ns-train`` does) that log every step's losses to a JSON-lines file.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
import tyro
import yaml

from tests.fixtures.doctor import doctor
from tests.fixtures.training_runs import (
    SAVE_EVERY,
    STEPS,
    checkpoints,
    copy_data,
    expect_clean_exit,
    make_data,
    ns_train,
    saved_config,
    tiny,
)

ROOT = Path(__file__).resolve().parents[2]
@dataclass
class DriverArgs:
    """One training process of the kill/resume tests."""

    data: tyro.conf.Positional[Path]
    """Dataset folder."""
    out: tyro.conf.Positional[Path]
    """Output folder of the run."""
    log: tyro.conf.Positional[Path]
    """JSON-lines file each step's losses are appended to."""
    load_dir: Optional[Path] = None
    """Checkpoint folder to resume from."""
    stall_saving_step: Optional[int] = None
    """Write half of this step's checkpoint, then hang."""


def driver(argv: List[str]) -> None:
    """One training process (run as ``python -m tests.training.test_reliability train ...``)."""
    args = tyro.cli(DriverArgs, args=argv)
    torch.set_num_threads(1)

    from nerfstudio.scripts.train import main

    from gmnerf_ns.training.trainer import GMNeRFTrainer

    config = tiny(args.data, args.out)
    config.load_dir = args.load_dir
    log = open(args.log, "a")
    iteration = GMNeRFTrainer.train_iteration

    def logged(self, step):
        loss, losses, metrics = iteration(self, step)
        log.write(json.dumps({"step": step, "loss": float(loss), **{k: float(v) for k, v in losses.items()}}) + "\n")
        log.flush()
        return loss, losses, metrics

    GMNeRFTrainer.train_iteration = logged
    if args.stall_saving_step is not None:
        real_save = torch.save

        def stalling_save(obj, handle, *a, **kw):
            if isinstance(obj, dict) and obj.get("step") == args.stall_saving_step:
                buffer = io.BytesIO()
                real_save(obj, buffer, *a, **kw)
                handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                handle.flush()
                time.sleep(600)  # half written: the test SIGKILLs this process now
            return real_save(obj, handle, *a, **kw)

        torch.save = stalling_save
    main(config)


def start(data: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tests.training.test_reliability", "train", str(data), str(out),
                             str(log), *extra], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]


def losses(log: Path) -> Dict[int, Dict[str, float]]:
    """Step -> losses; a resumed run's entries replace the killed run's for the same step."""
    out = {}
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        out[entry.pop("step")] = entry
    return out


def run_dir(out: Path) -> Path:
    return out / "tiny" / "gm-nerf-small" / "run"


def partials(run: Path, step: str = "*") -> List[Path]:
    return sorted(run.glob(f".nerfstudio_models-step-{step}.ckpt.partial-*"))


@pytest.fixture(scope="module")
def kill_and_resume(tmp_path_factory):
    """An uninterrupted run, and a run SIGKILLed from outside after its step-2 checkpoint, while it writes the step-4
    one, then resumed with --load-dir: (root, facts observed between the kill and the resume)."""
    root = tmp_path_factory.mktemp("resume")
    data = make_data(root / "data")
    reference = start(data, root / "reference", root / "reference.jsonl")
    victim = start(data, root / "victim", root / "victim.jsonl", "--stall-saving-step", str(2 * SAVE_EVERY))
    run = run_dir(root / "victim")
    deadline = time.time() + 300
    torn = f"{2 * SAVE_EVERY:09d}"
    while not (partials(run, torn) and partials(run, torn)[0].stat().st_size > 0) and time.time() < deadline:
        assert victim.poll() is None, victim.stderr.read()[-4000:]
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    facts = {"returncode": victim.returncode, "steps_logged": sorted(losses(root / "victim.jsonl")),
             "checkpoints": [p.name for p in checkpoints(run)], "partials": len(partials(run))}
    facts["loads"] = torch.load(checkpoints(run)[0], map_location="cpu")["step"]
    resumed = start(data, root / "victim", root / "victim.jsonl", "--load-dir", str(run / "nerfstudio_models"))
    finish(reference)
    finish(resumed)
    return root, facts


@pytest.mark.slow
def test_sigkill_during_a_save_leaves_the_previous_checkpoint_intact(kill_and_resume):
    root, facts = kill_and_resume
    assert facts["returncode"] == -signal.SIGKILL and facts["steps_logged"] == list(range(5))
    # Only the complete step-2 checkpoint is in nerfstudio_models (nerfstudio parses every name there) and it loads
    # as plain weights; the torn step-4 write is a hidden partial file next to the folder, removed on resume.
    assert facts["checkpoints"] == [f"step-{SAVE_EVERY:09d}.ckpt"] and facts["loads"] == SAVE_EVERY
    assert facts["partials"] == 1 and not partials(run_dir(root / "victim"))


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(kill_and_resume):
    root, _ = kill_and_resume
    expected, got = losses(root / "reference.jsonl"), losses(root / "victim.jsonl")
    assert sorted(expected) == sorted(got) == list(range(STEPS))
    for step in range(STEPS):  # steps 3.. come from the resumed process
        for key, value in expected[step].items():
            assert got[step][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, key)
    final = {}
    for name in ("reference", "victim"):
        path = checkpoints(run_dir(root / name))[-1]  # the newest of the 2 kept
        assert path.name == f"step-{STEPS - 1:09d}.ckpt"  # the resumed run stops where the uninterrupted one did
        final[name] = torch.load(path, map_location="cpu")  # torch's weights_only default: tensors and numbers only
    for key, value in final["reference"]["pipeline"].items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert torch.allclose(final["victim"]["pipeline"][key], value, rtol=1e-5, atol=1e-6), key
    assert final["victim"]["schedulers"] == final["reference"]["schedulers"]
    assert final["victim"]["pipeline"]["datamanager._extra_state"] == final["reference"]["pipeline"][
        "datamanager._extra_state"]
    for group, state in final["reference"]["optimizers"].items():
        for index, moments in state["state"].items():
            for name in ("exp_avg", "exp_avg_sq"):
                assert torch.allclose(final["victim"]["optimizers"][group]["state"][index][name], moments[name],
                                      rtol=1e-4, atol=1e-9), (group, index, name)


# Bad inputs, in process through ns-train's main and eval_setup.
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("bad") / "data")


def test_unknown_subject_lists_the_available_ones(data, tmp_path):
    from gmnerf_ns.core.errors import HumanDataError

    config = tiny(data / "subject_009", tmp_path / "out")
    error = expect_clean_exit(config, "available subjects: subject_000, subject_001, subject_002")
    assert isinstance(error, HumanDataError)


def test_mismatched_cameras_are_one_error(data, tmp_path):
    data = copy_data(data, tmp_path)
    annots_path = data / "subject_001" / "annots.npy"
    annots = np.load(annots_path, allow_pickle=True).item()
    annots["cams"] = {k: v[:-1] for k, v in annots["cams"].items()}  # one camera fewer than the images
    np.save(annots_path, annots)
    expect_clean_exit(tiny(data, tmp_path / "out"), "subject_001.*camera count mismatch")


def test_nan_proxy_vertices_are_one_error(data, tmp_path):
    data = copy_data(data, tmp_path)
    path = data / "subject_000" / "vertices" / "0.npy"
    vertices = np.load(path)
    vertices[5, 1] = np.nan
    np.save(path, vertices)
    expect_clean_exit(tiny(data, tmp_path / "out"), r"vertices/0\.npy: proxy vertices contain NaN")


def test_unreadable_training_data_stops_after_a_bounded_number_of_tries(data, tmp_path):
    data = copy_data(data, tmp_path)
    for mask in data.glob("subject_00[01]/mask/Camera_B*/*.png"):
        mask.write_bytes(b"garbage")  # every mask of both training subjects (the parser does not read masks)
    expect_clean_exit(tiny(data, tmp_path / "out"), r"16 training samples in a row could not be loaded .*gmnerf-doctor"
                                                    r".*mask file is unreadable or corrupt")


def test_corrupt_training_frames_are_skipped_and_training_goes_on(data, tmp_path):
    from gmnerf_ns.data.human_record import HumanDataWarning

    data = copy_data(data, tmp_path)
    for image in data.glob("subject_000/Camera_B*/000001.jpg"):
        image.write_bytes(b"garbage")
    vertices = np.load(data / "subject_001" / "vertices" / "1.npy")
    vertices[0, 0] = np.inf
    np.save(data / "subject_001" / "vertices" / "1.npy", vertices)
    config = tiny(data, tmp_path / "out", steps=3, save_every=3)
    with pytest.warns(HumanDataWarning, match="skipping a training sample"):
        ns_train(config)
    assert checkpoints(config.get_base_dir())[-1].name == "step-000000002.ckpt"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data) -> Path:
    """A finished 2-step run (config.yml + checkpoint) to resume, refuse, load and corrupt."""
    config = tiny(data, tmp_path_factory.mktemp("finished") / "out", steps=2, save_every=2)
    ns_train(config)
    return config.get_base_dir()


def test_an_existing_run_is_not_overwritten(finished_run, tmp_path):
    from gmnerf_ns.core.errors import ExistingRunError

    assert saved_config(finished_run).force is False
    before = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")}
    error = expect_clean_exit(saved_config(finished_run), "already holds a run .* --load-dir .* --force")
    assert isinstance(error, ExistingRunError)
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*")} == before  # nothing touched

    config = saved_config(finished_run)
    config.output_dir = tmp_path / "out"
    copy = config.get_base_dir()
    shutil.copytree(finished_run, copy)
    config.load_dir = copy / "nerfstudio_models"  # resuming in place is allowed
    config.save_config()
    config.load_dir, config.force = None, True  # --force deletes the old checkpoints so runs never mix
    config.save_config()
    assert not list((copy / "nerfstudio_models").glob("*.ckpt"))


def test_resume_when_already_finished_trains_nothing(finished_run, tmp_path):
    config = saved_config(finished_run)
    config.timestamp = "again"
    config.load_dir = finished_run / "nerfstudio_models"
    config.output_dir = tmp_path
    ns_train(config)  # step 1 of 2 is the last: nothing to train, and no checkpoint of step 0 replaces it
    assert not list(config.get_checkpoint_dir().glob("*.ckpt"))


def test_truncated_latest_checkpoint_falls_back_to_the_previous(finished_run, tmp_path):
    from gmnerf_ns.core.errors import CleanExit

    models = tmp_path / "models"
    models.mkdir()
    (good,) = finished_run.glob("nerfstudio_models/*.ckpt")
    shutil.copy(good, models / "step-000000001.ckpt")
    (models / "step-000000003.ckpt").write_bytes(good.read_bytes()[:1000])
    config = saved_config(finished_run)
    config.output_dir, config.timestamp, config.load_dir = tmp_path, "fallback", models
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    assert trainer._start_step == 2
    (models / "step-000000001.ckpt").unlink()
    config.timestamp = "truncated"
    with pytest.raises(CleanExit, match="unreadable or truncated checkpoint"):
        config.setup(local_rank=0, world_size=1).setup()


def nerfacto_checkpoint(folder: Path, with_numpy: bool) -> Path:
    """A checkpoint laid out as nerfacto writes it: its real field and proposal-network modules under nerfacto's
    names (the full model would fetch LPIPS weights), numpy learning rates in the scheduler state optionally."""
    from nerfstudio.fields.density_fields import HashMLPDensityField
    from nerfstudio.fields.nerfacto_field import NerfactoField

    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    modules = {"field": NerfactoField(aabb, num_images=4, num_levels=2, log2_hashmap_size=8, implementation="torch"),
               "proposal_networks.0": HashMLPDensityField(aabb, num_levels=2, log2_hashmap_size=8,
                                                          implementation="torch")}
    weights = {f"_model.{name}.{k}": v for name, module in modules.items() for k, v in module.state_dict().items()}
    state = {"step": 29999, "pipeline": weights, "optimizers": {},
             "schedulers": {"fields": {"base_lrs": [np.float64(0.01)]}} if with_numpy else {}, "scalers": {}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "step-000029999.ckpt"
    torch.save(state, path)
    return path


def test_load_dir_of_another_method_is_one_error(data, tmp_path):
    from gmnerf_ns.core.checkpoints import CheckpointError

    path = nerfacto_checkpoint(tmp_path / "nerfacto" / "nerfstudio_models", with_numpy=True)
    config = tiny(data, tmp_path / "out")
    config.load_dir = path.parent
    error = expect_clean_exit(config, "is not a gm-nerf checkpoint")
    assert isinstance(error, CheckpointError)


def test_pretrained_checkpoint_of_another_method_is_one_error(data, tmp_path):
    path = nerfacto_checkpoint(tmp_path / "nerfacto", with_numpy=False)
    config = tiny(data, tmp_path / "out")
    config.pipeline.pretrained_checkpoint = path
    expect_clean_exit(config, r"is not a gm-nerf checkpoint: it holds \d+ of this model's \d+ tensors .*field")


def test_pretrained_gm_nerf_checkpoint_initialises_a_fresh_run(finished_run, data, tmp_path):
    from gmnerf_ns.core.checkpoints import model_weights

    (path,) = finished_run.glob("nerfstudio_models/*.ckpt")
    config = tiny(data, tmp_path / "out")
    config.pipeline.pretrained_checkpoint = path
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    assert trainer._start_step == 0  # weights only: step and optimizer start fresh
    expected = model_weights(torch.load(path, map_location="cpu"))
    for name, value in trainer.pipeline.model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert config.pipeline.pretrained_checkpoint == path  # the saved config still names it


def test_checkpoint_of_another_model_size_is_one_error(finished_run, data, tmp_path):
    config = tiny(data, tmp_path / "out")
    config.pipeline.model.hidden_dim = 32
    config.load_dir = finished_run / "nerfstudio_models"
    expect_clean_exit(config, "gm-nerf model of another configuration .*written by gm-nerf-small.*differ in shape")


def test_missing_load_dir_fails_before_parsing(data, tmp_path):
    config = tiny(data, tmp_path / "out")
    config.load_dir = tmp_path / "nowhere"
    expect_clean_exit(config, "--load-dir .*nowhere: folder not found")


def test_a_start_that_fails_on_bad_data_leaves_no_run_folder(data, tmp_path):
    config = tiny(data / "subject_009", tmp_path / "out")  # no such subject: fails while the data is set up
    expect_clean_exit(config, "available subjects")
    assert not (tmp_path / "out").exists()  # neither the run folder nor the folders above it that ns-train made

    config = tiny(data / "subject_009", tmp_path / "mine")
    base = config.get_base_dir()
    base.mkdir(parents=True)  # a folder that existed before is kept, as it was
    (base / "notes.txt").write_text("mine")
    expect_clean_exit(config, "available subjects")
    assert sorted(p.name for p in base.iterdir()) == ["notes.txt"]


def test_config_of_another_version_is_one_error(finished_run, tmp_path):
    from nerfstudio.utils.eval_utils import eval_setup

    from gmnerf_ns.core.errors import IncompatibleConfigError
    from gmnerf_ns.training.trainer import GMNeRFTrainerConfig

    text = (finished_run / "config.yml").read_text()
    newer = tmp_path / "newer.yml"
    newer.write_text(text.replace("config_format: 1", "config_format: 99"))
    with pytest.raises(IncompatibleConfigError, match="config format 99.* reads format 1"):
        eval_setup(newer)
    renamed = tmp_path / "renamed.yml"
    assert "gmnerf_ns.model.gmnerf_model.GMNeRFModelConfig" in text
    renamed.write_text(text.replace("gmnerf_ns.model.gmnerf_model.GMNeRFModelConfig", "gmnerf_ns.model.old.OldConfig"))
    with pytest.raises(IncompatibleConfigError, match="gmnerf_ns.model.old.OldConfig .*does not have"):
        eval_setup(renamed)
    with pytest.raises(IncompatibleConfigError):  # ns-train --load-config reads it the same way
        ns_train(GMNeRFTrainerConfig(load_config=renamed))
    assert eval_setup(finished_run / "config.yml")[3] == 1  # the unmodified config still loads


# One writer per run folder.
LOCKER = """
import sys, time
from pathlib import Path
from gmnerf_ns.core.run_folder import acquire_run_lock
acquire_run_lock(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_run_into_a_folder_being_written_is_one_error(data, tmp_path):
    from gmnerf_ns.core.run_folder import LOCK_NAME, RunFolderInUseError

    first = tiny(data, tmp_path / "out")
    first.save_config()  # ns-train's first step: the run folder is locked until its training ends
    lock = json.loads((first.get_base_dir() / LOCK_NAME).read_text())
    assert lock["pid"] == os.getpid() and lock["host"] and lock["started"]
    config_text = (first.get_base_dir() / "config.yml").read_text()
    second = tiny(data, tmp_path / "out", steps=STEPS + 1)  # the same folder, other options
    error = expect_clean_exit(second, rf"{first.get_base_dir()} is in use by another run \(pid {os.getpid()} on .*"
                                      r"nothing was written.*another --timestamp")
    assert isinstance(error, RunFolderInUseError)
    resume = tiny(data, tmp_path / "out")
    resume.load_dir = first.get_checkpoint_dir()  # --load-dir into the running run's folder
    expect_clean_exit(resume, "is in use by another run")
    forced = tiny(data, tmp_path / "out")
    forced.force = True
    (first.get_checkpoint_dir()).mkdir()
    (first.get_checkpoint_dir() / "step-000000001.ckpt").write_bytes(b"the running run's")
    expect_clean_exit(forced, "is in use by another run")  # --force deletes nothing of a running run
    assert (first.get_checkpoint_dir() / "step-000000001.ckpt").read_bytes() == b"the running run's"
    assert (first.get_base_dir() / "config.yml").read_text() == config_text
    assert sorted(p.name for p in first.get_base_dir().iterdir()) == [LOCK_NAME, "config.yml", "nerfstudio_models"]


def test_a_lock_held_by_another_process_is_refused_until_that_process_dies(tmp_path):
    from gmnerf_ns.core.run_folder import LOCK_NAME, RunFolderInUseError, acquire_run_lock, release_run_lock

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", LOCKER, str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderInUseError, match=rf"in use by another run \(pid {holder.pid} on ") as info:
            acquire_run_lock(tmp_path)
        assert "\n" not in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    lock = acquire_run_lock(tmp_path)  # killed: its lock is stale and taken over
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    release_run_lock(lock)
    assert not (tmp_path / LOCK_NAME).exists()


def test_stale_foreign_and_broken_locks(tmp_path, capsys):
    from gmnerf_ns.core.run_folder import LOCK_NAME, RunFolderInUseError, acquire_run_lock, release_run_lock

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead = int(done.stdout)
    path = tmp_path / LOCK_NAME
    info = {"pid": dead, "host": socket.gethostname(), "started": "2024-01-01 00:00:00", "token": "old"}
    path.write_text(json.dumps(info))
    lock = acquire_run_lock(tmp_path)
    assert f"taking over {path}, left by a run that no longer runs (pid {dead} on" in capsys.readouterr().out
    assert json.loads(path.read_text())["token"] == lock.token != "old"
    release_run_lock(lock)

    path.write_text(json.dumps({**info, "pid": os.getpid()}))  # this very process: alive
    with pytest.raises(RunFolderInUseError, match=f"pid {os.getpid()} on"):
        acquire_run_lock(tmp_path)
    if Path("/proc/self/stat").exists():  # Linux: a process that got the pid of the one that took the lock
        path.write_text(json.dumps({**info, "pid": os.getpid(), "process_start": 1}))
        release_run_lock(acquire_run_lock(tmp_path))
        assert not path.exists()
    path.write_text(json.dumps({**info, "host": "elsewhere"}))  # another machine: cannot tell, so refused
    with pytest.raises(RunFolderInUseError, match="pid .* on elsewhere.*another machine: if it no longer runs, delete"):
        acquire_run_lock(tmp_path)
    path.write_text("not json")
    with pytest.raises(RunFolderInUseError, match=f"{path} exists but is not a gm-nerf run lock"):
        acquire_run_lock(tmp_path)
    release_run_lock(lock)  # no longer its lock: left alone
    assert path.read_text() == "not json"


def test_training_releases_the_lock_when_it_ends_or_fails(finished_run, data, tmp_path, monkeypatch):
    from gmnerf_ns.core.run_folder import LOCK_NAME
    from gmnerf_ns.training.trainer import GMNeRFTrainer

    assert not (finished_run / LOCK_NAME).exists()  # ended normally

    def broken(self, step):
        raise RuntimeError("boom")

    monkeypatch.setattr(GMNeRFTrainer, "train_iteration", broken)
    config = tiny(data, tmp_path / "out")
    with pytest.raises(RuntimeError, match="boom"):
        ns_train(config)
    assert (config.get_base_dir() / "config.yml").is_file() and not (config.get_base_dir() / LOCK_NAME).exists()
    monkeypatch.undo()
    config = saved_config(finished_run)  # a trainer built directly (not through ns-train) takes the lock too
    config.output_dir, config.timestamp, config.load_dir = tmp_path, "direct", finished_run / "nerfstudio_models"
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    assert json.loads((config.get_base_dir() / LOCK_NAME).read_text())["pid"] == os.getpid()
    trainer.train()  # already finished: nothing to train
    assert not (config.get_base_dir() / LOCK_NAME).exists()


# ns-eval: the newest readable checkpoint, one line per problem; a full disk.
def copy_run(run: Path, out: Path, data: Optional[Path] = None) -> Path:
    """A copy of a finished run under ``out`` whose config.yml points at the copy (and at ``data`` if given)."""
    config = saved_config(run)
    config.output_dir = out
    if data is not None:
        config.pipeline.datamanager.data = config.pipeline.datamanager.dataparser.data = data
    base = config.get_base_dir()
    shutil.copytree(run, base)
    (base / "config.yml").write_text(yaml.dump(config))
    return base


def test_ns_eval_falls_back_from_a_truncated_latest_checkpoint(finished_run, tmp_path, capsys):
    from nerfstudio.utils.eval_utils import eval_setup

    from gmnerf_ns.core.errors import CleanExit

    run = copy_run(finished_run, tmp_path / "out")
    (good,) = (run / "nerfstudio_models").glob("*.ckpt")
    bad = run / "nerfstudio_models" / "step-000000007.ckpt"
    bad.write_bytes(good.read_bytes()[:1000])
    _, pipeline, path, step = eval_setup(run / "config.yml", test_mode="test")
    assert (path, step) == (good, 1)
    assert f"WARNING: {bad}: unreadable or truncated checkpoint" in capsys.readouterr().out
    expected = model_weights_of(good)
    assert all(torch.equal(value, expected[key]) for key, value in pipeline.model.state_dict().items())
    good.unlink()
    with pytest.raises(CleanExit, match=rf"^gmnerf error: {bad}: unreadable or truncated checkpoint") as info:
        eval_setup(run / "config.yml", test_mode="test")
    assert "\n" not in str(info.value)


def model_weights_of(path: Path) -> Dict[str, torch.Tensor]:
    from gmnerf_ns.core.checkpoints import model_weights, read_checkpoint

    return model_weights(read_checkpoint(path))


def test_ns_eval_with_a_corrupt_test_image_is_one_line(finished_run, data, tmp_path):
    from nerfstudio.scripts.eval import ComputePSNR

    from gmnerf_ns.core.errors import CleanExit

    data = copy_data(data, tmp_path)
    run = copy_run(finished_run, tmp_path / "out", data)
    images = sorted(data.glob("subject_002/Camera_B*/*.jpg"))  # the held-out subject
    for image in images:  # the header is intact (the dataset parses), the pixels are cut off: found while evaluating
        image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    for corrupt in ("truncated", "garbage"):  # garbage: found while the dataset is parsed, before any evaluation
        with pytest.raises(CleanExit, match=r"^gmnerf error: .*subject_002/Camera_B\w*/\d+\.jpg") as info:
            ComputePSNR(load_config=run / "config.yml", output_path=tmp_path / "eval.json").main()
        assert "\n" not in str(info.value), corrupt
        assert not (tmp_path / "eval.json").exists()
        for image in images:
            image.write_bytes(b"garbage")


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_a_checkpoint_is_written_is_one_line(data, tmp_path, monkeypatch):
    config = tiny(data, tmp_path / "out", steps=3, save_every=1)
    real_save = torch.save

    def save(obj, handle, *args, **kwargs):
        if obj.get("step", 0) >= 2:
            full_disk()
        real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    error = expect_clean_exit(config, r"step-000000002\.ckpt: not written, the disk is full \(No space left on "
                                      r"device\); the checkpoints already there are intact")
    assert isinstance(error.__cause__, OSError)
    run = config.get_base_dir()
    assert [p.name for p in checkpoints(run)] == ["step-000000001.ckpt"] and not partials(run)
    torch.load(checkpoints(run)[0], map_location="cpu", weights_only=True)
    assert not (run / ".gmnerf.lock").exists()


def test_a_full_disk_while_config_yml_is_written_is_one_line(data, tmp_path, monkeypatch):
    config = tiny(data, tmp_path / "out")
    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(SystemExit, match=r"^gmnerf error: .*config\.yml: not written, the disk is full") as info:
        config.save_config()
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()  # nothing left: no folder, no lock


def test_a_full_disk_while_ns_eval_writes_its_renders_is_one_line(finished_run, tmp_path, monkeypatch):
    import imageio.v2 as imageio
    from nerfstudio.utils.eval_utils import eval_setup

    from gmnerf_ns.core.errors import CleanExit

    _, pipeline, _, _ = eval_setup(finished_run / "config.yml", test_mode="test")
    monkeypatch.setattr(imageio, "imwrite", full_disk)
    with pytest.raises(CleanExit, match=r"eval_img_0000\.png: not written, the disk is full") as info:
        pipeline.get_average_eval_image_metrics(output_path=tmp_path / "renders")
    assert "\n" not in str(info.value)


NS_EVAL_ON_A_FULL_DISK = """
import pathlib, sys
config, out = sys.argv[1:]
real = pathlib.Path.write_text
def write_text(self, data, *args, **kwargs):  # the JSON goes to /dev/full, a device that is always full
    if self == pathlib.Path(out):
        with open("/dev/full", "w") as handle:
            handle.write(data)
    return real(self, data, *args, **kwargs)
pathlib.Path.write_text = write_text
sys.argv = ["ns-eval", "--load-config", config, "--output-path", out]
from nerfstudio.scripts.eval import entrypoint
entrypoint()
"""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device that is always full")
def test_a_full_disk_while_ns_eval_writes_its_json_is_one_line(finished_run, tmp_path):
    """ns-eval's own ``--output-path`` is written by nerfstudio: the message comes from the hook discovery installs."""
    out = tmp_path / "eval.json"
    done = subprocess.run([sys.executable, "-c", NS_EVAL_ON_A_FULL_DISK, str(finished_run / "config.yml"), str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (f"ns-eval: {out}: not written, the disk is full "
                                                     f"({os.strerror(errno.ENOSPC)}); free some space there and run again")


def test_doctor_passes_a_good_dataset(data):
    code, rows, text = doctor(data)
    assert code == 0, text
    assert {("train split", "ok"), ("test split", "ok"), ("images and masks", "ok"), ("proxy vertices", "ok"),
            ("cameras vs proxy", "ok")} <= rows
    for item in ("device", "tiny-cuda-nn", "image encoder", "perceptual loss", "LPIPS metric", "SMPL / SMPL-X"):
        assert item in text
    assert "ready: 0 error(s)" in text


def test_doctor_reports_broken_files_and_exits_nonzero(data, tmp_path):
    data = copy_data(data, tmp_path)
    (data / "subject_001" / "Camera_B3" / "000001.jpg").write_bytes(b"garbage")
    (data / "subject_002" / "mask" / "Camera_B2" / "000001.png").unlink()
    vertices = np.load(data / "subject_000" / "vertices" / "1.npy")
    vertices[3] = np.nan
    np.save(data / "subject_000" / "vertices" / "1.npy", vertices)
    mask_path = data / "subject_001" / "mask" / "Camera_B5" / "000000.png"
    import cv2

    cv2.imwrite(str(mask_path), np.zeros((48, 48), np.uint8))
    code, rows, text = doctor(data, body_model_dir=tmp_path / "no_models")
    assert code == 1
    assert {("images and masks", "error"), ("proxy vertices", "error"), ("empty masks", "error"),
            ("SMPL / SMPL-X", "error")} <= rows
    for needle in ("subject_001/Camera_B3/000001.jpg: image file is unreadable or corrupt",
                   "subject_002/Camera_B2/000001.jpg: no mask found", "subject_000/vertices/1.npy: proxy vertices "
                   "contain NaN", "subject_001/Camera_B5/000000.jpg", "no_models does not exist"):
        assert needle in text, needle


def test_doctor_flags_cameras_that_do_not_match_the_images(data, tmp_path):
    data = copy_data(data, tmp_path)
    annots_path = data / "subject_000" / "annots.npy"
    annots = np.load(annots_path, allow_pickle=True).item()
    for T in annots["cams"]["T"]:  # the calibration of another session: every camera 40 cm off (T is in mm)
        T[0] += 400.0
    np.save(annots_path, annots)
    code, rows, text = doctor(data)
    assert ("cameras vs proxy", "warn") in rows and "subject_000" in text


def test_doctor_unknown_dataparser_and_subject(data):
    code, rows, text = doctor(data, dataparser="nope")
    assert code == 1 and "known:" in text and "gmnerf-synthetic" in text
    code, rows, text = doctor(data / "subject_007")
    assert code == 1 and "available subjects: subject_000, subject_001, subject_002" in " ".join(text.split())


def test_doctor_command_line(data, monkeypatch, capsys):
    from gmnerf_ns.cli import doctor as doctor_module

    monkeypatch.setattr(sys, "argv", ["gmnerf-doctor", "--data", str(data / "missing"), "--sample-views", "4"])
    with pytest.raises(SystemExit) as info:
        doctor_module.entrypoint()
    out = " ".join(capsys.readouterr().out.split())
    assert info.value.code == 1 and "error train split: subject 'missing' not found" in out
    assert "available subjects: subject_000, subject_001, subject_002" in out


if __name__ == "__main__":
    if sys.argv[1] == "train":
        driver(sys.argv[2:])
