"""GeneBody dataparser: view-name keyed cameras with missing views, metres (2.87 on request), cached square mask crops."""

from __future__ import annotations

import re
import shutil

import cv2
import numpy as np
import pytest

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import HumanDataWarning, load_vertices
from gmnerf_ns.data.parsers.genebody import GeneBodyDataParserConfig, gnr_crop
from gmnerf_ns.data.view_loader import load_view
from tests.fixtures.datasets_captures import GENEBODY_UNITS, make_genebody
from tests.fixtures.person import nerfstudio_pixel, project, ray_miss_distance

RES = 32
ALL_VIEWS = list(range(48))


@pytest.fixture(scope="module")
def genebody(tmp_path_factory):
    root = tmp_path_factory.mktemp("genebody")
    info = make_genebody(root, {"amanda": ALL_VIEWS, "dannier": [v for v in ALL_VIEWS if v != 32]},
                         split={"train": ["dannier", "zhuna"], "test": ["amanda"]})
    return root, info


def config(data, tmp_path, **kwargs):
    kwargs.setdefault("resolution", RES)
    return GeneBodyDataParserConfig(data=data, crop_cache_dir=tmp_path / "cache", test_subjects=("amanda",), **kwargs)


def test_split_file_missing_view_and_source_views(genebody, tmp_path):
    root, info = genebody
    with pytest.warns(HumanDataWarning, match=r"genebody_split\.npy: 1 train subject\(s\) not downloaded.*zhuna"):
        parser = config(root, tmp_path).setup()
        train = parser.collect("train")
    dannier = train.subjects[0]
    assert dannier.name == "dannier" and "32" not in dannier.camera_names and len(dannier.camera_names) == 47
    inputs = train.inputs_for(dannier, 4)
    assert [dannier.camera_names[i] for i in inputs] == ["01", "13", "25", "37"]  # by view name, not position
    assert 32 not in [dannier.camera_ids[i] for i in train.targets_for(dannier, 4)]
    assert dannier.faces is not None and dannier.faces.shape[1] == 3


def test_units_cameras_and_vertices_in_metres(genebody, tmp_path):
    root, info = genebody
    record = config(root / "amanda", tmp_path).setup().collect("test").subjects[0]
    K, R, T = info["amanda"]["cameras"][5]
    view = record.frames[0].views[5]
    np.testing.assert_allclose(view.camera_center, -R.T @ T, atol=1e-6)
    np.testing.assert_allclose(view.T, T, atol=1e-6)
    np.testing.assert_allclose(load_vertices(record.frames[0]), info["amanda"]["vertices"][0], atol=1e-4)
    assert view.mask_threshold == 128 and view.dist is None  # GNR does not undistort


def test_metres_pass_the_scale_check_and_the_old_2_87_is_one_error_naming_the_fix(genebody, tmp_path):
    root, _ = genebody
    assert GeneBodyDataParserConfig().units_per_metre == 1.0  # GeneBody's annotations are metres (docs/datasets.md)
    with pytest.raises(HumanDataError) as info:  # the fixture's 1.6 m person divided by 2.87 is 0.56 m
        config(root / "amanda", tmp_path, units_per_metre=2.87).setup().collect("test")
    message = str(info.value)
    assert "\n" not in message and "subject amanda" in message and "smpl/0000.obj" in message
    assert re.search(r"is 0\.55\d* units tall", message) and "pass --units-per-metre 1" in message


def test_units_per_metre_still_reads_a_rescaled_world(tmp_path):
    info = make_genebody(tmp_path / "data", {"maria": [0, 1, 12, 24, 36]}, num_frames=1, units=2.87)
    record = config(tmp_path / "data" / "maria", tmp_path, units_per_metre=2.87).setup().collect("test").subjects[0]
    np.testing.assert_allclose(load_vertices(record.frames[0]), info["maria"]["vertices"][0], atol=1e-4)
    np.testing.assert_allclose(record.frames[0].views[0].T, info["maria"]["cameras"][0][2], atol=1e-6)
    with pytest.raises(HumanDataError, match=r"come out 2\.\d+x too large .*pass --units-per-metre 2\.87"):
        config(tmp_path / "data" / "maria", tmp_path).setup().collect("test")


def test_square_crop_round_trip_and_cache(genebody, tmp_path, monkeypatch):
    root, info = genebody
    parser = config(root / "amanda", tmp_path).setup()
    outputs = parser.get_dataparser_outputs("test")
    record = outputs.metadata["human"].subjects[0]
    assert list((tmp_path / "cache").glob("amanda-*.json"))
    view_index = 9
    view = record.frames[0].views[view_index]
    x0, y0, x1, y1 = view.crop
    assert x1 - x0 == y1 - y0 and view.out_size == (RES, RES)
    mask = cv2.imread(str(view.mask_paths[0]), cv2.IMREAD_GRAYSCALE) > 128
    ys, xs = np.nonzero(mask)
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    image, crop_mask = load_view(view)
    assert image.shape == (RES, RES, 3) and crop_mask.any()

    # Round trip: a vertex through GeneBody's own K/c2w (raw pixels) and through our nerfstudio camera.
    K, R, T = info["amanda"]["cameras"][view_index]
    point = info["amanda"]["vertices"][0][17].astype(np.float64)
    raw = project(point[None], K, R, T)[0]
    expected = np.floor((raw + 0.5 - [x0, y0]) * RES / (x1 - x0))
    cams = outputs.cameras
    i = next(n for n, (s, c) in enumerate(zip(cams.metadata["frame_id"][:, 0], cams.metadata["camera_index"][:, 0]))
             if s == 0 and c == view_index)
    u, v = nerfstudio_pixel(cams, i, point)
    assert np.floor([u, v]).tolist() == expected.tolist()
    assert ray_miss_distance(cams, i, u, v, point) < 1e-4

    # Re-parsing reads no mask: every box comes from the cache.
    monkeypatch.setattr(cv2, "imread", lambda *a, **k: pytest.fail(f"mask read again: {a[0]}"))
    again = config(root / "amanda", tmp_path).setup().collect("test").subjects[0]
    assert again.frames[0].views[view_index].crop == view.crop


def test_gnr_crop_matches_reference():
    # Tall box near the left border: square of the padded height, pushed inside the image.
    assert gnr_crop(100, 80, (10, 2, 69, 21)) == (0, 4, 70, 74)
    assert gnr_crop(100, 80, None) == (0, 0, 100, 80)


@pytest.fixture
def subject(tmp_path):
    info = make_genebody(tmp_path / "gb", {"maria": ALL_VIEWS})
    return info["maria"]["folder"]


def test_empty_mask_warns_and_keeps_whole_image(subject, tmp_path):
    cv2.imwrite(str(subject / "mask" / "03" / "mask0000.png"), np.zeros((40, 48), np.uint8))
    with pytest.warns(HumanDataWarning, match=r"1 empty mask\(s\), cropped to the whole image, e\.g\. .*mask0000\.png"):
        record = config(subject, tmp_path, protocol="synthetic").setup().collect("test").subjects[0]
    assert record.frames[0].views[3].crop == (0, 0, 48, 40)


def test_missing_files_skip_frame(subject, tmp_path):
    (subject / "image" / "07" / "0001.jpg").unlink()
    with pytest.warns(HumanDataWarning, match=r"skipped 1 frame\(s\) .*image/07/0001\.jpg"):
        record = config(subject, tmp_path, protocol="synthetic").setup().collect("test").subjects[0]
    assert [f.frame_id for f in record.frames] == [0]


def test_corrupt_mask_names_file(subject, tmp_path):
    (subject / "mask" / "05" / "mask0000.png").write_bytes(b"garbage")
    with pytest.raises(HumanDataError, match=r"mask/05/mask0000\.png: mask file is unreadable or corrupt"):
        config(subject, tmp_path).setup().collect("test")


def test_nan_camera_and_missing_folders(subject, tmp_path):
    annots = np.load(subject / "annots.npy", allow_pickle=True).item()
    annots["cams"]["04"]["c2w"][0, 3] = np.nan
    np.save(subject / "annots.npy", annots)
    with pytest.raises(HumanDataError, match=r"annots\.npy view 04 c2w: contains NaN or inf"):
        config(subject, tmp_path).setup().collect("test")
    shutil.rmtree(subject / "smpl")
    with pytest.raises(HumanDataError, match=r"maria: missing the smpl/ folder"):
        config(subject, tmp_path).setup().collect("test")


def test_unknown_subject_lists_available(genebody, tmp_path):
    root, _ = genebody
    with pytest.raises(HumanDataError, match="subject 'nobody' not found in .*; available subjects: amanda, dannier"):
        config(root / "nobody", tmp_path).setup().resolve_root()
    assert GENEBODY_UNITS == pytest.approx(GeneBodyDataParserConfig().units_per_metre)


def _move_out(path, outside):
    """Moves ``path`` out of the dataset and leaves a symlink to it in its place."""
    outside.mkdir(exist_ok=True)
    target = outside / path.name
    path.rename(target)
    path.symlink_to(target)
    return target


@pytest.mark.parametrize("rel, what", [("image/02/0001.jpg", "image"), ("mask/06/mask0000.png", "mask"),
                                       ("smpl/0001.obj", "proxy mesh"), ("annots.npy", "annotations file")])
def test_symlinks_out_of_the_subject_folder_are_refused(subject, tmp_path, rel, what):
    target = _move_out(subject / rel, tmp_path / "outside")
    with pytest.raises(HumanDataError) as info:
        config(subject, tmp_path, protocol="synthetic").setup().collect("test")
    assert str(info.value).startswith(f"{subject / rel}: {what} is outside the dataset folder {subject} (a symlink "
                                      f"leads to {target}); a dataset may only reference files inside its folder")


def test_symlinked_subject_folder_and_inner_symlinks_parse_as_before(subject, tmp_path):
    before = config(subject, tmp_path, protocol="synthetic").setup().collect("test").subjects[0]
    inner = subject / "image" / "02" / "0001.jpg"
    inner.rename(subject / "image" / "0001_store.jpg")
    inner.symlink_to(subject / "image" / "0001_store.jpg")
    (tmp_path / "link").symlink_to(subject, target_is_directory=True)
    after = config(tmp_path / "link", tmp_path, protocol="synthetic").setup().collect("test").subjects[0]
    assert after.camera_names == before.camera_names
    for old, new in zip(before.frames, after.frames):
        assert new.frame_id == old.frame_id
        for a, b in zip(old.views, new.views):
            assert b.crop == a.crop and b.image_path.name == a.image_path.name
            np.testing.assert_array_equal(b.K, a.K)
