"""Rotation helpers shared by the IK, the cell and the experts (numpy only, no mujoco).

Conventions: rotation matrices act on column vectors; roll/pitch/yaw are extrinsic x-y-z angles,
R = Rz(yaw) · Ry(pitch) · Rx(roll), the convention the arm contract's ``ee_rpy`` and the 7-D
action's rotation deltas use.
"""
from __future__ import annotations

import numpy as np


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rpy_to_matrix(rpy) -> np.ndarray:
    r, p, y = (float(v) for v in rpy)
    return rot_z(y) @ rot_y(p) @ rot_x(r)


def matrix_to_rpy(m: np.ndarray) -> np.ndarray:
    """Inverse of ``rpy_to_matrix`` (pitch in [-pi/2, pi/2])."""
    pitch = np.arcsin(np.clip(-m[2, 0], -1.0, 1.0))
    if abs(m[2, 0]) < 1.0 - 1e-9:
        roll = np.arctan2(m[2, 1], m[2, 2])
        yaw = np.arctan2(m[1, 0], m[0, 0])
    else:  # gimbal lock: put everything in yaw
        roll = 0.0
        yaw = np.arctan2(-m[0, 1], m[1, 1])
    return np.array([roll, pitch, yaw])


def rotvec_to_matrix(v) -> np.ndarray:
    v = np.asarray(v, float)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def matrix_to_rotvec(m: np.ndarray) -> np.ndarray:
    """Axis * angle of a rotation matrix, robust near 0 and pi."""
    cos = np.clip((np.trace(m) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    if angle < 1e-7:
        return 0.5 * np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
    if np.pi - angle < 1e-4:
        # axis from the symmetric part: m ≈ 2kk^T - I
        k = np.sqrt(np.clip((np.diag(m) + 1.0) / 2.0, 0.0, None))
        i = int(np.argmax(k))
        k[(i + 1) % 3] *= np.sign(m[i, (i + 1) % 3] + m[(i + 1) % 3, i]) or 1.0
        k[(i + 2) % 3] *= np.sign(m[i, (i + 2) % 3] + m[(i + 2) % 3, i]) or 1.0
        return k / np.linalg.norm(k) * angle
    axis = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]]) / (2.0 * np.sin(angle))
    return axis * angle


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame rotation vector that takes ``current`` to ``target``."""
    return matrix_to_rotvec(target @ current.T)

