"""``gmnerf-doctor``: checks a dataset and this machine before a long run, and says what a run will use.

It parses the dataset with the chosen dataparser and protocol (both splits), decodes a spread-out sample of views as
training does (missing, truncated or corrupt images and masks, empty masks), loads a sample of frames' proxy vertices
(finite, right shape), checks that each sampled proxy projects onto its person (a camera that does not match its
images shows up there), runs ns-train's pre-flight checks (:mod:`gmnerf_ns.data.preflight`: every camera of the first
frame sees its proxy, images the size of their intrinsics, masks the size of the images), and reports the
environment: device, tiny-cuda-nn, distributed backends, pretrained weights (encoder ResNet, VGG for the perceptual
loss, LPIPS backbone: in the cache, or to be downloaded on first use) and body-model files. It prints one table and
exits with status 1 if anything is an error, 0 otherwise (warnings are things a run works around, e.g. a missing VGG
falls back to an SSIM loss).

A picture of the fit: for the first frame of a few subjects (``--overlay-subjects``, spread over both splits) it
writes one PNG per camera into ``--overlay-dir`` (default ``gmnerf_doctor/<dataset folder name>/``), the posed proxy's
silhouette in green over the view with the mask's outline in magenta (:mod:`gmnerf_ns.cli.overlay`), and names the
cameras whose silhouette and mask overlap less than ``--iou-threshold`` (intersection over union). Pictures of an
earlier run are not overwritten without ``--force``. A wrong unit (millimetres, a wrong scale factor) stops the
dataset parse itself with one error naming the factor that fixes it (``check_scale`` in
``gmnerf_ns/data/human_dataparser.py``), which shows up here as the split's error.

Examples::

    gmnerf-doctor --data data/synthetic
    gmnerf-doctor --dataparser zju-mocap --data zju --method gm-nerf --body-model-dir ~/models
    gmnerf-doctor --data my_capture --overlay-dir checks/my_capture --overlay-subjects 1 --force
"""

from __future__ import annotations

import copy
import importlib.metadata
import os
import platform
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple

import numpy as np
import torch
import tyro
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.core.weights import OFFLINE_ENV, TORCHVISION_URLS, expected_weights_path, weights_availability
from gmnerf_ns.data.human_record import (
    FrameRecord,
    HumanDataWarning,
    SubjectRecord,
    ViewRecord,
    load_subject_vertices,
    load_vertices,
)
from gmnerf_ns.data.preflight import check_collections, problem_lines, project_proxy

Status = Literal["ok", "info", "warn", "error"]
STYLES = {"ok": "green", "info": "cyan", "warn": "yellow", "error": "bold red"}


@dataclass
class Check:
    """One row of the report."""

    area: str
    item: str
    status: Status
    detail: str


@dataclass
class DoctorConfig:
    """Validate a dataset and the environment for gm-nerf."""

    data: Path = Path("synthetic")
    """Dataset to check, as given to ns-train (a folder, or a short name under $GMNERF_DATA)."""
    dataparser: str = "gmnerf-auto"
    """Dataparser, as named on the ns-train command line (gmnerf-auto: detected from --data like ns-train's default;
    or gmnerf-synthetic, zju-mocap, genebody, thuman2, multi-garment)."""
    protocol: Optional[str] = None
    """Protocol preset or YAML path (default: the dataparser's)."""
    method: str = "gm-nerf-small"
    """Method whose needs are checked (weights, device): gm-nerf, gm-nerf-small or gm-nerf-finetune."""
    sample_views: int = 48
    """Views decoded, spread over both splits (0 = all)."""
    sample_frames: int = 64
    """Frames whose proxy vertices are loaded, spread over both splits (0 = all)."""
    body_model_dir: Optional[Path] = None
    """Your SMPL/SMPL-X folder (smpl/SMPL_NEUTRAL.pkl, smplx/SMPLX_MALE.npz, ...), needed by gmnerf-render-scans and
    passed on to dataparsers that pose fitted parameters (easymocap, humman, mvhumannet, dna-rendering)."""
    device_type: Optional[Literal["auto", "cpu", "cuda", "mps"]] = None
    """The device the run will ask for, as ns-train's --machine.device-type (default: the method's; auto = CUDA when
    available, else the CPU)."""
    num_workers: Optional[int] = None
    """Background decoding threads the run will use (default: the method's)."""
    resolution: Optional[int] = None
    """Override the protocol's image height, as the dataparser's --resolution."""
    num_input_views: Optional[int] = None
    """Override the protocol's number of source views m, as the dataparser's --num-input-views."""
    overlay_dir: Optional[Path] = None
    """Folder for the overlay pictures (one PNG per camera: the proxy's silhouette in green over the view, the mask's
    outline in magenta); None = gmnerf_doctor/<dataset folder name> in the current folder."""
    overlay_subjects: int = 4
    """Subjects, spread over both splits, whose first frame gets overlay pictures and the IoU check (0 = none)."""
    iou_threshold: float = 0.5
    """Cameras whose proxy silhouette and mask have an intersection over union below this are flagged by name (the
    proxy is the naked body, so even a good fit is below 1; docs/capture.md gives typical values)."""
    force: bool = False
    """Overwrite the overlay pictures of an earlier run (otherwise they are kept and none are written)."""


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def check_environment(method_name: str) -> List[Check]:
    from gmnerf_ns import __version__

    rows = [Check("environment", "versions", "info",
                  f"python {platform.python_version()}, torch {torch.__version__}, nerfstudio {_version('nerfstudio')}, "
                  f"gmnerf-ns {__version__}")]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        rows.append(Check("environment", "device", "ok", f"CUDA {torch.version.cuda}: {names} (--machine.device-type "
                                                         "cuda)"))
    else:
        status: Status = "warn" if method_name == "gm-nerf" else "info"
        hint = "; gm-nerf is sized for a GPU, use gm-nerf-small" if method_name == "gm-nerf" else ""
        rows.append(Check("environment", "device", status, f"CPU only ({os.cpu_count()} cores){hint}"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from nerfstudio.utils.external import TCNN_EXISTS
    except Exception:  # pragma: no cover - nerfstudio itself is broken
        TCNN_EXISTS = False
    if TCNN_EXISTS:
        rows.append(Check("environment", "tiny-cuda-nn", "ok", "present: fused MLPs on CUDA"))
    else:
        status = "warn" if torch.cuda.is_available() else "info"
        rows.append(Check("environment", "tiny-cuda-nn", status,
                          "absent: pure-torch MLPs (pip install git+https://github.com/NVlabs/tiny-cuda-nn/"
                          "#subdirectory=bindings/torch on a CUDA machine)"))
    backends = [name for name, ok in (("gloo", torch.distributed.is_gloo_available()),
                                      ("nccl", torch.distributed.is_nccl_available())) if ok]
    rows.append(Check("environment", "multi-process", "info" if backends else "warn",
                      f"torch.distributed backends: {', '.join(backends) or 'none'} (--machine.num-devices N)"))
    return rows


def check_device(requested: str) -> Tuple[Check, str]:
    """(report row, device) of what ns-train decides for ``--machine.device-type requested`` on this machine, by the
    trainer's own rule (:func:`gmnerf_ns.core.device.choose_device`): the device, the CPU fallback (a warning) or the
    error (then "cpu" is returned for the rest of the report)."""
    from gmnerf_ns.core.device import choose_device
    from gmnerf_ns.core.errors import DeviceError

    try:
        device, notice = choose_device(requested)
    except DeviceError as err:
        return Check("run", "device", "error", str(err)), "cpu"
    if notice is not None:
        return Check("run", "device", "warn", f"trains on the CPU: CUDA is not available, so --machine.device-type "
                                              f"{requested} falls back to the CPU"), device
    return Check("run", "device", "ok", f"trains on {device} (--machine.device-type {requested})"), device


def weights_check(item: str, arch: str, weights_path: Optional[Path], used: str, fallback: str,
                  missing_status: Status = "warn") -> Check:
    """One row for a pretrained checkpoint: present, to be downloaded on first use, or missing (and what happens)."""
    path = expected_weights_path(arch, weights_path)
    availability = weights_availability(arch, weights_path)
    if availability == "present":
        return Check("weights", item, "ok", f"{used}: {path}")
    if availability == "download":
        return Check("weights", item, "info", f"{used}: not in the cache yet, downloaded on first use from "
                                              f"{TORCHVISION_URLS[arch]} to {path} (set {OFFLINE_ENV}=1 to forbid)")
    offline = f" and downloads are off ({OFFLINE_ENV}=1)" if weights_path is None else ""
    return Check("weights", item, missing_status, f"{path} not found{offline}: {fallback}")


def check_weights(config) -> List[Check]:
    """Pretrained weights a run of ``config`` (a TrainerConfig) uses, and which would be downloaded; downloads none."""
    import lpips

    model = config.pipeline.model
    rows = []
    encoder = model.encoder
    if encoder.backbone == "small":
        rows.append(Check("weights", "image encoder", "ok", "small CNN trained from scratch (needs no weights)"))
    else:
        rows.append(weights_check("image encoder", encoder.backbone, encoder.pretrained_weights,
                                  f"{encoder.backbone} ImageNet weights", "the encoder trains from scratch"))
    if model.perceptual_loss_mult > 0:
        perceptual = model.perceptual_loss
        arch = "vgg19" if perceptual.backbone == "vgg" else "vgg16"
        after = "falls back to 1 - MS-SSIM" if perceptual.allow_fallback else "training cannot start"
        rows.append(weights_check("perceptual loss", arch, perceptual.weights_path, f"{perceptual.backbone} on {arch}",
                                  after, "warn" if perceptual.allow_fallback else "error"))
    else:
        rows.append(Check("weights", "perceptual loss", "info", "disabled (perceptual_loss_mult = 0)"))
    linear = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    if linear.is_file():
        rows.append(weights_check("LPIPS metric", "alexnet", None, "AlexNet + lpips linear layers",
                                  "ns-eval reports LPIPS as unavailable (PSNR/SSIM unaffected)"))
    else:
        rows.append(Check("weights", "LPIPS metric", "warn", f"{linear} not found: ns-eval reports LPIPS as "
                                                            "unavailable (PSNR/SSIM unaffected)"))
    return rows


def check_body_models(body_model_dir: Optional[Path]) -> List[Check]:
    if body_model_dir is None:
        return [Check("body model", "SMPL / SMPL-X", "info", "no --body-model-dir: only gmnerf-render-scans needs the "
                                                             "files (THuman2.0, Multi-garment); training does not")]
    found = []
    for kind, names in (("smpl", ["SMPL_NEUTRAL.pkl", "SMPL_MALE.pkl", "SMPL_FEMALE.pkl"]),
                        ("smplx", [f"SMPLX_{g}.{e}" for g in ("NEUTRAL", "MALE", "FEMALE") for e in ("npz", "pkl")])):
        found += [f"{kind}/{n}" for n in names if (Path(body_model_dir) / kind / n).is_file()]
    if not Path(body_model_dir).is_dir():
        return [Check("body model", "SMPL / SMPL-X", "error", f"--body-model-dir {body_model_dir} does not exist")]
    if not found:
        return [Check("body model", "SMPL / SMPL-X", "warn", f"{body_model_dir} holds no smpl/SMPL_*.pkl or "
                                                             "smplx/SMPLX_*.npz files")]
    return [Check("body model", "SMPL / SMPL-X", "ok", f"{body_model_dir}: {', '.join(found)}")]


def dataparser_config(name: str):
    """The registered config of dataparser ``name`` (a fresh copy); raises KeyError listing the known names."""
    specs = {ep.name: ep for ep in importlib.metadata.entry_points(group="nerfstudio.dataparser_configs")}
    if name not in specs:
        from gmnerf_ns.training import dataparser_configs as ours

        local = {"gmnerf-auto": ours.auto_dataparser, "gmnerf-synthetic": ours.synthetic_dataparser, "zju-mocap": ours.zju_mocap_dataparser,
                 "genebody": ours.genebody_dataparser, "thuman2": ours.thuman2_dataparser,
                 "multi-garment": ours.multigarment_dataparser}
        if name in local:
            return copy.deepcopy(local[name].config)
        raise KeyError(f"unknown dataparser {name!r}; known: {', '.join(sorted(set(specs) | set(local)))}")
    return copy.deepcopy(specs[name].load().config)


def _spread(count: int, wanted: int) -> List[int]:
    if wanted <= 0 or wanted >= count:
        return list(range(count))
    return sorted({int(round(i * (count - 1) / max(wanted - 1, 1))) for i in range(wanted)})


def _summarise(area: str, item: str, problems: List[str], total: int, what: str) -> Check:
    if not problems:
        return Check(area, item, "ok", f"{total} {what} checked")
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return Check(area, item, "error", f"{len(problems)} of {total} {what} failed: {shown}")


def _proxy_on_person(view: ViewRecord, vertices: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the proxy's vertices in front of the camera that project inside the person's mask."""
    front, uv = project_proxy(view, vertices)
    if not front.any():
        return 0.0
    uv = uv[front]
    h, w = mask.shape
    x, y = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    hits = np.zeros(len(uv), dtype=bool)
    hits[inside] = mask[y[inside], x[inside]]
    return float(hits.mean())


def check_dataset(cfg: DoctorConfig, num_source_views_default: Optional[int] = None) -> Tuple[List[Check], Dict]:
    """Rows for the dataset, and a summary dict (subjects, views, resolution) for the 'will use' rows."""
    from gmnerf_ns.core.errors import USER_ERRORS

    summary: Dict = {}
    try:
        config = dataparser_config(cfg.dataparser)
    except KeyError as err:
        return [Check("dataset", "dataparser", "error", str(err.args[0]))], summary
    try:
        parser = _dataparser(config, cfg)  # gmnerf-auto detects the dataset here
    except USER_ERRORS as err:
        return [Check("dataset", "dataparser", "error", str(err))], summary
    rows, collections = _parse_splits(parser, summary)
    if not collections:
        return rows, summary

    m = summary.get("m", num_source_views_default or 0)
    few = [f"{s.name} ({len(s.camera_names)})" for c in collections.values() for s in c.subjects
           if len(s.camera_names) <= m]
    rows.append(Check("dataset", "cameras per subject", "error" if few else "ok",
                      f"need more than m={m} cameras; too few: {', '.join(few)}" if few else f"all more than m={m}"))

    # a spread-out sample of frames and views over both splits
    frames: List[Tuple[SubjectRecord, FrameRecord]] = [(s, f) for c in collections.values() for s in c.subjects
                                                       for f in s.frames]
    vertex_row, vertices = _check_vertices(frames, cfg.sample_frames)
    rows.append(vertex_row)
    views = [(s, f, v) for s, f in frames for v in f.views]
    rows += _check_views(views, vertices, cfg.sample_views)
    rows += check_camera_geometry(collections)
    summary["views"] = len(views)
    rows += check_overlays(cfg, collections)
    return rows, summary


def _dataparser(config, cfg: DoctorConfig):
    """The dataparser of ``config`` with the data, protocol, resolution, m and body models of ``cfg``."""
    config.data = Path(cfg.data)
    if cfg.protocol is not None:
        config.protocol = cfg.protocol
    for key in ("resolution", "num_input_views"):
        if getattr(cfg, key) is not None:
            setattr(config, key, getattr(cfg, key))
    if cfg.body_model_dir is not None and hasattr(config, "body_model_dir"):
        config.body_model_dir = cfg.body_model_dir
    return config.setup()


def _parse_splits(parser, summary: Dict) -> Tuple[List[Check], Dict]:
    """Parses both splits: a row per split and per skipped item, and the human collection of each split that parsed;
    the protocol and subjects go into ``summary``."""
    from nerfstudio.utils.rich_utils import CONSOLE

    rows: List[Check] = []
    collections = {}
    quiet, CONSOLE.quiet = CONSOLE.quiet, True  # the parser's own progress lines would break up the table
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HumanDataWarning)
        try:
            for split in ("train", "test"):
                try:
                    outputs = parser.get_dataparser_outputs(split=split)
                except HumanDataError as err:
                    rows.append(Check("dataset", f"{split} split", "error", str(err)))
                    continue
                collection = outputs.metadata["human"]
                collections[split] = collection
                protocol = outputs.metadata["protocol"]
                frames = sum(len(s.frames) for s in collection.subjects)
                rows.append(Check("dataset", f"{split} split", "ok",
                                  f"{len(collection.subjects)} subjects, {frames} frames, {len(outputs.image_filenames)} "
                                  f"target views (protocol {protocol.name}, m={protocol.num_input_views}, "
                                  f"{protocol.resolution}px)"))
                summary.update(protocol=protocol.name, m=protocol.num_input_views, resolution=protocol.resolution)
                summary[f"{split}_subjects"] = [s.name for s in collection.subjects]
        finally:
            CONSOLE.quiet = quiet
    seen = set()
    for warning in caught:
        if issubclass(warning.category, HumanDataWarning) and str(warning.message) not in seen:
            seen.add(str(warning.message))
            rows.append(Check("dataset", "skipped", "warn", str(warning.message)))
    return rows, collections


def _check_vertices(frames: List[Tuple[SubjectRecord, FrameRecord]], sample: int
                    ) -> Tuple[Check, Dict[Tuple[str, int], np.ndarray]]:
    """Loads the proxy vertices of ``sample`` spread-out frames: the row, and the vertices that loaded."""
    vertex_problems, vertices = [], {}
    chosen_frames = _spread(len(frames), sample)
    for i in chosen_frames:
        subject, frame = frames[i]
        try:
            vertices[(subject.name, frame.frame_id)] = load_subject_vertices(subject, frame)
        except HumanDataError as err:
            vertex_problems.append(str(err))
    return _summarise("dataset", "proxy vertices", vertex_problems, len(chosen_frames), "frames"), vertices


def _check_views(views: List[Tuple[SubjectRecord, FrameRecord, ViewRecord]],
                 vertices: Dict[Tuple[str, int], np.ndarray], sample: int) -> List[Check]:
    """Decodes ``sample`` spread-out views: rows for unreadable images and masks, empty masks, and views whose proxy
    misses the person (``vertices``: those already loaded, by subject and frame)."""
    from gmnerf_ns.data.view_loader import load_view

    view_problems, empty, off = [], [], []
    chosen_views = _spread(len(views), sample)
    for i in chosen_views:
        subject, frame, view = views[i]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", HumanDataWarning)
                _, mask = load_view(view)
        except HumanDataError as err:
            view_problems.append(str(err))
            continue
        if not mask.any():
            empty.append(str(view.image_path))
            continue
        verts = vertices.get((subject.name, frame.frame_id))
        if verts is None:
            try:
                verts = load_vertices(frame)
            except HumanDataError:
                continue  # reported above when sampled; otherwise training reports it
        score = _proxy_on_person(view, verts, mask)
        if score < 0.3:
            off.append(f"{view.image_path} ({100 * score:.0f}% of the proxy on the mask)")
    rows = [_summarise("dataset", "images and masks", view_problems, len(chosen_views), "views")]
    if empty:
        rows.append(Check("dataset", "empty masks", "error", f"{len(empty)} views have no foreground pixel: "
                                                             f"{', '.join(empty[:3])}"))
    if off:
        rows.append(Check("dataset", "cameras vs proxy", "warn",
                          f"{len(off)} views where the proxy mostly misses the person (camera calibration, image "
                          f"order or proxy fit off?): {'; '.join(off[:3])}"))
    else:
        rows.append(Check("dataset", "cameras vs proxy", "ok", "every sampled proxy projects onto its person"))
    return rows


def check_camera_geometry(collections: Dict) -> List[Check]:
    """ns-train's pre-flight checks (:mod:`gmnerf_ns.data.preflight`): one row per line it warns with."""
    problems, cameras = check_collections(collections.values())
    if not problems:
        return [Check("dataset", "camera geometry", "ok",
                      f"{sum(cameras.values())} cameras of {len(cameras)} subject(s), first frame: the proxy in front "
                      "and in view, images the size of their intrinsics, masks the size of the images")]
    return [Check("dataset", "camera geometry", "warn", line) for line in problem_lines(problems, cameras, None)]


def overlay_folder(cfg: DoctorConfig) -> Path:
    """``--overlay-dir``, or ``gmnerf_doctor/<dataset folder name>`` in the current folder."""
    if cfg.overlay_dir is not None:
        return Path(cfg.overlay_dir)
    return Path("gmnerf_doctor") / (_file_name(Path(cfg.data).name) or "data")


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")


def check_overlays(cfg: DoctorConfig, collections: Dict) -> List[Check]:
    """Overlay pictures and the proxy-vs-mask IoU of every camera of the first frame of ``cfg.overlay_subjects``
    subjects; rows naming the cameras below ``cfg.iou_threshold`` and the folder the pictures went to."""
    import cv2

    from gmnerf_ns.cli.overlay import view_overlay
    from gmnerf_ns.data.view_loader import load_view

    if cfg.overlay_subjects <= 0:
        return []
    subjects: Dict[str, SubjectRecord] = {}
    for collection in collections.values():
        for subject in collection.subjects:
            subjects.setdefault(subject.name, subject)
    chosen = [list(subjects.values())[i] for i in _spread(len(subjects), cfg.overlay_subjects)]
    folder = overlay_folder(cfg)

    def target(subject: SubjectRecord, frame: FrameRecord, view: ViewRecord) -> Path:
        return folder / _file_name(subject.name) / f"frame{frame.frame_id}_{_file_name(view.camera_name)}.png"

    earlier = [t for s in chosen for v in s.frames[0].views if (t := target(s, s.frames[0], v)).exists()]
    write = cfg.force or not earlier
    written, flagged, ious, problems = 0, [], [], []
    for subject in chosen:
        frame = subject.frames[0]
        try:
            vertices = load_vertices(frame)
        except HumanDataError as err:
            problems.append(str(err))
            continue
        for view in frame.views:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", HumanDataWarning)
                    image, mask = load_view(view)
            except HumanDataError as err:
                problems.append(str(err))
                continue
            picture, iou = view_overlay(view, image, mask, vertices, subject.faces)
            ious.append(iou)
            if iou < cfg.iou_threshold:
                flagged.append(f"{subject.name} camera {view.camera_name} (IoU {iou:.2f})")
            if write:
                path = target(subject, frame, view)
                path.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
                    problems.append(f"{path}: could not write the overlay picture")
                    continue
                written += 1
    rows = []
    if flagged:
        shown = ", ".join(flagged[:12]) + (f", and {len(flagged) - 12} more" if len(flagged) > 12 else "")
        rows.append(Check("dataset", "proxy vs masks", "warn",
                          f"{len(flagged)} of {len(ious)} cameras' proxy silhouette and mask disagree (IoU < "
                          f"{cfg.iou_threshold:g}; calibration, camera order or body fit off?): {shown}"))
    elif ious:
        rows.append(Check("dataset", "proxy vs masks", "ok",
                          f"{len(ious)} cameras of {len(chosen)} subject(s): IoU {min(ious):.2f}-{max(ious):.2f} "
                          f"(median {float(np.median(ious)):.2f}; flagged below {cfg.iou_threshold:g})"))
    if problems:
        rows.append(_summarise("dataset", "overlays", problems, len(problems), "overlay views"))
    if not write:
        rows.append(Check("dataset", "overlays", "warn",
                          f"{folder} holds overlay pictures of an earlier run (e.g. {earlier[0]}); none written: pass "
                          "--force to overwrite them or --overlay-dir for another folder"))
    elif written:
        rows.append(Check("dataset", "overlays", "info",
                          f"{written} pictures in {folder}/ (first frame of {len(chosen)} subject(s), one per camera: "
                          "proxy silhouette green, mask outline magenta)"))
    return rows


def method_config(name: str):
    from gmnerf_ns.training import method_configs

    specs = [method_configs.gm_nerf, method_configs.gm_nerf_small, method_configs.gm_nerf_finetune]
    configs = {spec.config.method_name: spec.config for spec in specs}
    if name not in configs:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(configs)}")
    return copy.deepcopy(configs[name])


def run_checks(cfg: DoctorConfig) -> List[Check]:
    """Every check, in report order."""
    try:
        config = method_config(cfg.method)
    except KeyError as err:
        return [Check("run", "method", "error", str(err.args[0]))]
    rows = check_environment(cfg.method)
    rows += check_weights(config)
    rows += check_body_models(cfg.body_model_dir)
    data_rows, summary = check_dataset(cfg)
    rows += data_rows
    device_row, device = check_device(cfg.device_type or config.machine.device_type)
    rows.append(device_row)
    tcnn = device == "cuda" and any(r.item == "tiny-cuda-nn" and r.status == "ok" for r in rows)
    workers = cfg.num_workers if cfg.num_workers is not None else config.pipeline.datamanager.num_workers
    rows.append(Check("run", cfg.method, "info",
                      f"device {device}, {'tiny-cuda-nn' if tcnn else 'torch'} MLPs, {workers} decoding thread(s), "
                      f"patch {config.pipeline.datamanager.patch_size}px, {config.max_num_iterations} steps"))
    if summary.get("train_subjects"):
        rows.append(Check("run", "data", "info",
                          f"train on {len(summary['train_subjects'])} subjects, evaluate on "
                          f"{', '.join(summary.get('test_subjects', [])) or '-'}; {summary['views']} views at "
                          f"{summary['resolution']}px, m={summary['m']} source views"))
    return rows


def render(rows: List[Check], console: Optional[Console] = None) -> None:
    table = Table(title="gmnerf-doctor", show_lines=False)
    for name in ("area", "item", "status", "details"):
        table.add_column(name, overflow="fold")
    for row in rows:
        style = STYLES[row.status]
        table.add_row(row.area, row.item, f"[{style}]{row.status}[/{style}]", escape(row.detail))
    console = console or Console()
    console.print(table)
    for row in rows:  # unwrapped, so they can be copied and searched
        if row.status == "error":
            console.print(f"[bold red]error[/bold red] {escape(row.item)}: {escape(row.detail)}", soft_wrap=True)
    for row in rows:  # where the pictures are, unwrapped
        if row.item == "overlays" and row.status == "info":
            console.print(f"overlays: {escape(row.detail)}", soft_wrap=True)
    errors = sum(r.status == "error" for r in rows)
    warns = sum(r.status == "warn" for r in rows)
    verdict = "[bold red]errors found[/bold red]" if errors else "[green]ready[/green]"
    console.print(f"{verdict}: {errors} error(s), {warns} warning(s)")


def main(cfg: DoctorConfig, console: Optional[Console] = None) -> int:
    """Runs the checks, prints the table, returns the exit status (1 if any check is an error)."""
    rows = run_checks(cfg)
    render(rows, console)
    return 1 if any(r.status == "error" for r in rows) else 0


def entrypoint() -> None:
    """``gmnerf-doctor`` console script."""
    sys.exit(main(tyro.cli(DoctorConfig)))


if __name__ == "__main__":
    entrypoint()
