"""Universal Robots (CB3 / e-Series) through ``ur-rtde``.

ur-rtde speaks SI units and UR's pose format: ``[x, y, z (m), rx, ry, rz]`` where the last three
are a rotation *vector* (axis * angle, rad), in the controller's Base frame. Each step reads
``getActualTCPPose()``, applies the base-frame delta and sends the absolute target with
``moveL(pose, speed, acceleration, asynchronous=True)`` (default) or ``servoL(pose, speed,
acceleration, time, lookahead_time, gain)`` for a steady command stream. Holding is
``stopL``/``servoStop``. The arm must be powered, brakes released and not protective- or
emergency-stopped; ``enable()`` checks that and says which.

ur-rtde has no gripper API of its own (Robotiq etc. go through URCaps), so a gripper is an
optional injected ``URGripper``; without one the gripper dimension is reported as ignored.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol

import numpy as np

from app.devices.action_adapter import (
    StepLimits, apply_base_delta, limit_step, matrix_to_rotvec, matrix_to_rpy, rotvec_to_matrix,
)
from app.devices.arm import ArmDisabledError, ArmError, ArmState, SentAction, sdk_call

EXTRA_HINT = 'pip install -e ".[ur]"'
ROBOT_MODE_RUNNING = 7            # getRobotMode(): 7 = RUNNING (powered, brakes released)
ROBOT_MODES = {-1: "no controller", 0: "disconnected", 1: "confirm safety", 2: "booting",
               3: "power off", 4: "power on", 5: "idle", 6: "backdrive", 7: "running",
               8: "updating firmware"}


class URGripper(Protocol):
    """What the adapter needs from a gripper driver (e.g. a Robotiq URCap socket client)."""

    def set_closed(self, fraction: float) -> None: ...

    def get_closed(self) -> float: ...


@dataclass
class URClients:
    control: Any      # rtde_control.RTDEControlInterface
    receive: Any      # rtde_receive.RTDEReceiveInterface


ClientFactory = Callable[[str], URClients]


@dataclass(frozen=True)
class URConfig:
    host: str = "192.168.1.10"
    name: str = "ur"
    limits: StepLimits = field(default_factory=StepLimits)
    motion: Literal["moveL", "servoL"] = "moveL"
    speed_m_s: float = 0.10           # moveL tool speed
    acceleration_m_s2: float = 0.5    # moveL tool acceleration
    servo_time_s: float = 0.1         # servoL: time a step should take (about the model's period)
    lookahead_time_s: float = 0.1     # servoL: 0.03 .. 0.2
    gain: float = 300.0               # servoL: 100 .. 2000
    stop_deceleration_m_s2: float = 2.0
    gripper_deadband: float = 0.01

    def __post_init__(self) -> None:
        if self.motion not in ("moveL", "servoL"):
            raise ValueError(f"URConfig.motion must be 'moveL' or 'servoL', got {self.motion!r}")
        if not 0.03 <= self.lookahead_time_s <= 0.2:
            raise ValueError(f"lookahead_time_s must be in [0.03, 0.2], got {self.lookahead_time_s}")
        if not 100 <= self.gain <= 2000:
            raise ValueError(f"gain must be in [100, 2000], got {self.gain}")


def sdk_factory() -> ClientFactory:
    """Real RTDE interfaces; a clear ArmError naming the extra when ur-rtde is not installed."""
    try:
        control = importlib.import_module("rtde_control")
        receive = importlib.import_module("rtde_receive")
    except ImportError as e:
        raise ArmError(f"Universal Robots support needs the ur-rtde package: {EXTRA_HINT} ({e})") from e
    return lambda host: URClients(control.RTDEControlInterface(host), receive.RTDEReceiveInterface(host))


def _closest_rotvec(rv: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Of the two rotation vectors for one orientation near pi, the one nearer ``reference``,
    so consecutive targets do not flip sign."""
    angle = float(np.linalg.norm(rv))
    if angle < 1e-9:
        return rv
    alt = rv * (1.0 - 2.0 * np.pi / angle)
    return alt if np.linalg.norm(alt - reference) < np.linalg.norm(rv - reference) else rv


class UniversalRobot:
    """Arm protocol over RTDEControlInterface + RTDEReceiveInterface. Disabled until ``enable()``."""

    def __init__(self, config: URConfig | None = None, client_factory: ClientFactory | None = None,
                 gripper: URGripper | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config or URConfig()
        self.name = self.config.name
        self._factory = client_factory or sdk_factory()
        self._gripper = gripper
        self._clock = clock
        self._clients: URClients | None = None
        self._enabled = False
        self._gripper_cmd: float | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def enabled(self) -> bool:
        return self._enabled

    def connect(self) -> None:
        if self._clients is not None:
            return
        try:
            clients = self._factory(self.config.host)
        except Exception as e:  # noqa: BLE001 - ur-rtde raises RuntimeError on connect failures
            raise ArmError(f"UR at {self.config.host}: could not connect: {e}") from e
        if not (clients.control.isConnected() and clients.receive.isConnected()):
            raise ArmError(f"UR at {self.config.host}: RTDE not connected")
        self._clients = clients

    def disconnect(self) -> None:
        if self._clients is None:
            return
        clients = self._clients
        try:
            if self._enabled:
                self.disable()
            self._call("stopScript", clients.control.stopScript)
        finally:
            self._clients = None
            self._enabled = False
            clients.control.disconnect()
            clients.receive.disconnect()

    def enable(self) -> None:
        """Accept motion, once the robot is running and not stopped by its safety system."""
        c = self._require()
        if not self._call("isConnected", c.control.isConnected):
            raise ArmError(f"{self.name}: RTDE control interface is not connected")
        self._check_safety(c)
        mode = int(self._call("getRobotMode", c.receive.getRobotMode))
        if mode != ROBOT_MODE_RUNNING:
            raise ArmError(f"{self.name}: robot mode is {mode} ({ROBOT_MODES.get(mode, 'unknown')}); "
                           "power it on and release the brakes on the pendant first")
        self._enabled = True

    def disable(self) -> None:
        was = self._enabled
        self._enabled = False
        if self._clients is not None and was:
            self._halt(self._clients)

    def __enter__(self) -> "UniversalRobot":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # ------------------------------------------------------------------ state

    def state(self) -> ArmState:
        c = self._require()
        pose = np.asarray(self._call("getActualTCPPose", c.receive.getActualTCPPose), dtype=np.float64)
        q = np.asarray(self._call("getActualQ", c.receive.getActualQ), dtype=np.float64)
        return ArmState(
            ee_position=pose[:3].copy(),
            ee_rpy=matrix_to_rpy(rotvec_to_matrix(pose[3:6])),
            gripper=self._gripper_state(),
            joint_positions=q,
            timestamp=self._clock(),
            enabled=self._enabled,
            extras={"tcp_rotvec": pose[3:6].copy(),
                    "robot_mode": int(self._call("getRobotMode", c.receive.getRobotMode)),
                    "protective_stopped": bool(self._call("isProtectiveStopped", c.receive.isProtectiveStopped))},
        )

    def _gripper_state(self) -> float:
        if self._gripper is not None:
            return float(np.clip(self._call("gripper", self._gripper.get_closed), 0.0, 1.0))
        return 0.0 if self._gripper_cmd is None else self._gripper_cmd

    # ------------------------------------------------------------------ motion

    def send_action(self, action: np.ndarray) -> SentAction:
        if not self._enabled:
            raise ArmDisabledError(f"{self.name}: enable the arm before sending motion")
        c = self._require()
        try:
            requested, sent, clipped = limit_step(action, self.config.limits)
        except ValueError as e:
            raise ArmError(f"{self.name}: command refused: {e}") from e
        self._check_safety(c)

        if np.any(sent[:6] != 0.0):
            pose = np.asarray(self._call("getActualTCPPose", c.receive.getActualTCPPose), dtype=np.float64)
            pos, rot = apply_base_delta(pose[:3], rotvec_to_matrix(pose[3:6]), sent)
            target = [*map(float, pos), *map(float, _closest_rotvec(matrix_to_rotvec(rot), pose[3:6]))]
            cfg = self.config
            if cfg.motion == "moveL":
                ok = self._call("moveL", c.control.moveL, target, cfg.speed_m_s, cfg.acceleration_m_s2, True)
            else:
                ok = self._call("servoL", c.control.servoL, target, 0.0, 0.0, cfg.servo_time_s,
                                cfg.lookahead_time_s, cfg.gain)
            if ok is False:
                self._check_safety(c)
                raise ArmError(f"{self.name}: {cfg.motion} to {np.round(target, 4).tolist()} was refused "
                               "by the controller (unreachable, or the control script stopped)")
        sent[6] = self._command_gripper(float(sent[6]), clipped)
        return SentAction(requested=requested, sent=sent, clipped=clipped)

    def _command_gripper(self, g: float, clipped: list[str]) -> float:
        if self._gripper is None:
            held = 0.0 if self._gripper_cmd is None else self._gripper_cmd
            if abs(g - held) > 1e-9:
                clipped.append("no gripper configured: gripper command ignored")
            return held
        if self._gripper_cmd is None or abs(g - self._gripper_cmd) > self.config.gripper_deadband:
            self._call("gripper", self._gripper.set_closed, g)
            self._gripper_cmd = g
        return g

    def hold(self) -> None:
        self._halt(self._require())

    def stop(self) -> None:
        self._enabled = False
        if self._clients is not None:
            self._halt(self._clients)

    def _halt(self, c: URClients) -> None:
        a = self.config.stop_deceleration_m_s2
        if self.config.motion == "servoL":
            self._call("servoStop", c.control.servoStop, a)
        else:
            self._call("stopL", c.control.stopL, a)

    # ------------------------------------------------------------------ SDK plumbing

    def _check_safety(self, c: URClients) -> None:
        if self._call("isEmergencyStopped", c.receive.isEmergencyStopped):
            self._enabled = False
            raise ArmError(f"{self.name}: emergency stop is active; release it and re-enable")
        if self._call("isProtectiveStopped", c.receive.isProtectiveStopped):
            self._enabled = False
            raise ArmError(f"{self.name}: protective stop is active; unlock it on the pendant and re-enable")

    def _require(self) -> URClients:
        if self._clients is None:
            raise ArmError(f"{self.name}: not connected (call connect())")
        return self._clients

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        return sdk_call("UR", what, fn, *args)


__all__ = ["EXTRA_HINT", "URClients", "URConfig", "URGripper", "UniversalRobot", "sdk_factory"]
