"""Deterministic numbering of training samples, and the pure choices made for each (target, sources, patch).

Sample k of the i-th training step of rank r of W processes, with P = ``subjects_per_step`` samples per step, is sample
number ``g = (i * W + r) * P + k`` (with P = 1: the i-th ``next_train`` call builds ``g = i * W + r``). Its target view
is position ``g mod N`` of an epoch order seeded by (``seed``, ``g // N``), and its source views and patch come from a
``random.Random`` seeded by (``seed``, ``g``). The epoch order is a permutation of the N training views; with P > 1 it
is rearranged (:func:`spread_steps`) so that the P samples of a step show different subjects, else different
subject-frames, where the data allows. A sample is therefore a pure function of (seed, P, g, the files): ranks sample
disjoint views, W ranks x P samples see exactly the samples one process sees in W consecutive steps, background
workers can decode the next steps ahead without the sequence depending on thread timing, and resuming needs only the
number of samples drawn so far (:func:`samples_consumed`, :func:`draws_after`).
"""

from __future__ import annotations

import math
import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from gmnerf_ns.core.errors import HumanDataError


def train_sample_number(draw: int, k: int, rank: int, world_size: int, per_step: int) -> int:
    """Global number ``g`` of sample ``k`` of training step ``draw`` of process ``rank`` of ``world_size``."""
    return (draw * world_size + rank) * per_step + k


def samples_consumed(draws: int, world_size: int, per_step: int) -> int:
    """Training samples drawn by all processes after ``draws`` steps each (what a checkpoint saves)."""
    return draws * world_size * per_step


def draws_after(consumed: int, world_size: int, per_step: int) -> int:
    """Steps each process has drawn when resuming after ``consumed`` samples: whole steps of this run's world size and
    samples per step, so a different world size (or samples per step) continues from the same global sample."""
    return math.ceil(int(consumed) / (world_size * per_step))


def epoch_order(seed: int, epoch: int, count: int, per_step: int = 1, subjects: Sequence[int] = (),
                frames: Sequence[int] = ()) -> np.ndarray:
    """The order of the ``count`` training views in ``epoch``: a permutation seeded by (``seed``, ``epoch``), spread
    over steps by :func:`spread_steps` when ``per_step`` > 1 (``subjects``/``frames``: per view)."""
    order = np.random.default_rng([seed, epoch]).permutation(count)
    if per_step > 1:
        order = spread_steps(order, subjects, frames, per_step, first=(-epoch * count) % per_step)
    return order


class EpochOrders:
    """Target view of each training sample: position ``g mod N`` of the :func:`epoch_order` of epoch ``g // N``, the
    orders kept for the current epoch and the one before (a step can straddle two epochs)."""

    def __init__(self, seed: int, per_step: int, subjects: Sequence[int], frames: Sequence[int]):
        self.seed, self.per_step, self.subjects, self.frames = seed, per_step, subjects, frames
        self._orders: Dict[int, np.ndarray] = {}

    def target(self, sample: int) -> int:
        count = len(self.subjects)
        epoch, position = divmod(sample, count)
        order = self._orders.get(epoch)
        if order is None:
            order = epoch_order(self.seed, epoch, count, self.per_step, self.subjects, self.frames)
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            self._orders[epoch] = order
        return int(order[position])


def train_rng(seed: int, sample: int, attempt: int = 0) -> random.Random:
    """Random stream of training sample ``g`` (sources, patch, proxy misfit); ``attempt`` > 0 for its replacements."""
    return random.Random(f"gmnerf-train:{seed}:{sample}:{attempt}")


def eval_rng(seed: int, rank: int, draw: int) -> random.Random:
    """Random stream of the ``draw``-th eval draw of process ``rank``."""
    return random.Random(f"gmnerf-eval:{seed}:{rank}:{draw}")


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


def choose_train_sources(subject_name: str, num_cams: int, target: int, mode: str, protocol_m: int,
                         m_range: Optional[Tuple[int, int]], protocol_inputs: Callable[[int], Tuple[int, ...]],
                         rng: random.Random) -> Tuple[int, ...]:
    """m source cameras of ``num_cams`` for a training sample, never including ``target``.

    Args:
        mode: 'ring' (evenly spaced, random offset), 'random' or 'protocol' (the protocol's input views).
        protocol_m: the protocol's number of input views, used when ``m_range`` is None or with 'protocol'.
        m_range: inclusive range m is drawn from, or None.
        protocol_inputs: the protocol's m input cameras of the subject, given m (called with 'protocol' only).
    """
    m = protocol_m
    if m_range is not None and mode != "protocol":
        low, high = m_range
        m = max(1, min(rng.randint(low, high), num_cams - 1))
    if num_cams <= m:
        raise HumanDataError(f"subject {subject_name} has {num_cams} cameras; need more than m={m}")
    if mode == "protocol":
        cams = protocol_inputs(m)
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


def choose_patch(mask: torch.Tensor, patch_size: int, foreground_probability: float,
                 rng: random.Random) -> Tuple[int, int, int, int]:
    """(y0, x0, height, width) of a training patch of ``mask`` (H, W, 1), with probability ``foreground_probability``
    centred on a random foreground pixel, else anywhere; clipped to the image."""
    height, width = mask.shape[:2]
    size_y, size_x = min(patch_size, height), min(patch_size, width)
    if rng.random() < foreground_probability:
        ys, xs = torch.nonzero(mask[..., 0] > 0.5, as_tuple=True)
        k = rng.randrange(len(ys))
        cy, cx = int(ys[k]), int(xs[k])
    else:
        cy, cx = rng.randrange(height), rng.randrange(width)
    y0 = min(max(cy - size_y // 2, 0), height - size_y)
    x0 = min(max(cx - size_x // 2, 0), width - size_x)
    return y0, x0, size_y, size_x
