"""The built-in synthetic multi-view human dataset (``gmnerf-synth``): writes or resumes every subject, in parallel
workers or in turn, then the split.

Each subject is a shaped, clothed, textured body (``body``, ``garments``, ``appearance``) walking a slow circle
(``motion``) in front of a static camera ring (``cameras``), sampled in ``subject``. Frames are rendered with the
z-buffer rasteriser and written in the ZJU-MoCap layout (``subject_files``, ``writer``), so the ZJU-MoCap parser reads
built-in and real data alike (the options are in ``config``):

    <out>/split.json, <out>/manifest.json
    <out>/subject_000/annots.npy, body_model.npz, subject.json
    <out>/subject_000/Camera_B1/000000.jpg, mask/Camera_B1/000000.png
    <out>/subject_000/params/0.npy, vertices/0.npy (naked body proxy), meshes/0.ply (clothed ground truth)

Everything is derived from per-subject random streams ``SeedSequence(seed, spawn_key=(subject, stream))``, so subject
k is the same whatever the number of subjects, cameras or frames, and a seed always gives the same bytes (for the same
software stack). Runs are resumable: complete frames are skipped, a run with other settings is refused.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Optional

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gmnerf_ns.synth import writer
from gmnerf_ns.synth.body import BodyModel
from gmnerf_ns.synth.config import GENERATOR, SynthConfig, SynthError
from gmnerf_ns.synth.subject import build_subject, subject_name
from gmnerf_ns.synth.subject_files import write_frame, write_subject_files

SUBJECT_PATTERN = re.compile(r"^subject_\d{3,}$")
"""The subject folders the generator writes (and deletes under ``--force``)."""


def dataset_complete(config: SynthConfig) -> bool:
    """Whether every subject and frame of ``config`` is written and split.json exists."""
    if not (config.out / "split.json").exists():
        return False
    for k in range(config.num_subjects):
        subject_dir = config.out / subject_name(k)
        if not writer.is_complete(subject_dir, "subject"):
            return False
        if not all(writer.is_complete(subject_dir, f"frame_{f}") for f in range(config.num_frames)):
            return False
    return True


def _clear(out: Path) -> None:
    """Deletes what the generator writes in ``out`` (and nothing else)."""
    for name in ("split.json", "manifest.json"):
        (out / name).unlink(missing_ok=True)
    for child in out.iterdir():
        if child.is_dir() and SUBJECT_PATTERN.match(child.name):
            shutil.rmtree(child)


def _prepare_output(config: SynthConfig) -> bool:
    """Checks an existing output folder against the settings; clears it under --force. False = nothing to do."""
    out = config.out
    manifest = out / "manifest.json"
    if out.exists() and any(out.iterdir()):
        if not manifest.exists():
            if not config.force:
                raise SynthError(
                    f"{out} exists and is not a gmnerf-synth dataset (no manifest.json); choose another "
                    "--out, or pass --force to write into it (only subject_*/split.json are replaced)"
                )
        else:
            old = json.loads(manifest.read_text()).get("settings", {})
            if old != config.settings() and not config.force:
                diff = {k: (old.get(k), v) for k, v in config.settings().items() if old.get(k) != v}
                raise SynthError(
                    f"{out} holds a dataset generated with other settings {diff} (old, new); pass "
                    "--force to delete it and regenerate, or choose another --out"
                )
            if old == config.settings() and dataset_complete(config) and not config.force:
                if config.skip_if_complete:
                    return False
                raise SynthError(
                    f"{out} already holds a complete dataset with these settings; pass --force to "
                    "delete and regenerate it"
                )
        if config.force:
            _clear(out)
    out.mkdir(parents=True, exist_ok=True)
    if not manifest.exists():
        writer.atomic_write_bytes(manifest, writer.json_bytes({"generator": GENERATOR, "settings": config.settings()}))
    return True


def generate_subject(config: SynthConfig, index: int, body: Optional[BodyModel] = None, on_frame=None) -> int:
    """Writes the missing files of subject ``index``; returns the number of frames rendered."""
    body = body or BodyModel.load(dtype=torch.float64)
    subject_dir = config.out / subject_name(index)
    frames = [f for f in range(config.num_frames) if not writer.is_complete(subject_dir, f"frame_{f}")]
    if not frames and writer.is_complete(subject_dir, "subject"):
        return 0
    subject = build_subject(body, config, index)
    if not writer.is_complete(subject_dir, "subject"):
        write_subject_files(body, subject, config, subject_dir)
    for frame in frames:
        write_frame(body, subject, config, subject_dir, frame)
        if on_frame is not None:
            on_frame()
    return len(frames)


def _worker(config: SynthConfig, index: int) -> int:
    """Entry point of a worker process."""
    torch.set_num_threads(max(1, config.threads))
    return generate_subject(config, index)


def generate(config: SynthConfig, body: Optional[BodyModel] = None) -> Path:
    """Generates (or resumes) the dataset described by ``config``; returns the output folder."""
    config.validate()
    if not _prepare_output(config):
        return config.out
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, config.threads))
    try:
        subjects = [subject_name(k) for k in range(config.num_subjects)]
        writer.remove_stale_temporaries(config.out / s for s in subjects)
        done = sum(writer.is_complete(config.out / s, f"frame_{f}") for s in subjects for f in range(config.num_frames))
        columns = (
            TextColumn("gmnerf-synth"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("frames {task.fields[subject]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, disable=not config.progress) as progress:
            task = progress.add_task(
                "generate", total=config.num_subjects * config.num_frames, completed=done, subject=""
            )
            if config.workers > 1:
                # Spawned (not forked) workers: forking a process whose torch thread pool is running can deadlock.
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(config.workers, mp_context=context) as pool:
                    futures = [pool.submit(_worker, config, k) for k in range(config.num_subjects)]
                    for future in as_completed(futures):
                        progress.advance(task, future.result())
            else:
                body = body or BodyModel.load(dtype=torch.float64)
                for k, name in enumerate(subjects):
                    progress.update(task, subject=name)
                    generate_subject(config, k, body, on_frame=lambda: progress.advance(task))
        num_train = config.num_subjects - config.num_test_subjects
        split = {
            "train": subjects[:num_train],
            "test": subjects[num_train:],
            "generator": GENERATOR,
            "seed": config.seed,
        }
        writer.atomic_write_bytes(config.out / "split.json", writer.json_bytes(split))
    finally:
        torch.set_num_threads(previous_threads)
    return config.out
