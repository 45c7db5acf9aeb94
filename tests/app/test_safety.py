"""SafetyGuard: each rule with an input that trips it, and the reason it reports."""
from __future__ import annotations

import math

import numpy as np
import pytest

from app.devices.arm import ArmState
from app.safety import (
    RULE_DISABLED, RULE_ESTOP, RULE_GRIPPER_RANGE, RULE_GRIPPER_RATE, RULE_INVALID, RULE_ROTATION,
    RULE_TRANSLATION, RULE_WATCHDOG, RULE_WORKSPACE, SafetyConfig, SafetyGuard,
)

CONFIG = SafetyConfig(max_translation_m=0.03, max_rotation_rad=0.2, workspace_min=(0.2, -0.3, 0.05),
                      workspace_max=(0.6, 0.3, 0.5), max_gripper_delta=0.25, watchdog_timeout_s=1.0)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def state(pos=(0.4, 0.0, 0.2), gripper=0.0, enabled=True) -> ArmState:
    return ArmState(ee_position=np.asarray(pos, dtype=float), ee_rpy=np.zeros(3), gripper=gripper,
                    joint_positions=np.zeros(6), timestamp=0.0, enabled=enabled)


@pytest.fixture
def guard() -> SafetyGuard:
    return SafetyGuard(CONFIG, clock=Clock())


def rules(result) -> list[str]:
    return [e.rule for e in result.events]


def test_safe_action_passes_unchanged(guard):
    a = [0.01, -0.01, 0.005, 0.05, 0.0, -0.05, 0.1]
    r = guard.check(a, state())
    assert r.allowed and not r.events and not r.clipped
    np.testing.assert_array_equal(r.action, a)


@pytest.mark.parametrize("bad", [
    [math.nan, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, math.inf, 0, 0], [0, 0, 0, 0, 0, 0, -math.inf],
    [0.0] * 6, "seven",
])
def test_invalid_action_is_refused_with_a_hold(guard, bad):
    r = guard.check(bad, state(gripper=0.4))
    assert not r.allowed and rules(r) == [RULE_INVALID] and r.events[0].refused
    np.testing.assert_array_equal(r.action, [0, 0, 0, 0, 0, 0, 0.4])   # hold: gripper stays put
    assert r.events[0].reason


def test_translation_norm_is_clamped(guard):
    r = guard.check([0.03, 0.04, 0, 0, 0, 0, 0], state())          # norm 0.05 > 0.03
    assert r.allowed and rules(r) == [RULE_TRANSLATION]
    np.testing.assert_allclose(r.action[:3], [0.018, 0.024, 0.0])
    assert "0.0500" in r.events[0].reason and "0.0300" in r.events[0].reason


def test_rotation_norm_is_clamped(guard):
    r = guard.check([0, 0, 0, 0.3, 0, 0.4, 0], state())             # norm 0.5 > 0.2
    assert rules(r) == [RULE_ROTATION]
    np.testing.assert_allclose(r.action[3:6], [0.12, 0, 0.16])


def test_workspace_clips_the_delta_to_the_box(guard):
    r = guard.check([0.02, 0, -0.02, 0, 0, 0, 0], state(pos=(0.59, 0.0, 0.06)))
    assert r.allowed and rules(r) == [RULE_WORKSPACE, RULE_WORKSPACE]
    np.testing.assert_allclose(r.action[:3], [0.01, 0.0, -0.01])
    assert "x target 0.6100" in r.events[0].reason and "z target" in r.events[1].reason


def test_outside_the_box_only_moves_back_in(guard):
    st = state(pos=(0.4, 0.0, 0.01))                                # below z min 0.05
    down = guard.check([0, 0, -0.01, 0, 0, 0, 0], st)
    np.testing.assert_allclose(down.action[:3], [0, 0, 0])
    assert rules(down) == [RULE_WORKSPACE]
    up = guard.check([0, 0, 0.01, 0, 0, 0, 0], st)
    assert up.allowed and not up.events and up.action[2] == pytest.approx(0.01)


def test_gripper_rate_and_range(guard):
    r = guard.check([0, 0, 0, 0, 0, 0, 1.0], state(gripper=0.0))
    assert rules(r) == [RULE_GRIPPER_RATE] and r.action[6] == pytest.approx(0.25)
    r = guard.check([0, 0, 0, 0, 0, 0, 1.4], state(gripper=0.9))
    assert rules(r) == [RULE_GRIPPER_RANGE] and r.action[6] == pytest.approx(1.0)


def test_watchdog_uses_the_injected_clock():
    clock = Clock()
    g = SafetyGuard(CONFIG, clock=clock)
    assert g.tick() is None                                          # nothing sent yet: nothing to hold
    g.check([0] * 7, state())                                        # at t = 100
    clock.t = 100.9
    assert g.tick() is None
    clock.t = 101.2
    ev = g.tick()
    assert ev and ev.rule == RULE_WATCHDOG and ev.refused and "1.20 s" in ev.reason
    g.check([0] * 7, state(), now=101.3)                             # a fresh command re-arms it
    assert g.tick(now=101.5) is None and g.tick(now=102.4)


def test_refused_commands_do_not_feed_the_watchdog(guard):
    guard.check([0] * 7, state(), now=0.0)
    guard.check([math.nan] * 7, state(), now=0.9)
    assert guard.tick(now=1.5)


def test_estop_latches_until_reset(guard):
    ev = guard.estop("operator pressed the button")
    assert ev.rule == RULE_ESTOP and guard.estopped
    for _ in range(3):
        r = guard.check([0.01, 0, 0, 0, 0, 0, 0.5], state(gripper=0.5))
        assert not r.allowed and rules(r) == [RULE_ESTOP]
        assert "operator pressed the button" in r.events[0].reason and "reset()" in r.events[0].reason
        np.testing.assert_array_equal(r.action, [0, 0, 0, 0, 0, 0, 0.5])
    guard.estop("second press")
    assert guard.estop_reason == "operator pressed the button"       # first reason kept
    guard.reset()
    assert not guard.estopped and guard.check([0.01, 0, 0, 0, 0, 0, 0.5], state(gripper=0.5)).allowed


def test_estop_wins_over_every_other_rule(guard):
    guard.estop("x")
    r = guard.check([math.nan] * 7, state(enabled=False))
    assert rules(r) == [RULE_ESTOP]


def test_disabled_arm_is_never_sent_motion(guard):
    r = guard.check([0, 0, 0, 0, 0, 0, 0], state(enabled=False))
    assert not r.allowed and rules(r) == [RULE_DISABLED] and "disabled" in r.events[0].reason


def test_state_without_position_is_refused(guard):
    r = guard.check([0] * 7, state(pos=(math.nan, 0, 0)))
    assert not r.allowed and rules(r) == [RULE_INVALID]


def test_several_clips_are_all_reported(guard):
    r = guard.check([0.1, 0, 0, 0, 0, 1.0, 1.0], state(pos=(0.59, 0, 0.2), gripper=0.0))
    assert rules(r) == [RULE_TRANSLATION, RULE_ROTATION, RULE_WORKSPACE, RULE_GRIPPER_RATE]
    np.testing.assert_allclose(r.action, [0.01, 0, 0, 0, 0, 0.2, 0.25])
    assert len(r.reasons) == 4 and all(": " in s for s in r.reasons)


@pytest.mark.parametrize("kwargs,match", [
    ({"max_translation_m": 0}, "max_translation_m"),
    ({"max_rotation_rad": -1}, "max_rotation_rad"),
    ({"max_gripper_delta": math.nan}, "max_gripper_delta"),
    ({"watchdog_timeout_s": math.inf}, "watchdog_timeout_s"),
    ({"workspace_min": (0.5, 0, 0), "workspace_max": (0.4, 1, 1)}, r"not on \['x'\]"),
    ({"workspace_min": (0, 0)}, "3 finite"),
    ({"workspace_max": (1, 1, math.nan)}, "3 finite"),
])
def test_config_is_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SafetyConfig(**kwargs)


def test_workspace_is_checked_from_a_commanded_target_running_ahead():
    """An arm that adds deltas to its last target (Franka impedance) reports it; a blocked arm whose
    target has run ahead must not be walked out of the box."""
    g = SafetyGuard(SafetyConfig(workspace_max=(0.75, 0.45, 0.60)))
    s = state(pos=(0.72, 0.0, 0.2))
    s.extras = {"target_position": np.array([0.745, 0.0, 0.2])}
    res = g.check([0.02, 0, 0, 0, 0, 0, 0], s, now=0.0)
    assert res.allowed and res.action[0] == pytest.approx(0.005)
    assert any(e.rule == "workspace" for e in res.events)


def test_default_gripper_rate_needs_two_steps_to_close():
    g = SafetyGuard()
    res = g.check([0, 0, 0, 0, 0, 0, 1.0], state(gripper=0.0), now=0.0)
    assert res.action[6] == pytest.approx(0.5)
