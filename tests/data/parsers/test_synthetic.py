"""Built-in synthetic layout: the ZJU-MoCap parser plus split.json, meshes and body_model.npz; registrations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import load_vertices
from gmnerf_ns.data.parsers.auto import AutoDataParserConfig
from gmnerf_ns.data.parsers.synthetic import SyntheticDataParserConfig
from gmnerf_ns.data.protocol import available_protocols, load_protocol
from tests.fixtures.datasets_zju import make_synthetic_dataset
from tests.fixtures.person import nerfstudio_pixel, project, ray_miss_distance


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return root, make_synthetic_dataset(root)


def test_split_meshes_faces_and_views(synthetic):
    root, subjects = synthetic
    parser = SyntheticDataParserConfig(data=root, resolution=24).setup()
    train = parser.collect("train")
    assert [s.name for s in train.subjects] == ["subject_000", "subject_001"]
    subject = train.subjects[0]
    assert subject.gt_mesh_dir == root / "subject_000" / "meshes"
    verts = load_vertices(subject.frames[0])
    assert verts.shape == (13718, 3)  # never a hard-coded 6890
    assert subject.faces.shape == (13716, 3) and subject.faces.max() < len(verts)
    assert train.inputs_for(subject, 4) == (0, 2, 4, 6)  # m = 4 evenly spaced over the 8-camera ring
    assert train.targets_for(subject, 4) == (1, 3, 5, 7)
    outputs = parser.get_dataparser_outputs("test")
    assert outputs.metadata["subject_names"] == ["subject_000", "subject_001", "subject_002"]
    assert len(outputs.image_filenames) == 2 * 4  # 2 frames x 4 target cameras of subject_002
    assert int(outputs.cameras.metadata["subject_index"][0]) == 2
    assert outputs.cameras.width[0].item() == 24 and subject.frames[0].views[0].dist is None


def test_round_trip_half_pixel_convention(synthetic):
    root, subjects = synthetic
    outputs = SyntheticDataParserConfig(data=root, resolution=24).setup().get_dataparser_outputs("train")
    sub = subjects["subject_000"]
    point = sub.vertices[0][5].astype(np.float64)
    for cam in (0, 3, 6):  # train outputs start with subject_000, frame 0, cameras in order
        K, R, T = sub.cameras[cam]  # the physical camera in OpenCV's convention (annots store cx, cy + 0.5)
        expected = np.floor((project(point[None], K, R, T)[0] + 0.5) * 24 / 48)
        u, v = nerfstudio_pixel(outputs.cameras, cam, point)
        assert np.floor([u, v]).tolist() == expected.tolist()
        assert ray_miss_distance(outputs.cameras, cam, u, v, point) < 1e-4


def test_generator_output_parses(tmp_path):
    import torch

    from gmnerf_ns.data.view_loader import load_view
    from gmnerf_ns.geometry.rasterize import rasterize
    from gmnerf_ns.synth.config import SynthConfig
    from gmnerf_ns.synth.generator import generate

    config = SynthConfig(out=tmp_path / "synthetic", num_subjects=2, num_test_subjects=1, num_cameras=4,
                         num_frames=1, resolution=32, progress=False, threads=1)
    generate(config)
    parser = SyntheticDataParserConfig(data=config.out, resolution=32).setup()
    subject = parser.collect("test").subjects[0]
    assert subject.name == "subject_001" and subject.gt_mesh_dir is not None and subject.faces is not None
    frame = subject.frames[0]
    verts = torch.from_numpy(load_vertices(frame))
    for view in frame.views:  # the proxy rasterised with the record's intrinsics sits inside the clothed mask
        _, mask = load_view(view)
        cam = verts @ torch.tensor(view.R).float().T + torch.tensor(view.T).float()
        hit = (rasterize(cam, torch.from_numpy(subject.faces), torch.tensor(view.output_intrinsics).float(), 32, 32)
               .face_id >= 0).numpy()
        assert (hit & mask).sum() / hit.sum() > 0.75


def test_defaults_and_missing_dataset_hint(tmp_path, monkeypatch):
    config = SyntheticDataParserConfig()
    assert config.data == Path("synthetic") and config.protocol == "synthetic"
    monkeypatch.setenv("GMNERF_DATA", str(tmp_path))
    with pytest.raises(HumanDataError, match="dataset folder synthetic not found .*gmnerf-synth"):
        config.setup().resolve_root()


def test_bad_split_file(synthetic, tmp_path):
    root, _ = synthetic
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "subject_000").symlink_to(root / "subject_000")
    (bad / "subject_001").symlink_to(root / "subject_001")
    (bad / "split.json").write_text(json.dumps({"train": "subject_000"}))
    with pytest.raises(HumanDataError, match=r"split\.json: expected"):
        SyntheticDataParserConfig(data=bad).setup().collect("train")


def small_copy(root: Path, tmp_path: Path) -> Path:
    """A copy of the fixture (symlinked subject folders are not enough: the tests remove files)."""
    import shutil

    shutil.copytree(root, tmp_path / "data")
    return tmp_path / "data"


def test_a_subject_without_annots_npy_names_the_missing_file(synthetic, tmp_path):
    data = small_copy(synthetic[0], tmp_path)
    (data / "subject_001" / "annots.npy").unlink()
    with pytest.raises(HumanDataError, match=r"subject_001/annots\.npy: file not found; subject subject_001 has a "
                                             r"folder but no annots\.npy"):
        AutoDataParserConfig(data=data).setup().collect("train")


def test_an_interrupted_gmnerf_synth_dataset_says_to_finish_it(synthetic, tmp_path):
    data = small_copy(synthetic[0], tmp_path)
    (data / "split.json").unlink()  # gmnerf-synth writes it last; manifest.json first
    (data / "manifest.json").write_text(json.dumps({"generator": "gmnerf-synth", "settings": {}}))
    with pytest.raises(HumanDataError, match="incomplete gmnerf-synth dataset .*rerun the same gmnerf-synth command to "
                                             "finish it"):
        AutoDataParserConfig(data=data).setup().collect("train")


def test_images_smaller_than_the_protocol_resolution_are_upscaled_with_a_warning(synthetic):
    import warnings

    from gmnerf_ns.data.human_record import HumanDataWarning

    root, _ = synthetic  # 48-px images
    with pytest.warns(HumanDataWarning) as caught:
        SyntheticDataParserConfig(data=root, resolution=96).setup().collect("train")
    messages = [str(w.message) for w in caught if "upscaled" in str(w.message)]
    assert messages == [f"{root}: images are stored 48 px high but the protocol's resolution is 96 px, so they are "
                        "upscaled (pass --resolution 48 to use them at their stored size)"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", HumanDataWarning)
        SyntheticDataParserConfig(data=root, resolution=48).setup().collect("train")  # stored size: no warning


def test_protocol_presets_load():
    names = available_protocols()
    for name in ("synthetic", "zju-nhp", "zju-neuralbody", "genebody-test10", "thuman2", "multigarment"):
        assert name in names
        protocol = load_protocol(name)
        assert protocol.description and protocol.resolution > 0
    nhp = load_protocol("zju-nhp")
    assert nhp.train_subjects == ("313", "315", "377", "386", "390", "392", "396")
    assert nhp.frames_for("train", "CoreView_396").begin == 810
    nb = load_protocol("zju-neuralbody")
    assert nb.input_views == (0, 6, 12, 18) and "held-out frames of the same subject" in nb.description
    assert nb.frames_for("test", "CoreView_313").begin == 60
    assert load_protocol("synthetic").resolution == 256


def test_dataparser_configs_register():
    from gmnerf_ns.data.parsers.base import HumanDataParserConfig
    from gmnerf_ns.training import dataparser_configs as registry

    specs = [registry.synthetic_dataparser, registry.zju_mocap_dataparser, registry.genebody_dataparser,
             registry.thuman2_dataparser, registry.multigarment_dataparser]
    protocols = set(available_protocols())
    for spec in specs:
        assert isinstance(spec.config, HumanDataParserConfig)
        assert spec.config.protocol in protocols
        assert type(spec.config.setup()).__name__.endswith("DataParser")
    assert np.all([s.config.data != Path("synthetic") for s in specs[1:]])
