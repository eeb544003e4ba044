"""The mvhumannet dataparser on tiny fixtures written from the dataset's own format description and tools."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import HumanDataWarning, load_vertices
from gmnerf_ns.data.parsers.auto import AutoDataParserConfig
from gmnerf_ns.data.parsers.mvhumannet import MVHumanNetDataParser, MVHumanNetDataParserConfig
from tests.fixtures.body_model import install_fake_smplx
from tests.fixtures.datasets_captures import make_mvhumannet
from tests.fixtures.person import fraction_in_masks

RES = 36


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def parse(data, split="train", **kwargs):
    kwargs.setdefault("resolution", RES)
    return MVHumanNetDataParserConfig(data=Path(data), **kwargs).setup().collect(split)


def test_meshes_cameras_and_projection(tmp_path):
    outfit = make_mvhumannet(tmp_path, fits=(0, 1, 2, 3), unfit=(2,))
    with pytest.warns(HumanDataWarning, match=r"smplx_mesh: 1 frame\(s\) have no SMPL-X fit and are skipped"):
        subject = parse(outfit.folder).subjects[0]
    # camera 4 is calibrated but has no images (fewer cameras than the rig): the others keep their numbers
    assert subject.camera_names == tuple(n for i, n in enumerate(outfit.names) if i != 4)
    assert subject.camera_ids == (0, 1, 2, 3, 5)
    assert [f.frame_id for f in subject.frames] == [5, 10, 20]  # fit i is image frame 5 (i + 1)
    view = subject.frames[0].views[1]
    K, R, T = outfit.cameras[1]
    np.testing.assert_allclose(view.T, T, atol=1e-6)  # mm / 1000 x camera_scale = metres
    expected_K = K.copy()
    expected_K[:2, 2] += 0.5  # full-resolution K halved to the stored images, in half-pixel-centre convention
    np.testing.assert_allclose(view.K, expected_K, atol=1e-9)
    assert view.out_size == (48, 36) and view.mask_threshold == 200
    assert subject.faces is not None and subject.frames[0].vertices_path.suffix == ".obj"
    for frame in subject.frames:
        np.testing.assert_allclose(load_vertices(frame), outfit.vertices[outfit.numbers.index(frame.frame_id)],
                                   atol=1e-5)
        assert fraction_in_masks(frame) >= 0.95


def test_soft_masks_are_thresholded(tmp_path):
    outfit = make_mvhumannet(tmp_path, fits=(0,))
    from gmnerf_ns.data.view_loader import load_view

    view = parse(outfit.folder).subjects[0].frames[0].views[0]
    _, strict = load_view(view)
    _, loose = load_view(type(view)(**{**view.__dict__, "mask_threshold": 0}))
    assert strict.sum() < loose.sum()  # the soft rim (150) is background at > 200


def test_smplx_parameters_with_model_files(tmp_path, monkeypatch):
    outfit = make_mvhumannet(tmp_path, fits=(0, 1))
    fake = install_fake_smplx(monkeypatch, tmp_path / "body_models", outfit.template)
    subject = parse(outfit.folder, body_model_dir=fake.dir).subjects[0]
    path, model_type, kwargs = fake.built[0]
    assert path.name == "SMPLX_NEUTRAL.npz" and model_type == "smplx"
    assert kwargs["use_pca"] and kwargs["num_pca_comps"] == 6 and not kwargs["flat_hand_mean"]  # EasyMocap's SMPL-X
    call = fake.models[0].calls[0]
    assert torch.count_nonzero(call["global_orient"]) == 0 and call["left_hand_pose"].shape == (1, 6)
    for frame, expected in zip(subject.frames, outfit.vertices):
        assert frame.vertices_path.suffix == ".npy"
        np.testing.assert_allclose(load_vertices(frame), expected, atol=1e-5)
        assert fraction_in_masks(frame) >= 0.95


def test_auto_detection_and_split(tmp_path):
    for outfit_id in ("100001", "100002"):
        make_mvhumannet(tmp_path / "mvhumannet", outfit_id, fits=(0,))
    parser = AutoDataParserConfig(data=tmp_path / "mvhumannet", resolution=RES, train_subjects=("100001",),
                                  test_subjects=("100002",)).setup()
    assert type(parser) is MVHumanNetDataParser and parser.protocol.name == "mvhumannet"
    assert [s.name for s in parser.collect("test").subjects] == ["100002"]
    with pytest.raises(HumanDataError, match="lists no subject split .* pass --train-subjects and --test-subjects"):
        AutoDataParserConfig(data=tmp_path / "mvhumannet", resolution=RES).setup().collect("train")


def test_bad_inputs(tmp_path):
    outfit = make_mvhumannet(tmp_path, fits=(0,))
    with open(outfit.folder / "camera_scale.pkl", "wb") as handle:
        pickle.dump({"scale": "x"}, handle)
    with pytest.raises(HumanDataError, match=r"camera_scale\.pkl: camera scale should be a number"):
        parse(outfit.folder)
    (outfit.folder / "camera_scale.pkl").write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")
    with pytest.raises(HumanDataError, match=r"camera_scale\.pkl: refuses to unpickle"):
        parse(outfit.folder)
    with open(outfit.folder / "camera_scale.pkl", "wb") as handle:
        pickle.dump(outfit.scale, handle)
    shutil.rmtree(outfit.folder / "smplx" / "smplx_mesh")
    with pytest.raises(HumanDataError, match=r"smplx: no smplx_mesh/ meshes \(with --body-model-dir"):
        parse(outfit.folder)


def test_outfit_without_camera_scale_names_the_file(tmp_path):
    """A downloaded outfit lacking camera_scale.pkl: the parser and auto-detection name it, not "no subjects"."""
    outfit = make_mvhumannet(tmp_path / "mvhumannet", fits=(0,))
    (outfit.folder / "camera_scale.pkl").unlink()
    message = (f"{outfit.folder / 'camera_scale.pkl'}: file not found; 100001/ has camera_extrinsics.json like an "
               "MVHumanNet outfit, which also needs camera_scale.pkl (an incomplete download or copy?)")
    for data in (outfit.folder, outfit.folder.parent):
        with pytest.raises(HumanDataError) as err:
            parse(data)
        assert str(err.value) == message
        with pytest.raises(HumanDataError) as err:
            AutoDataParserConfig(data=data, resolution=RES).setup()
        assert str(err.value) == f"--data {data}: {message}"
    make_mvhumannet(tmp_path / "mvhumannet", "100002", fits=(0,))  # another outfit is complete
    with pytest.raises(HumanDataError) as err:
        parse(outfit.folder.parent, train_subjects=("100002",), test_subjects=("100001",))
    assert str(err.value) == message


def test_registered():
    from gmnerf_ns.training import dataparser_configs as registry

    assert isinstance(registry.mvhumannet_dataparser.config, MVHumanNetDataParserConfig)
