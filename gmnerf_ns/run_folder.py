"""A run's output folder: nothing overwritten, nothing left behind.

A run folder that already holds checkpoints is refused unless the run resumes from it (``--load-dir``/
``--load-checkpoint`` inside it) or ``--force`` is given (:func:`check_output_dir`). ``config.yml`` is written
atomically, and what writing it created is remembered on the config, so that a run whose setup then fails (bad data,
a wrong checkpoint) removes it again (:func:`remove_new_run_files`).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Optional, Tuple

from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.checkpoints import list_checkpoints
from gmnerf_ns.errors import ExistingRunError


def atomic_write_text(path: Path, text: str) -> None:
    """Writes a text file through a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(text, "utf8")
    os.replace(tmp, path)


def _inside(path: Optional[Path], folder: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(folder.resolve())


def check_output_dir(config: TrainerConfig) -> None:
    """Refuses to write into a run folder that already holds checkpoints, unless resuming from it or ``--force``
    (which deletes those checkpoints, so the new run's are never mixed with them).

    Raises:
        ExistingRunError: the folder holds checkpoints, the run does not resume from it and ``--force`` is not given.
    """
    base = config.get_base_dir()
    found = list_checkpoints(config.get_checkpoint_dir())
    if not found or _inside(config.load_dir, base) or _inside(config.load_checkpoint, base):
        return
    if config.force:
        for _, path in found:
            path.unlink(missing_ok=True)
        CONSOLE.log(f"--force: deleted {len(found)} checkpoint(s) of the previous run in {base}")
        return
    raise ExistingRunError(
        f"{base} already holds a run (checkpoint step-{found[-1][0]:09d}.ckpt); nothing was changed. Resume it with "
        f"--load-dir {config.get_checkpoint_dir()} and the run's options (ns-train --load-config ignores other "
        "options), pick another --timestamp or --experiment-name, or pass --force to overwrite it"
    )


def write_run_config(config: TrainerConfig, text: str) -> Tuple[Path, ...]:
    """Writes ``text`` as the run's config.yml atomically, creating the run folder. An existing config.yml with other
    text (a run resumed in place with other options) is kept, renamed to ``config.<time>.yml``.

    Returns:
        What this created, for :func:`remove_new_run_files`: config.yml (unless it existed), then the new folders,
        deepest first.
    """
    base = config.get_base_dir()
    created = [folder for folder in (base, *base.parents) if not folder.exists()]  # deepest first
    base.mkdir(parents=True, exist_ok=True)
    path = base / "config.yml"
    existed = path.exists()
    if existed and path.read_text("utf8") != text:  # resuming in place with other options: keep the old
        path.rename(base / f"config.{time.strftime('%Y-%m-%d_%H%M%S')}.yml")
    if not existed:
        created.insert(0, path)
    CONSOLE.log(f"Saving config to: {path}")
    atomic_write_text(path, text)
    return tuple(created)


def remove_new_run_files(config: TrainerConfig) -> None:
    """Deletes what :meth:`GMNeRFTrainerConfig.save_config <gmnerf_ns.trainer.GMNeRFTrainerConfig.save_config>`
    created for a run whose setup then failed, so that a failed start leaves no run folder behind: the config.yml it
    wrote (not one that was there before) and the folders it made, while they are empty. A folder that existed before
    is never removed."""
    for path in config.__dict__.pop("_created_paths", ()):  # config.yml, then the folders, deepest first
        with contextlib.suppress(OSError):  # a folder something else wrote into meanwhile stays
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
