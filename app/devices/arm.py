"""The arm contract: sim, xArm, UR and Franka adapters all implement it.

Arms start disabled: ``send_action`` refuses until ``enable()``. ``send_action`` returns the command
actually sent (after the adapter's own clipping) so the UI and recorder show what the arm got.
Actions here are already in the arm's command frame and units (see ``action_adapter``): an
end-effector delta ``[dx, dy, dz (m), droll, dpitch, dyaw (rad), gripper (0 open .. 1 closed)]``.
Translations are along the base axes; the rotation delta is a small roll/pitch/yaw increment about
the base axes (equal to a rotation vector to first order, which is what per-step deltas are).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np


class ArmError(RuntimeError):
    """Connection lost, SDK error, command refused: the message says which."""


class ArmDisabledError(ArmError):
    """A motion command while the operator has not enabled the arm."""


def sdk_call(arm: str, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """One call into a vendor SDK: whatever it raises (RuntimeError from libfranka or ur-rtde, socket
    and value errors from the xArm SDK) becomes an ArmError that keeps the SDK's message."""
    try:
        return fn(*args, **kwargs)
    except ArmError:
        raise
    except Exception as e:  # noqa: BLE001 - vendor SDKs raise plain exceptions
        raise ArmError(f"{arm} {what} failed: {e}") from e


@dataclass
class ArmState:
    ee_position: np.ndarray          # (3,) metres, base frame
    ee_rpy: np.ndarray               # (3,) radians, base frame (roll, pitch, yaw)
    gripper: float                   # 0 open .. 1 closed
    joint_positions: np.ndarray      # (n,) radians
    timestamp: float                 # seconds
    enabled: bool = False
    extras: dict = field(default_factory=dict)


@dataclass
class SentAction:
    """What reached the arm, and why it differs from what was asked, if it does."""
    requested: np.ndarray            # (7,)
    sent: np.ndarray                 # (7,) after the adapter's own limits
    clipped: list[str] = field(default_factory=list)


@runtime_checkable
class Arm(Protocol):
    name: str

    @property
    def enabled(self) -> bool: ...

    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    def enable(self) -> None: ...

    def disable(self) -> None: ...

    def state(self) -> ArmState: ...

    def send_action(self, action: np.ndarray) -> SentAction: ...

    def hold(self) -> None: ...

    def stop(self) -> None: ...

    def __enter__(self) -> "Arm": ...

    def __exit__(self, *exc) -> None: ...
