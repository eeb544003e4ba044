"""A run's output folder: one writer, nothing overwritten, nothing left behind.

A run folder that already holds checkpoints is refused unless the run resumes from it (``--load-dir``/
``--load-checkpoint`` inside it) or ``--force`` is given (:func:`check_output_dir`). ``config.yml`` is written
atomically, and what writing it created is remembered on the config, so that a run whose setup then fails (bad data,
a wrong checkpoint) removes it again (:func:`remove_new_run_files`).

**One writer.** Before anything is written into a run folder the run takes its lock, ``<run folder>/.gmnerf.lock``
(:func:`lock_run_folder`): a file created with ``O_CREAT | O_EXCL`` holding the pid, host and start time of the
process that took it. A second ``ns-train`` (or ``--load-dir`` resume, or ``gmnerf-pretrained``) into the same folder
meets it and stops with one line; a lock left by a process that no longer runs on this host (killed) is taken over
with a note. The lock is released when training ends, normally or not (:func:`unlock_run_folder`). Under ns-train the
process that writes config.yml takes it; with several training processes only rank 0 releases it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from gmnerf_ns.core.checkpoints import full_disk_is_one_error, list_checkpoints
from gmnerf_ns.core.errors import ExistingRunError, RunInputError

LOCK_NAME = ".gmnerf.lock"
"""The run folder's lock file (see the module docstring)."""


class RunFolderInUseError(RunInputError):
    """Another process is writing into the run folder (it holds the folder's lock)."""


def atomic_write_text(path: Path, text: str) -> None:
    """Writes a text file through a temporary file and ``os.replace``.

    Raises:
        DiskFullError: the disk is full (an existing file is left as it was).
    """
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with full_disk_is_one_error(path, "an existing file is intact"):
            tmp.write_text(text, "utf8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------------------------------------
# One writer per run folder
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunLock:
    """A run-folder lock this run holds: the file, and the token written into it (only that lock is removed)."""

    path: Path
    token: str


def _read_lock(path: Path) -> Optional[Dict[str, Any]]:
    """The lock's fields, ``{}`` if the file is gone, None if it is not a lock written by :func:`acquire_run_lock`. A
    lock being written (created, not yet filled) is waited for briefly."""
    for _ in range(20):
        try:
            text = path.read_text("utf8")
        except FileNotFoundError:
            return {}
        except OSError:
            return None
        try:
            info = json.loads(text)
        except ValueError:
            time.sleep(0.05)
            continue
        ok = isinstance(info, dict) and isinstance(info.get("pid"), int) and info["pid"] > 0
        return info if ok and all(isinstance(info.get(k), str) for k in ("host", "started", "token")) else None
    return None


def _proc_stat(pid: int) -> Optional[Tuple[str, int]]:
    """State and start time (clock ticks after boot) of process ``pid`` from Linux's ``/proc``, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text("ascii").rpartition(")")[2].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _process_alive(pid: int, start: Optional[int]) -> bool:
    """Whether process ``pid`` of this host still runs and, where ``/proc`` tells (Linux), is the process that started
    at ``start`` (a zombie, or a later process that got the same pid, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # runs, as another user
    stat = _proc_stat(pid)
    if stat is None:
        return True
    return stat[0] not in ("Z", "X") and (start is None or stat[1] == start)


def _describe(info: Dict[str, Any]) -> str:
    return f"pid {info['pid']} on {info['host']}, started {info['started']}"


def _take_over(path: Path, stale: Dict[str, Any]) -> None:
    """Removes the stale lock ``stale`` at ``path``, unless another process replaced it meanwhile (that one is put
    back)."""
    aside = path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return  # another process removed it first
    if (_read_lock(aside) or {}).get("token") != stale["token"]:
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)  # a live lock taken meanwhile: put it back
    aside.unlink(missing_ok=True)


def acquire_run_lock(folder: Path) -> RunLock:
    """Takes ``folder``'s lock for this process (the folder must exist); a lock of a process that no longer runs on
    this host is taken over with a note.

    Raises:
        RunFolderInUseError: a live process (this one included), a process on another host, or a file that is not a
            gm-nerf lock holds it.
        DiskFullError: the lock could not be written.
    """
    path = Path(folder) / LOCK_NAME
    host = socket.gethostname()
    for _ in range(10):
        token = uuid.uuid4().hex
        stat = _proc_stat(os.getpid())
        info = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime()),
                "process_start": None if stat is None else stat[1], "token": token}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder == {}:
                continue  # released meanwhile
            if holder is None:
                raise RunFolderInUseError(
                    f"{path} exists but is not a gm-nerf run lock; nothing was written. If no ns-train writes into "
                    f"{folder}, delete it and run again") from None
            start = holder.get("process_start")
            if holder["host"] == host and not _process_alive(holder["pid"], start if isinstance(start, int) else None):
                CONSOLE.print(f"[bold yellow]gmnerf: taking over {path}, left by a run that no longer runs "
                              f"({_describe(holder)})", soft_wrap=True, highlight=False)
                _take_over(path, holder)
                continue
            where = "" if holder["host"] == host else " (on another machine: if it no longer runs, delete the lock)"
            raise RunFolderInUseError(
                f"{folder} is in use by another run ({_describe(holder)}){where}; nothing was written. Wait for it to "
                "end or stop it, or pick another --timestamp or --experiment-name") from None
        try:
            with full_disk_is_one_error(path), os.fdopen(fd, "w", encoding="utf8") as handle:
                handle.write(json.dumps(info))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return RunLock(path, token)
    raise RunFolderInUseError(f"{path}: could not take the run folder's lock, other runs keep taking it; nothing was "
                              "written. Run one at a time")


def release_run_lock(lock: RunLock) -> None:
    """Removes ``lock``'s file if it is still this lock (never one another process took over)."""
    if (_read_lock(lock.path) or {}).get("token") == lock.token:
        lock.path.unlink(missing_ok=True)


def lock_run_folder(config: TrainerConfig) -> List[Path]:
    """Takes the run folder's lock for ``config``'s run (:func:`acquire_run_lock`), creating the folder, unless the run
    holds it already. The lock is kept on the config (never saved in config.yml), and travels with it to the training
    processes.

    Returns:
        The folders this created, deepest first (removed again if taking the lock fails).
    """
    base = config.get_base_dir()
    held = config.__dict__.get("_run_lock")
    if held is not None and held.path == base / LOCK_NAME:
        return []
    created = [folder for folder in (base, *base.parents) if not folder.exists()]  # deepest first
    with full_disk_is_one_error(base):
        base.mkdir(parents=True, exist_ok=True)
    try:
        config.__dict__["_run_lock"] = acquire_run_lock(base)
    except BaseException:
        _remove_empty(created)
        raise
    return created


def unlock_run_folder(config: TrainerConfig) -> None:
    """Releases the run folder's lock the run holds, if any (:func:`release_run_lock`)."""
    lock = config.__dict__.pop("_run_lock", None)
    if lock is not None:
        release_run_lock(lock)


def _remove_empty(paths) -> None:
    for path in paths:  # files, then folders deepest first
        with contextlib.suppress(OSError):  # a folder something else wrote into meanwhile stays
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()


def _inside(path: Optional[Path], folder: Path) -> bool:
    return path is not None and Path(path).resolve().is_relative_to(folder.resolve())


def check_output_dir(config: TrainerConfig) -> None:
    """Refuses to write into a run folder that already holds checkpoints, unless resuming from it or ``--force``
    (which deletes those checkpoints, so the new run's are never mixed with them).

    Raises:
        ExistingRunError: the folder holds checkpoints, the run does not resume from it and ``--force`` is not given.
        RunFolderInUseError: ``--force`` is given and another run writes into the folder.
    """
    base = config.get_base_dir()
    found = list_checkpoints(config.get_checkpoint_dir())
    if not found or _inside(config.load_dir, base) or _inside(config.load_checkpoint, base):
        return
    if config.force:
        lock_run_folder(config)  # never delete the checkpoints of a run that is writing there
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
    """Takes the run folder's lock (:func:`lock_run_folder`, creating the folder), then writes ``text`` as the run's
    config.yml atomically. An existing config.yml with other text (a run resumed in place with other options) is kept,
    renamed to ``config.<time>.yml``. If this fails, the lock is released and what it created removed.

    Returns:
        What this created, for :func:`remove_new_run_files`: config.yml (unless it existed), then the new folders,
        deepest first.

    Raises:
        RunFolderInUseError: another run writes into the folder.
        DiskFullError: the disk is full.
    """
    base = config.get_base_dir()
    created = lock_run_folder(config)
    try:
        path = base / "config.yml"
        existed = path.exists()
        if existed and path.read_text("utf8") != text:  # resuming in place with other options: keep the old
            path.rename(base / f"config.{time.strftime('%Y-%m-%d_%H%M%S')}.yml")
        if not existed:
            created.insert(0, path)
        CONSOLE.log(f"Saving config to: {path}")
        atomic_write_text(path, text)
    except BaseException:
        unlock_run_folder(config)
        _remove_empty(created)
        raise
    return tuple(created)


def remove_new_run_files(config: TrainerConfig) -> None:
    """Releases the run folder's lock and deletes what :meth:`GMNeRFTrainerConfig.save_config
    <gmnerf_ns.training.trainer.GMNeRFTrainerConfig.save_config>` created for a run whose setup then failed, so that a
    failed start leaves no run folder behind: the config.yml it wrote (not one that was there before) and the folders
    it made, while they are empty. A folder that existed before is never removed."""
    unlock_run_folder(config)
    _remove_empty(config.__dict__.pop("_created_paths", ()))  # config.yml, then the folders, deepest first
