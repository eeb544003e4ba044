"""Body-model files (``--body-model-dir``) are read without running code from them, and the real smplx poses them to
the very vertices it makes when it reads the same (safe) file itself."""

from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.parsers import smpl_proxy
from gmnerf_ns.data.parsers._body_models import BodyModels, create_body_model, read_body_model
from tests.fixtures.hostile_pickle import Payload

smplx = pytest.importorskip("smplx")
JOINTS = {"smpl": 24, "smplh": 52, "smplx": 55}
NAMES = {"smpl": "SMPL_NEUTRAL", "smplh": "SMPLH_NEUTRAL", "smplx": "SMPLX_NEUTRAL"}


@pytest.fixture(autouse=True)
def few_vertices(monkeypatch):
    """smplx picks extra joints (nose, toes, finger tips) by vertex index of the real meshes: point them at the first
    vertices of the tiny test meshes."""
    from smplx.vertex_ids import vertex_ids

    for kind in ("smplh", "smplx"):
        monkeypatch.setitem(vertex_ids, kind, {name: i for i, name in enumerate(vertex_ids[kind])})


def tiny_model(kind: str, num_vertices: int = 200, sparse: bool = True) -> dict:
    """A FAKE body model with the arrays smplx reads (random, a few hundred vertices); ``J_regressor`` as the
    original SMPL pickles store it, a ``scipy.sparse`` CSC matrix, when scipy is there and ``sparse``."""
    rng = np.random.default_rng(JOINTS[kind])
    v, j = num_vertices, JOINTS[kind]
    regressor = rng.random((j, v)) * (rng.random((j, v)) < 0.05)
    regressor[np.arange(j), rng.integers(0, v, j)] += 1.0
    weights = rng.random((v, j)) ** 4
    data = {
        "v_template": rng.normal(size=(v, 3)), "f": rng.integers(0, v, (2 * v, 3)).astype(np.uint32),
        "shapedirs": rng.normal(scale=1e-2, size=(v, 3, 20)),
        "posedirs": rng.normal(scale=1e-3, size=(v, 3, 9 * (j - 1))),  # 9 rotation entries per joint below the root
        "J_regressor": regressor / regressor.sum(1, keepdims=True), "weights": weights / weights.sum(1, keepdims=True),
        "kintree_table": np.stack([[4294967295] + [int(rng.integers(0, i)) for i in range(1, j)], np.arange(j)]),
    }
    if kind != "smpl":
        for side in "lr":
            data[f"hands_components{side}"] = rng.normal(scale=0.3, size=(45, 45))
            data[f"hands_mean{side}"] = rng.normal(scale=0.1, size=45)
    if kind == "smplx":
        data["lmk_faces_idx"] = rng.integers(0, 2 * v, 51)
        data["lmk_bary_coords"] = rng.dirichlet(np.ones(3), 51)
    if sparse:
        scipy_sparse = pytest.importorskip("scipy.sparse")
        data["J_regressor"] = scipy_sparse.csc_matrix(data["J_regressor"])
    return data


def write_model(folder: Path, kind: str, ext: str, data: dict, **extra) -> Path:
    """``<folder>/<kind>/<NAME>.<ext>`` as the body-model sites ship them: a protocol-2 pickle or an npz."""
    path = folder / kind / f"{NAMES[kind]}.{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext == "pkl":
        path.write_bytes(pickle.dumps({**data, **extra}, protocol=2))
    else:
        np.savez(path, **data, **extra)
    return path


def posed(model, kind: str) -> np.ndarray:
    """Vertices of ``model`` in a fixed random pose, shape and translation."""
    g = torch.Generator().manual_seed(3)

    def rand(*shape, scale=0.3):
        return torch.randn(*shape, generator=g) * scale

    inputs = {"betas": rand(1, model.num_betas), "global_orient": rand(1, 3), "transl": rand(1, 3),
              "body_pose": rand(1, 3 * model.NUM_BODY_JOINTS)}
    if kind != "smpl":
        inputs.update(left_hand_pose=rand(1, model.num_pca_comps), right_hand_pose=rand(1, model.num_pca_comps))
    if kind == "smplx":
        inputs.update(jaw_pose=rand(1, 3), leye_pose=rand(1, 3), reye_pose=rand(1, 3),
                      expression=rand(1, model.num_expression_coeffs))
    with torch.no_grad():
        return model(**inputs).vertices[0].numpy()


@pytest.mark.parametrize("kind, ext", [("smpl", "pkl"), ("smplh", "pkl"), ("smplx", "npz"), ("smplx", "pkl")])
def test_model_files_pose_as_smplx_reading_them_itself(tmp_path, kind, ext):
    data = tiny_model(kind, sparse=ext == "pkl")
    # the SMPL-X npz files carry object entries smplx does not read: harmless ones are read restrictedly
    extra = {"joint2num": np.array({"pelvis": 0}, dtype=object)} if ext == "npz" else {"bs_style": "lbs"}
    path = write_model(tmp_path, kind, ext, data, **extra)
    kwargs = {"num_betas": 10, **({"ext": ext, "num_pca_comps": 6} if kind != "smpl" else {})}
    ours = create_body_model(path, kind, "neutral", **kwargs)
    theirs = smplx.create(str(path), model_type=kind, gender="neutral", **kwargs)  # smplx's own (unsafe) loading
    assert type(ours) is type(theirs)
    np.testing.assert_array_equal(posed(ours, kind), posed(theirs, kind))
    np.testing.assert_array_equal(np.asarray(ours.faces), np.asarray(theirs.faces))
    if ext == "pkl":
        assert np.array_equal(read_body_model(path)["J_regressor"], data["J_regressor"].toarray())


def _build_through(entry: str, folder: Path, kind: str) -> None:
    """Builds the ``kind`` model of ``folder`` as the parsers (``BodyModels``) or the scan proxies do."""
    if entry == "parsers":
        BodyModels(folder).model(kind)
    elif kind == "smpl":
        registration = folder / "registration.pkl"
        registration.write_bytes(pickle.dumps({"pose": np.zeros(72), "betas": np.zeros(10), "trans": np.zeros(3)}))
        smpl_proxy.mgn_smpl(registration, folder, gender="neutral")
    else:
        fit = {key: np.zeros((1, 10 if shape[1] == -1 else shape[1])) for key, shape in smpl_proxy.THUMAN2_KEYS.items()}
        params = folder / "smplx_param.pkl"
        params.write_bytes(pickle.dumps({**fit, "scale": np.ones(1), "translation": np.zeros(3)}))
        smpl_proxy.thuman2_smplx(params, folder, gender="neutral")


@pytest.mark.parametrize("entry", ["parsers", "scan proxies"])
@pytest.mark.parametrize("kind, ext", [("smpl", "pkl"), ("smplx", "npz")])
def test_crafted_model_files_are_refused_and_run_nothing(tmp_path, kind, ext, entry):
    marker = tmp_path / "marker"
    payload = Payload(os.system, f"touch {marker}")
    hostile = {"bs_style": payload} if ext == "pkl" else {"part2num": np.array([payload], dtype=object)}
    path = write_model(tmp_path, kind, ext, tiny_model(kind, sparse=False), **hostile)
    with pytest.raises(HumanDataError) as err:
        _build_through(entry, tmp_path, kind)
    assert str(err.value) == (f"{path}: refuses to unpickle {os.system.__module__}.system: dataset files may only "
                              "hold dicts, lists, strings, numbers and numpy arrays")
    assert not marker.exists()


def test_chumpy_model_files_name_the_fix(tmp_path, monkeypatch):
    """The original SMPL pickles hold chumpy objects, which smplx cannot use either: say how to get clean files."""
    chumpy = types.ModuleType("chumpy.ch")
    chumpy.Ch = type("Ch", (), {"__module__": "chumpy.ch"})
    with monkeypatch.context() as patch:  # chumpy only while pickling: it is not installed where the model is read
        patch.setitem(sys.modules, "chumpy", types.ModuleType("chumpy"))
        patch.setitem(sys.modules, "chumpy.ch", chumpy)
        path = write_model(tmp_path, "smpl", "pkl", tiny_model("smpl", sparse=False), shapedirs=chumpy.Ch())
    with pytest.raises(HumanDataError) as err:
        BodyModels(tmp_path).model("smpl")
    assert str(err.value) == (f"{path}: holds chumpy objects (chumpy.ch.Ch), which smplx cannot use: use the "
                              "chumpy-free model files (smplx's tools/clean_ch.py writes them)")


@pytest.mark.parametrize("damage", ["index", "shape"])
def test_damaged_sparse_regressor_is_refused(tmp_path, damage):
    data = tiny_model("smpl")
    regressor = data["J_regressor"]
    if damage == "index":
        regressor.indices[0] = 10**6  # a row far outside the matrix
    else:
        regressor._shape = (10**6, 10**6)  # 8 TB dense, from a few kilobytes
    path = write_model(tmp_path, "smpl", "pkl", data)
    with pytest.raises(HumanDataError) as err:
        BodyModels(tmp_path).model("smpl")
    assert str(err.value) == (f"{path}: 'J_regressor' is not a well-formed scipy sparse CSC matrix of a body model; "
                              "the file is damaged (re-download it)")
