"""Rotation maths shared by the arm adapters, the action adapter and the simulated cell.

Conventions: roll/pitch/yaw are extrinsic x-y-z (``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``);
quaternions are scalar-last (x, y, z, w); rotation vectors are axis * angle (UR's convention).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def rpy_to_matrix(rpy: Sequence[float]) -> np.ndarray:
    """Fixed-axis roll (x), pitch (y), yaw (z): R = Rz(yaw) @ Ry(pitch) @ Rx(roll)."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def matrix_to_rpy(m: np.ndarray) -> np.ndarray:
    """Inverse of ``rpy_to_matrix``; at pitch = +-90 deg roll is set to 0 (gimbal lock)."""
    m = np.asarray(m, dtype=np.float64)
    sp = -m[2, 0]
    if abs(sp) >= 1.0 - 1e-12:
        pitch = np.copysign(np.pi / 2, sp)
        return np.array([0.0, pitch, np.arctan2(-m[0, 1], m[1, 1])])
    return np.array([np.arctan2(m[2, 1], m[2, 2]), np.arcsin(sp), np.arctan2(m[1, 0], m[0, 0])])


def rotvec_to_matrix(v: Sequence[float]) -> np.ndarray:
    """Rodrigues: axis * angle (UR's rotation vector) -> rotation matrix."""
    v = np.asarray(v, dtype=np.float64)
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * kx + (1.0 - np.cos(angle)) * (kx @ kx)


def matrix_to_quat_xyzw(m: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion, scalar last, with w >= 0 (Shepperd's method)."""
    m = np.asarray(m, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0.0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def quat_xyzw_to_matrix(q: Sequence[float]) -> np.ndarray:
    """Unit quaternion, scalar last (Franka / panda-py order) -> rotation matrix."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_rotvec(m: np.ndarray) -> np.ndarray:
    """Rotation matrix -> axis * angle with angle in [0, pi] (via the quaternion: stable near pi)."""
    x, y, z, w = matrix_to_quat_xyzw(m)
    s = np.sqrt(x * x + y * y + z * z)
    if s < 1e-12:
        return np.zeros(3)
    return 2.0 * np.arctan2(s, w) * np.array([x, y, z]) / s


def rotation_angle(m: np.ndarray) -> float:
    """Angle (rad) of a rotation matrix, e.g. of ``a.T @ b`` to compare two orientations."""
    return float(np.linalg.norm(matrix_to_rotvec(m)))


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame rotation vector that takes ``current`` to ``target``."""
    return matrix_to_rotvec(target @ current.T)
