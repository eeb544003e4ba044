"""The dna-rendering dataparser on tiny .smc fixtures written as the official SMCReader reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import HumanDataWarning, load_vertices
from gmnerf_ns.data.parsers.auto import AutoDataParserConfig
from gmnerf_ns.data.parsers.dnarendering import DNARenderingDataParser, DNARenderingDataParserConfig
from tests.fixtures.datasets_captures import make_dna_rendering
from tests.fixtures.person import fraction_in_masks

RES = 40


def parse(data, fake, split="train", **kwargs):
    kwargs.setdefault("resolution", RES)
    kwargs.setdefault("protocol", "synthetic")  # every frame (dna-rendering samples every 10th)
    return DNARenderingDataParserConfig(data=Path(data), body_model_dir=fake.dir, **kwargs).setup().collect(split)


def test_cameras_masks_smplx_and_projection(tmp_path, fake_smplx):
    seq = make_dna_rendering(tmp_path / "dna")
    fake_smplx.template = seq.template
    with pytest.warns(HumanDataWarning) as record:
        subject = parse(tmp_path / "dna", fake_smplx).subjects[0]
    messages = " | ".join(str(w.message) for w in record)
    assert "fullpose has 2 frames; 1 sampled frame(s) after it have no fit" in messages
    assert "expression has 1 frames, fewer than fullpose; 1 frame(s) use a zero expression" in messages
    assert subject.name == "0012_03" and subject.camera_ids == (0, 1, 2, 3)  # 5 MP cameras only by default
    assert [f.frame_id for f in subject.frames] == [0, 1]
    view = subject.frames[0].views[2]
    K, R, T = seq.cameras[2]
    np.testing.assert_allclose(view.R, R, atol=1e-9)  # RT is camera-to-world: inverted
    np.testing.assert_allclose(view.T, T, atol=1e-9)
    np.testing.assert_allclose(view.K[:2, 2], K[:2, 2] + 0.5)
    assert view.out_size == (48, 40) and view.image_path.suffix == ".jpg" and view.mask_paths[0].is_file()
    path, model_type, kwargs = fake_smplx.built[0]
    assert path.name == "SMPLX_FEMALE.npz" and model_type == "smplx"  # the actor's gender from the main file
    assert kwargs["use_pca"] is False and kwargs["flat_hand_mean"] is False  # as the official loader
    call = fake_smplx.models[0].calls[0]
    assert call["left_hand_pose"].shape == (1, 45) and call["body_pose"].shape == (1, 63)
    np.testing.assert_allclose(call["betas"].numpy()[0], np.linspace(-0.4, 0.4, 10), atol=1e-6)  # one row, every frame
    assert torch.count_nonzero(fake_smplx.models[0].calls[1]["expression"]) == 0
    for frame, expected in zip(subject.frames, seq.vertices):
        np.testing.assert_allclose(load_vertices(frame), expected, atol=1e-5)
        assert fraction_in_masks(frame) >= 0.95


def test_both_camera_groups_share_one_output_shape(tmp_path, fake_smplx):
    seq = make_dna_rendering(tmp_path, layout="flat")
    fake_smplx.template = seq.template
    with pytest.warns(HumanDataWarning):
        subject = parse(seq.main, fake_smplx, camera_groups=("Camera_5mp", "Camera_12mp")).subjects[0]
    assert subject.camera_ids == (0, 1, 2, 3, 48, 49)
    sizes = {v.out_size for v in subject.frames[0].views}
    assert len(sizes) == 1  # 2448x2048-like and 4096x3000-like views padded to the wider aspect ratio
    assert subject.frames[0].views[0].crop[0] < 0  # the 5 MP views are padded left and right
    for frame in subject.frames:
        assert fraction_in_masks(frame) >= 0.95


def test_auto_detection(tmp_path, fake_smplx):
    seq = make_dna_rendering(tmp_path / "dna")
    parser = AutoDataParserConfig(data=tmp_path / "dna", resolution=RES).setup()
    assert type(parser) is DNARenderingDataParser and parser.protocol.name == "dna-rendering"
    assert type(AutoDataParserConfig(data=seq.main, resolution=RES).setup()) is DNARenderingDataParser


def test_bad_inputs(tmp_path, fake_smplx):
    import h5py

    seq = make_dna_rendering(tmp_path / "dna")
    fake_smplx.template = seq.template
    with pytest.raises(HumanDataError, match=r"_annots\.smc: DNA-Rendering ships SMPL-X parameters only; the SMPLX body "
                                             "model is needed"):
        DNARenderingDataParserConfig(data=seq.main, resolution=RES, protocol="synthetic").setup().collect("train")
    with h5py.File(seq.annots, "a") as annots:
        del annots["Camera_Parameter/03"]
    with pytest.raises(HumanDataError, match=r"_annots\.smc: no Camera_Parameter/03 for Camera_5mp camera 3"):
        parse(seq.main, fake_smplx)
    seq.annots.unlink()
    with pytest.raises(HumanDataError, match=r"0012_03\.smc: no annotation file; expected .*annotations/0012_03_annots"):
        parse(seq.main, fake_smplx)
    seq.main.write_bytes(b"not hdf5")
    (tmp_path / "dna" / "annotations" / "0012_03_annots.smc").write_bytes(b"")
    with pytest.raises(HumanDataError, match=r"0012_03\.smc: not a readable \.smc \(HDF5\) file"):
        parse(seq.main, fake_smplx)


def test_registered():
    from gmnerf_ns.training import dataparser_configs as registry

    assert isinstance(registry.dna_rendering_dataparser.config, DNARenderingDataParserConfig)


def _secret_jpeg(tmp_path, seq):
    """A file outside the dataset with the bytes of a valid image (what a crafted .smc would copy into the cache)."""
    import h5py

    with h5py.File(seq.main, "r") as main:
        data = bytes(np.asarray(main["Camera_5mp/1/color/0"][()], dtype=np.uint8)) + b"SECRET"
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir(exist_ok=True)
    secret.write_bytes(data)
    return secret, data


def _cached_bytes(tmp_path):
    return [p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def _replace(smc, name, make):
    import h5py

    with h5py.File(smc, "a") as f:
        del f[name]
        make(f, name)


@pytest.mark.parametrize("kind", ["external_link", "external_storage", "virtual"])
def test_hdf5_data_from_other_files_is_refused(tmp_path, fake_smplx, kind):
    import h5py

    seq = make_dna_rendering(tmp_path / "dna")
    fake_smplx.template = seq.template
    secret, data = _secret_jpeg(tmp_path, seq)
    other = tmp_path / "outside" / "other.h5"
    with h5py.File(other, "w") as f:
        f["jpeg"] = np.frombuffer(data, np.uint8)

    def make(f, name):
        if kind == "external_link":
            f[name] = h5py.ExternalLink(str(other), "/jpeg")
        elif kind == "external_storage":
            f.create_dataset(name, (len(data),), np.uint8, external=[(str(secret), 0, len(data))])
        else:
            layout = h5py.VirtualLayout((len(data),), np.uint8)
            layout[:] = h5py.VirtualSource(str(other), "jpeg", (len(data),))
            f.create_virtual_dataset(name, layout)

    _replace(seq.main, "Camera_5mp/1/color/0", make)
    expected = {
        "external_link": rf"0012_03\.smc: /Camera_5mp/1/color/0 is an HDF5 external link to {other}:/jpeg; ",
        "external_storage": rf"0012_03\.smc: dataset /Camera_5mp/1/color/0 keeps its data in other files \(external "
                            rf"storage: {secret}\); ",
        "virtual": r"0012_03\.smc: dataset /Camera_5mp/1/color/0 is a virtual dataset mapping other files; ",
    }[kind]
    with pytest.raises(HumanDataError, match=expected + r"a \.smc file may only hold its own data") as info:
        parse(tmp_path / "dna", fake_smplx)
    assert "\n" not in str(info.value)
    assert not any(data in cached or b"SECRET" in cached for cached in _cached_bytes(tmp_path))


def test_external_storage_in_the_annotations_is_refused(tmp_path, fake_smplx):
    seq = make_dna_rendering(tmp_path / "dna")
    fake_smplx.template = seq.template
    secret = tmp_path / "outside" / "rt.bin"
    secret.parent.mkdir()
    secret.write_bytes(np.eye(4).tobytes())
    _replace(seq.annots, "Camera_Parameter/02/RT",
             lambda f, name: f.create_dataset(name, (4, 4), np.float64, external=[(str(secret), 0, 128)]))
    with pytest.raises(HumanDataError, match=r"_annots\.smc: dataset /Camera_Parameter/02/RT keeps its data in other "
                                             "files"):
        parse(tmp_path / "dna", fake_smplx)


def test_soft_links_inside_the_file_and_a_symlinked_root_parse_as_before(tmp_path, fake_smplx):
    import h5py

    seq = make_dna_rendering(tmp_path / "dna")
    fake_smplx.template = seq.template
    with pytest.warns(HumanDataWarning):
        before = parse(tmp_path / "dna", fake_smplx).subjects[0]
    with h5py.File(seq.main, "a") as f:
        f["Camera_5mp/2/color"].move("1", "1_data")
        f["Camera_5mp/2/color/1"] = h5py.SoftLink("/Camera_5mp/2/color/1_data")
    (tmp_path / "link").symlink_to(tmp_path / "dna", target_is_directory=True)
    with pytest.warns(HumanDataWarning):
        after = parse(tmp_path / "link", fake_smplx, cache_dir=tmp_path / "cache2").subjects[0]
    assert after.camera_names == before.camera_names
    assert [f.frame_id for f in after.frames] == [f.frame_id for f in before.frames]
    for old, new in zip(before.frames, after.frames):
        for a, b in zip(old.views, new.views):
            assert b.image_path.read_bytes() == a.image_path.read_bytes()
            assert b.mask_paths[0].read_bytes() == a.mask_paths[0].read_bytes()
            np.testing.assert_array_equal(a.K, b.K)


def test_smc_files_symlinked_from_outside_are_refused(tmp_path, fake_smplx):
    seq = make_dna_rendering(tmp_path / "dna")
    fake_smplx.template = seq.template
    moved = tmp_path / "outside" / seq.annots.name
    moved.parent.mkdir()
    seq.annots.rename(moved)
    seq.annots.symlink_to(moved)
    with pytest.raises(HumanDataError, match=rf"{seq.annots}: annotation file is outside the dataset folder "
                                             rf"{tmp_path / 'dna'} \(a symlink leads to {moved}\)"):
        parse(tmp_path / "dna", fake_smplx)
    seq.annots.unlink()
    moved.rename(seq.annots)
    main = tmp_path / "outside" / seq.main.name
    seq.main.rename(main)
    seq.main.symlink_to(main)
    with pytest.raises(HumanDataError, match=rf"{seq.main}: DNA-Rendering file is outside the dataset folder"):
        parse(tmp_path / "dna", fake_smplx)
    assert _cached_bytes(tmp_path) == []
    with pytest.warns(HumanDataWarning):  # named by --data itself: the user's choice
        assert parse(seq.main, fake_smplx).subjects[0].name == "0012_03"


def test_camera_key_that_is_not_a_number(tmp_path, fake_smplx):
    import h5py

    seq = make_dna_rendering(tmp_path / "dna")
    fake_smplx.template = seq.template
    with h5py.File(seq.main, "a") as f:
        f.create_group("Camera_5mp/left/color")
    with pytest.raises(HumanDataError, match=r"0012_03\.smc: camera key Camera_5mp/'left' is not a number") as info:
        parse(tmp_path / "dna", fake_smplx)
    assert "\n" not in str(info.value)
