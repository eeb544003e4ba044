"""Posed body-model proxies (vertices + faces) from the fits shipped with scan datasets, through ``smplx``.

The SMPL / SMPL-X model files are licensed per user and never shipped: the user points ``--body-model-dir`` at their own
copy, laid out as ``smplx`` expects (``<dir>/smpl/SMPL_NEUTRAL.pkl``, ``<dir>/smplx/SMPLX_MALE.npz``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from gmnerf_ns.core.errors import HumanDataError

from ._body_models import create_body_model, fit_coefficients, model_file
from ._files import finite_array, load_pickled_dict, require_key

THUMAN2_KEYS = {  # key -> shape (batch 1); hands are THuman2.0's 12-dim PCA coefficients
    "betas": (1, -1), "global_orient": (1, 3), "body_pose": (1, 63), "left_hand_pose": (1, 12),
    "right_hand_pose": (1, 12), "jaw_pose": (1, 3), "leye_pose": (1, 3), "reye_pose": (1, 3), "expression": (1, -1),
}


def thuman2_smplx(param_path: Path, body_model_dir: Optional[Path], gender: str = "male") -> Tuple[np.ndarray, np.ndarray]:
    """THuman2.0 proxy in scan coordinates: ``SMPLX(params).vertices * scale + translation`` and the faces.

    The fits use 12 PCA hand components and the male model (as ICON, which released them).
    """
    params = load_pickled_dict(param_path, "THuman2.0 SMPL-X fit")
    arrays: Dict[str, np.ndarray] = {}
    for key, shape in THUMAN2_KEYS.items():
        value = np.asarray(require_key(params, key, param_path, "SMPL-X fit"), dtype=np.float64)
        arrays[key] = finite_array(value.reshape(1, -1), shape, f"{param_path} {key!r}")
    scale = finite_array(np.asarray(require_key(params, "scale", param_path, "SMPL-X fit")).reshape(-1), (1,),
                         f"{param_path} 'scale'")
    translation = finite_array(np.asarray(require_key(params, "translation", param_path, "SMPL-X fit")).reshape(-1),
                               (3,), f"{param_path} 'translation'")
    path = model_file(body_model_dir, "smplx", gender)
    import torch


    model = create_body_model(path, "smplx", gender, ext=path.suffix[1:], use_pca=True, num_pca_comps=12,
                                           num_betas=arrays["betas"].shape[1],
                                           num_expression_coeffs=arrays["expression"].shape[1])
    arrays["betas"] = fit_coefficients(arrays["betas"], model.num_betas)
    arrays["expression"] = fit_coefficients(arrays["expression"], model.num_expression_coeffs)
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(v, dtype=torch.float32) for k, v in arrays.items()})
    vertices = out.vertices[0].double().numpy() * scale[0] + translation
    return vertices.astype(np.float32), np.asarray(model.faces, dtype=np.int64)


def mgn_smpl(registration_path: Path, body_model_dir: Optional[Path], gender: Optional[str] = "neutral"
             ) -> Tuple[np.ndarray, np.ndarray]:
    """Multi-garment proxy in scan coordinates from ``registration.pkl`` (a Python-2 pickle: pose, betas, trans, gender).

    ``gender=None`` uses the registration's own gender; MGN registered with the neutral model.
    """
    reg = load_pickled_dict(registration_path, "MGN SMPL registration")
    pose = finite_array(np.asarray(require_key(reg, "pose", registration_path, "registration")).reshape(-1), (72,),
                        f"{registration_path} 'pose'")
    betas = finite_array(np.asarray(require_key(reg, "betas", registration_path, "registration")).reshape(-1), (-1,),
                         f"{registration_path} 'betas'")
    trans = finite_array(np.asarray(require_key(reg, "trans", registration_path, "registration")).reshape(-1), (3,),
                         f"{registration_path} 'trans'")
    if gender is None:
        gender = str(reg.get("gender", "neutral"))
        if gender not in ("male", "female", "neutral"):
            raise HumanDataError(f"{registration_path}: unknown gender {gender!r}; expected male, female or neutral")
    path = model_file(body_model_dir, "smpl", gender)
    import torch


    model = create_body_model(path, "smpl", gender, num_betas=betas.size)
    betas = fit_coefficients(betas[None], model.num_betas)[0]

    def t(x: np.ndarray) -> "torch.Tensor":
        return torch.as_tensor(x, dtype=torch.float32)[None]

    with torch.no_grad():
        out = model(global_orient=t(pose[:3]), body_pose=t(pose[3:]), betas=t(betas), transl=t(trans))
    return out.vertices[0].numpy().astype(np.float32), np.asarray(model.faces, dtype=np.int64)
