"""The safety guard between the session and any arm: one place that decides what may move.

Arms clip to their own hardware limits too, but this guard knows the cell: the workspace box,
the per-step caps the operator chose, whether commands are still arriving (watchdog) and whether
someone pressed the e-stop (latched until an explicit ``reset()``). It never sleeps and reads time
only from the ``now`` it is given or an injected clock, so tests drive it step by step.

``check`` returns the action to send, or a *hold* when it refuses; every clip and refusal comes
with a ``SafetyEvent`` naming the rule and a reason the operator can read.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from app.devices.arm import ArmState

ACTION_DIM = 7

# Rule names, as they appear in events (the UI and recorder key on them).
RULE_ESTOP = "estop"
RULE_DISABLED = "disabled"
RULE_INVALID = "invalid_action"
RULE_TRANSLATION = "max_translation"
RULE_ROTATION = "max_rotation"
RULE_WORKSPACE = "workspace"
RULE_GRIPPER_RANGE = "gripper_range"
RULE_GRIPPER_RATE = "gripper_rate"
RULE_WATCHDOG = "watchdog"


@dataclass(frozen=True)
class SafetyConfig:
    """Per-step caps and the workspace box (metres, base frame). Defaults are conservative;
    set the box for the actual cell."""
    max_translation_m: float = 0.03
    max_rotation_rad: float = 0.2
    workspace_min: tuple[float, float, float] = (0.15, -0.45, 0.02)
    workspace_max: tuple[float, float, float] = (0.75, 0.45, 0.60)
    max_gripper_delta: float = 0.5             # a full open/close takes two steps
    watchdog_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "workspace_min", tuple(float(v) for v in self.workspace_min))
        object.__setattr__(self, "workspace_max", tuple(float(v) for v in self.workspace_max))
        for name in ("max_translation_m", "max_rotation_rad", "max_gripper_delta", "watchdog_timeout_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
                raise ValueError(f"SafetyConfig.{name} must be a positive finite number, got {v!r}")
        lo, hi = self.workspace_min, self.workspace_max
        if len(lo) != 3 or len(hi) != 3 or not np.all(np.isfinite(lo + hi)):
            raise ValueError(f"workspace_min/max must be 3 finite numbers each, got {lo!r} / {hi!r}")
        bad = [axis for axis, a, b in zip("xyz", lo, hi) if not a < b]
        if bad:
            raise ValueError(f"workspace_min must be below workspace_max on every axis; not on {bad}: "
                             f"{lo} / {hi}")


@dataclass(frozen=True)
class SafetyEvent:
    """One clip or refusal: which rule fired and why, in words."""
    rule: str
    reason: str
    refused: bool = False


@dataclass
class GuardResult:
    """``action`` is what to send when ``allowed``; when refused it is a hold (zero deltas, the
    gripper where it is) and the caller should hold the arm rather than send anything."""
    allowed: bool
    action: np.ndarray
    events: list[SafetyEvent] = field(default_factory=list)

    @property
    def clipped(self) -> bool:
        return self.allowed and bool(self.events)

    @property
    def reasons(self) -> list[str]:
        return [f"{e.rule}: {e.reason}" for e in self.events]


def hold_action(state: ArmState | None) -> np.ndarray:
    """Zero motion; the gripper stays where it is (0 if unknown)."""
    g = float(state.gripper) if state is not None and np.isfinite(state.gripper) else 0.0
    return np.array([0.0] * 6 + [g])


class SafetyGuard:
    """Stateful: remembers the e-stop latch and when the last accepted command arrived."""

    def __init__(self, config: SafetyConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or SafetyConfig()
        self._clock = clock
        self._estop_reason: str | None = None
        self._last_command_at: float | None = None
        self._lo = np.asarray(self.config.workspace_min)
        self._hi = np.asarray(self.config.workspace_max)

    # ------------------------------------------------------------------ e-stop

    @property
    def estopped(self) -> bool:
        return self._estop_reason is not None

    @property
    def estop_reason(self) -> str | None:
        return self._estop_reason

    def estop(self, reason: str = "operator pressed e-stop") -> SafetyEvent:
        """Latch: every ``check`` refuses until ``reset()``. A second call keeps the first reason."""
        if self._estop_reason is None:
            self._estop_reason = reason or "e-stop"
        return SafetyEvent(RULE_ESTOP, f"e-stop latched: {self._estop_reason}", refused=True)

    def reset(self) -> None:
        """Release the e-stop latch (explicit operator act) and restart the watchdog."""
        self._estop_reason = None
        self._last_command_at = None

    # ------------------------------------------------------------------ watchdog

    def tick(self, now: float | None = None) -> SafetyEvent | None:
        """An event if the arm must hold because no fresh command arrived within the timeout.

        None before the first command (nothing is moving) and while commands keep arriving.
        """
        now = self._clock() if now is None else now
        if self._last_command_at is None:
            return None
        age = now - self._last_command_at
        if age > self.config.watchdog_timeout_s:
            return SafetyEvent(RULE_WATCHDOG, f"no fresh command for {age:.2f} s "
                               f"(timeout {self.config.watchdog_timeout_s:.2f} s): hold", refused=True)
        return None

    # ------------------------------------------------------------------ the check

    def check(self, action: Sequence[float] | np.ndarray, state: ArmState,
              now: float | None = None) -> GuardResult:
        """Refuse, or clip the action so it respects every rule; say what changed and why."""
        now = self._clock() if now is None else now
        refusal = self._refusal(action, state)
        if refusal is not None:
            return GuardResult(False, hold_action(state), [refusal])

        a = np.asarray(action, dtype=np.float64).reshape(-1).copy()
        events: list[SafetyEvent] = []
        self._clamp_norm(a, slice(0, 3), self.config.max_translation_m, RULE_TRANSLATION, "m", events)
        self._clamp_norm(a, slice(3, 6), self.config.max_rotation_rad, RULE_ROTATION, "rad", events)
        pos = np.asarray(state.ee_position, dtype=np.float64)
        self._keep_in_workspace(a, pos, events)
        # Arms that add deltas to a commanded target (not the measured pose) report it: check the box
        # from there too, so a target running ahead of a blocked arm cannot walk out of the box.
        target = state.extras.get("target_position") if state.extras else None
        if target is not None:
            target = np.asarray(target, dtype=np.float64)
            if target.shape == (3,) and np.all(np.isfinite(target)) and not np.allclose(target, pos):
                self._keep_in_workspace(a, target, events)
        self._limit_gripper(a, float(state.gripper), events)
        self._last_command_at = now
        return GuardResult(True, a, events)

    def _refusal(self, action, state: ArmState) -> SafetyEvent | None:
        if self._estop_reason is not None:
            return SafetyEvent(RULE_ESTOP, f"e-stop latched ({self._estop_reason}); "
                               "reset() is required before any motion", refused=True)
        if not state.enabled:
            return SafetyEvent(RULE_DISABLED, "arm is disabled: no motion is sent", refused=True)
        try:
            a = np.asarray(action, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            return SafetyEvent(RULE_INVALID, f"action is not numeric: {action!r}", refused=True)
        if a.shape != (ACTION_DIM,):
            return SafetyEvent(RULE_INVALID, f"action must have {ACTION_DIM} values, got {a.size}",
                               refused=True)
        if not np.all(np.isfinite(a)):
            bad = [i for i in range(ACTION_DIM) if not np.isfinite(a[i])]
            return SafetyEvent(RULE_INVALID, f"action has NaN/inf in dims {bad}: {a.tolist()}",
                               refused=True)
        pos = np.asarray(state.ee_position, dtype=np.float64)
        if pos.shape != (3,) or not np.all(np.isfinite(pos)) or not np.isfinite(state.gripper):
            return SafetyEvent(RULE_INVALID, "arm state has no finite end-effector position/gripper; "
                               "cannot check the workspace", refused=True)
        return None

    @staticmethod
    def _clamp_norm(a: np.ndarray, sl: slice, cap: float, rule: str, unit: str,
                    events: list[SafetyEvent]) -> None:
        norm = float(np.linalg.norm(a[sl]))
        if norm > cap:
            a[sl] *= cap / norm
            events.append(SafetyEvent(rule, f"step {norm:.4f} {unit} clamped to {cap:.4f} {unit}"))

    def _keep_in_workspace(self, a: np.ndarray, pos: np.ndarray, events: list[SafetyEvent]) -> None:
        """Clip the delta so the target stays in the box. Outside the box (e.g. after a manual
        move), an axis may only move back toward the box, never further out."""
        low = np.minimum(self._lo - pos, 0.0)
        high = np.maximum(self._hi - pos, 0.0)
        clipped = np.clip(a[:3], low, high)
        for i, axis in enumerate("xyz"):
            if clipped[i] != a[i]:
                target = pos[i] + a[i]
                events.append(SafetyEvent(RULE_WORKSPACE, (
                    f"{axis} target {target:.4f} m is outside [{self._lo[i]:.4f}, {self._hi[i]:.4f}] m; "
                    f"step {a[i]:.4f} -> {clipped[i]:.4f} m")))
        a[:3] = clipped

    def _limit_gripper(self, a: np.ndarray, current: float, events: list[SafetyEvent]) -> None:
        g = float(np.clip(a[6], 0.0, 1.0))
        if g != a[6]:
            events.append(SafetyEvent(RULE_GRIPPER_RANGE, f"gripper {a[6]:.3f} clipped to {g:.3f} "
                                      "(0 open .. 1 closed)"))
        cap = self.config.max_gripper_delta
        limited = float(np.clip(g, current - cap, current + cap))
        if limited != g:
            events.append(SafetyEvent(RULE_GRIPPER_RATE, f"gripper change {g - current:+.3f} limited "
                                      f"to {limited - current:+.3f} per step (max {cap:.3f})"))
        a[6] = limited


__all__ = [
    "GuardResult", "SafetyConfig", "SafetyEvent", "SafetyGuard", "hold_action",
    "RULE_DISABLED", "RULE_ESTOP", "RULE_GRIPPER_RANGE", "RULE_GRIPPER_RATE", "RULE_INVALID",
    "RULE_ROTATION", "RULE_TRANSLATION", "RULE_WATCHDOG", "RULE_WORKSPACE",
]
