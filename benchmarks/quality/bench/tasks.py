"""One measurement each, run in its own forked child process by :mod:`bench.run`.

Every task takes a JSON-able ``spec`` and returns a JSON-able dict. Memory: ``rss_ready_mb`` after setup,
``peak_rss_mb`` (``ru_maxrss``) when the measured work ends, ``peak_increment_mb`` their difference. Times are
wall-clock plus the process's CPU time.
"""

from __future__ import annotations

import copy
import json
import math
import resource
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import psutil
import torch

from bench.settings import GM_SYSTEMS, REFERENCE, Mode


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def gm_config(mode: Mode, system: str, patch_size: Optional[int] = None, **model_overrides):
    """gm-nerf-small's TrainerConfig on the benchmark data, with the mode's size overrides and the system's flags."""
    from gmnerf_ns.training.method_configs import gm_nerf_small

    config = copy.deepcopy(gm_nerf_small.config)
    dm = config.pipeline.datamanager
    dm.data = dm.dataparser.data = mode.data
    if mode.resolution is not None:
        dm.dataparser.resolution = mode.resolution
    dm.patch_size = patch_size or mode.patch_size
    model = config.pipeline.model
    for key, value in {**mode.model_overrides, **GM_SYSTEMS[system], **model_overrides}.items():
        if not hasattr(model, key):
            raise AttributeError(f"GMNeRFModelConfig has no field {key!r}")
        setattr(model, key, value)
    config.pipeline.geometry_resolution = mode.geometry_resolution
    config.pipeline.geometry_threshold = mode.geometry_threshold
    return config


def make_optimizers(config, pipeline):
    """nerfstudio's Optimizers and training callbacks (optimizer groups without parameters left out)."""
    from nerfstudio.engine.callbacks import TrainingCallbackAttributes
    from nerfstudio.engine.optimizers import Optimizers

    groups = {name: params for name, params in pipeline.get_param_groups().items() if len(params) > 0}
    optimizers = Optimizers(config.optimizers, groups)
    callbacks = pipeline.get_training_callbacks(
        TrainingCallbackAttributes(optimizers=optimizers, grad_scaler=None, pipeline=pipeline, trainer=None))
    return optimizers, callbacks


def train_for(pipeline, optimizers, callbacks, budget: float, min_steps: int = 1, max_steps: Optional[int] = None,
              loss_dict_fn: Optional[Callable] = None, curve_points: int = 200) -> Dict[str, Any]:
    """Trains until ``budget`` wall-clock seconds are spent: nerfstudio's train iteration without the writer."""
    from nerfstudio.engine.callbacks import TrainingCallbackLocation as Where

    loss_dict_fn = loss_dict_fn or pipeline.get_train_loss_dict
    pipeline.train()
    curve: List[Tuple[float, float]] = []
    step, cpu0, t0 = 0, cpu_seconds(), time.perf_counter()
    while not ((time.perf_counter() - t0 >= budget and step >= min_steps) or step == max_steps):
        for callback in callbacks:
            callback.run_callback_at_location(step, location=Where.BEFORE_TRAIN_ITERATION)
        optimizers.zero_grad_all()
        loss = sum(loss_dict_fn(step=step)[1].values())
        loss.backward()
        optimizers.optimizer_step_all()
        optimizers.scheduler_step_all(step)
        for callback in callbacks:
            callback.run_callback_at_location(step, location=Where.AFTER_TRAIN_ITERATION)
        curve.append((time.perf_counter() - t0, float(loss.detach())))
        step += 1
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    if len(curve) > curve_points:  # keep the plot data small
        curve = [curve[i] for i in np.unique(np.linspace(0, len(curve) - 1, curve_points).round().astype(int))]
    return {"steps": step, "train_seconds": wall, "cpu_seconds": cpu, "cpu_utilisation": cpu / max(wall, 1e-9),
            "steps_per_second": step / max(wall, 1e-9), "loss_curve": curve}


def train_measured(config, pipeline, budget: float, volume_rays: int, grad_rays: int, pixels: int) -> Dict[str, Any]:
    """:func:`train_for` plus parameter count, memory and throughput from the per-step ray and pixel counts."""
    optimizers, callbacks = make_optimizers(config, pipeline)
    out: Dict[str, Any] = {"num_parameters": sum(p.numel() for p in pipeline.model.parameters()),
                           "rss_ready_mb": rss_mb()}
    out.update(train_for(pipeline, optimizers, callbacks, budget))
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_increment_mb"] = out["peak_rss_mb"] - out["rss_ready_mb"]
    out.update(volume_rays_per_step=volume_rays, grad_rays_per_step=grad_rays, pixels_per_step=pixels,
               rays_per_second=volume_rays * out["steps_per_second"], pixels_per_second=pixels * out["steps_per_second"])
    return out


def eval_indices(datamanager, frames: str, max_views: Optional[int]) -> List[int]:
    """Held-out target views: of each held-out subject's first frame (or all frames), at most ``max_views`` evenly
    spaced ones per subject-frame."""
    meta = datamanager.eval_dataset.cameras.metadata
    keys = list(zip(meta["subject_index"][:, 0].tolist(), meta["frame_id"][:, 0].tolist()))
    first: Dict[int, int] = {}
    for s, f in keys:
        first.setdefault(s, f)
    groups: Dict[Tuple[int, int], List[int]] = {}
    for i, (s, f) in enumerate(keys):
        if frames == "all" or first[s] == f:
            groups.setdefault((s, f), []).append(i)
    out: List[int] = []
    for views in groups.values():
        if max_views is not None and len(views) > max_views:
            views = [views[k] for k in np.linspace(0, len(views) - 1, max_views).round().astype(int)]
        out.extend(views)
    return sorted(out)


def quality_summary(per_image: List[Dict[str, Any]], lpips_status: Dict[str, Any]) -> Dict[str, Any]:
    """Mean PSNR/SSIM/LPIPS over the images (None when any image lacks the metric)."""
    out: Dict[str, Any] = {"num_images": len(per_image), "lpips_status": lpips_status, "per_image": per_image}
    for key in ("psnr", "ssim", "lpips"):
        values = [r[key] for r in per_image if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values and len(values) == len(per_image) else None
    return out


def _lpips():
    from gmnerf_ns.eval.evaluation import lpips_metric

    lpips, status = lpips_metric()
    return lpips, {"available": status.available, "reason": status.reason}


# ----------------------------------------------------------------------------------------------------------------------
# tasks
# ----------------------------------------------------------------------------------------------------------------------


def task_inspect(mode: Mode, spec: Dict[str, Any]) -> Dict[str, Any]:
    """The split: held-out subjects, their evaluated subject-frames and target views, the protocol."""
    dm = gm_config(mode, REFERENCE).pipeline.datamanager.setup(device="cpu", test_mode="test")
    try:
        indices = eval_indices(dm, mode.eval_frames, mode.max_eval_views)
        meta = dm.eval_dataset.cameras.metadata
        frames: Dict[Tuple[int, int], Dict[str, Any]] = {}
        for key in ((int(meta["subject_index"][i, 0]), int(meta["frame_id"][i, 0])) for i in indices):
            if key not in frames:
                subject, _, collection = dm.frame(*key)
                inputs = collection.inputs_for(subject, dm.num_source_views)
                frames[key] = {"subject_index": key[0], "frame_id": key[1], "subject": subject.name,
                               "input_cameras": [subject.camera_names[c] for c in inputs]}
        protocol = dm.dataparser.protocol
        return {
            "train_subjects": [s.name for s in dm.train_collection.subjects],
            "test_subjects": [s.name for s in dm.eval_collection.subjects],
            "num_eval_views_total": len(dm.eval_dataset), "eval_indices": indices, "eval_frames": list(frames.values()),
            "protocol": {"name": protocol.name, "num_input_views": protocol.num_input_views,
                         "resolution": int(dm.eval_dataset.cameras[0:1].height.view(-1)[0])},
        }
    finally:
        dm.close()


def task_train_gm(mode: Mode, spec: Dict[str, Any]) -> Dict[str, Any]:
    """Trains one gm-nerf system for the budget, saves its weights, evaluates it on the held-out views."""
    from gmnerf_ns.eval.evaluation import evaluate_geometry, evaluate_views

    work = Path(spec["work"])
    config = gm_config(mode, spec["system"])
    pipeline = config.pipeline.setup(device="cpu", test_mode="test")
    try:
        model_cfg, patch = config.pipeline.model, config.pipeline.datamanager.patch_size
        volume_rays = math.ceil(patch / (2 if model_cfg.neural_renderer else 1)) ** 2
        out = train_measured(config, pipeline, mode.budget_seconds, volume_rays=volume_rays,
                             grad_rays=max(1, round(model_cfg.grad_ray_fraction * volume_rays)), pixels=patch * patch)
        work.mkdir(parents=True, exist_ok=True)
        torch.save(pipeline.model.state_dict(), work / "model.pt")

        lpips, status = _lpips()
        t0 = time.perf_counter()
        results = evaluate_views(pipeline, lpips=lpips, output_path=work / "renders", indices=spec["eval_indices"])
        out["eval_seconds"] = time.perf_counter() - t0
        per_image = [{"index": r.index, "subject": r.subject, "frame_id": r.frame_id, "camera": r.camera_name,
                      "psnr": r.psnr, "ssim": r.ssim, "lpips": r.lpips} for r in results]
        out["quality"] = quality_summary(per_image, status)
        try:
            out["geometry"] = evaluate_geometry(pipeline, mode.geometry_resolution, mode.geometry_threshold,
                                                mode.geometry_samples,
                                                frames=[(f["subject_index"], f["frame_id"]) for f in spec["eval_frames"]])
        except Exception as err:  # reported, never invented
            out["geometry"] = {"available": False, "reason": f"{type(err).__name__}: {err}"}
    finally:
        pipeline.datamanager.close()
    return out


class _OfflineLPIPS(torch.nn.Module):
    """Stands in for torchmetrics' LPIPS, which nerfacto builds at setup by downloading AlexNet weights."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, *args, **kwargs):
        raise RuntimeError("nerfacto's own LPIPS is unavailable offline; the benchmark computes its metrics itself")


def task_train_nerfacto(mode: Mode, spec: Dict[str, Any]) -> Dict[str, Any]:
    """Fits nerfacto to one held-out subject-frame's input views for the budget; evaluates its target views."""
    import imageio.v2 as imageio
    import torchmetrics.image.lpip as torchmetrics_lpips

    from bench.nerfacto import nerfacto_config, normalize_camera, write_transforms_dataset
    from gmnerf_ns.model.metrics import image_metrics

    work, key = Path(spec["work"]), (int(spec["subject_index"]), int(spec["frame_id"]))
    gm_dm = gm_config(mode, REFERENCE).pipeline.datamanager.setup(device="cpu", test_mode="test")
    try:
        norm = write_transforms_dataset(gm_dm.source_views(*key), work / "scene")
        config = nerfacto_config(work / "scene", norm, mode.nerfacto_rays_per_batch, work / "outputs",
                                 mode.nerfacto_eval_chunk)
        torchmetrics_lpips.LearnedPerceptualImagePatchSimilarity = _OfflineLPIPS  # this child process only
        pipeline = config.pipeline.setup(device="cpu", test_mode="val")
        rays = mode.nerfacto_rays_per_batch
        out = train_measured(config, pipeline, mode.budget_seconds, volume_rays=rays, grad_rays=rays, pixels=rays)
        lpips, status = _lpips()
        pipeline.model.eval()
        (work / "renders").mkdir(parents=True, exist_ok=True)
        subject, _, _ = gm_dm.frame(*key)
        per_image, t0 = [], time.perf_counter()
        for i in spec["eval_indices"]:
            camera, batch = gm_dm.eval_image(i)
            meta = camera.metadata
            if (int(meta["subject_index"].view(-1)[0]), int(meta["frame_id"].view(-1)[0])) != key:
                continue
            with torch.no_grad():
                pred = pipeline.model.get_outputs_for_camera(normalize_camera(camera, norm))["rgb"].clamp(0, 1).cpu()
            gt = batch["image"].cpu()
            metrics = image_metrics(pred, gt, batch["bbox_mask"].cpu(), lpips=lpips)
            per_image.append({"index": i, "subject": subject.name, "frame_id": key[1],
                              "camera": subject.camera_names[int(meta["camera_index"].view(-1)[0])],
                              **{k: None if metrics[k] is None else float(metrics[k]) for k in ("psnr", "ssim", "lpips")}})
            strip = torch.cat([gt, pred, (pred - gt).abs().mean(-1, keepdim=True).expand(-1, -1, 3)], dim=1)
            imageio.imwrite(work / "renders" / f"eval_img_{i:04d}.png", (strip.numpy() * 255).round().astype(np.uint8))
        out["eval_seconds"] = time.perf_counter() - t0
        out["quality"] = quality_summary(per_image, status)
        out["geometry"] = {"available": False, "reason": "gm-nerf systems only"}
    finally:
        gm_dm.close()
    return out


def _render_pipeline(mode: Mode, spec: Dict[str, Any]):
    """The trained system, eval mode. ``volume-full-res``: the same weights in a model built with
    ``neural_renderer=False`` (the field's RGB volume-rendered at every pixel); the 2D renderer's weights are left out."""
    full_res = spec["variant"] == "volume-full-res"
    config = gm_config(mode, spec["system"], **({"neural_renderer": False} if full_res else {}))
    pipeline = config.pipeline.setup(device="cpu", test_mode="test")
    state = torch.load(spec["weights"], map_location="cpu", weights_only=True)
    if full_res:
        state = {k: v for k, v in state.items() if not k.startswith("renderer.")}
    pipeline.model.load_state_dict(state)
    pipeline.model.eval()
    return pipeline, config.pipeline.model.neural_renderer


def _square_camera(datamanager, index: int, resolution: int):
    """Held-out view ``index`` rescaled to ``resolution`` x ``resolution``, its source views decoded."""
    camera = copy.deepcopy(datamanager.eval_image(index)[0])
    camera.rescale_output_resolution(resolution / float(camera.height.view(-1)[0]))
    camera.height = torch.full_like(camera.height, resolution)
    camera.width = torch.full_like(camera.width, resolution)
    meta = camera.metadata
    datamanager.source_views(int(meta["subject_index"].view(-1)[0]), int(meta["frame_id"].view(-1)[0]))
    return camera


def task_render(mode: Mode, spec: Dict[str, Any]) -> Dict[str, Any]:
    """Times full-image renders at a square resolution through ``get_outputs_for_camera``, cold (the model's encoding
    cache empty: sources built and encoded) and warm (the same camera again, encoding cached); the minimum over the
    repeats, the warm one split into the model's phases."""
    from bench.probes import PhaseTimer, model_phases

    resolution = int(spec["resolution"])
    pipeline, neural_renderer = _render_pipeline(mode, spec)
    try:
        model = pipeline.model
        camera = _square_camera(pipeline.datamanager, int(spec["index"]), resolution)
        out: Dict[str, Any] = {"rss_ready_mb": rss_mb()}
        runs: Dict[str, List[Tuple[float, float, Dict[str, float]]]] = {"cold": [], "warm": []}
        timer = PhaseTimer()
        with model_phases(model, [timer]):
            for _ in range(max(1, int(spec["repeats"]))):
                model.clear_encoding_cache()  # the next render encodes the sources: cold
                for kind in ("cold", "warm"):
                    timer.reset()
                    cpu0, t0 = cpu_seconds(), time.perf_counter()
                    outputs = model.get_outputs_for_camera(camera)
                    runs[kind].append((time.perf_counter() - t0, cpu_seconds() - cpu0, dict(timer.seconds)))
                assert "encode" not in runs["warm"][-1][2], "the warm render re-encoded the sources"
        assert tuple(outputs["rgb"].shape[:2]) == (resolution, resolution), outputs["rgb"].shape
        out["peak_rss_mb"] = peak_rss_mb()
        out["peak_increment_mb"] = out["peak_rss_mb"] - out["rss_ready_mb"]
        warm, cpu, phases = min(runs["warm"], key=lambda r: r[0])
        rays, renderer = phases.get("rays", 0.0), phases.get("renderer", 0.0)
        out.update(warm_seconds=warm, warm_cpu_seconds=cpu, cpu_utilisation=cpu / max(warm, 1e-9),
                   cold_seconds=min(r[0] for r in runs["cold"]),
                   encode_seconds=min(r[2].get("encode", 0.0) for r in runs["cold"]),
                   warm_breakdown={"rays_seconds": rays, "renderer_seconds": renderer,
                                   "other_seconds": max(warm - rays - renderer, 0.0)},
                   volume_rays=math.ceil(resolution / (2 if neural_renderer else 1)) ** 2)
    finally:
        pipeline.datamanager.close()
    return out


def task_train_memory(mode: Mode, spec: Dict[str, Any]) -> Dict[str, Any]:
    """Activation memory (by phase), peak RSS and (on CUDA) device peak of a few gm-nerf-small training steps at one
    patch size and gradient fraction. The datamanager's draws depend only on its seed and the draw count, so both
    fractions train on the same patches."""
    from bench.probes import DevicePeak, SavedTensorMeter

    patch, fraction, device = int(spec["patch_size"]), float(spec["grad_ray_fraction"]), spec["device"] or "cpu"
    config = gm_config(mode, REFERENCE, patch_size=patch, grad_ray_fraction=fraction)
    config.pipeline.datamanager.num_workers = 0  # nothing decoded ahead: the peak is the step's own
    pipeline = config.pipeline.setup(device=device, test_mode="test")
    try:
        optimizers, callbacks = make_optimizers(config, pipeline)
        pipeline.datamanager.next_train(0)  # decode the views once (cached), so the peak below is the training's
        pipeline.datamanager.train_draws = 0
        model, per_step = pipeline.model, []

        def metered_loss_dict(step: int):
            meter = SavedTensorMeter(model)
            with meter.measure(model):
                result = pipeline.get_train_loss_dict(step=step)
            per_step.append(meter.summary())
            return result

        out: Dict[str, Any] = {"device": device, "rss_ready_mb": rss_mb()}
        steps = int(spec["steps"])
        with DevicePeak(device) as device_peak:
            result = train_for(pipeline, optimizers, callbacks, budget=0.0, min_steps=steps, max_steps=steps,
                               loss_dict_fn=metered_loss_dict)
        out["peak_rss_mb"] = peak_rss_mb()
        volume_rays = math.ceil(patch / 2) ** 2
        perceptual = getattr(model, "perceptual", None)
        out.update(
            peak_increment_mb=out["peak_rss_mb"] - out["rss_ready_mb"], device_peak_mb=device_peak.peak_mb,
            steps=steps, seconds_per_step=result["train_seconds"] / steps, cpu_utilisation=result["cpu_utilisation"],
            volume_rays_per_step=volume_rays, grad_rays_per_step=max(1, round(fraction * volume_rays)),
            saved_mb=float(np.mean([s["saved_mb"] for s in per_step])),
            saved_mb_by_phase={k: float(np.mean([s["saved_mb_by_phase"][k] for s in per_step]))
                               for k in per_step[0]["saved_mb_by_phase"]},
            perceptual_loss=None if perceptual is None else getattr(perceptual, "kind", type(perceptual).__name__))
    finally:
        pipeline.datamanager.close()
    return out


TASKS: Dict[str, Callable[[Mode, Dict[str, Any]], Dict[str, Any]]] = {
    "inspect": task_inspect, "train_gm": task_train_gm, "train_nerfacto": task_train_nerfacto, "render": task_render,
    "train_memory": task_train_memory,
}


def run_task(kind: str, spec: Dict[str, Any], result_path: Path) -> None:
    """Child-process body: set threads, run, write the result (or the error) as JSON."""
    torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(0)
    start = time.perf_counter()
    try:
        result = TASKS[kind](Mode(**spec["mode"]), spec)
    except BaseException as err:  # noqa: BLE001 - reported in the results, the run goes on
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    result["task_seconds"] = time.perf_counter() - start
    result_path.write_text(json.dumps(result, default=_json_default))


def _json_default(value):
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
