"""A truncated JPEG is an error naming the file: ``cv2.imread`` decodes one without an error,
filling the missing part with grey, so ``gmnerf-doctor`` said "ok" and training learnt from it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import HumanDataWarning
from gmnerf_ns.data.parsers.synthetic import SyntheticDataParserConfig
from gmnerf_ns.data.view_loader import jpeg_problem, load_view
from tests.fixtures.doctor import doctor
from tests.fixtures.training_runs import checkpoints, copy_data, make_data, ns_train, tiny


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("images") / "data")


def truncate(path: Path) -> Path:
    """Keeps the first half of the file: what an interrupted download or copy leaves."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def jpeg_bytes(seed: int = 0) -> bytes:
    image = cv2.GaussianBlur(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8), (5, 5), 2)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


def test_load_view_of_a_truncated_jpeg_is_an_error_naming_it(data, tmp_path):
    data = copy_data(data, tmp_path)
    view = SyntheticDataParserConfig(data=data, resolution=48).setup().collect("train").subjects[0].frames[0].views[1]
    load_view(view)
    truncate(view.image_path)
    assert cv2.imread(str(view.image_path)) is not None  # what the old loader accepted
    with pytest.raises(HumanDataError) as err:
        load_view(view)
    assert str(err.value).startswith(f"{view.image_path}: image file is corrupt (JPEG truncated")
    assert "\n" not in str(err.value)


def test_jpeg_end_marker_is_looked_for_after_the_scan():
    complete = jpeg_bytes()
    assert jpeg_problem(complete) is None
    assert jpeg_problem(complete + b"\x00" * 16 + b"appended data") is None  # bytes after the end marker are fine
    assert jpeg_problem(complete[: len(complete) // 2]) == "truncated: no end-of-image marker"
    assert jpeg_problem(complete[:12]) == "truncated inside the header"
    # An EXIF thumbnail is a whole JPEG inside an APP1 segment, with its own end marker: a file cut after it is still
    # truncated.
    thumbnail = b"Exif\x00\x00" + jpeg_bytes(1)
    app1 = b"\xff\xe1" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail
    with_exif = complete[:2] + app1 + complete[2:]
    assert cv2.imdecode(np.frombuffer(with_exif, np.uint8), cv2.IMREAD_COLOR).shape == (64, 64, 3)
    assert jpeg_problem(with_exif) is None
    assert jpeg_problem(with_exif[: len(app1) + len(complete) // 2]) == "truncated: no end-of-image marker"


def test_doctor_reports_a_truncated_jpeg_by_name_and_fails(data, tmp_path):
    data = copy_data(data, tmp_path)
    path = truncate(data / "subject_001" / "Camera_B4" / "000001.jpg")
    code, rows, text = doctor(data)
    assert code == 1 and ("images and masks", "error") in rows
    assert f"{path}: image file is corrupt (JPEG truncated: no end-of-image marker" in text, text


def test_training_skips_a_truncated_view_with_a_warning_naming_it(data, tmp_path):
    data = copy_data(data, tmp_path)
    paths = [truncate(path) for path in sorted(data.glob("subject_000/Camera_B*/000001.jpg"))]
    config = tiny(data, tmp_path / "out", steps=3, save_every=3)
    with pytest.warns(HumanDataWarning) as caught:
        ns_train(config)
    skipped = " ".join(str(w.message) for w in caught if "skipping a training sample" in str(w.message))
    assert any(f"{path}: image file is corrupt (JPEG truncated" in skipped for path in paths), skipped
    assert checkpoints(config.get_base_dir())[-1].name == "step-000000002.ckpt"
