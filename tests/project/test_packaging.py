"""The package accepts the torch a GPU user already has: ``pyproject.toml`` asks for a tested range, not one build."""

from __future__ import annotations

from pathlib import Path

import tomllib
import torch
import torchvision
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def requirements() -> dict:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {r.name: r for r in map(Requirement, project["dependencies"])}


def test_torch_is_a_range_holding_the_tested_versions():
    reqs = requirements()
    for name, installed, tested in (("torch", torch.__version__, ["2.11.0", "2.12.1", "2.14.1"]),
                                    ("torchvision", torchvision.__version__, ["0.26.0", "0.29.1"])):
        spec = reqs[name].specifier
        assert not any(s.operator == "==" for s in spec), f"{name} is pinned to one version: {spec}"
        assert spec.contains(installed.split("+")[0]), (name, installed, spec)
        assert all(spec.contains(v) for v in tested), (name, spec)
        assert not spec.contains("3.0.0"), f"{name}: an untested major version is accepted: {spec}"
