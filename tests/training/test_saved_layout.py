"""Runs saved before the package was split into layers keep loading: their config.yml names classes of the 0.1.0
module layout (``gmnerf_ns.pipeline.GMNeRFPipelineConfig``, ``gmnerf_ns.dataparsers.auto.AutoDataParserConfig``, ...),
which the YAML guard reads from their new modules (``MOVED_MODULES`` of :mod:`gmnerf_ns.training.nerfstudio_patches`).

``tests/fixtures/data/config_v0_1/`` holds config.yml files written by that layout: a tiny finished ``gm-nerf-small``
run (``run/config.yml``, relative paths ``data`` and ``outputs``), the ``gm-nerf`` and ``gm-nerf-finetune`` method
configs, and every registered dataparser config (``dataparsers.yml``).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from gmnerf_ns.core.errors import IncompatibleConfigError
from gmnerf_ns.data.parsers.auto import AutoDataParserConfig
from gmnerf_ns.training import dataparser_configs, method_configs
from gmnerf_ns.training.nerfstudio_patches import MOVED_MODULES, install_yaml_guard, moved_name
from gmnerf_ns.training.pipeline import GMNeRFPipelineConfig
from gmnerf_ns.training.schedulers import FloatExponentialDecayScheduler
from gmnerf_ns.training.trainer import GMNeRFTrainerConfig
from tests.fixtures.shared_run import shared_run

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "config_v0_1"


def renamed(text: str) -> str:
    """``text`` with every gmnerf_ns name of the old layout replaced by where it lives now."""
    return re.sub(r"gmnerf_ns(?:\.\w+)+", lambda m: moved_name(m.group(0)), text)


def load(text: str):
    install_yaml_guard()
    return yaml.load(text, Loader=yaml.Loader)  # as nerfstudio's eval_setup and ns-train --load-config read it


def test_the_fixtures_name_the_old_layout():
    text = (OLD / "run" / "config.yml").read_text()
    for old in ("gmnerf_ns.trainer.GMNeRFTrainerConfig", "gmnerf_ns.pipeline.GMNeRFPipelineConfig",
                "gmnerf_ns.dataparsers.auto.AutoDataParserConfig",
                "!!python/name:gmnerf_ns.schedulers.FloatExponentialDecayScheduler"):
        assert old in text
    assert renamed(text) != text and "gmnerf_ns.training.pipeline.GMNeRFPipelineConfig" in renamed(text)


def module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its package is gone too
        return False


def test_every_moved_module_is_gone_and_its_new_module_exists():
    for old, new in MOVED_MODULES.items():
        assert not module_exists(old), old
        assert module_exists(new), new
    unmoved = "gmnerf_ns.model.gmnerf_model.GMNeRFModelConfig"
    assert moved_name(unmoved) == unmoved
    assert moved_name("gmnerf_ns.dataparsers.zju_mocap.ZJUMocapDataParserConfig") == \
        "gmnerf_ns.data.parsers.zju_mocap.ZJUMocapDataParserConfig"
    assert moved_name("gmnerf_ns.data.human_dataparser.HumanDataParser") == "gmnerf_ns.data.parsers.base.HumanDataParser"


def test_a_config_naming_the_parser_base_at_its_old_path_loads():
    """The parser base moved from gmnerf_ns/data/human_dataparser.py to the parsers it is the base of; saved runs name
    it (as the auto dataparser's ``_target``) and keep loading."""
    from gmnerf_ns.data.parsers.base import HumanDataParser

    text = (OLD / "run" / "config.yml").read_text()
    assert "!!python/name:gmnerf_ns.data.human_dataparser.HumanDataParser" in text
    config = load(text)
    assert config.pipeline.datamanager.dataparser._target is HumanDataParser


@pytest.mark.parametrize("method", ["gm_nerf", "gm_nerf_finetune"])
def test_an_old_method_config_loads_as_todays_config(method):
    spec = getattr(method_configs, method)
    text = (OLD / f"{spec.config.method_name}.yml").read_text()
    config = load(text)
    assert type(config) is GMNeRFTrainerConfig and type(config.pipeline) is GMNeRFPipelineConfig
    assert type(config.pipeline.datamanager.dataparser) is AutoDataParserConfig
    assert all(o["scheduler"]._target is FloatExponentialDecayScheduler for o in config.optimizers.values())
    assert yaml.dump(config) == renamed(text) == yaml.dump(spec.config)


def test_every_old_dataparser_config_loads_as_todays_config():
    text = (OLD / "dataparsers.yml").read_text()
    parsers = load(text)
    assert yaml.dump(parsers) == renamed(text)
    for name, config in parsers.items():
        assert type(config) is type(getattr(dataparser_configs, name).config), name
        assert config._target.__module__.startswith("gmnerf_ns.data."), name


def test_an_old_finished_run_loads_with_eval_setup(tmp_path_factory, monkeypatch):
    from nerfstudio.utils.eval_utils import eval_setup

    from gmnerf_ns.training.pipeline import GMNeRFPipeline

    run = shared_run(tmp_path_factory)  # <root>/outputs/tiny/gm-nerf-small/<timestamp>, trained with <root>/data
    root = run.parents[3]
    text = (OLD / "run" / "config.yml").read_text()
    assert "\ntimestamp: run\n" in text
    old = root / "old_config.yml"
    old.write_text(text.replace("\ntimestamp: run\n", f"\ntimestamp: {run.name}\n"))
    monkeypatch.chdir(root)  # the old config's paths are relative: data, outputs
    install_yaml_guard()
    config, pipeline, _, step = eval_setup(Path("old_config.yml"), test_mode="test")
    assert type(config) is GMNeRFTrainerConfig and isinstance(pipeline, GMNeRFPipeline)
    assert type(pipeline).__module__ == "gmnerf_ns.training.pipeline"
    assert step == 2  # the tiny run's last checkpoint
    camera, batch = pipeline.datamanager.eval_image(0)
    assert pipeline.model.get_outputs_for_camera(camera)["rgb"].shape == batch["image"].shape


@pytest.mark.parametrize("name", ["gmnerf_ns.pipeline.OldPipelineConfig", "gmnerf_ns.gone.GMNeRFPipelineConfig"])
def test_an_old_name_that_matches_nothing_is_one_error_naming_it(name):
    text = (OLD / "run" / "config.yml").read_text().replace("gmnerf_ns.pipeline.GMNeRFPipelineConfig", name)
    with pytest.raises(IncompatibleConfigError) as caught:
        load(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"this config.yml was written by another gmnerf-ns version: it refers to {name} (line ")
