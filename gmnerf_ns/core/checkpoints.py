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
to fall back to. A full disk is one :class:`DiskFullError` naming the file (:func:`full_disk_is_one_error`).

``--load-dir`` and ``ns-eval`` both read the newest readable checkpoint (:func:`read_latest_checkpoint`): a truncated
latest one is skipped with a warning naming it. ns-eval reaches it through :func:`eval_load_checkpoint` (installed by
``gmnerf_ns.training.nerfstudio_patches.install_eval_checkpoint_fallback``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import sys
from pathlib import Path, PurePath
from typing import Any, Dict, Iterator, List, Literal, Tuple

import torch
from nerfstudio.utils.rich_utils import CONSOLE
from torch import nn

from gmnerf_ns.core.errors import CleanExit, RunInputError

CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.ckpt$")
CHECKPOINT_FORMAT = 1
"""Version of the extra checkpoint entries the trainer writes (``gmnerf``, ``rng_states``)."""


class CheckpointError(RunInputError):
    """A checkpoint is missing, unreadable, of another method, or of a differently sized gm-nerf model."""


class DiskFullError(RunInputError):
    """A file could not be written because its disk (or the user's quota there) is full."""


def one_line(err: BaseException) -> str:
    """``Type: message`` of an exception on one line (torch's load errors span several, with advice that does not
    apply to gm-nerf files)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


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
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({one_line(err)})") from err
    if not isinstance(state, dict) or not isinstance(state.get("pipeline"), dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a nerfstudio checkpoint (no 'pipeline' weights and 'step')")
    return state


def read_latest_checkpoint(folder: Path, what: str, hint: str) -> Tuple[Path, Dict[str, Any]]:
    """(path, state) of the newest checkpoint in ``folder`` that can be read: a truncated or unreadable newer one is
    skipped with a warning naming it (a kill or a full disk while it was copied); any other problem is raised.

    Args:
        what: How the folder was given, for the messages (``--load-dir <path>``).
        hint: What to do when the folder holds no checkpoint.

    Raises:
        CheckpointError: no checkpoint in the folder, none readable, or the newest readable one is not a gm-nerf one.
    """
    found = list_checkpoints(folder)
    if not found:
        raise CheckpointError(f"{what}: no step-*.ckpt checkpoint in it ({hint})")
    for i, (_, path) in enumerate(reversed(found)):
        try:
            return path, read_checkpoint(path)
        except CheckpointError as err:
            if i == len(found) - 1 or not str(err).startswith(f"{path}: unreadable"):
                raise
            CONSOLE.print(f"[bold yellow]WARNING: {err}; falling back to the previous checkpoint", soft_wrap=True,
                          highlight=False)
    raise AssertionError("unreachable")  # the loop returns or raises on its last checkpoint


def eval_load_checkpoint(config: Any, pipeline: nn.Module) -> Tuple[Path, int]:
    """nerfstudio's ``eval_load_checkpoint`` for a gm-nerf run (ns-eval, ns-render, the viewer): loads the checkpoint
    of ``load_step``, or else the newest readable one in ``config.load_dir`` (:func:`read_latest_checkpoint`).

    Returns:
        The checkpoint's path and step, as upstream.

    Raises:
        CleanExit: no checkpoint, or none that can be read (one ``gmnerf error:`` line naming the file).
    """
    folder = Path(config.load_dir)
    try:
        if config.load_step is not None:
            path = folder / f"step-{config.load_step:09d}.ckpt"
            state = read_checkpoint(path)
        else:
            path, state = read_latest_checkpoint(folder, str(folder), "the run has not saved one yet; ns-train saves "
                                                 "one every --steps-per-save steps and when it ends")
    except CheckpointError as err:
        raise CleanExit(err) from err
    step = int(CHECKPOINT_NAME.match(path.name).group(1))
    pipeline.load_pipeline(state["pipeline"], int(state["step"]))
    CONSOLE.print(f":white_check_mark: Done loading checkpoint from {path}")
    return path, step


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


FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
"""The OS errors of a full disk or quota."""


def _not_written(path: object, code: int, kept: str = "") -> str:
    """The one line for a file a full disk stopped: which file, why, what is intact (``kept``), what to do."""
    if kept:
        return f"{path}: not written, the disk is full ({os.strerror(code)}); {kept}. Free some space there and run again"
    return f"{path}: not written, the disk is full ({os.strerror(code)}); free some space there and run again"


@contextlib.contextmanager
def full_disk_is_one_error(path: Path, kept: str = "nothing was changed") -> Iterator[None]:
    """Turns a full disk or quota (``ENOSPC``/``EDQUOT``) while ``path`` is written into a :class:`DiskFullError`
    naming it, saying what is intact (``kept``); other OS errors pass unchanged."""
    try:
        yield
    except OSError as err:
        if err.errno not in FULL_DISK:
            raise
        raise DiskFullError(_not_written(path, err.errno, kept)) from err


@contextlib.contextmanager
def full_disk_ends(tool: str) -> Iterator[None]:
    """Ends a command with one line when a write anywhere inside it meets a full disk or quota: the file, and what to
    do, instead of a traceback from whichever library was writing (PIL, matplotlib, trimesh, nerfstudio)."""
    try:
        yield
    except DiskFullError as err:
        raise SystemExit(f"{tool}: {err}") from None
    except OSError as err:
        if err.errno not in FULL_DISK:
            raise
        raise SystemExit(f"{tool}: {_not_written(err.filename or 'an output file', err.errno)}") from None


def install_full_disk_message() -> None:
    """Prints a full disk that ends any command uncaught (ns-eval's ``--output-path`` JSON, ns-render's frames) as one
    line naming the file, instead of a traceback; the exit status stays 1. Installed when nerfstudio discovers the
    gm-nerf methods, as the YAML guard is. Idempotent."""
    previous = sys.excepthook
    if getattr(previous, "_gmnerf", False):
        return

    def hook(kind, value, tb) -> None:
        if not (isinstance(value, OSError) and value.errno in FULL_DISK):
            previous(kind, value, tb)
            return
        sys.stderr.write(f"{Path(sys.argv[0]).name}: {_not_written(_written_file(value, tb), value.errno)}\n")

    hook._gmnerf = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _written_file(error: OSError, tb) -> str:
    """The file a failed write was for: the error's own, else the innermost ``pathlib.Path`` method's (its write
    methods report none when the final flush fails)."""
    if error.filename:
        return str(error.filename)
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        if isinstance(frame.f_locals.get("self"), PurePath):
            return str(frame.f_locals["self"])
    return "an output file"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` so that a reader (or a crash) only ever sees the old file or the complete new one.

    Raises:
        DiskFullError: the disk is full (the temporary file is removed, an existing ``path`` is untouched).
    """
    path = Path(path)
    tmp = _partial_name(path)
    kept = "the checkpoints already there are intact" if path.suffix == ".ckpt" else "an existing file is intact"
    try:
        with full_disk_is_one_error(path, kept), open(tmp, "wb") as handle:
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
