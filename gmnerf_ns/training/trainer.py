"""nerfstudio's Trainer with exact resume, atomic checkpoints, protected outputs, clear input errors and CPU
multi-process runs; every ``gm-nerf*`` method uses it.

This module holds the classes a run's ``config.yml`` names (:class:`GMNeRFTrainerConfig`, :class:`GMNeRFMachineConfig`,
:class:`GMNeRFTrainer`): their import path is written into config.yml, so moving them needs an entry in
``MOVED_MODULES`` (:mod:`gmnerf_ns.training.nerfstudio_patches`). The pieces they use live in one module per concern:

* **Exact resume** (:mod:`gmnerf_ns.core.rng_state`). A checkpoint also holds every rank's Python/NumPy/torch RNG
  state (the datamanager's sampler state rides along in the pipeline's ``state_dict``, see
  ``GMNeRFDataManager.get_extra_state``), so a run killed after a checkpoint and resumed with ``--load-dir``
  continues with the same samples, random rays and losses as the uninterrupted run. ``max_num_iterations`` counts
  from the start of the run: a resumed run stops where the uninterrupted one would have (nerfstudio trains that many
  *more* steps).
* **Atomic checkpoints** (:mod:`gmnerf_ns.core.checkpoints`). Written through a temporary file and ``os.replace``;
  only then are older checkpoints removed, all but the newest ``keep_checkpoints`` (2), so that a latest checkpoint
  found corrupt on resume leaves the one before to fall back to.
* **One writer, nothing overwritten, nothing left behind** (:mod:`gmnerf_ns.core.run_folder`). A run folder that already
  holds checkpoints is refused unless the run resumes from it or ``--force`` is given; a run folder another run is
  writing into (its ``.gmnerf.lock``) is refused; a run whose setup fails removes the config.yml and the folders
  ``save_config`` created for it, and the lock is released when training ends.
* **One clear error** (:mod:`gmnerf_ns.core.errors`). Dataset problems, checkpoints of another method or model size, and
  configs of another gmnerf-ns version end ``ns-train`` with a single ``gmnerf error: ...`` line (exit status 1)
  instead of a traceback; loading such a ``config.yml`` in ``ns-eval``/``ns-render`` raises
  :class:`IncompatibleConfigError` naming what is wrong. A full disk while a checkpoint or config.yml is written is
  one line too (:class:`~gmnerf_ns.core.checkpoints.DiskFullError`), and ``ns-eval``/``ns-render`` load a run's newest
  readable checkpoint as ``--load-dir`` does (patch 6 of :mod:`gmnerf_ns.training.nerfstudio_patches`). Every
  numeric option is range-checked (:meth:`GMNeRFTrainerConfig.validate`, :mod:`gmnerf_ns.core.options`) before any
  data is read or anything is written.
* **Device choice** (:mod:`gmnerf_ns.core.device`). ``--machine.device-type auto`` (the default of gm-nerf and
  gm-nerf-finetune) trains on CUDA when available, otherwise on the CPU with a one-line notice; an explicit ``cuda`` or
  ``mps`` that is not available is one ``gmnerf error:`` line.
* **CPU multi-process training** (:mod:`gmnerf_ns.training.nerfstudio_patches`). ``--machine.device-type cpu
  --machine.num-devices N`` works through two patches of nerfstudio applied here: a gloo worker for the launcher
  (:meth:`GMNeRFTrainerConfig.save_config`) and a DDP without ``device_ids`` while the pipeline is built
  (:meth:`GMNeRFTrainer.setup`). Gradients are averaged by DDP; only rank 0 writes checkpoints and logs.

Importing this module changes no global state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import torch
import torch.distributed as dist
import tyro
import yaml
from nerfstudio.configs.base_config import MachineConfig
from nerfstudio.engine.callbacks import TrainingCallbackLocation
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import comms
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns import __version__
from gmnerf_ns.core.checkpoints import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    atomic_save,
    check_checkpoint_fits,
    list_checkpoints,
    prune_checkpoints,
    read_checkpoint,
    read_latest_checkpoint,
    remove_stale_partials,
)
from gmnerf_ns.core.device import resolve_device
from gmnerf_ns.core.errors import USER_ERRORS, CleanExit, IncompatibleConfigError, RunInputError
from gmnerf_ns.core.options import OptionCheck, validate_all
from gmnerf_ns.core.rng_state import get_rng_state, set_rng_state
from gmnerf_ns.core.run_folder import (
    check_output_dir,
    lock_run_folder,
    remove_new_run_files,
    unlock_run_folder,
    write_run_config,
)
from gmnerf_ns.training.nerfstudio_patches import (
    cpu_ddp_support,
    install_cpu_launcher,
    install_eval_checkpoint_fallback,
)

__all__ = ["CONFIG_FORMAT", "GMNeRFMachineConfig", "GMNeRFTrainer", "GMNeRFTrainerConfig"]

CONFIG_FORMAT = 1
"""Version of the saved ``config.yml`` layout. Bump it when a config class is renamed or a field changes meaning."""


@dataclass
class GMNeRFMachineConfig(MachineConfig):
    """nerfstudio's machine config, whose device type can also be ``auto``."""

    device_type: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """Device to train on: auto = CUDA when available, else the CPU (with a one-line notice); cpu, cuda or mps use that
    device, and fail with one line if it is not available."""


@dataclass
class GMNeRFTrainerConfig(TrainerConfig):
    """nerfstudio's trainer config plus resume, overwrite protection and version stamps (see the module docstring)."""

    _target: Type = field(default_factory=lambda: GMNeRFTrainer)
    machine: GMNeRFMachineConfig = field(default_factory=GMNeRFMachineConfig)
    """Machine setup; ``--machine.device-type`` defaults to auto (CUDA when available, else the CPU)."""
    force: bool = False
    """Overwrite a run folder that already holds checkpoints (they are deleted first). Without it such a folder is
    refused unless the run resumes from it."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept with save_only_latest_checkpoint (at least 1); with 2, a truncated or corrupt latest
    checkpoint leaves the one before it, which --load-dir falls back to."""
    max_num_iterations_is_total: bool = True
    """A resumed run stops at step max_num_iterations counted from the start of the run (False: nerfstudio's
    behaviour, max_num_iterations more steps)."""
    config_format: tyro.conf.Suppress[int] = CONFIG_FORMAT
    """Layout version of this config (checked when a config.yml is loaded)."""
    gmnerf_version: tyro.conf.Suppress[str] = __version__
    """gmnerf-ns version that wrote this config."""

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # yaml.load (ns-eval, ns-render, --load-config), pickle and deepcopy all restore the config through here.
        found = state.get("config_format", CONFIG_FORMAT)
        if found != CONFIG_FORMAT:
            raise IncompatibleConfigError(
                f"this config.yml was written by gmnerf-ns {state.get('gmnerf_version', '?')} (config format {found}); "
                f"gmnerf-ns {__version__} reads format {CONFIG_FORMAT}. Load it with the version that wrote it, or "
                "train again with this one"
            )
        self.__dict__.update(state)
        install_eval_checkpoint_fallback(GMNeRFTrainerConfig)

    def validate(self) -> None:
        """Checks the range of every numeric option (trainer, machine, optimizers, schedulers, viewer, and through
        their ``validate`` methods the pipeline, datamanager, dataparser and model), before anything is read or
        written: ns-train ends with one ``gmnerf error:`` line naming each bad option and its range.

        Raises:
            OptionError: naming each option out of range (as ``--pipeline.model.num-samples``) and its range.
        """
        check = OptionCheck(self, "--")
        check.integer("max_num_iterations", low=1)
        for name in ("steps_per_save", "steps_per_eval_batch", "steps_per_eval_image", "steps_per_eval_all_images",
                     "keep_checkpoints"):
            check.integer(name, low=1)
        check.integer("load_step", low=0, optional=True)
        autocast = getattr(getattr(self.pipeline, "model", None), "autocast", "off")
        check.require(not (self.mixed_precision and autocast != "off"), "mixed_precision",
                      f"nerfstudio's fp16 autocast (and GradScaler) cannot be combined with --pipeline.model.autocast "
                      f"{autocast}; use one of them")
        for name, steps in self.gradient_accumulation_steps.items():
            check.integer(f"gradient_accumulation_steps.{name}", low=1, value=steps)
        machine = OptionCheck(self.machine, "--machine")
        machine.integer("seed", low=0)
        machine.integer("num_devices", low=1)
        machine.integer("num_machines", low=1)
        if isinstance(self.machine.num_machines, int):
            machine.integer("machine_rank", low=0, high=max(0, self.machine.num_machines - 1))
        viewer = OptionCheck(self.viewer, "--viewer")
        viewer.integer("num_rays_per_chunk", low=1)
        checks = [check.done, machine.done, viewer.done]
        for group, entry in self.optimizers.items():
            optimizer = OptionCheck(entry["optimizer"], f"--optimizers.{group}.optimizer")
            optimizer.number("lr", low=0.0, low_open=True)
            optimizer.number("eps", low=0.0)
            optimizer.number("max_norm", low=0.0, low_open=True, optional=True)
            checks.append(optimizer.done)
            scheduler = entry.get("scheduler")
            if scheduler is not None:
                schedule = OptionCheck(scheduler, f"--optimizers.{group}.scheduler")
                if hasattr(scheduler, "lr_final"):
                    schedule.number("lr_final", low=0.0, low_open=True, optional=True)  # decays by exp(log(lr))
                if hasattr(scheduler, "lr_pre_warmup"):
                    schedule.number("lr_pre_warmup", low=0.0)
                if hasattr(scheduler, "warmup_steps"):
                    schedule.integer("warmup_steps", low=0)
                if hasattr(scheduler, "max_steps"):
                    schedule.integer("max_steps", low=1)
                checks.append(schedule.done)
        pipeline_validate = getattr(self.pipeline, "validate", None)
        if pipeline_validate is not None:
            checks.append(pipeline_validate)
        validate_all(*checks)

    def save_config(self) -> None:
        """Checks every option (:meth:`validate`), the output folder (:func:`check_output_dir`) and the device
        (:func:`resolve_device`), then writes config.yml atomically. ``ns-train`` calls this last before launching the
        training processes, so nothing is written for a config that cannot run, and the CPU multi-process launcher is
        installed here too (:func:`install_cpu_launcher`). Writing config.yml takes the run folder's lock, which the
        training process releases when training ends. What this creates (config.yml, folders) is remembered so that
        a setup that fails removes it again (:func:`remove_new_run_files`)."""
        self.__dict__.pop("_created_paths", None)  # left by an earlier call; never saved in config.yml
        requested = self.machine.device_type
        try:
            self.validate()
            resolve_device(self)
            check_output_dir(self)  # with --force, takes the lock before deleting anything
        except RunInputError as err:
            unlock_run_folder(self)
            raise CleanExit(err) from err
        # Never saved: --force (`--load-config` of this file must not delete anything), the device chosen for this
        # machine (the config keeps what was asked for, so that auto stays auto on another machine) and the lock.
        force, device, lock = self.force, self.machine.device_type, self.__dict__.pop("_run_lock", None)
        self.force, self.machine.device_type = False, requested
        try:
            text = yaml.dump(self)
        finally:
            self.force, self.machine.device_type = force, device
            if lock is not None:
                self.__dict__["_run_lock"] = lock
        try:
            self._created_paths = write_run_config(self, text)
        except RunInputError as err:
            raise CleanExit(err) from err
        install_cpu_launcher(self)


class GMNeRFTrainer(Trainer):
    """See the module docstring."""

    config: GMNeRFTrainerConfig

    def __init__(self, config: GMNeRFTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        try:
            resolve_device(config)  # already done by save_config under ns-train; here for trainers built directly
        except RunInputError as err:
            raise CleanExit(err) from err
        super().__init__(config, local_rank=local_rank, world_size=world_size)

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        try:
            self._setup(test_mode)
        except BaseException as err:
            if comms.is_main_process():
                remove_new_run_files(self.config)
            if isinstance(err, USER_ERRORS):
                raise CleanExit(err) from err
            raise
        self.config.__dict__.pop("_created_paths", None)  # set up: the run folder is this run's now

    def _setup(self, test_mode: Literal["test", "val", "inference"]) -> None:
        self.config.validate()  # already done by save_config under ns-train; here for trainers built directly
        if comms.is_main_process():
            created = lock_run_folder(self.config)  # save_config took it under ns-train
            self.config._created_paths = (*self.config.__dict__.get("_created_paths", ()), *created)
            check_output_dir(self.config)
            remove_stale_partials(self.checkpoint_dir)
        resuming = self.config.load_dir is not None or self.config.load_checkpoint is not None
        for flag, path in (("--load-checkpoint", self.config.load_checkpoint),
                           ("--pipeline.pretrained-checkpoint", None if resuming else self._pretrained_checkpoint())):
            if path is not None and not Path(path).is_file():  # fail before the dataset is parsed
                raise CheckpointError(f"{flag} {path}: file not found")
        if self.config.load_dir is not None and not Path(self.config.load_dir).is_dir():
            raise CheckpointError(f"--load-dir {self.config.load_dir}: folder not found")
        if self.device.startswith("cuda") and self.world_size > 1:
            torch.cuda.set_device(self.local_rank)  # collectives (RNG-state gathering) use the current device
        with cpu_ddp_support(self.device):
            super().setup(test_mode=test_mode)  # ends with _load_checkpoint

    def _pretrained_checkpoint(self) -> Optional[Path]:
        path = getattr(self.config.pipeline, "pretrained_checkpoint", None)
        return None if path is None else Path(path)

    # ------------------------------------------------------------------ training
    def train(self) -> None:
        total = self.config.max_num_iterations
        remaining = total - self._start_step if self.config.max_num_iterations_is_total else total
        try:
            if remaining <= 0:
                CONSOLE.print(f"The checkpoint is at step {self._start_step - 1} and max_num_iterations is {total}: "
                              "nothing left to train.")
                return
            self.config.max_num_iterations = remaining  # nerfstudio runs steps [start, start + max_num_iterations)
            try:
                super().train()
            finally:
                self.config.max_num_iterations = total
        except USER_ERRORS as err:
            raise CleanExit(err) from err
        finally:
            close = getattr(self.pipeline.datamanager, "close", None)
            if close is not None:
                close()
            if comms.is_main_process():
                unlock_run_folder(self.config)

    def _after_train(self) -> None:
        if comms.is_main_process():
            super()._after_train()
            return
        # Other ranks: take part in the final save (it gathers their RNG state) without printing the summary again.
        self.training_state = "completed"
        self.save_checkpoint(self.step)
        for callback in self.callbacks:
            callback.run_callback_at_location(step=self.step, location=TrainingCallbackLocation.AFTER_TRAIN)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_to_resume(self) -> Optional[Tuple[Path, Dict[str, Any]]]:
        """(path, state) of the checkpoint named by --load-dir/--load-step/--load-checkpoint, or None."""
        if self.config.load_checkpoint is not None:
            path = Path(self.config.load_checkpoint)
            return path, read_checkpoint(path)
        if self.config.load_dir is None:
            return None
        folder = Path(self.config.load_dir)
        found = list_checkpoints(folder)
        if not found and list_checkpoints(folder / "nerfstudio_models"):
            folder = folder / "nerfstudio_models"  # the run folder was given
            found = list_checkpoints(folder)
        if self.config.load_step is not None and found:
            path = folder / f"step-{self.config.load_step:09d}.ckpt"
            if not path.is_file():
                raise CheckpointError(f"{path} does not exist; steps available: {', '.join(str(s) for s, _ in found)}")
            return path, read_checkpoint(path)
        return read_latest_checkpoint(folder, f"--load-dir {self.config.load_dir}",
                                      "point it at a run's nerfstudio_models folder")

    def _load_checkpoint(self) -> None:
        """Resumes from --load-dir/--load-checkpoint, or else initialises the model from
        --pipeline.pretrained-checkpoint (the only place either is read; building the pipeline loads nothing, so
        ns-eval of a fine-tuned run reads only the run's own checkpoint)."""
        found = self._checkpoint_to_resume()
        if found is None:
            pretrained = self._pretrained_checkpoint()
            if pretrained is not None:
                self.pipeline.load_pretrained(pretrained)
            else:
                CONSOLE.print("No checkpoint to resume from: training from scratch.")
            return
        path, state = found
        check_checkpoint_fits(self.pipeline.model, state, path, "resume")
        self._start_step = int(state["step"]) + 1
        self.pipeline.load_pipeline(state["pipeline"], int(state["step"]))
        self.optimizers.load_optimizers(state["optimizers"])
        if "schedulers" in state and self.config.load_scheduler:
            self.optimizers.load_schedulers(state["schedulers"])
        self.grad_scaler.load_state_dict(state["scalers"])
        rng_states = state.get("rng_states") or []
        rank = comms.get_rank()
        if rank < len(rng_states):
            set_rng_state(rng_states[rank])
        if len(rng_states) != comms.get_world_size():
            CONSOLE.print(f"[bold yellow]WARNING: the checkpoint holds the random-number state of {len(rng_states)} "
                          f"process(es), this run has {comms.get_world_size()}: it continues, but its random draws "
                          "differ from the interrupted run's")
        CONSOLE.print(f"Resuming from {path} (step {state['step']}); training continues at step {self._start_step}")

    def _gathered_rng_states(self) -> List[Dict[str, Any]]:
        state = get_rng_state()
        if self.world_size > 1 and comms.is_dist_avail_and_initialized():
            states: List[Any] = [None] * comms.get_world_size()
            dist.all_gather_object(states, state)
            return states
        return [state]

    def save_checkpoint(self, step: int) -> None:
        """Saves model, optimizers, schedulers, scaler, sampler and every rank's RNG state atomically (rank 0 only;
        every rank must call this, the RNG states are gathered)."""
        rng_states = self._gathered_rng_states()
        if not comms.is_main_process():
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        atomic_save(
            {
                "step": step,
                "pipeline": pipeline.state_dict(),  # includes datamanager._extra_state (sampler position)
                "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
                "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
                "scalers": self.grad_scaler.state_dict(),
                "rng_states": rng_states,
                "gmnerf": {"format": CHECKPOINT_FORMAT, "version": __version__,
                           "method_name": self.config.method_name, "world_size": self.world_size},
            },
            path,
        )
        if self.config.save_only_latest_checkpoint:
            prune_checkpoints(self.checkpoint_dir, step, self.config.keep_checkpoints)
