"""The pretrained models shipped in the package, and ``gmnerf-pretrained``: a ready run for any dataset.

GM-NeRF renders people it has never seen, so a model trained once on many people works on a new capture with no
training. The package ships such models as ``assets/pretrained/<method>.pt`` (the model's weights as an fp16 state
dict, with its recipe in ``<method>.json``; ``scripts/train_pretrained.py`` reproduces it): ``gm-nerf-small`` always,
``gm-nerf`` (512 px, trained on a GPU) once its weights exist. A weights file names its method, and the run is built
for that method.

``gmnerf-pretrained --data DIR --output-dir OUT`` turns it into an ordinary nerfstudio run folder for the dataset in
``DIR`` (``config.yml`` plus ``nerfstudio_models/step-*.ckpt``), so every tool works on it as on a trained run::

    CONFIG=$(gmnerf-pretrained --data data/synthetic --output-dir outputs | tail -n 1)
    ns-eval --load-config $CONFIG --output-path eval.json
    gmnerf-render orbit --load-config $CONFIG --subject subject_007
    ns-viewer --load-config $CONFIG
    ns-train gm-nerf-finetune --data data/synthetic --pipeline.pretrained-checkpoint $(dirname $CONFIG)/nerfstudio_models/step-*.ckpt

The weights are read with ``torch.load(weights_only=True)`` like every checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import pickle
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, Literal, Optional, get_args

import torch
import tyro

from gmnerf_ns import __version__
from gmnerf_ns.core.checkpoints import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    RunInputError,
    atomic_save,
    list_checkpoints,
    model_weights,
    one_line,
    read_checkpoint,
    weight_mismatch,
)
from gmnerf_ns.core.device import check_device

PretrainedMethod = Literal["gm-nerf-small", "gm-nerf"]
"""Methods that can have pretrained weights; ``gm-nerf-small`` is the default and always ships."""
PRETRAINED_METHODS = get_args(PretrainedMethod)
WEIGHTS_FORMAT = 1
"""Version of the shipped weights file's layout."""


def default_weights(method: str = "gm-nerf-small") -> Path:
    """Path of the shipped weights of ``method`` (inside the installed package)."""
    return Path(str(resources.files("gmnerf_ns") / "assets" / "pretrained" / f"{method}.pt"))


def export_weights(run_config: Path, out_dir: Path, card: Dict[str, Any], method: str = "gm-nerf-small") -> Path:
    """Writes the latest checkpoint of a trained ``method`` run as fp16 weights plus a JSON card.

    Returns the weights' path. The card gets the step, the tensor count and the file's SHA-256 added.
    """
    from gmnerf_ns.core.run_folder import atomic_write_text

    run_dir = Path(run_config).parent
    found = list_checkpoints(run_dir / "nerfstudio_models")
    if not found:
        raise CheckpointError(f"{run_dir / 'nerfstudio_models'}: no checkpoint to export")
    step, path = found[-1]
    weights = model_weights(read_checkpoint(path))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{method}.pt"
    atomic_save({"format": WEIGHTS_FORMAT, "method_name": method, "step": step, "version": __version__,
                 "weights": half}, target)
    card = {**card, "method_name": method, "step": step, "tensors": len(half),
            "parameters": int(sum(v.numel() for v in half.values())), "bytes": target.stat().st_size,
            "sha256": hashlib.sha256(target.read_bytes()).hexdigest()}
    atomic_write_text(out_dir / f"{method}.json", json.dumps(card, indent=2) + "\n")
    return target


def read_weights(path: Path) -> Dict[str, Any]:
    """The shipped weights file as ``{"step", "method_name", "weights" (fp32)}``, or a :class:`CheckpointError` naming
    the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained weights not found (reinstall gmnerf-ns, or train them with "
                              "scripts/train_pretrained.py)")
    advice = "pass --weights a file written by scripts/train_pretrained.py, or leave it out for the shipped one"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch refused a non-tensor object (never unpickled) or garbage
        raise CheckpointError(f"{path} is not a gm-nerf pretrained weights file: it holds something other than "
                              f"tensors and numbers, and was not loaded; {advice}") from err
    except Exception as err:
        raise CheckpointError(f"{path}: unreadable or truncated pretrained weights ({one_line(err)}); "
                              f"{advice}") from err
    if not isinstance(state, dict) or state.get("format") != WEIGHTS_FORMAT or not isinstance(state.get("weights"), dict):
        raise CheckpointError(f"{path}: not a gm-nerf pretrained weights file (format {WEIGHTS_FORMAT}); {advice}")
    method = state.get("method_name", "gm-nerf-small")
    if method not in PRETRAINED_METHODS:
        raise CheckpointError(f"{path}: weights of method {method!r}; gmnerf-pretrained builds "
                              f"{' or '.join(PRETRAINED_METHODS)}")
    weights = {k: (v.float() if v.is_floating_point() else v) for k, v in state["weights"].items()}
    return {"step": int(state.get("step", 0)), "method_name": method, "weights": weights}


@dataclass
class PretrainedRun:
    """Write a nerfstudio run folder holding a shipped pretrained model, set up for a dataset."""

    data: Path
    """Dataset folder or short name (anything ``ns-train gm-nerf-small --data`` accepts; detected by gmnerf-auto)."""
    method: PretrainedMethod = "gm-nerf-small"
    """Which shipped model: gm-nerf-small (256 px, fast on a CPU) or gm-nerf (512 px, for a GPU; shipped once trained).
    Ignored with --weights: a weights file names its own method."""
    output_dir: Path = Path("outputs")
    """Runs are written to OUTPUT_DIR/EXPERIMENT_NAME/METHOD/TIMESTAMP, as ns-train does."""
    experiment_name: Optional[str] = None
    """Defaults to the dataset folder's name."""
    timestamp: str = "pretrained"
    """Name of the run folder."""
    protocol: Optional[str] = None
    """Protocol preset or YAML (subjects, source and target views); default: the detected dataset's own."""
    resolution: Optional[int] = None
    """Override the protocol's image height in pixels (gm-nerf-small was trained at 256, gm-nerf at 512)."""
    body_model_dir: Optional[Path] = None
    """SMPL/SMPL-X model files, for captures whose bodies are given as parameters (see docs/capture.md)."""
    max_eval_frames_per_subject: Optional[int] = None
    """Keep at most this many evenly spaced evaluation frames per held-out person (fewer images for ns-eval)."""
    weights: Optional[Path] = None
    """Weights file to use (default: the one of --method shipped in the package)."""
    device: str = "cpu"
    """Device of the run's config: cpu, cuda, cuda:N or mps (``cuda`` renders faster on a GPU)."""
    force: bool = False
    """Replace the checkpoint of an existing run folder of the same name."""


def write_run(options: PretrainedRun) -> Path:
    """Builds the pipeline for ``options.data``, loads the pretrained weights, saves config.yml and a checkpoint.

    Returns the path of ``config.yml``.

    Raises:
        RunInputError: a bad device, weights file or output folder (one that another run is writing into included).
        HumanDataError: a bad dataset.
    """
    from gmnerf_ns.core.run_folder import unlock_run_folder
    from gmnerf_ns.training import method_configs

    check_device(options.device, "--device")
    if options.weights is None:
        options = dataclasses.replace(options, weights=default_weights(options.method))
        if not options.weights.is_file() and options.method != "gm-nerf-small":
            raise CheckpointError(f"no pretrained {options.method} ships with this version ({options.weights} is "
                                  "missing; it is trained on a GPU with scripts/train_pretrained.py --method "
                                  f"{options.method}): use --method gm-nerf-small, or --weights FILE")
    state = read_weights(options.weights)
    config = copy.deepcopy(getattr(method_configs, state["method_name"].replace("-", "_")).config)
    config.pipeline.datamanager.data = options.data
    config.pipeline.datamanager.dataparser.data = options.data
    if options.protocol is not None:
        config.pipeline.datamanager.dataparser.protocol = options.protocol
    if options.resolution is not None:
        config.pipeline.datamanager.dataparser.resolution = options.resolution
    if options.body_model_dir is not None:
        config.pipeline.datamanager.dataparser.body_model_dir = options.body_model_dir
    if options.max_eval_frames_per_subject is not None:
        config.pipeline.datamanager.dataparser.max_eval_frames_per_subject = options.max_eval_frames_per_subject
    config.output_dir = options.output_dir
    config.experiment_name = options.experiment_name or Path(options.data).name
    config.timestamp = options.timestamp
    config.machine.device_type = "cuda" if options.device.startswith("cuda") else options.device
    config.force = options.force
    config.load_dir = None
    try:
        _write_run(config, options, state)
    finally:
        unlock_run_folder(config)  # taken by check_output_dir (--force) or save_config
    return config.get_base_dir() / "config.yml"


def _write_run(config: Any, options: PretrainedRun, state: Dict[str, Any]) -> None:
    """The part of :func:`write_run` that writes into the run folder (which holds its lock meanwhile)."""
    from gmnerf_ns.core.run_folder import check_output_dir

    check_output_dir(config)
    pipeline = config.pipeline.setup(device=options.device, test_mode="test")
    model = pipeline.model
    missing, _, wrong = weight_mismatch(model.state_dict(), state["weights"])
    if missing or wrong:
        raise CheckpointError(f"{options.weights}: weights do not fit {state['method_name']} of this version "
                              f"({len(missing)} missing, e.g. {(missing or wrong)[0]}; {len(wrong)} of another shape)")
    model.load_state_dict(state["weights"], strict=False)
    config.save_config()
    checkpoint = config.get_checkpoint_dir() / f"step-{state['step']:09d}.ckpt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"step": state["step"], "pipeline": pipeline.state_dict(), "optimizers": {}, "schedulers": {},
                 "scalers": {}, "gmnerf": {"format": CHECKPOINT_FORMAT, "version": __version__,
                                           "method_name": state["method_name"], "pretrained": str(options.weights)}},
                checkpoint)
    close = getattr(pipeline.datamanager, "close", None)
    if close is not None:
        close()


def entrypoint() -> None:
    """Console-script entry point (``gmnerf-pretrained --help``)."""
    from gmnerf_ns.core.errors import HumanDataError

    options = tyro.cli(PretrainedRun, description=__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[2].split(
        "::")[0].replace("\n", " "))
    try:
        path = write_run(options)
    except (RunInputError, HumanDataError, FileNotFoundError) as err:
        print(f"gmnerf-pretrained: {err}", file=sys.stderr)
        sys.exit(1)
    print(f"gmnerf-pretrained: wrote a pretrained run for {options.data} ({path.parent.parent.name}); evaluate with "
          f"ns-eval --load-config {path} --output-path eval.json")
    print(path)


if __name__ == "__main__":
    entrypoint()
