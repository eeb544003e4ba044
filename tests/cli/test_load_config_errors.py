"""What the gm-nerf tools do with a wrong --load-config: a missing file or another method's run is one line."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from gmnerf_ns.cli import render
from gmnerf_ns.cli.export_mesh import ExportMesh
from gmnerf_ns.cli.report import Report


@pytest.fixture
def nerfacto_config(tmp_path) -> Path:
    """The config.yml nerfstudio writes for a nerfacto run (never trained: the tools must stop before its data)."""
    from nerfstudio.configs.method_configs import method_configs

    config = copy.deepcopy(method_configs["nerfacto"])
    config.pipeline.datamanager.data = tmp_path / "scene"  # no transforms.json: nerfacto's parser would fail there
    config.output_dir = tmp_path / "outputs"
    path = tmp_path / "outputs" / "scene" / "nerfacto" / "run" / "config.yml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.dump(config))
    return path


def tools(config: Path, out: Path):
    """(name, command) of every gm-nerf tool that loads a run, pointed at ``config``."""
    return [
        ("gmnerf-render", render.GMNeRFOrbitRender(load_config=config, output_path=out / "orbit",
                                                   output_format="images")),
        ("gmnerf-render", render.GMNeRFDatasetRender(load_config=config, output_path=out / "renders")),
        ("gmnerf-export-mesh", ExportMesh(load_config=config, output_path=out / "mesh.ply")),
        ("gmnerf-report", Report(load_config=config, output_dir=out / "report")),
    ]


def test_a_run_of_another_method_is_one_line(nerfacto_config, tmp_path):
    for name, command in tools(nerfacto_config, tmp_path / "out"):
        with pytest.raises(SystemExit) as info:
            command.main()
        message = str(info.value.code)
        assert message == f"{name}: {nerfacto_config} is not a gm-nerf run (method nerfacto); pass the config.yml of " \
                          "a gm-nerf run", message
    assert not (tmp_path / "out").exists()


def test_a_missing_config_is_one_line(tmp_path):
    missing = tmp_path / "nope" / "config.yml"
    for name, command in tools(missing, tmp_path / "out"):
        with pytest.raises(SystemExit, match=f"^{name}: {missing} not found; pass --load-config"):
            command.main()


def test_a_file_that_is_not_a_config_is_one_line(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("{unbalanced: [")
    with pytest.raises(SystemExit, match=r"is not a readable nerfstudio config\.yml"):
        ExportMesh(load_config=path, output_path=tmp_path / "mesh.ply").main()
