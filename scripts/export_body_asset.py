"""Exports the small SMPL-like body asset ``gmnerf_ns/assets/body_anny.npz`` from the ``anny`` body model, once.

The synthetic data generator poses this asset with plain FK + LBS, so neither ``anny`` nor its ~790 MB cache is
needed at runtime or in CI. Run it only to regenerate the asset::

    ANNY_CACHE_DIR=/tmp/anny_cache python scripts/export_body_asset.py

What it does: samples adult ``anny`` phenotypes, takes their identity-pose (A-pose) meshes as canonical shapes, fits a
whitened PCA shape basis and a linear joint regressor on it, folds anny's 104-bone skinning weights into a SMPL-24
skeleton (each bone's weight goes to its nearest mapped ancestor), labels body-part regions, and finally checks the
asset's FK+LBS against anny's own posing. Only the default ``anny`` topology is used: the ``smpl``/``smplx``
topologies download non-commercial data.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gmnerf_ns.synth.body import (  # noqa: E402
    REGION_NAMES,
    SMPL_JOINT_NAMES,
    SMPL_PARENTS,
    BodyModel,
)
from gmnerf_ns.synth.writer import npz_bytes  # noqa: E402

SMPL_TO_ANNY = (
    "root", "upperleg01.L", "upperleg01.R", "spine04", "lowerleg01.L", "lowerleg01.R", "spine02", "foot.L", "foot.R",
    "spine01", "toe3-1.L", "toe3-1.R", "neck01", "clavicle.L", "clavicle.R", "head", "upperarm01.L", "upperarm01.R",
    "lowerarm01.L", "lowerarm01.R", "wrist.L", "wrist.R", "finger3-1.L", "finger3-1.R",
)  # fmt: skip
"""anny bone whose head is each SMPL-24 joint (hand-made map; its nearest-mapped-ancestor tree is SMPL's kintree)."""

PHENOTYPE_RANGES = {
    "gender": (0.0, 1.0),
    "age": (0.55, 0.9),
    "muscle": (0.15, 0.85),
    "weight": (0.1, 0.85),
    "height": (0.18, 0.55),
    "proportions": (0.2, 0.8),
}
"""Uniform sampling ranges of anny's phenotypes: adults (age 0.55..0.9) of varied build, about 1.45..2.0 m tall."""


@dataclass
class ExportConfig:
    """Options of the asset export."""

    out: Path = ROOT / "gmnerf_ns" / "assets" / "body_anny.npz"
    """Where to write the asset."""
    num_samples: int = 1000
    """Phenotypes sampled for the PCA (the last ``num_heldout`` are held out to measure its error)."""
    num_heldout: int = 100
    """Held-out phenotypes for the PCA error report."""
    num_components: int = 16
    """PCA shape components kept."""
    seed: int = 0
    """Sampling seed (the asset is deterministic for a seed)."""


def region_of_bone(name: str) -> str:
    """Body-part region of an anny bone (used for the dominant bone of each vertex)."""
    base = name.split(".")[0]
    if base in ("root", "pelvis", "spine05"):
        return "hips"
    if base in ("spine04", "spine03"):
        return "abdomen"
    if base in ("spine02", "spine01", "clavicle", "shoulder01"):
        return "chest"
    if base.startswith("neck"):
        return "neck"
    if base in ("head", "eye") or base.startswith(("jaw", "tongue", "levator", "oris", "orbicularis", "temporalis")):
        return "head"
    if base.startswith("upperarm"):
        return "upper_arm"
    if base.startswith("lowerarm"):
        return "lower_arm"
    if base.startswith(("wrist", "finger", "metacarpal")):
        return "hand"
    if base.startswith("upperleg"):
        return "upper_leg"
    if base.startswith("lowerleg"):
        return "lower_leg"
    if base.startswith(("foot", "toe")):
        return "foot"
    raise KeyError(f"no region for anny bone {name!r}")


def sample_phenotypes(labels, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, len(labels)) phenotypes, uniform in :data:`PHENOTYPE_RANGES`."""
    lo = np.array([PHENOTYPE_RANGES[k][0] for k in labels])
    hi = np.array([PHENOTYPE_RANGES[k][1] for k in labels])
    return lo + (hi - lo) * rng.random((count, len(labels)))


def anny_forward(model, phenotypes: np.ndarray, pose=None, batch: int = 200):
    """anny vertices and bone poses for a batch of phenotypes (identity pose unless ``pose`` (B,104,4,4) is given)."""
    verts, bones = [], []
    for start in range(0, len(phenotypes), batch):
        ph = torch.as_tensor(phenotypes[start : start + batch], dtype=torch.float64)
        kwargs = {k: ph[:, i] for i, k in enumerate(model.phenotype_labels)}
        if pose is None:
            eye = torch.eye(4, dtype=torch.float64).expand(len(ph), model.bone_count, 4, 4).clone()
            out = model(pose_parameters=eye, phenotype_kwargs=kwargs)
        else:
            out = model(pose_parameters=pose[start : start + batch], phenotype_kwargs=kwargs)
        verts.append(out["vertices"].numpy())
        bones.append(out["bone_poses"].numpy())
    return np.concatenate(verts), np.concatenate(bones)


def fold_weights(model, smpl_bone_ids) -> tuple[np.ndarray, np.ndarray]:
    """(V, 24) SMPL-24 weights (each anny bone's weight summed into its nearest mapped ancestor) and the bone map."""
    parents = list(model.bone_parents)
    slot_of_bone = {b: j for j, b in enumerate(smpl_bone_ids)}
    bone_to_slot = np.zeros(model.bone_count, dtype=np.int64)
    for b in range(model.bone_count):
        a = b
        while a not in slot_of_bone:
            a = parents[a]
        bone_to_slot[b] = slot_of_bone[a]
    w = model.vertex_bone_weights.double().numpy()
    idx = model.vertex_bone_indices.long().numpy()
    weights = np.zeros((w.shape[0], 24))
    np.add.at(weights, (np.repeat(np.arange(w.shape[0]), w.shape[1]), bone_to_slot[idx].reshape(-1)), w.reshape(-1))
    weights /= weights.sum(1, keepdims=True)
    return weights, bone_to_slot


def smpl_parents(model, smpl_bone_ids) -> list:
    """Parent of each mapped joint: the slot of the nearest mapped ancestor of its anny bone."""
    parents = list(model.bone_parents)
    out = []
    for bone in smpl_bone_ids:
        a = parents[bone]
        while a != -1 and a not in smpl_bone_ids:
            a = parents[a]
        out.append(-1 if a == -1 else smpl_bone_ids.index(a))
    return out


def vertex_regions(model, anny_root: Path) -> np.ndarray:
    """(V,) region index per vertex: the dominant anny bone's region, plus eyes and mouth/eye interior."""
    from anny.face_segmentation import get_face_segmentation_mask

    labels = model.bone_labels
    w = model.vertex_bone_weights.double().numpy()
    idx = model.vertex_bone_indices.long().numpy()
    dominant = idx[np.arange(len(idx)), w.argmax(1)]
    region = np.array([REGION_NAMES.index(region_of_bone(labels[b])) for b in dominant], dtype=np.uint8)
    faces = model.faces.long().numpy()
    seg_yaml = anny_root / "data/segmentation/body_parts_segmentation.yaml"
    import yaml

    seg_labels = yaml.safe_load(open(seg_yaml))["colors"].keys()
    interior = [k for k in seg_labels if k.startswith(("eye_back", "eye_cavity", "mouth_cavity", "tongue"))]
    eye = [k for k in seg_labels if k.startswith("eye_front")]
    for names, region_name in ((interior, "interior"), (eye, "eye")):
        mask = get_face_segmentation_mask(model, names).numpy()
        region[np.unique(faces[mask])] = REGION_NAMES.index(region_name)
    return region


def random_poses(rng: np.random.Generator, count: int, scale: float) -> np.ndarray:
    """(count, 24, 3) axis-angle test poses: a walking-like base plus random joint rotations."""
    poses = rng.normal(0.0, scale, (count, 24, 3))
    poses[:, [10, 11, 22, 23]] *= 0.3
    poses[:, 1, 0] += -0.5  # left hip forward
    poses[:, 2, 0] += 0.4  # right hip back
    poses[:, 4, 0] += 0.6  # left knee bent
    return poses


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues formula for (..., 3) axis-angles."""
    theta = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    axis = rotvec / np.maximum(theta, 1e-12)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(rotvec.shape[:-1] + (3, 3))
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def walking_poses(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 24, 3) poses of the generator's procedural walk (random styles and times)."""
    from gmnerf_ns.synth.motion import pose_at, sample_motion

    return np.stack([pose_at(sample_motion(rng), float(rng.uniform(0, 2)))[0] for _ in range(count)])


def verify(model, asset_path: Path, phenotypes: np.ndarray, smpl_bone_ids, rng) -> dict:
    """Max/mean vertex error (mm) of the asset's FK+LBS against anny, with exact and with PCA-projected shapes.

    Two pose sets: the generator's walk, and random rotations (std 0.25 rad on every joint) on top of a stride.
    """
    body = BodyModel.load(asset_path, dtype=torch.float64)
    canon_anny, bones = anny_forward(model, phenotypes)
    joints_anny = bones[:, list(smpl_bone_ids)][:, :, :3, 3]
    report = {}
    for pose_set, poses in (
        ("walk", walking_poses(rng, len(phenotypes))),
        ("random", random_poses(rng, len(phenotypes), 0.25)),
    ):
        delta = np.tile(np.eye(4), (len(phenotypes), model.bone_count, 1, 1))
        delta[:, list(smpl_bone_ids), :3, :3] = rotvec_to_matrix(poses)
        posed_anny, _ = anny_forward(model, phenotypes, pose=torch.as_tensor(delta))
        errors = {"lbs_exact_shape": [], "full_asset": []}
        for i in range(len(phenotypes)):
            pose = torch.as_tensor(poses[i])
            exact = body.pose(pose, vertices=torch.as_tensor(canon_anny[i]), joints=torch.as_tensor(joints_anny[i]))
            full = body.pose(pose, *body.shape(body.project_shape(torch.as_tensor(canon_anny[i]))))
            errors["lbs_exact_shape"].append(np.linalg.norm(exact.vertices.numpy() - posed_anny[i], axis=-1))
            errors["full_asset"].append(np.linalg.norm(full.vertices.numpy() - posed_anny[i], axis=-1))
        for key, errs in errors.items():
            errs = np.stack(errs) * 1000.0
            report[f"{pose_set}/{key}"] = {"max_mm": float(errs.max()), "mean_mm": float(errs.mean())}
    return report


def main(config: ExportConfig) -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if "ANNY_CACHE_DIR" not in os.environ:
        print("warning: ANNY_CACHE_DIR is not set; anny builds a ~790 MB cache in ~/.cache/anny")
    import anny

    start = time.time()
    model = anny.Anny(skinning_method="lbs")  # default 'anny' topology and rig only (others download NC data)
    labels = list(model.phenotype_labels)
    smpl_bone_ids = [model.bone_labels.index(b) for b in SMPL_TO_ANNY]
    rng = np.random.default_rng(config.seed)

    phenotypes = sample_phenotypes(labels, config.num_samples, rng)
    verts, bones = anny_forward(model, phenotypes)
    joints = bones[:, smpl_bone_ids][:, :, :3, 3]
    num_fit = config.num_samples - config.num_heldout
    flat = verts.reshape(len(verts), -1)
    mean = flat[:num_fit].mean(0)
    _, sing, vt = np.linalg.svd(flat[:num_fit] - mean, full_matrices=False)
    std = sing / np.sqrt(num_fit - 1)
    k = config.num_components
    basis = (vt[:k] * std[:k, None]).astype(np.float16)  # whitened: coefficients ~ unit variance
    coeffs = (flat - mean) @ vt[:k].T / std[:k]
    pca_report = {}
    for kk in sorted({10, k, 20}):
        rec = mean + ((flat[num_fit:] - mean) @ vt[:kk].T) @ vt[:kk]
        err = np.linalg.norm((rec - flat[num_fit:]).reshape(config.num_heldout, -1, 3), axis=-1) * 1000
        pca_report[kk] = {"max_mm": float(err.max()), "mean_mm": float(err.mean())}
    # Joints linear in the coefficients (anny's bone heads are linear in the rest vertices).
    design = np.concatenate([np.ones((num_fit, 1)), coeffs[:num_fit]], 1)
    sol, *_ = np.linalg.lstsq(design, joints[:num_fit].reshape(num_fit, -1), rcond=None)
    pred = np.concatenate([np.ones((config.num_heldout, 1)), coeffs[num_fit:]], 1) @ sol
    joint_err = np.linalg.norm((pred - joints[num_fit:].reshape(config.num_heldout, -1)).reshape(-1, 3), axis=-1)

    weights, _ = fold_weights(model, smpl_bone_ids)
    region = vertex_regions(model, Path(anny.__file__).parent)
    parents = smpl_parents(model, smpl_bone_ids)
    if tuple(parents) != tuple(SMPL_PARENTS):
        raise RuntimeError(f"joint map does not give the SMPL kintree: {parents}")
    provenance = {
        "source": f"anny {anny.__version__ if hasattr(anny, '__version__') else '0.6.2'} (NAVER), topology 'anny', "
        "rig 'anny', skinning 'lbs', identity pose (MakeHuman A-pose reference), metres, Z up, body facing -Y",
        "licence": "anny code Apache-2.0 (NAVER 2025); MakeHuman/MPFB2 mesh and shape data CC0 1.0. This derived "
        "asset is distributed under CC0 1.0 / Apache-2.0. No SMPL data is used; values are SMPL-style, not SMPL.",
        "phenotype_ranges": PHENOTYPE_RANGES,
        "num_samples": config.num_samples,
        "seed": config.seed,
        "pca_heldout_error": pca_report,
        "joint_regression_heldout_error_mm": {
            "max": float(joint_err.max() * 1000),
            "mean": float(joint_err.mean() * 1000),
        },
        "smpl24_to_anny_bone": dict(zip(SMPL_JOINT_NAMES, SMPL_TO_ANNY)),
    }
    config.out.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(
        format_version=np.int32(1),
        faces=model.faces.numpy().astype(np.int32),
        template=mean.reshape(-1, 3).astype(np.float32),
        shape_basis=basis.reshape(k, -1, 3),
        joints_template=sol[0].reshape(24, 3).astype(np.float32),
        joints_basis=sol[1:].reshape(k, 24, 3).astype(np.float32),
        lbs_weights=weights.astype(np.float16),
        parents=np.asarray(parents, dtype=np.int32),
        joint_names=np.asarray(SMPL_JOINT_NAMES),
        anny_bones=np.asarray(SMPL_TO_ANNY),
        vertex_region=region,
        region_names=np.asarray(REGION_NAMES),
        shape_samples=coeffs[:num_fit].astype(np.float16),
        phenotype_samples=phenotypes[:num_fit].astype(np.float16),
        phenotype_labels=np.asarray(labels),
        explained_std=std[:k].astype(np.float32),
        provenance=np.asarray(json.dumps(provenance)),
    )
    config.out.write_bytes(npz_bytes(arrays))
    report = verify(model, config.out, phenotypes[num_fit : num_fit + 12], smpl_bone_ids, rng)
    provenance["lbs_vs_anny_error"] = report
    arrays["provenance"] = np.asarray(json.dumps(provenance))
    config.out.write_bytes(npz_bytes(arrays))  # fixed zip timestamps: the same inputs give the same bytes
    print(json.dumps({k: v for k, v in provenance.items() if k not in ("smpl24_to_anny_bone", "licence")}, indent=1))
    print(f"wrote {config.out} ({config.out.stat().st_size / 1e6:.2f} MB) in {time.time() - start:.1f} s")


if __name__ == "__main__":
    main(tyro.cli(ExportConfig))
