"""The SMPL-like body model of the synthetic data: shape from PCA coefficients, then FK + LBS posing.

It reads the exported asset ``gmnerf_ns/assets/body_anny.npz`` (see ``scripts/export_body_asset.py``) and needs only
torch at runtime. Conventions follow the asset: metres, Z up, the body faces -Y, the pelvis joint at the origin, and an
A-pose canonical (identity) pose. Pose parameters are SMPL-style axis-angles, one per SMPL-24 joint, each a rotation
about the joint expressed in the canonical (world-aligned) axes; they are not SMPL values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

DEFAULT_ASSET = Path(__file__).resolve().parents[1] / "assets" / "body_anny.npz"
"""The body asset shipped with the package."""

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
"""SMPL-24 joint names, in SMPL order."""

SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
"""SMPL kinematic tree (parent of each joint)."""

REGION_NAMES = (
    "head", "neck", "chest", "abdomen", "hips", "upper_arm", "lower_arm", "hand", "upper_leg", "lower_leg", "foot",
    "eye", "interior",
)  # fmt: skip
"""Per-vertex body-part regions stored in the asset (``interior`` = mouth and eye cavities)."""


def rotvec_to_matrix(rotvec: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 3 3"]:
    """Rodrigues' formula, safe at zero angle."""
    theta = rotvec.norm(dim=-1, keepdim=True)
    axis = rotvec / theta.clamp_min(1e-12)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(rotvec.shape[:-1] + (3, 3))
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + s * k + (1 - c) * (k @ k)


def vertex_normals(vertices: Float[Tensor, "V 3"], faces: Tensor) -> Float[Tensor, "V 3"]:
    """Area-weighted unit vertex normals (outward for the asset's counter-clockwise faces)."""
    tri = vertices[faces]
    face_n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), face_n.repeat_interleave(3, 0))
    return normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass
class PosedBody:
    """A posed body in the canonical frame (before the global ``Rh``/``Th``)."""

    vertices: Float[Tensor, "V 3"]
    """Posed vertices."""
    joints: Float[Tensor, "24 3"]
    """Posed joint positions."""
    transforms: Float[Tensor, "24 4 4"]
    """Per-joint rigid transforms from canonical to posed (SMPL's ``A``)."""


class BodyModel:
    """SMPL-like body from the exported asset: ``shape(coeffs)`` then ``pose(axis_angles, vertices, joints)``."""

    def __init__(self, arrays: dict, dtype: torch.dtype = torch.float32):
        def t(name: str) -> Tensor:
            return torch.as_tensor(np.asarray(arrays[name], dtype=np.float64)).to(dtype)

        self.dtype = dtype
        self.faces = torch.as_tensor(np.asarray(arrays["faces"], dtype=np.int64))
        self.template = t("template")
        self.shape_basis = t("shape_basis")
        self.joints_template = t("joints_template")
        self.joints_basis = t("joints_basis")
        weights = t("lbs_weights")
        self.weights = weights / weights.sum(-1, keepdim=True)  # the asset stores float16 weights
        self.parents = tuple(int(p) for p in np.asarray(arrays["parents"]))
        self.vertex_region = torch.as_tensor(np.asarray(arrays["vertex_region"], dtype=np.int64))
        self.region_names = tuple(str(n) for n in np.asarray(arrays["region_names"]))
        self.shape_samples = t("shape_samples")
        self.phenotype_samples = t("phenotype_samples")
        self.phenotype_labels = tuple(str(n) for n in np.asarray(arrays["phenotype_labels"]))
        self.provenance = json.loads(str(np.asarray(arrays["provenance"])))
        if self.region_names != REGION_NAMES or self.parents != SMPL_PARENTS:
            raise ValueError("body asset has unexpected regions or kintree; re-export it with the current script")

    @classmethod
    def load(cls, path: Optional[Path] = None, dtype: torch.dtype = torch.float32) -> "BodyModel":
        """Loads the asset (default: the one shipped in ``gmnerf_ns/assets``)."""
        path = Path(path) if path is not None else DEFAULT_ASSET
        if not path.exists():
            raise FileNotFoundError(f"{path}: body asset missing; run scripts/export_body_asset.py")
        with np.load(path, allow_pickle=False) as data:
            return cls({k: data[k] for k in data.files}, dtype=dtype)

    @property
    def num_vertices(self) -> int:
        return int(self.template.shape[0])

    @property
    def num_shape_coeffs(self) -> int:
        return int(self.shape_basis.shape[0])

    def shape(self, coeffs: Float[Tensor, "K"]) -> Tuple[Float[Tensor, "V 3"], Float[Tensor, "24 3"]]:
        """Canonical (A-pose) vertices and joints of a body shape; ``coeffs`` are whitened PCA coefficients."""
        coeffs = coeffs.to(self.dtype)
        k = coeffs.shape[0]
        vertices = self.template + torch.einsum("k,kvc->vc", coeffs, self.shape_basis[:k])
        joints = self.joints_template + torch.einsum("k,kjc->jc", coeffs, self.joints_basis[:k])
        return vertices, joints

    def project_shape(self, vertices: Float[Tensor, "V 3"]) -> Float[Tensor, "K"]:
        """Least-squares shape coefficients of canonical vertices (the inverse of :meth:`shape`)."""
        basis = self.shape_basis.reshape(self.num_shape_coeffs, -1).T
        return torch.linalg.lstsq(basis, (vertices.to(self.dtype) - self.template).reshape(-1, 1)).solution[:, 0]

    def forward_kinematics(
        self, pose: Float[Tensor, "24 3"], joints: Float[Tensor, "24 3"]
    ) -> Tuple[Float[Tensor, "24 4 4"], Float[Tensor, "24 3"]]:
        """SMPL-style FK: ``A_j = A_parent [R_j | J_j - R_j J_j]``; returns transforms and posed joints."""
        rot = rotvec_to_matrix(pose.to(self.dtype))
        local = torch.zeros(24, 4, 4, dtype=self.dtype)
        local[:, :3, :3] = rot
        local[:, :3, 3] = joints - (rot @ joints[:, :, None])[:, :, 0]
        local[:, 3, 3] = 1.0
        transforms = [local[0]]
        for j in range(1, 24):
            transforms.append(transforms[self.parents[j]] @ local[j])
        transforms = torch.stack(transforms)
        posed_joints = (transforms[:, :3, :3] @ joints[:, :, None])[:, :, 0] + transforms[:, :3, 3]
        return transforms, posed_joints

    @staticmethod
    def skin(
        points: Float[Tensor, "N 3"], weights: Float[Tensor, "N 24"], transforms: Float[Tensor, "24 4 4"]
    ) -> Float[Tensor, "N 3"]:
        """Linear blend skinning of canonical points with per-point joint weights."""
        blended = (weights @ transforms[:, :3, :].reshape(24, 12)).reshape(-1, 3, 4)
        return (blended[:, :, :3] @ points[:, :, None])[:, :, 0] + blended[:, :, 3]

    def pose(
        self,
        pose: Float[Tensor, "24 3"],
        vertices: Optional[Float[Tensor, "V 3"]] = None,
        joints: Optional[Float[Tensor, "24 3"]] = None,
    ) -> PosedBody:
        """Poses canonical vertices/joints (default: the mean shape) with per-joint axis-angles."""
        if vertices is None or joints is None:
            vertices, joints = self.template, self.joints_template
        vertices, joints = vertices.to(self.dtype), joints.to(self.dtype)
        transforms, posed_joints = self.forward_kinematics(pose, joints)
        return PosedBody(self.skin(vertices, self.weights, transforms), posed_joints, transforms)
