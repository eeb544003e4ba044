"""ns-train's pre-flight checks: a camera turned away from the person and images or masks of another size than their
intrinsics are named in one warning line each when the datamanager is set up, and gmnerf-doctor says the same."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from tests.fixtures.datasets_zju import make_synthetic_dataset, synthetic_datamanager

CAMERAS = [f"Camera_B{k}" for k in range(1, 9)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("preflight")
    make_synthetic_dataset(root, subjects=(0, 1, 2), test=(2,), num_frames=1, num_vertices=600)
    return root


def turn_camera(data: Path, subject: str, index: int, degrees: float) -> None:
    """Turns camera ``index`` of ``subject`` about its own vertical axis: same place, looks elsewhere."""
    annots_path = data / subject / "annots.npy"
    annots = np.load(annots_path, allow_pickle=True).item()
    R, T = np.asarray(annots["cams"]["R"][index]), np.asarray(annots["cams"]["T"][index]).reshape(3)
    centre = -R.T @ T
    a = np.radians(degrees)
    turn = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    annots["cams"]["R"][index] = turn @ R
    annots["cams"]["T"][index] = (-(turn @ R) @ centre).reshape(3, 1)
    np.save(annots_path, annots)


def resize_files(paths: List[Path], scale: float) -> None:
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        size = (int(image.shape[1] * scale), int(image.shape[0] * scale))
        cv2.imwrite(str(path), cv2.resize(image, size, interpolation=cv2.INTER_NEAREST))


def bad_data(data: Path, tmp_path: Path, scale: float) -> Path:
    """subject_000's Camera_B4 turned 180 degrees; subject_001's images and masks resized by ``scale`` after
    calibration (its intrinsics still describe 48 x 48 images)."""
    bad = Path(shutil.copytree(data, tmp_path / "data"))
    turn_camera(bad, "subject_000", 3, 180.0)
    subject = bad / "subject_001"
    resize_files(sorted(subject.glob("Camera_B*/*.jpg")) + sorted(subject.glob("mask/*/*.png")), scale)
    return bad


def setup_warnings(data: Path, monkeypatch, **kwargs) -> List[str]:
    """The pre-flight lines printed while the datamanager is set up as ns-train sets it up (test_mode 'val')."""
    from nerfstudio.utils.rich_utils import CONSOLE

    printed: List[str] = []
    monkeypatch.setattr(CONSOLE, "print", lambda *args, **kw: printed.append(str(args[0]) if args else ""))
    datamanager = synthetic_datamanager(data, num_workers=0, **kwargs)
    datamanager.close()
    prefix = "[bold yellow]WARNING: pre-flight: "
    return [re.sub(r"\\(\[)", r"\1", line[len(prefix):]) for line in printed if line.startswith(prefix)]


def test_a_good_dataset_gets_no_warning(data, monkeypatch):
    assert setup_warnings(data, monkeypatch) == []


@pytest.mark.parametrize("scale, size", [(2.0, "96x96"), (0.5, "24x24")])
def test_a_turned_camera_and_resized_images_are_named(data, tmp_path, monkeypatch, scale, size):
    lines = setup_warnings(bad_data(data, tmp_path, scale), monkeypatch)
    assert len(lines) == 2, lines
    assert lines[0] == ("subject_000 camera Camera_B4: the proxy is behind the camera (Camera_B4: 100% of its "
                        "vertices); camera turned away from the person, or R, T camera-to-world?")
    assert lines[1].startswith("subject_001 all 8 cameras: the image is not the size its intrinsics describe "
                               f"(Camera_B1: {size} image, principal point (24, 24): calibrated for about 48x48?)")


def test_the_checks_name_exactly_the_bad_cameras(data, tmp_path):
    from gmnerf_ns.data.parsers.synthetic import SyntheticDataParserConfig
    from gmnerf_ns.data.preflight import check_collections

    parser = SyntheticDataParserConfig(data=bad_data(data, tmp_path, 0.5), resolution=48, num_input_views=3).setup()
    problems, cameras = check_collections([parser.collect("train"), parser.collect("test")])
    assert cameras == {"subject_000": 8, "subject_001": 8, "subject_002": 8}
    # the half-size images also put the proxy out of view: reported as the size problem it follows from
    assert sorted((p.subject, p.camera, p.kind) for p in problems) == sorted(
        [("subject_000", "Camera_B4", "behind")] + [("subject_001", c, "size") for c in CAMERAS])


def test_masks_of_another_size_and_a_camera_looking_aside(data, tmp_path, monkeypatch):
    bad = Path(shutil.copytree(data, tmp_path / "data"))
    resize_files([bad / "subject_002" / "mask" / "Camera_B2" / "000000.png"], 40 / 48)
    turn_camera(bad, "subject_001", 6, 60.0)  # in front, but the person is out of view
    lines = setup_warnings(bad, monkeypatch)
    assert len(lines) == 2, lines
    assert lines[0].startswith("subject_001 camera Camera_B7: the proxy projects mostly outside the image (Camera_B7: "
                               "0% inside its 48x48 view)")
    assert lines[1] == ("subject_002 camera Camera_B2: mask and image sizes differ (Camera_B2: 000000.png 40x40, "
                        "image 48x48); regenerate the masks at the image size")


def test_only_ns_train_runs_the_checks(data, tmp_path, monkeypatch):
    bad = bad_data(data, tmp_path, 2.0)
    assert setup_warnings(bad, monkeypatch, world_size=2, local_rank=1) == []  # one rank reports for all
    from nerfstudio.utils.rich_utils import CONSOLE

    from gmnerf_ns.data.datamanager import GMNeRFDataManagerConfig
    from gmnerf_ns.data.parsers.synthetic import SyntheticDataParserConfig

    printed: List[str] = []
    monkeypatch.setattr(CONSOLE, "print", lambda *args, **kw: printed.append(str(args[0])))
    config = GMNeRFDataManagerConfig(dataparser=SyntheticDataParserConfig(data=bad, resolution=48, num_input_views=3),
                                     patch_size=32, num_workers=0)
    config.setup(device="cpu", test_mode="test").close()  # ns-eval, ns-render
    assert not [line for line in printed if "pre-flight" in line]


def test_the_doctor_reports_the_same_lines(data, tmp_path, monkeypatch):
    from rich.console import Console

    from gmnerf_ns.cli.doctor import run_checks
    from gmnerf_ns.cli.doctor_options import DoctorConfig
    from gmnerf_ns.cli.doctor_table import render

    bad = bad_data(data, tmp_path, 2.0)
    lines = setup_warnings(bad, monkeypatch)
    monkeypatch.undo()
    rows = run_checks(DoctorConfig(data=bad, resolution=48, num_input_views=3, sample_views=4, sample_frames=4,
                                   overlay_subjects=0))
    render(rows, Console(file=io.StringIO(), width=160))
    assert [r.detail for r in rows if r.item == "camera geometry" and r.status == "warn"] == lines
    good = run_checks(DoctorConfig(data=data, resolution=48, num_input_views=3, sample_views=4, sample_frames=4,
                                   overlay_subjects=0))
    assert [(r.status, r.detail.split(",")[0]) for r in good if r.item == "camera geometry"] == [
        ("ok", "24 cameras of 3 subject(s)")]
