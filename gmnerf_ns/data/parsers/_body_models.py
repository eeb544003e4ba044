"""Posed body-model proxies from fitted parameters (SMPL, SMPL-H, SMPL-X through ``smplx``), shared by the parsers of
captures and datasets that ship parameters instead of vertices (EasyMocap, MVHumanNet, DNA-Rendering, HuMMan).

Two conventions meet here:

* the standard one (``smplx``'s ``global_orient``/``transl``, as HuMMan and DNA-Rendering store them): the model poses the
  body and moves it itself;
* EasyMocap's (its ``output*/smpl/<frame>.json``, MVHumanNet's ``smplx/smpl/``): ``poses[:3]`` is (near) zero and the
  posed vertices are ``V = R(Rh) · X(poses, shapes) + Th``, with ``X`` the model's output at zero translation. ``Rh``
  rotates about the model origin, not the pelvis, so it is *not* ``global_orient`` (zju3dv/EasyMocap
  ``easymocap/smplmodel/body_model.py`` ``SMPLlayer.forward``: ``vertices @ rot.T + transl``).

The model files are licensed per user and never shipped: ``--body-model-dir`` points at the user's copy laid out as
``smplx`` expects (``smpl/SMPL_NEUTRAL.pkl``, ``smplh/SMPLH_MALE.pkl``, ``smplx/SMPLX_NEUTRAL.npz``). They are read by
:func:`read_body_model`, which runs no code from them, never by smplx's own loader.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

from gmnerf_ns.core.errors import HumanDataError

from ._safe_pickle import MIN_LIMIT, DatasetUnpickler, load_npz

REGISTRATION_SITES = {
    "smpl": "https://smpl.is.tue.mpg.de (register, download SMPL; smplx needs chumpy-free pkl files)",
    "smplx": "https://smpl-x.is.tue.mpg.de (register, download SMPL-X)",
}
REGISTRATION_SITES["smplh"] = f"https://mano.is.tue.mpg.de (SMPL+H; see also {REGISTRATION_SITES['smpl']})"

MODEL_FILES = {"smpl": ("{G}.pkl",), "smplh": ("{G}.pkl", "{G}.npz"), "smplx": ("{G}.npz", "{G}.pkl")}
"""File names ``smplx`` looks for in ``<body-model-dir>/<model type>/``, in order ({G}: e.g. ``SMPLX_NEUTRAL``)."""

TEMPLATE_SIZES = {6890: "smpl", 10475: "smplx"}
"""Vertex count of each template (SMPL-H shares SMPL's mesh), to find faces for a vertices-only proxy."""

EASYMOCAP_HAND_PCA = 6
"""EasyMocap's old layout (``SMPLlayer``) keeps 6 PCA coefficients per hand (72+6 SMPL-H = 78, SMPL-X 66+12+9 = 87)."""


@dataclass
class BodyParams:
    """One person's fit, split the way ``smplx``'s forward takes it, plus EasyMocap's ``Rh``/``Th``.

    Posed vertices: ``R(Rh) · (scale · X) + Th`` with ``X = model(betas, global_orient, body_pose, hands, face,
    transl)``. Standard fits leave ``Rh``/``Th`` zero and use ``transl``; EasyMocap fits the reverse.
    """

    model_type: str
    """``smpl``, ``smplh`` or ``smplx``."""
    betas: np.ndarray
    """(1, B) shape coefficients."""
    body_pose: np.ndarray
    """(1, 69) for SMPL, (1, 63) for SMPL-H/SMPL-X (axis-angle, without the root)."""
    global_orient: np.ndarray = field(default_factory=lambda: np.zeros((1, 3)))
    transl: np.ndarray = field(default_factory=lambda: np.zeros((1, 3)))
    left_hand_pose: Optional[np.ndarray] = None
    """(1, n): n PCA coefficients (``hand_pca``) or 45 axis-angle values."""
    right_hand_pose: Optional[np.ndarray] = None
    hand_pca: Optional[int] = None
    """Number of PCA hand coefficients, or None for full axis-angle hands."""
    flat_hand_mean: bool = True
    """``smplx``'s flag: False adds the mean hand pose to the given hand pose (EasyMocap's PCA hands do)."""
    jaw_pose: Optional[np.ndarray] = None
    leye_pose: Optional[np.ndarray] = None
    reye_pose: Optional[np.ndarray] = None
    expression: Optional[np.ndarray] = None
    Rh: np.ndarray = field(default_factory=lambda: np.zeros(3))
    """(3,) axis-angle applied after the model, about the world origin (EasyMocap)."""
    Th: np.ndarray = field(default_factory=lambda: np.zeros(3))
    """(3,) translation applied after ``Rh`` (EasyMocap)."""
    scale: float = 1.0
    """Scale of the model output before ``Rh``/``Th``."""


def model_file(body_model_dir: Optional[Path], model_type: str, gender: str) -> Path:
    """The model file ``smplx`` will load for ``model_type``/``gender``, or an error naming the expected path and where
    to register for it."""
    stem = f"{model_type.upper()}_{gender.upper()}"
    expected = [Path(body_model_dir or "<body-model-dir>") / model_type / n.format(G=stem)
                for n in MODEL_FILES[model_type]]
    if body_model_dir is not None:
        for path in expected:
            if path.is_file():
                return path
    raise HumanDataError(
        f"the {model_type.upper()} body model is needed for the proxy: expected {expected[0]}"
        + (f" (or {expected[1]})" if len(expected) > 1 else "")
        + f"; pass --body-model-dir with your own copy. The model is licensed per user: {REGISTRATION_SITES[model_type]}"
    )


class SparseMatrixState:
    """Stands in for a pickled ``scipy.sparse`` CSC or CSR matrix (the SMPL pickles store ``J_regressor`` so): keeps the
    pickled state, which :meth:`dense` turns into an array, and runs nothing."""

    layout = "csc"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def dense(self, path: Path, key: str, limit: int) -> np.ndarray:
        """The matrix as a dense array, if its state is a well-formed CSC/CSR matrix of at most ``limit`` bytes."""
        state = getattr(self, "state", None)
        try:
            shape = state.get("_shape", state.get("shape"))
            rows, cols = (int(n) for n in shape)
            data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
            major, minor = (cols, rows) if self.layout == "csc" else (rows, cols)
            well_formed = (data.dtype.kind in "biuf" and indices.dtype.kind in "iu" and indptr.dtype.kind in "iu"
                           and data.ndim == indices.ndim == indptr.ndim == 1 and indptr.shape == (major + 1,)
                           and len(data) == len(indices) == indptr[-1] and indptr[0] == 0
                           and bool(np.all(np.diff(indptr) >= 0)) and bool(np.all((indices >= 0) & (indices < minor)))
                           and min(rows, cols) >= 0 and rows * cols * data.itemsize <= limit)
        except (AttributeError, TypeError, ValueError, KeyError, IndexError):
            well_formed = False
        if not well_formed:
            raise HumanDataError(f"{path}: {key!r} is not a well-formed scipy sparse {self.layout.upper()} matrix of "
                                 "a body model; the file is damaged (re-download it)")
        out = np.zeros((major, minor), dtype=data.dtype)
        np.add.at(out, (np.repeat(np.arange(major), np.diff(indptr)), indices), data)  # duplicates add up, as in scipy
        return out.T.copy() if self.layout == "csc" else out


class _CSRState(SparseMatrixState):
    layout = "csr"


class BodyModelUnpickler(DatasetUnpickler):
    """:class:`DatasetUnpickler` that also reads scipy's sparse matrices (into :class:`SparseMatrixState`) and names
    chumpy, which the original SMPL pickles hold and no restricted reader can build."""

    STAND_INS = {(f"scipy.sparse.{m}", f"{m.strip('_')}_{kind}"): (SparseMatrixState if "csc" in m else _CSRState)
                 for m in ("csc", "_csc", "csr", "_csr") for kind in ("matrix", "array")}

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "chumpy":
            raise HumanDataError(f"{self.path}: holds chumpy objects ({module}.{name}), which smplx cannot use: use "
                                 "the chumpy-free model files (smplx's tools/clean_ch.py writes them)")
        return super().find_class(module, name)


def read_body_model(path: Path) -> Dict[str, Any]:
    """The arrays of a body-model file, read without running code from it.

    ``smplx`` opens model files with ``pickle.load`` and ``np.load(allow_pickle=True)``, which run whatever a crafted
    file names. Here a ``.pkl`` goes through :class:`BodyModelUnpickler` (its sparse matrices come back dense) and an
    ``.npz`` through :func:`load_npz` (its object entries, which smplx does not read, unpickled restrictedly).
    """
    if path.suffix not in (".pkl", ".npz"):
        raise HumanDataError(f"{path}: a body model should be a .pkl or .npz file")
    try:
        if path.suffix == ".npz":
            data = load_npz(path)
        else:
            with open(path, "rb") as handle:
                data = BodyModelUnpickler(handle, path).load()
    except HumanDataError:
        raise
    except Exception as err:  # truncated or foreign file: say which one
        raise HumanDataError(f"{path}: cannot read the body model ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise HumanDataError(f"{path}: a body model should hold a dict of named arrays, found {type(data).__name__}")
    for key, value in data.items():
        if isinstance(value, SparseMatrixState):
            data[key] = value.dense(path, key, max(path.stat().st_size, MIN_LIMIT))
    return data


def create_body_model(path: Path, model_type: str, gender: str, **kwargs: Any):
    """A ``smplx`` model (``SMPL``, ``SMPLH`` or ``SMPLX``) of one model file, its arrays read by
    :func:`read_body_model` and handed to smplx (the one place a body model is built: tests replace it with a fake)."""
    import smplx

    data = read_body_model(path)
    try:
        if model_type == "smplx":
            return _smplx_from_arrays(data, gender, kwargs)
        model_class = {"smpl": smplx.SMPL, "smplh": smplx.SMPLH}[model_type]
        return model_class(str(path), data_struct=smplx.utils.Struct(**data), gender=gender, **kwargs)
    except Exception as err:  # missing or misshapen arrays: say which file
        raise HumanDataError(f"{path}: cannot load the {model_type.upper()} body model "
                             f"({type(err).__name__}: {err})") from err


def _smplx_from_arrays(data: Dict[str, Any], gender: str, kwargs: Dict[str, Any]):
    """``smplx.SMPLX`` of checked arrays: it takes no ``data_struct`` and always loads a file, so it gets a private
    ``.npz`` copy of the plain arrays (no object entries, so its ``np.load`` unpickles nothing)."""
    import smplx

    with tempfile.TemporaryDirectory(prefix="gmnerf-smplx-") as folder:
        copy = Path(folder) / f"SMPLX_{gender.upper()}.npz"
        with zipfile.ZipFile(copy, "w") as archive:
            for key, value in data.items():
                if isinstance(value, np.ndarray) and not value.dtype.hasobject:
                    with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, value, allow_pickle=False)
        return smplx.SMPLX(str(copy), gender=gender, **{**kwargs, "ext": "npz"})


class BodyModels:
    """Loads each needed model once and poses :class:`BodyParams` into world vertices."""

    def __init__(self, body_model_dir: Optional[Path], gender: str = "neutral"):
        self.body_model_dir = None if body_model_dir is None else Path(body_model_dir)
        self.gender = gender
        self._models: Dict[tuple, Any] = {}

    def path(self, model_type: str, gender: Optional[str] = None) -> Path:
        return model_file(self.body_model_dir, model_type, gender or self.gender)

    def model(self, model_type: str, gender: Optional[str] = None, hand_pca: Optional[int] = None,
              flat_hand_mean: bool = True, num_betas: int = 10, num_expression: int = 10):
        gender = gender or self.gender
        key = (model_type, gender, hand_pca, flat_hand_mean, num_betas, num_expression)
        if key not in self._models:
            path = self.path(model_type, gender)
            kwargs: Dict[str, Any] = {"num_betas": num_betas}
            if model_type in ("smplh", "smplx"):
                kwargs.update(ext=path.suffix[1:], use_pca=hand_pca is not None, num_pca_comps=hand_pca or 6,
                              flat_hand_mean=flat_hand_mean)
            if model_type == "smplx":
                kwargs["num_expression_coeffs"] = num_expression
            self._models[key] = create_body_model(path, model_type, gender, **kwargs)
        return self._models[key]

    def faces(self, model_type: str, gender: Optional[str] = None) -> np.ndarray:
        """(F, 3) int64 faces of a template."""
        return np.asarray(self.model(model_type, gender).faces, dtype=np.int64)

    def pose(self, params: BodyParams, gender: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(world vertices (V, 3) float32, faces (F, 3) int64) of a fit."""
        import torch

        num_expression = params.expression.shape[1] if params.expression is not None else 10
        model = self.model(params.model_type, gender, params.hand_pca, params.flat_hand_mean,
                           params.betas.shape[1], num_expression)

        def t(x: np.ndarray) -> "torch.Tensor":
            return torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=torch.float32)

        inputs = {"betas": fit_coefficients(params.betas, getattr(model, "num_betas", params.betas.shape[1])),
                  "global_orient": params.global_orient, "body_pose": params.body_pose, "transl": params.transl}
        if params.model_type in ("smplh", "smplx"):
            for name in ("left_hand_pose", "right_hand_pose"):
                if getattr(params, name) is not None:
                    inputs[name] = getattr(params, name)
        if params.model_type == "smplx":
            for name in ("jaw_pose", "leye_pose", "reye_pose"):
                inputs[name] = getattr(params, name) if getattr(params, name) is not None else np.zeros((1, 3))
            if params.expression is not None:
                count = getattr(model, "num_expression_coeffs", num_expression)
                inputs["expression"] = fit_coefficients(params.expression, count)
        with torch.no_grad():
            out = model(**{k: t(v) for k, v in inputs.items()}, return_verts=True)
        X = np.asarray(out.vertices[0].detach().cpu().numpy(), dtype=np.float64) * params.scale
        rotation = cv2.Rodrigues(np.asarray(params.Rh, dtype=np.float64).reshape(3, 1))[0]
        vertices = X @ rotation.T + np.asarray(params.Th, dtype=np.float64).reshape(1, 3)
        return vertices.astype(np.float32), np.asarray(model.faces, dtype=np.int64)


def fit_coefficients(coefficients: np.ndarray, count: int) -> np.ndarray:
    """(1, n) shape or expression coefficients cut or zero-padded to the ``count`` the model provides."""
    out = np.zeros((coefficients.shape[0], count))
    n = min(count, coefficients.shape[1])
    out[:, :n] = coefficients[:, :n]
    return out


def read_person_list(path: Path, what: str) -> List[dict]:
    """An EasyMocap result file (``smpl/<frame>.json``, ``vertices/<frame>.json``): a list of per-person dicts.

    Also accepts ``{"annots": [...]}`` (EasyMocap's annotation wrapper) and ``personID`` for ``id``.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise HumanDataError(f"{path}: cannot read the {what} JSON ({err})") from err
    if isinstance(data, dict) and isinstance(data.get("annots"), list):
        data = data["annots"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(p, dict) for p in data):
        raise HumanDataError(f"{path}: the {what} JSON should be a list of per-person dicts ({{id, ...}})")
    people = []
    for i, person in enumerate(data):
        person = dict(person)
        if "id" not in person:
            person["id"] = person.get("personID", i)
        try:
            person["id"] = int(person["id"])
        except (TypeError, ValueError) as err:
            raise HumanDataError(f"{path}: person {i} has a non-integer id {person['id']!r}") from err
        people.append(person)
    return people


def _row(person: dict, key: str, path: Path, required: bool = True) -> Optional[np.ndarray]:
    """``person[key]`` (EasyMocap writes [[...]]) as a finite (1, n) float64 array."""
    if key not in person or person[key] is None:
        if required:
            raise HumanDataError(f"{path}: person {person.get('id')} has no {key!r} (found: {', '.join(sorted(person))})")
        return None
    try:
        value = np.asarray(person[key], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise HumanDataError(f"{path}: person {person.get('id')} {key!r} is not numeric ({err})") from err
    if value.ndim > 2 or (value.ndim == 2 and value.shape[0] != 1):
        raise HumanDataError(f"{path}: person {person.get('id')} {key!r} has shape {value.shape}; expected 1xN")
    if not np.isfinite(value).all():
        raise HumanDataError(f"{path}: person {person.get('id')} {key!r} contains NaN or inf")
    return value.reshape(1, -1)


def easymocap_params(person: dict, path: Path, model_type: str = "auto") -> BodyParams:
    """:class:`BodyParams` of one person of an EasyMocap ``smpl/<frame>.json``, the model inferred from the layout.

    Pose layouts (zju3dv/EasyMocap ``easymocap/smplmodel/body_model.py`` ``extend_pose`` and
    ``easymocap/bodymodel/smplx.py`` ``SMPLHModel``), with ``handl``/``handr`` keys in the newer API:

    ======================  ========  ====================================================================
    ``poses`` length        model     layout
    ======================  ========  ====================================================================
    72                      SMPL      root (zero) + 23 joints
    69                      SMPL      23 joints, no root (newer ``bodymodel`` API)
    78                      SMPL-H    root + 21 body joints (66) + 6 + 6 PCA hand coefficients (mean added)
    156                     SMPL-H    66 + 45 + 45 axis-angle hands (used as is)
    87                      SMPL-X    66 + 6 + 6 PCA hands (mean added) + jaw, left eye, right eye (9)
    165                     SMPL-X    66 + jaw, eyes (9) + 45 + 45 axis-angle hands (used as is)
    66 / 63 + handl/handr   SMPL-H    (SMPL-X if ``expression`` is given) body with or without root; hands
                                      from ``handl``/``handr``: PCA when shorter than 45, mean added
    ======================  ========  ====================================================================

    ``shapes`` are the betas, ``expression`` SMPL-X's; ``Rh``/``Th`` place the body (see the module docstring);
    an optional ``scale`` (newer API) scales the model output (exact for the mean shape).
    """
    poses = _row(person, "poses", path)
    handl, handr = _row(person, "handl", path, False), _row(person, "handr", path, False)
    expression = _row(person, "expression", path, False)
    kind = _easymocap_model(person, path, poses.shape[1], expression) if model_type == "auto" else model_type
    params = BodyParams(model_type=kind, betas=_row(person, "shapes", path), body_pose=np.zeros((1, 0)),
                        Rh=_row(person, "Rh", path).reshape(-1)[:3], Th=_row(person, "Th", path).reshape(-1)[:3])
    scale = _row(person, "scale", path, False)
    if scale is not None:
        params.scale = float(scale.reshape(-1)[0])
    if params.Rh.size != 3 or params.Th.size != 3:
        raise HumanDataError(f"{path}: person {person.get('id')} Rh/Th should hold 3 values each")
    _split_poses(params, poses, handl, handr, person, path)
    if kind == "smplx":
        params.expression = expression
    return params


def _easymocap_model(person: dict, path: Path, n: int, expression: Optional[np.ndarray]) -> str:
    """The body model of ``n`` pose values (the table of :func:`easymocap_params`)."""
    by_length = {72: "smpl", 69: "smpl", 78: "smplh", 156: "smplh", 87: "smplx", 165: "smplx"}
    if n in (63, 66):
        return "smplx" if expression is not None else "smplh"
    if n in by_length:
        return by_length[n]
    raise HumanDataError(f"{path}: person {person.get('id')} has {n} pose values; EasyMocap writes 72 or 69 "
                         "(SMPL), 78 or 156 (SMPL-H), 87 or 165 (SMPL-X), or 66/63 with handl/handr")


def _split_poses(params: BodyParams, poses: np.ndarray, handl: Optional[np.ndarray], handr: Optional[np.ndarray],
                 person: dict, path: Path) -> None:
    """Sets the root, body, hand and head poses of ``params`` from EasyMocap's ``poses`` (and ``handl``/``handr``)
    by the layout of ``params.model_type``; fails on a length that does not fit it."""
    n, kind = poses.shape[1], params.model_type
    bad = HumanDataError(f"{path}: person {person.get('id')} has {n} pose values, which do not fit the "
                         f"{kind.upper()} layouts EasyMocap writes")
    if kind == "smpl":
        if n not in (72, 69):
            raise bad
        params.global_orient, params.body_pose = (poses[:, :3], poses[:, 3:]) if n == 72 else (np.zeros((1, 3)), poses)
    elif n in (66, 63):
        params.global_orient, params.body_pose = (poses[:, :3], poses[:, 3:]) if n == 66 else (np.zeros((1, 3)), poses)
        if (handl is None) != (handr is None):
            raise HumanDataError(f"{path}: person {person.get('id')} has only one of handl/handr")
        if handl is not None:
            if handl.shape != handr.shape or not (handl.shape[1] < 45 or handl.shape[1] == 45):
                raise HumanDataError(f"{path}: person {person.get('id')} handl/handr have {handl.shape[1]}/"
                                     f"{handr.shape[1]} values; expected the same count, at most 45")
            params.left_hand_pose, params.right_hand_pose = handl, handr
            params.hand_pca = handl.shape[1] if handl.shape[1] < 45 else None
        params.flat_hand_mean = False  # the newer API adds the mean hand (cfg_hand.use_flat_mean: False)
    elif kind == "smplh" and n in (78, 156):
        k = EASYMOCAP_HAND_PCA if n == 78 else 45
        params.global_orient, params.body_pose = poses[:, :3], poses[:, 3:66]
        params.left_hand_pose, params.right_hand_pose = poses[:, 66:66 + k], poses[:, 66 + k:66 + 2 * k]
        params.hand_pca, params.flat_hand_mean = (k, False) if n == 78 else (None, True)
    elif kind == "smplx" and n in (87, 165):
        params.global_orient, params.body_pose = poses[:, :3], poses[:, 3:66]
        if n == 87:  # body, hands (PCA), head
            k = EASYMOCAP_HAND_PCA
            params.left_hand_pose, params.right_hand_pose = poses[:, 66:72], poses[:, 72:78]
            head = poses[:, 78:87]
            params.hand_pca, params.flat_hand_mean = k, False
        else:  # body, head, hands: smplx's own full-pose order
            head = poses[:, 66:75]
            params.left_hand_pose, params.right_hand_pose = poses[:, 75:120], poses[:, 120:165]
            params.hand_pca, params.flat_hand_mean = None, True
        params.jaw_pose, params.leye_pose, params.reye_pose = head[:, 0:3], head[:, 3:6], head[:, 6:9]
    else:
        raise bad


def easymocap_vertices(person: dict, path: Path) -> np.ndarray:
    """(V, 3) float32 vertices of one person of an EasyMocap ``vertices/<frame>.json``."""
    if "vertices" not in person:
        raise HumanDataError(f"{path}: person {person.get('id')} has no 'vertices' (found: {', '.join(sorted(person))})")
    try:
        vertices = np.asarray(person["vertices"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise HumanDataError(f"{path}: person {person.get('id')} vertices are not numeric ({err})") from err
    if vertices.ndim != 2 or vertices.shape[1] != 3 or vertices.shape[0] < 4:
        raise HumanDataError(f"{path}: person {person.get('id')} vertices have shape {vertices.shape}; expected (V, 3)")
    if not np.isfinite(vertices).all():
        raise HumanDataError(f"{path}: person {person.get('id')} vertices contain NaN or inf")
    return vertices.astype(np.float32)
