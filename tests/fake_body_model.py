"""A FAKE body model with ``smplx``'s interface, for parsers that pose fitted parameters (no SMPL files exist here).

It is not SMPL's maths: ``vertices = (template + 1e-3 * betas[:3]) @ R(global_orient).T + transl`` (the rotation about
the origin), which is enough to check that a parser passes each parameter where smplx wants it and applies what comes
after (EasyMocap's ``Rh``/``Th``, dataset scales) itself.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import List, Optional

import cv2
import numpy as np
import torch

MODEL_FILES = ("smpl/SMPL_NEUTRAL.pkl", "smplh/SMPLH_NEUTRAL.pkl", "smplx/SMPLX_NEUTRAL.npz", "smplx/SMPLX_MALE.npz",
               "smplx/SMPLX_FEMALE.npz")


def fake_posed(template: np.ndarray, betas: np.ndarray, global_orient: np.ndarray, transl: np.ndarray) -> np.ndarray:
    """What :class:`FakeBodyModel` returns, in numpy (for the fixtures and the expected values)."""
    X = np.asarray(template, dtype=np.float64) + 1e-3 * np.asarray(betas, dtype=np.float64).reshape(-1)[:3]
    R = cv2.Rodrigues(np.asarray(global_orient, dtype=np.float64).reshape(3, 1))[0]
    return X @ R.T + np.asarray(transl, dtype=np.float64).reshape(1, 3)


class FakeBodyModel(torch.nn.Module):
    """Records every forward call's inputs in ``calls``."""

    def __init__(self, template: np.ndarray):
        super().__init__()
        self.template = np.asarray(template, dtype=np.float64)
        self.num_betas = 10
        self.num_expression_coeffs = 10
        n = len(template)
        self.faces = np.stack([np.arange(n - 2), np.arange(1, n - 1), np.arange(2, n)], 1)
        self.calls: List[dict] = []

    def forward(self, betas=None, body_pose=None, global_orient=None, transl=None, **kwargs):
        self.calls.append({"betas": betas, "body_pose": body_pose, "global_orient": global_orient,
                           "transl": transl, **kwargs})
        zeros = torch.zeros(1, 3)
        verts = fake_posed(self.template, betas.numpy(), (global_orient if global_orient is not None else zeros).numpy(),
                           (transl if transl is not None else zeros).numpy())
        return SimpleNamespace(vertices=torch.as_tensor(verts, dtype=torch.float32)[None])


def install_fake_smplx(monkeypatch, model_dir: Path, template: Optional[np.ndarray] = None) -> SimpleNamespace:
    """Replaces ``create_body_model`` (the one place a body model is built) with a fake building :class:`FakeBodyModel`
    (its ``template`` may be set later) and writes empty model files where smplx expects them. Returns a recorder:
    ``built`` (path, type, kwargs with the gender) per model, ``models``, ``template``."""
    from gmnerf_ns.data.parsers import _body_models

    for rel in MODEL_FILES:
        (model_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / rel).write_bytes(b"")
    fake = SimpleNamespace(dir=model_dir, built=[], models=[], template=template)

    def create(model_path, model_type, gender, **kwargs):
        fake.built.append((Path(model_path), model_type, {"gender": gender, **kwargs}))
        fake.models.append(FakeBodyModel(fake.template))
        return fake.models[-1]

    monkeypatch.setattr(_body_models, "create_body_model", create)
    return fake
