"""Cross-subject datamanager: each training step is one subject-frame, m source views and a different target view.

Subclasses nerfstudio's :class:`FullImageDatamanager` (so ``ns-render dataset`` and ``ns-eval`` accept it) but never
caches whole datasets: views are decoded on demand through a bounded LRU cache, so memory does not grow with the
number of subjects on disk.

* ``next_train``: a random target view of a training subject-frame; m source views on a ring with a random offset that
  excludes the target (or fully random / the protocol's); a random ``patch_size`` patch of the target that overlaps
  the person. The batch carries ``sources`` and ``patch``; the target camera carries subject/frame metadata.
* ``next_eval`` / ``next_eval_image`` / ``fixed_indices_eval_dataloader``: held-out subjects, the protocol's input
  views as sources and its target views as targets, with the projected-3D-box mask used by the metrics.
* ``source_views(subject_index, frame_id)``: the provider the model uses for cameras that only carry metadata.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Literal, Sequence, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataParserConfig
from nerfstudio.data.datasets.base_dataset import InputDataset

from gmnerf_ns.data.human_record import (
    FrameRecord,
    HumanCollection,
    HumanDataError,
    SubjectRecord,
    ViewRecord,
    load_vertices,
    proxy_bbox,
)
from gmnerf_ns.data.view_loader import load_view
from gmnerf_ns.dataparsers.synthetic import SyntheticDataParserConfig
from gmnerf_ns.model.sources import SourceViews


@dataclass
class GMNeRFDataManagerConfig(FullImageDatamanagerConfig):
    """Cross-subject sampling of (source views, target patch) pairs."""

    _target: Type = field(default_factory=lambda: GMNeRFDataManager)
    dataparser: DataParserConfig = field(default_factory=SyntheticDataParserConfig)
    patch_size: int = 128
    """Side of the square training patch (full-resolution pixels); the feature image is half of it."""
    foreground_patch_probability: float = 0.95
    """Probability that a patch is centred on a random foreground pixel (otherwise anywhere)."""
    train_source_views: Literal["ring", "random", "protocol"] = "ring"
    """Training sources: evenly spaced on the camera ring with a random offset ('ring'), m random cameras ('random'),
    or the protocol's input views ('protocol'). The target view is never a source."""
    view_cache_size: int = 256
    """Decoded views kept in memory (LRU); bounds memory whatever the number of subjects."""
    seed: int = 0
    """Seed of the training sampler."""


class GMNeRFDataManager(FullImageDatamanager):
    """See the module docstring."""

    config: GMNeRFDataManagerConfig

    def __init__(self, config: GMNeRFDataManagerConfig, device="cpu", test_mode="val", world_size=1, local_rank=0,
                 **kwargs):
        super().__init__(config, device=device, test_mode=test_mode, world_size=world_size, local_rank=local_rank,
                         **kwargs)
        self.rng = random.Random(config.seed + local_rank)  # ranks sample different subjects/views
        self._cache: "OrderedDict[Path, Tuple[torch.Tensor, torch.Tensor]]" = OrderedDict()
        self.train_collection: HumanCollection = self.train_dataset.metadata["human"]
        self.eval_collection: HumanCollection = self.eval_dataset.metadata["human"]
        self.subject_names: List[str] = self.train_dataset.metadata["subject_names"]
        self.num_source_views: int = self.train_dataset.metadata["protocol"].num_input_views
        self._frames: Dict[Tuple[int, int], Tuple[SubjectRecord, FrameRecord, HumanCollection]] = {}
        for collection in (self.train_collection, self.eval_collection):
            for subject in collection.subjects:
                index = self.subject_names.index(subject.name)
                for frame in subject.frames:
                    self._frames.setdefault((index, frame.frame_id), (subject, frame, collection))
        first_eval = self.eval_collection.subjects[0]
        self.default_source_key = (self.subject_names.index(first_eval.name), first_eval.frames[0].frame_id)

    # ------------------------------------------------------------------ datasets without image caching
    def create_train_dataset(self) -> InputDataset:
        return InputDataset(self.train_dataparser_outputs, scale_factor=1.0)

    def create_eval_dataset(self) -> InputDataset:
        return InputDataset(self.dataparser.get_dataparser_outputs(split=self.test_split), scale_factor=1.0)

    @cached_property
    def cached_train(self):  # pragma: no cover - guarded: whole-dataset caching is what this class avoids
        raise RuntimeError("GMNeRFDataManager loads views on demand; use next_train")

    @cached_property
    def cached_eval(self):  # pragma: no cover
        raise RuntimeError("GMNeRFDataManager loads views on demand; use next_eval_image")

    def get_train_rays_per_batch(self) -> int:
        return self.config.patch_size**2

    # ------------------------------------------------------------------ loading
    def load(self, view: ViewRecord) -> Tuple[torch.Tensor, torch.Tensor]:
        """(image (H, W, 3) float in [0, 1], mask (H, W, 1) float) of a view, through the LRU cache."""
        key = view.image_path
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        image, mask = load_view(view)
        if not mask.any():
            raise HumanDataError(f"{view.image_path}: the foreground mask is empty")
        item = (torch.from_numpy(image).float() / 255.0, torch.from_numpy(mask[..., None]).float())
        self._cache[key] = item
        if len(self._cache) > self.config.view_cache_size:
            self._cache.popitem(last=False)
        return item

    def frame(self, subject_index: int, frame_id: int) -> Tuple[SubjectRecord, FrameRecord, HumanCollection]:
        key = (subject_index, frame_id)
        if key not in self._frames:
            name = self.subject_names[subject_index] if 0 <= subject_index < len(self.subject_names) else "?"
            raise HumanDataError(f"no frame {frame_id} of subject {name} (index {subject_index}) in this dataset")
        return self._frames[key]

    def build_sources(self, subject: SubjectRecord, frame: FrameRecord, cameras: Sequence[int],
                      padding: float) -> SourceViews:
        """Loads m source views and the proxy of a subject-frame."""
        images, masks, Ks, Rs, Ts = [], [], [], [], []
        for cam in cameras:
            view = frame.views[cam]
            image, mask = self.load(view)
            images.append(image.permute(2, 0, 1))
            masks.append(mask.permute(2, 0, 1))
            Ks.append(view.output_intrinsics)
            Rs.append(np.asarray(view.R))
            Ts.append(np.asarray(view.T).reshape(3))
        expected = None if subject.faces is None else int(subject.faces.max()) + 1
        verts = load_vertices(frame)
        if expected is not None and verts.shape[0] < expected:
            raise HumanDataError(f"{frame.vertices_path}: {verts.shape[0]} vertices but the faces index {expected}")
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
            subject_index=self.subject_names.index(subject.name),
            frame_id=frame.frame_id,
            camera_indices=tuple(int(c) for c in cameras),
        )

    def source_views(self, subject_index: int, frame_id: int) -> SourceViews:
        """The protocol's source views of a subject-frame (the model's provider for ns-eval/ns-render/viewer)."""
        subject, frame, collection = self.frame(subject_index, frame_id)
        cams = collection.inputs_for(subject, self.num_source_views)
        return self.build_sources(subject, frame, cams, collection.bbox_padding)

    def choose_train_sources(self, subject: SubjectRecord, target: int) -> Tuple[int, ...]:
        """m source cameras for a training step, never including ``target``."""
        num_cams, m = len(subject.camera_names), self.num_source_views
        if num_cams <= m:
            raise HumanDataError(f"subject {subject.name} has {num_cams} cameras; need more than m={m}")
        mode = self.config.train_source_views
        if mode == "protocol":
            cams = self.train_collection.inputs_for(subject, m)
            if target not in cams:
                return cams
        if mode in ("ring", "protocol"):
            for _ in range(16):
                offset = self.rng.uniform(0, num_cams / m)
                cams = tuple(sorted({int(offset + i * num_cams / m) % num_cams for i in range(m)}))
                if target not in cams and len(cams) == m:
                    return cams
        others = [c for c in range(num_cams) if c != target]
        return tuple(sorted(self.rng.sample(others, m)))

    def choose_patch(self, mask: torch.Tensor) -> Tuple[int, int, int, int]:
        """(y0, x0, height, width) of a training patch, usually centred on a foreground pixel."""
        height, width = mask.shape[:2]
        size_y, size_x = min(self.config.patch_size, height), min(self.config.patch_size, width)
        if self.rng.random() < self.config.foreground_patch_probability:
            ys, xs = torch.nonzero(mask[..., 0] > 0.5, as_tuple=True)
            k = self.rng.randrange(len(ys))
            cy, cx = int(ys[k]), int(xs[k])
        else:
            cy, cx = self.rng.randrange(height), self.rng.randrange(width)
        y0 = min(max(cy - size_y // 2, 0), height - size_y)
        x0 = min(max(cx - size_x // 2, 0), width - size_x)
        return y0, x0, size_y, size_x

    # ------------------------------------------------------------------ nerfstudio interface
    def _camera(self, dataset: InputDataset, index: int) -> Cameras:
        return dataset.cameras[index : index + 1].to(self.device)

    def _target(self, dataset: InputDataset, index: int) -> Tuple[SubjectRecord, FrameRecord, HumanCollection, int]:
        meta = dataset.cameras.metadata
        subject, frame, collection = self.frame(int(meta["subject_index"][index, 0]), int(meta["frame_id"][index, 0]))
        return subject, frame, collection, int(meta["camera_index"][index, 0])

    def _patch_batch(self, dataset: InputDataset, index: int, sources_mode: str) -> Tuple[Cameras, Dict]:
        subject, frame, collection, cam = self._target(dataset, index)
        if sources_mode == "train":
            source_cams = self.choose_train_sources(subject, cam)
        else:
            source_cams = collection.inputs_for(subject, self.num_source_views)
        sources = self.build_sources(subject, frame, source_cams, collection.bbox_padding)
        image, mask = self.load(frame.views[cam])
        y0, x0, ph, pw = patch = self.choose_patch(mask)
        batch = {
            "image_idx": index,
            "image": image[y0 : y0 + ph, x0 : x0 + pw],
            "mask": mask[y0 : y0 + ph, x0 : x0 + pw],
            "patch": patch,
            "sources": sources,
        }
        return self._camera(dataset, index), batch

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        return self._patch_batch(self.train_dataset, self.rng.randrange(len(self.train_dataset)), "train")

    def next_eval(self, step: int) -> Tuple[Cameras, Dict]:
        return self._patch_batch(self.eval_dataset, self.rng.randrange(len(self.eval_dataset)), "eval")

    def eval_image(self, index: int) -> Tuple[Cameras, Dict]:
        """A full held-out target view with the projected-3D-box mask used by the metrics."""
        from gmnerf_ns.metrics import bbox_mask_from_corners, project_bbox_corners

        subject, frame, collection, cam = self._target(self.eval_dataset, index)
        view = frame.views[cam]
        image, mask = self.load(view)
        bbox = proxy_bbox(load_vertices(frame), collection.bbox_padding)
        corners = project_bbox_corners(bbox, view.output_intrinsics, np.asarray(view.R), np.asarray(view.T))
        bbox_mask = torch.from_numpy(bbox_mask_from_corners(corners, image.shape[0], image.shape[1]))
        batch = {"image_idx": index, "image": image, "mask": mask, "bbox_mask": bbox_mask}
        return self._camera(self.eval_dataset, index), batch

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict]:
        return self.eval_image(self.rng.randrange(len(self.eval_dataset)))

    @property
    def fixed_indices_eval_dataloader(self) -> "LazyEvalViews":
        return LazyEvalViews(self)


class LazyEvalViews:
    """Every held-out target view as (camera, batch), loaded one at a time (what ns-eval iterates over)."""

    def __init__(self, datamanager: GMNeRFDataManager):
        self.datamanager = datamanager

    def __len__(self) -> int:
        return len(self.datamanager.eval_dataset)

    def __iter__(self):
        for index in range(len(self)):
            yield self.datamanager.eval_image(index)

