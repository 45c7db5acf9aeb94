"""UFACTORY xArm 5/6/7 and Lite 6 through ``xarm-python-sdk`` (``xarm.wrapper.XArmAPI``).

The SDK speaks millimetres and degrees (we pass ``is_radian=False`` on every call rather than
trust the constructor default). Motion is a non-blocking linear move in position mode (mode 0,
state 0) to an ABSOLUTE target: ``set_position(x=mm, ..., roll=deg, ..., relative=False, wait=False)``,
where the target is the *measured* pose plus the delta (translation and a rotation about the base
axes, composed here). Queued relative moves would start from the last commanded target instead and
could carry the arm past the workspace box the safety guard checked. Gripper: the xArm Gripper takes 0 (closed) ..
850 (open) pulses; the Lite 6 gripper only opens and closes.

SDK return codes other than 0 become ``ArmError`` carrying the code, the SDK's meaning and the
controller error the arm reports (titles from the SDK's own code table when it is importable).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from app.devices.action_adapter import StepLimits, limit_step, matrix_to_rpy, rpy_to_matrix
from app.devices.arm import ArmDisabledError, ArmError, ArmState, SentAction, sdk_call

EXTRA_HINT = 'pip install -e ".[xarm]"'
GRIPPER_OPEN_PULSE = 850          # xArm Gripper: 850 = fully open, 0 = closed
MODE_POSITION = 0                 # set_mode(0): position control
STATE_READY = 0                   # set_state(0): motion state
STATE_STOP = 4                    # set_state(4): stop, clears queued motion
CODE_OK = 0
CODE_HAS_WARN = 2                 # command accepted, a warning is pending

# The SDK's APIState codes (xarm/x3/code.py), so errors say what a number means.
API_CODES: dict[int, str] = {
    -1: "not connected", -2: "not ready (motion not enabled or state not set)",
    -3: "API exception, possibly a parameter error", -4: "command does not exist",
    -6: "Cartesian (TCP) limit", -7: "joint angle limit", -8: "out of range",
    -9: "emergency stop", 1: "controller has an uncleared error", 2: "controller has a warning",
    3: "response timeout", 4: "TCP length error", 5: "TCP sequence number error",
    6: "TCP protocol flag error", 7: "reply does not match the command", 8: "write error",
    9: "not ready to move", 10: "result invalid or execution failed", 11: "other error",
    12: "parameter error",
}

ClientFactory = Callable[[str], Any]
GripperKind = Literal["xarm", "lite6", "none"]


@dataclass(frozen=True)
class XArmConfig:
    ip: str = "192.168.1.185"
    name: str = "xarm"
    limits: StepLimits = field(default_factory=StepLimits)
    speed_mm_s: float = 100.0          # linear speed of each move
    acc_mm_s2: float = 2000.0
    gripper: GripperKind = "xarm"
    gripper_speed_rpm: float = 2000.0  # set_gripper_position speed (r/min, SDK unit)
    gripper_deadband: float = 0.01     # re-command the gripper only when the target moves this much


def sdk_factory() -> ClientFactory:
    """The real ``XArmAPI``; a clear ArmError naming the extra when the SDK is not installed."""
    try:
        wrapper = importlib.import_module("xarm.wrapper")
    except ImportError as e:
        raise ArmError(f"xArm support needs the xarm-python-sdk package: {EXTRA_HINT} ({e})") from e
    return lambda ip: wrapper.XArmAPI(ip, is_radian=False)


def controller_error_text(code: int, warn: bool = False) -> str:
    """The SDK's title for a controller error/warn code, or just the number without the SDK."""
    prefix = "W" if warn else "C"
    try:
        x_code = importlib.import_module("xarm.core.config.x_code")
        info = (x_code.ControllerWarn if warn else x_code.ControllerError)(code)
        return f"{prefix}{code} {info.title['en']}"
    except Exception:  # noqa: BLE001 - the lookup is a nicety, never the failure
        return f"{prefix}{code}"


def _wrap_deg(d: np.ndarray) -> np.ndarray:
    return (np.asarray(d) + 180.0) % 360.0 - 180.0


class XArm:
    """Arm protocol over XArmAPI. Disabled until ``enable()``."""

    def __init__(self, config: XArmConfig | None = None, client_factory: ClientFactory | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config or XArmConfig()
        self.name = self.config.name
        self._factory = client_factory or sdk_factory()
        self._clock = clock
        self._api: Any = None
        self._enabled = False
        self._gripper_cmd: float | None = None
        self._last_warn: int = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def enabled(self) -> bool:
        return self._enabled

    def connect(self) -> None:
        if self._api is not None:
            return
        try:
            api = self._factory(self.config.ip)
        except Exception as e:  # noqa: BLE001 - SDK/socket errors vary
            raise ArmError(f"xArm at {self.config.ip}: could not connect: {e}") from e
        if not getattr(api, "connected", False):
            raise ArmError(f"xArm at {self.config.ip}: not connected (check the IP and the cable)")
        self._api = api

    def disconnect(self) -> None:
        if self._api is None:
            return
        try:
            if self._enabled:
                self.disable()
        finally:
            api, self._api = self._api, None
            self._enabled = False
            api.disconnect()

    def enable(self) -> None:
        """Motors on, position mode, ready; refuses while the controller reports an error."""
        api = self._require_api()
        code, (err, warn) = self._call("get_err_warn_code", api.get_err_warn_code)
        self._check(code, "get_err_warn_code")
        if err:
            raise ArmError(f"xArm controller error {controller_error_text(err)}: clear it "
                           "(fix the cause, then clean_error) before enabling")
        self._check(self._call("motion_enable", api.motion_enable, enable=True), "motion_enable")
        self._check(self._call("set_mode", api.set_mode, MODE_POSITION), "set_mode")
        self._check(self._call("set_state", api.set_state, state=STATE_READY), "set_state")
        if self.config.gripper == "xarm":
            self._check(self._call("set_gripper_enable", api.set_gripper_enable, True), "set_gripper_enable")
            self._check(self._call("set_gripper_mode", api.set_gripper_mode, 0), "set_gripper_mode")
        self._enabled = True

    def disable(self) -> None:
        """Stop (clears queued moves) and refuse motion; motors stay powered so the arm holds."""
        self._enabled = False
        if self._api is not None:
            self._check(self._call("set_state", self._api.set_state, state=STATE_STOP), "set_state")

    def __enter__(self) -> "XArm":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # ------------------------------------------------------------------ state

    def state(self) -> ArmState:
        api = self._require_api()
        code, pose = self._call("get_position", api.get_position, is_radian=False)
        self._check(code, "get_position")
        code, angles = self._call("get_servo_angle", api.get_servo_angle, is_radian=False)
        self._check(code, "get_servo_angle")
        n = int(getattr(api, "axis", len(angles)))
        return ArmState(
            ee_position=np.asarray(pose[:3], dtype=np.float64) / 1000.0,
            ee_rpy=np.radians(np.asarray(pose[3:6], dtype=np.float64)),
            gripper=self._gripper_state(),
            joint_positions=np.radians(np.asarray(angles[:n], dtype=np.float64)),
            timestamp=self._clock(),
            enabled=self._enabled,
            extras={"error_code": getattr(api, "error_code", 0), "warn_code": getattr(api, "warn_code", 0)},
        )

    def _gripper_state(self) -> float:
        if self.config.gripper == "xarm":
            code, pos = self._call("get_gripper_position", self._api.get_gripper_position)
            self._check(code, "get_gripper_position")
            return float(np.clip((GRIPPER_OPEN_PULSE - float(pos)) / GRIPPER_OPEN_PULSE, 0.0, 1.0))
        return 0.0 if self._gripper_cmd is None else self._gripper_cmd   # no feedback: last command

    # ------------------------------------------------------------------ motion

    def send_action(self, action: np.ndarray) -> SentAction:
        if not self._enabled:
            raise ArmDisabledError(f"{self.name}: enable the arm before sending motion")
        api = self._require_api()
        try:
            requested, sent, clipped = limit_step(action, self.config.limits)
        except ValueError as e:
            raise ArmError(f"{self.name}: command refused: {e}") from e
        err = getattr(api, "error_code", 0)
        if err:
            raise ArmError(f"xArm controller error {controller_error_text(err)}")

        if np.any(sent[:6] != 0.0):
            code, pose = self._call("get_position", api.get_position, is_radian=False)
            self._check(code, "get_position")
            # Absolute targets from the *measured* pose: queued relative moves would start from the last
            # commanded target and could carry the arm past the workspace box the guard checked.
            current = np.radians(np.asarray(pose[3:6], dtype=np.float64))
            target_deg = np.degrees(matrix_to_rpy(rpy_to_matrix(sent[3:6]) @ rpy_to_matrix(current)))
            xyz_mm = np.asarray(pose[:3], dtype=np.float64) + sent[:3] * 1000.0
            code = self._call("set_position", api.set_position,
                              x=float(xyz_mm[0]), y=float(xyz_mm[1]), z=float(xyz_mm[2]),
                              roll=float(target_deg[0]), pitch=float(target_deg[1]), yaw=float(target_deg[2]),
                              speed=self.config.speed_mm_s, mvacc=self.config.acc_mm_s2,
                              relative=False, is_radian=False, wait=False)
            self._check(code, "set_position")
        sent[6] = self._command_gripper(float(sent[6]), clipped)
        return SentAction(requested=requested, sent=sent, clipped=clipped)

    def _command_gripper(self, g: float, clipped: list[str]) -> float:
        kind = self.config.gripper
        if kind == "none":
            held = 0.0 if self._gripper_cmd is None else self._gripper_cmd
            if abs(g - held) > 1e-9:
                clipped.append("no gripper configured: gripper command ignored")
            return held
        if kind == "lite6":
            binary = 1.0 if g >= 0.5 else 0.0
            if binary != g:
                clipped.append(f"Lite 6 gripper only opens/closes: {g:.3f} -> {binary:.0f}")
            if binary != self._gripper_cmd:
                call = self._api.close_lite6_gripper if binary else self._api.open_lite6_gripper
                self._check(self._call("lite6 gripper", call), "lite6 gripper")
                self._gripper_cmd = binary
            return binary
        if self._gripper_cmd is None or abs(g - self._gripper_cmd) > self.config.gripper_deadband:
            pulse = int(round(GRIPPER_OPEN_PULSE * (1.0 - g)))
            code = self._call("set_gripper_position", self._api.set_gripper_position, pulse,
                              wait=False, speed=self.config.gripper_speed_rpm)
            self._check(code, "set_gripper_position")
            self._gripper_cmd = g
        return g

    def hold(self) -> None:
        """Stop where it is (drops queued moves) and stay ready for the next command."""
        api = self._require_api()
        self._check(self._call("set_state", api.set_state, state=STATE_STOP), "set_state")
        if self._enabled:
            self._check(self._call("set_state", api.set_state, state=STATE_READY), "set_state")

    def stop(self) -> None:
        """Stop motion and disable: the operator must enable again."""
        self._enabled = False
        if self._api is None:
            return
        self._check(self._call("set_state", self._api.set_state, state=STATE_STOP), "set_state")
        if self.config.gripper == "lite6":
            self._call("stop_lite6_gripper", self._api.stop_lite6_gripper)

    # ------------------------------------------------------------------ SDK plumbing

    def _require_api(self) -> Any:
        if self._api is None:
            raise ArmError(f"{self.name}: not connected (call connect())")
        return self._api

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return sdk_call("xArm", what, fn, *args, **kwargs)

    def _check(self, code: int, what: str) -> None:
        if code == CODE_OK:
            return
        api = self._api
        warn = int(getattr(api, "warn_code", 0) or 0) if api is not None else 0
        if code == CODE_HAS_WARN:
            self._last_warn = warn
            return
        err = int(getattr(api, "error_code", 0) or 0) if api is not None else 0
        detail = f"xArm {what} returned code {code} ({API_CODES.get(code, 'unknown SDK code')})"
        if err:
            detail += f"; controller error {controller_error_text(err)}"
        if warn:
            detail += f"; warning {controller_error_text(warn, warn=True)}"
        raise ArmError(detail)


__all__ = ["API_CODES", "EXTRA_HINT", "GRIPPER_OPEN_PULSE", "XArm", "XArmConfig",
           "controller_error_text", "sdk_factory"]
