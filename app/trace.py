"""Trace editing in model space (0..255 on the first image) and the model<->pixel mapping.

The model's trace lives in a 256x256 space over the *whole* first image (it sees the image resized),
so a waypoint maps to pixels by ``t / 255 * (size - 1)`` on each axis, as ``draw_trace`` draws it.
Edits are pure functions returning new lists: the session keeps the operator's trace as a value.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from model.grammar import MAX_COORD, TraceError, check_trace

MAX_POINTS = 5

Point = tuple[int, int]


class TraceEditError(ValueError):
    """An edit that cannot apply (index out of range, too many or too few points)."""


def _checked(points: Sequence[Sequence[float]]) -> list[Point]:
    """The runtime's own trace check (``model.grammar.check_trace``: finite, rounded, clamped to
    0..255, at most MAX_POINTS), its error raised as an edit error."""
    try:
        return check_trace(points, MAX_POINTS)
    except TraceError as e:
        raise TraceEditError(str(e)) from None


def clamp_point(x: float, y: float) -> Point:
    return _checked([(x, y)])[0]


def normalize(trace: Sequence[Sequence[float]]) -> list[Point]:
    pts = list(trace)
    if not pts:
        raise TraceEditError("a trace needs at least one waypoint")
    return _checked(pts)


def move_point(trace: Sequence[Point], index: int, x: float, y: float) -> list[Point]:
    pts = list(trace)
    if not 0 <= index < len(pts):
        raise TraceEditError(f"no waypoint {index} (the trace has {len(pts)})")
    pts[index] = clamp_point(x, y)
    return pts


def insert_point(trace: Sequence[Point], index: int, x: float, y: float) -> list[Point]:
    """Insert before ``index`` (``len(trace)`` appends)."""
    pts = list(trace)
    if len(pts) >= MAX_POINTS:
        raise TraceEditError(f"the trace already has {MAX_POINTS} waypoints (the model's maximum)")
    if not 0 <= index <= len(pts):
        raise TraceEditError(f"cannot insert at {index} in a trace of {len(pts)}")
    pts.insert(index, clamp_point(x, y))
    return pts


def delete_point(trace: Sequence[Point], index: int) -> list[Point]:
    pts = list(trace)
    if len(pts) <= 1:
        raise TraceEditError("the last waypoint cannot be deleted")
    if not 0 <= index < len(pts):
        raise TraceEditError(f"no waypoint {index} (the trace has {len(pts)})")
    del pts[index]
    return pts


def insertion_index(trace: Sequence[Point], x: float, y: float) -> int:
    """Where a click at (x, y) inserts: after the nearest segment's start (appends past the end)."""
    pts = np.asarray(trace, float)
    if len(pts) < 2:
        return len(pts)
    p = np.array([x, y], float)
    best, best_d = len(pts), float(np.linalg.norm(p - pts[-1]))
    for i in range(len(pts) - 1):
        a, b = pts[i], pts[i + 1]
        ab = b - a
        t = 0.0 if not ab.any() else float(np.clip(np.dot(p - a, ab) / np.dot(ab, ab), 0.0, 1.0))
        d = float(np.linalg.norm(p - (a + t * ab)))
        if d < best_d:
            best, best_d = i + 1, d
    return best


def anchored(edit: Sequence[Point], model_trace: Sequence[Point]) -> list[Point]:
    """An operator's edit carried to a new step: the start follows the gripper (the model's first
    waypoint, where the end effector is now); the operator's later waypoints stay where they were put."""
    if not model_trace or len(edit) < 2:
        return list(edit)
    return [tuple(model_trace[0]), *edit[1:]]


def to_pixels(trace: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    t = np.asarray(trace, float).reshape(-1, 2)
    return t / MAX_COORD * np.array([width - 1.0, height - 1.0])


def from_pixels(points: Sequence[Sequence[float]], width: int, height: int) -> list[Point]:
    p = np.asarray(points, float).reshape(-1, 2)
    scaled = p / np.array([width - 1.0, height - 1.0]) * MAX_COORD
    return [clamp_point(x, y) for x, y in scaled]


def project_to_pixels(points_world: np.ndarray, K: np.ndarray, T_world_camera: np.ndarray) -> np.ndarray:
    """World (base-frame) points (N,3) → pixels (N,2); NaN where behind the camera. Camera axes as in
    OpenCV (x right, y down, z forward)."""
    pw = np.asarray(points_world, float).reshape(-1, 3)
    R, t = T_world_camera[:3, :3], T_world_camera[:3, 3]
    pc = (pw - t) @ R
    z = np.where(pc[:, 2] > 1e-6, pc[:, 2], np.nan)
    return np.stack([K[0, 0] * pc[:, 0] / z + K[0, 2], K[1, 1] * pc[:, 1] / z + K[1, 2]], axis=1)


__all__ = [
    "MAX_COORD", "MAX_POINTS", "Point", "TraceEditError", "anchored", "clamp_point", "delete_point",
    "from_pixels", "insert_point", "insertion_index", "move_point", "normalize", "project_to_pixels",
    "to_pixels",
]
