"""THuman2.0 / Multi-garment: render procedural textured scans with FAKE body models, then parse the result."""

from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest
import tyro

from gmnerf_ns.cli.scan_render import (
    WORLD_FROM_SCAN,
    Commands,
    RenderMultiGarment,
    RenderTHuman2,
    RingConfig,
    load_textured_obj,
)
from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import load_vertices
from gmnerf_ns.data.parsers import smpl_proxy
from gmnerf_ns.data.parsers.multigarment import MultiGarmentDataParserConfig
from gmnerf_ns.data.parsers.thuman2 import THuman2DataParserConfig
from gmnerf_ns.data.view_loader import load_view
from gmnerf_ns.geometry._reference import reference_rasterize
from tests.fixtures.datasets_scans import make_fake_smpl, make_fake_smplx, make_multigarment, make_thuman2
from tests.fixtures.person import project, write_obj

RING = RingConfig(num_views=8, resolution=32, supersample=1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return root, make_fake_smpl(root), make_fake_smplx(root)


@pytest.fixture(scope="module")
def thuman(tmp_path_factory, models):
    root = tmp_path_factory.mktemp("thuman")
    scans, params = make_thuman2(root)
    command = RenderTHuman2(scans=scans, smplx_params=params, output=root / "render", body_model_dir=models[0],
                            num_test=1, ring=RING)
    split = command.main(rasterizer=reference_rasterize)
    return root, command, split


def test_thuman2_render_layout_and_split(thuman):
    root, command, split = thuman
    assert split == {"train": ["0000", "0001"], "test": ["0002"]}
    subject = command.output / "0000"
    for rel in ("annots.npy", "Camera_B1/000000.jpg", "mask/Camera_B8/000000.png", "vertices/0.npy", "meshes/0.ply",
                "body_model.npz", "subject.json"):
        assert (subject / rel).is_file(), rel
    annots = np.load(subject / "annots.npy", allow_pickle=True).item()
    assert len(annots["cams"]["K"]) == 8 and np.asarray(annots["cams"]["T"][0]).shape == (3, 1)
    R, T = np.asarray(annots["cams"]["R"][0]), np.asarray(annots["cams"]["T"][0]) / 1000.0  # millimetres
    mesh = load_textured_obj(command.scans / "0000" / "0000.obj")
    world = mesh.vertices @ WORLD_FROM_SCAN.T
    centre = (world.min(0) + world.max(0)) / 2
    assert np.linalg.norm(-R.T @ T[:, 0] - centre) == pytest.approx(3.0, rel=1e-6)
    assert json.loads((subject / "subject.json").read_text())["body_model"] == "smplx"


def test_thuman2_parser_reads_render(thuman, models):
    root, command, _ = thuman
    parser = THuman2DataParserConfig(data=command.output, resolution=32).setup()
    train = parser.collect("train")
    subject = train.subjects[0]
    assert [s.name for s in train.subjects] == ["0000", "0001"] and len(subject.frames) == 1
    assert subject.gt_mesh_dir is not None and subject.faces.shape == (20908, 3)
    # Proxy = SMPLX(zero pose).vertices * scale + translation in scan space, turned z-up.
    expected = (models[2] * 1.1 + [0.0, 0.2, 0.0]) @ WORLD_FROM_SCAN.T
    np.testing.assert_allclose(load_vertices(subject.frames[0]), expected, atol=1e-4)
    image, mask = load_view(subject.frames[0].views[0])
    red = (image[..., 0] > 150) & (image[..., 2] < 100)
    blue = (image[..., 2] > 150) & (image[..., 0] < 100)
    assert red.any() and blue.any() and np.nonzero(red)[0].mean() < np.nonzero(blue)[0].mean()  # texture upright
    # Round trip: scan vertices projected with the stored K/R/T land inside the rendered mask.
    mesh = load_textured_obj(command.scans / "0000" / "0000.obj")
    view = subject.frames[0].views[3]
    uv = np.round(project(mesh.vertices @ WORLD_FROM_SCAN.T, view.K, view.R, view.T)).astype(int)
    _, mask3 = load_view(view)
    near_mask = cv2.dilate(mask3.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # poles/silhouette: sub-pixel
    assert near_mask[uv[:, 1].clip(0, 31), uv[:, 0].clip(0, 31)].all()
    assert mask3[uv[:, 1].clip(0, 31), uv[:, 0].clip(0, 31)].mean() > 0.5


def test_render_with_project_rasteriser(tmp_path, models):
    rasterize = pytest.importorskip("gmnerf_ns.geometry.rasterize", reason="the project's rasteriser is not there yet")
    scans, params = make_thuman2(tmp_path, ids=("0007",))
    masks = {}
    for name, raster, supersample in (("ours", rasterize.rasterize, 1), ("ref", reference_rasterize, 1),
                                      ("aa", rasterize.rasterize, 2)):
        command = RenderTHuman2(scans=scans, smplx_params=params, output=tmp_path / name, body_model_dir=models[0],
                                ring=RingConfig(num_views=4, resolution=32, supersample=supersample))
        command.main(rasterizer=raster)
        masks[name] = cv2.imread(str(command.output / "0007" / "mask" / "Camera_B2" / "000000.png"), 0) > 0
    a, b = masks["ours"], masks["ref"]
    assert (a & b).sum() / (a | b).sum() > 0.95  # same pixel-centre convention as the reference
    assert (masks["aa"] & a).sum() / (masks["aa"] | a).sum() > 0.8


def test_multigarment_render_and_parse(tmp_path, models):
    base = make_multigarment(tmp_path)
    command = RenderMultiGarment(scans=base, output=tmp_path / "mgn", body_model_dir=models[0], num_test=1, ring=RING)
    split = command.main(rasterizer=reference_rasterize)
    assert split == {"train": ["125611508622317"], "test": ["125611520103063"]}
    record = MultiGarmentDataParserConfig(data=command.output, resolution=32).setup().collect("test").subjects[0]
    expected = (models[1] + [0.0, 0.1, 0.0]) @ WORLD_FROM_SCAN.T  # SMPL(zero pose) + trans, turned z-up
    np.testing.assert_allclose(load_vertices(record.frames[0]), expected, atol=1e-4)
    assert record.faces.shape == (13776, 3) and len(record.camera_names) == 8


def test_missing_body_model_names_expected_file(tmp_path):
    with pytest.raises(HumanDataError, match=r"expected .*/smplx/SMPLX_MALE\.npz .*smpl-x\.is\.tue\.mpg\.de"):
        smpl_proxy.model_file(tmp_path, "smplx", "male")
    with pytest.raises(HumanDataError, match=r"<body-model-dir>/smpl/SMPL_NEUTRAL\.pkl.*--body-model-dir"):
        smpl_proxy.model_file(None, "smpl", "neutral")
    scans, params = make_thuman2(tmp_path, ids=("0001",))
    with pytest.raises(HumanDataError, match=r"SMPLX_MALE\.npz"):
        RenderTHuman2(scans=scans, smplx_params=params, output=tmp_path / "o", body_model_dir=tmp_path).main(
            rasterizer=reference_rasterize)


def test_bad_fits_name_the_file(tmp_path, models):
    base = make_multigarment(tmp_path, ids=("1",))
    path = base / "1" / "registration.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"pose": np.full(72, np.nan), "betas": np.zeros(10), "trans": np.zeros(3)}, handle, protocol=2)
    with pytest.raises(HumanDataError, match=r"registration\.pkl 'pose': contains NaN or inf"):
        smpl_proxy.mgn_smpl(path, models[0])
    with open(path, "wb") as handle:
        pickle.dump({"pose": np.zeros(72), "trans": np.zeros(3)}, handle, protocol=2)
    with pytest.raises(HumanDataError, match=r"registration\.pkl: registration has no 'betas' entry"):
        smpl_proxy.mgn_smpl(path, models[0])
    scans, params = make_thuman2(tmp_path, ids=("0003",))
    param_path = params / "0003" / "smplx_param.pkl"
    fit = pickle.loads(param_path.read_bytes())
    fit["left_hand_pose"] = np.zeros((1, 45))
    param_path.write_bytes(pickle.dumps(fit))
    with pytest.raises(HumanDataError, match=r"smplx_param\.pkl 'left_hand_pose': shape \(1, 45\), expected 1x12"):
        smpl_proxy.thuman2_smplx(param_path, models[0])


def test_scan_without_uvs(tmp_path):
    write_obj(tmp_path / "scan.obj", np.eye(3), np.array([[0, 1, 2]]))
    with pytest.raises(HumanDataError, match=r"scan\.obj: scan needs texture coordinates"):
        load_textured_obj(tmp_path / "scan.obj", texture=tmp_path / "t.jpg")


def test_cli_parses(tmp_path):
    command = tyro.cli(Commands, args=["multigarment", "--scans", str(tmp_path), "--ring.num-views", "12"])
    assert isinstance(command, RenderMultiGarment) and command.ring.num_views == 12
    with pytest.raises(HumanDataError, match="Multi-garment folder not found"):
        RenderMultiGarment(scans=tmp_path / "nope").main(rasterizer=reference_rasterize)


def test_scan_material_and_texture_outside_the_scan_folder_are_refused(tmp_path):
    scans, _ = make_thuman2(tmp_path / "in", ids=("0000",))
    folder = scans / "0000"
    secret = tmp_path / "outside" / "photo.jpeg"
    secret.parent.mkdir()
    secret.write_bytes((folder / "material0.jpeg").read_bytes())
    (folder / "material0.mtl").write_text("newmtl material0\nmap_Kd ../../../outside/photo.jpeg\n")
    with pytest.raises(HumanDataError, match=r"material0\.mtl: texture .*/outside/photo\.jpeg is outside the dataset "
                                             r"folder .*0000 \('\.\.' climbs out of it\)"):
        load_textured_obj(folder / "0000.obj")
    (folder / "material0.mtl").write_text(f"newmtl material0\nmap_Kd {secret}\n")
    with pytest.raises(HumanDataError, match=r"material0\.mtl: texture .* \(an absolute path elsewhere\)"):
        load_textured_obj(folder / "0000.obj")
    (tmp_path / "outside" / "evil.mtl").write_text("newmtl material0\nmap_Kd photo.jpeg\n")
    obj = (folder / "0000.obj").read_text().replace("mtllib material0.mtl", f"mtllib {tmp_path}/outside/evil.mtl")
    (folder / "0000.obj").write_text(obj)
    with pytest.raises(HumanDataError, match=r"0000\.obj: material file .*evil\.mtl is outside the dataset folder"):
        load_textured_obj(folder / "0000.obj")
