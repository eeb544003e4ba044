"""Checkpoint files: the one place gm-nerf reads a ``.ckpt`` (as tensors and numbers only, with one-line errors) and
writes one (atomically, keeping the newest few).

Every checkpoint read (``--load-dir``/``--load-checkpoint`` resume, ``--pipeline.pretrained-checkpoint``
initialisation) goes through :func:`read_checkpoint`, which calls ``torch.load(weights_only=True)``: a crafted file
that names any Python object other than tensors, containers and numbers is refused before it can run code, and a
missing, truncated or foreign file is a :class:`CheckpointError` naming it. ``ns-eval``, ``ns-render`` and the viewer
read the run's own checkpoint through nerfstudio's ``eval_setup``, which uses ``torch.load``'s ``weights_only=True``
default (torch >= 2.6); building a pipeline never loads one.

Every write goes through :func:`atomic_save`: a temporary file next to the checkpoint folder, flushed, fsynced and
renamed with ``os.replace``, so that a kill at any moment leaves the previous checkpoint intact and nothing
half-written in ``nerfstudio_models/`` (nerfstudio parses every file name there). Only then does
:func:`prune_checkpoints` remove older ones, so that a latest checkpoint found corrupt on resume leaves the one before
to fall back to.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from pathlib import Path
from typing import Any, Dict, List, Literal, Tuple

import torch
from torch import nn

from gmnerf_ns.errors import RunInputError

CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.ckpt$")
CHECKPOINT_FORMAT = 1
"""Version of the extra checkpoint entries the trainer writes (``gmnerf``, ``rng_states``)."""


class CheckpointError(RunInputError):
    """A checkpoint is missing, unreadable, of another method, or of a differently sized gm-nerf model."""


def list_checkpoints(folder: Path) -> List[Tuple[int, Path]]:
    """(step, path) of every ``step-<n>.ckpt`` in ``folder``, oldest first (empty if the folder does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / m.group(0)) for m in map(CHECKPOINT_NAME.match, os.listdir(folder)) if m]
    return sorted(found)


def read_checkpoint(path: Path) -> Dict[str, Any]:
    """Loads a nerfstudio checkpoint as plain weights, with a clear error for missing, truncated or foreign files.

    Raises:
        CheckpointError: the file is missing, truncated, holds Python objects other than tensors and numbers (it is
            then never unpickled), or is not a nerfstudio checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch refused a non-tensor object: not written by this trainer
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a gm-nerf checkpoint: it holds Python objects other than tensors and "
                              f"numbers, which gm-nerf checkpoints never do ({first})") from err
    except Exception as err:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or not isinstance(state.get("pipeline"), dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a nerfstudio checkpoint (no 'pipeline' weights and 'step')")
    return state


def model_weights(state: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The model's tensors in a checkpoint, without nerfstudio's ``_model.`` and DDP's ``module.`` prefixes."""
    weights = {}
    for key, value in state["pipeline"].items():
        if key.startswith("_model."):
            key = key[len("_model."):]
            weights[key[len("module."):] if key.startswith("module.") else key] = value
    return weights


def weight_mismatch(ours: Dict[str, torch.Tensor], theirs: Dict[str, torch.Tensor]
                    ) -> Tuple[List[str], List[str], List[str]]:
    """Sorted names of the tensors ``theirs`` lacks, those only it has, and the shared ones of another shape."""
    wrong = sorted(k for k in ours.keys() & theirs.keys() if tuple(ours[k].shape) != tuple(theirs[k].shape))
    return sorted(ours.keys() - theirs.keys()), sorted(theirs.keys() - ours.keys()), wrong


def check_checkpoint_fits(model: nn.Module, state: Dict[str, Any], path: Path, purpose: Literal["resume", "init"]
                          ) -> None:
    """Raises :class:`CheckpointError` unless ``state`` holds weights of this very model (``resume``) or of a gm-nerf
    model with the same tensor shapes (``init``, missing/extra tensors allowed)."""
    ours = model.state_dict()
    theirs = model_weights(state)
    stamp = state.get("gmnerf") if isinstance(state.get("gmnerf"), dict) else {}
    writer = f" (written by {stamp['method_name']})" if stamp.get("method_name") else ""
    flag = "--load-dir/--load-checkpoint" if purpose == "resume" else "--pipeline.pretrained-checkpoint"
    shared = ours.keys() & theirs.keys()
    if len(shared) < max(1, len(ours) // 2):
        example = ", ".join(sorted(theirs)[:2]) or "no model weights at all"
        raise CheckpointError(
            f"{path} is not a gm-nerf checkpoint{writer}: it holds {len(shared)} of this model's {len(ours)} tensors "
            f"(its model has e.g. {example}); {flag} must point at a gm-nerf run's nerfstudio_models"
        )
    missing, unexpected, wrong = weight_mismatch(ours, theirs)
    if wrong or (purpose == "resume" and (missing or unexpected)):
        details = []
        if wrong:
            k = wrong[0]
            details.append(f"{len(wrong)} tensors differ in shape, e.g. {k}: checkpoint {tuple(theirs[k].shape)}, "
                           f"this config {tuple(ours[k].shape)}")
        if missing and purpose == "resume":
            details.append(f"{len(missing)} missing, e.g. {missing[0]}")
        if unexpected and purpose == "resume":
            details.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
        raise CheckpointError(
            f"{path} holds a gm-nerf model of another configuration{writer} ({'; '.join(details)}); "
            + ("resume with the method and model options the run was trained with"
               if purpose == "resume" else "use a checkpoint of the same model size")
        )


def load_model_weights(model: nn.Module, path: Path, purpose: Literal["resume", "init"]) -> Dict[str, Any]:
    """Reads ``path`` (:func:`read_checkpoint`), checks that it fits ``model`` (:func:`check_checkpoint_fits`) and
    loads its model weights into ``model``: all of them for ``resume``, those the model has for ``init``.

    Returns:
        The whole checkpoint (step, optimizers, ...), for a caller that resumes more than the model.
    """
    state = read_checkpoint(path)
    check_checkpoint_fits(model, state, path, purpose)
    model.load_state_dict(model_weights(state), strict=purpose == "resume")
    return state


# ----------------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------------
def _partial_name(path: Path) -> Path:
    # Outside the checkpoint folder: nerfstudio's --load-dir and ns-eval parse every file name in it as step-N.ckpt.
    return path.parent.parent / f".{path.parent.name}-{path.name}.partial-{os.getpid()}"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` so that a reader (or a crash) only ever sees the old file or the complete new one."""
    path = Path(path)
    tmp = _partial_name(path)
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (not supported on every filesystem)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_partials(checkpoint_dir: Path) -> None:
    """Deletes temporary files left by a save that was killed (they never replaced a checkpoint)."""
    for stale in checkpoint_dir.parent.glob(f".{checkpoint_dir.name}-step-*.ckpt.partial-*"):
        stale.unlink(missing_ok=True)


def prune_checkpoints(checkpoint_dir: Path, step: int, keep: int) -> None:
    """Keeps the checkpoint of ``step`` and the ``keep - 1`` before it (at least the one of ``step``); later steps
    (left by a run resumed from an earlier checkpoint) and older ones are deleted."""
    latest = Path(checkpoint_dir) / f"step-{step:09d}.ckpt"
    earlier = [other for s, other in list_checkpoints(checkpoint_dir) if s < step]
    before = max(1, keep) - 1
    kept = {latest, *(earlier[-before:] if before else [])}
    for _, other in list_checkpoints(checkpoint_dir):
        if other not in kept:
            other.unlink(missing_ok=True)
