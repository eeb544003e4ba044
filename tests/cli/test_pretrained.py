"""The shipped pretrained gm-nerf-small and ``gmnerf-pretrained``: a run folder every nerfstudio tool accepts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gmnerf_ns.cli.pretrained import (
    PretrainedRun,
    default_weights,
    entrypoint,
    export_weights,
    read_weights,
    write_run,
)
from gmnerf_ns.core.checkpoints import CheckpointError, list_checkpoints, model_weights, read_checkpoint
from tests.fixtures.shared_run import shared_run


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The shared tiny run exported the way the shipped weights are."""
    run = shared_run(tmp_path_factory)
    return export_weights(run / "config.yml", tmp_path_factory.mktemp("weights"), {"recipe": "test"})


def test_shipped_weights_are_small_fp16_and_documented():
    path = default_weights()
    assert path.is_file(), "the package must ship gm-nerf-small weights (scripts/train_pretrained.py)"
    assert path.stat().st_size <= 10 * 2**20
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["method_name"] == "gm-nerf-small"
    assert all(v.dtype == torch.float16 for v in raw["weights"].values() if v.is_floating_point())
    card = json.loads(path.with_suffix(".json").read_text())
    for key in ("recipe", "command", "world", "train", "train_seconds", "step", "sha256"):
        assert card.get(key) is not None, key


def test_shipped_weights_fit_gm_nerf_small(tmp_path_factory):
    """Same tensor names and shapes as a gm-nerf-small model of this version (the tiny test run has its shapes)."""
    run = shared_run(tmp_path_factory)
    _, checkpoint = list_checkpoints(run / "nerfstudio_models")[-1]
    ours = model_weights(read_checkpoint(checkpoint))
    shipped = read_weights(default_weights())["weights"]
    assert shipped.keys() == ours.keys()
    assert all(shipped[k].shape == ours[k].shape for k in ours)
    assert all(v.dtype == torch.float32 for v in shipped.values() if v.is_floating_point())


def test_export_keeps_every_model_tensor_in_fp16(exported, tmp_path_factory):
    run = shared_run(tmp_path_factory)
    _, checkpoint = list_checkpoints(run / "nerfstudio_models")[-1]
    original = model_weights(read_checkpoint(checkpoint))
    shipped = read_weights(exported)["weights"]
    assert shipped.keys() == original.keys()
    for key, value in original.items():
        torch.testing.assert_close(shipped[key], value.half().float() if value.is_floating_point() else value)
    card = json.loads(exported.with_suffix(".json").read_text())
    assert card["recipe"] == "test" and card["tensors"] == len(original) and card["bytes"] == exported.stat().st_size


def test_pretrained_run_works_with_ns_eval_and_renders(exported, tmp_path_factory, tmp_path):
    from nerfstudio.utils.eval_utils import eval_setup

    data = shared_run(tmp_path_factory).parent.parent.parent.parent / "data"
    config_path = write_run(PretrainedRun(data=data, output_dir=tmp_path / "out", weights=exported, resolution=48))
    assert config_path.name == "config.yml" and config_path.is_file()
    config, pipeline, checkpoint, _ = eval_setup(config_path, test_mode="test")
    weights = read_weights(exported)["weights"]
    for key, value in pipeline.model.state_dict().items():
        torch.testing.assert_close(value, weights[key])
    camera, batch = pipeline.datamanager.eval_image(0)
    with torch.no_grad():
        rgb = pipeline.model.get_outputs_for_camera(camera)["rgb"]
    assert rgb.shape == batch["image"].shape and torch.isfinite(rgb).all()
    # Fine-tuning starts from it like from any gm-nerf checkpoint.
    read_checkpoint(checkpoint)


def test_cli_prints_the_config_path_last_and_refuses_to_overwrite(exported, tmp_path_factory, tmp_path):
    data = shared_run(tmp_path_factory).parent.parent.parent.parent / "data"
    command = [sys.executable, "-m", "gmnerf_ns.cli.pretrained", "--data", str(data), "--output-dir", str(tmp_path),
               "--weights", str(exported), "--resolution", "48"]
    first = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    config_path = Path(first.stdout.strip().splitlines()[-1])
    assert config_path.is_file() and list_checkpoints(config_path.parent / "nerfstudio_models")
    again = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "already holds a run" in again.stderr
    assert "Traceback" not in again.stderr


def test_wrong_weights_file_is_one_error(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"something": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="not a gm-nerf pretrained weights file"):
        read_weights(bad)
    with pytest.raises(CheckpointError, match="not found"):
        read_weights(tmp_path / "missing.pt")


def test_a_file_that_is_not_gm_nerf_weights_is_one_line(tmp_path, monkeypatch, capsys):
    objects = tmp_path / "objects.pt"
    torch.save({"format": 1, "weights": {"a": np.zeros(3)}}, objects)  # refused by weights_only (never unpickled)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a weights file at all")
    for path in (objects, garbage):
        with pytest.raises(CheckpointError, match=rf"^{path} is not a gm-nerf pretrained weights file: it holds "
                                                  "something other than tensors and numbers") as info:
            read_weights(path)
        assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    truncated = tmp_path / "truncated.pt"
    torch.save({"format": 1, "weights": {"a": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=rf"^{truncated}: unreadable or truncated pretrained weights") as info:
        read_weights(truncated)
    assert "\n" not in str(info.value)

    monkeypatch.setattr(sys, "argv", ["gmnerf-pretrained", "--data", str(tmp_path), "--weights", str(objects)])
    with pytest.raises(SystemExit) as exit_info:
        entrypoint()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith(f"gmnerf-pretrained: {objects} is not a gm-nerf pretrained weights file")


def test_a_device_this_machine_lacks_is_one_line(tmp_path_factory, tmp_path, monkeypatch, capsys):
    data = shared_run(tmp_path_factory).parent.parent.parent.parent / "data"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    for device, message in (("cuda", r"--device cuda: CUDA is not available on this machine \(.*\); pass --device cpu"),
                            ("bogus", r"--device bogus: not a device; pass cpu, cuda, cuda:N \(the N-th GPU\) or mps")):
        monkeypatch.setattr(sys, "argv", ["gmnerf-pretrained", "--data", str(data), "--output-dir", str(out),
                                          "--resolution", "48", "--device", device])
        with pytest.raises(SystemExit) as info:
            entrypoint()
        assert info.value.code == 1
        err = capsys.readouterr().err
        assert re.fullmatch(f"gmnerf-pretrained: {message}\n", err), err
    assert not out.exists()


def test_gm_nerf_weights_build_a_gm_nerf_run(tmp_path_factory, tmp_path, monkeypatch):
    """A weights file names its method: gm-nerf weights give a gm-nerf run (its encoder, volume and 512-px default),
    loaded tensor for tensor."""
    from nerfstudio.data.scene_box import SceneBox
    from nerfstudio.utils.eval_utils import eval_setup

    from gmnerf_ns.training.method_configs import gm_nerf

    monkeypatch.setenv("GMNERF_OFFLINE", "1")  # ResNet-18 from scratch: no download here
    model = gm_nerf.config.pipeline.model.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])),
                                                num_train_data=1, metadata={})
    generator = torch.Generator().manual_seed(0)
    weights = {k: torch.randn(v.shape, generator=generator).half() if v.is_floating_point() else v
               for k, v in model.state_dict().items()}
    path = tmp_path / "gm-nerf.pt"
    torch.save({"format": 1, "method_name": "gm-nerf", "step": 123, "weights": weights}, path)
    assert read_weights(path)["method_name"] == "gm-nerf"

    data = shared_run(tmp_path_factory).parent.parent.parent.parent / "data"
    config_path = write_run(PretrainedRun(data=data, output_dir=tmp_path / "out", weights=path, resolution=48,
                                          method="gm-nerf-small"))  # --method is for the shipped files only
    assert config_path.parent.parent.name == "gm-nerf"
    config, pipeline, checkpoint, step = eval_setup(config_path, test_mode="test")
    assert config.method_name == "gm-nerf" and step == 123
    assert pipeline.model.config.encoder.backbone == "resnet18"
    for key, value in pipeline.model.state_dict().items():
        torch.testing.assert_close(value, weights[key].float() if weights[key].is_floating_point() else weights[key])
    assert read_checkpoint(checkpoint)["gmnerf"]["method_name"] == "gm-nerf"


def test_a_method_whose_weights_do_not_ship_is_one_line(tmp_path, monkeypatch, capsys):
    import gmnerf_ns.cli.pretrained as pretrained

    monkeypatch.setattr(pretrained, "default_weights", lambda method="gm-nerf-small": tmp_path / f"{method}.pt")
    monkeypatch.setattr(sys, "argv", ["gmnerf-pretrained", "--data", str(tmp_path), "--method", "gm-nerf"])
    with pytest.raises(SystemExit) as info:
        entrypoint()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("gmnerf-pretrained: no pretrained gm-nerf ships with this version") and err.count("\n") == 1
    assert "--method gm-nerf-small" in err

    other = tmp_path / "other.pt"
    torch.save({"format": 1, "method_name": "nerfacto", "step": 1, "weights": {}}, other)
    with pytest.raises(CheckpointError, match="weights of method 'nerfacto'"):
        read_weights(other)
