"""The operator session: observe → reason → steer → guard → act, with the policy off the UI thread.

One worker thread owns every model call and every motion command, so the decoder's KV cache (which
``steer_text`` resumes from) always belongs to the reasoning on screen, and the guard sees commands
in order. A frame thread polls the camera at display rate. Front ends (the Qt window, the headless
CLI) call the public methods from any thread and subscribe to events, which arrive on the thread
that produced them (the Qt bridge re-emits them as queued signals).

Requests are coalesced by kind, newest wins: a drag that finishes while an older re-decode waits
replaces it, and a re-decode whose result is already outdated when it finishes is dropped, so the
operator never watches a queue of stale decodes play out.

Run modes:
- ``step``: each ``step()`` reasons once on a fresh frame and waits; ``go()`` sends the action shown.
- ``preview``: reasons continuously while playing; never moves the arm.
- ``confirm``: reasons continuously, but every action waits for ``go()`` before it is sent.
- ``auto``: closed loop at ``auto_rate_hz``; a finished drag applies from the next step.

An operator's edit persists across steps until cleared; at each new step its first waypoint is
re-anchored to the model's first waypoint (where the gripper is now), see ``app.trace.anchored``.
E-stop (``estop()``) latches the guard first, then stops the arm, from the caller's thread: it never
waits behind a model step.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from app import trace as tr
from app.devices.arm import Arm, ArmError, ArmState
from app.devices.camera import Camera, CameraError, CameraStatus, Frame
from app.safety import SafetyGuard
from model.reasoning import Observation, Reasoning

log = logging.getLogger(__name__)

STEER_MODES = ("text", "visual")


class RunMode(str, Enum):
    STEP = "step"
    PREVIEW = "preview"
    CONFIRM = "confirm"
    AUTO = "auto"


class Policy(Protocol):
    """What the session needs from the runtime (``model.decoder.MolmoActDecoder``)."""

    def reason(self, obs: Observation) -> Reasoning: ...

    def steer_text(self, trace: Sequence[Sequence[float]]) -> Reasoning: ...

    def steer_visual(self, obs: Observation, trace: Sequence[Sequence[float]]) -> Reasoning: ...


@dataclass
class SessionConfig:
    instruction: str = "pick up the red cube"
    run_mode: RunMode = RunMode.STEP
    steer_mode: str = "text"                 # "text" (steer_text) or "visual" (steer_visual)
    auto_rate_hz: float = 2.0                # closed-loop steps per second (a slower model sets its own pace)
    frame_rate_hz: float = 60.0              # camera polling (only new frames are emitted): above the
                                             # camera rate, so a 30 fps camera is not aliased down
    arm_poll_hz: float = 10.0
    unnorm_key: str | None = None
    arm_type: str = "sim"                    # the action-adapter preset's arm
    camera_timeout_s: float = 2.0
    model_name: str = ""
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.run_mode = RunMode(self.run_mode)
        if self.steer_mode not in STEER_MODES:
            raise ValueError(f"steer mode {self.steer_mode!r}: choose one of {', '.join(STEER_MODES)}")
        if not self.instruction or not self.instruction.strip():
            raise ValueError("the instruction is empty")
        for name in ("auto_rate_hz", "frame_rate_hz", "arm_poll_hz", "camera_timeout_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"SessionConfig.{name} must be positive, got {v!r}")


# ---------------------------------------------------------------------------------------- results

@dataclass
class ActionStep:
    """One action as the operator sees it: what the model said, and what the guard and arm made of it.

    ``status``: ``pending`` (waits for go), ``preview`` (never sent), ``sent``, ``refused`` (the guard
    said hold), ``no_arm``, ``failed`` (the arm raised).
    """
    index: int
    mode: str
    trace: list[tr.Point]
    action_normalized: np.ndarray
    action: np.ndarray
    unnorm_key: str
    status: str
    command: np.ndarray | None = None        # the action in the arm's frame and units (adapter)
    sent: np.ndarray | None = None           # what the arm actually got (guard, then the arm's own limits)
    safety: list[str] = field(default_factory=list)
    timing_ms: dict[str, float] = field(default_factory=dict)

    @property
    def clipped_dims(self) -> list[int]:
        """Dimensions where what was sent differs from the command (the panel highlights them)."""
        if self.command is None or self.sent is None:
            return []
        return [i for i in range(len(self.sent)) if abs(float(self.sent[i]) - float(self.command[i])) > 1e-9]


@dataclass
class SessionStatus:
    run_mode: RunMode
    running: bool
    busy: bool
    steer_mode: str
    instruction: str
    camera: str
    arm: str
    model: str
    device: str
    estopped: bool
    reason_ms: float | None = None
    steer_ms: float | None = None


# ----------------------------------------------------------------------------------------- events

@dataclass(frozen=True)
class FrameEvent:
    frame: Frame
    ee_pixel: tuple[float, float] | None = None    # the end effector projected into this frame


@dataclass(frozen=True)
class ReasoningEvent:
    reasoning: Reasoning
    frame: Frame                                    # the frame the model saw
    extra_images: tuple[np.ndarray, ...] = ()       # and its other images (the wrist camera), in its order


@dataclass(frozen=True)
class SteerEvent:
    reasoning: Reasoning                            # mode steer_text / steer_visual


@dataclass(frozen=True)
class EditEvent:
    trace: list[tr.Point] | None                    # None: the edit was cleared
    final: bool                                     # False while dragging, True when the drag ended


@dataclass(frozen=True)
class ActionEvent:
    step: ActionStep


@dataclass(frozen=True)
class ArmEvent:
    state: ArmState | None
    enabled: bool


@dataclass(frozen=True)
class EstopEvent:
    latched: bool
    reason: str | None


@dataclass(frozen=True)
class ErrorEvent:
    source: str                                     # camera / model / arm / safety / session
    message: str
    level: str = "error"                            # error / warning / info


@dataclass(frozen=True)
class StatusEvent:
    status: SessionStatus


@dataclass(frozen=True)
class ModesEvent:
    """The same trace decoded both ways on the observation on screen (for a two_modes comparison); it
    changes nothing that can be sent."""
    trace: list[tr.Point]
    text: Reasoning
    visual: Reasoning


Event = (FrameEvent | ReasoningEvent | SteerEvent | EditEvent | ActionEvent | ArmEvent | EstopEvent
         | ErrorEvent | StatusEvent | ModesEvent)


@dataclass
class _Request:
    kind: str                                       # arm / steer / send / reason
    payload: Any = None


_PRIORITY = ("arm", "steer", "send", "modes", "reason")


class Session:
    """Owns the state and the devices it is given (``close()`` releases them)."""

    def __init__(self, camera: Camera, policy: Policy, arm: Arm | None = None,
                 guard: SafetyGuard | None = None, config: SessionConfig | None = None,
                 adapter_factory: Callable[[str, str], Any] | None = None,
                 on_close: Sequence[Callable[[], None]] = (),
                 extra_cameras: Sequence[Camera] = ()) -> None:
        self.camera = camera
        self.extra_cameras = list(extra_cameras)    # the model's other images (a wrist camera), in its order
        self.policy = policy
        self.arm = arm
        self.guard = guard or SafetyGuard()
        self.config = config or SessionConfig()
        self._adapter_factory = adapter_factory or _default_adapter
        self._adapter = None
        self._adapter_key: str | None = None
        self._on_close = list(on_close)

        self._subscribers: list[Callable[[Event], None]] = []
        self._lock = threading.RLock()              # state
        self._cv = threading.Condition(self._lock)  # the worker's wake-up
        self._motion = threading.Lock()             # guard check + send, and stop, never interleave
        self._pending: dict[str, _Request] = {}
        self._busy = False
        self._closing = False
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._stop_frames = threading.Event()

        c = self.config
        self._instruction = c.instruction.strip()
        self._run_mode = c.run_mode
        self._steer_mode = c.steer_mode
        self._running = False
        self._next_cycle_at: float | None = None
        self._frame: Frame | None = None
        self._obs: Observation | None = None
        self._obs_frame: Frame | None = None
        self._reasoning: Reasoning | None = None
        self._steered: Reasoning | None = None
        self._edit: list[tr.Point] | None = None
        self._pending_step: ActionStep | None = None
        self._last_step: ActionStep | None = None
        self._arm_state: ArmState | None = None
        self._step_index = 0
        self._epoch = 0                              # bumps when the instruction changes or on reset
        self._edit_gen = 0                           # bumps on every edit or clear: older re-decodes are stale
        self._run_gen = 0                            # bumps on pause / mode change / e-stop / close: a closed-loop
                                                     # step already running may no longer send
        self._cache_obs: Observation | None = None   # the observation the policy's cache (steer_text) holds
        self._watchdog_fired = False
        self._reported: dict[str, str] = {}          # the frame thread's last error per source (said once)
        self.counters = {"reason": 0, "steer": 0, "superseded": 0, "sent": 0}

    # ------------------------------------------------------------------------------ subscriptions
    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)
        return unsubscribe

    def _emit(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for cb in subscribers:
            try:
                cb(event)
            except Exception:  # noqa: BLE001 - one broken view must not stop the robot loop
                log.exception("session subscriber failed on %s", type(event).__name__)

    def _error(self, source: str, message: str, level: str = "error") -> None:
        self._emit(ErrorEvent(source, message, level))

    # ------------------------------------------------------------------------------ lifecycle
    def start(self, frames: bool = True) -> None:
        """Start the worker (and the display's frame thread unless ``frames=False``)."""
        if self._threads:
            return
        self._threads.append(threading.Thread(target=self._worker_main, name="session-worker", daemon=True))
        if frames:
            self._threads.append(threading.Thread(target=self._frame_main, name="session-frames", daemon=True))
        for t in self._threads:
            t.start()
        self._emit_status()

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop the arm, then the loops (a model call in flight finishes, but sends nothing), then
        release the devices."""
        with self._cv:
            if self._closed:
                return
            self._closing = True                     # _send refuses from here on
            self._running = False
            self._run_gen += 1
            self._pending.clear()
            self._cv.notify_all()
        self._stop_frames.set()
        if self.arm is not None:                     # the arm first: a model step in flight may take seconds
            self._with_motion_lock(self.arm.stop, "stop")
        for t in self._threads:
            t.join(timeout_s)
            if t.is_alive():
                log.error("thread %s did not stop within %.0f s", t.name, timeout_s)
        self._threads = [t for t in self._threads if t.is_alive()]
        steps: list[Callable[[], None]] = []
        if self.arm is not None:
            steps += [self.arm.stop, self.arm.disconnect]
        steps.append(self.camera.disconnect)
        steps += [cam.disconnect for cam in self.extra_cameras]
        steps += self._on_close
        for fn in steps:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - report and keep releasing
                log.warning("%s failed while closing: %s", getattr(fn, "__qualname__", fn), e)
        self._closed = True

    @property
    def threads_alive(self) -> list[str]:
        return [t.name for t in self._threads if t.is_alive()]

    def __enter__(self) -> "Session":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------ state queries
    def status(self) -> SessionStatus:
        with self._lock:
            r, s = self._reasoning, self._steered
            cam = getattr(self.camera, "status", None)
            return SessionStatus(
                run_mode=self._run_mode, running=self._running, busy=self._busy or bool(self._pending),
                steer_mode=self._steer_mode, instruction=self._instruction,
                camera=f"{self.camera.serial}: {cam.value if isinstance(cam, CameraStatus) else cam}",
                arm="no arm" if self.arm is None else
                    f"{self.arm.name}: {'enabled' if self.arm.enabled else 'disabled'}",
                model=self.config.model_name, device=self.config.device, estopped=self.guard.estopped,
                reason_ms=None if r is None else r.timings_ms.get("total"),
                steer_ms=None if s is None else s.timings_ms.get("total"))

    @property
    def instruction(self) -> str:
        return self._instruction

    @property
    def run_mode(self) -> RunMode:
        return self._run_mode

    @property
    def steer_mode(self) -> str:
        return self._steer_mode

    @property
    def running(self) -> bool:
        return self._running

    @property
    def reasoning(self) -> Reasoning | None:
        return self._reasoning

    @property
    def steered(self) -> Reasoning | None:
        return self._steered

    @property
    def edited_trace(self) -> list[tr.Point] | None:
        with self._lock:
            return None if self._edit is None else list(self._edit)

    @property
    def current_trace(self) -> list[tr.Point] | None:
        """What an edit starts from: the operator's edit, else the model's trace."""
        with self._lock:
            if self._edit is not None:
                return list(self._edit)
            return None if self._reasoning is None else list(self._reasoning.trace)

    @property
    def pending_step(self) -> ActionStep | None:
        return self._pending_step

    @property
    def last_step(self) -> ActionStep | None:
        return self._last_step

    @property
    def frame(self) -> Frame | None:
        return self._frame

    @property
    def arm_state(self) -> ArmState | None:
        return self._arm_state

    @property
    def estopped(self) -> bool:
        return self.guard.estopped

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Block until no request is pending or running (headless front end, tests)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while self._busy or self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    # ------------------------------------------------------------------------------ operator intents
    def set_instruction(self, text: str) -> None:
        text = (text or "").strip()
        if not text:
            self._error("session", "the instruction is empty; keeping the previous one", "warning")
            return
        with self._cv:
            if text == self._instruction:
                return
            self._instruction = text
            self._epoch += 1
            self._edit_gen += 1
            self._edit = None
            self._obs = None                         # the reasoning on screen answered the old instruction
            self._pending_step = None
        self._emit(EditEvent(None, True))
        self._emit_status()

    def set_steer_mode(self, mode: str) -> None:
        if mode not in STEER_MODES:
            raise ValueError(f"steer mode {mode!r}: choose one of {', '.join(STEER_MODES)}")
        with self._lock:
            self._steer_mode = mode
        self._emit_status()

    def set_run_mode(self, mode: RunMode | str) -> None:
        """Changing mode pauses a running loop: the operator starts the new mode deliberately."""
        mode = RunMode(mode)
        with self._cv:
            was_auto = self._running and self._run_mode is RunMode.AUTO
            self._run_mode = mode
            self._running = False
            self._run_gen += 1
            self._next_cycle_at = None
            self._pending.pop("reason", None)
            self._pending.pop("send", None)
            dropped = self._drop_pending_step(f"run mode changed to {mode.value}")
        if was_auto:
            self._hold_arm()
        if dropped is not None:
            self._emit_step(dropped)
        self._emit_status()

    def play(self) -> None:
        """Start the continuous loop of preview / confirm / auto (in step mode: one step)."""
        if self._run_mode is RunMode.STEP:
            self.step()
            return
        if self._run_mode is RunMode.AUTO and self.guard.estopped:
            self._error("safety", "e-stop is latched: reset before running auto", "warning")
            return
        with self._cv:
            self._running = True
            self._next_cycle_at = time.monotonic()
            self._cv.notify_all()
        self._emit_status()

    def pause(self) -> None:
        with self._cv:
            was_auto = self._running and self._run_mode is RunMode.AUTO
            self._running = False
            self._run_gen += 1
            self._next_cycle_at = None
        if was_auto:
            self._hold_arm()
        self._emit_status()

    def toggle_play(self) -> None:
        self.pause() if self._running else self.play()

    def step(self) -> None:
        """Reason once on a fresh frame; the action waits for ``go()`` (or is only shown in preview)."""
        self._submit(_Request("reason"))

    def go(self) -> None:
        """The operator's go: send the action waiting on screen (step and confirm modes)."""
        self._submit(_Request("send"))

    # trace edits (model space); ``final`` marks the end of a drag: only then is anything re-decoded
    def edit_trace(self, trace: Sequence[Sequence[float]], final: bool = True) -> None:
        try:
            pts = tr.normalize(trace)
        except tr.TraceEditError as e:
            self._error("session", f"trace edit refused: {e}", "warning")
            return
        with self._lock:
            if self._reasoning is None:
                self._error("session", "nothing to steer yet: run a step first", "warning")
                return
            if not final:                            # mid-drag: shown, never decoded or sent
                gen = None
            else:
                self._edit = pts
                self._edit_gen += 1
                gen = self._edit_gen
        self._emit(EditEvent(list(pts), final))
        if gen is not None:
            self._after_edit(pts, gen)

    def move_waypoint(self, index: int, x: float, y: float, final: bool = True) -> None:
        self._apply_edit(lambda t: tr.move_point(t, index, x, y), final)

    def insert_waypoint(self, x: float, y: float, index: int | None = None) -> None:
        self._apply_edit(lambda t: tr.insert_point(t, tr.insertion_index(t, x, y) if index is None else index,
                                                   x, y), True)

    def delete_waypoint(self, index: int) -> None:
        self._apply_edit(lambda t: tr.delete_point(t, index), True)

    def clear_edit(self) -> None:
        """Back to the model's own trace and action."""
        with self._lock:
            if self._edit is None:
                return
            self._edit = None
            self._edit_gen += 1                      # a re-decode in flight is now stale
            self._steered = None
            r = self._reasoning
            self._pending.pop("steer", None)
            waiting = self._pending_step is not None
        self._emit(EditEvent(None, True))
        if r is not None and waiting:               # the action on screen was not sent: show the model's
            self._publish_step(r, self._obs_frame, preview=self._run_mode is RunMode.PREVIEW)

    def _apply_edit(self, fn: Callable[[list[tr.Point]], list[tr.Point]], final: bool) -> None:
        base = self.current_trace
        if base is None:
            self._error("session", "nothing to edit yet: run a step first", "warning")
            return
        try:
            new = fn(base)
        except tr.TraceEditError as e:
            self._error("session", str(e), "warning")
            return
        self.edit_trace(new, final)

    def _after_edit(self, pts: list[tr.Point], gen: int) -> None:
        if self._running and self._run_mode is RunMode.AUTO:
            return                                   # applies from the next closed-loop step
        self._submit(_Request("steer", (list(pts), gen)))

    def decode_both_modes(self) -> None:
        """Decode the current trace (the edit, else the model's) with steer_text and steer_visual on the
        observation on screen; the answer comes as a ``ModesEvent``. Nothing becomes sendable."""
        self._submit(_Request("modes"))

    # arm and safety
    def enable_arm(self) -> None:
        if self.arm is None:
            self._error("arm", "no arm is connected", "warning")
            return
        if self.guard.estopped:
            self._error("safety", "e-stop is latched: reset before enabling the arm", "warning")
            return
        self._submit(_Request("arm", True))

    def disable_arm(self) -> None:
        """Immediate, from the caller's thread (disabling is a safety act)."""
        with self._cv:
            self._pending.pop("arm", None)
            if self._running and self._run_mode is RunMode.AUTO:
                self._running = False
                self._run_gen += 1
        if self.arm is not None:
            self._with_motion_lock(self.arm.disable, "disable")
        self._emit_arm()
        self._emit_status()

    def estop(self, reason: str = "operator pressed e-stop") -> None:
        """Latch first (nothing passes the guard from here on), then stop the arm. Never waits behind
        a model step; waits at most 0.5 s for a send in progress, then stops anyway."""
        self.guard.estop(reason)
        with self._cv:
            self._running = False
            self._run_gen += 1
            self._epoch += 1                         # a model step in flight publishes nothing sendable
            self._next_cycle_at = None
            for kind in ("send", "reason", "arm"):
                self._pending.pop(kind, None)
            refused = self._drop_pending_step(f"estop: {reason}")
        if self.arm is not None:
            self._with_motion_lock(self.arm.stop, "stop")
        self._emit(EstopEvent(True, self.guard.estop_reason))
        if refused is not None:
            self._emit_step(refused)
        self._emit_arm()
        self._emit_status()

    def reset(self) -> None:
        """Release the e-stop latch. The arm stays disabled: enabling it again is a separate act."""
        self.guard.reset()
        with self._lock:
            self._watchdog_fired = False
            self._epoch += 1
            self._pending_step = None
        self._emit(EstopEvent(False, None))
        self._emit_status()

    # ------------------------------------------------------------------------------ worker side
    def _submit(self, req: _Request) -> None:
        with self._cv:
            if self._closing:
                return
            if req.kind in self._pending:
                self.counters["superseded"] += 1
            self._pending[req.kind] = req
            self._cv.notify_all()
        self._emit_status()

    def _next_request(self) -> _Request | None:
        for kind in _PRIORITY:
            if kind in self._pending:
                return self._pending.pop(kind)
        if self._running and self._next_cycle_at is not None and time.monotonic() >= self._next_cycle_at:
            self._next_cycle_at = None
            return _Request("cycle")
        return None

    def _worker_main(self) -> None:
        while True:
            with self._cv:
                if self._closing:
                    return
                req = self._next_request()
                if req is None:
                    wait = 0.1
                    if self._running and self._next_cycle_at is not None:
                        wait = min(wait, max(0.0, self._next_cycle_at - time.monotonic()))
                    self._cv.wait(wait)
                    if self._closing:
                        return
                    req = self._next_request()
                if req is not None:
                    self._busy = True
            if req is None:
                self._watchdog()                     # outside the lock: it may hold the arm (network)
                continue
            try:
                self._handle(req)
            except Exception as e:  # noqa: BLE001 - every failure reaches the operator, loop paused
                self._on_failure(req.kind, e)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
                self._emit_status()
                self._watchdog()

    def _handle(self, req: _Request) -> None:
        if req.kind == "arm":
            with self._motion:
                if self.guard.estopped:              # latched after the request was made
                    self._error("safety", "e-stop is latched: the arm was not enabled", "warning")
                    return
                self.arm.enable()
            self._emit_arm()
        elif req.kind == "steer":
            self._handle_steer(req.payload)
        elif req.kind == "send":
            self._handle_send()
        elif req.kind == "reason":
            self._cycle(send=False, preview=self._run_mode is RunMode.PREVIEW)
        elif req.kind == "modes":
            self._handle_modes()
        elif req.kind == "cycle":
            self._handle_cycle()

    def _on_failure(self, kind: str, e: Exception) -> None:
        source = {"arm": "arm", "send": "arm"}.get(kind, "model")
        if isinstance(e, CameraError):
            source = "camera"
        elif isinstance(e, ArmError):
            source = "arm"
        was_running = self._running
        with self._cv:
            self._running = False
            self._next_cycle_at = None
        if was_running:
            self._hold_arm()
        msg = f"{type(e).__name__}: {e}" if not isinstance(e, (CameraError, ArmError)) else str(e)
        self._error(source, msg + (" (loop paused)" if was_running else ""))
        if not isinstance(e, (CameraError, ArmError, ValueError, RuntimeError)):
            log.exception("unexpected failure in %s", kind, exc_info=e)

    def _handle_cycle(self) -> None:
        with self._lock:
            mode, run_gen = self._run_mode, self._run_gen
        started = time.monotonic()
        self._cycle(send=mode is RunMode.AUTO, preview=mode is RunMode.PREVIEW, run_gen=run_gen)
        with self._cv:
            if not self._running:
                return
            if mode is RunMode.AUTO:
                self._next_cycle_at = started + 1.0 / self.config.auto_rate_hz
            elif mode is RunMode.PREVIEW:
                self._next_cycle_at = time.monotonic()
            # confirm: the next cycle starts when the operator's go has sent this action

    def _cycle(self, send: bool, preview: bool = False, run_gen: int | None = None) -> None:
        """Observe → reason → (steer with the operator's edit) → show → (send)."""
        with self._lock:
            epoch = self._epoch
            instruction = self._instruction
        frame = self.camera.read(timeout_s=self.config.camera_timeout_s)
        if self.arm is not None and self._motion.acquire(blocking=False):
            try:                                     # where the gripper is in the frame the model sees
                self._arm_state = self.arm.state()
            except ArmError:
                pass
            finally:
                self._motion.release()
        self._publish_frame(frame)
        extra = [cam.read(timeout_s=self.config.camera_timeout_s).rgb for cam in self.extra_cameras]
        obs = Observation([frame.rgb, *extra], instruction, unnorm_key=self.config.unnorm_key)
        r = self.policy.reason(obs)
        self.counters["reason"] += 1
        with self._lock:
            self._cache_obs = obs                    # steer_text resumes from this observation's cache
            if epoch != self._epoch:
                self._obs = None                     # the cache moved on: no text steering of the old one
                return                               # the instruction changed / e-stop meanwhile: outdated
            self._reasoning, self._obs, self._obs_frame, self._steered = r, obs, frame, None
            edit = self._edit
        self._emit(ReasoningEvent(r, frame, tuple(obs.images[1:])))
        result = r
        if edit is not None:
            pts = tr.anchored(edit, r.trace)
            with self._lock:
                self._edit = pts
            self._emit(EditEvent(list(pts), True))
            result = self._steer(obs, pts)
        step = self._publish_step(result, frame, preview=preview)
        if send:
            with self._lock:                         # paused, mode changed, e-stop or closing meanwhile?
                still = (run_gen == self._run_gen and self._running and self._run_mode is RunMode.AUTO
                         and epoch == self._epoch)
                if not still:
                    dropped = self._drop_pending_step("the closed loop was stopped during this step")
            if still:
                self._send(step)
            elif dropped is not None:
                self._emit_step(dropped)

    def _decode_steer(self, obs: Observation, pts: list[tr.Point]) -> Reasoning:
        """The re-decode in the current steering mode (text resumes this observation's cache)."""
        if self._steer_mode == "text":
            s = self.policy.steer_text(pts)
        else:
            s = self.policy.steer_visual(obs, pts)
        self.counters["steer"] += 1
        return s

    def _steer(self, obs: Observation, pts: list[tr.Point]) -> Reasoning:
        s = self._decode_steer(obs, pts)
        with self._lock:
            self._steered = s
        self._emit(SteerEvent(s))
        return s

    def _handle_steer(self, payload: tuple[list[tr.Point], int]) -> None:
        pts, gen = payload
        with self._lock:
            obs, epoch = self._obs, self._epoch
            if gen != self._edit_gen:
                self.counters["superseded"] += 1
                return                               # edited again or cleared since it was asked for
        if obs is None or self._reasoning is None:
            self._error("session", "nothing to steer yet: run a step first", "warning")
            return
        if self._steer_mode == "text" and self._cache_obs is not obs:
            self._error("session", "the model has moved on from the frame on screen: press Step, then steer",
                        "warning")
            return
        s = self._decode_steer(obs, pts)
        with self._lock:
            if gen != self._edit_gen or epoch != self._epoch:
                self.counters["superseded"] += 1
                return                               # a newer drag or instruction: this one is stale
            self._steered = s
        self._emit(SteerEvent(s))
        self._publish_step(s, self._obs_frame, preview=self._run_mode is RunMode.PREVIEW)

    def _handle_modes(self) -> None:
        with self._lock:
            obs, epoch, r = self._obs, self._epoch, self._reasoning
            pts = list(self._edit) if self._edit is not None else (None if r is None else list(r.trace))
        if obs is None or r is None or pts is None:
            self._error("session", "nothing to compare yet: press Step", "warning")
            return
        if self._cache_obs is not obs:
            self._error("session", "the model has moved on from the frame on screen: press Step, then compare",
                        "warning")
            return
        text = self.policy.steer_text(pts)            # from the cached prefix of this observation
        visual = self.policy.steer_visual(obs, pts)   # its own cache: the prefix above stays valid
        with self._lock:
            if epoch != self._epoch or obs is not self._obs:
                return
        self._emit(ModesEvent(pts, text, visual))

    def _publish_step(self, result: Reasoning, frame: Frame | None, preview: bool = False) -> ActionStep:
        with self._lock:
            self._step_index += 1
            index = self._step_index
        status = "preview" if preview else ("no_arm" if self.arm is None else "pending")
        timing = {"reason": round(self._reasoning.timings_ms.get("total", 0.0), 2)} if self._reasoning else {}
        if result.mode != "reason":
            timing["steer"] = round(result.timings_ms.get("total", 0.0), 2)
        step = ActionStep(index=index, mode=result.mode, trace=list(result.trace),
                          action_normalized=np.asarray(result.actions_normalized[0], float).copy(),
                          action=np.asarray(result.action, float).copy(), unnorm_key=result.unnorm_key,
                          status=status, timing_ms=timing)
        if self.arm is not None:
            try:
                state = self._arm_state or self.arm.state()
                step.command = self._adapter_for(step.unnorm_key).map(step.action, state.ee_rpy)
            except (ArmError, KeyError, ValueError) as e:
                step.safety.append(f"adapter: {e}")
        with self._lock:
            self._pending_step = step if status == "pending" else None
            self._last_step = step
        self._emit_step(step)
        return step

    def _adapter_for(self, unnorm_key: str):
        if self._adapter is None or self._adapter_key != unnorm_key:
            self._adapter = self._adapter_factory(self.config.arm_type, unnorm_key)
            self._adapter_key = unnorm_key
        return self._adapter

    def _handle_send(self) -> None:
        step = self._pending_step
        if self._run_mode is RunMode.PREVIEW:
            self._error("session", "preview never moves the arm: switch to step or confirm to send", "warning")
            return
        if step is None or step.status != "pending":
            self._error("session", "no action is waiting to be sent", "warning")
            return
        self._send(step)
        with self._cv:
            if self._running and self._run_mode is RunMode.CONFIRM:
                self._next_cycle_at = time.monotonic()

    def _send(self, step: ActionStep) -> ActionStep:
        if self.arm is None:
            step.status = "no_arm"
            self._emit_step(step)
            return step
        with self._motion:
            if self._closing:
                step.status, step.safety = "refused", ["the session is closing"]
                self._finish_send(step)
                return step
            state = self.arm.state()
            command = self._adapter_for(step.unnorm_key).map(step.action, state.ee_rpy)
            verdict = self.guard.check(command, state)
            step.command = np.asarray(command, float)
            step.safety = verdict.reasons
            if verdict.allowed and self.arm.enabled:
                try:
                    done = self.arm.send_action(verdict.action)
                except ArmError as e:
                    step.status = "failed"
                    step.safety.append(f"arm: {e}")
                    self._safe_hold()
                    self._finish_send(step)
                    raise
                step.sent = np.asarray(done.sent, float)
                step.safety += [f"arm: {c}" for c in done.clipped]
                step.status = "sent"
                self.counters["sent"] += 1
                self._watchdog_fired = False
            else:
                step.status = "refused"
                if self.arm.enabled:
                    self._safe_hold()
        self._finish_send(step)
        return step

    def _finish_send(self, step: ActionStep) -> None:
        with self._lock:
            if self._pending_step is step:
                self._pending_step = None
            self._last_step = step
        self._emit_step(step)
        self._emit_arm()

    def _drop_pending_step(self, why: str) -> ActionStep | None:
        """The action waiting for Go can no longer be sent (call with the lock held); the refused copy
        to show, if there was one."""
        step, self._pending_step = self._pending_step, None
        if step is None:
            return None
        step = replace(step, status="refused", safety=[why])
        self._last_step = step
        return step

    def _emit_step(self, step: ActionStep) -> None:
        """Subscribers get a snapshot: the worker goes on updating its own step (pending → sent)."""
        self._emit(ActionEvent(replace(step, trace=list(step.trace), safety=list(step.safety),
                                       timing_ms=dict(step.timing_ms))))

    def _watchdog(self) -> None:
        ev = self.guard.tick()
        if ev is None or self._watchdog_fired or self.arm is None:
            return
        self._watchdog_fired = True
        if self.arm.enabled:
            self._hold_arm()
        self._error("safety", f"{ev.rule}: {ev.reason}", "info")

    # ------------------------------------------------------------------------------ arm helpers
    def _with_motion_lock(self, fn: Callable[[], None], what: str) -> None:
        got = self._motion.acquire(timeout=0.5)
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            self._error("arm", f"arm {what} failed: {e}")
        finally:
            if got:
                self._motion.release()

    def _safe_hold(self) -> None:
        try:
            self.arm.hold()
        except Exception as e:  # noqa: BLE001
            self._error("arm", f"arm hold failed: {e}")

    def _hold_arm(self) -> None:
        if self.arm is not None:
            self._with_motion_lock(self._safe_hold, "hold")

    def _emit_arm(self) -> None:
        if self.arm is None:
            return
        try:
            state = self.arm.state()
        except Exception as e:  # noqa: BLE001
            self._error("arm", f"cannot read the arm state: {e}")
            return
        self._arm_state = state
        self._emit(ArmEvent(state, self.arm.enabled))

    def _emit_status(self) -> None:
        self._emit(StatusEvent(self.status()))

    # ------------------------------------------------------------------------------ frames
    def _ee_pixel(self, frame: Frame) -> tuple[float, float] | None:
        t_wc = frame.extras.get("T_world_camera") if frame.extras else None
        state = self._arm_state
        if t_wc is None or state is None:
            return None                              # a real camera needs a hand-eye calibration for this
        px = tr.project_to_pixels(state.ee_position, frame.intrinsics.K, np.asarray(t_wc))[0]
        return None if not np.all(np.isfinite(px)) else (float(px[0]), float(px[1]))

    def _publish_frame(self, frame: Frame) -> None:
        with self._lock:
            if frame is self._frame:
                return                               # the worker and the frame thread saw the same frame
            self._frame = frame
        self._emit(FrameEvent(frame, self._ee_pixel(frame)))

    def _frame_main(self) -> None:
        period = 1.0 / self.config.frame_rate_hz
        arm_period = 1.0 / self.config.arm_poll_hz
        last_arm = 0.0
        last_status = None
        while not self._stop_frames.is_set():
            t0 = time.monotonic()
            try:
                frame = self.camera.read_latest()
                if frame is not None and frame is not self._frame:
                    self._publish_frame(frame)
                self._reported.pop("camera", None)
            except CameraError as e:
                if self._reported.get("camera") != str(e):
                    self._reported["camera"] = str(e)
                    self._error("camera", str(e))
            status = getattr(self.camera, "status", None)
            if status != last_status:
                last_status = status
                self._emit_status()
            if self.arm is not None and t0 - last_arm >= arm_period and self._motion.acquire(blocking=False):
                last_arm = t0
                try:
                    self._arm_state = self.arm.state()
                    self._emit(ArmEvent(self._arm_state, self.arm.enabled))
                    self._reported.pop("arm", None)
                except Exception as e:  # noqa: BLE001
                    if self._reported.get("arm") != str(e):
                        self._reported["arm"] = str(e)
                        self._error("arm", f"cannot read the arm state: {e}")
                finally:
                    self._motion.release()
            self._stop_frames.wait(max(0.0, period - (time.monotonic() - t0)))


def _default_adapter(arm_type: str, unnorm_key: str):
    from app.devices.action_adapter import ActionAdapter
    return ActionAdapter.for_arm(arm_type, unnorm_key)


__all__ = [
    "ActionEvent", "ActionStep", "ArmEvent", "EditEvent", "ErrorEvent", "EstopEvent", "Event", "FrameEvent",
    "ModesEvent",
    "Policy", "ReasoningEvent", "RunMode", "STEER_MODES", "Session", "SessionConfig", "SessionStatus",
    "StatusEvent", "SteerEvent",
]
