"""Cameras around a person for the tools: framing from the source views, orbits, and viewer poses.

World "up" is not the same in every dataset (ZJU-MoCap is z-up, GeneBody y-up), so it is taken from the source
cameras: the mean of their image-up directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType

from gmnerf_ns.geometry.camera_math import opencv_w2c_to_nerfstudio_c2w


@dataclass(frozen=True)
class Framing:
    """Where a subject-frame's person is and how the dataset's cameras see it (world metres)."""

    center: np.ndarray
    """(3,) centre of the proxy box."""
    up: np.ndarray
    """(3,) unit world-up (mean image-up of the source cameras)."""
    radius: float
    """Mean horizontal distance of the source cameras from ``center``."""
    height: float
    """Extent of the proxy box along ``up``."""
    focal: float
    """Focal length of the first source camera, pixels."""
    image_size: Tuple[int, int]
    """(height, width) of the source images."""
    front: np.ndarray
    """(3,) horizontal unit vector from the centre towards the first source camera."""


def framing(sources) -> Framing:
    """The :class:`Framing` of a subject-frame from its source views (a ``gmnerf_ns.model.sources.SourceViews``: its
    rotations, camera centres, bbox, intrinsics and image size)."""
    rotations = sources.rotations.cpu().numpy().astype(np.float64)
    centers = sources.camera_centers.cpu().numpy().astype(np.float64)
    bbox = sources.bbox.cpu().numpy().astype(np.float64)
    center = bbox.mean(0)
    up = -rotations[:, 1, :].mean(0)  # OpenCV y points down in the image
    up /= max(np.linalg.norm(up), 1e-9)
    offsets = centers - center
    horizontal = offsets - (offsets @ up)[:, None] * up
    radius = float(np.linalg.norm(horizontal, axis=1).mean())
    front = horizontal[0] / max(np.linalg.norm(horizontal[0]), 1e-9)
    corners = np.array([[bbox[i, 0], bbox[j, 1], bbox[k, 2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    heights = corners @ up
    return Framing(
        center=center,
        up=up,
        radius=radius,
        height=float(heights.max() - heights.min()),
        focal=float(sources.intrinsics[0, 0, 0]),
        image_size=sources.image_size,
        front=front,
    )


def look_at_c2w(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(3, 4) nerfstudio (OpenGL) camera-to-world of a camera at ``eye`` looking at ``target``."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, up)
    right /= max(np.linalg.norm(right), 1e-9)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])  # OpenCV world-to-camera rotation
    return opencv_w2c_to_nerfstudio_c2w(R, -R @ eye)


def orbit_eyes(frame: Framing, num_views: int, elevation_deg: float = 10.0, radius: float | None = None) -> np.ndarray:
    """(num_views, 3) camera positions on a circle around the person, starting in front of it (source camera 0)."""
    radius = frame.radius if radius is None else radius
    side = np.cross(frame.up, frame.front)
    el = math.radians(elevation_deg)
    eyes = []
    for k in range(num_views):
        az = 2.0 * math.pi * k / num_views
        horizontal = math.cos(az) * frame.front + math.sin(az) * side
        eyes.append(frame.center + radius * (math.cos(el) * horizontal + math.sin(el) * frame.up))
    return np.stack(eyes)


def orbit_cameras(frame: Framing, num_views: int, elevation_deg: float = 10.0, image_size: int | None = None,
                  radius: float | None = None) -> Cameras:
    """An orbit of ``num_views`` square cameras looking at the person, at the dataset cameras' distance and zoom."""
    size = image_size or frame.image_size[0]
    focal = frame.focal * size / frame.image_size[0]
    c2w = np.stack([look_at_c2w(eye, frame.center, frame.up) for eye in orbit_eyes(frame, num_views, elevation_deg,
                                                                                     radius)])
    return Cameras(
        camera_to_worlds=torch.from_numpy(c2w).float(),
        fx=focal,
        fy=focal,
        cx=size / 2.0,
        cy=size / 2.0,
        width=size,
        height=size,
        camera_type=CameraType.PERSPECTIVE,
    )


def viewer_pose(frame: Framing, vertical_fov: float, fill: float = 0.8) -> Tuple[np.ndarray, np.ndarray]:
    """(eye, target) for a viewer camera of ``vertical_fov`` radians that shows the whole person, from the front."""
    distance = 0.5 * frame.height / math.tan(0.5 * vertical_fov) / fill
    return frame.center + distance * frame.front, frame.center
