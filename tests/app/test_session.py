"""Session: the worker thread, coalesced requests, run modes, events and the safety acts.

Most tests run the real station (simulated MuJoCo cell, sim arm, tiny random MolmoAct on CPU). The
scheduling tests swap the policy for a fake with a gate, so "the worker is busy" is a fact the test
controls rather than a race it hopes to win. Every session is closed by the fixture.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app import trace as tr
from app.config import ModelConfig, StationConfig
from app.devices.arm import ArmError
from app.devices.camera import CameraError
from app.session import (
    ActionEvent, ArmEvent, EditEvent, ErrorEvent, EstopEvent, FrameEvent, ReasoningEvent, RunMode,
    SessionConfig, StatusEvent, SteerEvent,
)
from app.station import open_session
from model.decoder import NonFiniteLogitsError
from model.reasoning import Reasoning

# the tiny random checkpoint (not the embedded default): these tests are about the session, not the model
TINY_MODEL = Path(__file__).resolve().parents[2] / "assets" / "tiny-molmoact"
UNNORM_KEY = "fractal20220817_data"      # the tiny checkpoint's key; has a sim adapter preset
MAX_T = 0.03                              # SafetyConfig defaults: per-step caps
MAX_R = 0.2
MAX_GRIP = 0.5
# a fake model action far beyond every cap (fractal units: metres / radians deltas, gripper 0..1)
BIG_ACTION = (0.2, -0.1, 0.05, 0.3, 0.0, 0.0, 1.0)


# ------------------------------------------------------------------------------------- helpers

class Events:
    """Everything a session emitted, in order (appended from whichever thread emitted it)."""

    def __init__(self, session) -> None:
        self.all: list = []
        self.snapshots: list[tuple[int, str, int]] = []   # (index in all, step status, step index)
        self.unsubscribe = session.subscribe(self._on_event)

    def _on_event(self, e) -> None:
        # the session mutates an ActionStep after emitting it (pending -> sent): keep what was said
        if isinstance(e, ActionEvent):
            self.snapshots.append((len(self.all), e.step.status, e.step.index))
        self.all.append(e)

    def of(self, cls, since: int = 0) -> list:
        return [e for e in list(self.all)[since:] if isinstance(e, cls)]

    def mark(self) -> int:
        return len(self.all)

    def errors(self, source: str | None = None, level: str | None = None, since: int = 0) -> list:
        return [e for e in self.of(ErrorEvent, since)
                if (source is None or e.source == source) and (level is None or e.level == level)]

    def statuses(self, since: int = 0) -> list[str]:
        """ActionStep statuses as they were when each ActionEvent was emitted."""
        return [status for i, status, _ in list(self.snapshots) if i >= since]

    def steps(self, since: int = 0) -> list[tuple[str, int]]:
        """(status, ActionStep.index) as emitted."""
        return [(status, index) for i, status, index in list(self.snapshots) if i >= since]


def until(pred, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Wait for a state the session must reach; fail (not hang) if it never does."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def idle(s, timeout_s: float = 15.0) -> None:
    assert s.wait_idle(timeout_s), "the session did not become idle"


def joints(s) -> np.ndarray:
    return np.asarray(s.arm.state().joint_positions, float).copy()


def fake_reasoning(mode: str, trace, action=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)) -> Reasoning:
    a = np.asarray([action], float)
    return Reasoning(mode=mode, depth_codes=[], depth_map=None, trace=[tuple(p) for p in trace],
                     actions_normalized=a.copy(), actions=a.copy(), action_token_ids=[], token_ids=[],
                     text="", unnorm_key=UNNORM_KEY, timings_ms={"total": 1.0})


class FakePolicy:
    """A policy the test drives: a gate holds every call, ``entered`` counts calls that started,
    ``calls`` records (kind, trace or instruction), ``fail`` raises on the next call."""

    def __init__(self, reason_trace=((40, 50), (90, 120)), action=BIG_ACTION, delay_s: float = 0.005) -> None:
        self.reason_trace = list(reason_trace)
        self.action = tuple(action)
        self.delay_s = delay_s                      # keeps a continuous loop from spinning flat out
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.calls: list[tuple[str, object]] = []
        self.fail: BaseException | None = None

    def _enter(self, kind: str, arg) -> None:
        self.calls.append((kind, arg))
        self.entered.release()
        assert self.gate.wait(20), "test gate never opened"
        time.sleep(self.delay_s)
        if self.fail is not None:
            e, self.fail = self.fail, None
            raise e

    def reason(self, obs) -> Reasoning:
        self._enter("reason", obs.instruction)
        return fake_reasoning("reason", self.reason_trace, self.action)

    def steer_text(self, trace) -> Reasoning:
        self._enter("steer_text", [tuple(p) for p in trace])
        return fake_reasoning("steer_text", trace, self.action)

    def steer_visual(self, obs, trace) -> Reasoning:
        self._enter("steer_visual", [tuple(p) for p in trace])
        return fake_reasoning("steer_visual", trace, self.action)

    def kinds(self) -> list[str]:
        return [k for k, _ in self.calls]

    def wait_entered(self) -> None:
        assert self.entered.acquire(timeout=10), "the worker never called the policy"


class GatedPolicy(FakePolicy):
    """The real decoder behind the same gate and record (real Reasonings, controlled timing)."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner

    def reason(self, obs) -> Reasoning:
        self._enter("reason", obs.instruction)
        return self.inner.reason(obs)

    def steer_text(self, trace) -> Reasoning:
        self._enter("steer_text", [tuple(p) for p in trace])
        return self.inner.steer_text(trace)

    def steer_visual(self, obs, trace) -> Reasoning:
        self._enter("steer_visual", [tuple(p) for p in trace])
        return self.inner.steer_visual(obs, trace)


class FailingCamera:
    """The sim camera, but ``read`` raises CameraError while ``broken``."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.broken = True

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def status(self):
        return self.inner.status

    def read(self, timeout_s: float = 1.0):
        if self.broken:
            raise CameraError(f"{self.inner.serial}: unplugged")
        return self.inner.read(timeout_s)


class UnreadableArm:
    """The sim arm, but ``state`` raises ArmError; counts the reads."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.reads = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def enabled(self) -> bool:
        return self.inner.enabled

    def state(self):
        self.reads += 1
        raise ArmError("link down")


@pytest.fixture(scope="module")
def station_cfg() -> StationConfig:
    """Load the checkpoint once up front so the first test does not pay for it alone."""
    cfg = StationConfig(model=ModelConfig(path=str(TINY_MODEL)))
    s = open_session(cfg)
    s.close()
    return cfg


@pytest.fixture
def make(station_cfg):
    """``make(policy=..., frames=..., **SessionConfig)`` → (session, events), started; closed after."""
    made = []

    def _make(policy=None, frames: bool = False, start: bool = True, wrap_camera=None, wrap_arm=None,
              **cfg):
        s = open_session(station_cfg, SessionConfig(**cfg))
        made.append(s)
        if policy == "gated":
            s.policy = GatedPolicy(s.policy)
        elif policy == "fake":
            s.policy = FakePolicy()
        elif policy is not None:
            s.policy = policy
        if wrap_camera is not None:
            s.camera = wrap_camera(s.camera)
        if wrap_arm is not None:
            s.arm = wrap_arm(s.arm)
        ev = Events(s)
        if start:
            s.start(frames=frames)
        return s, ev

    yield _make
    for s in made:
        s.close(timeout_s=20)
        assert s.threads_alive == []


# ------------------------------------------------------------------------------------- 1. step

def test_step_reasons_once_and_waits_for_go(make):
    s, ev = make(frames=True)
    until(lambda: s.arm_state is not None, what="the frame thread's first arm poll")
    j0 = joints(s)
    s.step()
    idle(s)

    reasonings = ev.of(ReasoningEvent)
    actions = ev.of(ActionEvent)
    assert len(reasonings) == 1 and len(actions) == 1
    r = reasonings[0]
    assert r.reasoning is s.reasoning and r.reasoning.mode == "reason"
    step = actions[0].step
    assert step.status == "pending" and s.pending_step.index == step.index and s.last_step.index == step.index
    assert step.mode == "reason" and step.trace == list(s.reasoning.trace)
    assert step.command is not None and step.command.shape == (7,)
    assert s.counters["reason"] == 1 and s.counters["sent"] == 0
    np.testing.assert_array_equal(joints(s), j0)                # waiting, not moving

    # the frame the model saw was published as a FrameEvent, with the end effector projected into it
    seen = [e for e in ev.of(FrameEvent) if e.frame is r.frame]
    assert len(seen) == 1
    fe = seen[0]
    assert fe.ee_pixel is not None
    u, v = fe.ee_pixel
    k = r.frame.intrinsics
    assert 0 <= u < k.width and 0 <= v < k.height
    expected = s.arm.cell.project(s.arm.state().ee_position, k.width, k.height, camera="front")[0]
    np.testing.assert_allclose((u, v), expected, atol=1e-6)


def test_ee_pixel_without_frame_thread(make):
    s, ev = make(policy="fake", frames=False)
    s.step()
    idle(s)
    r = ev.of(ReasoningEvent)[0]
    fe = [e for e in ev.of(FrameEvent) if e.frame is r.frame][0]
    assert fe.ee_pixel is not None


def test_the_model_frame_is_published_before_its_reasoning(make):
    s, ev = make(frames=False)                                   # no display thread: only the worker
    s.step()
    idle(s)
    r = ev.of(ReasoningEvent)[0]
    kinds = [(type(e), getattr(e, "frame", None)) for e in ev.all
             if isinstance(e, (FrameEvent, ReasoningEvent))]
    assert kinds == [(FrameEvent, r.frame), (ReasoningEvent, r.frame)]
    assert s.frame is r.frame
    assert r.frame.rgb.shape == (480, 640, 3) and r.frame.depth.shape == (480, 640)


def test_step_before_start_is_queued_and_runs_on_start(make):
    s, ev = make(policy="fake", start=False)
    s.step()
    assert s.status().busy
    s.start(frames=False)
    idle(s)
    assert len(ev.of(ReasoningEvent)) == 1 and s.pending_step.status == "pending"


# ------------------------------------------------------------------------------------- 2. edits

def test_drag_redecodes_only_when_final(make):
    s, ev = make()
    s.step()
    idle(s)
    base = list(s.reasoning.trace)
    n_steer, m = s.counters["steer"], ev.mark()

    s.move_waypoint(0, 200, 40, final=False)
    idle(s)
    assert s.counters["steer"] == n_steer
    assert ev.of(SteerEvent, m) == []
    assert [(e.trace, e.final) for e in ev.of(EditEvent, m)] == [([(200, 40)] + base[1:], False)]
    assert s.edited_trace is None                                # mid-drag: shown, not committed
    assert s.steered is None and s.pending_step.mode == "reason"

    m = ev.mark()
    s.move_waypoint(0, 201, 41, final=True)
    idle(s)
    edit = [(201, 41)] + base[1:]
    assert s.counters["steer"] == n_steer + 1
    steers = ev.of(SteerEvent, m)
    assert len(steers) == 1 and steers[0].reasoning.mode == "steer_text"
    assert s.steered is steers[0].reasoning
    assert list(s.steered.trace) == edit
    step = s.pending_step
    assert step.mode == "steer_text" and step.status == "pending" and step.trace == edit
    assert "steer" in step.timing_ms
    assert s.reasoning.mode == "reason"                          # the model's own reasoning is kept

    s.set_steer_mode("visual")
    assert s.steer_mode == "visual"
    m = ev.mark()
    s.insert_waypoint(100, 100)
    idle(s)
    assert s.counters["steer"] == n_steer + 2
    steers = ev.of(SteerEvent, m)
    assert len(steers) == 1 and steers[0].reasoning.mode == "steer_visual"
    assert s.pending_step.mode == "steer_visual"
    assert (100, 100) in s.pending_step.trace and len(s.pending_step.trace) == len(edit) + 1

    with pytest.raises(ValueError):
        s.set_steer_mode("telepathy")
    assert s.steer_mode == "visual"


def test_edit_before_any_reasoning_is_refused(make):
    s, ev = make(policy="fake")
    s.move_waypoint(0, 10, 10)
    s.edit_trace([(1, 2), (3, 4)])
    idle(s)
    assert len(ev.errors("session", "warning")) == 2
    assert s.edited_trace is None and s.counters["steer"] == 0


def test_invalid_edits_warn_and_keep_the_trace(make):
    s, ev = make(policy="fake")
    s.step()
    idle(s)
    s.edit_trace([(10, 10), (20, 20)])
    idle(s)
    before, n_steer, m = s.edited_trace, s.counters["steer"], ev.mark()
    s.edit_trace([(i, i) for i in range(6)])                      # more than 5 waypoints
    s.edit_trace([])                                              # no waypoint
    s.move_waypoint(7, 1, 1)                                      # no such waypoint
    s.edit_trace([(float("nan"), 3)])
    idle(s)
    assert len(ev.errors("session", "warning", m)) == 4
    assert s.edited_trace == before and s.counters["steer"] == n_steer


def test_clear_edit_restores_the_models_action(make):
    s, ev = make(policy="fake")
    s.step()
    idle(s)
    s.move_waypoint(0, 5, 5)
    idle(s)
    assert s.pending_step.mode == "steer_text"
    m = ev.mark()
    s.clear_edit()
    idle(s)
    assert s.edited_trace is None and s.steered is None
    assert [e.trace for e in ev.of(EditEvent, m)] == [None]
    assert s.pending_step.mode == "reason" and s.pending_step.trace == list(s.reasoning.trace)
    assert s.current_trace == list(s.reasoning.trace)


def test_clear_edit_drops_the_redecode_in_flight(make):
    s, ev = make(policy="gated")
    p = s.policy
    s.step()
    idle(s)
    p.wait_entered()
    p.gate.clear()
    s.move_waypoint(0, 10, 10)
    p.wait_entered()                                             # the steer is running now
    s.clear_edit()
    assert s.pending_step.mode == "reason"
    m = ev.mark()
    p.gate.set()
    idle(s)
    assert ev.of(SteerEvent, m) == []
    assert s.steered is None
    assert s.pending_step.mode == "reason"


# ------------------------------------------------------------------------------------- 3. supersede

def test_final_edits_while_busy_are_coalesced_newest_wins(make):
    policy = FakePolicy()
    s, ev = make(policy=policy)
    s.step()
    idle(s)
    policy.wait_entered()
    assert policy.kinds() == ["reason"]

    policy.gate.clear()
    edits = [[(40, 50), (100 + 10 * i, 30 + 5 * i)] for i in range(5)]
    m = ev.mark()
    s.edit_trace(edits[0], final=True)
    policy.wait_entered()                                        # the first re-decode is running
    for e in edits[1:]:
        s.edit_trace(e, final=True)                              # queued: each replaces the previous
    assert s.status().busy
    policy.gate.set()
    idle(s)

    steer_calls = [arg for kind, arg in policy.calls if kind == "steer_text"]
    assert len(steer_calls) < len(edits)
    assert steer_calls == [edits[0], edits[-1]]                   # the one running, then the newest
    assert s.counters["steer"] == 2
    assert s.counters["superseded"] == 4                         # 3 replaced in the queue + 1 stale result
    steers = ev.of(SteerEvent, m)
    assert len(steers) == 1                                      # the outdated result is not shown
    assert list(steers[-1].reasoning.trace) == edits[-1]
    steer_actions = [e.step for e in ev.of(ActionEvent, m)]
    assert [a.trace for a in steer_actions] == [edits[-1]]
    assert s.pending_step.trace == edits[-1] and s.edited_trace == edits[-1]


def test_steps_requested_while_busy_coalesce(make):
    policy = FakePolicy()
    s, ev = make(policy=policy)
    policy.gate.clear()
    s.step()
    policy.wait_entered()
    for _ in range(4):
        s.step()
    policy.gate.set()
    idle(s)
    assert policy.kinds() == ["reason", "reason"]
    assert s.counters["reason"] == 2 and len(ev.of(ReasoningEvent)) == 2


def test_instruction_change_drops_a_queued_redecode(make):
    policy = FakePolicy()
    s, ev = make(policy=policy)
    s.step()
    idle(s)
    policy.wait_entered()
    policy.gate.clear()
    s.step()
    policy.wait_entered()                                        # a reasoning is running
    s.move_waypoint(1, 200, 200)                                 # a re-decode waits behind it
    s.set_instruction("put the cube in the bowl")
    m = ev.mark()
    policy.gate.set()
    idle(s)
    assert s.edited_trace is None
    assert ev.of(SteerEvent, m) == []
    assert s.pending_step is None


# ------------------------------------------------------------------------------------- 4. no motion until enabled

def test_go_moves_the_arm_only_when_enabled_and_within_caps(make):
    s, ev = make()
    assert not s.arm.enabled
    s.step()
    idle(s)
    j0 = joints(s)
    s.go()
    idle(s)
    step = s.last_step
    assert step.status == "refused"
    assert any("disabled" in r for r in step.safety)
    assert step.sent is None and s.pending_step is None
    assert s.counters["sent"] == 0
    np.testing.assert_array_equal(joints(s), j0)

    s.enable_arm()
    idle(s)
    assert s.arm.enabled
    assert ev.of(ArmEvent)[-1].enabled
    s.step()
    idle(s)
    gripper0 = float(s.arm.state().gripper)
    s.go()
    idle(s)
    step = s.last_step
    assert step.status == "sent" and s.counters["sent"] == 1 and s.pending_step is None
    assert ev.statuses()[-2:] == ["pending", "sent"]
    sent, cmd = np.asarray(step.sent), np.asarray(step.command)
    assert np.linalg.norm(sent[:3]) <= MAX_T + 1e-9
    assert np.linalg.norm(sent[3:6]) <= MAX_R + 1e-9
    assert 0.0 <= sent[6] <= 1.0 and abs(sent[6] - gripper0) <= MAX_GRIP + 1e-9
    # the tiny random model asks for far more than the caps: every clipped axis is reported
    assert np.linalg.norm(cmd[:3]) > MAX_T
    assert {0, 1, 2} <= set(step.clipped_dims)
    assert any(r.startswith("max_translation") for r in step.safety)
    assert not np.allclose(joints(s), j0)


def test_emitted_action_events_are_not_mutated_afterwards(make):
    s, ev = make(policy="fake")
    s.enable_arm()
    s.step()
    idle(s)
    pending_event = ev.of(ActionEvent)[-1]
    assert pending_event.step.status == "pending"
    s.go()
    idle(s)
    assert pending_event.step.status == "pending"


def test_go_with_nothing_pending_warns(make):
    s, ev = make(policy="fake")
    s.enable_arm()
    s.go()
    idle(s)
    assert [e.level for e in ev.errors("session")] == ["warning"]
    assert s.counters["sent"] == 0


def test_enable_arm_without_arm_warns(make):
    s, ev = make(policy="fake")
    s.arm = None
    s.enable_arm()
    idle(s)
    assert [(e.source, e.level) for e in ev.errors()] == [("arm", "warning")]


# ------------------------------------------------------------------------------------- 5. e-stop

def test_estop_latches_disables_and_refuses_until_reset(make):
    s, ev = make(policy="fake")
    s.enable_arm()
    s.step()
    idle(s)
    assert s.arm.enabled and s.pending_step.status == "pending"
    j0 = joints(s)

    m = ev.mark()
    s.estop("test stop")
    assert s.estopped and s.status().estopped
    assert not s.arm.enabled
    assert [(e.latched, e.reason) for e in ev.of(EstopEvent, m)] == [(True, "test stop")]
    assert ev.of(ActionEvent, m)[-1].step.status == "refused"    # the waiting action is shown refused
    assert ev.of(ArmEvent, m)[-1].enabled is False

    s.step()
    idle(s)
    s.go()
    idle(s)
    assert s.last_step.status == "refused"
    assert any(r.startswith("estop") for r in s.last_step.safety)
    np.testing.assert_array_equal(joints(s), j0)

    m = ev.mark()
    s.enable_arm()
    idle(s)
    assert not s.arm.enabled
    assert [(e.source, e.level) for e in ev.errors(since=m)] == [("safety", "warning")]

    m = ev.mark()
    s.reset()
    assert not s.estopped
    assert [(e.latched, e.reason) for e in ev.of(EstopEvent, m)] == [(False, None)]
    assert not s.arm.enabled                                     # enabling again is a separate act
    s.enable_arm()
    idle(s)
    assert s.arm.enabled
    assert s.counters["sent"] == 0


def test_action_refused_by_estop_is_not_sent_after_reset(make):
    s, ev = make(policy="fake")
    s.enable_arm()
    s.step()
    idle(s)
    s.estop()
    s.reset()
    s.enable_arm()
    idle(s)
    j0 = joints(s)
    s.go()
    idle(s)
    assert s.counters["sent"] == 0
    np.testing.assert_array_equal(joints(s), j0)


def test_estop_does_not_wait_for_the_model(make):
    policy = FakePolicy()
    s, ev = make(policy=policy)
    policy.gate.clear()
    s.enable_arm()
    s.step()
    policy.wait_entered()                                        # the worker is inside reason()
    s.estop()                                                    # returns while the model still runs
    assert s.estopped and not s.arm.enabled
    policy.gate.set()
    idle(s)
    assert s.pending_step is None                                # the step in flight was dropped
    m = ev.mark()
    s.go()
    idle(s)
    assert s.counters["sent"] == 0 and "sent" not in ev.statuses(m)
    assert [e.level for e in ev.errors("session", since=m)] == ["warning"]   # nothing is waiting


# ------------------------------------------------------------------------------------- 6. auto

def test_auto_runs_closed_loop_and_estop_stops_it(make):
    s, ev = make(auto_rate_hz=50.0)
    s.set_run_mode("auto")
    assert s.run_mode is RunMode.AUTO
    s.enable_arm()
    idle(s)
    j0 = joints(s)
    s.play()
    assert s.running
    until(lambda: s.counters["sent"] >= 3, what="three actions sent in auto")
    assert not np.allclose(joints(s), j0)
    for step in (e.step for e in ev.of(ActionEvent) if e.step.status == "sent"):
        assert np.linalg.norm(step.sent[:3]) <= MAX_T + 1e-9

    s.estop("stop the loop")
    sent = s.counters["sent"]                                    # a send in progress finished inside estop
    assert not s.running and not s.arm.enabled
    idle(s)
    m = ev.mark()
    time.sleep(0.4)                                              # several loop periods at 50 Hz
    assert s.counters["sent"] == sent
    assert "sent" not in ev.statuses(m)
    assert not s.running

    m = ev.mark()
    s.play()                                                     # auto will not restart while latched
    assert not s.running
    assert [(e.source, e.level) for e in ev.errors(since=m)] == [("safety", "warning")]


def test_auto_pause_and_mode_change_stop_the_loop(make):
    s, ev = make(policy="fake", auto_rate_hz=50.0)
    s.set_run_mode("auto")
    s.enable_arm()
    s.play()
    until(lambda: s.counters["sent"] >= 1, what="an action sent in auto")
    s.set_run_mode("step")
    assert not s.running and s.run_mode is RunMode.STEP
    idle(s)
    sent = s.counters["sent"]
    time.sleep(0.2)
    assert s.counters["sent"] == sent


def test_edit_in_auto_applies_from_the_next_step(make):
    policy = FakePolicy(reason_trace=[(40, 50), (90, 120)])
    s, ev = make(policy=policy, auto_rate_hz=50.0)
    s.step()
    idle(s)
    s.set_run_mode("auto")
    s.play()
    until(lambda: s.counters["reason"] >= 2, what="the loop running")
    s.edit_trace([(0, 0), (200, 210)], final=True)               # no re-decode of its own in auto
    until(lambda: s.counters["steer"] >= 1, what="a steered step")
    s.pause()
    idle(s)
    steer_calls = [arg for kind, arg in policy.calls if kind == "steer_text"]
    assert steer_calls and all(t == [(40, 50), (200, 210)] for t in steer_calls)  # anchored each step
    # every steer came right after a reason (inside a cycle), never as a standalone request
    kinds = policy.kinds()
    assert all(kinds[i - 1] == "reason" for i, k in enumerate(kinds) if k == "steer_text")


# ------------------------------------------------------------------------------------- 7. preview

def test_preview_never_moves_the_arm(make):
    s, ev = make(policy="fake")
    s.set_run_mode("preview")
    s.enable_arm()
    idle(s)
    assert s.arm.enabled
    j0 = joints(s)
    s.play()
    until(lambda: s.counters["reason"] >= 3, what="three previews")
    s.go()                                                       # nothing is waiting in preview
    s.pause()
    idle(s)
    s.move_waypoint(0, 30, 30)                                   # a steer while paused: preview too
    idle(s)
    statuses = ev.statuses()
    assert len(statuses) >= 4 and set(statuses) == {"preview"}
    assert s.pending_step is None
    assert s.counters["sent"] == 0
    np.testing.assert_array_equal(joints(s), j0)


def test_single_step_in_preview_cannot_be_sent(make):
    s, ev = make(policy="fake")
    s.set_run_mode("preview")
    s.enable_arm()
    s.step()
    idle(s)
    j0 = joints(s)
    s.go()
    idle(s)
    assert "sent" not in ev.statuses()
    np.testing.assert_array_equal(joints(s), j0)


# ------------------------------------------------------------------------------------- 8. confirm

def test_confirm_waits_for_go_between_steps(make):
    s, ev = make(policy="fake")
    s.set_run_mode("confirm")
    s.enable_arm()
    s.play()
    until(lambda: s.pending_step is not None, what="the first pending action")
    idle(s)
    time.sleep(0.3)                                              # a continuous loop would reason again
    assert s.counters["reason"] == 1 and len(ev.of(ReasoningEvent)) == 1
    assert s.running and ev.statuses() == ["pending"]
    first = s.pending_step.index

    s.go()
    until(lambda: s.counters["reason"] >= 2, what="the next reasoning after go")
    until(lambda: s.pending_step is not None, what="the second pending action")
    s.pause()
    idle(s)
    steps = ev.steps()
    assert [st for st, _ in steps[:3]] == ["pending", "sent", "pending"]
    assert steps[0][1] == steps[1][1] == first and steps[2][1] > first   # go sent the action shown
    assert s.counters["sent"] == 1


# ------------------------------------------------------------------------------------- 9. persistence

def test_edit_persists_into_the_next_step_reanchored(make):
    s, ev = make()
    s.step()
    idle(s)
    model_first = tuple(s.reasoning.trace[0])
    edit = [(model_first[0] // 2 + 3, model_first[1] // 2 + 3), (120, 200), (200, 100)]
    assert edit[0] != model_first                                # so re-anchoring is visible
    s.edit_trace(edit)
    idle(s)
    assert s.edited_trace == edit

    m, n_steer = ev.mark(), s.counters["steer"]
    s.step()
    idle(s)
    expected = tr.anchored(edit, s.reasoning.trace)
    assert expected == [tuple(s.reasoning.trace[0]), (120, 200), (200, 100)]
    assert s.edited_trace == expected
    assert [e.trace for e in ev.of(EditEvent, m)] == [expected]
    assert s.counters["steer"] == n_steer + 1
    steers = ev.of(SteerEvent, m)
    assert len(steers) == 1 and list(steers[0].reasoning.trace) == expected
    assert s.pending_step.mode == "steer_text" and s.pending_step.trace == expected
    # event order within the step: the model's reasoning, the re-anchored edit, its steer, the action
    order = [type(e) for e in ev.all[m:] if isinstance(e, (ReasoningEvent, EditEvent, SteerEvent,
                                                          ActionEvent))]
    assert order == [ReasoningEvent, EditEvent, SteerEvent, ActionEvent]


# ------------------------------------------------------------------------------------- 10. instruction

def test_set_instruction_changes_it_and_clears_the_edit(make):
    policy = FakePolicy()
    s, ev = make(policy=policy)
    s.step()
    idle(s)
    s.move_waypoint(1, 200, 200)
    idle(s)
    assert s.edited_trace is not None and s.pending_step is not None

    m = ev.mark()
    s.set_instruction("  put the cube in the bowl ")
    assert s.instruction == "put the cube in the bowl" and s.status().instruction == s.instruction
    assert s.edited_trace is None and s.pending_step is None
    assert [(e.trace, e.final) for e in ev.of(EditEvent, m)] == [(None, True)]

    s.step()
    idle(s)
    assert policy.calls[-1] == ("reason", "put the cube in the bowl")
    assert s.pending_step.mode == "reason"                       # no steer: the edit is gone

    m = ev.mark()
    s.move_waypoint(1, 100, 100)
    idle(s)
    before = s.edited_trace
    s.set_instruction("   ")
    s.set_instruction("")
    assert s.instruction == "put the cube in the bowl"
    assert s.edited_trace == before
    warnings = ev.errors("session", "warning", m)
    assert len(warnings) == 2 and all("empty" in e.message for e in warnings)


def test_instruction_change_drops_the_reasoning_in_flight(make):
    policy = FakePolicy()
    s, ev = make(policy=policy)
    policy.gate.clear()
    s.step()
    policy.wait_entered()
    s.set_instruction("open the drawer")
    policy.gate.set()
    idle(s)
    assert ev.of(ReasoningEvent) == [] and s.reasoning is None and s.pending_step is None
    s.step()
    idle(s)
    assert policy.calls[-1] == ("reason", "open the drawer")
    assert len(ev.of(ReasoningEvent)) == 1


# ------------------------------------------------------------------------------------- 11. errors

@pytest.mark.parametrize("exc", [RuntimeError("cuda went away"), NonFiniteLogitsError("NaN logits at step 3")])
def test_policy_failure_pauses_the_loop_and_worker_survives(make, exc):
    policy = FakePolicy()
    s, ev = make(policy=policy)
    s.set_run_mode("preview")
    s.play()
    until(lambda: s.counters["reason"] >= 1, what="the loop running")
    policy.fail = exc
    until(lambda: ev.errors(), what="the model error")
    idle(s)
    errs = ev.errors()
    assert [(e.source, e.level) for e in errs] == [("model", "error")]
    assert type(exc).__name__ in errs[0].message and str(exc) in errs[0].message
    assert "loop paused" in errs[0].message
    assert not s.running
    assert s.threads_alive == ["session-worker"]

    n = s.counters["reason"]
    s.step()                                                     # the worker still answers
    idle(s)
    assert s.counters["reason"] == n + 1 and len(ev.errors()) == 1


def test_steer_failure_reports_model_and_next_request_works(make):
    policy = FakePolicy()
    s, ev = make(policy=policy)
    s.step()
    idle(s)
    policy.fail = NonFiniteLogitsError("NaN in the action logits")
    s.move_waypoint(0, 1, 1)
    idle(s)
    errs = ev.errors()
    assert [(e.source, e.level) for e in errs] == [("model", "error")]
    assert "NonFiniteLogitsError" in errs[0].message and "loop paused" not in errs[0].message
    assert s.steered is None and s.pending_step.mode == "reason"
    s.move_waypoint(0, 2, 2)
    idle(s)
    assert s.pending_step.mode == "steer_text" and s.pending_step.trace[0] == (2, 2)


def test_camera_error_is_reported_as_camera(make):
    s, ev = make(policy="fake", wrap_camera=FailingCamera)
    s.step()
    idle(s)
    errs = ev.errors()
    assert [(e.source, e.level) for e in errs] == [("camera", "error")]
    assert "unplugged" in errs[0].message
    assert s.counters["reason"] == 0 and s.reasoning is None
    s.camera.broken = False
    s.step()
    idle(s)
    assert s.counters["reason"] == 1 and s.pending_step is not None


def test_persistent_arm_read_error_is_reported_once(make):
    s, ev = make(policy="fake", frames=True, wrap_arm=UnreadableArm)
    until(lambda: s.arm.reads >= 4, what="four arm polls")
    assert len(ev.errors("arm")) == 1


# ------------------------------------------------------------------------------------- 12. close

def test_close_stops_threads_and_the_arm(make):
    s, ev = make(policy="fake", frames=True)
    assert sorted(s.threads_alive) == ["session-frames", "session-worker"]
    s.enable_arm()
    s.step()
    idle(s)
    assert s.arm.enabled
    s.close(timeout_s=5)
    assert s.threads_alive == []
    assert not [t.name for t in threading.enumerate() if t.name.startswith("session-")]
    assert not s.arm.enabled
    assert s.camera.status.value == "disconnected"
    s.close()                                                    # harmless
    n = s.counters["reason"]
    s.step()                                                     # ignored after close, no thread revived
    assert s.counters["reason"] == n and s.threads_alive == []


def test_close_lets_the_model_call_in_flight_finish(make):
    policy = FakePolicy()
    s, ev = make(policy=policy)
    policy.gate.clear()
    s.step()
    policy.wait_entered()
    threading.Timer(0.2, policy.gate.set).start()
    s.close(timeout_s=10)
    assert s.threads_alive == []
    assert not [t.name for t in threading.enumerate() if t.name.startswith("session-")]


def test_close_without_start(make):
    s, ev = make(policy="fake", start=False)
    s.close()
    s.close()
    assert s.threads_alive == []


# ------------------------------------------------------------------------------------- 13. subscribers

def test_a_failing_subscriber_does_not_break_the_worker(make):
    s, ev = make(policy="fake", start=False)
    calls = []

    def broken(event):
        calls.append(type(event))
        raise RuntimeError("view crashed")

    s.subscribe(broken)
    late = Events(s)                                             # subscribed after the broken one
    s.start(frames=False)
    s.step()
    idle(s)
    assert ReasoningEvent in calls and ActionEvent in calls
    assert len(late.of(ReasoningEvent)) == 1 and len(late.of(ActionEvent)) == 1
    s.move_waypoint(0, 9, 9)
    idle(s)
    assert s.pending_step.mode == "steer_text"
    assert s.threads_alive == ["session-worker"]


def test_unsubscribe_stops_delivery(make):
    s, ev = make(policy="fake")
    got = []
    unsubscribe = s.subscribe(got.append)
    s.step()
    idle(s)
    n = len(got)
    assert n > 0
    unsubscribe()
    unsubscribe()                                                # twice is harmless
    s.step()
    idle(s)
    assert len(got) == n
    assert any(isinstance(e, StatusEvent) for e in ev.all)


def test_session_config_validation():
    with pytest.raises(ValueError):
        SessionConfig(steer_mode="psychic")
    with pytest.raises(ValueError):
        SessionConfig(instruction="  ")
    with pytest.raises(ValueError):
        SessionConfig(auto_rate_hz=0)
    with pytest.raises(ValueError):
        SessionConfig(run_mode="turbo")
    assert SessionConfig(run_mode="auto").run_mode is RunMode.AUTO


# ------------------------------------------------------------------------------------- review findings

@pytest.mark.parametrize("stop", ["pause", "preview", "estop"])
def test_stopping_auto_mid_step_sends_nothing_more(make, stop):
    """The step running when the operator pauses / switches mode / e-stops must not move the arm."""
    policy = FakePolicy()
    s, ev = make(policy=policy, auto_rate_hz=50.0)
    s.set_run_mode("auto")
    s.enable_arm()
    idle(s)
    policy.gate.clear()
    s.play()
    policy.wait_entered()                                        # the loop is inside reason()
    {"pause": s.pause, "preview": lambda: s.set_run_mode("preview"), "estop": s.estop}[stop]()
    m = ev.mark()
    policy.gate.set()
    idle(s)
    time.sleep(0.1)
    assert s.counters["sent"] == 0 and "sent" not in ev.statuses(m)
    assert s.pending_step is None


def test_close_during_auto_stops_the_arm_first_and_sends_nothing(make):
    policy = FakePolicy()
    s, ev = make(policy=policy, auto_rate_hz=50.0)
    s.set_run_mode("auto")
    s.enable_arm()
    idle(s)
    calls = []
    s.arm.send_action = lambda a, _orig=s.arm.send_action: calls.append(a) or _orig(a)
    stopped_at = []
    s.arm.stop = lambda _orig=s.arm.stop: stopped_at.append(len(policy.calls)) or _orig()
    policy.gate.clear()
    s.play()
    policy.wait_entered()
    threading.Timer(0.3, policy.gate.set).start()                # the model finishes while close() waits
    s.close(timeout_s=20)
    assert calls == []                                            # nothing reached the arm after close
    assert stopped_at and stopped_at[0] == 1                      # stopped while the model was still running
    assert s.threads_alive == []


def test_a_step_left_from_step_mode_cannot_be_sent_in_preview(make):
    s, ev = make(policy="fake")
    s.enable_arm()
    s.step()
    idle(s)
    assert s.pending_step is not None
    s.set_run_mode("preview")
    assert s.pending_step is None and s.last_step.status == "refused"
    m = ev.mark()
    s.go()
    idle(s)
    assert s.counters["sent"] == 0 and "sent" not in ev.statuses(m)


def test_a_step_computed_during_an_estop_is_not_sent_after_reset(make):
    policy = FakePolicy()
    s, ev = make(policy=policy)
    s.enable_arm()
    idle(s)
    policy.gate.clear()
    s.step()
    policy.wait_entered()
    s.estop()
    policy.gate.set()
    idle(s)
    s.reset()
    s.enable_arm()
    idle(s)
    assert s.arm.enabled
    s.go()
    idle(s)
    assert s.counters["sent"] == 0


def test_a_drag_in_progress_never_steers_the_closed_loop(make):
    policy = FakePolicy(reason_trace=[(40, 50), (90, 120)])
    s, ev = make(policy=policy, auto_rate_hz=50.0)
    s.step()
    idle(s)
    s.move_waypoint(1, 222, 33, final=False)                     # the button is still down
    s.set_run_mode("auto")
    s.play()
    until(lambda: s.counters["reason"] >= 4, what="a few closed-loop steps")
    s.pause()
    idle(s)
    assert [k for k in policy.kinds() if k.startswith("steer")] == []
    assert all((222, 33) not in (arg or []) for _, arg in policy.calls if isinstance(arg, list))


def test_text_steer_of_a_frame_the_model_has_moved_on_from_is_refused(make):
    """A step dropped mid-flight (instruction changed) leaves the model's cache on a frame the operator
    never saw: a text steer must not decode from it."""
    policy = FakePolicy()
    s, ev = make(policy=policy)
    s.step()
    idle(s)
    policy.wait_entered()                                        # consume the first step's entry
    policy.gate.clear()
    s.step()
    policy.wait_entered()                                        # the second step is inside reason()
    s.set_instruction("pick up the blue block")
    policy.gate.set()
    idle(s)
    m = ev.mark()
    s.move_waypoint(0, 10, 10, final=True)
    idle(s)
    assert ev.of(SteerEvent, m) == [] and s.pending_step is None
    assert ev.errors("session", "warning", since=m)


def test_decode_both_modes_answers_with_an_event_and_changes_nothing_sendable(make):
    from app.session import ModesEvent
    s, ev = make()
    m0 = ev.mark()
    s.decode_both_modes()                                        # nothing on screen yet
    idle(s)
    assert ev.of(ModesEvent, m0) == [] and ev.errors("session", "warning", since=m0)
    s.step()
    idle(s)
    s.edit_trace([(10, 20), (200, 100)], final=True)
    idle(s)
    pending = s.pending_step
    m = ev.mark()
    s.decode_both_modes()
    idle(s)
    (modes,) = ev.of(ModesEvent, m)
    assert modes.trace == [(10, 20), (200, 100)]
    assert (modes.text.mode, modes.visual.mode) == ("steer_text", "steer_visual")
    assert ev.of(ActionEvent, m) == [] and s.pending_step.index == pending.index
    s.move_waypoint(0, 30, 30, final=True)                       # steer_text still resumes correctly after
    idle(s)
    assert s.steered.mode == "steer_text" and s.steered.trace[0] == (30, 30)
