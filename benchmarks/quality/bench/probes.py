"""Instruments attached to a gm-nerf model from the outside: activation memory and time per model phase, CUDA peak.

What they measure and why: benchmarks/quality/README.md, *Measurements*.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Set

import torch

PHASES = ("encode", "rays", "renderer", "losses", "other")
"""encode: encoder + registration + proxy volume; rays: ``render_rays``; renderer: the 2D neural renderer; losses:
``get_loss_dict``; other: the rest."""


class _PhaseState:
    def __init__(self) -> None:
        self.stack: List[str] = []

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else "other"


@contextlib.contextmanager
def model_phases(model, listeners: List[Callable[[str, bool], None]]) -> Iterator[_PhaseState]:
    """Wraps ``model.encode``, ``model.render_rays``, ``model.renderer.forward`` and ``model.get_loss_dict`` so that
    every listener is called with (phase, entering) around them. Restores the model on exit."""
    state = _PhaseState()
    patched: List[tuple] = []

    def wrap(owner, attr: str, phase: str) -> None:
        if owner is None or not hasattr(owner, attr):
            return
        original = getattr(owner, attr)
        had_instance_attr = attr in vars(owner)

        def wrapped(*args, **kwargs):
            state.stack.append(phase)
            for listener in listeners:
                listener(phase, True)
            try:
                return original(*args, **kwargs)
            finally:
                for listener in listeners:
                    listener(phase, False)
                state.stack.pop()

        setattr(owner, attr, wrapped)
        patched.append((owner, attr, original, had_instance_attr))

    wrap(model, "encode", "encode")
    wrap(model, "render_rays", "rays")
    wrap(getattr(model, "renderer", None), "forward", "renderer")
    wrap(model, "get_loss_dict", "losses")
    try:
        yield state
    finally:
        for owner, attr, original, had_instance_attr in reversed(patched):
            if had_instance_attr:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)


class SavedTensorMeter:
    """Counts the bytes of the tensors saved for backward while active, once per storage (by data pointer), by phase.

    The sum over the unique storages is the activation memory the graph holds when ``backward`` starts. Storages of
    the model's parameters and buffers (and of ``exclude``) are not counted.
    """

    def __init__(self, model) -> None:
        tensors = [*model.parameters(), *model.buffers()]
        self._excluded = {ptr for ptr in map(_storage_ptr, tensors) if ptr is not None}
        self._seen: Set[int] = set()
        self.bytes: Dict[str, int] = {phase: 0 for phase in PHASES}
        self.excluded_hits = 0
        self._state: Optional[_PhaseState] = None

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        ptr = _storage_ptr(tensor)
        if ptr is None:
            return tensor
        if ptr in self._excluded:
            self.excluded_hits += 1
        elif ptr not in self._seen:
            self._seen.add(ptr)
            self.bytes[self._state.current if self._state is not None else "other"] += tensor.untyped_storage().nbytes()
        return tensor

    @staticmethod
    def _unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    @contextlib.contextmanager
    def measure(self, model=None) -> Iterator["SavedTensorMeter"]:
        """Counts inside the block; with ``model``, by its phases (:data:`PHASES`)."""
        with contextlib.ExitStack() as stack:
            if model is not None:
                self._state = stack.enter_context(model_phases(model, []))
            stack.enter_context(torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack))
            try:
                yield self
            finally:
                self._state = None

    def summary(self) -> Dict[str, Any]:
        mib = 2.0**20
        return {"saved_mb": sum(self.bytes.values()) / mib,
                "saved_mb_by_phase": {k: v / mib for k, v in self.bytes.items()}}


def _storage_ptr(tensor: torch.Tensor) -> Optional[int]:
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse / nested / wrapper tensors have no plain storage
        return None
    ptr = storage.data_ptr()
    return ptr if ptr != 0 else None


class PhaseTimer:
    """Wall-clock seconds spent in each of the model's phases (outermost calls only)."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = {}
        self._depth = 0
        self._start = 0.0
        self._phase = ""

    def __call__(self, phase: str, entering: bool) -> None:
        if entering:
            if self._depth == 0:
                self._start, self._phase = time.perf_counter(), phase
            self._depth += 1
        else:
            self._depth -= 1
            if self._depth == 0:
                self.seconds[self._phase] = self.seconds.get(self._phase, 0.0) + time.perf_counter() - self._start

    def reset(self) -> None:
        self.seconds = {}


class DevicePeak:
    """``torch.cuda.max_memory_allocated`` over a block above what was allocated at its start (None off CUDA)."""

    def __init__(self, device) -> None:
        self.device = torch.device(device)
        self.peak_mb: Optional[float] = None
        self.active = self.device.type == "cuda" and torch.cuda.is_available()

    def __enter__(self) -> "DevicePeak":
        if self.active:  # pragma: no cover - no GPU on the development machine
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base_mb = torch.cuda.memory_allocated(self.device) / 2**20
        return self

    def __exit__(self, *exc) -> None:
        if self.active:  # pragma: no cover
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20 - self._base_mb
