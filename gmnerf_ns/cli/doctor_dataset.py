"""gmnerf-doctor's checks of the dataset: both splits parse with the chosen dataparser and protocol, every subject has
more cameras than source views, and a spread-out sample of frames and views loads as training loads them (proxy
vertices, images and masks) with each proxy on its person; then ns-train's pre-flight camera checks."""

from __future__ import annotations

import copy
import importlib.metadata
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from gmnerf_ns.cli.doctor_options import DoctorConfig
from gmnerf_ns.cli.doctor_table import Check, summarise
from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import (
    FrameRecord,
    HumanDataWarning,
    SubjectRecord,
    ViewRecord,
    load_subject_vertices,
    load_vertices,
)
from gmnerf_ns.data.preflight import check_collections, problem_lines, project_proxy


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


def spread(count: int, wanted: int) -> List[int]:
    """Indices of ``wanted`` of ``count`` items, evenly spread (all of them when ``wanted`` is 0 or not fewer)."""
    if wanted <= 0 or wanted >= count:
        return list(range(count))
    return sorted({int(round(i * (count - 1) / max(wanted - 1, 1))) for i in range(wanted)})


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


def check_dataset(cfg: DoctorConfig, num_source_views_default: Optional[int] = None
                  ) -> Tuple[List[Check], Dict, Dict]:
    """Rows for the dataset, a summary dict (subjects, views, resolution) for the 'will use' rows, and the human
    collection of each split that parsed (for the overlays)."""
    from gmnerf_ns.core.errors import USER_ERRORS

    summary: Dict = {}
    try:
        config = dataparser_config(cfg.dataparser)
    except KeyError as err:
        return [Check("dataset", "dataparser", "error", str(err.args[0]))], summary, {}
    try:
        parser = _dataparser(config, cfg)  # gmnerf-auto detects the dataset here
    except USER_ERRORS as err:
        return [Check("dataset", "dataparser", "error", str(err))], summary, {}
    rows, collections = _parse_splits(parser, summary)
    if not collections:
        return rows, summary, collections

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
    return rows, summary, collections


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
    chosen_frames = spread(len(frames), sample)
    for i in chosen_frames:
        subject, frame = frames[i]
        try:
            vertices[(subject.name, frame.frame_id)] = load_subject_vertices(subject, frame)
        except HumanDataError as err:
            vertex_problems.append(str(err))
    return summarise("dataset", "proxy vertices", vertex_problems, len(chosen_frames), "frames"), vertices


def _check_views(views: List[Tuple[SubjectRecord, FrameRecord, ViewRecord]],
                 vertices: Dict[Tuple[str, int], np.ndarray], sample: int) -> List[Check]:
    """Decodes ``sample`` spread-out views: rows for unreadable images and masks, empty masks, and views whose proxy
    misses the person (``vertices``: those already loaded, by subject and frame)."""
    from gmnerf_ns.data.view_loader import load_view

    view_problems, empty, off = [], [], []
    chosen_views = spread(len(views), sample)
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
    rows = [summarise("dataset", "images and masks", view_problems, len(chosen_views), "views")]
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
