"""Tiny procedural datasets that mimic the real on-disk layouts and their quirks (never real data).

The "person" is an ellipsoid of points; its masks are the filled convex hull of the projected points, its images a
coloured ellipse on a noisy background. Cameras sit on a ring around it (OpenCV world-to-camera).
"""

from __future__ import annotations

import json
import pickle
from collections import namedtuple
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

CENTRE = np.array([0.0, 0.0, 0.9])
AXES = np.array([0.25, 0.15, 0.8])
LEGACY_CAMERAS = list(range(1, 20)) + [22, 23]  # ZJU-MoCap 313/315 "Camera (N)" folders
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
SMPLX_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
                 20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
                 21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53]


# ---------------------------------------------------------------------------------------------------- geometry
def ellipsoid_points(count: int, seed: int = 0, centre=CENTRE, axes=AXES) -> np.ndarray:
    """(count, 3) float32 points on an ellipsoid surface (the proxy "body")."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(count, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return (np.asarray(centre) + d * np.asarray(axes)).astype(np.float32)


def look_at(position: np.ndarray, target: np.ndarray, up: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """OpenCV world-to-camera (R, T) of a camera at ``position`` looking at ``target``."""
    forward = target - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return R, -R @ position


def ring_cameras(count: int, size: Tuple[int, int], radius: float = 3.5, focal: float = 100.0, up_axis: int = 2,
                 target=CENTRE) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(K, R, T metres) of ``count`` cameras on a ring around ``target`` (``up_axis`` is the world up)."""
    width, height = size
    up = np.eye(3)[up_axis]
    a, b = [i for i in range(3) if i != up_axis]
    cams = []
    for i in range(count):
        angle = 2 * np.pi * i / count
        position = np.array(target, dtype=np.float64).copy()
        position[a] += radius * np.cos(angle)
        position[b] += radius * np.sin(angle)
        R, T = look_at(position, np.asarray(target, dtype=np.float64), up)
        K = np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])
        cams.append((K, R, T))
    return cams


def project(points: np.ndarray, K: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(N, 2) OpenCV pixel coordinates of world points."""
    cam = points @ R.T + T.reshape(1, 3)
    uv = cam @ K.T
    return uv[:, :2] / uv[:, 2:]


def person_mask(points: np.ndarray, K, R, T, size: Tuple[int, int]) -> np.ndarray:
    """Bool (H, W) mask: filled convex hull of the projected proxy."""
    uv = project(points, K, R, T)
    hull = cv2.convexHull(np.round(uv).astype(np.int32))
    mask = np.zeros((size[1], size[0]), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def person_image(mask: np.ndarray, colour=(200, 80, 40), seed: int = 0) -> np.ndarray:
    """uint8 RGB image: the person colour inside the mask, noise outside."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, size=mask.shape + (3,), dtype=np.uint8)
    image[mask] = colour
    return image


def write_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def write_gray(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image.astype(np.uint8))


# ---------------------------------------------------------------------------------------------------- ZJU-MoCap
ZJUSubject = namedtuple("ZJUSubject", "folder cameras vertices frame_numbers camera_folders")


def make_zju_subject(root: Path, subject_id: int, *, legacy: bool = False, renamed: bool = False, num_frames: int = 3,
                     size: int = 64, num_vertices: int = 6890, lists: bool = False, new_fits: bool = True,
                     mask_dirs: Sequence[str] = ("mask", "mask_cihp"), distortion: float = 0.01,
                     body_model_faces: bool = False, synthetic: bool = False) -> ZJUSubject:
    """One ``CoreView_<id>`` folder (``subject_<id>`` if ``synthetic``) in the real ZJU-MoCap layout.

    K is stored as OpenCV calibrations do (pixel centres at integers), except for ``synthetic`` (half-pixel centres).
    ``legacy``: 313/315 scheme (21 ``Camera (N)`` folders, long 1-based names, K/D/R as Python lists);
    ``renamed``: after NHP's rename script (short names; ``mask/`` broken: one all-foreground file per folder).
    The ``mask`` folder holds the upper half of the person, ``mask_cihp`` the lower half with part labels, so only
    their union is the whole person (``mask`` alone, as in ``synthetic``, holds the whole person). ``vertices/`` is
    offset by 10 m when ``new_vertices/`` (the right one) exists.
    """
    name = f"subject_{subject_id:03d}" if synthetic else f"CoreView_{subject_id}"
    folder = root / name
    folders = [f"Camera ({k})" for k in LEGACY_CAMERAS] if legacy else [f"Camera_B{k}" for k in range(1, 24)]
    if synthetic:
        folders = [f"Camera_B{k}" for k in range(1, 9)]
    cameras = ring_cameras(len(folders), (size, size), focal=size * 1.5)
    frame_numbers = [i + 1 for i in range(num_frames)] if legacy else list(range(num_frames))
    all_vertices = []
    ims = []
    for f, number in enumerate(frame_numbers):
        verts = ellipsoid_points(num_vertices, seed=f) + np.float32([0.02 * f, 0, 0])
        all_vertices.append(verts)
        rels = []
        for c, (camera, (K, R, T)) in enumerate(zip(folders, cameras)):
            if legacy:
                k = LEGACY_CAMERAS[c]
                long_stem = f"CoreView_{subject_id}_Camera_({k})_{number:04d}_2019-08-23_16-08-50.592"
                stem = f"{number:04d}" if renamed else long_stem
                rels.append(f"{camera}/{long_stem}.jpg")  # annots keep the original names even after renaming
            else:
                stem = f"{number:06d}"
                rels.append(f"{camera}/{stem}.jpg")
            mask = person_mask(verts, K, R, T, (size, size))
            write_rgb(folder / camera / f"{stem}.jpg", person_image(mask, seed=c))
            rows = np.nonzero(mask.any(axis=1))[0]
            middle = (rows.min() + rows.max()) // 2 if len(rows) else size // 2
            upper, lower = mask.copy(), mask.copy()
            upper[middle:] = False
            lower[:middle] = False
            if "mask" in mask_dirs:
                if renamed:  # NHP's rename leaves one file per folder with an unrelated name and content
                    write_gray(folder / "mask" / camera / f"{frame_numbers[-1]:04d}.png", np.full_like(mask, 255, np.uint8))
                else:  # the upper half when mask_cihp holds the lower half, else the whole person (gmnerf-synth)
                    half = upper if "mask_cihp" in mask_dirs else mask
                    write_gray(folder / "mask" / camera / f"{stem}.png", half * np.uint8(255))
            if "mask_cihp" in mask_dirs:
                labels = np.where(lower, 1 + (c % 19), 0).astype(np.uint8)  # CIHP part ids, nonzero = foreground
                write_gray(folder / "mask_cihp" / camera / f"{stem}.png", labels)
        ims.append({"ims": rels, "kpts2d": np.zeros((len(folders), 25, 3))})
        for sub, offset in (("vertices", 10.0 if new_fits else 0.0), ("new_vertices", 0.0)):
            if sub == "new_vertices" and not new_fits:
                continue
            (folder / sub).mkdir(parents=True, exist_ok=True)
            np.save(folder / sub / f"{number}.npy", verts + np.float32(offset))
        (folder / "params").mkdir(exist_ok=True)
        np.save(folder / "params" / f"{number}.npy", {"poses": np.zeros((1, 72)), "Rh": np.zeros((1, 3)),
                                                       "Th": np.zeros((1, 3)), "shapes": np.zeros((1, 10))})

    def wrap(value):
        return value.tolist() if lists else value

    shift = np.diag([0.0, 0.0, 0.0])
    if synthetic:  # our renderers store K with half-pixel centres (the physical camera is the same)
        shift[:2, 2] = 0.5
    cams = {
        "K": [wrap(K + shift) for K, _, _ in cameras],
        "D": [wrap(np.array([[distortion], [0.0], [0.0], [0.0], [0.0]])) for _ in cameras],
        "R": [wrap(R) for _, R, _ in cameras],
        "T": [wrap((T * 1000.0).reshape(3, 1)) for _, _, T in cameras],
    }
    np.save(folder / "annots.npy", {"cams": cams, "ims": ims})
    if body_model_faces:
        faces = np.stack([np.arange(num_vertices - 2), np.arange(1, num_vertices - 1), np.arange(2, num_vertices)], 1)
        np.savez(folder / "body_model.npz", faces=faces.astype(np.int64))
    return ZJUSubject(folder, cameras, all_vertices, frame_numbers, folders)


def make_synthetic_dataset(root: Path, subjects: Iterable[int] = (0, 1, 2), test: Iterable[int] = (2,),
                           num_frames: int = 2, num_vertices: int = 13718) -> Dict[str, ZJUSubject]:
    """Our built-in layout: ``split.json`` + ZJU-layout ``subject_<id>`` folders with meshes and body_model.npz."""
    out = {}
    for i in subjects:
        sub = make_zju_subject(root, i, synthetic=True, num_frames=num_frames, size=48, num_vertices=num_vertices,
                               new_fits=False, mask_dirs=("mask",), distortion=0.0, body_model_faces=True)
        (sub.folder / "meshes").mkdir(exist_ok=True)
        for f in range(num_frames):
            (sub.folder / "meshes" / f"{f}.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
        (sub.folder / "subject.json").write_text(json.dumps({"name": sub.folder.name}))
        out[sub.folder.name] = sub
    names = sorted(out)
    test_names = [f"subject_{i:03d}" for i in test]
    split = {"train": [n for n in names if n not in test_names], "test": test_names}
    (root / "split.json").write_text(json.dumps(split))
    return out


def synthetic_datamanager(data: Path, world_size: int = 1, local_rank: int = 0, **kwargs):
    """The gm-nerf datamanager on a :func:`make_synthetic_dataset` folder: 48-px images, 3 input views, 32-px
    patches; ``kwargs`` are further ``GMNeRFDataManagerConfig`` options."""
    from gmnerf_ns.data.datamanager import GMNeRFDataManagerConfig
    from gmnerf_ns.data.parsers.synthetic import SyntheticDataParserConfig

    config = GMNeRFDataManagerConfig(dataparser=SyntheticDataParserConfig(data=data, resolution=48, num_input_views=3),
                                     patch_size=32, **kwargs)
    return config.setup(device="cpu", world_size=world_size, local_rank=local_rank)


# ---------------------------------------------------------------------------------------------------- GeneBody
GENEBODY_UNITS = 1.0
"""GeneBody's annotations are in metres (docs/datasets.md); ``make_genebody(units=2.87)`` writes the rescaled world of
the genebody-benchmarks loaders instead."""


def make_genebody(root: Path, subjects: Dict[str, Sequence[int]], num_frames: int = 2, size=(48, 40),
                  split: Optional[Dict[str, List[str]]] = None, num_vertices: int = 300,
                  units: float = GENEBODY_UNITS) -> Dict[str, dict]:
    """GeneBody subjects ``{name: view numbers present}`` in ``units`` per metre (GeneBody's own: metres), y-up world.

    Returns per subject the cameras in metres and the frames' vertices in metres, for checks.
    """
    info = {}
    centre = np.array([0.0, 0.9, 0.0])
    for s, (name, present) in enumerate(subjects.items()):
        folder = root / name
        cameras = ring_cameras(48, size, focal=70.0, up_axis=1, target=centre)
        cams = {}
        for v, (K, R, T) in enumerate(cameras):
            c2w = np.eye(4)
            c2w[:3, :3] = R.T
            c2w[:3, 3] = (-R.T @ T) * units
            cams[f"{v:02d}"] = {"K": K, "D": np.zeros(5), "c2w": c2w}
        folder.mkdir(parents=True)
        np.save(folder / "annots.npy", {"cams": cams})
        frames = []
        for f in range(num_frames):
            verts = ellipsoid_points(num_vertices, seed=10 * s + f, centre=centre, axes=(0.25, 0.8, 0.15))
            frames.append(verts)
            write_obj(folder / "smpl" / f"{f:04d}.obj", verts * units, _strip_faces(num_vertices))
            for v in present:
                K, R, T = cameras[v]
                mask = person_mask(verts, K, R, T, size)
                write_rgb(folder / "image" / f"{v:02d}" / f"{f:04d}.jpg", person_image(mask, seed=v))
                write_gray(folder / "mask" / f"{v:02d}" / f"mask{f:04d}.png", mask * np.uint8(255))
        info[name] = {"cameras": cameras, "vertices": frames, "folder": folder}
    if split is not None:
        np.save(root / "genebody_split.npy", split)
    return info


def _strip_faces(n: int) -> np.ndarray:
    return np.stack([np.arange(n - 2), np.arange(1, n - 1), np.arange(2, n)], 1)


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, uvs: Optional[np.ndarray] = None,
              face_uvs: Optional[np.ndarray] = None, mtl: Optional[str] = None) -> None:
    """A Wavefront OBJ (1-based indices; ``v/vt`` faces when UVs are given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"mtllib {mtl}"] if mtl else []
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    if uvs is not None:
        lines += [f"vt {u:.6f} {v:.6f}" for u, v in uvs]
        lines += ["usemtl material0"] if mtl else []
        lines += [f"f {a + 1}/{ta + 1} {b + 1}/{tb + 1} {c + 1}/{tc + 1}" for (a, b, c), (ta, tb, tc) in zip(faces, face_uvs)]
    else:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------------- scans
def uv_sphere(rows: int = 8, cols: int = 12, centre=(0.0, 0.9, 0.0), axes=(0.3, 0.8, 0.2)):
    """A textured UV ellipsoid, y-up: (vertices (V,3), faces (F,3), uvs (T,2), face_uvs (F,3))."""
    verts, uvs = [], []
    for i in range(rows + 1):
        theta = np.pi * i / rows
        for j in range(cols + 1):
            phi = 2 * np.pi * j / cols
            d = np.array([np.sin(theta) * np.cos(phi), np.cos(theta), np.sin(theta) * np.sin(phi)])
            verts.append(np.asarray(centre) + d * np.asarray(axes))
            uvs.append((j / cols, 1.0 - i / rows))
    faces = []
    for i in range(rows):
        for j in range(cols):
            a, b = i * (cols + 1) + j, i * (cols + 1) + j + 1
            c, d = a + cols + 1, b + cols + 1
            faces += [(a, c, b), (b, c, d)]
    faces = np.asarray(faces)
    return np.asarray(verts), faces, np.asarray(uvs), faces.copy()


def checker_texture(size: int = 64) -> np.ndarray:
    """uint8 RGB texture: red top half, blue bottom half (OBJ v=1 is the top row)."""
    tex = np.zeros((size, size, 3), np.uint8)
    tex[: size // 2] = (220, 30, 30)
    tex[size // 2:] = (30, 30, 220)
    return tex


def make_thuman2(root: Path, ids: Sequence[str] = ("0000", "0001", "0002")) -> Tuple[Path, Path]:
    """``THuman2.0_Release/<id>/<id>.obj + material0.mtl/jpeg`` and ``THuman2.0_Smpl_X_Paras/<id>/smplx_param.pkl``."""
    scans, params = root / "THuman2.0_Release", root / "THuman2.0_Smpl_X_Paras"
    for n, sid in enumerate(ids):
        v, f, uv, fuv = uv_sphere()
        write_obj(scans / sid / f"{sid}.obj", v + [0.05 * n, 0, 0], f, uv, fuv, mtl="material0.mtl")
        (scans / sid / "material0.mtl").write_text("newmtl material0\nKd 1 1 1\nmap_Kd material0.jpeg\n")
        write_rgb(scans / sid / "material0.jpeg", checker_texture())
        (params / sid).mkdir(parents=True, exist_ok=True)
        param = {
            "betas": np.zeros((1, 10), np.float32), "global_orient": np.zeros((1, 3), np.float32),
            "body_pose": np.zeros((1, 63), np.float32), "left_hand_pose": np.zeros((1, 12), np.float32),
            "right_hand_pose": np.zeros((1, 12), np.float32), "jaw_pose": np.zeros((1, 3), np.float32),
            "leye_pose": np.zeros((1, 3), np.float32), "reye_pose": np.zeros((1, 3), np.float32),
            "expression": np.zeros((1, 10), np.float32), "scale": np.array([1.1], np.float32),
            "translation": np.array([[0.05 * n, 0.2, 0.0]], np.float32),
        }
        with open(params / sid / "smplx_param.pkl", "wb") as handle:
            pickle.dump(param, handle)
    return scans, params


def make_multigarment(root: Path, ids: Sequence[str] = ("125611508622317", "125611520103063")) -> Path:
    """``Multi-Garment_dataset/<id>/scan.obj, scan_tex.jpg, registration.pkl`` (Python-2 style pickle, protocol 2)."""
    base = root / "Multi-Garment_dataset"
    for n, sid in enumerate(ids):
        v, f, uv, fuv = uv_sphere()
        write_obj(base / sid / "scan.obj", v, f, uv, fuv)
        write_rgb(base / sid / "scan_tex.jpg", checker_texture())
        registration = {"pose": np.zeros(72), "betas": np.zeros(10), "trans": np.array([0.0, 0.1 * n, 0.0]),
                        "gender": "male"}
        with open(base / sid / "registration.pkl", "wb") as handle:
            pickle.dump(registration, handle, protocol=2)
    return base


def _template(count: int, seed: int) -> np.ndarray:
    return ellipsoid_points(count, seed=seed, centre=(0.0, 0.2, 0.0), axes=(0.25, 0.8, 0.15)).astype(np.float64)


def make_fake_smpl(model_dir: Path) -> np.ndarray:
    """A FAKE ``<model_dir>/smpl/SMPL_NEUTRAL.pkl`` with SMPL's keys and shapes (never the real model)."""
    rng = np.random.default_rng(0)
    v, j = 6890, 24
    v_template = _template(v, 1)
    weights = np.zeros((v, j))
    weights[np.arange(v), rng.integers(0, j, v)] = 1.0
    regressor = rng.random((j, v))
    data = {
        "v_template": v_template, "f": rng.integers(0, v, (13776, 3)).astype(np.uint32),
        "shapedirs": rng.normal(scale=1e-3, size=(v, 3, 10)), "posedirs": np.zeros((v, 3, 207)),
        "J_regressor": regressor / regressor.sum(1, keepdims=True), "weights": weights,
        "kintree_table": np.stack([np.array(SMPL_PARENTS), np.arange(j)]).astype(np.int64),
    }
    (model_dir / "smpl").mkdir(parents=True, exist_ok=True)
    for gender in ("NEUTRAL", "MALE"):
        with open(model_dir / "smpl" / f"SMPL_{gender}.pkl", "wb") as handle:
            pickle.dump(data, handle, protocol=2)
    return v_template


def make_fake_smplx(model_dir: Path) -> np.ndarray:
    """A FAKE ``<model_dir>/smplx/SMPLX_MALE.npz`` with SMPL-X's keys and shapes (never the real model)."""
    rng = np.random.default_rng(1)
    v, j = 10475, 55
    v_template = _template(v, 2)
    weights = np.zeros((v, j), np.float32)
    weights[np.arange(v), rng.integers(0, j, v)] = 1.0
    regressor = rng.random((j, v)).astype(np.float32)
    (model_dir / "smplx").mkdir(parents=True, exist_ok=True)
    np.savez(
        model_dir / "smplx" / "SMPLX_MALE.npz",
        v_template=v_template, f=rng.integers(0, v, (20908, 3)).astype(np.int64),
        shapedirs=rng.normal(scale=1e-3, size=(v, 3, 20)).astype(np.float32),
        posedirs=np.zeros((v, 3, 486), np.float32),
        J_regressor=regressor / regressor.sum(1, keepdims=True), weights=weights,
        kintree_table=np.stack([np.array(SMPLX_PARENTS), np.arange(j)]).astype(np.int64),
        lmk_faces_idx=np.arange(51, dtype=np.int64), lmk_bary_coords=np.full((51, 3), 1 / 3, np.float32),
        hands_componentsl=np.eye(45, dtype=np.float32), hands_componentsr=np.eye(45, dtype=np.float32),
        hands_meanl=np.zeros(45, np.float32), hands_meanr=np.zeros(45, np.float32),
    )
    return v_template


# ---------------------------------------------------------------------------------------------------- nerfstudio
def nerfstudio_pixel(cameras, index: int, point: np.ndarray) -> Tuple[float, float]:
    """Continuous (u, v) of a world point in a nerfstudio camera (OpenGL c2w; pixel (i, j) centre at i + 0.5)."""
    c2w = cameras.camera_to_worlds[index].double().numpy()
    local = c2w[:3, :3].T @ (np.asarray(point, dtype=np.float64) - c2w[:3, 3])  # x right, y up, z back
    u = cameras.fx[index].item() * local[0] / -local[2] + cameras.cx[index].item()
    v = cameras.fy[index].item() * -local[1] / -local[2] + cameras.cy[index].item()
    return u, v


def ray_miss_distance(cameras, index: int, u: float, v: float, point: np.ndarray) -> float:
    """Distance from ``point`` to the nerfstudio ray generated through image coordinates (u, v)."""
    import torch

    rays = cameras.generate_rays(camera_indices=index, coords=torch.tensor([[v, u]], dtype=torch.float32))
    offset = np.asarray(point, dtype=np.float64) - rays.origins[0].double().numpy()
    d = rays.directions[0].double().numpy()
    return float(np.linalg.norm(offset - offset.dot(d) * d))


# ---------------------------------------------------------------------------------------------------- EasyMocap
EasyMocapCapture = namedtuple("EasyMocapCapture", "folder cameras names vertices params template")


def write_opencv_yaml(path: Path, entries: Sequence[Tuple[str, object, str]], writer: str = "easymocap") -> None:
    """An OpenCV FileStorage YAML file of ``(key, value, kind)`` entries (``kind``: mat, list, int).

    ``writer="easymocap"`` writes the text exactly as EasyMocap's ``FileStorage(isWrite=True)`` does (zju3dv/EasyMocap
    ``easymocap/mytools/camera_utils.py``: ``%YAML:1.0`` header, ``\\r\\n`` line ends, quoted names, ``{:.6f}``
    matrix data); ``writer="cv2"`` writes it with ``cv2.FileStorage`` in write mode.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if writer == "cv2":
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
        for key, value, kind in entries:
            if kind == "list":
                fs.startWriteStruct(key, cv2.FileNode_SEQ)
                for item in value:
                    fs.write("", str(item))
                fs.endWriteStruct()
            else:
                fs.write(key, np.asarray(value, dtype=np.float64) if kind == "mat" else int(value))
        fs.release()
        return
    lines = ["%YAML:1.0", "---"]
    for key, value, kind in entries:
        if kind == "mat":
            value = np.asarray(value, dtype=np.float64)
            lines += [f"{key}: !!opencv-matrix", f"  rows: {value.shape[0]}", f"  cols: {value.shape[1]}", "  dt: d",
                      "  data: [{}]".format(", ".join(f"{x:.6f}" for x in value.reshape(-1)))]
        elif kind == "list":
            lines += [f"{key}:"] + [f'  - "{item}"' for item in value]
        else:
            lines.append(f"{key}: {value}")
    with open(path, "w", newline="") as handle:
        handle.write("\r\n".join(lines) + "\r\n")


def easymocap_json(people: Sequence[dict]) -> str:
    """EasyMocap's result-file text (``write_common_results``): arrays as [[...]] rows with ``\\r\\n`` inside."""
    blocks = []
    for person in people:
        fields = [f'        "id": {person["id"]}']
        for key, value in person.items():
            if key == "id":
                continue
            rows = np.atleast_2d(np.asarray(value, dtype=np.float64))
            text = ",\r\n".join("          [" + ", ".join(f"{x:.6f}" for x in row) + "]" for row in rows)
            fields.append(f'        "{key}": [\r\n{text}\r\n        ]')
        blocks.append("    {\n" + ",\n".join(fields) + "\n    }")
    return "[\n" + ",\n".join(blocks) + "\n]\n"


def make_easymocap_capture(root: Path, name: str = "capture", *, num_cameras: int = 6, num_frames: int = 3,
                           size: Tuple[int, int] = (48, 40), num_vertices: int = 200, fits: Sequence[str] = ("vertices",),
                           people: Sequence[int] = (0,), rot_only: bool = False, writer: str = "easymocap",
                           template: Optional[np.ndarray] = None, fit_scale: float = 1e-3) -> EasyMocapCapture:
    """A capture in EasyMocap's layout: intri.yml/extri.yml, images/<cam>/, mask/<cam>/ (0/255), output/<fits>/.

    The body of frame f is ``template`` (an ellipsoid about the origin unless given) placed EasyMocap's way,
    ``V = R(Rh) X + Th`` with ``Rh`` a turn about the (z) up axis and ``Th`` near ``CENTRE``; ``X`` is the template
    moved by ``fit_scale * shapes[:3]`` (what the tests' fake body model computes from the written ``shapes``).
    ``fits``: ``vertices`` writes ``output/vertices/<frame>.json``, ``smpl`` writes ``output/smpl/<frame>.json`` (72
    SMPL poses with the root zero). Other ``people`` ids stand 5 m away, out of view. Camera names are "01", "02", ...
    """
    folder = root / name
    names = [f"{i + 1:02d}" for i in range(num_cameras)]
    cameras = ring_cameras(num_cameras, size, focal=size[1] * 1.2)
    if template is None:
        template = ellipsoid_points(num_vertices, seed=7, centre=(0.0, 0.0, 0.0), axes=AXES)
    intri = [("names", names, "list")]
    extri = [("names", names, "list")]
    for cam, (K, R, T) in zip(names, cameras):
        intri += [(f"K_{cam}", K, "mat"), (f"dist_{cam}", np.zeros((1, 5)), "mat"), (f"H_{cam}", size[1], "int"),
                  (f"W_{cam}", size[0], "int")]
        if not rot_only:
            extri.append((f"R_{cam}", cv2.Rodrigues(R)[0], "mat"))
        extri += [(f"Rot_{cam}", R, "mat"), (f"T_{cam}", T.reshape(3, 1), "mat")]
    write_opencv_yaml(folder / "intri.yml", intri, writer)
    write_opencv_yaml(folder / "extri.yml", extri, writer)
    all_vertices, all_params = [], []
    for f in range(num_frames):
        stem = f"{f:06d}"
        frame_people, frame_params, verts_people = [], [], []
        for person in people:
            shapes = np.zeros((1, 10))
            shapes[0, :3] = [0.3, -0.2, 0.1 * (f + 1)]
            Rh = np.array([[0.0, 0.0, 0.3 * f]])
            Th = (CENTRE + np.array([0.02 * f + (5.0 if person != people[0] else 0.0), 0.0, 0.0]))[None]
            X = template + fit_scale * shapes[0, :3]
            verts = (X @ cv2.Rodrigues(Rh.reshape(3, 1))[0].T + Th).astype(np.float32)
            poses = np.zeros((1, 72))
            poses[0, 3:] = np.linspace(-0.1, 0.1, 69)
            frame_params.append({"id": person, "Rh": Rh, "Th": Th, "poses": poses, "shapes": shapes})
            verts_people.append({"id": person, "vertices": verts})
            frame_people.append(verts)
        all_vertices.append(frame_people[0])
        all_params.append(frame_params)
        if "vertices" in fits:
            (folder / "output" / "vertices").mkdir(parents=True, exist_ok=True)
            (folder / "output" / "vertices" / f"{stem}.json").write_text(easymocap_json(verts_people))
        if "smpl" in fits:
            (folder / "output" / "smpl").mkdir(parents=True, exist_ok=True)
            (folder / "output" / "smpl" / f"{stem}.json").write_text(easymocap_json(frame_params))
        for c, (cam, (K, R, T)) in enumerate(zip(names, cameras)):
            mask = person_mask(frame_people[0], K, R, T, size)
            write_rgb(folder / "images" / cam / f"{stem}.jpg", person_image(mask, seed=c))
            write_gray(folder / "mask" / cam / f"{stem}.png", mask * np.uint8(255))
    return EasyMocapCapture(folder, cameras, names, all_vertices, all_params, template)


def fraction_in_masks(frame) -> float:
    """Share of a parsed frame's proxy vertices that project inside the foreground of every view's loaded mask.

    Uses what the model uses: ``load_vertices``, ``load_view`` (undistort, crop, resize) and each view's
    ``output_intrinsics`` with ``project_points`` (a point at ``uv`` lies in pixel ``floor(uv)``).
    """
    import torch

    from gmnerf_ns.data.human_record import load_vertices
    from gmnerf_ns.data.view_loader import load_view
    from gmnerf_ns.geometry.camera_math import project_points

    verts = torch.from_numpy(load_vertices(frame)).double()
    inside, total = 0, 0
    for view in frame.views:
        _, mask = load_view(view)
        uv, depth = project_points(verts, torch.tensor(view.output_intrinsics), torch.tensor(view.R),
                                   torch.tensor(view.T))
        pixel = torch.floor(uv).long().numpy()
        h, w = mask.shape
        ok = (pixel[:, 0] >= 0) & (pixel[:, 0] < w) & (pixel[:, 1] >= 0) & (pixel[:, 1] < h) & (depth.numpy() > 0)
        hit = np.zeros(len(pixel), bool)
        hit[ok] = mask[pixel[ok, 1], pixel[ok, 0]]
        inside += int(hit.sum())
        total += len(pixel)
    return inside / total


# ---------------------------------------------------------------------------------------------------- HuMMan
HuMManSequence = namedtuple("HuMManSequence", "folder cameras vertices frames template")


def make_humman(root: Path, name: str = "p000455_a000986", *, frames: Sequence[int] = (0, 6, 12), num_cameras: int = 4,
                size: Tuple[int, int] = (64, 36), num_vertices: int = 200, unfit: Sequence[int] = ()) -> HuMManSequence:
    """A HuMMan-Recon sequence: ``cameras.json`` (color and depth Kinects), ``kinect_color/kinect_00N/<frame>.png``,
    soft ``kinect_mask/`` masks, ``smpl_params/<frame>.npz`` (none for the ``unfit`` frames).

    The world frame is camera ``kinect_color_000``'s, as in HuMMan (y down). The SMPL parameters are posed by the tests'
    fake body model (``fake_body_model.py``); the masks are the projections of that pose.
    """
    from tests.fake_body_model import fake_posed

    folder = root / name
    ring = ring_cameras(num_cameras, size, radius=3.0, focal=size[1] * 1.1)
    R0, T0 = ring[0][1], ring[0][2]
    cameras, cams_json = [], {}
    for i, (K, R, T) in enumerate(ring):
        R_new, T_new = R @ R0.T, T - R @ R0.T @ T0  # world = camera 0's frame
        cameras.append((K, R_new, T_new))
        cams_json[f"kinect_color_{i:03d}"] = {"K": K.tolist(), "R": R_new.tolist(), "T": T_new.tolist()}
        depth_K = np.array([[50.0, 0, 32.0], [0, 50.0, 28.0], [0, 0, 1]])
        cams_json[f"kinect_depth_{i:03d}"] = {"K": depth_K.tolist(), "R": np.eye(3).tolist(), "T": [0.03, 0.0, 0.0]}
    folder.mkdir(parents=True)
    (folder / "cameras.json").write_text(json.dumps(cams_json))
    template = ellipsoid_points(num_vertices, seed=3, centre=(0.0, 0.0, 0.0), axes=AXES)
    all_vertices = []
    for f in frames:
        go_ring = np.array([0.0, 0.0, 0.2 + 0.01 * f])
        t_ring = CENTRE + np.array([0.01 * f, 0.0, 0.0])
        global_orient = cv2.Rodrigues(R0 @ cv2.Rodrigues(go_ring.reshape(3, 1))[0])[0].reshape(3)
        transl = R0 @ t_ring + T0
        betas = np.linspace(0.5, -0.5, 10)
        verts = fake_posed(template, betas, global_orient, transl)
        all_vertices.append(verts.astype(np.float32))
        if f not in unfit:
            (folder / "smpl_params").mkdir(exist_ok=True)
            np.savez(folder / "smpl_params" / f"{f:06d}.npz", global_orient=global_orient.astype(np.float32),
                     body_pose=np.full(69, 0.01, np.float32), betas=betas.astype(np.float32),
                     transl=transl.astype(np.float32))
        for c, (K, R, T) in enumerate(cameras):
            mask = person_mask(verts, K, R, T, size)
            write_rgb(folder / "kinect_color" / f"kinect_{c:03d}" / f"{f:06d}.png", person_image(mask, seed=c))
            soft = cv2.GaussianBlur(mask * np.float32(255), (3, 3), 0)  # matting: soft edges
            write_gray(folder / "kinect_mask" / f"kinect_{c:03d}" / f"{f:06d}.png", soft)
    return HuMManSequence(folder, cameras, all_vertices, list(frames), template)


# ---------------------------------------------------------------------------------------------------- MVHumanNet
MVHumanNetOutfit = namedtuple("MVHumanNetOutfit", "folder cameras names vertices numbers template scale")


def make_mvhumannet(root: Path, outfit: str = "100001", *, num_cameras: int = 6, missing_cameras: Sequence[int] = (4,),
                    fits: Sequence[int] = (0, 1, 2), unfit: Sequence[int] = (), size: Tuple[int, int] = (48, 36),
                    num_vertices: int = 200, scale: float = 120 / 65) -> MVHumanNetOutfit:
    """An MVHumanNet outfit folder: ``camera_extrinsics.json`` (full-resolution K, translations in mm / ``scale``),
    ``camera_intrinsics.json``, ``camera_scale.pkl``, half-resolution ``images_lr/<cam>/<frame>_img.jpg`` and soft
    ``fmask_lr/<cam>/<frame>_img_fmask.png``, SMPL-X fits ``smplx/smpl/<i>.json`` (EasyMocap layout, 87 poses) and
    ``smplx/smplx_mesh/<i>.obj`` for image frame 5 (i + 1).

    ``missing_cameras`` are calibrated but have no images (fewer cameras than the rig); ``unfit`` fits are absent
    (incomplete fits). ``cameras`` are the stored (half-resolution) OpenCV cameras. The body is the fake body model's
    (``fake_body_model.py``) template placed EasyMocap's way, ``R(Rh) X + Th``.
    """
    from tests.fake_body_model import fake_posed

    folder = root / outfit
    folder.mkdir(parents=True)
    cameras = ring_cameras(num_cameras, size, focal=size[1] * 1.1)
    names = [f"CC32871A{i:03d}" for i in range(num_cameras)]
    extrinsics = {}
    for name, (K, R, T) in zip(names, cameras):
        focal, centre = 2 * K[0, 0], 2 * K[:2, 2] + 0.5  # full resolution: twice the stored size
        extrinsics[f"1_{name}.png"] = {
            "focal_length": [focal, focal], "image_center": centre.tolist(),
            "translation": (T * 1000.0 / scale).tolist(), "camera_pos": (-R.T @ T * 1000.0 / scale).tolist(),
            "quaternion": [1.0, 0.0, 0.0, 0.0], "rotation": R.tolist(),
        }
    (folder / "camera_extrinsics.json").write_text(json.dumps(extrinsics, indent=4))
    first = extrinsics[f"1_{names[0]}.png"]
    f0, (cx0, cy0) = first["focal_length"][0], first["image_center"]
    full_K = [[f0, 0, cx0], [0, f0, cy0], [0, 0, 1]]  # the release's shared full-resolution K
    (folder / "camera_intrinsics.json").write_text(json.dumps({"intrinsics": full_K, "dist": []}, indent=4))
    with open(folder / "camera_scale.pkl", "wb") as handle:
        pickle.dump(scale, handle)
    template = ellipsoid_points(num_vertices, seed=5, centre=(0.0, 0.0, 0.0), axes=AXES)
    all_vertices, numbers = [], []
    for fit in fits:
        number = 5 * (fit + 1)
        shapes = np.linspace(0.2, -0.2, 10)[None]
        Rh, Th = np.array([[0.0, 0.0, 0.4 * fit]]), (CENTRE + np.array([0.0, 0.01 * fit, 0.0]))[None]
        verts = fake_posed(template, shapes, np.zeros(3), np.zeros(3)) @ cv2.Rodrigues(Rh.reshape(3, 1))[0].T + Th
        all_vertices.append(verts.astype(np.float32))
        numbers.append(number)
        if fit not in unfit:
            poses = np.zeros((1, 87))
            poses[0, 3:66] = 0.01
            person = {"id": 0, "Rh": Rh, "Th": Th, "poses": poses, "expression": np.zeros((1, 10)), "shapes": shapes}
            (folder / "smplx" / "smpl").mkdir(parents=True, exist_ok=True)
            (folder / "smplx" / "smpl" / f"{fit:06d}.json").write_text(easymocap_json([person]))
            write_obj(folder / "smplx" / "smplx_mesh" / f"{fit:06d}.obj", verts, _strip_faces(num_vertices))
        for c, (name, (K, R, T)) in enumerate(zip(names, cameras)):
            if c in missing_cameras:
                continue
            mask = person_mask(verts, K, R, T, size)
            write_rgb(folder / "images_lr" / name / f"{number:04d}_img.jpg", person_image(mask, seed=c))
            soft = np.where(cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0, 150, 0)
            soft[mask] = 255  # soft edge outside the silhouette, below GIGA's threshold of 200
            write_gray(folder / "fmask_lr" / name / f"{number:04d}_img_fmask.png", soft)
    return MVHumanNetOutfit(folder, cameras, names, all_vertices, numbers, template, scale)


# ---------------------------------------------------------------------------------------------------- DNA-Rendering
DNASequence = namedtuple("DNASequence", "main annots cameras vertices template")


def make_dna_rendering(root: Path, seq: str = "0012_03", *, layout: str = "release", num_5mp: int = 4,
                       num_12mp: int = 2, num_frames: int = 3, num_fits: int = 2, size_5mp: Tuple[int, int] = (48, 40),
                       size_12mp: Tuple[int, int] = (64, 47), num_vertices: int = 200) -> DNASequence:
    """A DNA-Rendering sequence as its ``SMCReader`` reads it: main ``.smc`` (``Camera_5mp/<id>/color/<frame>`` and
    ``Camera_12mp/...``: JPEG bytes; ``gender`` attribute) and ``_annots.smc`` (``Camera_Parameter/<NN>/{K, D, RT}``
    with RT camera-to-world, ``Mask/<id>/mask/<frame>``: 3-channel JPEG bytes, ``SMPLx/{fullpose, betas, expression,
    transl, scale}``).

    ``layout="release"``: ``main/<seq>.smc`` + ``annotations/<seq>_annots.smc``; ``"flat"``: both in ``root``. The
    annotations are short the way some real files are: ``betas`` has one row, ``expression`` one frame, ``fullpose``
    ``num_fits`` frames (fewer than the images). ``cameras``: {id: (K, R, T)} in OpenCV world-to-camera. The body is the
    fake body model's (``fake_body_model.py``) SMPL-X posed by ``fullpose[f, 0]`` and ``transl``.
    """
    import h5py

    from tests.fake_body_model import fake_posed

    main_dir, annots_dir = (root / "main", root / "annotations") if layout == "release" else (root, root)
    main_dir.mkdir(parents=True, exist_ok=True)
    annots_dir.mkdir(parents=True, exist_ok=True)
    groups = {"Camera_5mp": (list(range(num_5mp)), size_5mp), "Camera_12mp": (list(range(48, 48 + num_12mp)), size_12mp)}
    ring = ring_cameras(num_5mp + num_12mp, (1, 1), radius=3.2)
    cameras = {}
    for group, (ids, size) in groups.items():
        for cam in ids:
            _, R, T = ring[cam if cam < 48 else num_5mp + cam - 48]
            K = np.array([[size[1] * 1.1, 0, (size[0] - 1) / 2], [0, size[1] * 1.1, (size[1] - 1) / 2], [0, 0, 1]])
            cameras[cam] = (K, R, T, size)
    template = ellipsoid_points(num_vertices, seed=9, centre=(0.0, 0.0, 0.0), axes=AXES)
    fullpose = np.zeros((num_fits, 55, 3))
    fullpose[:, 0] = [[0.0, 0.0, 0.25 * f] for f in range(num_fits)]
    fullpose[:, 1:22] = 0.02
    transl = np.stack([CENTRE + [0.02 * f, 0.0, 0.0] for f in range(num_fits)])
    betas = np.linspace(-0.4, 0.4, 10)[None]
    vertices = [fake_posed(template, betas, fullpose[f, 0], transl[f]).astype(np.float32) for f in range(num_fits)]
    main_path, annots_path = main_dir / f"{seq}.smc", annots_dir / f"{seq}_annots.smc"
    with h5py.File(main_path, "w") as main, h5py.File(annots_path, "w") as annots:
        main.attrs.update({"actor_id": 12, "performance_id": 3, "age": 30, "gender": "female", "height": 170,
                           "weight": 60})
        params = annots.create_group("Camera_Parameter")
        for group, (ids, size) in groups.items():
            g = main.create_group(group)
            g.attrs.update({"num_device": len(ids), "num_frame": num_frames, "resolution": size[::-1]})
            for cam in ids:
                K, R, T, _ = cameras[cam]
                c2w = np.eye(4)
                c2w[:3, :3], c2w[:3, 3] = R.T, -R.T @ T
                p = params.create_group(f"{cam:02d}")
                p["K"], p["D"], p["RT"], p["Color_Calibration"] = K, np.zeros(5), c2w, np.eye(3)
                for f in range(num_frames):
                    verts = vertices[min(f, num_fits - 1)]
                    mask = person_mask(verts, K, R, T, size)
                    image = cv2.cvtColor(person_image(mask, seed=cam), cv2.COLOR_RGB2BGR)
                    g.create_dataset(f"{cam}/color/{f}", data=np.frombuffer(cv2.imencode(".jpg", image)[1], np.uint8))
                    mask3 = np.repeat((mask * np.uint8(255))[..., None], 3, axis=2)
                    annots.create_dataset(f"Mask/{cam}/mask/{f}",
                                          data=np.frombuffer(cv2.imencode(".jpg", mask3)[1], np.uint8))
        smplx = annots.create_group("SMPLx")
        smplx["fullpose"], smplx["betas"], smplx["transl"] = fullpose, betas, transl
        smplx["expression"], smplx["scale"] = np.zeros((1, 10)), np.array([1.02])
    return DNASequence(main_path, annots_path, {k: v[:3] for k, v in cameras.items()}, vertices, template)
