"""UniversalRobot against FakeRTDEControl/FakeRTDEReceive: metres, rotation vectors, safety stops."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from app.devices.action_adapter import ActionAdapter, rotvec_to_matrix, rpy_to_matrix
from app.devices.arm import Arm, ArmDisabledError, ArmError
from app.devices.ur import URConfig, UniversalRobot

from tests.app.devices.fakes import FakeURGripper, FakeURRobot, fake_ur_factory


def make(robot: FakeURRobot | None = None, gripper=None, **cfg):
    robot = robot or FakeURRobot()
    clients: list = []
    arm = UniversalRobot(URConfig(host="10.0.0.9", **cfg), client_factory=fake_ur_factory(robot, clients),
                         gripper=gripper)
    arm.connect()
    return arm, robot, clients[0].control


def enabled(**kw):
    arm, robot, control = make(**kw)
    arm.enable()
    return arm, robot, control


@pytest.mark.parametrize("missing", ["rtde_control", "rtde_receive"])
def test_missing_sdk_names_the_extra(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(ArmError, match=r'ur-rtde.*pip install -e "\.\[ur\]"'):
        UniversalRobot()


def test_implements_the_arm_protocol():
    arm, _, _ = make()
    assert isinstance(arm, Arm)


def test_motion_is_refused_until_enabled():
    arm, _, control = make()
    with pytest.raises(ArmDisabledError):
        arm.send_action(np.zeros(7))
    assert "moveL" not in control.names()


@pytest.mark.parametrize("setup,match", [
    (lambda r: setattr(r, "robot_mode", 5), r"robot mode is 5 \(idle\)"),
    (lambda r: setattr(r, "protective_stopped", True), "protective stop"),
    (lambda r: setattr(r, "emergency_stopped", True), "emergency stop"),
])
def test_enable_refuses_a_robot_that_cannot_move(setup, match):
    arm, robot, _ = make()
    setup(robot)
    with pytest.raises(ArmError, match=match):
        arm.enable()
    assert not arm.enabled


def test_translation_is_an_absolute_target_in_metres():
    arm, robot, control = enabled()                       # TCP at (0.4, -0.1, 0.3), rotvec (2, 1, 0.3)
    arm.send_action(np.array([0.01, 0.0, -0.02, 0, 0, 0, 0]))
    (pose, speed, acc, asynchronous), _ = control.last("moveL")
    np.testing.assert_allclose(pose, [0.41, -0.1, 0.28, 2.0, 1.0, 0.3], atol=1e-9)
    assert (speed, acc, asynchronous) == (0.1, 0.5, True)


def test_rotation_is_a_rotation_vector_about_base_axes():
    robot = FakeURRobot(pose=(0.4, 0.0, 0.3, 0.0, 0.0, math.pi / 2))     # yawed 90 deg
    arm, _, control = enabled(robot=robot)
    arm.send_action(np.array([0, 0, 0, 0, 0, 0.1, 0]))
    pose = control.last("moveL")[0][0]
    np.testing.assert_allclose(pose[3:], [0, 0, math.pi / 2 + 0.1], atol=1e-9)
    np.testing.assert_allclose(arm.state().ee_rpy, [0, 0, math.pi / 2 + 0.1], atol=1e-9)
    # a roll about base x at yaw 90 is a -0.1 pitch in the tool's RPY (Rx(a) Rz(90) = Rz(90) Ry(-a))
    arm.send_action(np.array([0, 0, 0, 0.1, 0, 0, 0]))
    expected = rpy_to_matrix([0.1, 0, 0]) @ rpy_to_matrix([0, 0, math.pi / 2 + 0.1])
    np.testing.assert_allclose(rotvec_to_matrix(control.last("moveL")[0][0][3:]), expected, atol=1e-9)


def test_rotation_vector_does_not_flip_near_pi():
    robot = FakeURRobot(pose=(0.4, 0.0, 0.3, math.pi - 0.01, 0.0, 0.0))  # tool down, just below pi
    arm, _, control = enabled(robot=robot)
    arm.send_action(np.array([0, 0, 0, 0.02, 0, 0, 0]))
    np.testing.assert_allclose(control.last("moveL")[0][0][3:], [math.pi + 0.01, 0, 0], atol=1e-9)


def test_servoL_mode_and_its_stop():
    arm, _, control = enabled(motion="servoL", servo_time_s=0.2, lookahead_time_s=0.05, gain=500)
    arm.send_action(np.array([0.005, 0, 0, 0, 0, 0, 0]))
    args, _ = control.last("servoL")
    assert args[0][0] == pytest.approx(0.405) and args[3:] == (0.2, 0.05, 500)
    arm.hold()
    assert control.last("servoStop")[0] == (2.0,) and "stopL" not in control.names()


def test_bad_servo_parameters_are_rejected():
    with pytest.raises(ValueError, match="lookahead"):
        URConfig(motion="servoL", lookahead_time_s=0.5)


def test_refused_move_becomes_arm_error():
    arm, _, control = enabled()
    control.fail_next("moveL", False)
    with pytest.raises(ArmError, match="moveL .* refused"):
        arm.send_action(np.array([0.01, 0, 0, 0, 0, 0, 0]))


def test_protective_stop_disables():
    arm, robot, control = enabled()
    robot.protective_stopped = True
    with pytest.raises(ArmError, match="protective stop"):
        arm.send_action(np.array([0.01, 0, 0, 0, 0, 0, 0]))
    assert not arm.enabled and "moveL" not in control.names()


def test_sdk_exception_keeps_its_message():
    arm, robot, _ = enabled()
    arm._clients.receive.fail_next("getActualTCPPose", RuntimeError("RTDE receive: connection lost"))
    with pytest.raises(ArmError, match="connection lost"):
        arm.send_action(np.array([0.01, 0, 0, 0, 0, 0, 0]))


def test_own_limits_and_non_finite():
    arm, _, control = enabled()
    out = arm.send_action(np.array([0, 0.3, 0, 0, 0, 0, 0]))
    assert control.last("moveL")[0][0][1] == pytest.approx(-0.05)          # -0.1 + 0.05 cap
    assert any("translation" in c for c in out.clipped)
    with pytest.raises(ArmError, match="non-finite"):
        arm.send_action(np.array([0, 0, 0, 0, 0, math.inf, 0]))


def test_without_gripper_the_gripper_is_reported_ignored():
    arm, _, _ = enabled()
    out = arm.send_action(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert out.sent[6] == 0.0 and "no gripper" in out.clipped[0]


def test_injected_gripper():
    gripper = FakeURGripper()
    arm, _, _ = enabled(gripper=gripper)
    arm.send_action(np.array([0, 0, 0, 0, 0, 0, 0.6]))
    arm.send_action(np.array([0, 0, 0, 0, 0, 0, 0.605]))                  # deadband
    assert gripper.commands == [0.6] and arm.state().gripper == 0.6


def test_hold_stop_disconnect():
    arm, _, control = enabled()
    arm.hold()
    assert control.last("stopL")[0] == (2.0,) and arm.enabled
    arm.stop()
    assert not arm.enabled
    with pytest.raises(ArmDisabledError):
        arm.send_action(np.zeros(7))
    arm.disconnect()
    assert control.names()[-2:] == ["stopScript", "disconnect"]


def test_state_units():
    arm, robot, _ = enabled()
    s = arm.state()
    np.testing.assert_allclose(s.ee_position, [0.4, -0.1, 0.3])
    np.testing.assert_allclose(rpy_to_matrix(s.ee_rpy), rotvec_to_matrix([2.0, 1.0, 0.3]), atol=1e-12)
    np.testing.assert_allclose(s.joint_positions, robot.q)
    assert s.extras["robot_mode"] == 7 and s.enabled


def test_ur_preset_end_to_end():
    """A Bridge +x (forward) step moves a UR along its Base -x (see ARM_AXES)."""
    arm, _, control = enabled()
    command = ActionAdapter.for_arm("ur", "bridge_orig").map([0.01, 0, 0, 0, 0, 0, 1.0])
    arm.send_action(command)
    assert control.last("moveL")[0][0][0] == pytest.approx(0.39)
