"""Render an orbit video of one subject-frame from a trained GM-NeRF run (console script ``gmnerf-orbit``).

The cameras circle the subject's proxy at its mid height, at the distance and focal length of the dataset's own
cameras, so the person fills the frame as in the training views. Writes ``orbit.gif``, ``orbit.mp4`` (when ffmpeg is
available via mediapy), the frames as PNG, and ``orbit_sheet.png`` (a contact sheet for READMEs and reports).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import tyro
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.utils.eval_utils import eval_setup
from nerfstudio.utils.rich_utils import CONSOLE
from rich.progress import track

from gmnerf_ns.data.human_dataparser import opencv_w2c_to_nerfstudio_c2w


@dataclass
class OrbitRender:
    """Render an orbit around a (by default held-out) subject."""

    load_config: Path
    """config.yml of a finished gm-nerf run (outputs/<name>/<method>/<timestamp>/config.yml)."""
    output_dir: Optional[Path] = None
    """Where to write the video and frames (default: <run>/orbit/<subject>_<frame>). Must not exist unless --force."""
    subject: Optional[str] = None
    """Subject name (default: the first held-out subject)."""
    frame: Optional[int] = None
    """Frame id (default: the subject's first evaluation frame)."""
    num_views: int = 36
    """Cameras on the orbit."""
    resolution: Optional[int] = None
    """Image size in pixels (default: the dataset's)."""
    elevation: float = 10.0
    """Degrees above the subject's mid height."""
    fps: int = 12
    force: bool = False
    """Overwrite an existing output folder."""

    def main(self) -> Path:
        _, pipeline, _, _ = eval_setup(self.load_config, test_mode="test")
        dm = pipeline.datamanager
        subject = next((s for s in dm.eval_collection.subjects if s.name == self.subject), None) if self.subject else \
            dm.eval_collection.subjects[0]
        if subject is None:
            subject = next((s for s in dm.train_collection.subjects if s.name == self.subject), None)
        if subject is None:
            raise SystemExit(f"unknown subject {self.subject!r}; available: {', '.join(dm.subject_names)}")
        frame_id = self.frame if self.frame is not None else subject.frames[0].frame_id
        index = dm.subject_names.index(subject.name)
        sources = dm.source_views(index, frame_id)
        out_dir = self.output_dir or self.load_config.parent / "orbit" / f"{subject.name}_{frame_id}"
        if out_dir.exists() and any(out_dir.iterdir()) and not self.force:
            raise SystemExit(f"{out_dir} exists; pass --force to overwrite it or choose --output-dir")
        out_dir.mkdir(parents=True, exist_ok=True)

        view = subject.frames[0].views[0]
        K = view.output_intrinsics
        size = self.resolution or view.out_size[1]
        scale = size / view.out_size[1]
        center = sources.bbox.mean(0).numpy()
        radius = float(np.linalg.norm(view.camera_center[:2] - center[:2]))
        frames = []
        for k in track(range(self.num_views), description=f"orbit of {subject.name} frame {frame_id}"):
            camera = orbit_camera(center, radius, 360.0 * k / self.num_views, self.elevation, K[0, 0] * scale, size)
            camera.metadata = {"subject_index": torch.tensor([[index]]), "frame_id": torch.tensor([[frame_id]])}
            with torch.no_grad():
                rgb = pipeline.model.get_outputs_for_camera(camera)["rgb"].clamp(0, 1).cpu().numpy()
            frames.append((rgb * 255).astype(np.uint8))
        save_frames(frames, out_dir, self.fps)
        CONSOLE.log(f"orbit written to {out_dir}")
        return out_dir


def orbit_camera(center: np.ndarray, radius: float, azimuth_deg: float, elevation_deg: float, focal: float,
                 size: int) -> Cameras:
    """A nerfstudio camera on a circle around ``center`` (world z up) looking at it."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    eye = center + radius * np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
    z = (center - eye) / np.linalg.norm(center - eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    c2w = torch.from_numpy(opencv_w2c_to_nerfstudio_c2w(R, -R @ eye)).float()
    return Cameras(camera_to_worlds=c2w[None], fx=focal, fy=focal, cx=size / 2, cy=size / 2, width=size, height=size,
                   camera_type=CameraType.PERSPECTIVE)


def save_frames(frames, out_dir: Path, fps: int) -> None:
    """PNG frames, a contact sheet, a GIF and (if ffmpeg is available) an mp4."""
    import imageio.v2 as imageio

    for i, frame in enumerate(frames):
        imageio.imwrite(out_dir / f"{i:04d}.png", frame)
    step = max(1, len(frames) // 8)
    imageio.imwrite(out_dir / "orbit_sheet.png", np.concatenate(frames[::step][:8], axis=1))
    imageio.mimsave(out_dir / "orbit.gif", frames, duration=1.0 / fps, loop=0)
    try:
        import mediapy

        mediapy.write_video(out_dir / "orbit.mp4", frames, fps=fps)
    except Exception as err:  # ffmpeg missing: the PNGs are still there
        CONSOLE.log(f"[yellow]no mp4 written ({err}); frames are PNGs in {out_dir}")


def entrypoint():
    tyro.extras.set_accent_color("bright_yellow")
    tyro.cli(OrbitRender).main()


if __name__ == "__main__":
    entrypoint()
