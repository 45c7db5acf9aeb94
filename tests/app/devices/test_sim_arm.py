"""SimArm satisfies the Arm contract: disabled until enabled, reports the clipped action it sent."""
import numpy as np
import pytest

from app.devices.arm import Arm, ArmDisabledError, ArmError, ArmState, SentAction
from app.devices.sim_arm import SimArm, SimArmLimits
from app.sim.cell import SimCell


@pytest.fixture(scope="module")
def cell():
    c = SimCell()
    yield c
    c.close()


@pytest.fixture
def arm(cell):
    cell.reset(0, "pick_red_cube")
    a = SimArm(cell)
    a.connect()
    yield a
    a.disconnect()


def test_is_an_arm(cell):
    assert isinstance(SimArm(cell), Arm)


def test_refuses_motion_until_enabled(cell, arm):
    t0, p0 = cell.time, cell.ee_pose().position
    assert not arm.enabled
    with pytest.raises(ArmDisabledError):
        arm.send_action(np.array([0.01, 0, 0, 0, 0, 0, 0]))
    assert cell.time == t0 and np.allclose(cell.ee_pose().position, p0)
    arm.enable()
    sent = arm.send_action(np.array([0.01, 0, 0, 0, 0, 0, 0]))
    assert isinstance(sent, SentAction) and sent.clipped == []
    assert cell.time > t0
    arm.disable()
    with pytest.raises(ArmDisabledError):
        arm.send_action(np.zeros(7))


def test_enable_needs_connect(cell):
    with pytest.raises(ArmError):
        SimArm(cell).enable()


def test_state(cell, arm):
    s = arm.state()
    assert isinstance(s, ArmState)
    assert s.ee_position.shape == (3,) and s.ee_rpy.shape == (3,) and s.joint_positions.shape == (7,)
    assert np.allclose(s.ee_position, cell.ee_pose().position)
    assert s.timestamp == cell.time and s.enabled is False
    assert 0.0 <= s.gripper <= 1.0


def test_clips_and_reports_what_it_applied(cell, arm):
    arm.enable()
    goal0 = cell.goal_pose().position
    res = arm.send_action(np.array([0.2, 0.0, 0.0, 0.0, 0.0, 0.5, 1.7]))
    assert np.allclose(res.requested, [0.2, 0, 0, 0, 0, 0.5, 1.7])
    assert np.linalg.norm(res.sent[:3]) == pytest.approx(arm.limits.max_translation_m)
    assert res.sent[5] == pytest.approx(arm.limits.max_rotation_rad) and res.sent[6] == 1.0
    assert len(res.clipped) == 3
    assert any("translation" in r for r in res.clipped) and any("yaw" in r for r in res.clipped)
    # what it reports is what the cell got: the goal moved by exactly the sent translation
    assert np.allclose(cell.goal_pose().position - goal0, res.sent[:3], atol=1e-9)
    assert cell.gripper_command == 1.0


def test_workspace_clip_is_reported(cell, arm):
    arm.enable()
    for _ in range(15):
        res = arm.send_action(np.array([0.0, 0.0, -0.05, 0, 0, 0, 0]))
    assert any("workspace" in r for r in res.clipped)
    assert res.sent[2] > -0.05
    assert cell.goal_pose().position[2] == pytest.approx(cell.config.workspace_low[2])


def test_refuses_malformed_actions(arm):
    arm.enable()
    with pytest.raises(ArmError):
        arm.send_action(np.zeros(6))
    with pytest.raises(ArmError):
        arm.send_action(np.array([np.nan, 0, 0, 0, 0, 0, 0]))


def test_custom_limits(cell):
    arm = SimArm(cell, SimArmLimits(max_translation_m=0.01))
    arm.connect()
    arm.enable()
    res = arm.send_action(np.array([0.0, 0.03, 0.0, 0, 0, 0, 0]))
    assert res.sent[1] == pytest.approx(0.01)


def test_hold_keeps_gripper_and_stop_disables(cell, arm):
    arm.enable()
    arm.send_action(np.array([0.03, 0.0, 0.0, 0, 0, 0, 1.0]))   # moving, gripper closing
    arm.hold()
    p = cell.ee_pose().position
    assert np.allclose(cell.goal_pose().position, p)
    assert cell.gripper_command == 1.0
    arm.stop()
    assert not arm.enabled
    with pytest.raises(ArmDisabledError):
        arm.send_action(np.zeros(7))
