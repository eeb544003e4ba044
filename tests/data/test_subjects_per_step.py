"""``--pipeline.datamanager.subjects-per-step``: P samples per training step, drawn deterministically, averaged.

The default (P = 1) must draw exactly the samples it drew before the option existed: the signatures of the first
steps are pinned below (taken from the sampler as it was, commit d850dea). With P > 1 sample k of step s is global
sample ``s * P + k`` (a pure function of seed, step and k), the P samples show different subjects where the data
allows, prefetching and resuming give the same samples, and the step's losses and metrics are the samples' means.
"""

from __future__ import annotations

import copy
import random
import time

import numpy as np
import pytest
import torch

from tests.fixtures.datasets_zju import synthetic_datamanager


def _signature(batch) -> tuple:
    """What a sample is: target view, patch, sources (cameras, subject-frame), and sums of the pixels and the
    (jittered) proxy, which change if any random draw of the sample changes."""
    sources = batch["sources"]
    return (batch["image_idx"], tuple(batch["patch"]), sources.camera_indices, sources.subject_index, sources.frame_id,
            round(float(batch["image"].sum()), 2), round(float(sources.vertices.double().sum()), 3))


# ------------------------------------------------------------------------------------------------ P = 1: unchanged
TODAYS_FIRST_STEPS = [
    (2, (0, 9, 32, 32), (0, 1, 3, 4, 6), 0, 0, 318.69, 535.536),
    (11, (10, 4, 32, 32), (0, 2, 4, 6), 0, 1, 325.98, 526.602),
    (25, (14, 11, 32, 32), (0, 2, 3, 4, 6, 7), 1, 1, 281.76, 524.316),
    (21, (0, 5, 32, 32), (1, 3, 6), 1, 0, 275.23, 527.533),
]
"""Signatures of steps 0-3 with the default sampler (seed 0) on ``small_data``, drawn by the datamanager of commit
d850dea (before ``subjects_per_step``); the current one drew the same 12 steps, eval draws and 2-rank split."""


def test_one_sample_per_step_draws_the_samples_drawn_before_the_option(small_data):
    datamanager = synthetic_datamanager(small_data, num_workers=0)
    assert datamanager.config.subjects_per_step == 1
    got = [_signature(datamanager.next_train(step)[1]) for step in range(4)]
    assert got == TODAYS_FIRST_STEPS
    assert datamanager.get_extra_state()["train_samples_consumed"] == 4


def test_one_sample_per_step_through_next_train_samples_is_next_train(small_data):
    by_sample = synthetic_datamanager(small_data, num_workers=2)
    by_step = synthetic_datamanager(small_data, num_workers=0)
    expected = [_signature(by_sample.next_train(step)[1]) for step in range(6)]
    steps = [by_step.next_train_samples(step) for step in range(6)]
    assert [len(samples) for samples in steps] == [1] * 6
    assert [_signature(samples[0][1]) for samples in steps] == expected
    by_sample.close()


# ------------------------------------------------------------------------------------------------ spreading a step
def test_spread_steps_gives_each_step_different_subjects():
    from gmnerf_ns.data.datamanager import spread_steps

    subjects, frames = [0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2]
    order = np.arange(6)
    # step 1: view 0, then the first waiting view of another subject (3); step 2: 1, 4; step 3: 2, 5
    assert spread_steps(order, subjects, frames, 2).tolist() == [0, 3, 1, 4, 2, 5]
    # the epoch begins with the last sample of a step from the epoch before: [0] [1 3] [2 4] [5]
    assert spread_steps(order, subjects, frames, 2, first=1).tolist() == [0, 1, 3, 2, 4, 5]
    # one subject: different frames instead ([0 2] [1 3]: (0, 0) then (0, 1), not (0, 0) twice)
    assert spread_steps(np.arange(4), [0, 0, 0, 0], [0, 0, 1, 1], 2).tolist() == [0, 2, 1, 3]
    # already diverse steps, and one sample per step, keep the order
    diverse = np.array([3, 0, 4, 1, 5, 2])
    assert spread_steps(diverse, subjects, frames, 2).tolist() == diverse.tolist()
    shuffled = np.random.default_rng(0).permutation(6)
    assert spread_steps(shuffled, subjects, frames, 1).tolist() == shuffled.tolist()


def test_spread_steps_keeps_a_permutation_with_views_near_their_place():
    from gmnerf_ns.data.datamanager import spread_steps

    rng = np.random.default_rng(1)
    subjects = rng.integers(0, 5, 200).tolist()
    frames = rng.integers(0, 3, 200).tolist()
    order = rng.permutation(200)
    spread = spread_steps(order, subjects, frames, 4, first=3)
    assert sorted(spread.tolist()) == list(range(200))
    steps = [spread[:3]] + [spread[i : i + 4] for i in range(3, 200, 4)]
    # 4 of 5 subjects per step wherever the look-ahead window (8 steps = 32 views) is full
    assert all(len({subjects[v] for v in step}) == len(step) for step in steps[:-8])
    earlier = np.argsort(order) - np.argsort(spread)  # places each view moved forward
    assert 0 < earlier.max() < 8 * 4


# ------------------------------------------------------------------------------------------------ P > 1: sampling
def test_each_step_draws_p_samples_of_different_subjects(small_data):
    datamanager = synthetic_datamanager(small_data, num_workers=0, subjects_per_step=2)
    steps = [datamanager.next_train_samples(step) for step in range(4)]
    assert [len(samples) for samples in steps] == [2] * 4
    for samples in steps:
        assert len({batch["sources"].subject_index for _, batch in samples}) == 2  # the two training subjects
        for camera, batch in samples:
            assert batch["image"].shape == (32, 32, 3) and camera.shape == (1,)
    # sample k of step s is global sample 2 s + k: a fresh datamanager builds it alone, in any order
    fresh = synthetic_datamanager(small_data, num_workers=0, subjects_per_step=2)
    for step, k in ((3, 1), (0, 1), (2, 0)):
        sample = fresh.train_sample_number(step, k)
        assert sample == 2 * step + k
        _, batch = fresh.make_train_sample(sample, fresh.train_target_index(sample))
        assert _signature(batch) == _signature(steps[step][k][1])
    assert datamanager.get_extra_state()["train_samples_consumed"] == 8
    with pytest.raises(RuntimeError, match="use next_train_samples"):
        datamanager.next_train(4)


def test_every_view_comes_once_per_epoch_across_steps_that_straddle_epochs(small_data):
    datamanager = synthetic_datamanager(small_data, num_workers=0, subjects_per_step=3)
    count = len(datamanager.train_dataset)
    meta = datamanager.train_dataset.cameras.metadata
    subject_of = meta["subject_index"][:, 0].tolist()
    assert count % 3 != 0  # (32 views) so steps do straddle epochs, and each epoch's first step is partial
    for epoch in range(3):
        targets = [datamanager.train_target_index(g) for g in range(epoch * count, (epoch + 1) * count)]
        assert sorted(targets) == list(range(count))
    whole_steps = [[datamanager.train_target_index(3 * s + k) for k in range(3)] for s in range(count // 3 - 2)]
    mixed = [len({subject_of[v] for v in step}) > 1 for step in whole_steps]
    assert all(mixed)  # 3 samples, 2 subjects: never all of one subject within the epoch


def test_prefetching_threads_decode_every_sample_of_a_step_and_change_nothing(small_data, monkeypatch):
    from gmnerf_ns.data import datamanager as dm_module

    sync = synthetic_datamanager(small_data, num_workers=0, subjects_per_step=3)
    expected = [[_signature(b) for _, b in sync.next_train_samples(step)] for step in range(5)]
    jitter = random.Random(2)
    real_load_view = dm_module.load_view

    def slow_load_view(view):  # random delays reorder the workers' completions
        time.sleep(jitter.random() * 0.005)
        return real_load_view(view)

    monkeypatch.setattr(dm_module, "load_view", slow_load_view)
    threaded = synthetic_datamanager(small_data, num_workers=2, prefetch_batches=2, view_cache_size=4, subjects_per_step=3)
    got = []
    for step in range(5):
        got.append([_signature(b) for _, b in threaded.next_train_samples(step)])
        # the samples of the next prefetch_batches steps, all three of each, are already with the workers
        pending = set(threaded._pending)
        assert pending == {threaded.train_sample_number(step + ahead, k) for ahead in (1, 2) for k in range(3)}
    threaded.close()
    assert got == expected


def test_resuming_draws_the_samples_of_the_uninterrupted_run(small_data):
    first = synthetic_datamanager(small_data, num_workers=2, subjects_per_step=2)
    for step in range(3):
        first.next_train_samples(step)
    first.next_eval_samples(0)
    state = first.get_extra_state()
    assert state["train_samples_consumed"] == 6 and state["subjects_per_step"] == 2 and state["eval_draws"] == 2
    expected = [[_signature(b) for _, b in first.next_train_samples(step)] for step in range(3, 6)]
    eval_expected = [_signature(b) for _, b in first.next_eval_samples(6)]
    first.close()
    second = synthetic_datamanager(small_data, num_workers=2, subjects_per_step=2)
    second.next_train_samples(0)  # prefetched samples of the old position must not leak into the resumed sequence
    second.set_extra_state(state)
    assert [[_signature(b) for _, b in second.next_train_samples(step)] for step in range(3, 6)] == expected
    assert [_signature(b) for _, b in second.next_eval_samples(6)] == eval_expected
    second.close()


def test_the_option_is_range_checked_in_one_line():
    from gmnerf_ns.core.options import OptionError
    from gmnerf_ns.training.method_configs import gm_nerf_small

    for value in (0, 1.5):
        config = copy.deepcopy(gm_nerf_small.config)
        config.pipeline.datamanager.subjects_per_step = value
        with pytest.raises(OptionError) as info:
            config.validate()
        message = str(info.value)
        assert f"--pipeline.datamanager.subjects-per-step {value}: must be an integer >= 1" in message
        assert "\n" not in message
    config = copy.deepcopy(gm_nerf_small.config)
    config.pipeline.datamanager.subjects_per_step = 4
    config.validate()


# ------------------------------------------------------------------------------------------------ the pipeline
@pytest.fixture(scope="module")
def pipeline(small_data, tmp_path_factory):
    """A tiny gm-nerf-small pipeline with 2 samples per step of 16-px patches (no workers: the draws happen where the
    test asks)."""
    from tests.fixtures.shared_run import tiny_config

    config = tiny_config(small_data, tmp_path_factory.mktemp("run"))
    config.pipeline.datamanager.num_workers = 0
    config.pipeline.datamanager.patch_size = 16
    config.pipeline.datamanager.subjects_per_step = 2
    torch.manual_seed(0)
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    pipeline.train()
    # one untracked sample first: parts built on first use (the perceptual loss) draw random numbers when they are
    # built, which would otherwise fall inside whichever test runs first
    pipeline.train_loss_dict_for(*pipeline.datamanager.next_train_samples(0)[0])
    pipeline.datamanager.train_draws = 0
    return pipeline


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_step_of_p_samples_averages_their_losses_and_metrics(pipeline):
    datamanager = pipeline.datamanager
    datamanager.train_draws = 0
    samples = datamanager.next_train_samples(0)
    torch.manual_seed(1)
    alone = [pipeline.train_loss_dict_for(camera, batch) for camera, batch in samples]
    datamanager.train_draws = 0
    torch.manual_seed(1)
    outputs, losses, metrics = pipeline.get_train_loss_dict(step=0)
    assert datamanager.train_draws == 1
    assert losses.keys() == alone[0][1].keys() and "rgb_loss" in losses
    for key in losses:
        torch.testing.assert_close(losses[key], (alone[0][1][key] + alone[1][1][key]) / 2, rtol=1e-6, atol=0)
    for key in ("psnr", "grad_ray_fraction"):
        torch.testing.assert_close(metrics[key], (alone[0][2][key] + alone[1][2][key]) / 2, rtol=1e-6, atol=0)
    assert abs(float(losses["rgb_loss"] - alone[0][1]["rgb_loss"])) > 1e-6  # really two samples, not one
    assert outputs["rgb"].shape == (16, 16, 3)
    total = sum(losses.values())
    total.backward()  # one backward through both samples' graphs
    grads = [p.grad for p in pipeline.model.parameters() if p.requires_grad]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    pipeline.model.zero_grad(set_to_none=True)


def test_one_sample_per_step_gives_the_single_sample_losses_bit_for_bit(pipeline, small_data):
    """The default step is what the pipeline computed before the option: next_train, then one forward and losses."""
    from gmnerf_ns.data.datamanager import GMNeRFDataManagerConfig

    config = copy.deepcopy(pipeline.datamanager.config)
    config.subjects_per_step = 1
    assert isinstance(config, GMNeRFDataManagerConfig)
    twin = config.setup(device="cpu")
    pipeline_datamanager = pipeline.datamanager
    try:
        pipeline.datamanager = config.setup(device="cpu")
        torch.manual_seed(3)
        _, losses, metrics = pipeline.get_train_loss_dict(step=0)
        camera, batch = twin.next_train(0)
        torch.manual_seed(3)
        _, expected_losses, expected_metrics = pipeline.train_loss_dict_for(camera, batch)
        assert _same(losses, expected_losses) and _same(metrics, expected_metrics)
    finally:
        pipeline.datamanager = pipeline_datamanager


def test_the_eval_loss_step_averages_p_held_out_patches(pipeline):
    datamanager = pipeline.datamanager
    datamanager.eval_draws = 0
    _, losses, metrics = pipeline.get_eval_loss_dict(step=0)
    assert datamanager.eval_draws == 2
    datamanager.eval_draws = 0
    pipeline.eval()
    alone = []
    with torch.no_grad():
        for camera, batch in datamanager.next_eval_samples(0):
            outputs = pipeline.model(camera, sources=batch["sources"], patch=batch["patch"])
            alone.append(pipeline.model.get_loss_dict(outputs, batch, pipeline.model.get_metrics_dict(outputs, batch)))
    pipeline.train()
    for key in losses:
        torch.testing.assert_close(losses[key], (alone[0][key] + alone[1][key]) / 2, rtol=1e-6, atol=0)
    assert pipeline.model.training
