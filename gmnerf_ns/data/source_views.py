"""Builds a subject-frame's :class:`SourceViews` (m decoded views, their cameras and the proxy) for the model."""

from __future__ import annotations

import random
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch

from gmnerf_ns.data.human_record import FrameRecord, SubjectRecord, ViewRecord, load_subject_vertices, proxy_bbox
from gmnerf_ns.data.proxy_jitter import jitter_proxy
from gmnerf_ns.model.sources import SourceViews


def load_sources(load: Callable[[ViewRecord], Tuple[torch.Tensor, torch.Tensor]], subject: SubjectRecord,
                 frame: FrameRecord, cameras: Sequence[int], padding: float, subject_index: int,
                 proxy_jitter: float = 0.0, jitter: Optional[random.Random] = None) -> SourceViews:
    """Loads the views ``cameras`` of a subject-frame through ``load`` (image, mask) and its proxy, randomly misfit by
    ``proxy_jitter`` radians when a ``jitter`` stream is given (training samples only)."""
    images, masks, Ks, Rs, Ts = [], [], [], [], []
    for cam in cameras:
        view = frame.views[cam]
        image, mask = load(view)
        images.append(image.permute(2, 0, 1))
        masks.append(mask.permute(2, 0, 1))
        Ks.append(view.output_intrinsics)
        Rs.append(np.asarray(view.R))
        Ts.append(np.asarray(view.T).reshape(3))
    verts = load_subject_vertices(subject, frame)
    if jitter is not None and proxy_jitter > 0:
        verts = jitter_proxy(verts, np.random.default_rng(jitter.getrandbits(64)), proxy_jitter)
    as_tensor = lambda x: torch.from_numpy(np.stack(x)).float()  # noqa: E731
    return SourceViews(
        images=torch.stack(images),
        masks=torch.stack(masks),
        intrinsics=as_tensor(Ks),
        rotations=as_tensor(Rs),
        translations=as_tensor(Ts),
        vertices=torch.from_numpy(verts),
        bbox=torch.from_numpy(proxy_bbox(verts, padding)),
        faces=None if subject.faces is None else torch.from_numpy(np.asarray(subject.faces, dtype=np.int64)),
        subject_index=subject_index,
        frame_id=frame.frame_id,
        camera_indices=tuple(int(c) for c in cameras),
    )
