"""EasyMocap's fitted-body files (``output*/smpl/<frame>.json``, ``vertices/<frame>.json``, and MVHumanNet's, which use
its layout): per-person lists read into :class:`~._body_models.BodyParams` for the body model to pose, or into vertices.
The body model and the ``Rh``/``Th`` convention are in :mod:`._body_models`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import numpy as np

from gmnerf_ns.core.errors import HumanDataError

from ._body_models import BodyParams

EASYMOCAP_HAND_PCA = 6
"""EasyMocap's old layout (``SMPLlayer``) keeps 6 PCA coefficients per hand (72+6 SMPL-H = 78, SMPL-X 66+12+9 = 87)."""


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
