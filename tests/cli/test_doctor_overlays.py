"""gmnerf-doctor's picture of the fit (overlay PNGs, proxy-vs-mask IoU per camera) and its report of a wrong unit."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.fixtures.datasets_zju import make_synthetic_dataset, make_zju_subject

RES = 48


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("doctor_overlays")
    make_synthetic_dataset(root, subjects=(0, 1), test=(1,), num_frames=1, num_vertices=600)
    return root


def doctor(data: Path, overlay_dir: Path, **kwargs):
    """(exit status, rows by item, all details and printed text as one whitespace-normalised string)."""
    from rich.console import Console

    from gmnerf_ns.cli.doctor import run_checks
    from gmnerf_ns.cli.doctor_options import DoctorConfig
    from gmnerf_ns.cli.doctor_table import render

    config = DoctorConfig(data=data, resolution=RES, num_input_views=3, sample_views=4, sample_frames=4,
                          overlay_dir=overlay_dir, **kwargs)
    rows = run_checks(config)
    console = Console(file=io.StringIO(), width=160)
    render(rows, console)
    text = " ".join([r.detail for r in rows] + console.file.getvalue().split())
    return int(any(r.status == "error" for r in rows)), {r.item: r for r in rows}, text


def test_overlays_show_the_proxy_and_the_fixture_fits_are_not_flagged(data, tmp_path):
    from gmnerf_ns.data.parsers.synthetic import SyntheticDataParserConfig
    from gmnerf_ns.data.view_loader import load_view

    code, rows, text = doctor(data, tmp_path / "overlays")
    assert code == 0, text
    assert rows["proxy vs masks"].status == "ok", text
    assert rows["overlays"].status == "info" and f"overlays: 16 pictures in {tmp_path / 'overlays'}/" in text
    subject = SyntheticDataParserConfig(data=data, resolution=RES).setup().collect("train").subjects[0]
    for view in subject.frames[0].views:  # one picture per camera of the first frame
        path = tmp_path / "overlays" / subject.name / f"frame0_{view.camera_name}.png"
        picture = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        image, mask = load_view(view)
        assert picture.shape == image.shape, path

        def green(rgb):
            return rgb[..., 1].astype(int) > rgb[..., 0].astype(int) + 20

        assert green(image)[mask].mean() < 0.05 and green(picture)[mask].mean() > 0.6, path  # the proxy, in green


def test_a_camera_with_corrupted_extrinsics_is_flagged_by_name(data, tmp_path):
    data = Path(shutil.copytree(data, tmp_path / "data"))
    annots_path = data / "subject_000" / "annots.npy"
    annots = np.load(annots_path, allow_pickle=True).item()
    R, T = np.asarray(annots["cams"]["R"][3]), np.asarray(annots["cams"]["T"][3]).reshape(3)
    centre = -R.T @ T
    angle = np.radians(25.0)  # the camera turned 25 degrees about its own vertical axis: same place, looks aside
    turn = np.array([[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0], [-np.sin(angle), 0.0, np.cos(angle)]])
    annots["cams"]["R"][3] = turn @ R
    annots["cams"]["T"][3] = (-(turn @ R) @ centre).reshape(3, 1)
    np.save(annots_path, annots)
    code, rows, text = doctor(data, tmp_path / "overlays")
    flagged = rows["proxy vs masks"]
    assert flagged.status == "warn" and "1 of 16 cameras" in flagged.detail, text
    assert "subject_000 camera Camera_B4 (IoU 0." in flagged.detail
    assert (tmp_path / "overlays" / "subject_000" / "frame0_Camera_B4.png").is_file()


def test_earlier_overlays_are_kept_without_force(data, tmp_path):
    folder = tmp_path / "overlays"
    doctor(data, folder, overlay_subjects=1)
    picture = folder / "subject_000" / "frame0_Camera_B1.png"
    picture.write_bytes(b"an earlier picture")
    code, rows, text = doctor(data, folder, overlay_subjects=1)
    assert code == 0 and rows["overlays"].status == "warn" and "pass --force" in rows["overlays"].detail
    assert picture.read_bytes() == b"an earlier picture"
    code, rows, text = doctor(data, folder, overlay_subjects=1, force=True)
    assert rows["overlays"].status == "info" and cv2.imread(str(picture)) is not None


def test_vertices_without_faces_are_splatted_and_a_capture_in_millimetres_is_one_error(tmp_path):
    subject = make_zju_subject(tmp_path / "zju", 313, num_frames=1, size=RES, num_vertices=800)
    code, rows, text = doctor(subject.folder, tmp_path / "overlays", dataparser="zju-mocap", protocol="zju-neuralbody",
                              overlay_subjects=1)
    assert rows["train split"].status == "ok" and rows["proxy vs masks"].status == "ok", text
    for path in subject.folder.glob("new_vertices/*.npy"):
        np.save(path, np.load(path) * 1000.0)
    code, rows, text = doctor(subject.folder, tmp_path / "overlays2", dataparser="zju-mocap",
                              protocol="zju-neuralbody")
    assert code == 1 and rows["train split"].status == "error" and "proxy vs masks" not in rows
    assert "subject CoreView_313: the body proxy" in text and "the data look like millimetres" in text
