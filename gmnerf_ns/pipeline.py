"""Pipeline that hands source views from the cross-subject datamanager to the GM-NeRF model.

Training and eval-loss steps pass the sources and the patch to the model's forward (so DDP sees one call); tools that
only pass a camera (ns-eval, ns-render, the viewer) reach the sources through the provider installed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Type

import torch
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import profiler
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.checkpoints import load_model_weights
from gmnerf_ns.data.datamanager import GMNeRFDataManager, GMNeRFDataManagerConfig
from gmnerf_ns.model.gmnerf_model import GMNeRFModelConfig
from gmnerf_ns.options import OptionCheck, validate_all
from gmnerf_ns.tools.evaluation import average_eval_image_metrics
from gmnerf_ns.tools.geometry import DEFAULT_DENSITY_THRESHOLD
from gmnerf_ns.tools.viewer import GMNeRFViewerControls


@dataclass
class GMNeRFPipelineConfig(VanillaPipelineConfig):
    """GM-NeRF pipeline: cross-subject datamanager + GM-NeRF model."""

    _target: Type = field(default_factory=lambda: GMNeRFPipeline)
    datamanager: GMNeRFDataManagerConfig = field(default_factory=GMNeRFDataManagerConfig)
    """Cross-subject sampling of source views and target patches."""
    model: GMNeRFModelConfig = field(default_factory=GMNeRFModelConfig)
    """The GM-NeRF model."""
    pretrained_checkpoint: Optional[Path] = None
    """A cross-subject checkpoint (``step-*.ckpt``) whose model weights initialise this run (fine-tuning); the
    optimizer and step start fresh. Read once, by ns-train when the run starts; a resumed run, ns-eval and ns-render
    use the run's own checkpoints and no longer need this file."""
    # ---- issue #6: ns-eval geometry metrics (gmnerf_ns/tools/evaluation.py) ----
    geometry_resolution: int = 96
    """ns-eval: marching-cubes cells along the proxy box's longest side for Chamfer/P2S on data with ground-truth
    meshes (0 = skip the geometry metrics)."""
    geometry_threshold: float = DEFAULT_DENSITY_THRESHOLD
    """ns-eval: density iso-level (1/m) of the surface compared with the ground-truth meshes."""
    # ---- end issue #6 ----

    def validate(self, prefix: str = "--pipeline") -> None:
        """Checks every numeric option of the pipeline, its datamanager (and dataparser) and its model before anything
        is built (called by ns-train; see gmnerf_ns/options.py).

        Raises:
            OptionError: naming each option out of range and its range.
        """
        check = OptionCheck(self, prefix)
        check.integer("geometry_resolution", low=0)
        check.number("geometry_threshold", low=0.0, low_open=True)
        validate_all(check.done, lambda: self.datamanager.validate(f"{prefix}.datamanager"),
                     lambda: self.model.validate(f"{prefix}.model"))


class GMNeRFPipeline(VanillaPipeline):
    """See the module docstring."""

    config: GMNeRFPipelineConfig
    datamanager: GMNeRFDataManager

    def __init__(self, config: GMNeRFPipelineConfig, device: str, test_mode: Literal["test", "val", "inference"] = "val",
                 world_size: int = 1, local_rank: int = 0, grad_scaler: Optional[torch.cuda.amp.GradScaler] = None):
        super().__init__(config, device, test_mode=test_mode, world_size=world_size, local_rank=local_rank,
                         grad_scaler=grad_scaler)
        self.model.source_provider = self.datamanager.source_views
        self.model.default_source_key = self.datamanager.default_source_key
        # ---- issue #6: viewer GUI (subject/frame to condition on, source cameras, proxy); gmnerf_ns/tools/viewer.py.
        # No parameters, so checkpoints are unchanged; the viewer finds its elements by walking the pipeline.
        self.conditioning = GMNeRFViewerControls(self.model, self.datamanager)
        # ---- end issue #6 ----

    def load_pretrained(self, path: Path) -> None:
        """Initialises the model's weights from another gm-nerf run's checkpoint (fine-tuning; optimizer and step start
        fresh). Called by the trainer when a run starts without a checkpoint to resume; never while the pipeline is
        built, so ``ns-eval``/``ns-render`` of a fine-tuned run read only its own checkpoint.

        Raises:
            CheckpointError: missing, truncated or foreign file, Python objects other than tensors (never unpickled),
                or a model of another size.
        """
        load_model_weights(self.model, path, "init")
        CONSOLE.log(f"initialised gm-nerf from {path}")

    # ---- issue #6: ns-eval per subject, novel view vs novel pose, per image, geometry (gmnerf_ns/tools/evaluation.py)
    def get_average_eval_image_metrics(self, step: Optional[int] = None, output_path: Optional[Path] = None,
                                       get_std: bool = False):
        """nerfstudio's mean metrics over the held-out images, plus the breakdown when called by ns-eval."""
        return average_eval_image_metrics(self, step=step, output_path=output_path, get_std=get_std)
    # ---- end issue #6 ----

    @profiler.time_function
    def get_train_loss_dict(self, step: int):
        camera, batch = self.datamanager.next_train(step)
        return self.train_loss_dict_for(camera, batch)

    def train_loss_dict_for(self, camera, batch):
        """(outputs, losses, metrics) of one training batch: the step after the data (scripts/profile_step.py times
        it apart from the data)."""
        outputs = self._model(camera, sources=batch["sources"], patch=batch["patch"])
        metrics = self.model.get_metrics_dict(outputs, batch)
        return outputs, self.model.get_loss_dict(outputs, batch, metrics), metrics

    @profiler.time_function
    def get_eval_loss_dict(self, step: int):
        self.eval()
        camera, batch = self.datamanager.next_eval(step)
        with torch.no_grad():
            outputs = self.model(camera, sources=batch["sources"], patch=batch["patch"])
            metrics = self.model.get_metrics_dict(outputs, batch)
            losses = self.model.get_loss_dict(outputs, batch, metrics)
        self.train()
        return outputs, losses, metrics
