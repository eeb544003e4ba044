"""Renders textured scans (THuman2.0, Multi-garment) into our built-in layout, the ZJU-MoCap layout of gmnerf-synth.

The protocol is ours (GM-NeRF's render settings are unpublished) and written down in docs/datasets.md: a perspective ring
of ``num_views`` cameras at ``radius`` metres around the centre of the scan's bounding box, unlit texture colours on a
black background, binary masks, no distortion. The world frame is the scan frame turned +90 degrees about x so that +z
is up (as in ZJU-MoCap); camera 0 looks at the front of the scan (scan +z). Each scan becomes one subject with one
frame (``000000``); the proxy is the dataset's own body-model fit posed with ``smplx``.

Run ``python scripts/render_scans.py thuman2 --help`` or ``... multigarment --help``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Literal, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import tyro
from typing_extensions import Annotated

from gmnerf_ns.core.errors import HumanDataError
from gmnerf_ns.data.parsers import smpl_proxy
from gmnerf_ns.data.parsers._files import DatasetFolder

WORLD_FROM_SCAN = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Scans are y-up; our world (like ZJU-MoCap's) is z-up: scan (x, y, z) -> world (x, -z, y)."""


@dataclass
class RingConfig:
    """The camera ring every scan is rendered from (our protocol)."""

    num_views: int = 24
    """Cameras, evenly spaced in azimuth (15 degrees apart by default)."""
    resolution: int = 512
    """Image width and height in pixels."""
    radius: float = 3.0
    """Distance from the camera centres to the centre of the scan's bounding box, metres."""
    focal: float = 1.2
    """Focal length in units of the image size (fx = fy = focal * resolution): 2.5 m tall field of view at 3 m."""
    elevation: float = 0.0
    """Camera elevation in degrees above the centre (the cameras then look down at it)."""
    supersample: int = 2
    """Anti-aliasing: rasterise at this multiple of the resolution and box-filter down (mask: >= half covered)."""
    jpeg_quality: int = 95
    """JPEG quality of the colour images."""


@dataclass
class TexturedMesh:
    """A triangle mesh with per-face texture coordinates."""

    vertices: np.ndarray
    """(V, 3) float64 positions."""
    faces: np.ndarray
    """(F, 3) int64 vertex indices."""
    uvs: np.ndarray
    """(T, 2) texture coordinates (OBJ convention: v = 0 is the bottom row)."""
    face_uvs: np.ndarray
    """(F, 3) int64 indices into ``uvs``."""
    texture: np.ndarray
    """(H, W, 3) uint8 RGB texture image."""


Rasterizer = Callable[..., object]
"""``rasterize(verts_cam, faces, K, height, width) -> Rasterized(face_id, bary, depth)``
(gmnerf_ns.geometry.rasterize)."""


def default_rasterizer() -> Rasterizer:
    """The project's rasteriser, with a clear error when it is not installed."""
    try:
        from gmnerf_ns.geometry.rasterize import rasterize
    except ImportError as err:
        raise RuntimeError(f"gmnerf_ns.geometry.rasterize is not available ({err}); it renders the scans") from err
    return rasterize


# ---------------------------------------------------------------------------------------------------- reading
def load_textured_obj(path: Path, texture: Optional[Path] = None) -> TexturedMesh:
    """Reads an OBJ with ``v``/``vt``/``f v/vt`` lines (polygons fanned) and its texture image.

    The texture is ``texture`` if given, else the ``map_Kd`` of the OBJ's ``mtllib``.
    """
    if not path.is_file():
        raise HumanDataError(f"{path}: scan mesh is missing")
    vertices, uvs, faces, face_uvs, mtllib = [], [], [], [], None
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("v "):
                    vertices.append(line.split()[1:4])
                elif line.startswith("vt "):
                    uvs.append(line.split()[1:3])
                elif line.startswith("f "):
                    tokens = [tok.split("/") for tok in line.split()[1:]]
                    vi = [int(t[0]) for t in tokens]
                    ti = [int(t[1]) if len(t) > 1 and t[1] else 0 for t in tokens]
                    for k in range(1, len(vi) - 1):
                        faces.append((vi[0], vi[k], vi[k + 1]))
                        face_uvs.append((ti[0], ti[k], ti[k + 1]))
                elif line.startswith("mtllib "):
                    mtllib = line.split(None, 1)[1].strip()
        vertices_np = np.asarray(vertices, dtype=np.float64)
        uvs_np = np.asarray(uvs, dtype=np.float64).reshape(-1, 2)
    except (OSError, ValueError) as err:
        raise HumanDataError(f"{path}: cannot parse the OBJ file ({err})") from err
    if len(vertices_np) == 0 or not faces:
        raise HumanDataError(f"{path}: OBJ has no vertices or no faces")
    faces_np, face_uvs_np = _obj_index(faces, len(vertices_np)), np.asarray(face_uvs, dtype=np.int64)
    if len(uvs_np) == 0 or (face_uvs_np == 0).any():
        raise HumanDataError(f"{path}: scan needs texture coordinates (vt) on every face to be rendered")
    face_uvs_np = _obj_index(face_uvs, len(uvs_np))
    if faces_np.min() < 0 or faces_np.max() >= len(vertices_np) or face_uvs_np.max() >= len(uvs_np):
        raise HumanDataError(f"{path}: face indices out of range")
    if not np.isfinite(vertices_np).all():
        raise HumanDataError(f"{path}: vertices contain NaN or inf")
    texture = texture or _texture_from_mtl(path, mtllib)
    image = cv2.imread(str(texture), cv2.IMREAD_COLOR) if texture.is_file() else None
    if image is None:
        raise HumanDataError(f"{texture}: texture image is missing or unreadable (for {path})")
    return TexturedMesh(vertices_np, faces_np, uvs_np, face_uvs_np, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def _obj_index(indices: List[Tuple[int, int, int]], count: int) -> np.ndarray:
    array = np.asarray(indices, dtype=np.int64)
    return np.where(array > 0, array - 1, array + count)  # OBJ: 1-based, negative = relative to the end


def _texture_from_mtl(obj_path: Path, mtllib: Optional[str]) -> Path:
    """The ``map_Kd`` texture of the OBJ's material file; both must lie in the scan's folder."""
    if mtllib is None:
        raise HumanDataError(f"{obj_path}: no mtllib line; pass the texture image explicitly")
    inside = DatasetFolder(obj_path.parent)
    mtl = inside.check(obj_path.parent / mtllib, obj_path, "material file")
    if not mtl.is_file():
        raise HumanDataError(f"{mtl}: material file named by {obj_path} is missing")
    for line in mtl.read_text(errors="replace").splitlines():
        if line.strip().startswith("map_Kd"):
            return inside.check(obj_path.parent / line.split(None, 1)[1].strip(), mtl, "texture")
    raise HumanDataError(f"{mtl}: no map_Kd texture line")


# ---------------------------------------------------------------------------------------------------- rendering
def ring_cameras(ring: RingConfig, centre: np.ndarray) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(K, R, T metres) of the ring's cameras, OpenCV world-to-camera, world +z up, camera 0 on the -y side.

    ``K`` uses the rasteriser's (and nerfstudio's) pixel convention, pixel centres at ``i + 0.5``, as gmnerf-synth
    stores it in ``annots.npy``.
    """
    size = ring.resolution
    K = np.array([[ring.focal * size, 0.0, size / 2], [0.0, ring.focal * size, size / 2], [0.0, 0.0, 1.0]])
    elevation = np.deg2rad(ring.elevation)
    cameras = []
    for i in range(ring.num_views):
        azimuth = 2 * np.pi * i / ring.num_views
        offset = np.array([np.cos(elevation) * np.sin(azimuth), -np.cos(elevation) * np.cos(azimuth),
                           np.sin(elevation)])
        position = centre + ring.radius * offset
        forward = (centre - position) / ring.radius
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        R = np.stack([right, np.cross(forward, right), forward])
        cameras.append((K.copy(), R, -R @ position))
    return cameras


def render_view(mesh: TexturedMesh, K: np.ndarray, R: np.ndarray, T: np.ndarray, size: int,
                rasterizer: Rasterizer, supersample: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB image with black background, bool mask) of the textured mesh seen by one camera."""
    s = max(int(supersample), 1)
    K_render = K.astype(np.float64).copy()
    K_render[:2] *= s  # exact in the pixel-corner convention
    verts_cam = torch.from_numpy(mesh.vertices @ R.T + T).float()
    out = rasterizer(verts_cam, torch.from_numpy(mesh.faces).long(), torch.from_numpy(K_render).float(), size * s,
                     size * s)
    face_id = out.face_id.cpu().numpy().astype(np.int64)
    bary = out.bary.cpu().numpy().astype(np.float64)
    hit = face_id >= 0
    corners = mesh.uvs[mesh.face_uvs[np.where(hit, face_id, 0)]]  # (H, W, 3, 2)
    uv = (bary[..., None] * corners).sum(-2)
    tex_h, tex_w = mesh.texture.shape[:2]
    map_x = (uv[..., 0] * tex_w - 0.5).astype(np.float32)
    map_y = ((1.0 - uv[..., 1]) * tex_h - 0.5).astype(np.float32)
    image = cv2.remap(mesh.texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    image[~hit] = 0
    if s > 1:  # box filter: exact s x s block averages
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        coverage = cv2.resize(hit.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        return image, coverage >= 0.5
    return image, hit


def write_subject(folder: Path, mesh: TexturedMesh, proxy: np.ndarray, proxy_faces: np.ndarray, ring: RingConfig,
                  rasterizer: Rasterizer, info: dict) -> None:
    """Renders one scan (already in world coordinates) into ``folder`` in the built-in (ZJU-MoCap) layout."""
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    centre = (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
    cameras = ring_cameras(ring, centre)
    rels = []
    for i, (K, R, T) in enumerate(cameras):
        camera = f"Camera_B{i + 1}"
        image, mask = render_view(mesh, K, R, T, ring.resolution, rasterizer, ring.supersample)
        for path, array, params in ((partial / camera / "000000.jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                     [cv2.IMWRITE_JPEG_QUALITY, ring.jpeg_quality]),
                                    (partial / "mask" / camera / "000000.png", mask.astype(np.uint8) * 255, [])):
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), array, params)
        rels.append(f"{camera}/000000.jpg")
    cams = {"K": [K for K, _, _ in cameras], "D": [np.zeros((5, 1)) for _ in cameras],
            "R": [R for _, R, _ in cameras], "T": [(T * 1000.0).reshape(3, 1) for _, _, T in cameras]}  # mm, as ZJU
    np.save(partial / "annots.npy", {"cams": cams, "ims": [{"ims": rels}]})
    for sub in ("vertices", "meshes"):
        (partial / sub).mkdir()
    np.save(partial / "vertices" / "0.npy", proxy.astype(np.float32))
    write_ply(partial / "meshes" / "0.ply", mesh.vertices, mesh.faces)
    np.savez(partial / "body_model.npz", faces=proxy_faces.astype(np.int64))
    (partial / "subject.json").write_text(json.dumps({**info, "ring": asdict(ring), "world": "scan frame turned "
                                                      "+90 deg about x (z up)", "frames": 1}, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Binary little-endian PLY of a triangle mesh (ground truth for geometry metrics)."""
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(vertices)}\nproperty float x\n"
              f"property float y\nproperty float z\nelement face {len(faces)}\n"
              "property list uchar int vertex_indices\nend_header\n")
    face_rows = np.zeros(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face_rows["n"], face_rows["i"] = 3, faces
    with open(path, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(np.asarray(vertices, dtype="<f4").tobytes())
        handle.write(face_rows.tobytes())


def write_split(output: Path, all_subjects: Sequence[str], num_test: int) -> dict:
    """``split.json``: the last ``num_test`` subjects (sorted ids, whole source dataset) are held out.

    The split is fixed by the source dataset, not by what was rendered so far; only rendered subjects are listed.
    """
    names = sorted(all_subjects)
    if len(names) == 1:
        test_names = set(names)
    else:
        test_names = set(names[len(names) - min(max(num_test, 1), len(names) - 1):])
    rendered = {p.name for p in output.iterdir() if (p / "annots.npy").is_file()}
    split = {"train": [n for n in names if n in rendered and (n not in test_names or len(names) == 1)],
             "test": [n for n in names if n in rendered and n in test_names]}
    (output / "split.json").write_text(json.dumps(split, indent=1))
    return split


# ---------------------------------------------------------------------------------------------------- CLIs
@dataclass
class _RenderScans:
    output: Path = Path("data/scans_render")
    """Output dataset root (our built-in layout, read by the thuman2 / multi-garment dataparsers)."""
    body_model_dir: Optional[Path] = None
    """Folder with your SMPL/SMPL-X files as smplx expects (smpl/SMPL_NEUTRAL.pkl, smplx/SMPLX_MALE.npz)."""
    subjects: Optional[Tuple[str, ...]] = None
    """Render only these subject ids (default: every scan)."""
    ring: RingConfig = field(default_factory=RingConfig)
    """The camera ring (our protocol; keep the defaults to compare with published numbers of this plugin)."""
    overwrite: bool = False
    """Re-render subjects that are already in the output."""

    def all_subjects(self) -> List[str]:
        raise NotImplementedError

    def render_one(self, name: str, rasterizer: Rasterizer) -> None:
        raise NotImplementedError

    def main(self, rasterizer: Optional[Rasterizer] = None) -> dict:
        """Renders the selected scans and (re)writes ``split.json``."""
        names = self.all_subjects()
        if not names:
            raise HumanDataError(f"{self.scans}: no scans found")
        wanted = list(self.subjects) if self.subjects else names
        unknown = [s for s in wanted if s not in names]
        if unknown:
            raise HumanDataError(f"{self.scans}: unknown subjects {', '.join(unknown)}; available: "
                                 f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
        self.check_body_model()
        rasterizer = rasterizer or default_rasterizer()
        self.output.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(wanted):
            if (self.output / name / "annots.npy").is_file() and not self.overwrite:
                continue
            print(f"[{i + 1}/{len(wanted)}] {name}", flush=True)
            self.render_one(name, rasterizer)
        return write_split(self.output, names, self.num_test)

    def check_body_model(self) -> None:
        raise NotImplementedError


@dataclass
class RenderTHuman2(_RenderScans):
    """Render THuman2.0 scans (``<scans>/<id>/<id>.obj`` + ``material0.jpeg``) with their SMPL-X fits as proxies."""

    scans: Path = Path("THuman2.0_Release")
    """THuman2.0 scan folder (``<id>/<id>.obj``, ``material0.mtl``, ``material0.jpeg``)."""
    smplx_params: Path = Path("THuman2.0_Smpl_X_Paras")
    """SMPL-X fits (``<id>/smplx_param.pkl``)."""
    output: Path = Path("data/thuman2_render")
    """Output dataset root (read by the thuman2 dataparser)."""
    num_test: int = 26
    """The last N scan ids are held out (all 526 scans: 0500-0525; our split)."""
    gender: str = "male"
    """SMPL-X model the fits were made with (ICON, which released them, uses male)."""

    def all_subjects(self) -> List[str]:
        if not self.scans.is_dir():
            raise HumanDataError(f"{self.scans}: THuman2.0 scan folder not found")
        return sorted(p.name for p in self.scans.iterdir() if (p / f"{p.name}.obj").is_file())

    def check_body_model(self) -> None:
        smpl_proxy.model_file(self.body_model_dir, "smplx", self.gender)

    def render_one(self, name: str, rasterizer: Rasterizer) -> None:
        mesh = load_textured_obj(self.scans / name / f"{name}.obj")
        proxy, faces = smpl_proxy.thuman2_smplx(self.smplx_params / name / "smplx_param.pkl", self.body_model_dir,
                                                self.gender)
        mesh.vertices = mesh.vertices @ WORLD_FROM_SCAN.T
        write_subject(self.output / name, mesh, proxy @ WORLD_FROM_SCAN.T, faces, self.ring, rasterizer,
                      {"dataset": "THuman2.0", "source": str(self.scans / name), "body_model": "smplx",
                       "gender": self.gender})


@dataclass
class RenderMultiGarment(_RenderScans):
    """Render Multi-garment scans (``<id>/scan.obj`` + ``scan_tex.jpg``) with their SMPL registrations as proxies."""

    scans: Path = Path("Multi-Garment_dataset")
    """Multi-garment folder (``<id>/scan.obj``, ``scan_tex.jpg``, ``registration.pkl``); Part-1 and Part-2 merged."""
    output: Path = Path("data/multigarment_render")
    """Output dataset root (read by the multi-garment dataparser)."""
    num_test: int = 16
    """The last N subject ids (sorted) are held out (our split)."""
    gender: Literal["neutral", "male", "female", "registration"] = "neutral"
    """SMPL model to pose the registration with; MGN registered with the neutral model."""

    def all_subjects(self) -> List[str]:
        if not self.scans.is_dir():
            raise HumanDataError(f"{self.scans}: Multi-garment folder not found")
        return sorted(p.name for p in self.scans.iterdir() if (p / "scan.obj").is_file())

    def check_body_model(self) -> None:
        smpl_proxy.model_file(self.body_model_dir, "smpl", "neutral" if self.gender == "registration" else self.gender)

    def render_one(self, name: str, rasterizer: Rasterizer) -> None:
        folder = self.scans / name
        mesh = load_textured_obj(folder / "scan.obj", texture=folder / "scan_tex.jpg")
        gender = None if self.gender == "registration" else self.gender
        proxy, faces = smpl_proxy.mgn_smpl(folder / "registration.pkl", self.body_model_dir, gender)
        mesh.vertices = mesh.vertices @ WORLD_FROM_SCAN.T
        write_subject(self.output / name, mesh, proxy @ WORLD_FROM_SCAN.T, faces, self.ring, rasterizer,
                      {"dataset": "Multi-garment", "source": str(folder), "body_model": "smpl", "gender": self.gender})


Commands = Union[
    Annotated[RenderTHuman2, tyro.conf.subcommand("thuman2")],
    Annotated[RenderMultiGarment, tyro.conf.subcommand("multigarment")],
]


def entrypoint() -> None:
    """Console entry point: ``render_scans.py {thuman2,multigarment} ...``."""
    tyro.extras.set_accent_color("bright_yellow")
    command = tyro.cli(Commands, description=__doc__.split("\n\n")[0])
    try:
        split = command.main()
    except HumanDataError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"done: {len(split['train'])} train / {len(split['test'])} test subjects in {command.output}/split.json")


if __name__ == "__main__":
    entrypoint()
