"""Data loading at scale: memory bounded in the number of subjects, background decoding that does not change samples.

The memory test runs the datamanager (construct + N ``next_train``) in a fresh process per subject count, measuring the
peak RSS above the post-import baseline (``/proc/self/clear_refs`` resets the peak). A control run with an unbounded
view cache shows what linear growth looks like on the same data, so the bound is checked against a measured yardstick
rather than a guessed number of megabytes.

Run ``python -m tests.data.test_loading_at_scale`` to print the table of numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from tests.fixtures.datasets_zju import make_synthetic_dataset, synthetic_datamanager

ROOT = Path(__file__).resolve().parents[2]
SUBJECT_COUNTS = (4, 16, 64)
RESOLUTION = 96
"""Decoded view height: the fixture stores 48-px images; decoding upsamples, so the pixels held are 4x larger."""
CALLS = 300
CACHE = 64


def _rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def measure(data: Path, subjects: int, calls: int, cache: int, workers: int) -> Dict:
    """In this process: peak RSS (MB) of building the datamanager over ``subjects`` subjects and ``calls`` next_train."""
    from nerfstudio.utils.rich_utils import CONSOLE

    from gmnerf_ns.data.datamanager import GMNeRFDataManagerConfig
    from gmnerf_ns.data.parsers.synthetic import SyntheticDataParserConfig

    CONSOLE.quiet = True
    torch.set_num_threads(1)
    train = tuple(f"subject_{i:03d}" for i in range(subjects - 1))
    config = GMNeRFDataManagerConfig(
        dataparser=SyntheticDataParserConfig(data=data, resolution=RESOLUTION, num_input_views=3, train_subjects=train,
                                             test_subjects=("subject_063",)),
        patch_size=32, view_cache_size=cache, num_workers=workers)
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM: the peak from here on
        reset = True
    except OSError:
        reset = False
    base = _rss_kb("VmRSS")
    start = time.perf_counter()
    datamanager = config.setup(device="cpu")
    setup_peak = _rss_kb("VmHWM")
    for step in range(calls):
        datamanager.next_train(step)
    seconds = time.perf_counter() - start
    peak = _rss_kb("VmHWM")
    views = len(datamanager.train_dataset)
    datamanager.close()
    return {"subjects": subjects, "cache": cache, "train_views": views, "peak_above_base_mb": (peak - base) / 1024,
            "setup_peak_above_base_mb": (setup_peak - base) / 1024,
            "cache_mb": datamanager.cache_bytes() / 2**20, "seconds": seconds, "peak_reset": reset}


def run_measurements(data: Path, runs: List[Dict]) -> List[Dict]:
    """Each run in its own process (two at a time: peak RSS is per process)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    results, queue = [], list(runs)
    while queue:
        batch, queue = queue[:2], queue[2:]
        procs = [subprocess.Popen([sys.executable, "-m", "tests.data.test_loading_at_scale", "measure", str(data),
                                   str(r["subjects"]), str(CALLS), str(r["cache"]), "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in batch]
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.fixture(scope="module")
def many_subjects(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("scale") / "data"
    make_synthetic_dataset(data, subjects=range(64), test=(63,), num_frames=2, num_vertices=600)
    return data


@pytest.mark.slow
def test_datamanager_memory_does_not_grow_with_subjects(many_subjects):
    runs = [{"subjects": n, "cache": CACHE} for n in SUBJECT_COUNTS] + [{"subjects": 64, "cache": 100_000}]
    results = run_measurements(many_subjects, runs)
    for r in results:
        print(f"subjects={r['subjects']:3d} cache={r['cache']:6d} train_views={r['train_views']:5d} "
              f"peak_above_base={r['peak_above_base_mb']:6.1f} MB (after setup {r['setup_peak_above_base_mb']:5.1f} MB) "
              f"cache={r['cache_mb']:5.1f} MB {r['seconds']:.1f}s")
    bounded = {r["subjects"]: r for r in results if r["cache"] == CACHE}
    control = next(r for r in results if r["cache"] != CACHE)
    linear_growth = control["peak_above_base_mb"] - bounded[4]["peak_above_base_mb"]
    growth = bounded[64]["peak_above_base_mb"] - bounded[4]["peak_above_base_mb"]
    # The yardstick must be visible, otherwise the comparison says nothing.
    assert control["cache_mb"] > 20 and linear_growth > 15, control
    assert growth < 0.3 * linear_growth, (growth, linear_growth)
    assert max(r["cache_mb"] for r in bounded.values()) <= CACHE * RESOLUTION * RESOLUTION * 4 / 2**20 + 1e-6


# ----------------------------------------------------------------------------------------------------------------------
# Background decoding
# ----------------------------------------------------------------------------------------------------------------------
def _signature(batch) -> tuple:
    return (batch["image_idx"], batch["patch"], batch["sources"].camera_indices, batch["sources"].frame_id,
            float(batch["image"].sum()), float(batch["sources"].images.sum()))


def test_background_decoding_gives_the_synchronous_samples(small_data, monkeypatch):
    """Same seed -> same samples whatever the number of workers and however long each decode takes."""
    import random as stdlib_random

    from gmnerf_ns.data import datamanager as dm_module

    sync = synthetic_datamanager(small_data, num_workers=0)
    expected = [_signature(sync.next_train(step)[1]) for step in range(12)]
    jitter = stdlib_random.Random(1)
    real_load_view = dm_module.load_view

    def slow_load_view(view):  # random delays reorder the workers' completions
        time.sleep(jitter.random() * 0.01)
        return real_load_view(view)

    monkeypatch.setattr(dm_module, "load_view", slow_load_view)
    threaded = synthetic_datamanager(small_data, num_workers=3, prefetch_batches=4, view_cache_size=4)
    got = [_signature(threaded.next_train(step)[1]) for step in range(12)]
    threaded.close()
    assert got == expected
    assert len({s[:3] for s in expected}) > 6  # the samples do vary


def test_decoding_threads_run_torch_on_one_thread(small_data):
    """The decoding threads' torch ops are single-threaded (no OpenMP team per worker oversubscribing the cores), while
    the training thread keeps its own intra-op thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        datamanager = synthetic_datamanager(small_data, num_workers=2)
        datamanager.next_train(0)  # starts the workers
        worker_threads = {datamanager._pool.submit(torch.get_num_threads).result() for _ in range(8)}
        assert worker_threads == {1}
        assert torch.get_num_threads() == 2
        datamanager.close()
    finally:
        torch.set_num_threads(before)


def test_sampler_state_resumes_the_sequence(small_data):
    first = synthetic_datamanager(small_data, num_workers=2)
    for step in range(5):
        first.next_train(step)
        first.next_eval(step)
    state = first.get_extra_state()
    expected = [_signature(first.next_train(step)[1]) for step in range(5, 9)]
    eval_expected = _signature(first.next_eval(9)[1])
    first.close()
    second = synthetic_datamanager(small_data, num_workers=2)
    second.next_train(0)  # a prefetched sample of the old position must not leak into the resumed sequence
    second.set_extra_state(state)
    assert [_signature(second.next_train(step)[1]) for step in range(5, 9)] == expected
    assert _signature(second.next_eval(9)[1]) == eval_expected
    second.close()


def test_ranks_partition_the_samples_of_one_process(small_data):
    """Rank r of W draws global samples r, r+W, ...: the union over ranks is what one process draws."""
    single = synthetic_datamanager(small_data, num_workers=0)
    expected = [_signature(single.next_train(step)[1]) for step in range(6)]
    ranks = [synthetic_datamanager(small_data, num_workers=0, world_size=2, local_rank=r) for r in (0, 1)]
    got = []
    for step in range(3):
        got += [_signature(ranks[r].next_train(step)[1]) for r in (0, 1)]
    assert got == expected
    assert got[0][:3] != got[1][:3]  # the two ranks' first samples differ


def test_unreadable_training_views_are_skipped_with_a_warning(small_data, tmp_path):
    import shutil

    from gmnerf_ns.core.errors import HumanDataError
    from gmnerf_ns.data.human_record import HumanDataWarning

    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    for image in (data / "subject_000").glob("Camera_B*/000001.jpg"):
        image.write_bytes(b"not a jpeg")  # every view of one of the four training frames (the parser reads frame 0)
    datamanager = synthetic_datamanager(data, num_workers=2)
    with pytest.warns(HumanDataWarning, match="skipping a training sample: .*subject_000.*corrupt"):
        batches = [datamanager.next_train(step)[1] for step in range(8)]
    frames = {(datamanager.subject_names[b["sources"].subject_index], b["sources"].frame_id) for b in batches}
    assert ("subject_000", 1) not in frames and len(frames) == 3
    datamanager.close()
    strict = synthetic_datamanager(data, num_workers=0, skip_bad_views=False)
    with pytest.raises(HumanDataError, match="corrupt"):
        for step in range(6):
            strict.next_train(step)


def test_prefetching_feeds_a_busy_trainer(small_data):
    """With workers, every training sample is decoded on a worker thread, and the next ones are ready before the
    trainer asks: next_train only collects them. Checked by behaviour, not by timing (the machine is shared); the
    blocking times are printed for information."""
    import threading

    waits = {}
    for workers in (0, 2):
        datamanager = synthetic_datamanager(small_data, num_workers=workers, view_cache_size=1, prefetch_batches=2)
        decoded_on = []
        make = datamanager.make_train_sample

        def recording(*args, make=make, decoded_on=decoded_on):
            decoded_on.append(threading.current_thread().name)
            return make(*args)

        datamanager.make_train_sample = recording
        datamanager.next_train(0)
        blocked = 0.0
        for step in range(1, 16):
            if workers:  # the model's step: long enough for the workers (bounded wait, no timing assertion)
                upcoming = datamanager.train_sample_number(datamanager.train_draws)
                deadline = time.monotonic() + 30
                while not datamanager._pending[upcoming].done() and time.monotonic() < deadline:
                    time.sleep(0.005)
                assert datamanager._pending[upcoming].done(), "the next sample was not prefetched"
            start = time.perf_counter()
            datamanager.next_train(step)
            blocked += time.perf_counter() - start
        waits[workers] = blocked / 15
        datamanager.close()
        if workers:
            assert decoded_on and all(name.startswith("gmnerf-decode") for name in decoded_on), set(decoded_on)
        else:
            assert set(decoded_on) == {threading.current_thread().name}
    print(f"next_train blocks {1000 * waits[0]:.1f} ms synchronously, {1000 * waits[2]:.1f} ms with 2 workers")


if __name__ == "__main__":
    if sys.argv[1] == "measure":
        data, subjects, calls, cache, workers = sys.argv[2:7]
        print(json.dumps(measure(Path(data), int(subjects), int(calls), int(cache), int(workers))))
