"""A config.yml is data: every tool that reads one accepts only the config classes, paths and plain values a nerfstudio
run writes, and refuses any other python tag with one line naming the file and the tag, before it can run code
(patch 1 of :mod:`gmnerf_ns.training.nerfstudio_patches`). ``ns-viewer`` listens on loopback unless asked (patch 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gmnerf_ns.core.errors import CleanExit, UnsafeConfigError
from gmnerf_ns.training.nerfstudio_patches import install_yaml_guard

BIN = Path(sys.executable).parent


def payload(folder: Path, marker: Path, tag: str = "!!python/object/apply:os.system") -> Path:
    """A config.yml whose loading, unguarded, creates ``marker``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yml"
    path.write_text(f"method_name: gm-nerf-small\nexperiment: {tag} ['touch {marker}']\n")
    return path


def test_every_registered_method_config_still_round_trips():
    from nerfstudio.configs.method_configs import all_methods

    install_yaml_guard()
    for name, config in all_methods.items():
        if type(config).__name__ == "ExternalMethodDummyTrainerConfig":
            continue  # the placeholder of a method that is not installed: no run writes it
        text = yaml.dump(config)
        assert yaml.dump(yaml.load(text, Loader=yaml.Loader)) == text, name


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system",
    "!!python/object/apply:subprocess.check_output",
    "!!python/object/new:subprocess.Popen",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object/apply:builtins.eval",
    "!!python/object/apply:gmnerf_ns.model.encoder.ImageEncoder",  # a gmnerf_ns class that is not a config
    "!!python/object:gmnerf_ns.model.encoder.ImageEncoder",
    "!!python/name:torch.load",
])
@pytest.mark.parametrize("loader", [yaml.Loader, yaml.UnsafeLoader, yaml.FullLoader])
def test_tags_that_would_run_code_are_refused_naming_file_and_tag(tmp_path, tag, loader):
    install_yaml_guard()
    marker = tmp_path / "ran"
    path = payload(tmp_path / "run", marker, tag)

    def eval_setup(config_path: Path):  # as nerfstudio's eval_setup reads it
        return yaml.load(config_path.read_text(), Loader=loader)

    with pytest.raises(CleanExit) as caught:
        eval_setup(path)
    assert isinstance(caught.value.error, UnsafeConfigError)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"gmnerf error: {path}: refuses {tag}") and "(line 2)" in message
    assert not marker.exists()


def test_plain_values_paths_and_enums_still_load():
    install_yaml_guard()
    from nerfstudio.utils.writer import EventName

    text = ("a: !!python/object/apply:pathlib.PosixPath ['x', 'y']\nb: !!python/tuple [1, 2]\n"
            "c: !!python/object/apply:nerfstudio.utils.writer.EventName ['Train Iter (time)']\n"
            "d: !!python/name:torch.optim.adam.Adam ''\n")
    value = yaml.load(text, Loader=yaml.Loader)
    assert value["a"] == Path("x/y") and value["b"] == (1, 2) and value["c"] is EventName.ITER_TRAIN_TIME
    assert value["d"].__name__ == "Adam"


TOOLS = {
    "ns-eval": ["ns-eval", "--load-config", "{config}", "--output-path", "{out}/metrics.json"],
    "ns-render": ["ns-render", "dataset", "--load-config", "{config}", "--output-path", "{out}/renders"],
    "ns-viewer": ["ns-viewer", "--load-config", "{config}"],
    "ns-train": ["ns-train", "gm-nerf-small", "--load-config", "{config}", "--output-dir", "{out}/outputs"],
    "gmnerf-render": ["gmnerf-render", "orbit", "--load-config", "{config}", "--output-path", "{out}/orbit.mp4"],
    "gmnerf-report": ["gmnerf-report", "--load-config", "{config}", "--output-dir", "{out}/report"],
    "gmnerf-export-mesh": ["gmnerf-export-mesh", "--load-config", "{config}", "--output-path", "{out}/mesh.ply"],
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_each_tool_refuses_a_config_that_would_run_code(tmp_path, tool):
    marker = tmp_path / "ran"
    config = payload(tmp_path / "shared_run", marker)
    command = [str(BIN / TOOLS[tool][0])] + [a.format(config=config, out=tmp_path) for a in TOOLS[tool][1:]]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode != 0
    assert not marker.exists(), f"{tool} ran the payload"
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    last = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()][-1]
    assert str(config) in last and "refuses !!python/object/apply:os.system (line 2)" in last, last


VIEWER_HOST = r'''
import sys, tyro
import nerfstudio.scripts.viewer.run_viewer as run_viewer
args = ["--load-config", "x.yml", *sys.argv[1:]]
print(tyro.cli(tyro.conf.FlagConversionOff[run_viewer.RunViewer], args=args).viewer.websocket_host)
'''


@pytest.mark.parametrize("argv, host", [([], "127.0.0.1"), (["--viewer.websocket-host", "0.0.0.0"], "0.0.0.0")])
def test_ns_viewer_listens_on_loopback_unless_exposed_on_purpose(argv, host):
    done = subprocess.run([sys.executable, "-c", VIEWER_HOST, *argv], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == host
