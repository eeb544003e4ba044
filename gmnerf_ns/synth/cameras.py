"""A static ring of calibrated cameras around the capture area (OpenCV K, R, T; world metres, Z up).

Cameras are roughly evenly spaced in azimuth with varied distance and height and look at the subject's mid-body.
The focal length of each camera is chosen so that the whole capture volume (a cylinder around the walked circle)
fits in the image, so the subject is never cropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np


@dataclass
class Camera:
    """One pinhole camera: ``x_cam = R x_world + T`` (metres); K in the pixel-centre convention of rasterize.py."""

    K: np.ndarray
    R: np.ndarray
    T: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        return -self.R.T @ self.T


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """World-to-camera rotation of an OpenCV camera (x right, y down, z forward) at ``eye`` looking at ``target``."""
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    right = right / np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward])


@dataclass(frozen=True)
class RigRanges:
    """Ranges the cameras of a ring are drawn from (uniformly, per camera)."""

    distance: Tuple[float, float] = (2.6, 3.8)
    """Horizontal distance from the capture centre (metres)."""
    height: Tuple[float, float] = (0.5, 2.3)
    """Camera height above the floor (metres)."""
    zoom_out: Tuple[float, float] = (0.88, 1.0)
    """Focal length as a fraction of the tightest one that frames the capture volume (1 = tightest)."""


def ring_cameras(
    rng: np.random.Generator,
    num_cameras: int,
    resolution: int,
    subject_height: float,
    capture_radius: float,
    width: Optional[int] = None,
    ranges: RigRanges = RigRanges(),
) -> List[Camera]:
    """``num_cameras`` cameras on a ring looking at mid-body, each framing the whole capture cylinder.

    Args:
        rng: random stream of the subject's cameras.
        num_cameras: cameras on the ring.
        resolution: image height in pixels.
        subject_height: standing height of the subject (metres).
        capture_radius: radius around the origin that the subject (arms included) stays within.
        width: image width in pixels (default: ``resolution``, square images).
        ranges: distance, height and zoom ranges of the cameras.
    """
    size = np.array([width or resolution, resolution], dtype=np.float64)
    start = rng.uniform(0, 2 * np.pi)
    step = 2 * np.pi / num_cameras
    # Bounding cylinder of the capture volume, sampled on its rims.
    ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    rim = np.stack([capture_radius * np.cos(ang), capture_radius * np.sin(ang)], -1)
    top = subject_height + 0.1
    volume = np.concatenate([np.c_[rim, np.zeros(24)], np.c_[rim, np.full(24, top)]])
    cameras = []
    for i in range(num_cameras):
        azimuth = start + i * step + rng.uniform(-0.15, 0.15) * step
        distance = rng.uniform(*ranges.distance)
        height = rng.uniform(*ranges.height)
        eye = np.array([distance * np.cos(azimuth), distance * np.sin(azimuth), height])
        target = np.array(
            [rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), 0.5 * subject_height + rng.uniform(-0.1, 0.1)]
        )
        R = look_at(eye, target)
        T = -R @ eye
        cam = volume @ R.T + T
        # Largest focal length keeping the volume inside the central 92% of the image, then a random zoom-out.
        principal = size / 2 + rng.uniform(-0.02, 0.02, 2) * size
        half = 0.46 * size - np.abs(principal - size / 2)
        ratio = np.abs(cam[:, :2] / cam[:, 2:3]).max(0)
        focal = float(np.min(half / ratio)) * rng.uniform(*ranges.zoom_out)
        K = np.array([[focal, 0.0, principal[0]], [0.0, focal, principal[1]], [0.0, 0.0, 1.0]])
        cameras.append(Camera(K=K, R=R, T=T))
    return cameras
