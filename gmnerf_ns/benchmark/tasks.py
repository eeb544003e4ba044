"""One measurement each, run in its own (forked) child process by :mod:`gmnerf_ns.benchmark.run`.

Every task takes a JSON-able ``spec`` dict and returns a JSON-able dict. Memory numbers:

* ``rss_start_mb``: resident set size when the task starts (the forked child shares the orchestrator's imports);
* ``rss_ready_mb``: after setup (data, model, weights), just before the measured work;
* ``peak_rss_mb``: ``getrusage(RUSAGE_SELF).ru_maxrss`` when the measured work ends (the process's peak so far);
* ``peak_increment_mb`` = ``peak_rss_mb - rss_ready_mb``: what the measured work itself added at its peak.

Times are wall-clock (``time.perf_counter``) plus the process's CPU time, whose ratio tells how much of the wall time
the process actually ran (on a shared machine it may wait for a core).
"""

from __future__ import annotations

import copy
import json
import math
import resource
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import psutil
import torch

from gmnerf_ns.benchmark.settings import GM_SYSTEMS, Mode

# ----------------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------------


def rss_mb() -> float:
    """Current resident set size of this process, MiB."""
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def mode_from_spec(spec: Dict[str, Any]) -> Mode:
    mode = Mode(**{k: v for k, v in spec["mode"].items()})
    mode.data = Path(mode.data)
    return mode


def gm_config(mode: Mode, system: str, patch_size: Optional[int] = None, **model_overrides):
    """gm-nerf-small's TrainerConfig on the benchmark data, with the mode's size overrides and the system's flag."""
    from gmnerf_ns.method_configs import gm_nerf_small

    config = copy.deepcopy(gm_nerf_small.config)
    dm = config.pipeline.datamanager
    dm.data = mode.data
    dm.dataparser.data = mode.data
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


def setup_pipeline(config, test_mode: str = "test"):
    pipeline = config.pipeline.setup(device="cpu", test_mode=test_mode)
    return pipeline


def close_pipeline(pipeline) -> None:
    close = getattr(pipeline.datamanager, "close", None)
    if close is not None:
        close()


def make_optimizers(config, pipeline):
    """nerfstudio's Optimizers from the TrainerConfig, for the parameter groups that have parameters.

    (gm-nerf's ``renderer`` group is empty when ``neural_renderer=False``; torch refuses an optimizer without
    parameters.)
    """
    from nerfstudio.engine.optimizers import Optimizers

    groups = {name: params for name, params in pipeline.get_param_groups().items() if len(params) > 0}
    return Optimizers(config.optimizers, groups)


def training_callbacks(pipeline, optimizers):
    from nerfstudio.engine.callbacks import TrainingCallbackAttributes

    return pipeline.get_training_callbacks(
        TrainingCallbackAttributes(optimizers=optimizers, grad_scaler=None, pipeline=pipeline, trainer=None))


def train_for(pipeline, optimizers, callbacks, budget: float, min_steps: int = 1, max_steps: Optional[int] = None,
              curve_points: int = 200) -> Dict[str, Any]:
    """Trains until ``budget`` wall-clock seconds are spent (nerfstudio's train iteration without the writer)."""
    from nerfstudio.engine.callbacks import TrainingCallbackLocation

    pipeline.train()
    curve: List[Tuple[float, float]] = []
    step = 0
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    while True:
        elapsed = time.perf_counter() - t0
        if (elapsed >= budget and step >= min_steps) or (max_steps is not None and step >= max_steps):
            break
        for callback in callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        optimizers.zero_grad_all()
        _, loss_dict, _ = pipeline.get_train_loss_dict(step=step)
        loss = sum(loss_dict.values())
        loss.backward()
        optimizers.optimizer_step_all()
        optimizers.scheduler_step_all(step)
        for callback in callbacks:
            callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        curve.append((time.perf_counter() - t0, float(loss.detach())))
        step += 1
    wall = time.perf_counter() - t0
    cpu = cpu_seconds() - cpu0
    if len(curve) > curve_points:  # keep the plot data small
        keep = np.unique(np.linspace(0, len(curve) - 1, curve_points).round().astype(int))
        curve = [curve[i] for i in keep]
    losses = [c[1] for c in curve]
    return {"steps": step, "train_seconds": wall, "cpu_seconds": cpu, "cpu_utilisation": cpu / max(wall, 1e-9),
            "steps_per_second": step / max(wall, 1e-9), "loss_curve": curve,
            "final_loss": float(np.mean(losses[-5:])) if losses else None}


def train_measured(config, pipeline, budget: float, volume_rays: int, grad_rays: int, pixels: int) -> Dict[str, Any]:
    """Trains ``pipeline`` for ``budget`` seconds (:func:`train_for`) with the TrainerConfig's optimizers and callbacks;
    adds parameter count, memory (RSS when ready, peak, increment) and throughput from the per-step ray/pixel counts."""
    optimizers = make_optimizers(config, pipeline)
    callbacks = training_callbacks(pipeline, optimizers)
    out: Dict[str, Any] = {"num_parameters": int(sum(p.numel() for p in pipeline.model.parameters())),
                           "rss_ready_mb": rss_mb()}
    out.update(train_for(pipeline, optimizers, callbacks, budget))
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_increment_mb"] = out["peak_rss_mb"] - out["rss_ready_mb"]
    out.update(volume_rays_per_step=volume_rays, grad_rays_per_step=grad_rays, pixels_per_step=pixels,
               rays_per_second=volume_rays * out["steps_per_second"], pixels_per_second=pixels * out["steps_per_second"])
    return out


def eval_indices(datamanager, frames: str, max_views: Optional[int] = None) -> List[int]:
    """Held-out target views to evaluate: of the first frame of each held-out subject ('first') or of all frames;
    at most ``max_views`` evenly spaced target views per subject-frame."""
    meta = datamanager.eval_dataset.cameras.metadata
    subjects = meta["subject_index"][:, 0].tolist()
    frame_ids = meta["frame_id"][:, 0].tolist()
    first: Dict[int, int] = {}
    for s, f in zip(subjects, frame_ids):
        first.setdefault(s, f)
    groups: Dict[Tuple[int, int], List[int]] = {}
    for i, (s, f) in enumerate(zip(subjects, frame_ids)):
        if frames == "all" or first[s] == f:
            groups.setdefault((s, f), []).append(i)
    out: List[int] = []
    for views in groups.values():
        if max_views is not None and len(views) > max_views:
            views = [views[k] for k in np.linspace(0, len(views) - 1, max_views).round().astype(int)]
        out.extend(views)
    return sorted(out)


def quality_summary(per_image: List[Dict[str, Any]], lpips_status: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"num_images": len(per_image), "lpips_status": lpips_status}
    for key in ("psnr", "ssim", "lpips"):
        values = [r[key] for r in per_image if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values and len(values) == len(per_image) else None
    out["per_image"] = per_image
    return out


# ----------------------------------------------------------------------------------------------------------------------
# tasks
# ----------------------------------------------------------------------------------------------------------------------


def task_inspect(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The split: held-out subjects, their evaluated subject-frames and target views, the protocol."""
    mode = mode_from_spec(spec)
    config = gm_config(mode, "gm-nerf-small")
    dm = config.pipeline.datamanager.setup(device="cpu", test_mode="test")
    try:
        indices = eval_indices(dm, mode.eval_frames, mode.max_eval_views)
        meta = dm.eval_dataset.cameras.metadata
        frames = []
        for i in indices:
            key = (int(meta["subject_index"][i, 0]), int(meta["frame_id"][i, 0]))
            if key not in [(f["subject_index"], f["frame_id"]) for f in frames]:
                subject, _, collection = dm.frame(*key)
                frames.append({"subject_index": key[0], "frame_id": key[1], "subject": subject.name,
                               "input_cameras": [subject.camera_names[c] for c in
                                                 collection.inputs_for(subject, dm.num_source_views)]})
        protocol = dm.dataparser.protocol
        camera = dm.eval_dataset.cameras[0:1]
        return {
            "train_subjects": [s.name for s in dm.train_collection.subjects],
            "test_subjects": [s.name for s in dm.eval_collection.subjects],
            "num_train_views": len(dm.train_dataset),
            "num_eval_views_total": len(dm.eval_dataset),
            "eval_indices": indices,
            "eval_frames": frames,
            "protocol": {"name": protocol.name, "num_input_views": protocol.num_input_views,
                         "resolution": int(camera.height.view(-1)[0]), "bbox_padding": protocol.bbox_padding},
        }
    finally:
        dm.close()


def task_train_gm(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Trains one gm-nerf system for the budget, saves its weights, evaluates it on the held-out views."""
    from gmnerf_ns.tools.evaluation import evaluate_views, lpips_metric

    mode, system, work = mode_from_spec(spec), spec["system"], Path(spec["work"])
    torch.manual_seed(0)
    out: Dict[str, Any] = {"system": system, "rss_start_mb": rss_mb()}
    config = gm_config(mode, system)
    pipeline = setup_pipeline(config)
    try:
        model_cfg = config.pipeline.model
        patch = config.pipeline.datamanager.patch_size
        factor = 2 if model_cfg.neural_renderer else 1
        volume_rays = math.ceil(patch / factor) ** 2
        out.update(train_measured(config, pipeline, mode.budget_seconds, volume_rays=volume_rays,
                                  grad_rays=max(1, int(round(model_cfg.grad_ray_fraction * volume_rays))),
                                  pixels=patch * patch))
        work.mkdir(parents=True, exist_ok=True)
        torch.save(pipeline.model.state_dict(), work / "model.pt")

        # ---- quality on the held-out views ----
        lpips, status = lpips_metric()
        indices = spec["eval_indices"]
        t0 = time.perf_counter()
        results = evaluate_views(pipeline, lpips=lpips, output_path=work / "renders", indices=indices)
        out["eval_seconds"] = time.perf_counter() - t0
        per_image = [{"index": r.index, "subject": r.subject, "frame_id": r.frame_id, "camera": r.camera_name,
                      "psnr": r.psnr, "ssim": r.ssim, "lpips": r.lpips, "seconds": 1.0 / r.fps} for r in results]
        out["quality"] = quality_summary(per_image, {"available": status.available, "reason": status.reason})
        # ---- geometry (marching cubes on the density, gmnerf_ns/tools/geometry.py) ----
        t0 = time.perf_counter()
        try:
            geo = evaluate_geometry_frames(pipeline, spec["eval_frames"], mode)
        except Exception as err:  # report, never invent
            geo = {"available": False, "reason": f"geometry evaluation failed: {type(err).__name__}: {err}"}
        geo["seconds"] = time.perf_counter() - t0
        out["geometry"] = geo
    finally:
        close_pipeline(pipeline)
    return out


def evaluate_geometry_frames(pipeline, frames: List[Dict[str, Any]], mode: Mode) -> Dict[str, Any]:
    """Chamfer/P2S (cm) of the evaluated held-out subject-frames (ns-eval's geometry evaluation, restricted to the
    frames whose images the benchmark evaluates, with ``mode.geometry_samples`` surface samples)."""
    from gmnerf_ns.tools.evaluation import evaluate_geometry

    out = evaluate_geometry(pipeline, mode.geometry_resolution, mode.geometry_threshold, mode.geometry_samples,
                            frames=[(f["subject_index"], f["frame_id"]) for f in frames])
    out["num_samples"] = mode.geometry_samples
    return out


class _OfflineLPIPS(torch.nn.Module):
    """Stands in for torchmetrics' LPIPS inside nerfacto (see :func:`task_train_nerfacto`)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, *args, **kwargs):
        raise RuntimeError("nerfacto's own LPIPS is unavailable offline; the benchmark computes its metrics itself")


def task_train_nerfacto(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Fits nerfacto to one held-out subject-frame's input views for the budget; evaluates its target views."""
    from gmnerf_ns.benchmark.nerfacto import nerfacto_config, normalize_camera, write_transforms_dataset
    from gmnerf_ns.metrics import image_metrics
    from gmnerf_ns.tools.evaluation import lpips_metric

    mode, work = mode_from_spec(spec), Path(spec["work"])
    torch.manual_seed(0)
    subject_index, frame_id = int(spec["subject_index"]), int(spec["frame_id"])
    out: Dict[str, Any] = {"system": spec["system"], "subject": spec["subject"], "frame_id": frame_id,
                           "rss_start_mb": rss_mb()}
    gm_dm = gm_config(mode, "gm-nerf-small").pipeline.datamanager.setup(device="cpu", test_mode="test")
    try:
        sources = gm_dm.source_views(subject_index, frame_id)
        scene = work / "scene"
        norm = write_transforms_dataset(sources, scene)
        out["scene"] = str(scene)
        out["normalization"] = norm
        config = nerfacto_config(scene, norm, mode.nerfacto_rays_per_batch, work / "outputs", mode.nerfacto_eval_chunk)
        # nerfacto builds torchmetrics' LPIPS in populate_modules, which downloads AlexNet weights from
        # download.pytorch.org: offline that raises before training starts. The model only uses it for its own eval
        # metrics, which the benchmark replaces with gmnerf_ns.metrics (LPIPS only with local weights).
        import torchmetrics.image.lpip as torchmetrics_lpips

        torchmetrics_lpips.LearnedPerceptualImagePatchSimilarity = _OfflineLPIPS  # this child process only
        out["nerfacto_lpips_stubbed"] = True
        pipeline = setup_pipeline(config, test_mode="val")
        rays = mode.nerfacto_rays_per_batch
        out.update(train_measured(config, pipeline, mode.budget_seconds, volume_rays=rays, grad_rays=rays, pixels=rays))

        lpips, status = lpips_metric()
        model = pipeline.model
        model.eval()
        per_image = []
        (work / "renders").mkdir(parents=True, exist_ok=True)
        t_eval = time.perf_counter()
        for i in spec["eval_indices"]:
            camera, batch = gm_dm.eval_image(i)
            meta = camera.metadata
            if (int(meta["subject_index"].view(-1)[0]), int(meta["frame_id"].view(-1)[0])) != (subject_index, frame_id):
                continue
            t0 = time.perf_counter()
            with torch.no_grad():
                outputs = model.get_outputs_for_camera(normalize_camera(camera, norm))
            seconds = time.perf_counter() - t0
            pred = outputs["rgb"].clamp(0, 1).cpu()
            gt = batch["image"].cpu()
            metrics = image_metrics(pred, gt, batch["bbox_mask"].cpu(), lpips=lpips)
            subject, _, _ = gm_dm.frame(subject_index, frame_id)
            cam = int(meta["camera_index"].view(-1)[0])
            per_image.append({"index": i, "subject": subject.name, "frame_id": frame_id,
                              "camera": subject.camera_names[cam], "psnr": float(metrics["psnr"]),
                              "ssim": float(metrics["ssim"]),
                              "lpips": None if metrics["lpips"] is None else float(metrics["lpips"]),
                              "seconds": seconds})
            _save_png(work / "renders" / f"eval_img_{i:04d}.png",
                      torch.cat([gt, pred, (pred - gt).abs().mean(-1, keepdim=True).expand(-1, -1, 3)], dim=1))
        out["eval_seconds"] = time.perf_counter() - t_eval
        out["quality"] = quality_summary(per_image, {"available": status.available, "reason": status.reason})
        out["geometry"] = {"available": False, "reason": "not measured for nerfacto (gmnerf_ns/tools/geometry.py "
                                                         "extracts surfaces from GM-NeRF's field only)"}
    finally:
        gm_dm.close()
    return out


def task_render(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Times full-image renders of a trained system at a square resolution, cold and warm.

    Both go through ``get_outputs_for_camera`` (what ns-render, ns-eval and the viewer call), which keeps the encoding
    of the last subject-frame:

    * **cold**: the encoding cache is empty (``model.eval()`` drops it), so the time includes building the source
      views from the (already decoded) images, encoding them (encoder + registration + proxy volume) and rendering:
      what the first view of a subject-frame costs;
    * **warm**: the same camera again with the encoding cached: what every further view of that subject-frame costs
      (an orbit, the viewer).

    Each is the minimum over ``repeats`` (cold, warm) pairs; the warm render is also split into the model's phases
    (``render_rays``: ray sampling + 3D field + volume rendering; the 2D renderer; the rest).

    ``variant``: ``"trained"`` renders the system as trained; ``"volume-full-res"`` renders the same weights with the
    2D neural renderer detached, i.e. the field's RGB volume-rendered at every output pixel (what the model would cost
    without half-resolution feature rendering).
    """
    from gmnerf_ns.benchmark.probes import PhaseTimer, model_phases

    mode, system, resolution = mode_from_spec(spec), spec["system"], int(spec["resolution"])
    out: Dict[str, Any] = {"system": system, "variant": spec["variant"], "resolution": resolution,
                           "rss_start_mb": rss_mb()}
    config = gm_config(mode, system)
    pipeline = setup_pipeline(config)
    try:
        model = pipeline.model
        model.load_state_dict(torch.load(spec["weights"], map_location="cpu", weights_only=True))
        model.eval()
        if spec["variant"] == "volume-full-res":
            model.renderer = None
        dm = pipeline.datamanager
        camera, _ = dm.eval_image(int(spec["index"]))
        camera = copy.deepcopy(camera)
        camera.rescale_output_resolution(resolution / float(camera.height.view(-1)[0]))
        camera.height = torch.full_like(camera.height, resolution)
        camera.width = torch.full_like(camera.width, resolution)
        meta = camera.metadata
        dm.source_views(int(meta["subject_index"].view(-1)[0]), int(meta["frame_id"].view(-1)[0]))  # decode once
        out["rss_ready_mb"] = rss_mb()
        cold, warm, cold_cpu, warm_cpu, encode, sources, phases = [], [], [], [], [], [], []
        provider = model.source_provider

        def timed_provider(*key):
            t0 = time.perf_counter()
            result = provider(*key)
            sources.append(time.perf_counter() - t0)
            return result

        model.source_provider = timed_provider
        timer = PhaseTimer()
        try:
            with model_phases(model, [timer]):
                for _ in range(max(1, int(spec.get("repeats", 1)))):
                    model.eval()  # drops the encoding cache: the next render encodes the sources (cold)
                    timer.reset()
                    cpu0, t0 = cpu_seconds(), time.perf_counter()
                    outputs = model.get_outputs_for_camera(camera)
                    cold.append(time.perf_counter() - t0)
                    cold_cpu.append(cpu_seconds() - cpu0)
                    encode.append(timer.seconds.get("encode", 0.0))
                    timer.reset()
                    cpu0, t0 = cpu_seconds(), time.perf_counter()
                    outputs = model.get_outputs_for_camera(camera)  # encoding cached (warm)
                    warm.append(time.perf_counter() - t0)
                    warm_cpu.append(cpu_seconds() - cpu0)
                    assert "encode" not in timer.seconds, "the warm render re-encoded the sources"
                    phases.append({**timer.seconds, "total": warm[-1]})
        finally:
            model.source_provider = provider
        assert tuple(outputs["rgb"].shape[:2]) == (resolution, resolution), outputs["rgb"].shape
        out["peak_rss_mb"] = peak_rss_mb()
        out["peak_increment_mb"] = out["peak_rss_mb"] - out["rss_ready_mb"]
        best = int(np.argmin(warm))
        out["warm_seconds"] = warm[best]
        out["cold_seconds"] = min(cold)
        out["render_seconds"] = out["warm_seconds"]  # the encoding is shared by every view of a subject-frame
        out["warm_seconds_all"], out["cold_seconds_all"] = warm, cold
        # process CPU time: with one torch thread it is the work done, whatever else the machine runs (a load-robust
        # cross-check of the wall-clock ratio; with more threads it also counts their spinning)
        out["warm_cpu_seconds"], out["cold_cpu_seconds"] = min(warm_cpu), min(cold_cpu)
        out["cpu_seconds"] = warm_cpu[best]
        out["encode_seconds"] = min(encode)
        out["sources_seconds"] = min(sources) if sources else None
        p = phases[best]
        out["warm_breakdown"] = {"rays_seconds": p.get("rays", 0.0), "renderer_seconds": p.get("renderer", 0.0),
                                 "other_seconds": max(p["total"] - p.get("rays", 0.0) - p.get("renderer", 0.0), 0.0)}
        factor = 2 if model.renderer is not None else 1
        out["volume_rays"] = math.ceil(resolution / factor) ** 2
        out["cpu_utilisation"] = out["cpu_seconds"] / max(warm[best], 1e-9)
    finally:
        close_pipeline(pipeline)
    return out


def task_train_memory(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Memory and step time of a few gm-nerf-small training steps at one patch size and gradient fraction.

    Three measures of the same steps:

    * ``saved_mb``: bytes of the tensors autograd saves for backward in a step (unique storages, parameters
      excluded), mean over the steps, with its split by phase (:data:`gmnerf_ns.benchmark.probes.PHASES`) — the
      activation memory, deterministic, and exactly what partial gradient acts on;
    * ``peak_increment_mb``: peak RSS over the ready-to-train process (the steps' working memory as the OS sees it,
      including the allocator's caching and the transient buffers of the no-grad rendering);
    * ``device_peak_mb``: on CUDA, ``torch.cuda.max_memory_allocated`` over the steps above what was allocated before
      (None on CPU).

    The datamanager's draws depend only on its seed and the draw count, so both gradient fractions train on the same
    patches and source views.
    """
    from gmnerf_ns.benchmark.probes import DevicePeak, SavedTensorMeter

    mode, patch, fraction = mode_from_spec(spec), int(spec["patch_size"]), float(spec["grad_ray_fraction"])
    device = spec.get("device") or "cpu"
    torch.manual_seed(0)
    out: Dict[str, Any] = {"patch_size": patch, "grad_ray_fraction": fraction, "device": device,
                           "rss_start_mb": rss_mb()}
    config = gm_config(mode, "gm-nerf-small", patch_size=patch, grad_ray_fraction=fraction)
    config.pipeline.datamanager.num_workers = 0  # nothing decoded ahead: the peak is the step's own
    pipeline = config.pipeline.setup(device=device, test_mode="test")
    try:
        optimizers = make_optimizers(config, pipeline)
        callbacks = training_callbacks(pipeline, optimizers)
        pipeline.datamanager.next_train(0)  # decode the views once (cached), so the peak below is the training's
        pipeline.datamanager.train_draws = 0
        model = pipeline.model
        per_step: List[Dict[str, Any]] = []
        original = pipeline.get_train_loss_dict

        def metered(step: int):
            meter = SavedTensorMeter(model)
            with meter.measure(model):
                result = original(step)
            per_step.append(meter.summary())
            return result

        pipeline.get_train_loss_dict = metered  # instance attribute: the forward pass of every step is metered
        out["rss_ready_mb"] = rss_mb()
        steps = int(spec["steps"])
        try:
            with DevicePeak(device) as device_peak:
                result = train_for(pipeline, optimizers, callbacks, budget=0.0, min_steps=steps, max_steps=steps)
        finally:
            del pipeline.get_train_loss_dict
        out["peak_rss_mb"] = peak_rss_mb()
        out["peak_increment_mb"] = out["peak_rss_mb"] - out["rss_ready_mb"]
        out["device_peak_mb"] = device_peak.peak_mb
        out["steps"] = result["steps"]
        out["seconds_per_step"] = result["train_seconds"] / max(result["steps"], 1)
        out["cpu_utilisation"] = result["cpu_utilisation"]
        out["volume_rays_per_step"] = math.ceil(patch / 2) ** 2
        out["grad_rays_per_step"] = max(1, int(round(fraction * out["volume_rays_per_step"])))
        out["saved_mb_per_step"] = [s["saved_mb"] for s in per_step]
        out["saved_mb"] = float(np.mean(out["saved_mb_per_step"]))
        phases = per_step[0]["saved_mb_by_phase"].keys()
        out["saved_mb_by_phase"] = {k: float(np.mean([s["saved_mb_by_phase"][k] for s in per_step])) for k in phases}
        perceptual = getattr(model, "perceptual", None)
        out["perceptual_loss"] = None if perceptual is None else getattr(perceptual, "kind", type(perceptual).__name__)
    finally:
        close_pipeline(pipeline)
    return out


def _save_png(path: Path, image: torch.Tensor) -> None:
    import imageio.v2 as imageio

    imageio.imwrite(path, (image.clamp(0, 1).numpy() * 255).round().astype(np.uint8))


TASKS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    "inspect": task_inspect,
    "train_gm": task_train_gm,
    "train_nerfacto": task_train_nerfacto,
    "render": task_render,
    "train_memory": task_train_memory,
}


def run_task(kind: str, spec: Dict[str, Any], result_path: Path) -> None:
    """Child-process body: set threads, run, write the result (or the error) as JSON."""
    import traceback

    torch.set_num_threads(int(spec.get("threads", 1)))
    start = time.perf_counter()
    try:
        result = TASKS[kind](spec)
    except BaseException as err:  # noqa: BLE001 - reported in the results, the run goes on
        result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    result["task_seconds"] = time.perf_counter() - start
    result["task_peak_rss_mb"] = peak_rss_mb()
    result_path.write_text(json.dumps(result, default=_json_default))


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")
