"""gmnerf-doctor's picture of the fit: overlay pictures of the posed proxy over the views of a few subjects, and the
cameras whose proxy silhouette and mask disagree (intersection over union)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Dict, List

import numpy as np

from gmnerf_ns.cli.doctor_dataset import spread
from gmnerf_ns.cli.doctor_options import DoctorConfig
from gmnerf_ns.cli.doctor_table import Check, summarise
from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import FrameRecord, HumanDataWarning, SubjectRecord, ViewRecord, load_vertices


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
    chosen = [list(subjects.values())[i] for i in spread(len(subjects), cfg.overlay_subjects)]
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
        rows.append(summarise("dataset", "overlays", problems, len(problems), "overlay views"))
    if not write:
        rows.append(Check("dataset", "overlays", "warn",
                          f"{folder} holds overlay pictures of an earlier run (e.g. {earlier[0]}); none written: pass "
                          "--force to overwrite them or --overlay-dir for another folder"))
    elif written:
        rows.append(Check("dataset", "overlays", "info",
                          f"{written} pictures in {folder}/ (first frame of {len(chosen)} subject(s), one per camera: "
                          "proxy silhouette green, mask outline magenta)"))
    return rows
