"""Cross-subject datamanager: each training step is one subject-frame, m source views and a different target view.

Subclasses nerfstudio's :class:`FullImageDatamanager` (so ``ns-render dataset`` and ``ns-eval`` accept it) but never
caches whole datasets: views are decoded on demand through a bounded LRU cache, so memory does not grow with the
number of subjects on disk.

* ``next_train``: a random target view of a training subject-frame; m source views on a ring with a random offset that
  excludes the target (or fully random / the protocol's); a random ``patch_size`` patch of the target that overlaps
  the person. The batch carries ``sources`` and ``patch``; the target camera carries subject/frame metadata.
  ``next_train_samples``: the ``subjects_per_step`` such samples of one training step (``next_train`` is the one
  sample of a step when ``subjects_per_step`` is 1).
* ``next_eval`` / ``next_eval_image`` / ``fixed_indices_eval_dataloader``: held-out subjects, the protocol's input
  views as sources and its target views as targets, with the projected-3D-box mask used by the metrics.
* ``source_views(subject_index, frame_id)``: the provider the model uses for cameras that only carry metadata.
* At ns-train's start (``test_mode`` 'val', first rank): :mod:`gmnerf_ns.data.preflight` warns about cameras that do
  not see their person and images or masks of another size than their intrinsics; training goes on.

Determinism, background decoding and distributed training: every training sample has a global number, and is a
pure function of (seed, ``subjects_per_step``, its number, the files) (:mod:`gmnerf_ns.data.sampling`), so ranks
sample disjoint views, background workers (``num_workers``, :mod:`gmnerf_ns.data.view_cache`) can decode the next
``prefetch_batches`` steps ahead without the sequence depending on thread timing, and resuming needs only the number
of samples drawn so far, which is saved with the pipeline (:meth:`GMNeRFDataManager.get_extra_state`).
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Type

import numpy as np
import torch
import torch.distributed as dist
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.configs.dataparser_configs import AnnotatedDataParserUnion
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.datasets.base_dataset import InputDataset

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import (
    FrameRecord,
    HumanCollection,
    HumanDataWarning,
    SubjectRecord,
    ViewRecord,
    load_vertices,
    proxy_bbox,
)
from gmnerf_ns.data.parsers.auto import AutoDataParserConfig
from gmnerf_ns.data.preflight import warn_preflight
from gmnerf_ns.data.sampling import (
    EpochOrders,
    choose_patch,
    choose_train_sources,
    draws_after,
    eval_rng,
    samples_consumed,
    spread_steps,  # noqa: F401 - imported from here by existing code
    train_rng,
    train_sample_number,
)
from gmnerf_ns.data.source_views import load_sources
from gmnerf_ns.data.view_cache import Prefetcher, ViewCache, single_threaded_torch  # noqa: F401 - as spread_steps
from gmnerf_ns.data.view_loader import load_view
from gmnerf_ns.model.sources import SourceViews


@dataclass
class GMNeRFDataManagerConfig(FullImageDatamanagerConfig):
    """Cross-subject sampling of (source views, target patch) pairs."""

    _target: Type = field(default_factory=lambda: GMNeRFDataManager)
    dataparser: AnnotatedDataParserUnion = field(default_factory=AutoDataParserConfig)
    """Dataset parser: gmnerf-auto (default) detects the dataset from --data (``ns-train gm-nerf --data zju/313``);
    a dataset's own subcommand after the method takes its options (``ns-train gm-nerf zju-mocap --data zju/313``)."""
    patch_size: int = 128
    """Side of the square training patch (full-resolution pixels); the feature image is half of it."""
    foreground_patch_probability: float = 0.95
    """Probability that a patch is centred on a random foreground pixel (otherwise anywhere)."""
    train_source_views: Literal["ring", "random", "protocol"] = "ring"
    """Training sources: evenly spaced on the camera ring with a random offset ('ring'), m random cameras ('random'),
    or the protocol's input views ('protocol'). The target view is never a source."""
    train_num_source_views: Optional[Tuple[int, int]] = (3, 6)
    """Range (inclusive) training draws the number of source views m from, so one model serves rigs of 3 to 6 views;
    None = the protocol's m, as evaluation always uses. Ignored with ``train_source_views protocol``."""
    proxy_jitter: float = 0.05
    """Typical bend angle (radians) of the random misfit given to each training sample's proxy (about 2-3 cm of vertex
    error at 0.05), as a body fit is never exact; 0 = proxies as they are. Evaluation never perturbs the proxy."""
    view_cache_size: int = 256
    """Decoded views kept in memory (LRU, stored as uint8); bounds memory whatever the number of subjects."""
    seed: int = 0
    """Seed of the training sampler (target order, source views, patches); the samples depend on nothing else."""
    num_workers: int = 2
    """Background threads decoding the next training samples while the model trains (0 = decode synchronously in
    ``next_train``). The samples are the same for any value."""
    prefetch_batches: int = 2
    """Training steps decoded ahead of the current one when ``num_workers`` > 0, each of ``subjects_per_step``
    samples (bounds the memory in flight)."""
    subjects_per_step: int = 1
    """Subject-frames per optimizer step (and eval-loss step), their losses averaged; --max-num-iterations counts steps
    of this many samples, each costing about as many one-sample steps. See benchmarks/throughput/README.md."""
    skip_bad_views: bool = True
    """Replace a training sample whose files are missing or corrupt by another, with a warning naming the file;
    False: stop at the first. Evaluation views always raise."""
    max_bad_samples_in_a_row: int = 16
    """Consecutive unreadable training samples after which training stops (the dataset is probably broken)."""

    def validate(self, prefix: str = "--pipeline.datamanager") -> None:
        """Checks every numeric option's range, and the dataparser's, before any data is read (called by ns-train;
        see gmnerf_ns/core/options.py).

        Raises:
            OptionError: naming each option out of range (as ``--pipeline.datamanager.patch-size``) and its range.
        """
        from gmnerf_ns.core.options import OptionCheck, validate_all

        check = OptionCheck(self, prefix)
        check.integer("patch_size", low=16)  # the perceptual loss's VGG halves the patch 4 times
        check.number("foreground_patch_probability", low=0.0, high=1.0)
        views = self.train_num_source_views
        if views is not None:
            ok = (isinstance(views, (tuple, list)) and len(views) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in views) and 1 <= views[0] <= views[1])
            check.require(ok, "train_num_source_views", "must be two integers LOW HIGH with 1 <= LOW <= HIGH")
        check.number("proxy_jitter", low=0.0)
        for name in ("view_cache_size", "seed", "num_workers"):
            check.integer(name, low=0)
        for name in ("prefetch_batches", "max_bad_samples_in_a_row", "subjects_per_step"):
            check.integer(name, low=1)
        # Dataparser options follow its subcommand on the command line: ns-train gm-nerf gmnerf-auto --resolution 256.
        validate_all(check.done, lambda: getattr(self.dataparser, "validate", lambda _: None)("--"))


class GMNeRFDataManager(FullImageDatamanager):
    """See the module docstring."""

    config: GMNeRFDataManagerConfig

    def __init__(self, config: GMNeRFDataManagerConfig, device="cpu", test_mode="val", world_size=1, local_rank=0,
                 **kwargs):
        super().__init__(config, device=device, test_mode=test_mode, world_size=world_size, local_rank=local_rank,
                         **kwargs)
        # Global rank and world size: local_rank repeats across machines, so it cannot tell processes apart.
        initialised = dist.is_available() and dist.is_initialized()
        self.sampler_rank: int = dist.get_rank() if initialised else local_rank
        self.sampler_world_size: int = dist.get_world_size() if initialised else world_size
        self.train_draws = 0
        """Training steps drawn so far by this process (``next_train``/``next_train_samples`` calls; the training
        sampler's whole state)."""
        self.eval_draws = 0
        """``next_eval``/``next_eval_image`` calls made so far by this process."""
        # load_view is looked up at each call, so it can be replaced in this module (slow-decoding tests)
        self.view_cache = ViewCache(config.view_cache_size, lambda view: load_view(view))  # noqa: PLW0108
        self.prefetcher = Prefetcher(config.num_workers)
        self._reported: set = set()
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
        meta, per_step = self.train_dataset.cameras.metadata, config.subjects_per_step
        self.epoch_orders = EpochOrders(config.seed, per_step, meta["subject_index"][:, 0].tolist(),
                                        meta["frame_id"][:, 0].tolist())
        first_eval = self.eval_collection.subjects[0]
        self.default_source_key = (self.subject_names.index(first_eval.name), first_eval.frames[0].frame_id)
        if test_mode == "val" and self.sampler_rank == 0:  # ns-train ("test"/"inference": ns-eval, ns-render)
            warn_preflight((self.train_collection, self.eval_collection))

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

    def load(self, view: ViewRecord) -> Tuple[torch.Tensor, torch.Tensor]:
        """(image (H, W, 3) float in [0, 1], mask (H, W, 1) float) of a view, through the LRU cache.

        Thread-safe (the background workers call it). The cache holds uint8/bool tensors, a quarter of the float size.
        """
        return self.view_cache.load(view)

    def cache_bytes(self) -> int:
        """Bytes of decoded pixels held by the view cache."""
        return self.view_cache.nbytes()

    _pool = property(lambda self: self.prefetcher.pool)  # the decoding threads (None without workers)
    _pending = property(lambda self: self.prefetcher.pending)  # samples handed to them, by sample number

    def frame(self, subject_index: int, frame_id: int) -> Tuple[SubjectRecord, FrameRecord, HumanCollection]:
        key = (subject_index, frame_id)
        if key not in self._frames:
            name = self.subject_names[subject_index] if 0 <= subject_index < len(self.subject_names) else "?"
            raise HumanDataError(f"no frame {frame_id} of subject {name} (index {subject_index}) in this dataset")
        return self._frames[key]

    def build_sources(self, subject: SubjectRecord, frame: FrameRecord, cameras: Sequence[int],
                      padding: float, jitter: Optional[random.Random] = None) -> SourceViews:
        """Loads m source views and the proxy of a subject-frame (randomly misfit by ``proxy_jitter`` when a training
        sample's ``jitter`` stream is given)."""
        misfit = self.config.proxy_jitter if jitter is not None else 0.0
        return load_sources(self.load, subject, frame, cameras, padding, self.subject_names.index(subject.name),
                            misfit, jitter)

    def source_views(self, subject_index: int, frame_id: int) -> SourceViews:
        """The protocol's source views of a subject-frame (the model's provider for ns-eval/ns-render/viewer)."""
        subject, frame, collection = self.frame(subject_index, frame_id)
        cams = collection.inputs_for(subject, self.num_source_views)
        return self.build_sources(subject, frame, cams, collection.bbox_padding)

    def choose_train_sources(self, subject: SubjectRecord, target: int,
                             rng: Optional[random.Random] = None) -> Tuple[int, ...]:
        """m source cameras for a training step, never including ``target``."""
        rng = rng or random.Random(self.config.seed)
        return choose_train_sources(subject.name, len(subject.camera_names), target, self.config.train_source_views,
                                    self.num_source_views, self.config.train_num_source_views,
                                    lambda m: self.train_collection.inputs_for(subject, m), rng)

    def choose_patch(self, mask: torch.Tensor, rng: Optional[random.Random] = None) -> Tuple[int, int, int, int]:
        """(y0, x0, height, width) of a training patch, usually centred on a foreground pixel."""
        rng = rng or random.Random(self.config.seed)
        return choose_patch(mask, self.config.patch_size, self.config.foreground_patch_probability, rng)

    def _camera(self, dataset: InputDataset, index: int) -> Cameras:
        return dataset.cameras[index : index + 1].to(self.device)

    def _target(self, dataset: InputDataset, index: int) -> Tuple[SubjectRecord, FrameRecord, HumanCollection, int]:
        meta = dataset.cameras.metadata
        subject, frame, collection = self.frame(int(meta["subject_index"][index, 0]), int(meta["frame_id"][index, 0]))
        return subject, frame, collection, int(meta["camera_index"][index, 0])

    def _patch_batch(self, dataset: InputDataset, index: int, sources_mode: str,
                     rng: random.Random) -> Tuple[Cameras, Dict]:
        """(CPU camera, batch) of one target patch; pure function of its arguments (runs in the workers)."""
        subject, frame, collection, cam = self._target(dataset, index)
        if sources_mode == "train":
            source_cams = self.choose_train_sources(subject, cam, rng)
        else:
            source_cams = collection.inputs_for(subject, self.num_source_views)
        sources = self.build_sources(subject, frame, source_cams, collection.bbox_padding,
                                     jitter=rng if sources_mode == "train" else None)
        image, mask = self.load(frame.views[cam])
        y0, x0, ph, pw = patch = self.choose_patch(mask, rng)
        batch = {
            "image_idx": index,
            "image": image[y0 : y0 + ph, x0 : x0 + pw].clone(),
            "mask": mask[y0 : y0 + ph, x0 : x0 + pw].clone(),
            "patch": patch,
            "sources": sources,
        }
        return dataset.cameras[index : index + 1], batch

    def train_sample_number(self, draw: int, k: int = 0) -> int:
        """Global number ``g`` of sample ``k`` of this process's ``draw``-th training step (see
        :mod:`gmnerf_ns.data.sampling`)."""
        return train_sample_number(draw, k, self.sampler_rank, self.sampler_world_size, self.config.subjects_per_step)

    def train_target_index(self, sample: int) -> int:
        """Target view of training sample ``g``: position ``g mod N`` of the order of epoch ``g // N`` (the epoch's
        permutation, spread over steps by :func:`spread_steps` when ``subjects_per_step`` > 1)."""
        return self.epoch_orders.target(sample)

    def make_train_sample(self, sample: int, index: int) -> Tuple[Cameras, Dict]:
        """(CPU camera, batch) of training sample ``g`` with target ``index``; replaces unreadable samples."""
        last: Optional[HumanDataError] = None
        for attempt in range(max(1, self.config.max_bad_samples_in_a_row)):
            rng = train_rng(self.config.seed, sample, attempt)
            if attempt:
                index = rng.randrange(len(self.train_dataset))
            try:
                return self._patch_batch(self.train_dataset, index, "train", rng)
            except HumanDataError as err:
                if not self.config.skip_bad_views:
                    raise
                self._report_skip(err)
                last = err
        raise HumanDataError(f"{self.config.max_bad_samples_in_a_row} training samples in a row could not be loaded "
                             f"(run gmnerf-doctor on the dataset); the last one: {last}") from last

    def _report_skip(self, err: HumanDataError) -> None:
        message = f"skipping a training sample: {err}"
        with self.view_cache.lock:
            if message in self._reported:
                return
            self._reported.add(message)
        warnings.warn(message, HumanDataWarning, stacklevel=2)

    def _submit(self, draw: int) -> None:
        """Hands the samples of training step ``draw`` to the decoding threads (those not handed over already)."""
        for k in range(self.config.subjects_per_step):
            sample = self.train_sample_number(draw, k)
            if self.prefetcher.pool is not None and sample not in self.prefetcher.pending:
                self.prefetcher.submit(sample, self.make_train_sample, sample, self.train_target_index(sample))

    def _next_train_step(self) -> List[Tuple[Cameras, Dict]]:
        """The samples of this process's next training step; the workers start on the ``prefetch_batches`` after."""
        draw = self.train_draws
        self.train_draws += 1
        samples = [self.train_sample_number(draw, k) for k in range(self.config.subjects_per_step)]
        if self.prefetcher.pool is None:
            pairs = [self.make_train_sample(sample, self.train_target_index(sample)) for sample in samples]
        else:
            for ahead in range(self.config.prefetch_batches + 1):
                self._submit(draw + ahead)
            pairs = [self.prefetcher.take(sample) for sample in samples]
        return [(camera.to(self.device), batch) for camera, batch in pairs]

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        """The one sample of the next training step; with ``subjects_per_step`` > 1 use :meth:`next_train_samples`."""
        if self.config.subjects_per_step != 1:
            raise RuntimeError(f"next_train gives one sample, but each step has {self.config.subjects_per_step} "
                               "(--pipeline.datamanager.subjects-per-step): use next_train_samples")
        return self._next_train_step()[0]

    def next_train_samples(self, step: int) -> List[Tuple[Cameras, Dict]]:
        """The ``subjects_per_step`` (camera, batch) samples of the next training step, k = 0, 1, ... in order (with
        one per step, ``[next_train(step)]``)."""
        if self.config.subjects_per_step == 1:
            return [self.next_train(step)]
        return self._next_train_step()

    def _eval_rng(self) -> random.Random:
        draw = self.eval_draws
        self.eval_draws += 1
        return eval_rng(self.config.seed, self.sampler_rank, draw)

    def next_eval(self, step: int) -> Tuple[Cameras, Dict]:
        rng = self._eval_rng()
        camera, batch = self._patch_batch(self.eval_dataset, rng.randrange(len(self.eval_dataset)), "eval", rng)
        return camera.to(self.device), batch

    def eval_image(self, index: int) -> Tuple[Cameras, Dict]:
        """A full held-out target view with the projected-3D-box mask used by the metrics."""
        from gmnerf_ns.model.metrics import bbox_mask_from_corners, project_bbox_corners

        subject, frame, collection, cam = self._target(self.eval_dataset, index)
        view = frame.views[cam]
        image, mask = self.load(view)
        bbox = proxy_bbox(load_vertices(frame), collection.bbox_padding)
        corners = project_bbox_corners(bbox, view.output_intrinsics, np.asarray(view.R), np.asarray(view.T))
        bbox_mask = torch.from_numpy(bbox_mask_from_corners(corners, image.shape[0], image.shape[1]))
        batch = {"image_idx": index, "image": image, "mask": mask, "bbox_mask": bbox_mask}
        return self._camera(self.eval_dataset, index), batch

    def next_eval_samples(self, step: int) -> List[Tuple[Cameras, Dict]]:
        """``subjects_per_step`` held-out patches for one eval-loss step (each one :meth:`next_eval` draw)."""
        return [self.next_eval(step) for _ in range(self.config.subjects_per_step)]

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict]:
        return self.eval_image(self._eval_rng().randrange(len(self.eval_dataset)))

    def get_extra_state(self) -> Dict[str, Any]:
        """Sampler state, saved by nerfstudio with the pipeline (``datamanager._extra_state``) so a resumed run draws
        the samples the interrupted one would have drawn."""
        return {
            "format": 1,
            "seed": self.config.seed,
            "train_samples_consumed": samples_consumed(self.train_draws, self.sampler_world_size,
                                                       self.config.subjects_per_step),
            "subjects_per_step": self.config.subjects_per_step,
            "eval_draws": self.eval_draws,
        }

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != 1:
            warnings.warn("checkpoint has no usable sampler state; the training samples restart from the beginning",
                          HumanDataWarning, stacklevel=2)
            return
        if state.get("seed") != self.config.seed:
            warnings.warn(f"checkpoint sampler seed {state.get('seed')} differs from --pipeline.datamanager.seed "
                          f"{self.config.seed}; continuing with the new seed", HumanDataWarning, stacklevel=2)
        per_step = self.config.subjects_per_step
        if state.get("subjects_per_step", 1) != per_step:
            warnings.warn(f"checkpoint drew {state.get('subjects_per_step', 1)} samples per step, "
                          f"--pipeline.datamanager.subjects-per-step is {per_step}; continuing after the samples it "
                          "drew, in this setting's order", HumanDataWarning, stacklevel=2)
        self.train_draws = draws_after(state["train_samples_consumed"], self.sampler_world_size, per_step)
        self.eval_draws = int(state.get("eval_draws", 0))
        self.prefetcher.drop()

    def close(self) -> None:
        """Stops the background workers (pending samples are dropped)."""
        self.prefetcher.close()

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

