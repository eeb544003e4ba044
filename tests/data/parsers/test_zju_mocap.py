"""ZJU-MoCap dataparser on tiny fixtures that reproduce the real layouts and quirks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import HumanDataWarning, load_vertices
from gmnerf_ns.data.parsers.zju_mocap import ZJUMocapDataParserConfig
from gmnerf_ns.data.view_loader import load_view
from gmnerf_ns.geometry.camera_math import project_points
from tests.fixtures.datasets_zju import make_zju_subject
from tests.fixtures.person import nerfstudio_pixel, person_mask, project, ray_miss_distance

RES = 32  # fixtures store 64 x 64 images: ratio 0.5 as NHP's 1024 -> 512


@pytest.fixture(scope="module")
def zju(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "zju_mocap"
    subjects = {
        "313": make_zju_subject(root, 313, legacy=True, lists=True),
        "315": make_zju_subject(root, 315, legacy=True, renamed=True, new_fits=False),
        "377": make_zju_subject(root, 377, distortion=0.0),
        "387": make_zju_subject(root, 387),
    }
    return root, subjects


def parser(data, **kwargs):
    kwargs.setdefault("resolution", RES)
    return ZJUMocapDataParserConfig(data=data, **kwargs).setup()


def subject_record(data, split="train", **kwargs):
    return parser(data, **kwargs).collect(split).subjects[0]


def test_legacy_313_original_names(zju):
    root, subs = zju
    record = subject_record(root / "CoreView_313")
    assert record.camera_names[-2:] == ("Camera (22)", "Camera (23)") and len(record.camera_names) == 21
    assert record.camera_ids[-2:] == (21, 22)
    frame = record.frames[0]
    assert frame.frame_id == 1  # 1-based frame numbers of 313/315
    assert frame.vertices_path.parent.name == "new_vertices" and frame.vertices_path.name == "1.npy"
    assert frame.views[0].image_path.name.startswith("CoreView_313_Camera_(1)_0001_")
    assert frame.views[0].dist is not None and frame.views[0].dist[0] == pytest.approx(0.01)
    assert frame.views[0].out_size == (RES, RES)
    np.testing.assert_allclose(load_vertices(frame), subs["313"].vertices[0], atol=1e-6)


def test_nhp_renamed_315_ignores_broken_mask_folder(zju):
    root, subs = zju
    record = subject_record(root / "CoreView_315")
    view = record.frames[0].views[0]
    assert view.image_path.name == "0001.jpg"
    assert all(p.parts[-3] != "mask" or "CoreView" in p.name for p in view.mask_paths)
    _, mask = load_view(view)
    assert 0 < mask.mean() < 0.5  # the broken all-foreground mask/ file is not used
    assert record.frames[0].vertices_path.parent.name == "vertices"  # no new_vertices for this subject


def test_mask_union_and_lazy_images(zju, monkeypatch):
    root, subs = zju
    import cv2

    reads = []
    real_imread = cv2.imread
    monkeypatch.setattr(cv2, "imread", lambda *a, **k: reads.append(a[0]) or real_imread(*a, **k))
    record = subject_record(root / "CoreView_377")
    assert reads == []  # parsing reads no image (only headers)
    sub = subs["377"]
    K, R, T = sub.cameras[4]
    full = person_mask(sub.vertices[0], K, R, T, (64, 64))
    _, mask = load_view(record.frames[0].views[4])
    expected = cv2.resize(full.astype(np.uint8), (RES, RES), interpolation=cv2.INTER_NEAREST) > 0
    assert (mask == expected).mean() > 0.97  # upper half from mask/, lower half from mask_cihp/
    assert mask[: RES // 2].any() and mask[RES // 2:].any()


def test_prefers_new_vertices(zju):
    root, subs = zju
    new = subject_record(root / "CoreView_377").frames[0]
    old = subject_record(root / "CoreView_377", use_new_fits=False).frames[0]
    assert new.vertices_path.parent.name == "new_vertices" and old.vertices_path.parent.name == "vertices"
    assert np.abs(load_vertices(old) - load_vertices(new)).max() == pytest.approx(10.0)


def test_round_trip_projection_through_nerfstudio_cameras(zju):
    root, subs = zju
    outputs = parser(root / "CoreView_377").get_dataparser_outputs("train")
    record = outputs.metadata["human"].subjects[0]
    sub = subs["377"]
    point = sub.vertices[0][123].astype(np.float64)
    for cam_index in (0, 7, 22):
        K, R, T = sub.cameras[cam_index]  # the dataset's own convention: OpenCV K at full res, T/1000
        u_full = project(point[None], K, R, T)[0]
        expected_pixel = np.floor((u_full + 0.5) * RES / 64)  # pixel of the 0.5 resize that holds the point
        u, v = nerfstudio_pixel(outputs.cameras, cam_index, point)
        assert np.floor([u, v]).tolist() == expected_pixel.tolist()
        assert ray_miss_distance(outputs.cameras, cam_index, u, v, point) < 1e-4
        view = record.frames[0].views[cam_index]  # what the model projects sources with: the same convention
        uv, _ = project_points(torch.tensor(point[None]), torch.tensor(view.output_intrinsics), torch.tensor(view.R),
                               torch.tensor(view.T))
        np.testing.assert_allclose(uv[0].numpy(), [u, v], atol=1e-4)


def test_protocol_nhp_views_and_frames(zju):
    root, _ = zju
    p = parser(root, train_subjects=("313", "315", "377"), test_subjects=("387",))
    assert p.protocol.frames_for("train", "CoreView_377").interval == 30  # short ids key the NHP table
    collection = p.collect("test")
    subject = collection.subjects[0]
    assert collection.inputs_for(subject, 3) == (0, 7, 15)
    assert collection.targets_for(subject, 3) == (3, 5, 10, 12, 18, 20)
    train = p.collect("train")
    s313 = next(s for s in train.subjects if s.name == "CoreView_313")
    # 313 has 21 cameras; NHP's target 21 is folder "Camera (22)", at position 19.
    assert train.targets_for(s313, 3) == (3, 5, 10, 12, 18, 19)
    assert s313.camera_names[19] == "Camera (22)"


def test_short_names_resolve_against_data_root(zju, monkeypatch):
    root, _ = zju
    monkeypatch.setenv("GMNERF_DATA", str(root.parent))
    assert parser("zju/313").resolve_root() == root / "CoreView_313"
    assert parser("zju").resolve_root() == root
    with pytest.raises(HumanDataError, match="available subjects: CoreView_313, CoreView_315, CoreView_377"):
        parser("zju/999").resolve_root()
    with pytest.raises(HumanDataError, match="subject '999' not found; available subjects: CoreView_313"):
        parser(root, train_subjects=("999",), test_subjects=("387",)).collect("train")


@pytest.fixture
def subject(tmp_path):
    return make_zju_subject(tmp_path, 386, num_frames=2)


def test_missing_annots_key_names_the_file(subject):
    annots = np.load(subject.folder / "annots.npy", allow_pickle=True).item()
    del annots["cams"]
    np.save(subject.folder / "annots.npy", annots)
    with pytest.raises(HumanDataError, match=r"annots\.npy: annots has no 'cams' entry"):
        subject_record(subject.folder)


def test_corrupt_annots(subject):
    (subject.folder / "annots.npy").write_bytes(b"not a numpy file")
    with pytest.raises(HumanDataError, match=r"annots\.npy: cannot read ZJU-MoCap annotations"):
        subject_record(subject.folder)


def test_camera_count_mismatch(subject):
    (subject.folder / "Camera_B24").mkdir()
    with pytest.raises(HumanDataError, match=r"camera count mismatch: 24 camera folders .* Camera_B24"):
        subject_record(subject.folder)
    (subject.folder / "Camera_B24").rmdir()
    annots = np.load(subject.folder / "annots.npy", allow_pickle=True).item()
    annots["cams"]["K"] = annots["cams"]["K"][:-1]
    np.save(subject.folder / "annots.npy", annots)
    with pytest.raises(HumanDataError, match=r"annots\.npy: camera count mismatch inside 'cams'"):
        subject_record(subject.folder)


def test_nan_camera(subject):
    annots = np.load(subject.folder / "annots.npy", allow_pickle=True).item()
    annots["cams"]["K"][3] = np.full((3, 3), np.nan)
    np.save(subject.folder / "annots.npy", annots)
    with pytest.raises(HumanDataError, match=r"annots\.npy camera 3: camera K contains NaN"):
        subject_record(subject.folder)


def test_missing_camera_folder_warns_and_goes_on(subject):
    shutil.rmtree(subject.folder / "Camera_B5")
    with pytest.warns(HumanDataWarning, match="Camera_B5 are missing"):
        record = subject_record(subject.folder)
    assert "Camera_B5" not in record.camera_names and len(record.camera_names) == 22
    assert record.camera_ids[4] == 5  # Camera_B6 keeps its number


def test_missing_frame_file_warns_and_skips(subject):
    (subject.folder / "new_vertices" / "1.npy").unlink()
    with pytest.warns(HumanDataWarning, match=r"skipped 1 frame\(s\) with missing files, e\.g\. frame 1 .*1\.npy"):
        record = subject_record(subject.folder, protocol="synthetic")  # every frame
    assert [f.frame_id for f in record.frames] == [0]


def test_corrupt_image_and_mask_size(subject):
    image = subject.folder / "Camera_B1" / "000000.jpg"
    image.write_bytes(b"\xff\xd8garbage")
    with pytest.raises(HumanDataError, match=r"Camera_B1/000000\.jpg: image file is unreadable or corrupt"):
        subject_record(subject.folder)
    import cv2

    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    cv2.imwrite(str(subject.folder / "mask" / "Camera_B1" / "000000.png"), np.zeros((10, 12), np.uint8))
    record = subject_record(subject.folder)
    with pytest.raises(HumanDataError, match=r"mask/Camera_B1/000000\.png: mask is 12x10 but image .* is 64x64"):
        load_view(record.frames[0].views[0])


def test_empty_mask_warns_at_load(subject):
    import cv2

    for sub in ("mask", "mask_cihp"):
        cv2.imwrite(str(subject.folder / sub / "Camera_B2" / "000000.png"), np.zeros((64, 64), np.uint8))
    record = subject_record(subject.folder)
    with pytest.warns(HumanDataWarning, match=r"Camera_B2/000000\.jpg: its mask is empty"):
        load_view(record.frames[0].views[1])


def test_bad_vertices_shape_and_nan(subject):
    np.save(subject.folder / "new_vertices" / "0.npy", np.zeros((6890, 2), np.float32))
    with pytest.raises(HumanDataError, match=r"new_vertices/0\.npy: proxy vertices have shape \(6890, 2\)"):
        subject_record(subject.folder)
    bad = subject.vertices[0].copy()
    bad[5, 1] = np.inf
    np.save(subject.folder / "new_vertices" / "0.npy", bad)
    with pytest.raises(HumanDataError, match=r"new_vertices/0\.npy: proxy vertices contain NaN or inf"):
        subject_record(subject.folder)


def test_missing_mask_and_vertices_folders(subject):
    shutil.rmtree(subject.folder / "mask")
    shutil.rmtree(subject.folder / "mask_cihp")
    with pytest.raises(HumanDataError, match="no mask folder; expected one of mask, mask_cihp"):
        subject_record(subject.folder)


def test_missing_vertices_folder(subject):
    shutil.rmtree(subject.folder / "vertices")
    shutil.rmtree(subject.folder / "new_vertices")
    with pytest.raises(HumanDataError, match=r"no proxy vertices folder; expected .*CoreView_386/vertices"):
        subject_record(subject.folder)


def _outside_image(subject, tmp_path):
    """A valid image outside the subject folder (what a crafted dataset would try to read)."""
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir()
    shutil.copy(subject.folder / "Camera_B1" / "000000.jpg", secret)
    return secret


def _set_image(subject, frame, camera, path):
    annots = np.load(subject.folder / "annots.npy", allow_pickle=True).item()
    annots["ims"][frame]["ims"][camera] = str(path)
    np.save(subject.folder / "annots.npy", annots)


@pytest.mark.parametrize("frame", [0, 1])
def test_annots_image_path_climbing_out_is_refused(subject, tmp_path, frame):
    _outside_image(subject, tmp_path)
    _set_image(subject, frame, 1, "Camera_B2/../../outside/secret.jpg")
    with pytest.raises(HumanDataError) as info:
        subject_record(subject.folder, protocol="synthetic")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{subject.folder / 'annots.npy'}: ims[{frame}] image ")
    assert "Camera_B2/../../outside/secret.jpg is outside the dataset folder" in message
    assert "('..' climbs out of it)" in message and "fix the path or copy the file in" in message


def test_annots_absolute_image_path_outside_is_refused(subject, tmp_path):
    secret = _outside_image(subject, tmp_path)
    _set_image(subject, 0, 1, secret)
    with pytest.raises(HumanDataError, match=rf"annots\.npy: ims\[0\] image {secret} is outside the dataset folder "
                                             r".*CoreView_386 \(an absolute path elsewhere\)"):
        subject_record(subject.folder)


def test_symlinks_out_of_the_subject_folder_are_refused(subject, tmp_path):
    secret = _outside_image(subject, tmp_path)
    image = subject.folder / "Camera_B2" / "000000.jpg"
    image.unlink()
    image.symlink_to(secret)
    with pytest.raises(HumanDataError, match=rf"annots\.npy: ims\[0\] image {image} is outside the dataset folder "
                                             rf".*CoreView_386 \(a symlink leads to {secret}\)"):
        subject_record(subject.folder)
    image.unlink()
    shutil.copy(secret, image)
    mask = subject.folder / "mask_cihp" / "Camera_B3" / "000001.png"
    mask.rename(tmp_path / "outside" / "mask.png")
    mask.symlink_to(tmp_path / "outside" / "mask.png")
    with pytest.raises(HumanDataError, match=rf"annots\.npy: mask {mask} is outside the dataset folder"):
        subject_record(subject.folder, protocol="synthetic")
    mask.unlink()
    vertices = subject.folder / "new_vertices" / "1.npy"
    vertices.rename(tmp_path / "outside" / "1.npy")
    vertices.symlink_to(tmp_path / "outside" / "1.npy")
    with pytest.raises(HumanDataError, match=rf"{vertices}: proxy vertices is outside the dataset folder"):
        subject_record(subject.folder, protocol="synthetic")


def test_symlinked_folder_relative_data_and_inner_symlinks_parse_as_before(subject, tmp_path, monkeypatch):
    before = subject_record(subject.folder)
    store = subject.folder / "store"  # a symlink inside the folder to a file inside it is fine
    store.mkdir()
    image = subject.folder / "Camera_B2" / "000000.jpg"
    image.rename(store / "000000.jpg")
    image.symlink_to(Path("..") / "store" / "000000.jpg")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "CoreView_386").symlink_to(subject.folder, target_is_directory=True)
    monkeypatch.chdir(tmp_path / "links")
    after = subject_record(Path("CoreView_386"))
    assert after.camera_names == before.camera_names and len(after.frames) == len(before.frames)
    for old, new in zip(before.frames, after.frames):
        assert new.frame_id == old.frame_id
        assert new.vertices_path == Path("CoreView_386") / old.vertices_path.relative_to(subject.folder)
        for a, b in zip(old.views, new.views):
            assert b.image_path == Path("CoreView_386") / a.image_path.relative_to(subject.folder)
            np.testing.assert_array_equal(a.K, b.K)
    image_before, mask_before = load_view(before.frames[0].views[1])
    image_after, mask_after = load_view(after.frames[0].views[1])
    np.testing.assert_array_equal(image_after, image_before)
    np.testing.assert_array_equal(mask_after, mask_before)
