"""Franka Emika Panda / FR3 through panda-py (PyPI ``panda-python``, module ``panda_py``).

panda-py runs a 1 kHz torque controller in its own thread; we use its ``CartesianImpedance``
controller and stream targets with ``set_control(position (m, base frame), orientation)`` where
the orientation is a unit quaternion *scalar last* ``[x, y, z, w]``, as ``get_orientation()``
returns it. Targets are integrated from the previous target, not the measured pose: an impedance
controller settles a few millimetres short, and re-basing every step on the measured pose would
eat small steps. If the target runs more than ``max_lead_m`` ahead (contact, blocked), it is
re-based on the measured pose and the step says so.

The gripper (``panda_py.libfranka.Gripper``, widths in metres) blocks for the whole motion, so its
commands run off the control path on a latest-wins worker; a failure there is raised on the next
call. Errors the robot reports (reflexes, limits) reach Python as RuntimeError from
``raise_error()``/``start_controller()`` and become ArmError with libfranka's message.
"""
from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from app.devices.action_adapter import (
    StepLimits, apply_base_delta, limit_step, matrix_to_quat_xyzw, matrix_to_rpy, quat_xyzw_to_matrix,
    rotation_angle,
)
from app.devices.arm import ArmDisabledError, ArmError, ArmState, SentAction, sdk_call

EXTRA_HINT = 'pip install -e ".[franka]"'


@dataclass
class FrankaClients:
    panda: Any                                  # panda_py.Panda
    gripper: Any | None                         # panda_py.libfranka.Gripper, or None
    make_controller: Callable[[], Any]          # panda_py.controllers.CartesianImpedance


ClientFactory = Callable[[str, bool], FrankaClients]     # (host, with_gripper)
Runner = Callable[[Callable[[], Any]], None]


@dataclass(frozen=True)
class FrankaConfig:
    host: str = "172.16.0.2"
    name: str = "franka"
    limits: StepLimits = field(default_factory=StepLimits)
    max_lead_m: float = 0.05              # target may run this far ahead of the measured pose
    max_lead_rad: float = 0.2             # ... and turned this far from the measured orientation
    gripper: bool = True
    gripper_binary: bool = True           # close (grasp) at >= 0.5, open below; else move to width
    gripper_speed_m_s: float = 0.1
    grasp_force_n: float = 20.0
    gripper_deadband: float = 0.05        # continuous mode: re-command only past this change
    recover_on_enable: bool = False       # call panda.recover() (automatic error recovery) on enable


def sdk_factory() -> ClientFactory:
    """Real panda-py objects; a clear ArmError naming the extra when panda-py is not installed."""
    try:
        panda_py = importlib.import_module("panda_py")
        controllers = importlib.import_module("panda_py.controllers")
        libfranka = importlib.import_module("panda_py.libfranka")
    except ImportError as e:
        raise ArmError(f"Franka support needs the panda-python package: {EXTRA_HINT} ({e})") from e

    def make(host: str, with_gripper: bool) -> FrankaClients:
        return FrankaClients(panda_py.Panda(host), libfranka.Gripper(host) if with_gripper else None,
                             controllers.CartesianImpedance)
    return make


class LatestWinsWorker:
    """One daemon thread running the newest submitted job; older pending jobs are dropped."""

    def __init__(self) -> None:
        self._job: Callable[[], Any] | None = None
        self._closed = False
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="franka-gripper", daemon=True)
        self._thread.start()

    def __call__(self, job: Callable[[], Any]) -> None:
        with self._cv:
            self._job = job
            self._cv.notify()

    def cancel(self) -> None:
        """Drop the pending job (the one running, if any, finishes)."""
        with self._cv:
            self._job = None

    def close(self) -> None:
        with self._cv:
            self._job, self._closed = None, True
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._job is None and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job, self._job = self._job, None
            job()


class Franka:
    """Arm protocol over panda-py. Disabled until ``enable()`` starts the impedance controller."""

    def __init__(self, config: FrankaConfig | None = None, client_factory: ClientFactory | None = None,
                 run_gripper: Runner | None = None, clock: Callable[[], float] = time.time) -> None:
        self.config = config or FrankaConfig()
        self.name = self.config.name
        self._factory = client_factory or sdk_factory()
        self._run_gripper = run_gripper
        self._clock = clock
        self._clients: FrankaClients | None = None
        self._ctrl: Any = None
        self._enabled = False
        self._target_pos: np.ndarray | None = None
        self._target_rot: np.ndarray | None = None
        self._gripper_cmd: float | None = None
        self._max_width: float | None = None
        self._gripper_error: str | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def enabled(self) -> bool:
        return self._enabled

    def connect(self) -> None:
        if self._clients is not None:
            return
        try:
            self._clients = self._factory(self.config.host, self.config.gripper)
        except Exception as e:  # noqa: BLE001 - libfranka network/version errors arrive as RuntimeError
            raise ArmError(f"Franka at {self.config.host}: could not connect: {e}") from e
        if self._clients.gripper is not None:
            self._max_width = float(self._call("gripper read_once", self._clients.gripper.read_once).max_width)
        if self._run_gripper is None:
            self._run_gripper = LatestWinsWorker()

    def disconnect(self) -> None:
        if self._clients is None:
            return
        try:
            if self._enabled:
                self.disable()
        finally:
            close = getattr(self._run_gripper, "close", None)
            if close is not None:
                close()
                self._run_gripper = None
            self._clients = None
            self._enabled = False

    def enable(self) -> None:
        """Start the Cartesian impedance controller holding the current pose."""
        c = self._require()
        if self.config.recover_on_enable:
            self._call("recover", c.panda.recover)
        self._call("raise_error", c.panda.raise_error)
        pos, rot = self._measured(c)
        ctrl = self._call("CartesianImpedance", c.make_controller)
        self._call("set_control", ctrl.set_control, pos, matrix_to_quat_xyzw(rot))
        self._call("start_controller", c.panda.start_controller, ctrl)
        self._ctrl, self._target_pos, self._target_rot = ctrl, pos, rot
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False
        if self._clients is not None and self._ctrl is not None:
            self._ctrl = None
            self._call("stop_controller", self._clients.panda.stop_controller)

    def __enter__(self) -> "Franka":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    # ------------------------------------------------------------------ state

    def state(self) -> ArmState:
        c = self._require()
        pos, rot = self._measured(c)
        q = np.asarray(self._call("get_state", c.panda.get_state).q, dtype=np.float64)
        return ArmState(ee_position=pos, ee_rpy=matrix_to_rpy(rot), gripper=self._gripper_state(c),
                        joint_positions=q, timestamp=self._clock(), enabled=self._enabled,
                        extras={"quat_xyzw": matrix_to_quat_xyzw(rot),
                                # where the next delta starts from: the guard checks the box from here too
                                "target_position": None if self._target_pos is None else self._target_pos.copy()})

    def _gripper_state(self, c: FrankaClients) -> float:
        if c.gripper is None or not self._max_width:
            return 0.0 if self._gripper_cmd is None else self._gripper_cmd
        width = float(self._call("gripper read_once", c.gripper.read_once).width)
        return float(np.clip(1.0 - width / self._max_width, 0.0, 1.0))

    def _measured(self, c: FrankaClients) -> tuple[np.ndarray, np.ndarray]:
        pos = np.asarray(self._call("get_position", c.panda.get_position), dtype=np.float64).reshape(3)
        quat = np.asarray(self._call("get_orientation", c.panda.get_orientation, scalar_first=False),
                          dtype=np.float64).reshape(4)
        return pos, quat_xyzw_to_matrix(quat)

    # ------------------------------------------------------------------ motion

    def send_action(self, action: np.ndarray) -> SentAction:
        if not self._enabled:
            raise ArmDisabledError(f"{self.name}: enable the arm before sending motion")
        c = self._require()
        try:
            requested, sent, clipped = limit_step(action, self.config.limits)
        except ValueError as e:
            raise ArmError(f"{self.name}: command refused: {e}") from e
        self._raise_gripper_error()
        try:
            self._call("raise_error", c.panda.raise_error)
        except ArmError:
            self.disable()
            raise

        pos, rot = self._measured(c)
        lead = float(np.linalg.norm(self._target_pos - pos))
        turn = rotation_angle(self._target_rot @ rot.T)
        if lead > self.config.max_lead_m or turn > self.config.max_lead_rad:
            clipped.append(f"target was {lead:.3f} m / {turn:.3f} rad from the measured pose (max "
                           f"{self.config.max_lead_m:.3f} m / {self.config.max_lead_rad:.3f} rad): re-based on it")
            self._target_pos, self._target_rot = pos, rot
        if np.any(sent[:6] != 0.0):
            t_pos, t_rot = apply_base_delta(self._target_pos, self._target_rot, sent)
            self._call("set_control", self._ctrl.set_control, t_pos, matrix_to_quat_xyzw(t_rot))
            self._target_pos, self._target_rot = t_pos, t_rot
        sent[6] = self._command_gripper(c, float(sent[6]), clipped)
        return SentAction(requested=requested, sent=sent, clipped=clipped)

    def _command_gripper(self, c: FrankaClients, g: float, clipped: list[str]) -> float:
        gripper, cfg = c.gripper, self.config
        if gripper is None:
            held = 0.0 if self._gripper_cmd is None else self._gripper_cmd
            if abs(g - held) > 1e-9:
                clipped.append("no gripper configured: gripper command ignored")
            return held
        if cfg.gripper_binary:
            target = 1.0 if g >= 0.5 else 0.0
            if target != g:
                clipped.append(f"gripper is open/close (grasp) only: {g:.3f} -> {target:.0f}")
            if target != self._gripper_cmd:
                if target:       # grasp whatever is between the fingers: any width is a success
                    job = lambda: gripper.grasp(0.0, cfg.gripper_speed_m_s, cfg.grasp_force_n,
                                                epsilon_inner=0.005, epsilon_outer=self._max_width)
                else:
                    job = lambda: gripper.move(self._max_width, cfg.gripper_speed_m_s)
                self._submit(job)
                self._gripper_cmd = target
            return target
        if self._gripper_cmd is None or abs(g - self._gripper_cmd) > cfg.gripper_deadband:
            width = self._max_width * (1.0 - g)
            self._submit(lambda: gripper.move(width, cfg.gripper_speed_m_s))
            self._gripper_cmd = g
        return g

    def _submit(self, job: Callable[[], Any]) -> None:
        def guarded() -> None:
            try:
                job()
            except Exception as e:  # noqa: BLE001 - reported on the next call, with its message
                self._gripper_error = str(e)
        self._run_gripper(guarded)

    def _raise_gripper_error(self) -> None:
        if self._gripper_error is not None:
            msg, self._gripper_error = self._gripper_error, None
            raise ArmError(f"Franka gripper failed: {msg}")

    def hold(self) -> None:
        """Hold the measured pose (the impedance target jumps to where the arm is)."""
        c = self._require()
        if self._ctrl is None:
            return
        pos, rot = self._measured(c)
        self._call("set_control", self._ctrl.set_control, pos, matrix_to_quat_xyzw(rot))
        self._target_pos, self._target_rot = pos, rot

    def stop(self) -> None:
        """End torque control and stop the gripper; enable again to move."""
        self.disable()
        cancel = getattr(self._run_gripper, "cancel", None)
        if cancel is not None:
            cancel()           # a queued grasp/move must not run after a stop
        if self._clients is not None and self._clients.gripper is not None:
            self._call("gripper stop", self._clients.gripper.stop)

    # ------------------------------------------------------------------ SDK plumbing

    def _require(self) -> FrankaClients:
        if self._clients is None:
            raise ArmError(f"{self.name}: not connected (call connect())")
        return self._clients

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return sdk_call("Franka", what, fn, *args, **kwargs)


__all__ = ["EXTRA_HINT", "Franka", "FrankaClients", "FrankaConfig", "LatestWinsWorker", "sdk_factory"]
