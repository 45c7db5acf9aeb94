"""Fakes of the three arm SDK clients. They record every call and check what a real SDK cannot
tell us in a test: units (mm vs m, degrees vs radians), frames and call order.

A misuse raises ``SDKMisuse``, which derives from BaseException on purpose: the adapters wrap SDK
``Exception``s into ArmError, and a misuse must fail the test, not look like an arm error.
Errors the real SDK would report (return codes, RuntimeError) are injected with ``fail_next``.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from app.devices.action_adapter import (
    matrix_to_quat_xyzw, quat_xyzw_to_matrix, rotation_angle, rotvec_to_matrix,
)


class SDKMisuse(BaseException):
    """The adapter used the SDK wrongly (units, frame, order)."""


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self._failures: dict[str, Any] = {}

    def _rec(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))

    def fail_next(self, name: str, result: Any) -> None:
        """Make the next call of ``name`` return ``result`` (or raise it, if it is an exception)."""
        self._failures[name] = result

    def _failure(self, name: str) -> tuple[bool, Any]:
        if name not in self._failures:
            return False, None
        result = self._failures.pop(name)
        if isinstance(result, BaseException):
            raise result
        return True, result

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def last(self, name: str) -> tuple[tuple, dict]:
        for n, args, kwargs in reversed(self.calls):
            if n == name:
                return args, kwargs
        raise AssertionError(f"{name} was never called; calls: {self.names()}")


# ---------------------------------------------------------------------------- xArm


class FakeXArmAPI(_Recorder):
    """xarm.wrapper.XArmAPI: millimetres and degrees, 0..850 gripper pulses (850 = open)."""

    MAX_RELATIVE_MM = 100.0     # one step bigger than this means the units are wrong
    MAX_RELATIVE_DEG = 30.0

    def __init__(self, ip: str = "fake", is_radian: bool = False, axis: int = 6,
                 pose: tuple[float, ...] = (300.0, 0.0, 200.0, 180.0, 0.0, 0.0)) -> None:
        super().__init__()
        self.ip, self.axis = ip, axis
        self.connected = True
        self.pose = list(pose)                        # mm, deg
        self.angles = [0.0, -30.0, 0.0, 45.0, 0.0, 75.0, 0.0]   # deg, 7 values like the SDK
        self.error_code = 0
        self.warn_code = 0
        self.motion_enabled = False
        self.mode: int | None = None
        self.state: int | None = None
        self.gripper_enabled = False
        self.gripper_pos = 850.0
        self.lite6_gripper = "stopped"

    @property
    def has_error(self) -> bool:
        return self.error_code != 0

    def _code(self, name: str) -> int | None:
        hit, code = self._failure(name)
        return code if hit else None

    # -- lifecycle
    def motion_enable(self, enable: bool = True, servo_id: int | None = None) -> int:
        self._rec("motion_enable", enable=enable, servo_id=servo_id)
        if (code := self._code("motion_enable")) is not None:
            return code
        self.motion_enabled = bool(enable)
        return 0

    def set_mode(self, mode: int = 0, detection_param: int = 0) -> int:
        self._rec("set_mode", mode)
        if not self.motion_enabled:
            raise SDKMisuse("set_mode before motion_enable(True)")
        self.mode = mode
        return 0

    def set_state(self, state: int = 0) -> int:
        self._rec("set_state", state=state)
        if (code := self._code("set_state")) is not None:
            return code
        self.state = state
        return 0

    def get_err_warn_code(self, show: bool = False, lang: str = "en") -> tuple[int, list[int]]:
        self._rec("get_err_warn_code")
        return 0, [self.error_code, self.warn_code]

    def clean_error(self) -> int:
        self._rec("clean_error")
        self.error_code = 0
        return 0

    def disconnect(self) -> None:
        self._rec("disconnect")
        self.connected = False

    # -- state
    def get_position(self, is_radian: bool | None = None) -> tuple[int, list[float]]:
        self._rec("get_position", is_radian=is_radian)
        if is_radian is not False:
            raise SDKMisuse("get_position without is_radian=False: RPY units depend on the constructor")
        return 0, list(self.pose)

    def get_servo_angle(self, servo_id: int | None = None, is_radian: bool | None = None,
                        is_real: bool = False) -> tuple[int, list[float]]:
        self._rec("get_servo_angle", is_radian=is_radian)
        if is_radian is not False:
            raise SDKMisuse("get_servo_angle without is_radian=False")
        return 0, list(self.angles)

    # -- motion
    def set_position(self, x=None, y=None, z=None, roll=None, pitch=None, yaw=None, radius=None,
                     speed=None, mvacc=None, mvtime=None, relative=False, is_radian=None,
                     wait=False, timeout=None, **kwargs) -> int:
        self._rec("set_position", x=x, y=y, z=z, roll=roll, pitch=pitch, yaw=yaw, speed=speed,
                  mvacc=mvacc, relative=relative, is_radian=is_radian, wait=wait)
        if not (self.motion_enabled and self.mode == 0 and self.state == 0):
            raise SDKMisuse(f"set_position while not ready: enabled={self.motion_enabled} "
                            f"mode={self.mode} state={self.state}")
        if relative is not False or is_radian is not False or wait is not False:
            raise SDKMisuse(f"expected relative=False (queued relative moves start from the last target), "
                            f"is_radian=False, wait=False; got {relative}, {is_radian}, {wait}")
        target = [float(v) for v in (x, y, z, roll, pitch, yaw)]
        d = [t - p for t, p in zip(target, self.pose)]
        d[3:] = [(v + 180.0) % 360.0 - 180.0 for v in d[3:]]
        if math.dist(d[:3], (0, 0, 0)) > self.MAX_RELATIVE_MM:
            raise SDKMisuse(f"target {d[:3]} mm away in one call: units wrong (m sent as mm?)")
        if max(abs(v) for v in d[3:]) > self.MAX_RELATIVE_DEG:
            raise SDKMisuse(f"target rotation {d[3:]} deg away in one call: radians/degrees mixed up?")
        if speed is None or not 1.0 <= speed <= 1000.0:
            raise SDKMisuse(f"speed {speed} is not a sane mm/s value")
        if (code := self._code("set_position")) is not None:
            return code
        self.pose = target
        return 0

    # -- grippers
    def set_gripper_enable(self, enable: bool, **kwargs) -> int:
        self._rec("set_gripper_enable", enable)
        self.gripper_enabled = bool(enable)
        return 0

    def set_gripper_mode(self, mode: int, **kwargs) -> int:
        self._rec("set_gripper_mode", mode)
        return 0

    def set_gripper_position(self, pos, wait=False, speed=None, auto_enable=False, timeout=None, **kw) -> int:
        self._rec("set_gripper_position", pos, wait=wait, speed=speed)
        if not self.gripper_enabled:
            raise SDKMisuse("set_gripper_position before set_gripper_enable(True)")
        if not 0 <= pos <= 850 or wait is not False:
            raise SDKMisuse(f"gripper pulse {pos} outside 0..850 or blocking call (wait={wait})")
        if (code := self._code("set_gripper_position")) is not None:
            return code
        self.gripper_pos = float(pos)
        return 0

    def get_gripper_position(self, **kwargs) -> tuple[int, float]:
        self._rec("get_gripper_position")
        return 0, self.gripper_pos

    def open_lite6_gripper(self, sync: bool = True) -> int:
        self._rec("open_lite6_gripper")
        self.lite6_gripper = "open"
        return 0

    def close_lite6_gripper(self, sync: bool = True) -> int:
        self._rec("close_lite6_gripper")
        self.lite6_gripper = "closed"
        return 0

    def stop_lite6_gripper(self, sync: bool = True) -> int:
        self._rec("stop_lite6_gripper")
        self.lite6_gripper = "stopped"
        return 0


# ---------------------------------------------------------------------------- UR


class FakeURRobot:
    """The shared world behind FakeRTDEControl and FakeRTDEReceive (metres, rotation vectors)."""

    def __init__(self, pose: tuple[float, ...] = (0.4, -0.1, 0.3, 2.0, 1.0, 0.3)) -> None:
        self.pose = np.asarray(pose, dtype=np.float64)
        self.q = np.array([0.0, -1.57, 1.57, -1.57, -1.57, 0.0])
        self.robot_mode = 7
        self.protective_stopped = False
        self.emergency_stopped = False
        self.connected = True


class FakeRTDEControl(_Recorder):
    """rtde_control.RTDEControlInterface: absolute targets, metres, rotation vector."""

    MAX_STEP_M = 0.1
    MAX_STEP_RAD = 0.5

    def __init__(self, robot: FakeURRobot) -> None:
        super().__init__()
        self.robot = robot

    def _check_target(self, pose) -> np.ndarray:
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape != (6,):
            raise SDKMisuse(f"pose must be 6 numbers, got {pose.shape}")
        if np.linalg.norm(pose[:3] - self.robot.pose[:3]) > self.MAX_STEP_M:
            raise SDKMisuse(f"target {pose[:3]} is far from {self.robot.pose[:3]}: millimetres or a "
                            "relative pose sent where ur-rtde wants an absolute pose in metres?")
        if np.linalg.norm(pose[3:]) > 2 * np.pi:
            raise SDKMisuse(f"rotation vector {pose[3:]} longer than 2 pi: degrees?")
        turn = rotation_angle(rotvec_to_matrix(self.robot.pose[3:]).T @ rotvec_to_matrix(pose[3:]))
        if turn > self.MAX_STEP_RAD:
            raise SDKMisuse(f"target orientation {turn:.2f} rad from the current one: RPY sent as a "
                            "rotation vector, or degrees?")
        return pose

    def moveL(self, pose, speed=0.25, acceleration=1.2, asynchronous=False) -> bool:
        self._rec("moveL", list(pose), speed, acceleration, asynchronous)
        target = self._check_target(pose)
        if not (0 < speed <= 0.5 and 0 < acceleration <= 3.0):
            raise SDKMisuse(f"moveL speed {speed} m/s / acceleration {acceleration} m/s^2 not sane")
        hit, result = self._failure("moveL")
        if hit:
            return result
        if self.robot.protective_stopped:
            return False
        self.robot.pose = target
        return True

    def servoL(self, pose, speed, acceleration, time, lookahead_time, gain) -> bool:
        self._rec("servoL", list(pose), speed, acceleration, time, lookahead_time, gain)
        target = self._check_target(pose)
        if not (0.03 <= lookahead_time <= 0.2 and 100 <= gain <= 2000 and time > 0):
            raise SDKMisuse(f"servoL time/lookahead/gain out of range: {time}, {lookahead_time}, {gain}")
        self.robot.pose = target
        return True

    def stopL(self, a=10.0, asynchronous=False) -> None:
        self._rec("stopL", a)

    def servoStop(self, a=10.0) -> None:
        self._rec("servoStop", a)

    def stopScript(self) -> None:
        self._rec("stopScript")

    def isConnected(self) -> bool:
        return self.robot.connected

    def disconnect(self) -> None:
        self._rec("disconnect")


class FakeRTDEReceive(_Recorder):
    """rtde_receive.RTDEReceiveInterface."""

    def __init__(self, robot: FakeURRobot) -> None:
        super().__init__()
        self.robot = robot

    def getActualTCPPose(self) -> list[float]:
        self._rec("getActualTCPPose")
        self._failure("getActualTCPPose")
        return self.robot.pose.tolist()

    def getActualQ(self) -> list[float]:
        return self.robot.q.tolist()

    def getRobotMode(self) -> int:
        return self.robot.robot_mode

    def isProtectiveStopped(self) -> bool:
        return self.robot.protective_stopped

    def isEmergencyStopped(self) -> bool:
        return self.robot.emergency_stopped

    def isConnected(self) -> bool:
        return self.robot.connected

    def disconnect(self) -> None:
        self._rec("disconnect")


class FakeURGripper:
    def __init__(self) -> None:
        self.closed = 0.0
        self.commands: list[float] = []

    def set_closed(self, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise SDKMisuse(f"gripper fraction {fraction} outside 0..1")
        self.commands.append(fraction)
        self.closed = fraction

    def get_closed(self) -> float:
        return self.closed


# ---------------------------------------------------------------------------- Franka (panda-py)


class FakeFrankaPanda(_Recorder):
    """panda_py.Panda: metres, quaternions scalar last [x, y, z, w]."""

    def __init__(self, position=(0.307, 0.0, 0.487), quat_xyzw=(1.0, 0.0, 0.0, 0.0)) -> None:
        super().__init__()
        self.position = np.asarray(position, dtype=np.float64)
        self.rotation = quat_xyzw_to_matrix(quat_xyzw)
        self.q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
        self.error: str | None = None
        self.controller: FakeCartesianImpedance | None = None
        self.follow = True          # the arm reaches each target at once; False: it is blocked

    def get_position(self) -> np.ndarray:
        return self.position.copy()

    def get_orientation(self, scalar_first: bool = False) -> np.ndarray:
        q = matrix_to_quat_xyzw(self.rotation)
        return np.roll(q, 1) if scalar_first else q

    def get_state(self) -> SimpleNamespace:
        return SimpleNamespace(q=self.q.tolist())

    def raise_error(self) -> None:
        self._rec("raise_error")
        if self.error:
            raise RuntimeError(self.error)

    def recover(self) -> None:
        self._rec("recover")
        self.error = None

    def start_controller(self, controller: "FakeCartesianImpedance") -> None:
        self._rec("start_controller")
        if self.error:
            raise RuntimeError(self.error)
        self.controller = controller

    def stop_controller(self) -> None:
        self._rec("stop_controller")
        self.controller = None


class FakeCartesianImpedance(_Recorder):
    """panda_py.controllers.CartesianImpedance: set_control(position (3,), orientation xyzw (4,))."""

    MAX_LEAD_M = 0.1
    MAX_TURN_RAD = 0.5

    def __init__(self, panda: FakeFrankaPanda) -> None:
        super().__init__()
        self.panda = panda

    def set_control(self, position, orientation, q_nullspace=None) -> None:
        position = np.asarray(position, dtype=np.float64)
        orientation = np.asarray(orientation, dtype=np.float64)
        self._rec("set_control", position.copy(), orientation.copy())
        if position.shape != (3,) or orientation.shape != (4,):
            raise SDKMisuse(f"set_control wants (3,) and (4,), got {position.shape}, {orientation.shape}")
        if abs(np.linalg.norm(orientation) - 1.0) > 1e-6:
            raise SDKMisuse(f"orientation {orientation} is not a unit quaternion")
        panda = self.panda
        if np.linalg.norm(position - panda.position) > self.MAX_LEAD_M:
            raise SDKMisuse(f"target {position} far from the arm at {panda.position}: mm, or relative?")
        turn = rotation_angle(panda.rotation.T @ quat_xyzw_to_matrix(orientation))
        if turn > self.MAX_TURN_RAD:
            raise SDKMisuse(f"target orientation {turn:.2f} rad away: quaternion scalar-first (wxyz)?")
        if panda.controller is self and panda.follow:
            panda.position = position.copy()
            panda.rotation = quat_xyzw_to_matrix(orientation)


class FakeFrankaGripper(_Recorder):
    """panda_py.libfranka.Gripper: widths in metres, speed m/s, force N."""

    def __init__(self, max_width: float = 0.08) -> None:
        super().__init__()
        self.max_width = max_width
        self.width = max_width
        self.object_width: float | None = None

    def read_once(self) -> SimpleNamespace:
        return SimpleNamespace(width=self.width, max_width=self.max_width,
                               is_grasped=self.object_width is not None and self.width == self.object_width)

    def move(self, width: float, speed: float) -> bool:
        self._rec("move", width, speed)
        if not 0.0 <= width <= self.max_width + 1e-9 or not 0.0 < speed <= 0.2:
            raise SDKMisuse(f"move(width={width}, speed={speed}): metres and m/s expected")
        self._failure("move")
        self.width = width
        return True

    def grasp(self, width: float, speed: float, force: float, epsilon_inner: float = 0.005,
              epsilon_outer: float = 0.005) -> bool:
        self._rec("grasp", width, speed, force, epsilon_inner=epsilon_inner, epsilon_outer=epsilon_outer)
        if not 0.0 <= width <= self.max_width or not 0.0 < force <= 70.0 or not 0.0 < speed <= 0.2:
            raise SDKMisuse(f"grasp(width={width}, speed={speed}, force={force}) out of range")
        self._failure("grasp")
        self.width = self.object_width if self.object_width is not None else 0.0
        return abs(self.width - width) <= max(epsilon_inner, epsilon_outer)

    def stop(self) -> bool:
        self._rec("stop")
        return True


def fake_franka_factory(panda: FakeFrankaPanda, gripper: FakeFrankaGripper | None = None,
                        controllers: list | None = None):
    """A client factory for ``Franka`` handing out these fakes; created controllers go to ``controllers``."""
    from app.devices.franka import FrankaClients

    made = controllers if controllers is not None else []

    def make_controller() -> FakeCartesianImpedance:
        ctrl = FakeCartesianImpedance(panda)
        made.append(ctrl)
        return ctrl

    def factory(host: str, with_gripper: bool) -> FrankaClients:
        panda._rec("connect", host)
        return FrankaClients(panda=panda, gripper=gripper if with_gripper else None,
                             make_controller=make_controller)
    return factory


def fake_ur_factory(robot: FakeURRobot, clients: list | None = None):
    """A client factory for ``UniversalRobot``; the created (control, receive) go to ``clients``."""
    from app.devices.ur import URClients

    def factory(host: str) -> URClients:
        c = URClients(FakeRTDEControl(robot), FakeRTDEReceive(robot))
        if clients is not None:
            clients.append(c)
        return c
    return factory


__all__ = [
    "FakeCartesianImpedance", "FakeFrankaGripper", "FakeFrankaPanda", "FakeRTDEControl",
    "FakeRTDEReceive", "FakeURGripper", "FakeURRobot", "FakeXArmAPI", "SDKMisuse",
    "fake_franka_factory", "fake_ur_factory",
]
