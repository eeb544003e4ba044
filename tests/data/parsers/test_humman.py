"""The humman dataparser (HuMMan-Recon) on tiny fixtures written from the toolbox's format description."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import HumanDataWarning, load_vertices
from gmnerf_ns.data.parsers.auto import AutoDataParserConfig
from gmnerf_ns.data.parsers.humman import HuMManDataParser, HuMManDataParserConfig
from tests.fixtures.datasets_captures import make_humman
from tests.fixtures.person import fraction_in_masks

RES = 36


def parse(data, fake, split="train", **kwargs):
    kwargs.setdefault("resolution", RES)
    return HuMManDataParserConfig(data=Path(data), body_model_dir=fake.dir, **kwargs).setup().collect(split)


def test_color_cameras_sparse_frames_and_projection(tmp_path, fake_smplx):
    seq = make_humman(tmp_path, frames=(0, 6, 12, 18), unfit=(12,))
    fake_smplx.template = seq.template
    with pytest.warns(HumanDataWarning, match=r"smpl_params: 1 frame\(s\) have no SMPL fit and are skipped"):
        subject = parse(seq.folder, fake_smplx).subjects[0]
    assert subject.camera_names == tuple(f"kinect_color_{i:03d}" for i in range(4))  # no kinect_depth_*
    assert subject.camera_ids == (0, 1, 2, 3)
    assert [f.frame_id for f in subject.frames] == [0, 6, 18]  # sparse ids, the unfitted one skipped
    np.testing.assert_allclose(subject.frames[0].views[0].R, np.eye(3), atol=1e-6)  # world = kinect_color_000
    view = subject.frames[0].views[1]
    np.testing.assert_allclose(view.K[:2, 2], seq.cameras[1][0][:2, 2] + 0.5)
    assert view.out_size == (64, 36) and view.mask_threshold == 127
    (path, model_type, _), call = fake_smplx.built[0], fake_smplx.models[0].calls[0]
    assert path.name == "SMPL_NEUTRAL.pkl" and model_type == "smpl"
    saved = np.load(seq.folder / "smpl_params" / "000000.npz")
    for key in ("global_orient", "body_pose", "betas", "transl"):  # standard SMPL: smplx moves the body itself
        np.testing.assert_allclose(call[key].numpy().reshape(-1), saved[key], atol=1e-6)
    for frame in subject.frames:
        index = seq.frames.index(frame.frame_id)
        np.testing.assert_allclose(load_vertices(frame), seq.vertices[index], atol=1e-5)
        assert fraction_in_masks(frame) >= 0.95
    np.testing.assert_array_equal(subject.faces, fake_smplx.models[0].faces)


def test_split_files_and_auto_detection(tmp_path, fake_smplx):
    for name in ("p000001_a000001", "p000002_a000002", "p000003_a000003"):
        seq = make_humman(tmp_path / "humman", name, frames=(0,))
    fake_smplx.template = seq.template
    (tmp_path / "humman" / "train.txt").write_text("p000001_a000001\np000002_a000002\np000009_a000009\n")
    (tmp_path / "humman" / "test.txt").write_text("p000003_a000003\n")
    parser = AutoDataParserConfig(data=tmp_path / "humman", resolution=RES, body_model_dir=fake_smplx.dir).setup()
    assert type(parser) is HuMManDataParser and parser.protocol.name == "humman"
    assert parser.config.body_model_dir == fake_smplx.dir  # gmnerf-auto passes the model files on
    with pytest.warns(HumanDataWarning, match=r"train\.txt: 1 sequence\(s\) not downloaded, skipped: p000009_a000009"):
        assert [s.name for s in parser.collect("train").subjects] == ["p000001_a000001", "p000002_a000002"]
    assert [s.name for s in parser.collect("test").subjects] == ["p000003_a000003"]


def test_bad_inputs(tmp_path, fake_smplx):
    seq = make_humman(tmp_path, frames=(0,))
    fake_smplx.template = seq.template
    with pytest.raises(HumanDataError, match=r"smpl_params: HuMMan ships SMPL parameters only; the SMPL body model is "
                                             r"needed .*SMPL_NEUTRAL\.pkl"):
        HuMManDataParserConfig(data=seq.folder, resolution=RES).setup().collect("train")
    cams = json.loads((seq.folder / "cameras.json").read_text())
    (seq.folder / "cameras.json").write_text(json.dumps({k: v for k, v in cams.items() if "depth" in k}))
    with pytest.raises(HumanDataError, match=r"cameras\.json: no kinect_color_00N cameras"):
        parse(seq.folder, fake_smplx)
    (seq.folder / "cameras.json").write_text(json.dumps(cams))
    np.savez(seq.folder / "smpl_params" / "000000.npz", betas=np.zeros(10))
    with pytest.raises(HumanDataError, match=r"000000\.npz: SMPL fit has no 'global_orient' entry"):
        parse(seq.folder, fake_smplx)


def test_registered():
    from gmnerf_ns.data.protocol import load_protocol
    from gmnerf_ns.training import dataparser_configs as registry

    assert isinstance(registry.humman_dataparser.config, HuMManDataParserConfig)
    assert load_protocol(registry.humman_dataparser.config.protocol).test_frames.interval == 5


@pytest.mark.parametrize("rel, what", [("kinect_color/kinect_001/000006.png", "image"),
                                       ("kinect_mask/kinect_002/000000.png", "mask"),
                                       ("smpl_params/000006.npz", "SMPL fit"), ("cameras.json", "cameras file")])
def test_symlinks_out_of_the_sequence_folder_are_refused(tmp_path, fake_smplx, rel, what):
    seq = make_humman(tmp_path / "humman", frames=(0, 6))
    fake_smplx.template = seq.template
    path = seq.folder / rel
    target = tmp_path / "outside" / path.name
    target.parent.mkdir()
    path.rename(target)
    path.symlink_to(target)
    with pytest.raises(HumanDataError) as info:
        parse(seq.folder, fake_smplx)
    assert str(info.value).startswith(f"{path}: {what} is outside the dataset folder {seq.folder} (a symlink leads to "
                                      f"{target}); a dataset may only reference files inside its folder")
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "cache").rglob("000006-*"))  # frame 6's fit was not read and posed


def test_symlinked_sequence_folder_parses_as_before(tmp_path, fake_smplx):
    seq = make_humman(tmp_path / "humman", frames=(0, 6))
    fake_smplx.template = seq.template
    before = parse(seq.folder, fake_smplx).subjects[0]
    (tmp_path / "link").symlink_to(seq.folder, target_is_directory=True)
    after = parse(tmp_path / "link", fake_smplx).subjects[0]
    assert after.camera_names == before.camera_names
    for old, new in zip(before.frames, after.frames):
        assert new.frame_id == old.frame_id
        np.testing.assert_array_equal(load_vertices(new), load_vertices(old))
        for a, b in zip(old.views, new.views):
            assert b.image_path == tmp_path / "link" / a.image_path.relative_to(seq.folder)
            assert b.mask_paths == tuple(tmp_path / "link" / m.relative_to(seq.folder) for m in a.mask_paths)
