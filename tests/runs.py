"""Shared tiny gm-nerf runs for the end-to-end tests: one trained run per test session, reused by every tool test.

``tiny_config`` shrinks ``gm-nerf-small`` to a few CPU seconds (48-px images, 8 samples per ray, 16^3 volume);
``shared_run`` trains it once on the tiny built-in-layout fixture (``tests.fixtures_human.make_synthetic_dataset``) and
caches the run directory for the rest of the session, so tests in different modules do not train again.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import trimesh

from gmnerf_ns.training.method_configs import gm_nerf_small
from tests.fixtures_human import AXES, CENTRE, make_synthetic_dataset

TEST_SUBJECT = "subject_002"
"""The held-out subject of the tiny dataset."""


def tiny_config(data: Path, out: Path, steps: int = 3):
    """``gm-nerf-small`` reduced to a few seconds per step on 48-px images."""
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
    # ns-eval's geometry metrics: a coarse grid, and an iso-level just above 0 so that a 3-step model still has a
    # surface (the density is positive everywhere inside the proxy occupancy, 0 outside).
    config.pipeline.geometry_resolution = 16
    config.pipeline.geometry_threshold = 1e-3
    return config


def make_tiny_data(data: Path) -> Path:
    """The tiny dataset (3 subjects, 2 frames, held-out subject_002) with real ground-truth meshes.

    The fixture writes empty ``meshes/<frame>.ply``; the geometry metrics need a surface, so each frame gets the
    ellipsoid the fixture's proxy points lie on.
    """
    subjects = make_synthetic_dataset(data, subjects=(0, 1, 2), test=(2,), num_frames=2, num_vertices=600)
    for subject in subjects.values():
        for f in range(len(subject.frame_numbers)):
            sphere = trimesh.creation.icosphere(subdivisions=3)
            vertices = sphere.vertices * AXES + CENTRE + np.array([0.02 * f, 0.0, 0.0])
            trimesh.Trimesh(vertices, sphere.faces).export(subject.folder / "meshes" / f"{f}.ply")
    return data


def train_tiny_run(root: Path, steps: int = 3) -> Path:
    """Trains the tiny config in-process and returns its run directory (holding config.yml and a checkpoint)."""
    from nerfstudio.scripts.train import train_loop

    data = make_tiny_data(root / "data")
    config = tiny_config(data, root / "outputs", steps=steps)
    config.set_timestamp()
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    return config.get_base_dir()


_CACHE: Dict[str, Any] = {}


def shared_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's trained tiny run directory (trained on first use)."""
    if "run" not in _CACHE:
        _CACHE["run"] = train_tiny_run(tmp_path_factory.mktemp("shared_run"))
    return _CACHE["run"]


def shared_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """The shared run loaded as ns-eval loads it (``eval_setup``, test split); tests must not leave it modified."""
    if "pipeline" not in _CACHE:
        from nerfstudio.utils.eval_utils import eval_setup

        _, _CACHE["pipeline"], _, _ = eval_setup(shared_run(tmp_path_factory) / "config.yml", test_mode="test")
    return _CACHE["pipeline"]


def shared_eval(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with ``eval.json`` and ``renders/`` of ns-eval (``ComputePSNR``) on the shared run (run once)."""
    if "eval" not in _CACHE:
        from nerfstudio.scripts.eval import ComputePSNR

        out = tmp_path_factory.mktemp("shared_eval")
        ComputePSNR(load_config=shared_run(tmp_path_factory) / "config.yml", output_path=out / "eval.json",
                    render_output_path=out / "renders").main()
        _CACHE["eval"] = out
    return _CACHE["eval"]
