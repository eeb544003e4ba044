"""nerfstudio silently skips malformed entry points: assert that every method and dataparser really registers."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from nerfstudio.plugins.registry import discover_methods
from nerfstudio.plugins.registry_dataparser import discover_dataparsers

METHODS = ["gm-nerf", "gm-nerf-small", "gm-nerf-finetune"]
DATAPARSERS = ["gmnerf-auto", "gmnerf-synthetic", "zju-mocap", "genebody", "thuman2", "multi-garment"]


def test_methods_registered():
    methods, descriptions = discover_methods()
    for name in METHODS:
        assert name in methods, f"{name} missing from nerfstudio's method registry"
        assert methods[name].method_name == name  # nerfstudio keys methods by config.method_name
        assert descriptions[name]


def test_dataparsers_registered():
    dataparsers, _ = discover_dataparsers()
    for name in DATAPARSERS:
        assert name in dataparsers, f"{name} missing from nerfstudio's dataparser registry"


def test_dataparsers_install_under_plugin_namespace(tmp_path):
    assert importlib.import_module("gmnerf_ns.data.parsers.zju_mocap").__name__ == "gmnerf_ns.data.parsers.zju_mocap"
    # outside the repository (where the folder itself is on sys.path) no top-level `dataparsers` may be importable
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('dataparsers') is None else 1)"
    assert subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, check=False).returncode == 0


@pytest.mark.slow
def test_ns_train_help_lists_gm_nerf_and_its_options():
    out = subprocess.run([sys.executable, "-m", "nerfstudio.scripts.train", "--help"], capture_output=True, text=True,
                         timeout=300, check=False)
    assert "gm-nerf" in out.stdout
    out = subprocess.run([sys.executable, "-m", "nerfstudio.scripts.train", "gm-nerf-small", "--help"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "grad-ray-fraction" in out.stdout and "patch-size" in out.stdout
