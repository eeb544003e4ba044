"""Every numeric option is range-checked when ns-train finalises the config: one ``gmnerf error:`` line naming the
option as spelled on the command line and its range, before any data is read or any run folder is written."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.datasets_zju import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]
NS_TRAIN = Path(sys.executable).with_name("ns-train")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("options") / "data"
    make_synthetic_dataset(root, subjects=(0, 1, 2), test=(2,), num_frames=1, num_vertices=300)
    return root


def small_config():
    from gmnerf_ns.training.method_configs import gm_nerf_small

    return copy.deepcopy(gm_nerf_small.config)


def test_the_methods_defaults_are_valid():
    from gmnerf_ns.training.method_configs import gm_nerf, gm_nerf_finetune, gm_nerf_small

    for spec in (gm_nerf, gm_nerf_small, gm_nerf_finetune):
        spec.config.validate()


@pytest.mark.parametrize(
    "where, value, message",
    [
        ("pipeline.model.num_samples", 0, "--pipeline.model.num-samples 0: must be an integer >= 1"),
        ("pipeline.model.grad_ray_fraction", 0.0, "--pipeline.model.grad-ray-fraction 0.0: must be a number in (0, 1]"),
        ("pipeline.model.registration_window", 2, "--pipeline.model.registration-window 2: must be odd"),
        ("pipeline.model.volume_channels", (32, 12), "--pipeline.model.volume-channels 32 12: must be one or more"),
        ("pipeline.model.encoder.channels", 12, "--pipeline.model.encoder.channels 12: must be 1, 2, 4 or a multiple"),
        ("pipeline.model.mask_loss_mult", float("nan"), "--pipeline.model.mask-loss-mult nan: must be a number >= 0"),
        ("pipeline.datamanager.patch_size", -64, "--pipeline.datamanager.patch-size -64: must be an integer >= 16"),
        ("pipeline.datamanager.train_num_source_views", (5, 3),
         "--pipeline.datamanager.train-num-source-views 5 3: must be two integers LOW HIGH with 1 <= LOW <= HIGH"),
        ("pipeline.datamanager.train_num_source_views", (0, 3), "train-num-source-views 0 3: must be two integers"),
        ("pipeline.datamanager.proxy_jitter", -0.1, "--pipeline.datamanager.proxy-jitter -0.1: must be a number >= 0"),
        ("pipeline.datamanager.foreground_patch_probability", 1.5, "foreground-patch-probability 1.5: must be a number "
                                                                   "in [0, 1]"),
        ("pipeline.datamanager.view_cache_size", -1, "--pipeline.datamanager.view-cache-size -1: must be an integer"),
        ("pipeline.datamanager.num_workers", -2, "--pipeline.datamanager.num-workers -2: must be an integer >= 0"),
        ("pipeline.datamanager.prefetch_batches", 0, "--pipeline.datamanager.prefetch-batches 0: must be an integer"),
        ("pipeline.datamanager.dataparser.resolution", 0, "--resolution 0: must be an integer >= 16"),
        ("pipeline.datamanager.dataparser.num_input_views", 0, "--num-input-views 0: must be an integer >= 1"),
        ("pipeline.geometry_resolution", -1, "--pipeline.geometry-resolution -1: must be an integer >= 0"),
        ("keep_checkpoints", 0, "--keep-checkpoints 0: must be an integer >= 1"),
        ("steps_per_save", 0, "--steps-per-save 0: must be an integer >= 1"),
        ("machine.num_devices", 0, "--machine.num-devices 0: must be an integer >= 1"),
        ("optimizers.fields.optimizer.lr", -1e-3, "--optimizers.fields.optimizer.lr -0.001: must be a number > 0"),
        ("optimizers.renderer.scheduler.lr_final", 0.0, "--optimizers.renderer.scheduler.lr-final 0.0: must be a "
                                                        "number > 0"),
    ],
)
def test_an_option_out_of_range_names_the_option_and_its_range(where, value, message):
    from gmnerf_ns.core.options import OptionError

    config = small_config()
    *path, name = where.split(".")
    target = config
    for part in path:
        target = target[part] if isinstance(target, dict) else getattr(target, part)
    setattr(target, name, value)
    with pytest.raises(OptionError) as info:
        config.validate()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_every_bad_option_is_reported_at_once():
    from gmnerf_ns.core.options import OptionError

    config = small_config()
    config.pipeline.model.num_samples = 0
    config.pipeline.datamanager.patch_size = 8
    with pytest.raises(OptionError, match="patch-size 8: .*; --pipeline.model.num-samples 0: "):
        config.validate()


@pytest.mark.parametrize("option, value", [("--pipeline.model.num-samples", "0"),
                                           ("--pipeline.datamanager.patch-size", "-64")])
def test_ns_train_reports_a_bad_option_in_one_line_before_reading_data(data, tmp_path, option, value):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(NS_TRAIN), "gm-nerf-small", "--data", str(data), "--vis", "tensorboard", option, value],
                          check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if line.startswith("gmnerf error:")]
    assert proc.returncode != 0 and "Traceback" not in output, output[-3000:]
    assert len(errors) == 1 and f"{option} {value}: must be an integer >= " in errors[0], output[-3000:]
    assert "dataparser (its own options" not in output  # the dataset was never opened
    assert not (tmp_path / "outputs").exists()  # and no run folder was written
