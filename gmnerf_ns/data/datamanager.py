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

Determinism, background decoding and distributed training: sample k of the i-th training step of rank r of W
processes, with P = ``subjects_per_step`` samples per step, is sample number ``g = (i * W + r) * P + k`` (with P = 1:
the i-th ``next_train`` call builds ``g = i * W + r``). Its target view is position ``g mod N`` of an epoch order seeded
by (``seed``, ``g // N``), and its source views and patch come from a ``random.Random`` seeded by (``seed``, ``g``). The
epoch order is a permutation of the N training views; with P > 1 it is rearranged (:func:`spread_steps`) so that the P
samples of a step show different subjects, else different subject-frames, where the data allows. A sample is therefore
a pure function of (seed, P, g, the files): ranks sample disjoint views, W ranks x P samples see exactly the samples one
process sees in W consecutive steps, background workers (``num_workers``) can decode the next ``prefetch_batches``
steps ahead without the sequence depending on thread timing, and resuming needs only the number of samples drawn so
far, which is saved with the pipeline (:meth:`GMNeRFDataManager.get_extra_state`).
"""

from __future__ import annotations

import math
import random
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
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
from gmnerf_ns.data.proxy_jitter import jitter_proxy
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


def single_threaded_torch() -> None:
    """Runs a decoding thread's torch ops on one intra-op thread. The decoding threads already run beside the training
    thread and each other; intra-op threads of their own would put several OpenMP teams, each as wide as the machine,
    on the same cores, and every parallel region of an oversubscribed team waits at its barrier for descheduled
    threads, which made prefetching steps many times slower (benchmarks/throughput/README.md). With OpenMP the count
    is per thread: the training thread keeps its own, fixed in ``__init__`` before the pool starts."""
    torch.set_num_threads(1)


def spread_steps(order: Sequence[int], subjects: Sequence[int], frames: Sequence[int], per_step: int,
                 first: int = 0, lookahead: int = 8) -> np.ndarray:
    """Rearranges an epoch's order of target views so that the ``per_step`` consecutive samples of each training step
    show different subjects, else different subject-frames, wherever the next ``lookahead * per_step`` waiting views
    offer one.

    Greedy and deterministic: each place of a step takes the earliest waiting view of a subject not yet in the step,
    else of a subject-frame not yet in it, else the earliest. Every view still comes exactly once and at most
    ``lookahead * per_step`` places before its place in ``order`` (an epoch stays a shuffle of its views), and an order
    whose steps are already diverse (and any order with ``per_step`` 1) is unchanged.

    Args:
        order: (N,) the epoch's permutation of the training views.
        subjects: (N,) subject index of each view (indexed by view, not by position in ``order``).
        frames: (N,) frame id of each view.
        per_step: samples per step.
        first: samples of the epoch's first step (the rest of a step that began in the epoch before); 0 = a whole step.
        lookahead: waiting views considered per place, in steps.

    Returns:
        (N,) the rearranged order.
    """
    waiting: List[int] = []
    upcoming = iter(int(v) for v in order)
    spread: List[int] = []
    size = first or per_step
    while len(spread) < len(order):
        step_subjects, step_frames = set(), set()
        for _ in range(min(size, len(order) - len(spread))):
            waiting.extend(v for _, v in zip(range(lookahead * per_step - len(waiting)), upcoming))
            pick = next((i for i, v in enumerate(waiting) if subjects[v] not in step_subjects), None)
            if pick is None:
                pick = next((i for i, v in enumerate(waiting) if (subjects[v], frames[v]) not in step_frames), 0)
            view = waiting.pop(pick)
            step_subjects.add(subjects[view])
            step_frames.add((subjects[view], frames[view]))
            spread.append(view)
        size = per_step
    return np.asarray(spread, dtype=np.asarray(order).dtype)


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
        self._cache: "OrderedDict[Path, Tuple[torch.Tensor, torch.Tensor]]" = OrderedDict()
        self._cache_lock = threading.Lock()
        self._epoch_orders: Dict[int, np.ndarray] = {}
        self._pending: Dict[int, Future] = {}
        self._pool: Optional[ThreadPoolExecutor] = None
        if config.num_workers > 0:
            torch.get_num_threads()  # fixes this thread's intra-op thread count before the workers set theirs
            self._pool = ThreadPoolExecutor(config.num_workers, thread_name_prefix="gmnerf-decode",
                                            initializer=single_threaded_torch)
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
        key = view.image_path
        with self._cache_lock:
            item = self._cache.get(key)
            if item is not None:
                self._cache.move_to_end(key)
        if item is None:
            image, mask = load_view(view)
            if not mask.any():
                raise HumanDataError(f"{view.image_path}: the foreground mask is empty")
            item = (torch.from_numpy(image), torch.from_numpy(mask[..., None]))
            with self._cache_lock:
                self._cache[key] = item
                while len(self._cache) > self.config.view_cache_size:
                    self._cache.popitem(last=False)
        return item[0].float() / 255.0, item[1].float()

    def cache_bytes(self) -> int:
        """Bytes of decoded pixels held by the view cache."""
        with self._cache_lock:
            return sum(i.nbytes + m.nbytes for i, m in self._cache.values())

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
        if jitter is not None and self.config.proxy_jitter > 0:
            verts = jitter_proxy(verts, np.random.default_rng(jitter.getrandbits(64)), self.config.proxy_jitter)
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

    def choose_train_sources(self, subject: SubjectRecord, target: int,
                             rng: Optional[random.Random] = None) -> Tuple[int, ...]:
        """m source cameras for a training step, never including ``target``."""
        rng = rng or random.Random(self.config.seed)
        num_cams, m = len(subject.camera_names), self.num_source_views
        mode = self.config.train_source_views
        if self.config.train_num_source_views is not None and mode != "protocol":
            low, high = self.config.train_num_source_views
            m = max(1, min(rng.randint(low, high), num_cams - 1))
        if num_cams <= m:
            raise HumanDataError(f"subject {subject.name} has {num_cams} cameras; need more than m={m}")
        if mode == "protocol":
            cams = self.train_collection.inputs_for(subject, m)
            if target not in cams:
                return cams
        if mode in ("ring", "protocol"):
            for _ in range(16):
                offset = rng.uniform(0, num_cams / m)
                cams = tuple(sorted({int(offset + i * num_cams / m) % num_cams for i in range(m)}))
                if target not in cams and len(cams) == m:
                    return cams
        others = [c for c in range(num_cams) if c != target]
        return tuple(sorted(rng.sample(others, m)))

    def choose_patch(self, mask: torch.Tensor, rng: Optional[random.Random] = None) -> Tuple[int, int, int, int]:
        """(y0, x0, height, width) of a training patch, usually centred on a foreground pixel."""
        rng = rng or random.Random(self.config.seed)
        height, width = mask.shape[:2]
        size_y, size_x = min(self.config.patch_size, height), min(self.config.patch_size, width)
        if rng.random() < self.config.foreground_patch_probability:
            ys, xs = torch.nonzero(mask[..., 0] > 0.5, as_tuple=True)
            k = rng.randrange(len(ys))
            cy, cx = int(ys[k]), int(xs[k])
        else:
            cy, cx = rng.randrange(height), rng.randrange(width)
        y0 = min(max(cy - size_y // 2, 0), height - size_y)
        x0 = min(max(cx - size_x // 2, 0), width - size_x)
        return y0, x0, size_y, size_x

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
        """Global number ``g`` of sample ``k`` of this process's ``draw``-th training step (see the module docstring)."""
        return (draw * self.sampler_world_size + self.sampler_rank) * self.config.subjects_per_step + k

    def train_target_index(self, sample: int) -> int:
        """Target view of training sample ``g``: position ``g mod N`` of the order of epoch ``g // N`` (the epoch's
        permutation, spread over steps by :func:`spread_steps` when ``subjects_per_step`` > 1)."""
        count = len(self.train_dataset)
        epoch, position = divmod(sample, count)
        order = self._epoch_orders.get(epoch)
        if order is None:
            order = np.random.default_rng([self.config.seed, epoch]).permutation(count)
            per_step = self.config.subjects_per_step
            if per_step > 1:
                meta = self.train_dataset.cameras.metadata
                order = spread_steps(order, meta["subject_index"][:, 0].tolist(), meta["frame_id"][:, 0].tolist(),
                                     per_step, first=(-epoch * count) % per_step)
            # a step can straddle two epochs: keep this one and the one before
            self._epoch_orders = {e: o for e, o in self._epoch_orders.items() if e == epoch - 1}
            self._epoch_orders[epoch] = order
        return int(order[position])

    def make_train_sample(self, sample: int, index: int) -> Tuple[Cameras, Dict]:
        """(CPU camera, batch) of training sample ``g`` with target ``index``; replaces unreadable samples."""
        last: Optional[HumanDataError] = None
        for attempt in range(max(1, self.config.max_bad_samples_in_a_row)):
            rng = random.Random(f"gmnerf-train:{self.config.seed}:{sample}:{attempt}")
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
        with self._cache_lock:
            if message in self._reported:
                return
            self._reported.add(message)
        warnings.warn(message, HumanDataWarning, stacklevel=2)

    def _submit(self, draw: int) -> None:
        """Hands the samples of training step ``draw`` to the decoding threads (those not handed over already)."""
        for k in range(self.config.subjects_per_step):
            sample = self.train_sample_number(draw, k)
            if self._pool is not None and sample not in self._pending:
                self._pending[sample] = self._pool.submit(self.make_train_sample, sample,
                                                          self.train_target_index(sample))

    def _next_train_step(self) -> List[Tuple[Cameras, Dict]]:
        """The samples of this process's next training step; the workers start on the ``prefetch_batches`` after."""
        draw = self.train_draws
        self.train_draws += 1
        samples = [self.train_sample_number(draw, k) for k in range(self.config.subjects_per_step)]
        if self._pool is None:
            pairs = [self.make_train_sample(sample, self.train_target_index(sample)) for sample in samples]
        else:
            for ahead in range(self.config.prefetch_batches + 1):
                self._submit(draw + ahead)
            pairs = [self._pending.pop(sample).result() for sample in samples]
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
        return random.Random(f"gmnerf-eval:{self.config.seed}:{self.sampler_rank}:{draw}")

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
            "train_samples_consumed": self.train_draws * self.sampler_world_size * self.config.subjects_per_step,
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
        # Whole steps of this run's world size and samples per step; a different world size (or samples per step)
        # continues from the same global sample.
        self.train_draws = math.ceil(int(state["train_samples_consumed"]) / (self.sampler_world_size * per_step))
        self.eval_draws = int(state.get("eval_draws", 0))
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()

    def close(self) -> None:
        """Stops the background workers (pending samples are dropped)."""
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

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

