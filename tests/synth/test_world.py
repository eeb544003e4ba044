"""The wider built-in world (rig, lighting and shape variety, misfit proxies, imperfect masks) and misfit-robust
training (proxy jitter, a varying number of source views)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gmnerf_ns.data.parsers._files import load_pickled_dict
from gmnerf_ns.data.proxy_jitter import jitter_proxy
from gmnerf_ns.synth.body import BodyModel
from gmnerf_ns.synth.config import SynthConfig, SynthError
from gmnerf_ns.synth.generator import generate
from gmnerf_ns.synth.misfit import degrade_mask
from tests.fixtures.datasets_zju import make_synthetic_dataset, synthetic_datamanager

TINY = dict(num_subjects=4, num_test_subjects=1, num_cameras=4, num_frames=1, resolution=48, progress=False,
            supersample=1)


@pytest.fixture(scope="module")
def exact(tmp_path_factory, body) -> Path:
    return generate(SynthConfig(out=tmp_path_factory.mktemp("world") / "exact", **TINY), body=body)


def _vertices(root: Path, subject: int) -> np.ndarray:
    return np.load(root / f"subject_{subject:03d}" / "vertices" / "0.npy")


def _image(root: Path, subject: int, cam: int = 1, mask: bool = False) -> np.ndarray:
    folder = root / f"subject_{subject:03d}" / ("mask/" if mask else "")
    return np.asarray(Image.open(folder / f"Camera_B{cam}" / ("000000.png" if mask else "000000.jpg")))


def test_default_settings_keep_earlier_datasets_valid():
    """Options added for the wider world only enter the manifest when set, so older datasets resume unchanged."""
    keys = set(SynthConfig().settings())
    assert keys == {"generator", "body_asset_sha256", "num_subjects", "num_test_subjects", "num_cameras", "num_frames",
                    "resolution", "seed", "supersample", "frame_interval", "proxy_pose_noise", "jpeg_quality"}
    assert SynthConfig(mask_error=2, aspect=(0.8, 1.2)).settings()["aspect"] == [0.8, 1.2]


def test_rig_variety_gives_each_subject_its_own_camera_count_and_image_size(tmp_path, body):
    config = SynthConfig(out=tmp_path / "rigs", **{**TINY, "num_cameras": 3}, max_num_cameras=7, aspect=(0.7, 1.3))
    generate(config, body=body)
    counts, sizes = [], []
    for s in range(4):
        annots = load_pickled_dict(tmp_path / "rigs" / f"subject_{s:03d}" / "annots.npy", "annots")
        counts.append(len(annots["cams"]["K"]))
        assert len(annots["ims"][0]["ims"]) == counts[-1]
        sizes.append(Image.open(tmp_path / "rigs" / f"subject_{s:03d}" / "Camera_B1" / "000000.jpg").size)
        K = annots["cams"]["K"][0]
        assert abs(K[0, 2] - sizes[-1][0] / 2) < 0.03 * sizes[-1][0]  # principal point follows the width
    assert all(3 <= c <= 7 for c in counts) and len(set(counts)) > 1, counts
    assert all(h == 48 for _, h in sizes) and len({w for w, _ in sizes}) > 1, sizes


def test_misfit_moves_only_the_proxy(exact, tmp_path, body):
    """Shape error and offsets change the saved proxy by centimetres; images and clothed meshes stay the same."""
    config = SynthConfig(out=tmp_path / "misfit", **TINY, proxy_shape_error=0.5, proxy_offset=0.03)
    generate(config, body=body)
    for s in range(4):
        moved = np.linalg.norm(_vertices(tmp_path / "misfit", s) - _vertices(exact, s), axis=-1).mean()
        assert 0.005 < moved < 0.15, moved
        np.testing.assert_array_equal(_image(tmp_path / "misfit", s), _image(exact, s))
    params = load_pickled_dict(tmp_path / "misfit" / "subject_000" / "params" / "0.npy", "params")
    assert params["Th"].shape == (1, 3)


def test_misfit_per_subject_spans_exact_to_full(tmp_path, body):
    config = SynthConfig(out=tmp_path / "spread", **{**TINY, "num_subjects": 6}, proxy_offset=0.05,
                         misfit_per_subject=True)
    generate(config, body=body)
    full = SynthConfig(out=tmp_path / "full", **{**TINY, "num_subjects": 6}, proxy_offset=0.05)
    generate(full, body=body)
    exact = SynthConfig(out=tmp_path / "none", **{**TINY, "num_subjects": 6})
    generate(exact, body=body)
    ratios = []
    for s in range(6):
        reference = _vertices(tmp_path / "none", s)
        spread = np.linalg.norm((_vertices(tmp_path / "spread", s) - reference).mean(0))
        whole = np.linalg.norm((_vertices(tmp_path / "full", s) - reference).mean(0))
        ratios.append(spread / whole)
    assert all(0 <= r <= 1 + 1e-6 for r in ratios) and max(ratios) - min(ratios) > 0.2, ratios


def test_lighting_and_shape_variety_change_the_look_not_the_layout(exact, tmp_path, body):
    config = SynthConfig(out=tmp_path / "look", **TINY, light_variety=1.0, shape_variety=1.0)
    generate(config, body=body)
    differs = [not np.array_equal(_image(tmp_path / "look", s), _image(exact, s)) for s in range(4)]
    assert all(differs)
    assert (tmp_path / "look" / "subject_000" / "meshes" / "0.ply").is_file()


def test_imperfect_masks_stay_close_to_the_exact_ones(tmp_path, body):
    sharp = {**TINY, "resolution": 128}
    exact = generate(SynthConfig(out=tmp_path / "exact", **sharp), body=body)
    generate(SynthConfig(out=tmp_path / "masks", **sharp, mask_error=1), body=body)
    ious = []
    for s in range(4):
        for cam in (1, 2, 3, 4):
            a, b = _image(tmp_path / "masks", s, cam, mask=True) > 127, _image(exact, s, cam, mask=True) > 127
            ious.append((a & b).sum() / (a | b).sum())
            np.testing.assert_array_equal(_image(tmp_path / "masks", s, cam), _image(exact, s, cam))
    assert min(ious) > 0.5 and np.mean(ious) < 0.995, ious


def test_degrade_mask_never_empties_a_mask():
    mask = np.zeros((20, 20), np.uint8)
    mask[10, 10] = 255
    for seed in range(20):
        out = degrade_mask(mask, np.random.default_rng(seed), 3)
        assert out.any() and set(np.unique(out)) <= {0, 255}


@pytest.mark.parametrize("options", [dict(max_num_cameras=2), dict(zoom_out=(0.5, 1.5)), dict(mask_error=-1),
                                     dict(camera_distance=(0.1, 3.0)), dict(light_variety=2.0)])
def test_impossible_world_options_are_refused(tmp_path, options):
    with pytest.raises(SynthError):
        SynthConfig(out=tmp_path / "x", **TINY, **options).validate()


# ----------------------------------------------------------------------------------------------------------------------
# Misfit-robust training
# ----------------------------------------------------------------------------------------------------------------------
def _body_points(body: BodyModel) -> np.ndarray:
    vertices, _ = body.shape(body.shape_samples[0])
    return vertices.numpy().astype(np.float32)


def test_proxy_jitter_is_a_smooth_centimetre_misfit(body):
    points = _body_points(body)
    same = [jitter_proxy(points, np.random.default_rng(7), 0.05) for _ in range(2)]
    np.testing.assert_array_equal(same[0], same[1])  # a pure function of the random stream
    np.testing.assert_array_equal(jitter_proxy(points, np.random.default_rng(7), 0.0), points)
    moved = [np.linalg.norm(jitter_proxy(points, np.random.default_rng(s), 0.05) - points, axis=-1) for s in range(40)]
    mean = float(np.mean([m.mean() for m in moved]))
    assert 0.01 < mean < 0.06, mean  # a few centimetres on average
    assert min(m.mean() for m in moved) < 0.5 * mean  # some samples are nearly exact
    # Smooth: the two ends of a mesh edge move almost alike.
    faces = body.faces.numpy()
    out = jitter_proxy(points, np.random.default_rng(3), 0.05)
    delta = out - points
    edge = np.linalg.norm(delta[faces[:, 0]] - delta[faces[:, 1]], axis=-1)
    assert edge.mean() < 0.1 * np.linalg.norm(delta, axis=-1).mean()


def test_proxy_jitter_scales_with_the_unit(body):
    """A proxy in millimetres gets the same misfit, in millimetres."""
    points = _body_points(body)
    metres = jitter_proxy(points, np.random.default_rng(5), 0.05) - points
    millimetres = jitter_proxy(points * 1000.0, np.random.default_rng(5), 0.05) - points * 1000.0
    np.testing.assert_allclose(millimetres, metres * 1000.0, rtol=1e-3, atol=1e-2)


def _datamanager(data: Path, **kwargs):
    return synthetic_datamanager(data, num_workers=0, **kwargs)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("jitter") / "data"
    make_synthetic_dataset(data, subjects=(0, 1, 2), test=(2,), num_frames=2, num_vertices=600)
    return data


def test_training_sources_vary_in_number_and_proxy_while_evaluation_stays_fixed(small_data):
    datamanager = _datamanager(small_data, train_num_source_views=(2, 5), proxy_jitter=0.05)
    counts, offsets = set(), []
    for step in range(30):
        _, batch = datamanager.next_train(step)
        sources = batch["sources"]
        counts.add(sources.num_views)
        subject, frame, _ = datamanager.frame(sources.subject_index, sources.frame_id)
        exact = torch.from_numpy(np.load(frame.vertices_path)).float()
        offsets.append(float((sources.vertices - exact).norm(dim=-1).mean()))
    assert counts == {2, 3, 4, 5}, counts
    assert max(offsets) > 1e-3 and min(offsets) >= 0.0
    _, batch = datamanager.next_eval(0)
    subject, frame, _ = datamanager.frame(batch["sources"].subject_index, batch["sources"].frame_id)
    assert batch["sources"].num_views == 3
    np.testing.assert_array_equal(batch["sources"].vertices.numpy(), np.load(frame.vertices_path))
    datamanager.close()


def test_jitter_and_view_count_can_be_switched_off(small_data):
    datamanager = _datamanager(small_data, train_num_source_views=None, proxy_jitter=0.0)
    for step in range(6):
        _, batch = datamanager.next_train(step)
        sources = batch["sources"]
        assert sources.num_views == 3
        _, frame, _ = datamanager.frame(sources.subject_index, sources.frame_id)
        np.testing.assert_array_equal(sources.vertices.numpy(), np.load(frame.vertices_path))
    datamanager.close()


def test_view_count_never_reaches_the_subject_camera_count(small_data):
    datamanager = _datamanager(small_data, train_num_source_views=(3, 50))
    subject = datamanager.train_collection.subjects[0]
    for seed in range(20):
        cams = datamanager.choose_train_sources(subject, 0, random.Random(seed))
        assert len(cams) < len(subject.camera_names) and 0 not in cams
    datamanager.close()
