"""The worked example of docs/new_dataset.md (tests/fixtures/new_dataset_example.py) parses a tiny turntable capture
through the shared base class into records and nerfstudio's DataparserOutputs, and the document shows that code
verbatim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import HumanDataWarning
from tests.fixtures.new_dataset_example import TurntableDataParser, TurntableDataParserConfig
from tests.fixtures.person import ellipsoid_points, person_image, person_mask, ring_cameras, write_gray, write_rgb

ROOT = Path(__file__).resolve().parents[3]
SIZE = (40, 32)


def make_turntable(root: Path, name: str = "alice", num_frames: int = 4, num_vertices: int = 300) -> Path:
    """A subject of 6 cameras: frame 1 lacks a mask, frame 2 its proxy; faces index every vertex."""
    folder = root / name
    cameras = ring_cameras(6, SIZE, focal=40.0)
    shift = np.diag([0.0, 0.0, 0.0])
    shift[:2, 2] = 0.5  # OpenCV calibration -> half-pixel centres
    names = [f"cam{i}" for i in range(len(cameras))]
    folder.mkdir(parents=True)
    (folder / "cameras.json").write_text(json.dumps(
        {n: {"K": (K + shift).tolist(), "R": R.tolist(), "T": T.tolist()} for n, (K, R, T) in zip(names, cameras)}))
    for f in range(num_frames):
        vertices = ellipsoid_points(num_vertices, seed=f)
        if f != 2:
            (folder / "proxy").mkdir(exist_ok=True)
            np.save(folder / "proxy" / f"{f:06d}.npy", vertices)
        for c, (n, (K, R, T)) in enumerate(zip(names, cameras)):
            mask = person_mask(vertices, K, R, T, SIZE)
            write_rgb(folder / "images" / n / f"{f:06d}.png", person_image(mask, seed=c))
            if (f, c) != (1, 3):
                write_gray(folder / "masks" / n / f"{f:06d}.png", mask * np.uint8(255))
    faces = np.stack([np.arange(num_vertices - 2), np.arange(1, num_vertices - 1), np.arange(2, num_vertices)], 1)
    np.save(folder / "faces.npy", faces)
    return folder


def test_the_example_parser_reads_a_subject_into_records_and_dataparser_outputs(tmp_path):
    folder = make_turntable(tmp_path)
    assert TurntableDataParserConfig.detect(folder) == "alice/ has cameras.json and proxy/"
    assert TurntableDataParserConfig.detect(tmp_path) is None  # the root is no subject; its sub-folders are
    parser = TurntableDataParserConfig(data=folder, resolution=32).setup()
    assert isinstance(parser, TurntableDataParser)
    with pytest.warns(HumanDataWarning) as caught:
        collection = parser.collect("train")
    assert [str(w.message) for w in caught] == [
        f"{folder}: skipped 1 frame(s) with missing images or masks, e.g. frame 1 ({folder}/masks/cam3/000001.png)",
        f"{folder / 'proxy'}: 1 frame(s) have no body fit and are skipped, e.g. frame 2 (000002.npy missing)",
    ]
    (subject,) = collection.subjects
    assert subject.name == "alice" and subject.camera_names == tuple(f"cam{i}" for i in range(6))
    assert [f.frame_id for f in subject.frames] == [0, 3]
    assert subject.faces.shape == (298, 3) and subject.faces.dtype == np.int64
    view = subject.frames[1].views[4]
    assert view.image_path == folder / "images" / "cam4" / "000003.png"
    assert view.mask_paths == (folder / "masks" / "cam4" / "000003.png",)
    assert view.out_size == (40, 32) and view.crop == (0, 0, 40, 32)
    assert subject.frames[0].vertices_path == folder / "proxy" / "000000.npy"

    with pytest.warns(HumanDataWarning):
        outputs = parser._generate_dataparser_outputs("train")
    assert len(outputs.image_filenames) == 12 and outputs.cameras.shape == (12,)
    assert outputs.metadata["subject_names"] == ["alice"]
    assert outputs.cameras.metadata["frame_id"][:, 0].tolist() == [0] * 6 + [3] * 6
    assert outputs.cameras.metadata["camera_index"][:, 0].tolist() == list(range(6)) * 2
    assert outputs.cameras.width[:, 0].tolist() == [40] * 12 and outputs.cameras.height[:, 0].tolist() == [32] * 12
    with pytest.warns(HumanDataWarning):
        test_views = parser._generate_dataparser_outputs("test")
    assert len(test_views.image_filenames) == 2 * 2  # 4 of the 6 cameras are sources


def test_the_base_class_fails_when_no_frame_is_left_and_checks_the_faces(tmp_path):
    folder = make_turntable(tmp_path, num_frames=3)
    (folder / "proxy" / "000000.npy").unlink()
    with pytest.warns(HumanDataWarning), pytest.raises(HumanDataError) as err:
        TurntableDataParserConfig(data=folder, resolution=32).setup().collect("train")
    assert str(err.value) == f"{folder}: no sampled frame has its images, masks and proxy"

    folder = make_turntable(tmp_path / "b", num_vertices=200)
    np.save(folder / "faces.npy", np.array([[0, 1, 200]]))
    with pytest.warns(HumanDataWarning), pytest.raises(HumanDataError) as err:
        TurntableDataParserConfig(data=folder, resolution=32).setup().collect("train")
    assert str(err.value) == f"{folder}/proxy/000000.npy: 200 vertices, but the faces index 201"


def test_the_document_shows_the_tested_example_verbatim():
    code = (ROOT / "tests" / "fixtures" / "new_dataset_example.py").read_text()
    doc = (ROOT / "docs" / "new_dataset.md").read_text()
    assert f"```python\n{code}```" in doc
    assert "new_dataset.md" in (ROOT / "docs" / "datasets.md").read_text()
