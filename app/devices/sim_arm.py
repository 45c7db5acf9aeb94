"""An ``Arm`` backed by a ``SimCell``: each ``send_action`` runs one control period of the sim.

Like a real adapter it starts disabled, applies its own per-step limits before anything moves and
reports what it changed (``SentAction.clipped``), so the UI shows the same story for sim and real.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.devices.arm import ArmDisabledError, ArmError, ArmState, SentAction
from app.sim.cell import SimCell
from app.sim.transforms import rpy_to_matrix


@dataclass
class SimArmLimits:
    max_translation_m: float = 0.05     # per control step, Euclidean norm of (dx, dy, dz)
    max_rotation_rad: float = 0.25      # per control step, each of droll, dpitch, dyaw


class SimArm:
    def __init__(self, cell: SimCell, limits: SimArmLimits | None = None, name: str = "sim-panda"):
        self.cell = cell
        self.limits = limits or SimArmLimits()
        self.name = name
        self._connected = False
        self._enabled = False

    @property
    def enabled(self) -> bool:
        return self._enabled

    def connect(self) -> None:
        self._connected = True

    def disconnect(self) -> None:
        if self._connected:
            self.stop()
        self._connected = False

    def enable(self) -> None:
        if not self._connected:
            raise ArmError(f"{self.name}: not connected; call connect() first")
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def state(self) -> ArmState:
        cell = self.cell
        with cell.lock:
            pose = cell.ee_pose()
            return ArmState(ee_position=pose.position, ee_rpy=pose.rpy, gripper=cell.gripper_measured,
                            joint_positions=cell.joint_positions, timestamp=cell.time,
                            enabled=self._enabled,
                            extras={"gripper_command": cell.gripper_command,
                                    "goal_position": cell.goal_pose().position,
                                    "task": cell.task.name, "success": cell.success()})

    def limit(self, action: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """The action this arm would send for ``action``, and why it differs."""
        sent = action.copy()
        reasons: list[str] = []
        lim = self.limits
        norm = float(np.linalg.norm(sent[:3]))
        if norm > lim.max_translation_m:
            sent[:3] *= lim.max_translation_m / norm
            reasons.append(f"translation {norm:.3f} m > {lim.max_translation_m:.3f} m per step: scaled")
        over = np.abs(sent[3:6]) > lim.max_rotation_rad
        if over.any():
            sent[3:6] = np.clip(sent[3:6], -lim.max_rotation_rad, lim.max_rotation_rad)
            axes = ", ".join(n for n, o in zip(("roll", "pitch", "yaw"), over) if o)
            reasons.append(f"rotation ({axes}) > {lim.max_rotation_rad:.2f} rad per step: clipped")
        if not 0.0 <= sent[6] <= 1.0:
            reasons.append(f"gripper {sent[6]:.2f} outside 0..1: clipped")
            sent[6] = float(np.clip(sent[6], 0.0, 1.0))
        goal = self.cell.goal_pose()
        target_rot = rpy_to_matrix(sent[3:6]) @ goal.rotation
        wanted = goal.position + sent[:3]
        allowed = self.cell.clamp_goal(wanted, target_rot)
        if np.linalg.norm(allowed - wanted) > 1e-6:
            sent[:3] = allowed - goal.position
            reasons.append("workspace: translation shortened to stay inside the reachable box")
        return sent, reasons

    def send_action(self, action: np.ndarray) -> SentAction:
        if not self._enabled:
            raise ArmDisabledError(f"{self.name}: motion refused, the arm is not enabled")
        requested = np.asarray(action, dtype=float).copy()
        if requested.shape != (7,):
            raise ArmError(f"{self.name}: expected a 7-D action, got shape {requested.shape}")
        if not np.all(np.isfinite(requested)):
            raise ArmError(f"{self.name}: non-finite action refused: {requested}")
        with self.cell.lock:
            sent, reasons = self.limit(requested)
            self.cell.step(sent)
        return SentAction(requested=requested, sent=sent, clipped=reasons)

    def hold(self) -> None:
        """Zero motion from here on; the gripper keeps its command."""
        self.cell.hold()

    def stop(self) -> None:
        self.hold()
        self.disable()

    def __enter__(self) -> "SimArm":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()
