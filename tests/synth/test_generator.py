"""Tests of the body asset and the built-in synthetic dataset generator (gmnerf-synth)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pytest
import torch

from gmnerf_ns.cli.synth import main as cli_main
from gmnerf_ns.geometry.camera_math import project_points
from gmnerf_ns.model.sources import SourceViews, proxy_depth_maps, vertex_visibility
from gmnerf_ns.synth import writer
from gmnerf_ns.synth.body import DEFAULT_ASSET, SMPL_PARENTS
from gmnerf_ns.synth.config import SynthConfig, SynthError
from gmnerf_ns.synth.generator import generate
from gmnerf_ns.synth.subject import subject_rng

TINY = dict(num_subjects=2, num_test_subjects=1, num_cameras=4, num_frames=2, resolution=64, progress=False)


def tiny_config(out: Path, **overrides) -> SynthConfig:
    return SynthConfig(out=out, **{**TINY, **overrides})


def tree_bytes(root: Path) -> Dict[str, bytes]:
    """Every file under ``root`` by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, body) -> Path:
    """A clean tiny dataset: 2 subjects x 4 cameras x 2 frames at 64x64."""
    return generate(tiny_config(tmp_path_factory.mktemp("synth") / "clean"), body=body)


# ------------------------------------------------------------------------------------------------------ body asset
def test_asset_loads_and_identity_pose_is_canonical(body):
    """The shipped asset is small, licensed, SMPL-24-structured, and LBS at the identity pose is the identity."""
    assert DEFAULT_ASSET.stat().st_size < 6e6
    assert body.parents == SMPL_PARENTS and body.weights.shape == (body.num_vertices, 24)
    assert torch.allclose(body.weights.sum(-1), torch.ones(body.num_vertices, dtype=body.dtype))
    assert "CC0" in body.provenance["licence"] and "Apache-2.0" in body.provenance["licence"]
    coeffs = body.shape_samples[3]
    vertices, joints = body.shape(coeffs)
    posed = body.pose(torch.zeros(24, 3), vertices, joints)
    assert torch.allclose(posed.vertices, vertices, atol=1e-9) and torch.allclose(posed.joints, joints, atol=1e-9)
    assert torch.allclose(body.project_shape(vertices), coeffs, atol=1e-3)
    # Rotating the root rotates the whole body rigidly about the pelvis joint.
    turned = body.pose(torch.tensor([[0.0, 0.0, np.pi / 2]] + [[0.0] * 3] * 23), vertices, joints)
    rel = vertices - joints[0]
    expected = torch.stack([-rel[:, 1], rel[:, 0], rel[:, 2]], -1) + joints[0]
    assert torch.allclose(turned.vertices, expected, atol=1e-6)  # the pose is float32


# ------------------------------------------------------------------------------------------------------- generator
def test_layout_matches_zju(tiny):
    """Files, shapes and units of the ZJU-MoCap layout the parser relies on."""
    split = json.loads((tiny / "split.json").read_text())
    assert split["train"] == ["subject_000"] and split["test"] == ["subject_001"]
    assert split["generator"].startswith("gmnerf-synth ") and split["seed"] == 0
    sd = tiny / "subject_000"
    annots = np.load(sd / "annots.npy", allow_pickle=True).item()
    cams = annots["cams"]
    assert len(cams["K"]) == len(cams["R"]) == len(cams["T"]) == len(cams["D"]) == 4
    assert cams["T"][0].shape == (3, 1) and cams["D"][0].shape == (5, 1) and cams["K"][0].shape == (3, 3)
    for R, T in zip(cams["R"], cams["T"]):
        centre = -np.asarray(R).T @ np.asarray(T).reshape(3) / 1000.0  # T is in millimetres
        assert 2.0 < np.linalg.norm(centre[:2]) < 4.5 and 0.3 < centre[2] < 2.5
    assert [e["ims"] for e in annots["ims"]] == [[f"Camera_B{c}/{f:06d}.jpg" for c in range(1, 5)] for f in range(2)]
    image = cv2.imread(str(sd / "Camera_B1" / "000001.jpg"))
    mask = cv2.imread(str(sd / "mask" / "Camera_B1" / "000001.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (64, 64, 3) and mask.shape == (64, 64) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255} and image[mask == 0].mean() < 10  # black background
    params = np.load(sd / "params" / "1.npy", allow_pickle=True).item()
    assert {k: params[k].shape for k in ("poses", "Rh", "Th", "shapes")} == {
        "poses": (1, 72),
        "Rh": (1, 3),
        "Th": (1, 3),
        "shapes": (1, 10),
    }
    faces = np.load(sd / "body_model.npz")["faces"]
    verts = np.load(sd / "vertices" / "1.npy")
    assert faces.dtype == np.int32 and verts.dtype == np.float32 and verts.shape == (faces.max() + 1, 3)
    assert abs(verts[:, 2].min()) < 0.05 and 1.3 < verts[:, 2].max() < 2.1  # metres, Z up, feet on the floor
    ply = (sd / "meshes" / "1.ply").read_bytes()
    assert ply.startswith(b"ply\nformat binary_little_endian")
    info = json.loads((sd / "subject.json").read_text())
    assert "licence" in info and info["seed"] == 0 and info["generator"] == split["generator"]


def test_proxy_projects_inside_mask(tiny):
    """>= 99% of the proxy vertices visible from a camera project inside the 1-px dilated mask."""
    for sd in sorted(tiny.glob("subject_*")):
        annots = np.load(sd / "annots.npy", allow_pickle=True).item()
        faces = torch.as_tensor(np.load(sd / "body_model.npz")["faces"]).long()
        for f, entry in enumerate(annots["ims"]):
            verts = torch.as_tensor(np.load(sd / "vertices" / f"{f}.npy"))
            for c, rel in enumerate(entry["ims"]):
                mask = cv2.imread(str(sd / "mask" / rel.replace(".jpg", ".png")), cv2.IMREAD_UNCHANGED)
                dilated = cv2.dilate(mask, np.ones((3, 3), np.uint8)) > 0
                K = torch.as_tensor(annots["cams"]["K"][c])
                R = torch.as_tensor(annots["cams"]["R"][c])
                T = torch.as_tensor(annots["cams"]["T"][c]).reshape(3) / 1000.0
                view = SourceViews(images=torch.zeros(1, 3, 64, 64), masks=torch.zeros(1, 1, 64, 64),
                                   intrinsics=K[None].float(), rotations=R[None].float(), translations=T[None].float(),
                                   vertices=verts.float(), bbox=torch.zeros(2, 3), faces=faces)
                visible = vertex_visibility(view, proxy_depth_maps(view, resolution=64), depth_tolerance=0.03)[0]
                uv, _ = project_points(verts[visible], K, R, T)
                px = uv.floor().long().numpy()
                assert visible.sum() > 100
                assert dilated[px[:, 1], px[:, 0]].mean() >= 0.99, (sd.name, f, c)


def test_deterministic(tiny, tmp_path):
    """The same seed gives identical bytes, also when subjects are generated by parallel worker processes."""
    again = generate(tiny_config(tmp_path / "again", workers=2))
    assert tree_bytes(again) == tree_bytes(tiny)


def test_subject_independent_of_count(tiny, tmp_path, body):
    """Subject k does not depend on how many subjects/frames are generated."""
    one = generate(tiny_config(tmp_path / "one", num_subjects=1, num_test_subjects=0, num_frames=1), body=body)
    for rel in ("Camera_B2/000000.jpg", "mask/Camera_B3/000000.png", "vertices/0.npy", "body_model.npz"):
        assert (one / "subject_000" / rel).read_bytes() == (tiny / "subject_000" / rel).read_bytes()


def test_resume_after_deleted_files(tiny, tmp_path, body):
    """Deleted outputs, deleted markers and stale temporaries are repaired to the exact clean result."""
    out = tmp_path / "resume"
    shutil.copytree(tiny, out)
    sd = out / "subject_001"
    (sd / "Camera_B2" / "000001.jpg").unlink()  # marker intact: caught by the size/existence check
    (sd / "vertices" / "0.npy").unlink()
    writer.marker_path(sd, "frame_0").unlink()
    (sd / "mask" / "Camera_B1" / ".000000.png.tmp123").write_bytes(b"partial")
    generate(tiny_config(out), body=body)
    assert tree_bytes(out) == tree_bytes(tiny)


def test_resume_after_interrupted_run(tiny, tmp_path, body, monkeypatch):
    """A run killed in the middle of a frame (files written, no marker) resumes to the exact clean result."""
    out = tmp_path / "killed"
    finish = writer.UnitWriter.finish
    calls = {"n": 0}

    def dying_finish(self, name):
        calls["n"] += 1
        if calls["n"] == 3:  # subject marker, frame 0, then die before frame 1's marker
            raise KeyboardInterrupt
        finish(self, name)

    monkeypatch.setattr(writer.UnitWriter, "finish", dying_finish)
    with pytest.raises(KeyboardInterrupt):
        generate(tiny_config(out), body=body)
    monkeypatch.setattr(writer.UnitWriter, "finish", finish)
    assert not (out / "split.json").exists() and not writer.is_complete(out / "subject_000", "frame_1")
    generate(tiny_config(out), body=body)
    assert tree_bytes(out) == tree_bytes(tiny)


def test_out_that_is_a_file_is_one_line(tmp_path, capsys):
    """--out naming a file (or a path below one) is refused with one line, nothing written and no traceback."""
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    for out, expected in ((path, f"--out {path} is a file, not a folder"),
                          (path / "data", f"--out {path / 'data'} cannot be created: {path} is a file")):
        assert cli_main(tiny_config(out)) == 1
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [f"gmnerf-synth: {expected}; choose another --out"], err
    assert path.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_refuses_to_overwrite(tiny, tmp_path, body, capsys):
    """A complete dataset, other settings or a foreign folder are refused without --force."""
    out = tmp_path / "refuse"
    shutil.copytree(tiny, out)
    with pytest.raises(SynthError, match="--force"):
        generate(tiny_config(out), body=body)
    with pytest.raises(SynthError, match="other settings"):
        generate(tiny_config(out, seed=1), body=body)
    assert cli_main(tiny_config(out)) == 1 and "--force" in capsys.readouterr().err
    # scripts (the demo) may ask to succeed on a complete dataset, but never on one with other settings
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert cli_main(tiny_config(out, skip_if_complete=True)) == 0 and "nothing to do" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert cli_main(tiny_config(out, seed=1, skip_if_complete=True)) == 1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SynthError, match="not a gmnerf-synth dataset"):
        generate(tiny_config(foreign), body=body)
    # --force regenerates, here with other settings, and leaves no stale subject behind.
    generate(tiny_config(out, num_subjects=1, num_test_subjects=0, num_frames=1, force=True), body=body)
    assert sorted(p.name for p in out.glob("subject_*")) == ["subject_000"]
    assert json.loads((out / "manifest.json").read_text())["settings"]["num_subjects"] == 1


def test_frame_markers_list_every_file(tiny):
    """Each frame marker covers its images, masks, params, vertices and mesh."""
    files = json.loads(writer.marker_path(tiny / "subject_000", "frame_1").read_text())["files"]
    assert len(files) == 4 * 2 + 3
    assert {"params/1.npy", "vertices/1.npy", "meshes/1.ply", "Camera_B4/000001.jpg"} <= set(files)


def test_subject_streams_are_stable():
    """The per-subject random streams only depend on (seed, subject, stream)."""
    a = subject_rng(5, 3, 1).random(4)
    b = subject_rng(5, 3, 1).random(4)
    assert np.array_equal(a, b) and not np.array_equal(a, subject_rng(5, 4, 1).random(4))
