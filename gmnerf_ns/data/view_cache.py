"""Decoded views kept in a bounded LRU cache, and the pool of threads that decodes training samples ahead.

Memory stays bounded whatever the number of subjects on disk: the cache holds at most ``size`` views (as uint8/bool
tensors, a quarter of the float size), and the pool holds the samples of a bounded number of steps in flight.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import ViewRecord
from gmnerf_ns.data.view_loader import load_view


class ViewCache:
    """LRU cache of decoded views, keyed by image path; thread-safe (the decoding threads share it). ``decode``: a
    view's (uint8 image (H, W, 3), bool mask (H, W)), :func:`load_view` by default."""

    def __init__(self, size: int, decode: Callable[[ViewRecord], Tuple[np.ndarray, np.ndarray]] = load_view):
        self.size = size
        self.decode = decode
        self.lock = threading.Lock()
        self._items: "OrderedDict[Path, Tuple[torch.Tensor, torch.Tensor]]" = OrderedDict()

    def load(self, view: ViewRecord) -> Tuple[torch.Tensor, torch.Tensor]:
        """(image (H, W, 3) float in [0, 1], mask (H, W, 1) float) of a view, decoded once while it stays cached."""
        key = view.image_path
        with self.lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
        if item is None:
            image, mask = self.decode(view)
            if not mask.any():
                raise HumanDataError(f"{view.image_path}: the foreground mask is empty")
            item = (torch.from_numpy(image), torch.from_numpy(mask[..., None]))
            with self.lock:
                self._items[key] = item
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return item[0].float() / 255.0, item[1].float()

    def nbytes(self) -> int:
        """Bytes of decoded pixels held."""
        with self.lock:
            return sum(i.nbytes + m.nbytes for i, m in self._items.values())


def single_threaded_torch() -> None:
    """Runs a decoding thread's torch ops on one intra-op thread. The decoding threads already run beside the training
    thread and each other; intra-op threads of their own would put several OpenMP teams, each as wide as the machine,
    on the same cores, and every parallel region of an oversubscribed team waits at its barrier for descheduled
    threads, which made prefetching steps many times slower (benchmarks/throughput/README.md). With OpenMP the count
    is per thread: the training thread keeps its own, fixed before the pool starts."""
    torch.set_num_threads(1)


class Prefetcher:
    """Background threads computing samples by number; without workers (``num_workers`` 0) it holds no pool and the
    caller computes samples itself."""

    def __init__(self, num_workers: int):
        self.pending: Dict[int, Future] = {}
        self.pool: Optional[ThreadPoolExecutor] = None
        if num_workers > 0:
            torch.get_num_threads()  # fixes this thread's intra-op thread count before the workers set theirs
            self.pool = ThreadPoolExecutor(num_workers, thread_name_prefix="gmnerf-decode",
                                           initializer=single_threaded_torch)

    def submit(self, sample: int, make: Callable[..., Any], *args: Any) -> None:
        """Starts ``make(*args)`` as sample ``sample`` unless it is already pending."""
        if self.pool is not None and sample not in self.pending:
            self.pending[sample] = self.pool.submit(make, *args)

    def take(self, sample: int) -> Any:
        """The result of pending sample ``sample`` (waits for it)."""
        return self.pending.pop(sample).result()

    def drop(self) -> None:
        """Cancels every pending sample."""
        for future in self.pending.values():
            future.cancel()
        self.pending.clear()

    def close(self) -> None:
        """Drops the pending samples and stops the threads."""
        self.drop()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
