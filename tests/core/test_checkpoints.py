"""Checkpoints: read only as tensors and numbers, never while a pipeline is built, so a
crafted ``--pipeline.pretrained-checkpoint`` runs no code and a fine-tuned run no longer needs the checkpoint it
started from; the 2 newest checkpoints are kept, so a corrupt latest one falls back to the one before, bit-exactly."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict

import pytest
import torch
import yaml

from tests.fixtures.shared_run import shared_run, tiny_config
from tests.fixtures.training_runs import checkpoints, expect_clean_exit, make_data, ns_train, saved_config, tiny


class Payload:
    """Unpickling this calls ``eval(code)``: with ``torch.load(weights_only=False)`` it creates the marker file."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return eval, (self.code,)


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    """A ``.ckpt`` laid out as nerfstudio's, whose unpickling would create ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 0, "pipeline": {"_model.x": torch.zeros(1)},
                "gmnerf": Payload(f"open({str(marker)!r}, 'w').close()")}, path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("checkpoints") / "data")


def test_ns_eval_of_a_config_naming_a_crafted_pretrained_checkpoint_runs_no_code(tmp_path_factory, tmp_path):
    from nerfstudio.utils.eval_utils import eval_setup

    run = shared_run(tmp_path_factory)
    marker = tmp_path / "marker"
    config = saved_config(run)
    config.pipeline.pretrained_checkpoint = crafted_checkpoint(tmp_path / "evil" / "step-000000000.ckpt", marker)
    path = tmp_path / "config.yml"  # the run's config (same output folder and checkpoint), naming the crafted file
    path.write_text(yaml.dump(config))
    _, pipeline, checkpoint, _ = eval_setup(path, test_mode="test")
    assert not marker.exists()
    assert checkpoint.parent == run / "nerfstudio_models"  # the run's own weights, nothing else
    assert pipeline.model.training is False


def test_training_from_a_crafted_pretrained_checkpoint_is_one_error_and_runs_no_code(data, tmp_path):
    from gmnerf_ns.core.checkpoints import CheckpointError

    marker = tmp_path / "marker"
    config = tiny(data, tmp_path / "out")
    config.pipeline.pretrained_checkpoint = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    error = expect_clean_exit(config, r"evil\.ckpt is not a gm-nerf checkpoint: it holds Python objects other than "
                                      "tensors and numbers")
    assert isinstance(error, CheckpointError) and not marker.exists()


def test_a_fine_tuned_run_no_longer_needs_its_source_checkpoint(tmp_path_factory, tmp_path):
    from nerfstudio.scripts.train import train_loop
    from nerfstudio.utils.eval_utils import eval_setup

    from gmnerf_ns.core.checkpoints import model_weights, read_checkpoint

    source_run = shared_run(tmp_path_factory)
    source = tmp_path / "source" / "step-000000002.ckpt"
    source.parent.mkdir()
    shutil.copy(checkpoints(source_run)[-1], source)
    config = tiny_config(saved_config(source_run).pipeline.datamanager.data, tmp_path / "finetune", steps=2)
    config.pipeline.pretrained_checkpoint = source
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    run = config.get_base_dir()
    shutil.rmtree(source.parent)  # moved away after fine-tuning

    _, pipeline, checkpoint, step = eval_setup(run / "config.yml", test_mode="test")
    assert step == 1 and checkpoint.parent == run / "nerfstudio_models"
    expected = model_weights(read_checkpoint(checkpoint))
    for name, value in pipeline.model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    camera, batch = pipeline.datamanager.eval_image(0)
    with torch.no_grad():
        rgb = pipeline.model.get_outputs_for_camera(camera)["rgb"]
    assert rgb.shape == batch["image"].shape and torch.isfinite(rgb).all()

    resumed = saved_config(run)  # resuming it does not need the source either
    resumed.load_dir = run / "nerfstudio_models"
    trainer = resumed.setup(local_rank=0, world_size=1)
    trainer.setup()
    assert trainer._start_step == 2
# ----------------------------------------------------------------------------------------------------------------------
# Keeping the last 2 checkpoints
# ----------------------------------------------------------------------------------------------------------------------
def logged_training(config, monkeypatch) -> Dict[int, Dict[str, float]]:
    """Runs ``ns-train``'s main in process; returns step -> loss values of the steps it trained."""
    from gmnerf_ns.training.trainer import GMNeRFTrainer

    logged: Dict[int, Dict[str, float]] = {}
    iteration = GMNeRFTrainer.train_iteration

    def train_iteration(self, step):
        loss, losses, metrics = iteration(self, step)
        logged[step] = {"loss": float(loss), **{k: float(v) for k, v in losses.items()}}
        return loss, losses, metrics

    monkeypatch.setattr(GMNeRFTrainer, "train_iteration", train_iteration)
    ns_train(config)
    return logged


def test_a_truncated_latest_checkpoint_resumes_bit_exactly_from_the_one_before(data, tmp_path, monkeypatch):
    config = tiny(data, tmp_path / "out", steps=4, save_every=1)
    assert config.keep_checkpoints == 2
    uninterrupted = logged_training(config, monkeypatch)
    run = config.get_base_dir()
    assert [p.name for p in checkpoints(run)] == ["step-000000002.ckpt", "step-000000003.ckpt"]
    latest = checkpoints(run)[-1]
    final = torch.load(latest, map_location="cpu")
    latest.write_bytes(latest.read_bytes()[:1000])  # a torn copy, a full disk

    config = saved_config(run)
    config.load_dir = run / "nerfstudio_models"
    resumed = logged_training(config, monkeypatch)
    assert sorted(resumed) == [3]  # from step-2: step 3 again
    assert resumed[3] == uninterrupted[3]  # bit-exact
    again = torch.load(checkpoints(run)[-1], map_location="cpu")
    assert again["step"] == 3
    for key, value in final["pipeline"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(again["pipeline"][key], value), key
    for group, state in final["optimizers"].items():
        for index, moments in state["state"].items():
            for name, value in moments.items():
                assert torch.equal(again["optimizers"][group]["state"][index][name], value), (group, index, name)
    assert again["schedulers"] == final["schedulers"]


def test_keep_checkpoints_one_keeps_only_the_latest(data, tmp_path):
    config = tiny(data, tmp_path / "out", steps=3, save_every=1)
    config.keep_checkpoints = 1
    ns_train(config)
    assert [p.name for p in checkpoints(config.get_base_dir())] == ["step-000000002.ckpt"]
