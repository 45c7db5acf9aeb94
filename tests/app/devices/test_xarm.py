"""XArm adapter against FakeXArmAPI: mm/deg units, base-frame rotations, enable order, errors."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from app.devices.arm import Arm, ArmDisabledError, ArmError
from app.devices.action_adapter import StepLimits
from app.devices.xarm import XArm, XArmConfig

from tests.app.devices.fakes import FakeXArmAPI, SDKMisuse


def make(fake: FakeXArmAPI | None = None, **cfg) -> tuple[XArm, FakeXArmAPI]:
    fake = fake or FakeXArmAPI()
    return XArm(XArmConfig(ip="10.0.0.5", **cfg), client_factory=lambda ip: fake), fake


def enabled(**kw) -> tuple[XArm, FakeXArmAPI]:
    arm, fake = make(**kw)
    arm.connect()
    arm.enable()
    return arm, fake


def test_missing_sdk_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "xarm", None)          # makes `import xarm.wrapper` fail
    with pytest.raises(ArmError, match=r'pip install -e "\.\[xarm\]"'):
        XArm()


def test_implements_the_arm_protocol():
    arm, _ = make()
    assert isinstance(arm, Arm) and arm.name == "xarm"


def test_motion_is_refused_until_enabled():
    arm, fake = make()
    arm.connect()
    with pytest.raises(ArmDisabledError):
        arm.send_action(np.zeros(7))
    assert "set_position" not in fake.names() and not arm.enabled


def test_enable_order():
    arm, fake = enabled()
    assert fake.names()[:6] == ["get_err_warn_code", "motion_enable", "set_mode", "set_state",
                                "set_gripper_enable", "set_gripper_mode"]
    assert fake.last("set_mode")[0] == (0,) and fake.last("set_state")[1] == {"state": 0}
    assert arm.enabled


def wrapped(deg):
    return [(v + 180.0) % 360.0 - 180.0 for v in deg]


def test_translation_is_sent_in_millimetres_as_an_absolute_target_from_the_measured_pose():
    arm, fake = enabled()
    start = list(fake.pose)
    out = arm.send_action(np.array([0.01, -0.02, 0.005, 0, 0, 0, 0]))
    _, kw = fake.last("set_position")
    assert (kw["x"], kw["y"], kw["z"]) == pytest.approx((start[0] + 10.0, start[1] - 20.0, start[2] + 5.0))
    assert wrapped([kw["roll"] - start[3], kw["pitch"] - start[4], kw["yaw"] - start[5]]) == \
        pytest.approx((0, 0, 0), abs=1e-9)
    assert kw["relative"] is False and kw["is_radian"] is False and kw["wait"] is False
    assert kw["speed"] == 100.0
    assert out.clipped == []
    np.testing.assert_allclose(arm.state().ee_position, [0.31, -0.02, 0.205])


def test_rotation_is_about_the_base_axes():
    # Tool yawed +90 deg. A roll about base x is, in the tool's RPY, a pitch of -0.1 rad:
    # Rx(a) Rz(90) = Rz(90) Ry(-a). Adding 0.1 rad to roll (what the controller does) would be wrong.
    arm, fake = enabled(fake=FakeXArmAPI(pose=(300, 0, 200, 0, 0, 90)))
    arm.send_action(np.array([0, 0, 0, 0.1, 0, 0, 0]))
    _, kw = fake.last("set_position")
    assert (kw["roll"], kw["pitch"], kw["yaw"]) == pytest.approx((0, -math.degrees(0.1), 90), abs=1e-9)


def test_yaw_across_the_roll_wrap():
    arm, fake = enabled()                                    # roll 180 deg (tool pointing down)
    start = list(fake.pose)
    arm.send_action(np.array([0, 0, 0, 0, 0, 0.1, 0]))
    _, kw = fake.last("set_position")
    assert wrapped([kw["roll"] - start[3], kw["pitch"] - start[4], kw["yaw"] - start[5]]) == \
        pytest.approx((0, 0, 5.729578), abs=1e-6)


def test_gripper_pulses_and_deadband():
    arm, fake = enabled()
    arm.send_action(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert fake.last("set_gripper_position")[0] == (0,)                  # 0 pulses = closed
    arm.send_action(np.array([0, 0, 0, 0, 0, 0, 0.25]))
    assert fake.last("set_gripper_position")[0] == (638,)                # 850 * 0.75 = 637.5
    arm.send_action(np.array([0, 0, 0, 0, 0, 0, 0.255]))                 # inside the deadband
    assert fake.names().count("set_gripper_position") == 2
    assert arm.state().gripper == pytest.approx((850 - 638) / 850)
    assert "set_position" not in fake.names()                            # zero motion: no move sent


def test_own_limits_clip_and_say_so():
    arm, fake = enabled(limits=StepLimits(max_translation_m=0.05, max_rotation_rad=0.5))
    x0 = fake.pose[0]
    out = arm.send_action(np.array([0.2, 0, 0, 0, 0, 0, 1.3]))
    assert fake.last("set_position")[1]["x"] == pytest.approx(x0 + 50.0)
    np.testing.assert_allclose(out.requested, [0.2, 0, 0, 0, 0, 0, 1.3])
    np.testing.assert_allclose(out.sent, [0.05, 0, 0, 0, 0, 0, 1.0])
    assert any("translation" in c for c in out.clipped) and any("gripper" in c for c in out.clipped)


def test_non_finite_action_is_refused():
    arm, fake = enabled()
    with pytest.raises(ArmError, match="non-finite"):
        arm.send_action(np.array([math.nan, 0, 0, 0, 0, 0, 0]))
    assert "set_position" not in fake.names()


def test_sdk_error_code_becomes_arm_error():
    arm, fake = enabled()
    fake.fail_next("set_position", 1)
    fake.error_code = 0
    with pytest.raises(ArmError, match=r"set_position returned code 1 \(controller has an uncleared error\)"):
        arm.send_action(np.array([0.01, 0, 0, 0, 0, 0, 0]))


def test_controller_error_blocks_motion_and_enable():
    arm, fake = enabled()
    fake.error_code = 31
    with pytest.raises(ArmError, match="controller error C31"):
        arm.send_action(np.array([0.01, 0, 0, 0, 0, 0, 0]))
    arm2, fake2 = make()
    fake2.error_code = 22
    arm2.connect()
    with pytest.raises(ArmError, match="C22"):
        arm2.enable()
    assert "motion_enable" not in fake2.names() and not arm2.enabled


def test_warning_code_is_not_fatal():
    arm, fake = enabled()
    fake.fail_next("set_position", 2)
    arm.send_action(np.array([0.01, 0, 0, 0, 0, 0, 0]))


def test_sdk_exception_keeps_its_message():
    arm, fake = enabled()
    fake.fail_next("set_position", OSError("socket closed by peer"))
    with pytest.raises(ArmError, match="socket closed by peer"):
        arm.send_action(np.array([0.01, 0, 0, 0, 0, 0, 0]))


def test_connect_failure():
    arm = XArm(XArmConfig(), client_factory=lambda ip: (_ for _ in ()).throw(ConnectionRefusedError("refused")))
    with pytest.raises(ArmError, match="could not connect: refused"):
        arm.connect()


def test_hold_stays_ready_stop_disables():
    arm, fake = enabled()
    arm.hold()
    assert [c[2] for c in fake.calls if c[0] == "set_state"][-2:] == [{"state": 4}, {"state": 0}]
    assert arm.enabled
    arm.stop()
    assert fake.last("set_state")[1] == {"state": 4} and not arm.enabled
    with pytest.raises(ArmDisabledError):
        arm.send_action(np.zeros(7))


def test_state_units():
    arm, fake = enabled(fake=FakeXArmAPI(pose=(250, -100, 300, 180, 0, -90)))
    s = arm.state()
    np.testing.assert_allclose(s.ee_position, [0.25, -0.1, 0.3])
    np.testing.assert_allclose(s.ee_rpy, [math.pi, 0, -math.pi / 2])
    np.testing.assert_allclose(s.joint_positions, np.radians([0, -30, 0, 45, 0, 75]))   # axis = 6
    assert s.gripper == 0.0 and s.enabled


def test_lite6_gripper_is_open_close():
    arm, fake = enabled(gripper="lite6")
    assert "set_gripper_enable" not in fake.names()
    out = arm.send_action(np.array([0, 0, 0, 0, 0, 0, 0.8]))
    assert fake.lite6_gripper == "closed" and out.sent[6] == 1.0 and "Lite 6" in out.clipped[0]
    arm.send_action(np.array([0, 0, 0, 0, 0, 0, 0.1]))
    assert fake.lite6_gripper == "open" and arm.state().gripper == 0.0


def test_context_manager_disconnects():
    arm, fake = make()
    with arm as a:
        a.enable()
    assert fake.names()[-2:] == ["set_state", "disconnect"] and not arm.enabled


def test_fake_rejects_metres_sent_as_millimetres_twice():
    """The fake itself must catch unit slips the adapter could make."""
    fake = FakeXArmAPI()
    fake.motion_enable(True), fake.set_mode(0), fake.set_state(0)
    with pytest.raises(SDKMisuse, match="units wrong"):
        fake.set_position(x=fake.pose[0] + 150.0, y=fake.pose[1], z=fake.pose[2], roll=fake.pose[3],
                          pitch=fake.pose[4], yaw=fake.pose[5], relative=False, is_radian=False, wait=False,
                          speed=100)
