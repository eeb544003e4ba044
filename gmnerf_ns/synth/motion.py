"""Procedural motion: a walk (legs, arm swing, spine counter-rotation, head) along a small circle, i.e. a slow turn.

Poses are SMPL-24 axis-angles in the body asset's convention (rotations in canonical world-aligned axes: +X is the
subject's left, -Y the front, Z up; a negative rotation about X swings a limb forward). The global rotation ``Rh`` is
a yaw about world Z and ``Th`` keeps the subject within ``path_radius`` of the origin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Tuple

import numpy as np


@dataclass
class MotionParams:
    """One subject's walk."""

    gait_hz: float
    """Gait cycles per second."""
    phase: float
    """Gait phase at t = 0 (radians)."""
    hip_amp: float
    """Hip flexion amplitude (radians)."""
    knee_amp: float
    """Extra knee flexion during the swing (radians)."""
    arm_amp: float
    """Shoulder swing amplitude (radians)."""
    arm_down: float
    """Shoulder adduction from the A-pose towards the body (radians)."""
    elbow: float
    """Mean elbow flexion (radians)."""
    twist: float
    """Pelvis/spine counter-rotation amplitude (radians)."""
    head_yaw: float
    """Head look-around amplitude (radians)."""
    path_radius: float
    """Radius of the circle walked (metres)."""
    turn_rate: float
    """Angular speed on that circle (radians per second, signed)."""
    start_angle: float
    """Position angle on the circle at t = 0."""

    def summary(self) -> Dict[str, float]:
        return {k: round(float(v), 4) for k, v in asdict(self).items()}


def sample_motion(rng: np.random.Generator, skirt: bool = False) -> MotionParams:
    """A random walk style; smaller strides for skirts so the legs stay inside them."""
    return MotionParams(
        gait_hz=float(rng.uniform(0.7, 1.0)),
        phase=float(rng.uniform(0, 2 * np.pi)),
        hip_amp=float(rng.uniform(0.15, 0.28) if skirt else rng.uniform(0.2, 0.45)),
        knee_amp=float(rng.uniform(0.3, 0.7)),
        arm_amp=float(rng.uniform(0.15, 0.45)),
        arm_down=float(rng.uniform(0.35, 0.65)),
        elbow=float(rng.uniform(0.1, 0.5)),
        twist=float(rng.uniform(0.02, 0.08)),
        head_yaw=float(rng.uniform(0.0, 0.3)),
        path_radius=float(rng.uniform(0.0, 0.25)),
        turn_rate=float(rng.choice([-1, 1]) * rng.uniform(0.3, 0.8)),
        start_angle=float(rng.uniform(0, 2 * np.pi)),
    )


def pose_at(params: MotionParams, t: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose (24, 3) axis-angles, ``Rh`` (3,) and the horizontal part of ``Th`` (2,) at time ``t`` seconds."""
    m = params
    phi = 2 * np.pi * m.gait_hz * t + m.phase
    s, c = np.sin(phi), np.cos(phi)
    pose = np.zeros((24, 3))
    pose[0] = [0.0, 0.02 * c, m.twist * s]  # pelvis: sway and twist with the legs
    pose[1, 0] = -m.hip_amp * s  # left hip: forward when s > 0
    pose[2, 0] = m.hip_amp * s
    pose[4, 0] = 0.08 + m.knee_amp * max(0.0, c) ** 1.5  # knees bend while the leg swings forward
    pose[5, 0] = 0.08 + m.knee_amp * max(0.0, -c) ** 1.5
    pose[7, 0] = -0.15 * s  # ankles
    pose[8, 0] = 0.15 * s
    for j in (3, 6, 9):  # spine: slight forward lean, counter-twist
        pose[j] = [-0.02, 0.0, -m.twist * s / 3]
    pose[12] = [0.03, 0.0, 0.5 * m.head_yaw * np.sin(0.37 * phi + 1.0)]
    pose[15] = [0.05 * np.sin(0.5 * phi), 0.0, 0.5 * m.head_yaw * np.sin(0.37 * phi + 1.0)]
    pose[16] = [m.arm_amp * s, m.arm_down, 0.0]  # left arm swings opposite to the left leg
    pose[17] = [-m.arm_amp * s, -m.arm_down, 0.0]
    pose[18, 0] = -(m.elbow + 0.3 * m.arm_amp * max(0.0, -s))  # elbows bend more when the arm is forward
    pose[19, 0] = -(m.elbow + 0.3 * m.arm_amp * max(0.0, s))
    pose[20] = [0.1 * s, 0.0, 0.0]
    pose[21] = [-0.1 * s, 0.0, 0.0]
    # Walk along a circle: heading is the tangent, the body's front (-Y) points along the velocity.
    angle = m.start_angle + m.turn_rate * t
    position = m.path_radius * np.array([np.cos(angle), np.sin(angle)])
    yaw = angle + (np.pi if m.turn_rate > 0 else 0.0)
    Rh = np.array([0.0, 0.0, (yaw + np.pi) % (2 * np.pi) - np.pi])
    return pose, Rh, position


def jitter_pose(pose: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """The pose with Gaussian noise (radians) on every joint but the root: a stand-in for body-fitting error."""
    if sigma <= 0:
        return pose.copy()
    noisy = pose.copy()
    noisy[1:] += rng.normal(0.0, sigma, noisy[1:].shape)
    return noisy
