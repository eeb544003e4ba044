"""The easymocap dataparser (a user's own capture in EasyMocap's layout) on tiny fixtures written from the format."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.human_record import HumanDataWarning, load_vertices
from gmnerf_ns.data.parsers.auto import AutoDataParserConfig
from gmnerf_ns.data.parsers.easymocap import EasyMocapDataParser, EasyMocapDataParserConfig
from gmnerf_ns.data.parsers.easymocap_cameras import read_cameras
from gmnerf_ns.data.parsers.easymocap_params import easymocap_params
from tests.fixtures.body_model import install_fake_smplx
from tests.fixtures.datasets_captures import easymocap_json, make_easymocap_capture, write_opencv_yaml
from tests.fixtures.person import fraction_in_masks

RES = 48  # fixtures store 48 x 40 images: the output keeps their 40 px height (never upsampled)


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # posed proxies are cached there


def parse(data, split="train", **kwargs):
    kwargs.setdefault("resolution", RES)
    return EasyMocapDataParserConfig(data=Path(data), **kwargs).setup().collect(split)


@pytest.mark.parametrize("writer", ["easymocap", "cv2"])
def test_cameras_round_trip(tmp_path, writer):
    capture = make_easymocap_capture(tmp_path, writer=writer)
    cameras = read_cameras(capture.folder / "intri.yml", capture.folder / "extri.yml")
    assert [c.name for c in cameras] == capture.names
    for cam, (K, R, T) in zip(cameras, capture.cameras):
        np.testing.assert_allclose(cam.K, K, atol=1e-5)
        np.testing.assert_allclose(cam.R, R, atol=1e-5)  # from the Rodrigues R_<cam>
        np.testing.assert_allclose(cam.T, T, atol=1e-5)
        assert cam.size == (48, 40) and cam.dist is None  # zero distortion: nothing to undo
    rot_only = make_easymocap_capture(tmp_path / "rot", rot_only=True, writer=writer)
    for cam, (_, R, _) in zip(read_cameras(rot_only.folder / "intri.yml", rot_only.folder / "extri.yml"),
                              rot_only.cameras):
        np.testing.assert_allclose(cam.R, R, atol=1e-5)  # from the 3x3 Rot_<cam>


def test_vertices_capture_parses_and_projects_into_masks(tmp_path):
    capture = make_easymocap_capture(tmp_path)
    collection = parse(capture.folder)
    (subject,) = collection.subjects
    assert subject.name == "capture" and subject.camera_names == tuple(capture.names)
    assert [f.frame_id for f in subject.frames] == [0, 1, 2] and subject.faces is None
    view = subject.frames[0].views[2]
    K, R, T = capture.cameras[2]
    np.testing.assert_allclose(view.K[:2, 2], K[:2, 2] + 0.5)  # OpenCV calibration -> half-pixel centres
    np.testing.assert_allclose(view.R, R, atol=1e-5)
    assert view.out_size == (48, 40) and view.mask_threshold == 127
    for f, frame in enumerate(subject.frames):
        np.testing.assert_allclose(load_vertices(frame), capture.vertices[f], atol=2e-6)
        assert fraction_in_masks(frame) >= 0.95
    # single capture: it is both the training and the evaluation subject (zero-shot rendering, fine-tuning)
    test = parse(capture.folder, "test")
    assert [s.name for s in test.subjects] == ["capture"]
    assert test.inputs_for(test.subjects[0], 4) == (0, 2, 3, 4)  # 4 of 6 cameras, evenly spaced


def test_intrinsics_for_another_resolution_are_scaled(tmp_path):
    """intri.yml calibrated at twice the stored size (W_/H_ say so): K follows the images; another shape is an error."""
    capture = make_easymocap_capture(tmp_path)
    entries = [("names", capture.names, "list")]
    for cam, (K, _, _) in zip(capture.names, capture.cameras):
        K_full = K.copy()
        K_full[:2] = K[:2] * 2
        K_full[:2, 2] = 2 * K[:2, 2] + 0.5  # OpenCV centres: (c + 0.5) * 2 - 0.5
        entries += [(f"K_{cam}", K_full, "mat"), (f"H_{cam}", 80, "int"), (f"W_{cam}", 96, "int")]
    write_opencv_yaml(capture.folder / "intri.yml", entries)
    frame = parse(capture.folder).subjects[0].frames[0]
    np.testing.assert_allclose(frame.views[1].K[:2, 2], capture.cameras[1][0][:2, 2] + 0.5, atol=1e-5)
    assert fraction_in_masks(frame) >= 0.95
    write_opencv_yaml(capture.folder / "intri.yml", [e if not e[0].startswith("W_") else (e[0], 120, "int")
                                                      for e in entries])
    with pytest.raises(HumanDataError, match=r"intri\.yml: camera '01' is calibrated for 120x80 \(W_/H_\) but its "
                                             r"images are 48x40, another aspect ratio"):
        parse(capture.folder)


def test_proxies_are_cached(tmp_path, monkeypatch):
    capture = make_easymocap_capture(tmp_path)
    first = parse(capture.folder).subjects[0].frames[0].vertices_path
    assert first.is_file() and str(tmp_path / "cache") in str(first)
    import gmnerf_ns.data.parsers.easymocap as easymocap

    monkeypatch.setattr(easymocap, "easymocap_vertices", lambda *a: pytest.fail("re-read a cached proxy"))
    assert parse(capture.folder).subjects[0].frames[0].vertices_path == first


def test_person_id(tmp_path, capsys):
    capture = make_easymocap_capture(tmp_path, people=(4, 2))
    default = parse(capture.folder).subjects[0].frames[0]
    assert "using id 2" in capsys.readouterr().out.replace("\n", " ")
    chosen = parse(capture.folder, person_id=4).subjects[0].frames[0]
    assert load_vertices(chosen)[:, 0].mean() - load_vertices(default)[:, 0].mean() == pytest.approx(-5.0, abs=1e-3)


def test_folder_of_captures(tmp_path):
    for name in ("alice", "bob"):
        make_easymocap_capture(tmp_path / "captures", name, num_frames=1)
    parser = EasyMocapDataParserConfig(data=tmp_path / "captures", resolution=RES, train_subjects=("alice",),
                                       test_subjects=("bob",)).setup()
    assert [s.name for s in parser.collect("train").subjects] == ["alice"]
    assert [s.name for s in parser.collect("test").subjects] == ["bob"]


def test_smpl_parameters_are_posed_the_easymocap_way(tmp_path, fake_smplx):
    capture = make_easymocap_capture(tmp_path, fits=("smpl",))
    fake_smplx.template = capture.template
    subject = parse(capture.folder, body_model_dir=fake_smplx.dir).subjects[0]
    path, model_type, kwargs = fake_smplx.built[0]
    assert path == fake_smplx.dir / "smpl" / "SMPL_NEUTRAL.pkl" and model_type == "smpl"
    calls = fake_smplx.models[0].calls
    assert len(calls) == 3
    for f, (frame, call) in enumerate(zip(subject.frames, calls)):
        params = capture.params[f][0]
        assert torch.count_nonzero(call["global_orient"]) == 0  # the global orientation lives in Rh
        assert torch.count_nonzero(call["transl"]) == 0
        np.testing.assert_allclose(call["body_pose"].numpy(), params["poses"][:, 3:], atol=1e-6)
        np.testing.assert_allclose(call["betas"].numpy(), params["shapes"], atol=1e-6)
        X = capture.template + 1e-3 * params["shapes"][0, :3]
        expected = X @ cv2.Rodrigues(params["Rh"].reshape(3, 1))[0].T + params["Th"]  # V = R(Rh) X + Th
        np.testing.assert_allclose(load_vertices(frame), expected, atol=1e-5)
        assert fraction_in_masks(frame) >= 0.95
    np.testing.assert_array_equal(subject.faces, fake_smplx.models[0].faces)


def test_parameters_preferred_only_with_model_files(tmp_path, fake_smplx):
    capture = make_easymocap_capture(tmp_path, fits=("smpl", "vertices"))
    fake_smplx.template = capture.template
    without = parse(capture.folder).subjects[0]
    assert fake_smplx.built == [] and without.faces is None  # vertices/ when no model files are given
    with_models = parse(capture.folder, body_model_dir=fake_smplx.dir).subjects[0]
    assert fake_smplx.built and with_models.faces is not None
    only_smpl = make_easymocap_capture(tmp_path / "b", fits=("smpl",))
    with pytest.raises(HumanDataError, match=r"output/smpl: the capture has SMPL parameters but no output\*/vertices/; "
                                             "pass --body-model-dir"):
        parse(only_smpl.folder)


@pytest.mark.parametrize("length, kind, hands", [
    (72, "smpl", None), (69, "smpl", None), (78, "smplh", 6), (156, "smplh", None), (87, "smplx", 6),
    (165, "smplx", None),
])
def test_pose_layouts(length, kind, hands):
    poses = np.arange(length, dtype=np.float64)[None] / 100
    params = easymocap_params({"id": 0, "Rh": [[0, 0, 0]], "Th": [[0, 0, 0]], "poses": poses.tolist(),
                               "shapes": [[0.0] * 10]}, Path("f.json"))
    assert params.model_type == kind and params.hand_pca == hands
    assert params.body_pose.shape[1] == (69 if kind == "smpl" else 63)
    if length == 72:
        np.testing.assert_allclose(params.global_orient, poses[:, :3])
    if length == 87:  # body 66, hands 6 + 6 (PCA, mean added), then jaw and eyes
        np.testing.assert_allclose(params.left_hand_pose, poses[:, 66:72])
        np.testing.assert_allclose(params.jaw_pose, poses[:, 78:81])
        assert params.flat_hand_mean is False
    if length == 165:  # smplx's own order: body 66, jaw/eyes 9, hands 45 + 45
        np.testing.assert_allclose(params.reye_pose, poses[:, 72:75])
        np.testing.assert_allclose(params.right_hand_pose, poses[:, 120:165])


def test_newer_api_hands_and_bad_length():
    entry = {"id": 0, "Rh": [[0, 0, 0]], "Th": [[0, 0, 0]], "poses": [[0.0] * 63], "shapes": [[0.0] * 10],
             "handl": [[0.1] * 12], "handr": [[0.2] * 12]}
    params = easymocap_params(entry, Path("f.json"))
    assert params.model_type == "smplh" and params.hand_pca == 12 and not params.flat_hand_mean
    assert easymocap_params({**entry, "expression": [[0.0] * 10]}, Path("f.json")).model_type == "smplx"
    with pytest.raises(HumanDataError, match=r"f\.json: person 0 has 70 pose values; EasyMocap writes 72"):
        easymocap_params({**entry, "poses": [[0.0] * 70]}, Path("f.json"))


def test_auto_detects_the_capture(tmp_path):
    capture = make_easymocap_capture(tmp_path)
    parser = AutoDataParserConfig(data=capture.folder, resolution=RES).setup()
    assert type(parser) is EasyMocapDataParser and parser.protocol.name == "easymocap"
    parent = AutoDataParserConfig(data=tmp_path, resolution=RES).setup()  # a folder of captures
    assert type(parent) is EasyMocapDataParser


def write_calibration(capture, intri_cams, extri_cams, names_in=("intri", "extri"), sizes=True):
    """Rewrites intri.yml/extri.yml with the intrinsics of ``intri_cams`` and the extrinsics of ``extri_cams``; each
    file in ``names_in`` gets a ``names`` list of the cameras it calibrates."""
    cameras = dict(zip(capture.names, capture.cameras))
    intri = [("names", list(intri_cams), "list")] if "intri" in names_in else []
    extri = [("names", list(extri_cams), "list")] if "extri" in names_in else []
    for cam in intri_cams:
        intri += [(f"K_{cam}", cameras[cam][0], "mat"), (f"dist_{cam}", np.zeros((1, 5)), "mat")]
        intri += [(f"H_{cam}", 40, "int"), (f"W_{cam}", 48, "int")] if sizes else []
    for cam in extri_cams:
        extri += [(f"R_{cam}", cv2.Rodrigues(cameras[cam][1])[0], "mat"), (f"T_{cam}", cameras[cam][2].reshape(3, 1),
                                                                            "mat")]
    write_opencv_yaml(capture.folder / "intri.yml", intri)
    write_opencv_yaml(capture.folder / "extri.yml", extri)


def camera_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, HumanDataWarning)]


def test_cameras_calibrated_in_one_file_only_are_skipped(tmp_path):
    """EasyMocap after calibrating the extrinsics of a subset: intri.yml lists more cameras than extri.yml."""
    capture = make_easymocap_capture(tmp_path, num_cameras=8)
    used = ["01", "03", "05", "06", "07"]
    write_calibration(capture, capture.names, used)
    with pytest.warns(HumanDataWarning) as record:
        subject = parse(capture.folder).subjects[0]
    assert camera_warnings(record) == [f"{capture.folder}: using the 5 of 8 cameras calibrated in both intri.yml and "
                                       "extri.yml; skipped 3: 02, 04, 08 (no R_/T_ in extri.yml)"]
    assert subject.camera_names == tuple(used)
    for view in subject.frames[0].views:
        np.testing.assert_allclose(view.R, capture.cameras[capture.names.index(view.camera_name)][1], atol=1e-5)
    assert fraction_in_masks(subject.frames[0]) >= 0.95

    write_calibration(capture, used[:4] + ["08"], capture.names, names_in=("extri",))  # names only in extri.yml
    with pytest.warns(HumanDataWarning) as record:
        subject = parse(capture.folder).subjects[0]
    assert camera_warnings(record) == [f"{capture.folder}: using the 5 of 8 cameras calibrated in both intri.yml and "
                                       "extri.yml; skipped 3: 02, 04, 07 (no K_ in intri.yml)"]
    assert subject.camera_names == ("01", "03", "05", "06", "08")

    write_calibration(capture, capture.names, used[:4])  # 4 cameras left, the protocol's 4 sources need 5
    with pytest.raises(HumanDataError) as err:
        parse(capture.folder)
    assert str(err.value) == (f"{capture.folder}: only 4 of 8 cameras are in both intri.yml and extri.yml, fewer than "
                              "the 5 needed (the protocol's source views + 1); without a calibration: 02, 04, 07-08 "
                              "(no R_/T_ in extri.yml)")
    with pytest.warns(HumanDataWarning):
        assert len(parse(capture.folder, num_input_views=3).subjects[0].camera_names) == 4


def test_real_rig_layout_warning_is_compact(tmp_path):
    """32 intrinsics, the extrinsics of 11 of them: one warning, runs of camera numbers collapsed."""
    K = np.array([[1000.0, 0, 960], [0, 1000, 540], [0, 0, 1]])
    names = [str(i) for i in range(1, 33)]
    intri = [("names", names, "list")] + [(f"K_{n}", K, "mat") for n in names]
    extri = [("names", names[11:22], "list")]
    for n in names[11:22]:
        extri += [(f"Rot_{n}", np.eye(3), "mat"), (f"T_{n}", np.array([[0.0], [0.0], [3.0]]), "mat")]
    write_opencv_yaml(tmp_path / "intri.yml", intri)
    write_opencv_yaml(tmp_path / "extri.yml", extri)
    with pytest.warns(HumanDataWarning) as record:
        cameras = read_cameras(tmp_path / "intri.yml", tmp_path / "extri.yml")
    assert [c.name for c in cameras] == names[11:22]
    assert camera_warnings(record) == [f"{tmp_path}: using the 11 of 32 cameras calibrated in both intri.yml and "
                                       "extri.yml; skipped 21: 1-11, 23-32 (no R_/T_ in extri.yml)"]
    extri = [("names", names[::2], "list")]
    for n in names[::2]:
        extri += [(f"Rot_{n}", np.eye(3), "mat"), (f"T_{n}", np.array([[0.0], [0.0], [3.0]]), "mat")]
    write_opencv_yaml(tmp_path / "extri.yml", extri)
    with pytest.warns(HumanDataWarning, match=r"skipped 16: 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24 and 4 more "
                                              r"\(no R_/T_ in extri\.yml\)$"):
        read_cameras(tmp_path / "intri.yml", tmp_path / "extri.yml")


def test_camera_with_half_an_extrinsic_entry(tmp_path):
    capture = make_easymocap_capture(tmp_path)
    entries = [("names", capture.names, "list")]
    for cam, (_, R, T) in zip(capture.names, capture.cameras):
        entries += [(f"R_{cam}", cv2.Rodrigues(R)[0], "mat")] + ([(f"T_{cam}", T.reshape(3, 1), "mat")]
                                                                   if cam != "06" else [])
    write_opencv_yaml(capture.folder / "extri.yml", entries)
    with pytest.raises(HumanDataError, match=r"extri\.yml: camera '06' \(listed in intri\.yml names\) has no T_06$"):
        parse(capture.folder)


def pad_images(capture, cam, right):
    """Adds ``right`` black columns to (or, negative, removes them from) camera ``cam``'s images and masks."""
    for folder in ("images", "mask"):
        for path in sorted((capture.folder / folder / cam).iterdir()):
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            image = cv2.copyMakeBorder(image, 0, 0, 0, right, cv2.BORDER_CONSTANT) if right > 0 else image[:, :right]
            cv2.imwrite(str(path), image)


@pytest.mark.parametrize("calibrated", [False, True])
def test_images_a_few_pixels_off_are_reported_and_cut(tmp_path, calibrated):
    """One camera 3 px wider, one 2 px narrower than the rest (the rig's 1923x1080 beside 1920x1080): named in one
    warning; the wider one is cut to the calibrated/common size (K unchanged), so the others are not padded."""
    capture = make_easymocap_capture(tmp_path)
    write_calibration(capture, capture.names, capture.names, sizes=calibrated)
    with warnings.catch_warnings():
        warnings.simplefilter("error", HumanDataWarning)
        reference = parse(capture.folder).subjects[0].frames[0]  # well-formed: no warning
    pad_images(capture, "03", 3)
    pad_images(capture, "05", -2)
    with pytest.warns(HumanDataWarning) as record:
        frame = parse(capture.folder).subjects[0].frames[0]
    source = ("W_03/H_03", "W_05/H_05") if calibrated else ("the other cameras' size",) * 2
    assert camera_warnings(record) == [
        f"{capture.folder / 'images'}: images a few pixels off the expected size: camera 03 is 51x40, not 48x40 "
        f"({source[0]}); camera 05 is 46x40, not 48x40 ({source[1]}). Using the expected size's top-left region (K as "
        "calibrated; a smaller image is padded)"]
    assert [v.crop for v in frame.views] == [(0, 0, 48, 40)] * 4 + [(-1, 0, 47, 40), (0, 0, 48, 40)]
    for view, ref in zip(frame.views, reference.views):
        assert view.out_size == ref.out_size == (48, 40)
        np.testing.assert_array_equal(view.K, ref.K)  # not scaled by 51/48
    assert fraction_in_masks(frame) >= 0.95


def test_names_entry_without_images(tmp_path):
    capture = make_easymocap_capture(tmp_path)
    shutil.rmtree(capture.folder / "images" / "03")
    with pytest.raises(HumanDataError, match=r"images/03: no image folder for camera '03', which intri\.yml lists"):
        parse(capture.folder)


def test_frames_without_fit_are_skipped_with_one_warning(tmp_path):
    capture = make_easymocap_capture(tmp_path, num_frames=4)
    (capture.folder / "output" / "vertices" / "000001.json").unlink()
    other = [{"id": 9, "vertices": capture.vertices[2]}]  # frame 2 fits only somebody else
    (capture.folder / "output" / "vertices" / "000002.json").write_text(easymocap_json(other))
    with pytest.warns(HumanDataWarning) as record:
        subject = parse(capture.folder).subjects[0]
    messages = [str(w.message) for w in record if "fit" in str(w.message)]
    assert len(messages) == 1 and "2 of 4 frame(s) have no fit for person 0" in messages[0]
    assert [f.frame_id for f in subject.frames] == [0, 3]
    for stem in ("000000", "000003"):
        (capture.folder / "output" / "vertices" / f"{stem}.json").unlink()
    with pytest.raises(HumanDataError, match=r"output/vertices: no sampled frame has a fit for person 0"):
        parse(capture.folder, person_id=0)  # (by default the only person left, id 9, would be chosen)


def test_vertex_count_that_does_not_match_the_faces(tmp_path, fake_smplx):
    capture = make_easymocap_capture(tmp_path, num_vertices=200)
    fake_smplx.template = np.zeros((6890, 3))  # faces of a 6890-vertex template
    with pytest.raises(HumanDataError, match=r"000000\.json: 200 vertices, but the SMPL faces of .*SMPL_NEUTRAL\.pkl "
                                             r"index 6890$"):
        parse(capture.folder, body_model_dir=fake_smplx.dir, body_model_type="smpl")
    verts = capture.vertices[1][:150]
    (capture.folder / "output" / "vertices" / "000001.json").write_text(easymocap_json([{"id": 0, "vertices": verts}]))
    with pytest.raises(HumanDataError, match=r"000001\.json: person has 150 vertices but frame 000000 has 200"):
        parse(capture.folder)


@pytest.mark.parametrize("fits", ["vertices", "smpl"])
def test_trains_without_naming_the_dataparser(tmp_path, monkeypatch, fits):
    """``ns-train gm-nerf-small --data <capture> --max-num-iterations 2`` (with ``gmnerf-auto --body-model-dir`` for
    SMPL parameters, posed by the fake body model), shrunk as tests/fixtures/shared_run.py does."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
    from nerfstudio.scripts.train import train_loop

    from tests.fixtures.shared_run import tiny_config

    capture = make_easymocap_capture(tmp_path / "data", num_frames=2, fits=(fits,))
    args = ["gm-nerf-small", "--data", str(capture.folder), "--max-num-iterations", "2"]
    models = None
    if fits == "smpl":
        models = install_fake_smplx(monkeypatch, tmp_path / "body_models", capture.template).dir
        args += ["gmnerf-auto", "--body-model-dir", str(models)]
    cli = tyro.cli(AnnotatedBaseConfigUnion, args=args)
    assert type(cli.pipeline.datamanager.dataparser) is AutoDataParserConfig and cli.data == capture.folder
    assert cli.pipeline.datamanager.dataparser.body_model_dir == models
    config = tiny_config(capture.folder, tmp_path / "outputs", steps=2)  # the same method, shrunk to CPU seconds
    config.data = cli.data
    config.pipeline.datamanager.dataparser.body_model_dir = cli.pipeline.datamanager.dataparser.body_model_dir
    config.set_timestamp()
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    checkpoints = sorted((config.get_base_dir() / "nerfstudio_models").glob("*.ckpt"))
    assert checkpoints, "no checkpoint after 2 steps"


def test_registered_as_ns_train_subcommand():
    import tomllib

    from gmnerf_ns.data.protocol import load_protocol
    from gmnerf_ns.training import dataparser_configs as registry

    pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
    entry = tomllib.loads(pyproject.read_text())["project"]["entry-points"]["nerfstudio.dataparser_configs"]
    assert entry["easymocap"] == "gmnerf_ns.training.dataparser_configs:easymocap_dataparser"
    spec = registry.easymocap_dataparser
    assert isinstance(spec.config, EasyMocapDataParserConfig)
    assert load_protocol(spec.config.protocol).num_input_views == 4
