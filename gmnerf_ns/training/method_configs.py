"""GM-NeRF method registrations (entry points ``nerfstudio.method_configs``).

* ``gm-nerf``: paper scale, for a GPU (ResNet-18 encoder, 64 samples, 256-px patches of 512-px images).
* ``gm-nerf-small``: fits 2 CPU cores; trains on the built-in data in minutes (256-px images, 64-px patches).
* ``gm-nerf-finetune``: per-subject fine-tuning from a cross-subject checkpoint (the paper's "Ft" rows).

The specifications are reached by name (``gm_nerf``, ``gm_nerf_small``, ``gm_nerf_finetune``) through the module's
:func:`__getattr__`, which installs the YAML guard of :mod:`gmnerf_ns.training.nerfstudio_patches` first: nerfstudio's
plugin discovery fetching them is the first gm-nerf code ns-eval and ns-render run, before they read a config.yml.
Importing the module installs nothing.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import ViewerConfig
from nerfstudio.plugins.types import MethodSpecification

from gmnerf_ns.core.checkpoints import install_full_disk_message
from gmnerf_ns.data.datamanager import GMNeRFDataManagerConfig
from gmnerf_ns.data.parsers.auto import AutoDataParserConfig
from gmnerf_ns.model.encoder import ImageEncoderConfig
from gmnerf_ns.model.gmnerf_model import GMNeRFModelConfig
from gmnerf_ns.training.nerfstudio_patches import (
    install_fast_external_methods,
    install_local_viewer_default,
    install_yaml_guard,
)
from gmnerf_ns.training.optimizers import FusedAdamOptimizerConfig
from gmnerf_ns.training.pipeline import GMNeRFPipelineConfig
from gmnerf_ns.training.schedulers import FloatExponentialDecaySchedulerConfig
from gmnerf_ns.training.trainer import GMNeRFMachineConfig, GMNeRFTrainerConfig


def _optimizers(lr: float, max_steps: int, final_ratio: float = 0.1) -> dict:
    """Adam with exponential decay (NeuralBody/NHP style) for the encoder, fields and 2D renderer."""
    group = lambda scale: {  # noqa: E731
        "optimizer": FusedAdamOptimizerConfig(lr=lr * scale, eps=1e-15),
        "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=lr * scale * final_ratio, max_steps=max_steps),
    }
    return {"encoder": group(1.0), "fields": group(1.0), "renderer": group(1.0)}


def _trainer(name: str, steps: int, lr: float, datamanager: GMNeRFDataManagerConfig, model: GMNeRFModelConfig,
             **kwargs) -> GMNeRFTrainerConfig:
    return GMNeRFTrainerConfig(
        method_name=name,
        max_num_iterations=steps,
        mixed_precision=False,
        pipeline=GMNeRFPipelineConfig(datamanager=datamanager, model=model),
        optimizers=_optimizers(lr, steps),
        # Loopback only: the viewer has no authentication, and anyone who reaches it can watch and steer the run.
        # --viewer.websocket-host 0.0.0.0 exposes it on purpose (docs/tools.md).
        viewer=ViewerConfig(num_rays_per_chunk=1 << 13, websocket_host="127.0.0.1"),
        vis="viewer",
        **kwargs,
    )


_gm_nerf = MethodSpecification(
    config=_trainer(
        "gm-nerf",
        steps=200_000,
        lr=5e-4,
        steps_per_eval_batch=500,
        steps_per_eval_image=1000,
        steps_per_eval_all_images=50_000,
        steps_per_save=5000,
        datamanager=GMNeRFDataManagerConfig(dataparser=AutoDataParserConfig(resolution=512), patch_size=256),
        model=GMNeRFModelConfig(
            encoder=ImageEncoderConfig(backbone="resnet18", out_channels=64),
            vertex_code_dim=64,
            volume_resolution=96,
            volume_channels=(32, 64, 96, 128),
            num_samples=64,
            appearance_dim=128,
            hidden_dim=128,
            feature_dim=32,
            renderer_width=64,
            grad_ray_fraction=0.25,
            visibility_resolution=256,
            eval_num_rays_per_chunk=1 << 15,
        ),
    ),
    description="GM-NeRF (CVPR 2023) at paper scale: generalizable human radiance field from m views + body proxy.",
)

_gm_nerf_small = MethodSpecification(
    config=_trainer(
        "gm-nerf-small",
        steps=1500,
        lr=1e-3,
        steps_per_eval_batch=100,
        steps_per_eval_image=250,
        steps_per_eval_all_images=1_000_000,
        steps_per_save=250,
        machine=GMNeRFMachineConfig(device_type="cpu"),
        datamanager=GMNeRFDataManagerConfig(dataparser=AutoDataParserConfig(), patch_size=64),
        model=GMNeRFModelConfig(),
    ),
    description="GM-NeRF sized for 2 CPU cores: trains on the built-in synthetic humans in minutes.",
)

_gm_nerf_finetune = MethodSpecification(
    config=_trainer(
        "gm-nerf-finetune",
        steps=5000,
        lr=5e-5,
        steps_per_eval_batch=500,
        steps_per_eval_image=500,
        steps_per_eval_all_images=1_000_000,
        steps_per_save=1000,
        datamanager=GMNeRFDataManagerConfig(dataparser=AutoDataParserConfig(), patch_size=128,
                                            train_source_views="protocol"),
        model=GMNeRFModelConfig(),
    ),
    description="Per-subject fine-tuning of a cross-subject GM-NeRF (--pipeline.pretrained-checkpoint; one subject).",
)

_SPECS = {"gm_nerf": _gm_nerf, "gm_nerf_small": _gm_nerf_small, "gm_nerf_finetune": _gm_nerf_finetune}


def __getattr__(name: str) -> MethodSpecification:
    """The method specification the entry point ``gmnerf_ns.training.method_configs:<name>`` names, after installing
    the YAML guard (patch 1 of :mod:`gmnerf_ns.training.nerfstudio_patches`), so that ns-eval and ns-render report a
    config.yml of another gmnerf-ns version as one :class:`~gmnerf_ns.core.errors.IncompatibleConfigError` and refuse
    one that would run code, the fast listing of nerfstudio's external methods (patch 4), the loopback default of
    ``ns-viewer`` (patch 5) and the one-line message for a full disk
    (:func:`~gmnerf_ns.core.checkpoints.install_full_disk_message`)."""
    if name not in _SPECS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    install_yaml_guard()
    install_fast_external_methods()
    install_local_viewer_default()
    install_full_disk_message()
    return _SPECS[name]


def __dir__() -> list:
    return sorted([*globals(), *_SPECS])
