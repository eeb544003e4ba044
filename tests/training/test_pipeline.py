"""End to end on tiny built-in-layout data: ns-train (in process), checkpoint, ns-eval metrics, held-out renders."""

from __future__ import annotations

import json

import pytest
import torch
from nerfstudio.scripts.eval import ComputePSNR
from nerfstudio.utils.eval_utils import eval_setup

from tests.fixtures.shared_run import shared_run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return shared_run(tmp_path_factory)  # one tiny run (tests/fixtures/shared_run.py) shared with the tool tests


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
