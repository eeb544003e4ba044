"""gmnerf-doctor when the dataset cannot be detected: one error row naming the missing file, no traceback."""

from __future__ import annotations

import io
import shutil

from rich.console import Console

from gmnerf_ns.cli.doctor import run_checks
from gmnerf_ns.cli.doctor_options import DoctorConfig
from gmnerf_ns.cli.doctor_table import render
from tests.fixtures.datasets_captures import make_genebody, make_mvhumannet


def doctor(data):
    """(exit status, the rows with status error, the printed text)."""
    rows = run_checks(DoctorConfig(data=data, resolution=36, sample_views=0, sample_frames=0, overlay_subjects=0))
    console = Console(file=io.StringIO(), width=160)
    render(rows, console)
    errors = [r for r in rows if r.status == "error"]
    return int(bool(errors)), errors, console.file.getvalue()


def test_outfit_without_camera_scale(tmp_path):
    outfit = make_mvhumannet(tmp_path, fits=(0,))
    (outfit.folder / "camera_scale.pkl").unlink()
    code, errors, text = doctor(outfit.folder)
    assert code == 1 and [(r.area, r.item) for r in errors] == [("dataset", "dataparser")]
    assert errors[0].detail == (f"--data {outfit.folder}: {outfit.folder / 'camera_scale.pkl'}: file not found; 100001/ "
                                "has camera_extrinsics.json like an MVHumanNet outfit, which also needs "
                                "camera_scale.pkl (an incomplete download or copy?)")
    assert f"error dataparser: {errors[0].detail}" in text and "Traceback" not in text


def test_genebody_subject_without_smpl_and_an_unknown_folder(tmp_path):
    make_genebody(tmp_path / "genebody", {"amanda": [1, 13, 25, 37]})
    amanda = tmp_path / "genebody" / "amanda"
    shutil.rmtree(amanda / "smpl")
    code, errors, _ = doctor(amanda)
    assert code == 1 and len(errors) == 1
    assert errors[0].detail.startswith(f"--data {amanda}: {amanda / 'smpl/'}: folder not found; amanda/ has annots.npy")
    (tmp_path / "photos").mkdir()
    code, errors, _ = doctor(tmp_path / "photos")
    assert code == 1 and len(errors) == 1
    assert "cannot tell which dataset" in errors[0].detail and "\n" not in errors[0].detail  # one line
