"""Pipeline that hands source views from the cross-subject datamanager to the GM-NeRF model.

Training and eval-loss steps pass the sources and the patch to the model's forward (so DDP sees one call per sample);
tools that only pass a camera (ns-eval, ns-render, the viewer) reach the sources through the provider installed here.
With ``--pipeline.datamanager.subjects-per-step`` P > 1 a step renders its P samples one after another and returns the
means of their losses and metrics (one backward and one optimizer step over all P).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import profiler
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.core.checkpoints import load_model_weights
from gmnerf_ns.core.errors import USER_ERRORS, CleanExit
from gmnerf_ns.core.options import OptionCheck, validate_all
from gmnerf_ns.data.datamanager import GMNeRFDataManager, GMNeRFDataManagerConfig
from gmnerf_ns.eval.evaluation import average_eval_image_metrics
from gmnerf_ns.eval.geometry import DEFAULT_DENSITY_THRESHOLD
from gmnerf_ns.model.gmnerf_model import GMNeRFModelConfig
from gmnerf_ns.training.viewer import GMNeRFViewerControls

StepResult = Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor], Dict[str, torch.Tensor]]
"""(outputs, losses, metrics) of a training or eval-loss step."""


def mean_of_samples(results: Sequence[StepResult]) -> StepResult:
    """One step's (outputs, losses, metrics) from its samples': the first sample's outputs, and each loss and metric
    averaged over the samples (so the loss scale does not depend on their number; the PSNR is the mean of the samples'
    PSNRs). One sample's result is returned as it is, bit for bit."""
    if len(results) == 1:
        return results[0]
    average = lambda dicts: {key: sum(d[key] for d in dicts) / len(dicts) for key in dicts[0]}  # noqa: E731
    return results[0][0], average([r[1] for r in results]), average([r[2] for r in results])


@dataclass
class GMNeRFPipelineConfig(VanillaPipelineConfig):
    """GM-NeRF pipeline: cross-subject datamanager + GM-NeRF model."""

    _target: Type = field(default_factory=lambda: GMNeRFPipeline)
    datamanager: GMNeRFDataManagerConfig = field(default_factory=GMNeRFDataManagerConfig)
    """Cross-subject sampling of source views and target patches."""
    model: GMNeRFModelConfig = field(default_factory=GMNeRFModelConfig)
    """The GM-NeRF model."""
    pretrained_checkpoint: Optional[Path] = None
    """Cross-subject checkpoint (``step-*.ckpt``) whose model weights start this run (fine-tuning; optimizer and step
    start fresh). Read once, when ns-train starts the run; resuming, ns-eval and ns-render do not need it."""
    geometry_resolution: int = 96
    """ns-eval: marching-cubes cells along the proxy box's longest side for Chamfer/P2S on data with ground-truth
    meshes (0 = skip the geometry metrics)."""
    geometry_threshold: float = DEFAULT_DENSITY_THRESHOLD
    """ns-eval: density iso-level (1/m) of the surface compared with the ground-truth meshes."""

    def validate(self, prefix: str = "--pipeline") -> None:
        """Checks every numeric option of the pipeline, its datamanager (and dataparser) and its model before anything
        is built (called by ns-train; see gmnerf_ns/core/options.py).

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
        try:
            super().__init__(config, device, test_mode=test_mode, world_size=world_size, local_rank=local_rank,
                             grad_scaler=grad_scaler)
        except USER_ERRORS as err:
            if test_mode == "val":  # training: the trainer reports it (and removes what the start created)
                raise
            raise CleanExit(err) from err  # ns-eval, ns-render, the viewer: one line, not nerfstudio's traceback
        self.model.source_provider = self.datamanager.source_views
        self.model.default_source_key = self.datamanager.default_source_key
        # The viewer's GUI (subject-frame to condition on, source cameras, proxy; gmnerf_ns/training/viewer.py). No
        # parameters, so checkpoints are unchanged; the viewer finds its elements by walking the pipeline.
        self.conditioning = GMNeRFViewerControls(self.model, self.datamanager)

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

    def get_average_eval_image_metrics(self, step: Optional[int] = None, output_path: Optional[Path] = None,
                                       get_std: bool = False):
        """nerfstudio's mean metrics over the held-out images, plus, when called by ns-eval, the breakdown per subject,
        novel view vs novel pose, per image and geometry (gmnerf_ns/eval/evaluation.py)."""
        return average_eval_image_metrics(self, step=step, output_path=output_path, get_std=get_std)

    @profiler.time_function
    def get_train_loss_dict(self, step: int):
        return self.train_loss_dict_for_samples(self.datamanager.next_train_samples(step))

    def train_loss_dict_for(self, camera, batch) -> StepResult:
        """(outputs, losses, metrics) of one training sample: the step after the data
        (benchmarks/throughput/profile_step.py times it apart from the data)."""
        outputs = self._model(camera, sources=batch["sources"], patch=batch["patch"])
        metrics = self.model.get_metrics_dict(outputs, batch)
        return outputs, self.model.get_loss_dict(outputs, batch, metrics), metrics

    def train_loss_dict_for_samples(self, samples: List[Tuple[Cameras, Dict]]) -> StepResult:
        """(outputs, losses, metrics) of one training step over its ``subjects_per_step`` samples: each sample is
        rendered and scored in turn (a loop; the model renders one camera per call), and the losses and metrics are
        their means (:func:`mean_of_samples`). One sample gives exactly :meth:`train_loss_dict_for`. Under DDP the P
        forwards share the trainer's one backward, in which each parameter's gradient is reduced once (2 gloo ranks x
        2 samples gave the gradients of single-process accumulation over the same 4 samples)."""
        results = []
        for k, (camera, batch) in enumerate(samples):
            outputs, losses, metrics = self.train_loss_dict_for(camera, batch)
            results.append((outputs if k == 0 else {}, losses, metrics))  # only the first sample's outputs are kept
        return mean_of_samples(results)

    @profiler.time_function
    def get_eval_loss_dict(self, step: int):
        """Losses and metrics of ``subjects_per_step`` held-out patches (their means, as in training)."""
        self.eval()
        results = []
        with torch.no_grad():
            for camera, batch in self.datamanager.next_eval_samples(step):
                outputs = self.model(camera, sources=batch["sources"], patch=batch["patch"])
                metrics = self.model.get_metrics_dict(outputs, batch)
                results.append((outputs, self.model.get_loss_dict(outputs, batch, metrics), metrics))
        self.train()
        return mean_of_samples(results)
