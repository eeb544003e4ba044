"""ns-eval on a cross-subject model: per subject, novel view vs novel pose, per image, LPIPS status, geometry."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from nerfstudio.utils.eval_utils import eval_setup

from gmnerf_ns.data.protocol import protocol_dir
from gmnerf_ns.eval import evaluation, geometry
from tests.fixtures.shared_run import TEST_SUBJECT, shared_eval, shared_pipeline, shared_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return shared_pipeline(tmp_path_factory)


def test_ns_eval_json_has_nerfstudio_keys_and_the_breakdown(tmp_path_factory):
    folder = shared_eval(tmp_path_factory)  # ns-eval (ComputePSNR) with --render-output-path on the shared run
    results = json.loads((folder / "eval.json").read_text())["results"]
    renders = folder / "renders"
    # nerfstudio's keys: means over every held-out image, with *_std (ns-eval asks for get_std)
    for key in ("psnr", "ssim", "psnr_std", "ssim_std", "num_rays_per_sec", "fps"):
        assert math.isfinite(results[key]), key
    per_image = results["per_image"]
    assert len(per_image) == results["num_images"] == 10  # 5 target views x 2 frames of the held-out subject
    assert {r["subject"] for r in per_image} == {TEST_SUBJECT}
    assert results["psnr"] == pytest.approx(np.mean([r["psnr"] for r in per_image]))
    assert set(per_image[0]) >= {"subject", "frame_id", "camera", "camera_name", "setting", "psnr", "ssim", "lpips"}
    subject = results["per_subject"][TEST_SUBJECT]
    assert subject["all"]["num_images"] == 10 and subject["all"]["psnr"] == pytest.approx(results["psnr"])
    # the synthetic protocol evaluates on its training frames: all novel view, no novel pose
    assert results["settings"]["novel_view"]["num_images"] == 10
    assert results["settings"]["novel_pose"] == {"num_images": 0}
    # LPIPS: a number only with real pretrained weights, otherwise the reason and no number
    status = results["lpips_status"]
    assert ("lpips" in results) == status["available"]
    if not status["available"]:
        assert "weights" in status["reason"] and all(r["lpips"] is None for r in per_image)
    # geometry on the fixture's ground-truth ellipsoids (tiny config: 16 cells, iso-level just above 0)
    geo = results["geometry"]
    assert geo["available"], geo["reason"]
    assert len(geo["per_frame"]) == 2 and 0.0 < results["chamfer_cm"] < 50.0 and 0.0 < results["p2s_cm"] < 50.0
    # images saved as nerfstudio names them
    assert (renders / "eval_img_0000.png").is_file() and (renders / "eval_accumulation_0009.png").is_file()


def test_ns_eval_does_not_overwrite_an_existing_output(run, tmp_path, monkeypatch):
    from nerfstudio.scripts.eval import ComputePSNR

    output = tmp_path / "eval.json"
    output.write_text("earlier results")
    monkeypatch.setattr(evaluation, "lpips_metric", lambda: pytest.fail("evaluated although the output exists"))
    with pytest.raises(SystemExit) as info:
        ComputePSNR(load_config=run / "config.yml", output_path=output).main()
    assert str(info.value.code) == f"ns-eval: {output} exists; nothing was evaluated. Remove it or choose another " \
                                   "--output-path"
    assert output.read_text() == "earlier results"


def test_novel_pose_images_are_the_protocols_held_out_frames(run, tmp_path):
    protocol = yaml.safe_load((protocol_dir() / "synthetic.yaml").read_text())
    protocol.update(name="synthetic-first-frame", train_frames={"begin": 0, "interval": 1, "count": 1})
    path = tmp_path / "first_frame.yaml"
    path.write_text(yaml.safe_dump(protocol))

    def use_protocol(config):
        config.pipeline.datamanager.dataparser.protocol = str(path)
        return config

    _, pipeline, _, _ = eval_setup(run / "config.yml", test_mode="test", update_config_callback=use_protocol)
    assert evaluation.training_frames(pipeline.datamanager) == {TEST_SUBJECT: {0}}
    meta = pipeline.datamanager.eval_dataset.cameras.metadata["frame_id"].view(-1).tolist()
    picked = [meta.index(0), meta.index(1)]
    results = evaluation.evaluate_views(pipeline, indices=picked)
    assert [(r.frame_id, r.setting) for r in results] == [(0, "novel_view"), (1, "novel_pose")]
    summary = evaluation.summarize(results, evaluation.LPIPSStatus(False, "no weights"))
    assert summary["settings"]["novel_view"]["num_images"] == summary["settings"]["novel_pose"]["num_images"] == 1
    assert summary["per_subject"][TEST_SUBJECT]["novel_pose"]["psnr"] == pytest.approx(results[1].psnr)


def test_training_time_metrics_are_flat_scalars(pipeline):
    results = evaluation.evaluate_views(pipeline, indices=[0, 1])
    flat = evaluation.summarize(results, evaluation.LPIPSStatus(False, "no weights"), detailed=False)
    assert all(isinstance(v, float) for v in flat.values())  # what nerfstudio's writer accepts
    assert flat["novel_view/num_images"] == 2.0 and "novel_pose/psnr" not in flat


class StubLPIPS:
    """Stands in for an available LPIPSMetric (real weights are not downloaded in tests): 0.25, then too small."""

    def __init__(self):
        self.calls = 0

    def __call__(self, pred, gt, mask=None, background=0.0):
        self.calls += 1
        if self.calls > 1:
            raise ValueError("LPIPS-alex needs images of at least 32 px per side")
        return 0.25


def test_lpips_is_averaged_over_the_images_it_could_be_computed_on(pipeline):
    results = evaluation.evaluate_views(pipeline, lpips=StubLPIPS(), indices=[0, 1])
    assert [r.lpips for r in results] == [0.25, None]
    summary = evaluation.summarize(results, evaluation.LPIPSStatus(True))
    assert summary["lpips"] == 0.25 and summary["lpips_status"]["available"]
    assert summary["per_subject"][TEST_SUBJECT]["all"]["lpips"] == 0.25


def test_geometry_reports_why_it_is_unavailable(pipeline):
    no_surface = evaluation.evaluate_geometry(pipeline, resolution=8, threshold=1e9)
    assert not no_surface["available"] and "never crosses the threshold" in no_surface["reason"]
    assert "chamfer_cm" not in no_surface
    disabled = evaluation.evaluate_geometry(pipeline, resolution=0)
    assert not disabled["available"] and "disabled" in disabled["reason"]


def test_marching_cubes_surface_is_closed_and_outward():
    axis = np.linspace(-1.0, 1.0, 33)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    # density 20 * exp(-4 r^2) crosses 10 at r = sqrt(ln 2 / 4) ~ 0.416 m
    grid = geometry.DensityGrid((20.0 * np.exp(-4.0 * (x**2 + y**2 + z**2))).astype(np.float32),
                                np.array([-1.0, -1.0, -1.0]), float(axis[1] - axis[0]))
    mesh = geometry.extract_mesh(grid, threshold=10.0)
    radius = np.sqrt(np.log(2.0) / 4.0)
    assert mesh.is_watertight
    assert np.linalg.norm(mesh.vertices, axis=1) == pytest.approx(radius, abs=0.02)
    assert mesh.volume == pytest.approx(4.0 / 3.0 * np.pi * radius**3, rel=0.05)  # positive: faces wound outwards
    with pytest.raises(geometry.GeometryError, match="never crosses"):
        geometry.extract_mesh(grid, threshold=50.0)
