"""ns-eval for a cross-subject model: the protocol's metrics per held-out subject, novel view vs novel pose, per image.

``GMNeRFPipeline.get_average_eval_image_metrics`` (what ``ns-eval`` calls) delegates to
:func:`average_eval_image_metrics`. It keeps nerfstudio's keys (``psnr``, ``ssim``, ``lpips`` when available,
``*_std``, ``num_rays_per_sec``, ``fps``: means over every evaluation image) and, for ns-eval, adds:

* ``settings``: the same means for ``novel_view`` and ``novel_pose`` images separately;
* ``per_subject``: per held-out subject, all images and each setting;
* ``subject_mean``: the mean of the per-subject means (the NHP-style average, each subject weighted equally);
* ``per_image``: subject, frame, camera, setting and metrics of every image;
* ``lpips_status``: whether LPIPS was computed; without pretrained weights (offline: not cached and not downloadable)
  it is not (the reason says which file is missing), and no ``lpips`` number is reported;
* ``geometry``: Chamfer and P2S (cm) of marching cubes on the model's density against the ground-truth meshes, for
  data that has them (``SubjectRecord.gt_mesh_dir``), or why not.

**Novel view vs novel pose.** The evaluation split holds the protocol's target views of its evaluation frames. An
image is *novel pose* when its frame is not one of the frames the protocol trains on for that subject
(``protocol.frames_for("train", subject)``), i.e. a held-out frame; otherwise it is *novel view* (a training frame
seen from a target camera). For the per-subject Neural Body protocol this is exactly NB's split; for unseen subjects
(NHP) every frame is unseen, and the split tells which frames fall in the protocol's training-frame sampling.

During training (``step`` given) only flat scalars are returned (``novel_view/psnr``, ...), which is what nerfstudio's
writer accepts; geometry is skipped there.

**No overwriting.** nerfstudio's ``ns-eval`` writes its ``--output-path`` JSON itself, over any existing file, after
this function returns; this function is the only gm-nerf code it runs before, so :func:`refuse_existing_eval_output`
looks at its caller (nerfstudio's ``ComputePSNR``, read, not patched) and stops before evaluating when that file
exists.

**One line per problem.** Under ns-eval a problem the user can fix (a corrupt or missing held-out image, a full disk
while the renders are written) ends it with one ``gmnerf error:`` line naming the file, not a traceback.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import time
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

import numpy as np
import torch
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gmnerf_ns.core.checkpoints import full_disk_is_one_error
from gmnerf_ns.core.errors import USER_ERRORS, CleanExit, HumanDataError
from gmnerf_ns.eval import geometry

NOVEL_VIEW = "novel_view"
NOVEL_POSE = "novel_pose"
SETTINGS = (NOVEL_VIEW, NOVEL_POSE)
IMAGE_METRICS = ("psnr", "ssim", "lpips")
NOVEL_POSE_RULE = ("novel_pose = the image's frame is not among the frames the protocol samples for training that "
                   "subject (protocol.frames_for('train', subject)); novel_view = it is")


@dataclass
class ViewResult:
    """Metrics of one evaluation image and where it comes from."""

    index: int
    """Index into the evaluation dataset."""
    subject: str
    frame_id: int
    camera: int
    """Position of the target camera in the subject's camera list."""
    camera_name: str
    setting: str
    """``novel_view`` or ``novel_pose``."""
    psnr: float
    ssim: float
    lpips: Optional[float]
    num_rays_per_sec: float
    fps: float
    images: Dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Kept only when asked for: ``pred``, ``gt``, ``error`` (H, W, 3) in [0, 1] and ``sources`` (m, H, W, 3)."""

    def to_json(self) -> Dict[str, Any]:
        out = asdict(self)
        out.pop("images")
        return out


@dataclass
class LPIPSStatus:
    """Whether LPIPS was computed with real pretrained weights."""

    available: bool
    reason: Optional[str] = None


def lpips_metric():
    """``(LPIPSMetric or None, LPIPSStatus)``: the metric only when its pretrained weights are cached or downloaded."""
    from gmnerf_ns.model.metrics import LPIPSMetric

    try:
        metric = LPIPSMetric()
    except Exception as err:  # e.g. the lpips package is broken: report it, never fall back to random weights
        return None, LPIPSStatus(False, f"LPIPS metric disabled: {err}")
    if not metric.available:
        return None, LPIPSStatus(False, metric.reason)
    return metric, LPIPSStatus(True)


def training_frames(datamanager) -> Dict[str, Optional[Set[int]]]:
    """Per evaluation subject, the frame ids the protocol's training-frame sampling selects (None = unknown)."""
    dataparser = datamanager.dataparser
    protocol = dataparser.protocol
    out: Dict[str, Optional[Set[int]]] = {}
    folders = None
    for subject in datamanager.eval_collection.subjects:
        train_sampling = protocol.frames_for("train", subject.name)
        if train_sampling == protocol.frames_for("test", subject.name):
            out[subject.name] = {f.frame_id for f in subject.frames}  # the protocol evaluates on training frames
            continue
        try:
            if folders is None:
                folders = dataparser.find_subjects(dataparser.resolve_root())
            record = dataparser.parse_subject(subject.name, folders[subject.name], train_sampling, protocol.resolution)
            out[subject.name] = {f.frame_id for f in record.frames}
        except (HumanDataError, KeyError, OSError) as err:
            CONSOLE.log(f"[yellow]cannot tell novel-view from novel-pose frames of {subject.name} ({err}); "
                        "its images count as novel view")
            out[subject.name] = None
    return out


def _setting(train_frames: Optional[Set[int]], frame_id: int) -> str:
    return NOVEL_VIEW if train_frames is None or frame_id in train_frames else NOVEL_POSE


@torch.no_grad()
def evaluate_views(pipeline, lpips=None, output_path: Optional[Path] = None, keep_images: Iterable[int] = (),
                   indices: Optional[Iterable[int]] = None) -> List[ViewResult]:
    """Renders every evaluation image (or ``indices``) and computes its metrics with ``gmnerf_ns.model.metrics``.

    Args:
        pipeline: A :class:`~gmnerf_ns.training.pipeline.GMNeRFPipeline`.
        lpips: An available ``LPIPSMetric`` or None.
        output_path: If given, writes ``eval_img_<i>.png`` (GT | prediction | error) and ``eval_accumulation_<i>.png``
            as nerfstudio's evaluation does.
        keep_images: Indices whose images (and source views) are returned in ``ViewResult.images`` (for reports).
        indices: Evaluation images to render (default: all).
    """
    from gmnerf_ns.model.metrics import image_metrics

    dm, model = pipeline.datamanager, pipeline.model
    was_training = model.training
    model.eval()
    keep = set(keep_images)
    frames = training_frames(dm)
    indices = list(range(len(dm.eval_dataset))) if indices is None else list(indices)
    if output_path is not None:
        output_path.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), TimeElapsedColumn(),
                      MofNCompleteColumn(), transient=True) as progress:
            task = progress.add_task("[green]Evaluating held-out images...", total=len(indices))
            for i in indices:
                camera, batch = dm.eval_image(i)
                meta = camera.metadata
                subject_index, frame_id = int(meta["subject_index"].view(-1)[0]), int(meta["frame_id"].view(-1)[0])
                cam = int(meta["camera_index"].view(-1)[0])
                start = time()
                outputs = model.get_outputs_for_camera(camera)
                elapsed = max(time() - start, 1e-9)
                pred = outputs["rgb"].clamp(0, 1).cpu()
                gt = batch["image"].cpu()
                try:
                    metrics = image_metrics(pred, gt, batch["bbox_mask"].cpu(), lpips=lpips)
                except ValueError as err:  # LPIPS refuses crops smaller than its network's receptive field
                    if lpips is None:
                        raise
                    CONSOLE.log(f"[yellow]no LPIPS for evaluation image {i}: {err}")
                    metrics = image_metrics(pred, gt, batch["bbox_mask"].cpu(), lpips=None)
                subject, frame, _ = dm.frame(subject_index, frame_id)
                num_rays = int(camera.height.view(-1)[0]) * int(camera.width.view(-1)[0])
                result = ViewResult(
                    index=i, subject=subject.name, frame_id=frame_id, camera=cam,
                    camera_name=subject.camera_names[cam], setting=_setting(frames.get(subject.name), frame_id),
                    psnr=float(metrics["psnr"]), ssim=float(metrics["ssim"]),
                    lpips=None if metrics["lpips"] is None else float(metrics["lpips"]),
                    num_rays_per_sec=num_rays / elapsed, fps=1.0 / elapsed,
                )
                error = (pred - gt).abs().mean(-1, keepdim=True).clamp(0, 1).expand(-1, -1, 3)
                if output_path is not None:
                    _save_png(output_path / f"eval_img_{i:04d}.png", torch.cat([gt, pred, error], dim=1))
                    _save_png(output_path / f"eval_accumulation_{i:04d}.png",
                              outputs["accumulation"].clamp(0, 1).expand(-1, -1, 3).cpu())
                if i in keep:
                    sources = dm.source_views(subject_index, frame_id)
                    result.images = {
                        "pred": pred.numpy(), "gt": gt.numpy(), "error": error[..., 0].numpy(),
                        "sources": (sources.images * sources.masks).permute(0, 2, 3, 1).numpy(),
                    }
                results.append(result)
                progress.advance(task)
    finally:
        model.train(was_training)
    return results


def _save_png(path: Path, image: torch.Tensor) -> None:
    import imageio.v2 as imageio

    with full_disk_is_one_error(path, "the renders written before it are intact"):
        imageio.imwrite(path, (image.numpy() * 255).round().astype(np.uint8))


def _mean_std(values: List[float]) -> Tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def _values(results: List[ViewResult], key: str) -> List[float]:
    """The metric over ``results``; LPIPS skips images it could not be computed on (None)."""
    return [getattr(r, key) for r in results if getattr(r, key) is not None]


def _group_means(results: List[ViewResult], lpips_available: bool) -> Dict[str, Any]:
    """Means of the image metrics over ``results`` (and ``num_images``); empty groups have only ``num_images``."""
    out: Dict[str, Any] = {"num_images": len(results)}
    for key in IMAGE_METRICS:
        values = _values(results, key)
        if values and (key != "lpips" or lpips_available):
            out[key] = _mean_std(values)[0]
    return out


def _subject_mean(per_subject: Dict[str, Dict[str, Any]]) -> Dict[str, float]:
    out = {}
    for key in IMAGE_METRICS:
        values = [s[key] for s in per_subject.values() if key in s]
        if values:
            out[key] = float(np.mean(values))
    return out


def summarize(results: List[ViewResult], lpips_status: LPIPSStatus, get_std: bool = False,
              detailed: bool = True) -> Dict[str, Any]:
    """nerfstudio-style means (+ ``*_std``) and, when ``detailed``, the per-setting/subject/image breakdown."""
    if not results:
        raise HumanDataError("the evaluation split has no images")
    if lpips_status.available and not _values(results, "lpips"):
        lpips_status = LPIPSStatus(False, "LPIPS could not be computed on any evaluation image (see the log)")
    out: Dict[str, Any] = {}
    keys = ["psnr", "ssim"] + (["lpips"] if lpips_status.available else []) + ["num_rays_per_sec", "fps"]
    for key in keys:
        mean, std = _mean_std(_values(results, key))
        out[key] = mean
        if get_std:
            out[f"{key}_std"] = std
    by_setting = {s: [r for r in results if r.setting == s] for s in SETTINGS}
    if not detailed:  # flat scalars only (nerfstudio's training writer)
        for setting, group in by_setting.items():
            for key, value in _group_means(group, lpips_status.available).items():
                out[f"{setting}/{key}"] = float(value)
        return out
    by_subject: Dict[str, List[ViewResult]] = defaultdict(list)
    for r in results:
        by_subject[r.subject].append(r)
    per_subject = {}
    for name, group in by_subject.items():
        entry = {"all": _group_means(group, lpips_status.available)}
        for setting in SETTINGS:
            entry[setting] = _group_means([r for r in group if r.setting == setting], lpips_status.available)
        per_subject[name] = entry
    out["num_images"] = len(results)
    out["subject_mean"] = _subject_mean({n: e["all"] for n, e in per_subject.items()})
    out["settings"] = {}
    for setting, group in by_setting.items():
        entry = _group_means(group, lpips_status.available)
        if group:
            entry["subject_mean"] = _subject_mean(
                {n: e[setting] for n, e in per_subject.items() if e[setting]["num_images"]})
        out["settings"][setting] = entry
    out["settings_rule"] = NOVEL_POSE_RULE
    out["per_subject"] = per_subject
    out["per_image"] = [r.to_json() for r in results]
    out["lpips_status"] = asdict(lpips_status)
    return out


def evaluate_geometry(pipeline, resolution: int = 96, threshold: float = geometry.DEFAULT_DENSITY_THRESHOLD,
                      num_samples: int = 10_000,
                      frames: Optional[Iterable[Tuple[int, int]]] = None) -> Dict[str, Any]:
    """Chamfer/P2S (cm) of each evaluation subject-frame that has a ground-truth mesh (only the given
    ``(subject_index, frame_id)`` pairs when ``frames`` is set, as the benchmark does).

    Returns ``{"available": bool, "reason": str | None, "resolution", "threshold", "chamfer_cm", "p2s_cm",
    "per_frame": [...]}``; a frame whose surface cannot be extracted is listed with its ``error``.
    """
    dm, model = pipeline.datamanager, pipeline.model
    out: Dict[str, Any] = {"available": False, "reason": None, "resolution": resolution, "threshold": threshold,
                           "per_frame": []}
    if resolution <= 0:
        out["reason"] = "geometry evaluation disabled (geometry_resolution = 0)"
        return out
    if frames is None:
        frames = [(dm.subject_names.index(s.name), f.frame_id) for s in dm.eval_collection.subjects for f in s.frames]
    todo = []
    for subject_index, frame_id in frames:
        subject = dm.frame(subject_index, frame_id)[0]
        path = geometry.gt_mesh_path(subject, frame_id)
        if path is not None:
            todo.append((subject, frame_id, path))
    if not todo:
        out["reason"] = "the evaluation subjects have no ground-truth meshes (SubjectRecord.gt_mesh_dir/<frame>.ply)"
        return out
    was_training = model.training
    try:
        for subject, frame_id, path in todo:
            entry: Dict[str, Any] = {"subject": subject.name, "frame_id": frame_id, "gt_mesh": str(path)}
            try:
                gt = geometry.load_mesh(path)
                sources = dm.source_views(dm.subject_names.index(subject.name), frame_id)
                mesh = geometry.model_mesh(model, sources, resolution, threshold)
                entry["num_faces"] = int(len(mesh.faces))
                entry.update(geometry.mesh_metrics(mesh, gt, num_samples=num_samples))
            except geometry.GeometryError as err:
                entry["error"] = str(err)
            out["per_frame"].append(entry)
    finally:
        model.train(was_training)
    done = [e for e in out["per_frame"] if "chamfer_cm" in e]
    if done:
        out["available"] = True
        out["chamfer_cm"] = float(np.mean([e["chamfer_cm"] for e in done]))
        out["p2s_cm"] = float(np.mean([e["p2s_cm"] for e in done]))
    else:
        first = out["per_frame"][0]
        out["reason"] = (f"no surface could be extracted for any of the {len(out['per_frame'])} frames with a "
                         f"ground-truth mesh (pipeline.geometry_threshold = {threshold:g}); {first['subject']} frame "
                         f"{first['frame_id']}: {first['error']}")
    return out


def refuse_existing_eval_output(max_depth: int = 8) -> None:
    """Exits with one line when called (through the pipeline) by ``ns-eval`` whose ``--output-path`` already exists.

    ns-eval's ``ComputePSNR.main`` calls ``pipeline.get_average_eval_image_metrics`` and then writes its
    ``output_path`` unconditionally; the caller's ``self`` on the stack is that command, whose options are read here
    (nothing of nerfstudio is changed). Other callers (training, gmnerf-report, tests) are not affected.
    """
    from nerfstudio.scripts.eval import ComputePSNR

    frame = inspect.currentframe()
    for _ in range(max_depth):
        frame = frame.f_back if frame is not None else None
        if frame is None:
            return
        command = frame.f_locals.get("self")
        if isinstance(command, ComputePSNR):
            path = Path(command.output_path)
            if path.exists():
                raise SystemExit(f"ns-eval: {path} exists; nothing was evaluated. Remove it or choose another "
                                 "--output-path")
            return


def average_eval_image_metrics(pipeline, step: Optional[int] = None, output_path: Optional[Path] = None,
                               get_std: bool = False) -> Dict[str, Any]:
    """What ``GMNeRFPipeline.get_average_eval_image_metrics`` returns (see the module docstring).

    Raises:
        CleanExit: (ns-eval, ``step`` None) a corrupt held-out image, a full disk: one line naming the file.
    """
    if step is not None:  # during training: the trainer reports the user's errors
        return _average_eval_image_metrics(pipeline, step, output_path, get_std)
    refuse_existing_eval_output()
    try:
        return _average_eval_image_metrics(pipeline, step, output_path, get_std)
    except USER_ERRORS as err:
        raise CleanExit(err) from err


def _average_eval_image_metrics(pipeline, step: Optional[int], output_path: Optional[Path], get_std: bool
                                ) -> Dict[str, Any]:
    lpips, status = lpips_metric()
    results = evaluate_views(pipeline, lpips=lpips, output_path=output_path)
    detailed = step is None  # ns-eval; during training the writer only takes scalars
    out = summarize(results, status, get_std=get_std, detailed=detailed)
    if detailed:
        config = pipeline.config
        geo = evaluate_geometry(pipeline, resolution=getattr(config, "geometry_resolution", 96),
                                threshold=getattr(config, "geometry_threshold", geometry.DEFAULT_DENSITY_THRESHOLD))
        out["geometry"] = geo
        if geo["available"]:
            out["chamfer_cm"], out["p2s_cm"] = geo["chamfer_cm"], geo["p2s_cm"]
        protocol = pipeline.datamanager.dataparser.protocol
        out["protocol"] = {"name": protocol.name, "num_input_views": protocol.num_input_views,
                           "resolution": protocol.resolution}
        _log_summary(out)
    return out


def _log_summary(out: Dict[str, Any]) -> None:
    def fmt(entry: Dict[str, Any]) -> str:
        parts = [f"{k} {entry[k]:.4f}" for k in IMAGE_METRICS if k in entry]
        return ", ".join(parts) + f" ({entry['num_images']} images)" if parts else "no images"

    CONSOLE.log(f"held-out images: {fmt(out)}")
    for setting, entry in out["settings"].items():
        CONSOLE.log(f"  {setting}: {fmt(entry)}")
    if not out["lpips_status"]["available"]:
        CONSOLE.log(f"  [yellow]LPIPS not reported: {out['lpips_status']['reason']}")
    geo = out["geometry"]
    if geo["available"]:
        CONSOLE.log(f"  geometry: Chamfer {geo['chamfer_cm']:.2f} cm, P2S {geo['p2s_cm']:.2f} cm")
    else:
        CONSOLE.log(f"  geometry not reported: {geo['reason']}")

