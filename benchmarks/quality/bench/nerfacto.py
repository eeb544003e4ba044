"""Per-subject nerfacto baseline: one held-out subject-frame's input views as a nerfstudio ``transforms.json`` scene,
and nerfacto's config for it (what differs from nerfstudio's nerfacto and why: benchmarks/quality/README.md)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from gmnerf_ns.geometry.camera_math import opencv_w2c_to_nerfstudio_c2w


def write_transforms_dataset(sources, folder: Path) -> Dict[str, object]:
    """Writes ``folder/transforms.json``, ``images/``, ``masks/`` and ``normalization.json`` from ``SourceViews``.

    Returns the normalization: ``{"center": [3], "scale": float, "near": float, "far": float}`` (near/far in
    normalized units, from the camera distances to the box).
    """
    import imageio.v2 as imageio

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    bbox = sources.bbox.double().numpy()
    center = 0.5 * (bbox[0] + bbox[1])
    scale = 1.0 / float(0.5 * (bbox[1] - bbox[0]).max())
    height, width = sources.image_size
    frames, distances = [], []
    for k in range(sources.num_views):
        image = (sources.images[k] * sources.masks[k]).permute(1, 2, 0).clamp(0, 1).numpy()
        mask = sources.masks[k, 0].numpy() > 0.5
        imageio.imwrite(folder / "images" / f"view_{k:02d}.png", (image * 255).round().astype(np.uint8))
        imageio.imwrite(folder / "masks" / f"view_{k:02d}.png", mask.astype(np.uint8) * 255)
        c2w = np.eye(4)
        c2w[:3] = opencv_w2c_to_nerfstudio_c2w(sources.rotations[k].double().numpy(),
                                               sources.translations[k].double().numpy())
        c2w[:3, 3] = (c2w[:3, 3] - center) * scale
        distances.append(float(np.linalg.norm(c2w[:3, 3])))
        K = sources.intrinsics[k].double().numpy()
        frames.append({
            "file_path": f"images/view_{k:02d}.png",
            "transform_matrix": c2w.tolist(),
            "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
            "w": int(width), "h": int(height),
            "source_camera_index": int(sources.camera_indices[k]) if sources.camera_indices else k,
        })
    transforms = {"camera_model": "OPENCV", "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(transforms, indent=1))
    corner = math.sqrt(3.0)  # the scene box's half-diagonal
    norm = {"center": center.tolist(), "scale": scale, "near": max(0.05, min(distances) - corner),
            "far": max(distances) + corner, "subject_index": int(sources.subject_index), "frame_id": int(sources.frame_id)}
    (folder / "normalization.json").write_text(json.dumps(norm, indent=1))
    return norm


def normalize_camera(camera, norm: Dict[str, object]):
    """A metadata-free copy of a nerfstudio camera (world metres) in the normalized frame of the nerfacto scene."""
    from nerfstudio.cameras.cameras import Cameras

    c2w = camera.camera_to_worlds.clone().double()
    center = torch.tensor(norm["center"], dtype=torch.float64)
    c2w[..., :3, 3] = (c2w[..., :3, 3] - center) * float(norm["scale"])
    return Cameras(camera_to_worlds=c2w.float(), fx=camera.fx.clone(), fy=camera.fy.clone(), cx=camera.cx.clone(),
                   cy=camera.cy.clone(), width=camera.width.clone(), height=camera.height.clone(),
                   camera_type=camera.camera_type.clone())


def nerfacto_config(data: Path, norm: Dict[str, object], rays_per_batch: int, output_dir: Path,
                    eval_chunk: int = 1 << 13):
    """nerfstudio's ``nerfacto`` TrainerConfig adapted to a CPU, a 4-view masked scene and a known box."""
    from nerfstudio.configs.method_configs import method_configs
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    config = copy.deepcopy(method_configs["nerfacto"])
    config.output_dir = output_dir
    config.mixed_precision = False
    config.machine.device_type = "cpu"
    parent = config.pipeline.datamanager
    config.pipeline.datamanager = VanillaDataManagerConfig(
        dataparser=NerfstudioDataParserConfig(
            data=data, orientation_method="none", center_method="none", auto_scale_poses=False, scale_factor=1.0,
            scene_scale=1.0, eval_mode="all", load_3D_points=False,
        ),
        train_num_rays_per_batch=rays_per_batch,
        eval_num_rays_per_batch=rays_per_batch,
        camera_res_scale_factor=parent.camera_res_scale_factor,
    )
    config.pipeline.datamanager.data = data
    model = config.pipeline.model
    model.background_color = "black"
    model.disable_scene_contraction = True
    model.near_plane = float(norm["near"])
    model.far_plane = float(norm["far"])
    model.camera_optimizer.mode = "off"
    model.eval_num_rays_per_chunk = eval_chunk
    config.optimizers = {k: v for k, v in config.optimizers.items() if k != "camera_opt"}
    return config

