"""Model actions -> arm commands, plus the rotation maths every arm adapter shares.

MolmoAct emits a 7-D end-effector delta in the action space of the dataset whose statistics
un-normalized it (the unnorm key): Google-robot metres, LIBERO's OSC units, a gripper where 1 may
mean *open*. Arms take one command format (see ``arm.py``): base-frame ``[dx, dy, dz (m), droll,
dpitch, dyaw (rad), gripper (0 open .. 1 closed)]``. An ``ActionAdapter`` bridges the two, driven
by an ``ActionAdapterConfig``. The presets are a table of configs keyed by ``(arm type, unnorm
key)``, composed from two small tables (what each key's actions mean, how each arm's base frame
sits): adding an arm or a key is a data change, not a new branch.

Rotation deltas are treated as small roll/pitch/yaw increments about the base axes. Mapping them
between frames like a vector (as done here) is exact to first order, which is what the datasets'
per-step deltas are.

The rotation helpers live in ``app/rotations.py`` (shared with the simulated cell) and are re-exported
here for the xArm, UR and Franka adapters.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from ..rotations import (matrix_to_quat_xyzw, matrix_to_rotvec, matrix_to_rpy, quat_xyzw_to_matrix,  # noqa: F401
                         rotation_angle, rotvec_to_matrix, rpy_to_matrix)

ACTION_DIM = 7
ARM_TYPES: tuple[str, ...] = ("sim", "xarm", "ur", "franka")
LIBERO_KEYS: tuple[str, ...] = (
    "libero_spatial_no_noops_modified",
    "libero_object_no_noops_modified",
    "libero_goal_no_noops_modified",
    "libero_10_no_noops_modified",
)

Frame = Literal["base", "tool"]


# ---------------------------------------------------------------------------- step limits


@dataclass(frozen=True)
class StepLimits:
    """An arm adapter's own last-line bounds on one command (the SafetyGuard sits before it)."""
    max_translation_m: float = 0.05
    max_rotation_rad: float = 0.5

    def __post_init__(self) -> None:
        for name in ("max_translation_m", "max_rotation_rad"):
            v = getattr(self, name)
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"StepLimits.{name} must be a positive number, got {v!r}")


def limit_step(action: Any, limits: StepLimits) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(requested, sent, reasons): shape/finite check, then norm clamps and gripper range.

    Raises ValueError on a wrong shape or a non-finite value: those are refused, never clipped.
    """
    requested = np.asarray(action, dtype=np.float64).reshape(-1)
    if requested.shape != (ACTION_DIM,):
        raise ValueError(f"action must have {ACTION_DIM} values, got shape {np.shape(action)}")
    if not np.all(np.isfinite(requested)):
        raise ValueError(f"action has non-finite values: {requested.tolist()}")
    sent = requested.copy()
    reasons: list[str] = []
    for sl, cap, what, unit in ((slice(0, 3), limits.max_translation_m, "translation", "m"),
                                (slice(3, 6), limits.max_rotation_rad, "rotation", "rad")):
        norm = float(np.linalg.norm(sent[sl]))
        if norm > cap:
            sent[sl] *= cap / norm
            reasons.append(f"{what} {norm:.4f} {unit} clamped to the arm limit {cap:.4f} {unit}")
    g = float(np.clip(sent[6], 0.0, 1.0))
    if g != sent[6]:
        reasons.append(f"gripper {sent[6]:.3f} clipped to {g:.3f} (range 0 open .. 1 closed)")
        sent[6] = g
    return requested, sent, reasons


def apply_base_delta(position: np.ndarray, rotation: np.ndarray,
                     delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Target pose after a base-frame delta: p + dp, and R(drpy) @ R (rotation about base axes)."""
    return (np.asarray(position, dtype=np.float64) + delta[:3],
            rpy_to_matrix(delta[3:6]) @ np.asarray(rotation, dtype=np.float64))


# ---------------------------------------------------------------------------- adapter config


@dataclass(frozen=True)
class GripperMapping:
    """Model gripper value -> arm gripper (0 open .. 1 closed by default).

    Steps: rescale ``input_range`` to [0, 1] (clipped), binarize at ``binarize_threshold`` if set
    (>= threshold -> 1), invert if ``invert``, then rescale to ``output_range``.
    """
    input_range: tuple[float, float] = (0.0, 1.0)
    invert: bool = False
    binarize_threshold: float | None = None
    output_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_range", tuple(float(v) for v in self.input_range))
        object.__setattr__(self, "output_range", tuple(float(v) for v in self.output_range))
        for name in ("input_range", "output_range"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not np.all(np.isfinite(lo_hi)) or lo_hi[0] == lo_hi[1]:
                raise ValueError(f"GripperMapping.{name} must be two different finite numbers, "
                                 f"got {lo_hi!r}")
        t = self.binarize_threshold
        if t is not None and not 0.0 <= t <= 1.0:
            raise ValueError(f"binarize_threshold is on the [0, 1]-rescaled value, got {t!r}")

    def apply(self, value: float) -> float:
        if not np.isfinite(value):
            return float("nan")         # let the safety guard refuse it, never turn it into "closed"
        lo, hi = self.input_range
        g = float(np.clip((value - lo) / (hi - lo), 0.0, 1.0))
        if self.binarize_threshold is not None:
            g = 1.0 if g >= self.binarize_threshold else 0.0
        if self.invert:
            g = 1.0 - g
        out_lo, out_hi = self.output_range
        return out_lo + g * (out_hi - out_lo)


@dataclass(frozen=True)
class ActionAdapterConfig:
    """How one model action space maps onto one arm's command.

    ``scale`` (6) converts model units to metres / radians, per dimension. Then the arm's axis
    i takes ``signs[i] * model axis permutation[i]``, for translation and rotation alike (so the
    signed permutation must be a proper rotation, det +1). ``frame`` says whether the model's
    deltas are in the base frame or the tool frame (rotated into the base frame with the current
    end-effector orientation).
    """
    scale: tuple[float, ...] = (1.0,) * 6
    permutation: tuple[int, int, int] = (0, 1, 2)
    signs: tuple[float, float, float] = (1.0, 1.0, 1.0)
    frame: Frame = "base"
    gripper: GripperMapping = field(default_factory=GripperMapping)
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        object.__setattr__(self, "permutation", tuple(int(v) for v in self.permutation))
        object.__setattr__(self, "signs", tuple(float(v) for v in self.signs))
        if isinstance(self.gripper, Mapping):
            object.__setattr__(self, "gripper", GripperMapping(**self.gripper))
        if len(self.scale) != 6 or not all(np.isfinite(s) and s > 0 for s in self.scale):
            raise ValueError(f"scale must be 6 positive numbers (use signs to flip), got {self.scale}")
        if sorted(self.permutation) != [0, 1, 2]:
            raise ValueError(f"permutation must reorder (0, 1, 2), got {self.permutation}")
        if len(self.signs) != 3 or any(s not in (-1.0, 1.0) for s in self.signs):
            raise ValueError(f"signs must be three of +1/-1, got {self.signs}")
        if round(float(np.linalg.det(self.axes_matrix))) != 1:
            raise ValueError(f"permutation {self.permutation} with signs {self.signs} is a mirror "
                             "(det -1); rotations cannot be mapped through it")
        if self.frame not in ("base", "tool"):
            raise ValueError(f"frame must be 'base' or 'tool', got {self.frame!r}")

    @property
    def axes_matrix(self) -> np.ndarray:
        """M with arm_vector = M @ model_vector."""
        m = np.zeros((3, 3))
        for i, (j, s) in enumerate(zip(self.permutation, self.signs)):
            m[i, j] = s
        return m

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ActionAdapterConfig":
        return cls(**dict(data))


class UnknownPresetError(KeyError, ValueError):
    """No preset for an (arm type, unnorm key) pair; the message lists the known pairs."""

    def __init__(self, arm_type: str, unnorm_key: str, known: Sequence[tuple[str, str]]) -> None:
        listed = ", ".join(f"{a}/{k}" for a, k in sorted(known))
        super().__init__(f"no action preset for arm {arm_type!r} with unnorm key {unnorm_key!r}; "
                         f"known (arm/key): {listed}")

    def __str__(self) -> str:
        return str(self.args[0])


# ---------------------------------------------------------------------------- preset data

# What each unnorm key's actions mean (scale to m/rad, gripper convention), arm-independent.
# fractal (RT-1) and bridge_orig: metres/radians deltas; Open-X standardises their gripper to
#   1 = open, 0 = closed (rel2abs for RT-1), hence invert. The bridge reference binarizes at 0.5.
# LIBERO: robosuite OSC_POSE deltas, 1.0 = 0.05 m / 0.5 rad; gripper 1 = open in [0, 1], the
#   reference maps it to [-1, 1], binarizes by sign (= threshold 0.5 here) and inverts.
# sim: our simulated cell, already metres/radians and 0 open .. 1 closed.
KEY_CONVENTIONS: dict[str, dict[str, Any]] = {
    "fractal20220817_data": {
        "scale": [1.0] * 6,
        "gripper": {"input_range": [0.0, 1.0], "invert": True, "binarize_threshold": None},
        "description": "Google robot (RT-1) m/rad deltas; gripper 1 = open, continuous",
    },
    "bridge_orig": {
        "scale": [1.0] * 6,
        "gripper": {"input_range": [0.0, 1.0], "invert": True, "binarize_threshold": 0.5},
        "description": "WidowX (Bridge) m/rad deltas; gripper 1 = open, binarized at 0.5",
    },
    **{key: {
        "scale": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
        "gripper": {"input_range": [0.0, 1.0], "invert": True, "binarize_threshold": 0.5},
        "description": "LIBERO OSC deltas (1.0 = 5 cm / 0.5 rad); gripper 1 = open, binarized",
    } for key in LIBERO_KEYS},
    "sim": {
        "scale": [1.0] * 6,
        "gripper": {"input_range": [0.0, 1.0], "invert": False, "binarize_threshold": None},
        "description": "simulated cell: m/rad deltas, gripper 0 open .. 1 closed",
    },
}

# How each arm's base frame (the one its SDK reports) sits relative to the datasets' convention
# (x forward into the workspace, y left, z up). UR's controller "Base" frame is rotated 180 deg
# about z from ROS base_link (ur_description's base_link -> base joint, rpy 0 0 pi): x, y and
# roll, pitch flip. A cell mounted differently overrides its row.
ARM_AXES: dict[str, dict[str, Any]] = {
    "sim": {"permutation": [0, 1, 2], "signs": [1, 1, 1], "frame": "base"},
    "xarm": {"permutation": [0, 1, 2], "signs": [1, 1, 1], "frame": "base"},
    "franka": {"permutation": [0, 1, 2], "signs": [1, 1, 1], "frame": "base"},
    "ur": {"permutation": [0, 1, 2], "signs": [-1, -1, 1], "frame": "base"},
}


def _compose(arm: str, key: str) -> ActionAdapterConfig:
    k, a = KEY_CONVENTIONS[key], ARM_AXES[arm]
    return ActionAdapterConfig.from_dict({**a, "scale": k["scale"], "gripper": k["gripper"],
                                          "description": f"{arm}: {k['description']}"})


PRESETS: dict[tuple[str, str], ActionAdapterConfig] = {
    (arm, key): _compose(arm, key) for arm in ARM_AXES for key in KEY_CONVENTIONS
}


def preset(arm_type: str, unnorm_key: str,
           presets: Mapping[tuple[str, str], ActionAdapterConfig] | None = None) -> ActionAdapterConfig:
    """The config for ``(arm_type, unnorm_key)``; UnknownPresetError lists the known pairs."""
    table = PRESETS if presets is None else presets
    try:
        return table[(arm_type, unnorm_key)]
    except KeyError:
        raise UnknownPresetError(arm_type, unnorm_key, list(table)) from None


def presets_from_json(text: str) -> dict[tuple[str, str], ActionAdapterConfig]:
    """``{"arm/key": {config fields}}`` -> preset table, for cells that override a row."""
    table = {}
    for name, data in json.loads(text).items():
        arm, sep, key = name.partition("/")
        if not sep or not arm or not key:
            raise ValueError(f"preset name must be 'arm/unnorm_key', got {name!r}")
        table[(arm, key)] = ActionAdapterConfig.from_dict(data)
    return table


# ---------------------------------------------------------------------------- the adapter


class ActionAdapter:
    """Maps one model action (7,) to the arm command (7,) described in ``arm.py``."""

    def __init__(self, config: ActionAdapterConfig) -> None:
        self.config = config
        self._axes = config.axes_matrix
        self._scale = np.asarray(config.scale)

    @classmethod
    def for_arm(cls, arm_type: str, unnorm_key: str,
                presets: Mapping[tuple[str, str], ActionAdapterConfig] | None = None) -> "ActionAdapter":
        return cls(preset(arm_type, unnorm_key, presets))

    def map(self, action: Sequence[float] | np.ndarray,
            ee_rpy: Sequence[float] | None = None) -> np.ndarray:
        """Model action -> arm command. ``ee_rpy`` (base frame) is required for tool-frame presets.

        Non-finite values pass through as NaN so the safety guard refuses them with a reason.
        """
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"model action must have {ACTION_DIM} values, got shape {np.shape(action)}")
        scaled = a[:6] * self._scale
        t, r = self._axes @ scaled[:3], self._axes @ scaled[3:6]
        if self.config.frame == "tool":
            if ee_rpy is None:
                raise ValueError("this preset's deltas are in the tool frame: pass ee_rpy")
            rot = rpy_to_matrix(ee_rpy)
            t, r = rot @ t, rot @ r
        return np.concatenate([t, r, [self.config.gripper.apply(float(a[6]))]])

    __call__ = map


__all__ = [
    "ARM_AXES", "ARM_TYPES", "ActionAdapter", "ActionAdapterConfig", "GripperMapping",
    "KEY_CONVENTIONS", "LIBERO_KEYS", "PRESETS", "StepLimits", "UnknownPresetError",
    "apply_base_delta", "limit_step", "matrix_to_quat_xyzw", "matrix_to_rotvec", "matrix_to_rpy",
    "preset", "presets_from_json", "quat_xyzw_to_matrix", "rotation_angle", "rotvec_to_matrix",
    "rpy_to_matrix",
]
