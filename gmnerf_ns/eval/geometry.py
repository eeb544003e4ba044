"""Surfaces from GM-NeRF's density: a grid over the proxy box, marching cubes, and Chamfer/P2S against GT meshes.

Geometry metrics (THuman2.0-style, docs/paper_notes.md §3 [INFER]) follow PIFu / ICON: P2S and Chamfer in cm
(:func:`chamfer_and_p2s`).

The density is queried exactly where rendering queries it: inside the dilated proxy occupancy of the encoding
(``EncodedSources.occupancy``, sampled with ``sample_volume`` as ``GMNeRFModel.render_rays`` does); everywhere else
it is 0 (empty space). The grid is padded with one empty cell on every side so the surface is closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch
import trimesh
from jaxtyping import Float, Int
from scipy.spatial import cKDTree

from gmnerf_ns.data.human_record import SubjectRecord
from gmnerf_ns.model.field import EncodedSources
from gmnerf_ns.model.volume import normalize_points, sample_volume

DEFAULT_DENSITY_THRESHOLD = 10.0
"""Iso-level (1/m) of the extracted surface: a sample of ~6 cm (2 m box / 32 samples) at this density is ~45 %
opaque. Neural Body extracts at a comparable alpha level [INFER]."""


class GeometryError(RuntimeError):
    """No surface could be extracted (empty density, or the threshold is outside its range)."""


@dataclass
class DensityGrid:
    """Density sampled on a regular grid: ``values[i, j, k]`` is at ``origin + (i, j, k) * spacing``."""

    values: np.ndarray
    """(X, Y, Z) float32 density, 1/m."""
    origin: np.ndarray
    """(3,) world position of ``values[0, 0, 0]``."""
    spacing: float
    """Cell size, metres."""


@torch.no_grad()
def density_grid(model, encoded: EncodedSources, resolution: int = 96, chunk: int = 1 << 15) -> DensityGrid:
    """Samples the model's density over the proxy box of ``encoded``.

    Args:
        model: A :class:`~gmnerf_ns.model.gmnerf_model.GMNeRFModel`.
        encoded: ``model.encode(sources)`` of the subject-frame.
        resolution: Cells along the box's longest side.
        chunk: Points per field call.
    """
    bbox = encoded.sources.bbox.float()
    device = bbox.device
    spacing = float((bbox[1] - bbox[0]).max()) / resolution
    counts = [int(np.ceil(float(e) / spacing)) + 1 for e in (bbox[1] - bbox[0])]
    origin = bbox[0] - spacing  # one empty cell of padding
    axes = [origin[i] + spacing * torch.arange(counts[i] + 2, device=device, dtype=torch.float32) for i in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).view(-1, 3)  # (X*Y*Z, 3)
    density = torch.zeros(points.shape[0], device=device)
    inside = ((points >= bbox[0]) & (points <= bbox[1])).all(-1)
    box = normalize_points(points, bbox)
    occupancy = sample_volume(encoded.occupancy, box, padding_mode="zeros")
    active = ((occupancy.reshape(-1) > 1e-3) & inside).nonzero(as_tuple=True)[0]
    direction = torch.tensor([0.0, 0.0, -1.0], device=device)  # density does not depend on the view direction
    for start in range(0, active.numel(), chunk):
        idx = active[start : start + chunk]
        out = model.field(points[idx], direction.expand(idx.numel(), 3), encoded)
        density[idx] = out["density"][:, 0].float()
    shape = tuple(len(a) for a in axes)
    return DensityGrid(values=density.view(shape).cpu().numpy(), origin=origin.cpu().numpy(), spacing=spacing)


def extract_mesh(grid: DensityGrid, threshold: float = DEFAULT_DENSITY_THRESHOLD) -> trimesh.Trimesh:
    """Marching cubes at ``threshold`` (skimage), in world coordinates, normals pointing out of the person.

    Raises:
        GeometryError: If the density never crosses ``threshold``.
    """
    from skimage.measure import marching_cubes

    low, high = float(grid.values.min()), float(grid.values.max())
    if not low < threshold < high:
        raise GeometryError(f"the density (range {low:.3g} to {high:.3g} per metre) never crosses the threshold "
                            f"{threshold:g}, so there is no surface (use a threshold inside that range, or train "
                            "longer)")
    verts, faces, _, _ = marching_cubes(grid.values, level=threshold, spacing=(grid.spacing,) * 3)
    # skimage winds the triangles clockwise seen from low values (outside); flip them so that face normals, vertex
    # normals and the signed volume follow the usual outward convention.
    return trimesh.Trimesh(verts + grid.origin, faces[:, ::-1], process=False)


@torch.no_grad()
def colour_vertices(model, encoded: EncodedSources, mesh: trimesh.Trimesh, chunk: int = 1 << 15) -> None:
    """Sets ``mesh``'s vertex colours to the field's colour seen head-on (view direction = -normal)."""
    device = encoded.sources.bbox.device
    verts = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=device)
    normals = torch.as_tensor(np.asarray(mesh.vertex_normals), dtype=torch.float32, device=device)
    colours = []
    for start in range(0, verts.shape[0], chunk):
        out = model.field(verts[start : start + chunk], -normals[start : start + chunk], encoded)
        colours.append(out["rgb"].clamp(0, 1).cpu())
    rgb = (torch.cat(colours).numpy() * 255).round().astype(np.uint8) if colours else np.zeros((0, 3), np.uint8)
    mesh.visual.vertex_colors = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)


def model_mesh(model, sources, resolution: int = 96, threshold: float = DEFAULT_DENSITY_THRESHOLD,
               colours: bool = False) -> trimesh.Trimesh:
    """The surface of a subject-frame given its source views (encodes them, samples, runs marching cubes)."""
    model.eval()
    with torch.no_grad():
        encoded = model.encode(sources)
        mesh = extract_mesh(density_grid(model, encoded, resolution), threshold)
        if colours:
            colour_vertices(model, encoded, mesh)
    return mesh


def gt_mesh_path(subject: SubjectRecord, frame_id: int) -> Optional[Path]:
    """``<gt_mesh_dir>/<frame>.ply`` (or ``.obj``) of a subject-frame, if the dataset has one."""
    if subject.gt_mesh_dir is None:
        return None
    for suffix in (".ply", ".obj"):
        for stem in (str(frame_id), f"{frame_id:06d}"):
            path = Path(subject.gt_mesh_dir) / f"{stem}{suffix}"
            if path.is_file():
                return path
    return None


def load_mesh(path: Path) -> trimesh.Trimesh:
    """A triangle mesh from a .ply/.obj file.

    Raises:
        GeometryError: If the file holds no triangles.
    """
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as err:  # unreadable file: say which
        raise GeometryError(f"{path}: cannot read the mesh ({err})") from err
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise GeometryError(f"{path}: the mesh has no triangles")
    return mesh


def chamfer_and_p2s(
    pred_points: Float[np.ndarray, "N 3"],
    gt_vertices: Float[np.ndarray, "M 3"],
    gt_faces: Int[np.ndarray, "K 3"],
    pred_faces: Optional[Int[np.ndarray, "L 3"]] = None,
    num_samples: int = 10_000,
    to_cm: float = 100.0,
    seed: int = 0,
) -> Dict[str, float]:
    """P2S and Chamfer distance in centimetres, as PIFu / ICON report them.

    - P2S: mean distance from points of the predicted surface to the GT surface (exact point-to-triangle distance).
    - Chamfer: mean of P2S and the reverse direction, GT surface samples to the predicted surface (point-to-triangle
      when ``pred_faces`` is given, else to the nearest predicted point).

    Args:
        pred_points: Predicted surface points, or the predicted mesh's vertices when ``pred_faces`` is given.
        gt_vertices: GT mesh vertices.
        gt_faces: GT mesh triangles.
        pred_faces: Predicted mesh triangles; when given, ``num_samples`` points are sampled on that surface.
        num_samples: Points per direction (predicted points are randomly subsampled to this many).
        to_cm: Factor from the input unit to cm (100 for metres).
        seed: Sampling seed, so the metric is deterministic.

    Returns:
        ``{"chamfer_cm": float, "p2s_cm": float}``.
    """
    rng = np.random.default_rng(seed)
    gt_mesh = trimesh.Trimesh(np.asarray(gt_vertices, np.float64), np.asarray(gt_faces, np.int64), process=False)
    gt_samples, _ = trimesh.sample.sample_surface(gt_mesh, num_samples, seed=seed)
    pred_points = np.asarray(pred_points, np.float64)
    if pred_faces is not None:
        pred_mesh = trimesh.Trimesh(pred_points, np.asarray(pred_faces, np.int64), process=False)
        pred_samples, _ = trimesh.sample.sample_surface(pred_mesh, num_samples, seed=seed + 1)
        _, gt_to_pred, _ = trimesh.proximity.closest_point(pred_mesh, gt_samples)
    else:
        pred_samples = pred_points
        if len(pred_points) > num_samples:
            pred_samples = pred_points[rng.choice(len(pred_points), num_samples, replace=False)]
        gt_to_pred, _ = cKDTree(pred_points).query(gt_samples)
    _, pred_to_gt, _ = trimesh.proximity.closest_point(gt_mesh, pred_samples)
    p2s = float(np.mean(pred_to_gt)) * to_cm
    return {"chamfer_cm": 0.5 * (p2s + float(np.mean(gt_to_pred)) * to_cm), "p2s_cm": p2s}


def mesh_metrics(pred: trimesh.Trimesh, gt: trimesh.Trimesh, num_samples: int = 10_000) -> Dict[str, float]:
    """Chamfer and P2S (cm) of a predicted mesh against a GT mesh (:func:`chamfer_and_p2s`)."""
    return chamfer_and_p2s(np.asarray(pred.vertices), np.asarray(gt.vertices), np.asarray(gt.faces),
                           pred_faces=np.asarray(pred.faces), num_samples=num_samples)


def write_mesh(mesh: trimesh.Trimesh, path: Union[str, Path]) -> Path:
    """Writes ``.ply`` or ``.obj`` (by suffix)."""
    path = Path(path)
    if path.suffix.lower() not in (".ply", ".obj"):
        raise ValueError(f"{path}: mesh output must end in .ply or .obj")
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(path)
    return path
