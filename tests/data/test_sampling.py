"""The training sampler's pure functions give pinned values: the sequence of samples a seed draws (and so resuming and
multi-GPU runs) must not change when the code around them moves."""

import random

import pytest
import torch

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data import sampling

SUBJECTS = [0, 0, 1, 1, 2, 2, 0]
FRAMES = [0, 1, 0, 1, 0, 1, 2]


def test_sample_numbers_interleave_ranks_and_steps():
    assert [sampling.train_sample_number(d, k, rank=2, world_size=3, per_step=4) for d, k in [(0, 0), (1, 3), (5, 2)]] \
        == [8, 23, 70]
    assert sampling.samples_consumed(7, world_size=3, per_step=4) == 84
    # a resumed run continues after the samples drawn, in whole steps of its own world size and samples per step
    assert sampling.draws_after(84, world_size=3, per_step=4) == 7
    assert sampling.draws_after(84, world_size=2, per_step=5) == 9
    assert sampling.draws_after(0, world_size=2, per_step=5) == 0


def target_sequence(seed, per_step, count=21):
    """Targets of samples 0..count-1, as the datamanager reads them (position g mod N of epoch g // N)."""
    n = len(SUBJECTS)
    return [int(sampling.epoch_order(seed, g // n, n, per_step, SUBJECTS, FRAMES)[g % n]) for g in range(count)]


def test_epoch_orders_are_pinned():
    assert target_sequence(5, 1) == [1, 4, 2, 3, 6, 5, 0, 4, 2, 0, 6, 5, 3, 1, 0, 4, 5, 3, 1, 2, 6]
    assert target_sequence(5, 3) == [1, 4, 2, 3, 6, 5, 0, 4, 2, 0, 5, 3, 6, 1, 0, 4, 3, 1, 5, 2, 6]


def test_random_streams_are_pinned():
    assert sampling.train_rng(5, 17).random() == 0.5113818204221566
    assert sampling.train_rng(5, 17, attempt=2).random() == 0.8301839698237444
    assert sampling.eval_rng(5, rank=1, draw=3).random() == 0.20169431050092457


SOURCES = {
    ("ring", (3, 6)): [(1, 2, 3, 5, 6, 7), (0, 2, 4, 6), (0, 3, 6), (0, 2, 4, 6), (0, 2, 4, 6)],
    ("ring", None): [(1, 3, 5, 7), (0, 2, 4, 6), (1, 3, 5, 7), (0, 2, 4, 6), (0, 2, 4, 6)],
    ("random", (3, 6)): [(1, 2, 3, 4, 6, 7), (0, 3, 5, 6), (0, 3, 7), (1, 2, 5, 7), (0, 2, 3, 4)],
    ("random", None): [(1, 4, 6, 7), (0, 2, 3, 5), (0, 5, 6, 7), (1, 5, 6, 7), (0, 1, 2, 3)],
    ("protocol", (3, 6)): [(1, 3, 5, 7), (0, 2, 4, 6), (1, 3, 5, 7), (0, 2, 4, 6), (0, 2, 4, 6)],
    ("protocol", None): [(1, 3, 5, 7), (0, 2, 4, 6), (1, 3, 5, 7), (0, 2, 4, 6), (0, 2, 4, 6)],
}


@pytest.mark.parametrize("mode,m_range", list(SOURCES))
def test_train_sources_are_pinned_and_never_the_target(mode, m_range):
    targets = [0, 1, 2, 3, 5]
    chosen = [sampling.choose_train_sources("s", 8, t, mode, 4, m_range, lambda m: (0, 2, 4, 6)[:m], random.Random(i))
              for i, t in enumerate(targets)]
    assert chosen == SOURCES[mode, m_range]
    assert all(t not in cams for t, cams in zip(targets, chosen))


def test_too_few_cameras_names_the_subject():
    with pytest.raises(HumanDataError, match="subject s7 has 4 cameras; need more than m=4"):
        sampling.choose_train_sources("s7", 4, 0, "ring", 4, None, lambda m: (), random.Random(0))


def test_patches_are_pinned_and_inside_the_image():
    mask = torch.zeros(20, 30, 1)
    mask[5:9, 10:25] = 1
    patches = [sampling.choose_patch(mask, 8, 0.7, random.Random(i)) for i in range(6)]
    assert patches == [(9, 0, 8, 8), (4, 15, 8, 8), (0, 0, 8, 8), (3, 10, 8, 8), (1, 12, 8, 8), (4, 8, 8, 8)]
    assert sampling.choose_patch(mask, 64, 0.7, random.Random(1)) == (0, 0, 20, 30)
