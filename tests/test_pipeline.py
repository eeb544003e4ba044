"""End to end on tiny built-in-layout data: ns-train (in process), checkpoint, ns-eval metrics, held-out renders."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from nerfstudio.scripts.eval import ComputePSNR
from nerfstudio.scripts.train import train_loop
from nerfstudio.utils.eval_utils import eval_setup

from gmnerf_ns.method_configs import gm_nerf_small
from tests.fixtures_human import make_synthetic_dataset


def tiny_config(data: Path, out: Path, steps: int = 3):
    config = copy.deepcopy(gm_nerf_small.config)
    config.output_dir = out
    config.experiment_name = "tiny"
    config.timestamp = "run"
    config.vis = "tensorboard"
    config.max_num_iterations = steps
    config.steps_per_save = steps
    config.steps_per_eval_batch = 2
    config.steps_per_eval_image = 2
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.patch_size = 32
    config.pipeline.datamanager.dataparser.data = data
    config.pipeline.datamanager.dataparser.resolution = 48
    config.pipeline.datamanager.dataparser.num_input_views = 3
    model = config.pipeline.model
    model.num_samples, model.volume_resolution, model.eval_num_rays_per_chunk = 8, 16, 1024
    return config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    data = root / "data"
    make_synthetic_dataset(data, subjects=(0, 1, 2), test=(2,), num_frames=2, num_vertices=600)
    config = tiny_config(data, root / "outputs")
    config.set_timestamp()
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    return config.get_base_dir()


def test_training_writes_a_checkpoint_that_loads(trained_run):
    ckpts = sorted((trained_run / "nerfstudio_models").glob("step-*.ckpt"))
    assert ckpts, "no checkpoint written"
    torch.load(ckpts[-1], map_location="cpu")  # torch's weights_only default must accept our checkpoints


def test_ns_eval_reports_metrics_on_held_out_subjects(trained_run, tmp_path):
    output = tmp_path / "eval.json"
    ComputePSNR(load_config=trained_run / "config.yml", output_path=output).main()
    results = json.loads(output.read_text())["results"]
    assert 5.0 < results["psnr"] < 100.0 and 0.0 < results["ssim"] <= 1.0


def test_held_out_render_is_not_black(trained_run):
    _, pipeline, _, _ = eval_setup(trained_run / "config.yml", test_mode="test")
    camera, batch = pipeline.datamanager.eval_image(0)
    assert pipeline.datamanager.subject_names[int(camera.metadata["subject_index"])] == "subject_002"
    out = pipeline.model.get_outputs_for_camera(camera)
    assert out["rgb"].shape == batch["image"].shape
    fg = batch["mask"][..., 0] > 0
    assert out["rgb"][fg].mean() > 0.02
