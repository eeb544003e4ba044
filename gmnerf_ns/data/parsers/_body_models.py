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

import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from gmnerf_ns.core.errors import HumanDataError

from ._safe_numpy import load_npz
from ._safe_pickle import MIN_LIMIT, DatasetUnpickler

REGISTRATION_SITES = {
    "smpl": "https://smpl.is.tue.mpg.de (register, download SMPL; smplx needs chumpy-free pkl files)",
    "smplx": "https://smpl-x.is.tue.mpg.de (register, download SMPL-X)",
}
REGISTRATION_SITES["smplh"] = f"https://mano.is.tue.mpg.de (SMPL+H; see also {REGISTRATION_SITES['smpl']})"

MODEL_FILES = {"smpl": ("{G}.pkl",), "smplh": ("{G}.pkl", "{G}.npz"), "smplx": ("{G}.npz", "{G}.pkl")}
"""File names ``smplx`` looks for in ``<body-model-dir>/<model type>/``, in order ({G}: e.g. ``SMPLX_NEUTRAL``)."""

TEMPLATE_SIZES = {6890: "smpl", 10475: "smplx"}
"""Vertex count of each template (SMPL-H shares SMPL's mesh), to find faces for a vertices-only proxy."""

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
