"""One synthetic subject: everything sampled for it (body shape, outfit, look, motion, cameras, proxy error) from its
own random streams, and its posed geometry at each frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np
import torch

from gmnerf_ns.synth.appearance import Look, Shader, eye_centres, sample_look, vary_lighting
from gmnerf_ns.synth.body import BodyModel, rotvec_to_matrix
from gmnerf_ns.synth.cameras import Camera, ring_cameras
from gmnerf_ns.synth.config import SynthConfig
from gmnerf_ns.synth.garments import ClothedBody, Outfit, dress, sample_outfit
from gmnerf_ns.synth.misfit import ProxyError, global_offset, wrong_shape
from gmnerf_ns.synth.motion import MotionParams, jitter_pose, pose_at, sample_motion


class Stream:
    """Independent random streams of a subject, for :func:`subject_rng`. Never renumber them (that would change every
    dataset): new streams take the next number, and options that are off draw nothing, so datasets of earlier versions
    keep their bytes."""

    SHAPE, OUTFIT, LOOK, MOTION, CAMERAS, PROXY, RIG, LIGHT, SHAPE_MIX, MISFIT, MASK = range(11)


def subject_name(index: int) -> str:
    return f"subject_{index:03d}"


def subject_rng(seed: int, index: int, *stream: int) -> np.random.Generator:
    """The random stream ``stream`` of subject ``index``; independent of the dataset size."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index, *stream)))


@dataclass
class Subject:
    """Everything sampled for one subject."""

    name: str
    index: int
    shape_index: int
    coeffs: torch.Tensor
    vertices: torch.Tensor
    """Canonical body vertices (V, 3)."""
    joints: torch.Tensor
    """Canonical joints (24, 3)."""
    height: float
    outfit: Outfit
    clothed: ClothedBody
    look: Look
    shader: Shader
    motion: MotionParams
    cameras: List[Camera]
    width: int
    """Image width in pixels (the height is the dataset's resolution)."""
    proxy_error: ProxyError
    """This subject's proxy error (the dataset's, times its random factor under ``misfit_per_subject``)."""
    proxy_vertices: torch.Tensor
    """Canonical vertices of the proxy body (the true ones unless the proxy has a shape error)."""
    proxy_joints: torch.Tensor


def build_subject(body: BodyModel, config: SynthConfig, index: int) -> Subject:
    """Samples the shape, outfit, appearance, motion and cameras of subject ``index``."""
    rng = subject_rng(config.seed, index, Stream.SHAPE)
    shape_index = int(rng.integers(len(body.shape_samples)))
    coeffs = body.shape_samples[shape_index]
    if config.shape_variety > 0:
        mix = subject_rng(config.seed, index, Stream.SHAPE_MIX)
        if mix.random() < config.shape_variety:
            other = body.shape_samples[int(mix.integers(len(body.shape_samples)))]
            coeffs = coeffs + mix.uniform(0.2, 0.8) * (other - coeffs)
    vertices, joints = body.shape(coeffs)
    vertices, joints = vertices - joints[0], joints - joints[0]  # pelvis at the origin
    outfit = sample_outfit(subject_rng(config.seed, index, Stream.OUTFIT))
    clothed = dress(body, vertices, joints, outfit)
    look = sample_look(subject_rng(config.seed, index, Stream.LOOK))
    if config.light_variety > 0:
        look = vary_lighting(look, subject_rng(config.seed, index, Stream.LIGHT), config.light_variety)
    shader = Shader(
        look,
        clothed.texture_points,
        clothed.face_material,
        joints,
        eye_centres(clothed.texture_points, clothed.face_material, clothed.faces),
    )
    motion = sample_motion(subject_rng(config.seed, index, Stream.MOTION), skirt=outfit.bottom in ("skirt", "dress"))
    height = float(vertices[:, 2].max() - vertices[:, 2].min())
    num_cameras, width = config.num_cameras, config.resolution
    if config.max_num_cameras is not None and config.max_num_cameras > config.num_cameras:
        num_cameras = int(subject_rng(config.seed, index, Stream.RIG).integers(config.num_cameras, config.max_num_cameras + 1))
    if tuple(config.aspect) != (1.0, 1.0):
        aspect = subject_rng(config.seed, index, Stream.RIG, 1).uniform(*config.aspect)
        width = 2 * max(8, int(round(config.resolution * aspect / 2)))
    cameras = ring_cameras(
        subject_rng(config.seed, index, Stream.CAMERAS),
        num_cameras,
        config.resolution,
        height,
        capture_radius=motion.path_radius + 0.35,
        width=width,
        ranges=config.rig_ranges,
    )
    proxy_error = config.proxy_error
    if config.misfit_per_subject:
        proxy_error = proxy_error.scaled(float(subject_rng(config.seed, index, Stream.MISFIT).uniform()))
    proxy_vertices, proxy_joints = vertices, joints
    if proxy_error.shape_error > 0:
        wrong = wrong_shape(coeffs, body.shape_samples, subject_rng(config.seed, index, Stream.MISFIT, 1),
                            proxy_error.shape_error)
        proxy_vertices, proxy_joints = body.shape(wrong)
        proxy_vertices, proxy_joints = proxy_vertices - proxy_joints[0], proxy_joints - proxy_joints[0]
    return Subject(
        subject_name(index),
        index,
        shape_index,
        coeffs,
        vertices,
        joints,
        height,
        outfit,
        clothed,
        look,
        shader,
        motion,
        cameras,
        width,
        proxy_error,
        proxy_vertices,
        proxy_joints,
    )


@dataclass
class FrameGeometry:
    """World-space geometry of one frame."""

    pose: np.ndarray
    """(24, 3) pose of the saved proxy (the rendered pose plus optional noise)."""
    pose_rendered: np.ndarray
    Rh: np.ndarray
    Th: np.ndarray
    proxy_vertices: torch.Tensor
    proxy_joints: torch.Tensor
    transforms: torch.Tensor
    clothed_vertices: torch.Tensor


def frame_geometry(body: BodyModel, subject: Subject, config: SynthConfig, frame: int) -> FrameGeometry:
    """Poses the clothed surface and the proxy body for ``frame`` and places them in the world (feet on z = 0)."""
    pose, Rh, position = pose_at(subject.motion, frame * config.frame_interval)
    dtype = body.dtype
    transforms, _ = body.forward_kinematics(torch.as_tensor(pose, dtype=dtype), subject.joints)
    clothed = subject.clothed.pose(transforms)
    rot = rotvec_to_matrix(torch.as_tensor(Rh, dtype=dtype))
    ground = -(clothed @ rot.T)[:, 2].min()
    Th = torch.tensor([position[0], position[1], float(ground)], dtype=dtype)
    error = subject.proxy_error
    proxy_pose = jitter_pose(pose, subject_rng(config.seed, subject.index, Stream.PROXY, frame), error.pose_noise)
    proxy = body.pose(torch.as_tensor(proxy_pose, dtype=dtype), subject.proxy_vertices, subject.proxy_joints)
    proxy_Th = Th
    if error.offset > 0:
        offset = global_offset(subject_rng(config.seed, subject.index, Stream.MISFIT, 2, frame), error.offset)
        proxy_Th = Th + torch.as_tensor(offset, dtype=dtype)
    return FrameGeometry(
        pose=proxy_pose,
        pose_rendered=pose,
        Rh=Rh,
        Th=proxy_Th.numpy(),
        proxy_vertices=proxy.vertices @ rot.T + proxy_Th,
        proxy_joints=proxy.joints @ rot.T + proxy_Th,
        transforms=proxy.transforms,
        clothed_vertices=clothed @ rot.T + Th,
    )
