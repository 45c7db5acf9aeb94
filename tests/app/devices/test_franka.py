"""Franka (panda-py) against FakeFrankaPanda / FakeCartesianImpedance / FakeFrankaGripper."""
from __future__ import annotations

import math
import sys
import threading

import numpy as np
import pytest

from app.devices.arm import Arm, ArmDisabledError, ArmError
from app.devices.franka import Franka, FrankaConfig, LatestWinsWorker

from tests.app.devices.fakes import FakeFrankaGripper, FakeFrankaPanda, fake_franka_factory


def inline(job):
    job()


def make(panda=None, gripper="default", **cfg):
    panda = panda or FakeFrankaPanda()              # at (0.307, 0, 0.487), quat xyzw (1, 0, 0, 0)
    gripper = FakeFrankaGripper() if gripper == "default" else gripper
    ctrls: list = []
    arm = Franka(FrankaConfig(host="172.16.0.2", gripper=gripper is not None, **cfg),
                 client_factory=fake_franka_factory(panda, gripper, ctrls), run_gripper=inline)
    arm.connect()
    return arm, panda, gripper, ctrls


def enabled(**kw):
    arm, panda, gripper, ctrls = make(**kw)
    arm.enable()
    return arm, panda, gripper, ctrls[-1]


@pytest.mark.parametrize("missing", ["panda_py", "panda_py.controllers"])
def test_missing_sdk_names_the_extra(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(ArmError, match=r'panda-python.*pip install -e "\.\[franka\]"'):
        Franka()


def test_implements_the_arm_protocol():
    assert isinstance(make()[0], Arm)


def test_motion_is_refused_until_enabled():
    arm, panda, _, ctrls = make()
    with pytest.raises(ArmDisabledError):
        arm.send_action(np.zeros(7))
    assert ctrls == [] and panda.controller is None


def test_enable_starts_the_controller_at_the_current_pose():
    arm, panda, _, ctrl = enabled()
    assert panda.names()[-2:] == ["raise_error", "start_controller"] and panda.controller is ctrl
    pos, quat = ctrl.last("set_control")[0]
    np.testing.assert_allclose(pos, [0.307, 0, 0.487])
    np.testing.assert_allclose(quat, [1, 0, 0, 0], atol=1e-12)


def test_translation_in_metres():
    arm, panda, _, ctrl = enabled()
    arm.send_action(np.array([0.01, -0.02, 0.0, 0, 0, 0, 0]))
    pos, quat = ctrl.last("set_control")[0]
    np.testing.assert_allclose(pos, [0.317, -0.02, 0.487])
    np.testing.assert_allclose(quat, [1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(arm.state().ee_position, [0.317, -0.02, 0.487])


def test_rotation_is_a_scalar_last_quaternion_about_base_axes():
    # Rz(0.1) * Rx(pi): (cos .05 + sin .05 k) i = cos .05 i + sin .05 j -> xyzw (cos .05, sin .05, 0, 0)
    arm, _, _, ctrl = enabled()
    arm.send_action(np.array([0, 0, 0, 0, 0, 0.1, 0]))
    np.testing.assert_allclose(ctrl.last("set_control")[0][1], [math.cos(0.05), math.sin(0.05), 0, 0],
                               atol=1e-12)
    s = arm.state()
    assert abs(s.ee_rpy[0]) == pytest.approx(math.pi) and s.ee_rpy[2] == pytest.approx(0.1)


def test_targets_integrate_and_rebase_when_blocked():
    arm, panda, _, ctrl = enabled()
    panda.follow = False                                      # e.g. pushing against the table
    xs = []
    for _ in range(3):
        out = arm.send_action(np.array([0.05, 0, 0, 0, 0, 0, 0]))
        xs.append(ctrl.last("set_control")[0][0][0])
    assert xs[:2] == pytest.approx([0.357, 0.407])           # from the target, not the measured 0.307
    assert xs[2] == pytest.approx(0.357)                     # 0.1 m lead > 0.05: re-based, then +0.05
    assert "re-based" in out.clipped[0]


def test_robot_error_becomes_arm_error_and_disables():
    arm, panda, _, ctrl = enabled()
    panda.error = "libfranka: Move command aborted: motion aborted by reflex! ['cartesian_reflex']"
    with pytest.raises(ArmError, match="cartesian_reflex"):
        arm.send_action(np.array([0.01, 0, 0, 0, 0, 0, 0]))
    assert not arm.enabled and panda.controller is None
    with pytest.raises(ArmError, match="cartesian_reflex"):
        arm.enable()
    arm2, panda2, _, _ = make(panda=panda, recover_on_enable=True)
    arm2.enable()
    assert "recover" in panda2.names() and arm2.enabled


def test_binary_gripper_grasps_and_opens():
    arm, _, gripper, _ = enabled()
    arm.send_action(np.array([0, 0, 0, 0, 0, 0, 0.7]))
    args, kw = gripper.last("grasp")
    assert args == (0.0, 0.1, 20.0) and kw == {"epsilon_inner": 0.005, "epsilon_outer": 0.08}
    arm.send_action(np.array([0, 0, 0, 0, 0, 0, 0.9]))       # still closed: no new command
    assert gripper.names().count("grasp") == 1
    assert arm.state().gripper == 1.0
    arm.send_action(np.array([0, 0, 0, 0, 0, 0, 0.1]))
    assert gripper.last("move")[0] == (0.08, 0.1) and arm.state().gripper == 0.0


def test_continuous_gripper_moves_to_a_width_in_metres():
    arm, _, gripper, _ = enabled(gripper_binary=False)
    out = arm.send_action(np.array([0, 0, 0, 0, 0, 0, 0.25]))
    assert gripper.last("move")[0] == pytest.approx((0.06, 0.1)) and out.sent[6] == 0.25


def test_gripper_failure_is_raised_on_the_next_call():
    arm, _, gripper, _ = enabled()
    gripper.fail_next("grasp", RuntimeError("libfranka gripper: command failed"))
    arm.send_action(np.array([0, 0, 0, 0, 0, 0, 1.0]))      # runs in the background in real use
    with pytest.raises(ArmError, match="gripper failed: libfranka gripper: command failed"):
        arm.send_action(np.zeros(7))


def test_no_gripper():
    arm, _, _, _ = enabled(gripper=None)
    out = arm.send_action(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert out.sent[6] == 0.0 and "no gripper" in out.clipped[0]


def test_own_limits_and_non_finite():
    arm, _, _, ctrl = enabled()
    out = arm.send_action(np.array([0, 0, 0, 0, 0, 2.0, 0]))
    assert any("rotation" in c for c in out.clipped) and out.sent[5] == pytest.approx(0.5)
    with pytest.raises(ArmError, match="non-finite"):
        arm.send_action(np.array([math.nan] * 7))


def test_hold_targets_the_measured_pose_stop_ends_control():
    arm, panda, gripper, ctrl = enabled()
    panda.follow = False
    arm.send_action(np.array([0.03, 0, 0, 0, 0, 0, 0]))
    arm.hold()
    np.testing.assert_allclose(ctrl.last("set_control")[0][0], [0.307, 0, 0.487])
    arm.stop()
    assert panda.controller is None and "stop" in gripper.names() and not arm.enabled
    with pytest.raises(ArmDisabledError):
        arm.send_action(np.zeros(7))


def test_state():
    arm, panda, _, _ = enabled()
    s = arm.state()
    np.testing.assert_allclose(s.joint_positions, panda.q)
    np.testing.assert_allclose(s.extras["quat_xyzw"], [1, 0, 0, 0], atol=1e-12)
    assert s.gripper == 0.0 and s.enabled


def test_latest_wins_worker_runs_jobs():
    done = threading.Event()
    LatestWinsWorker()(done.set)
    assert done.wait(2.0)


def test_gripper_worker_drops_pending_jobs_on_cancel_and_exits_on_close():
    import threading
    from app.devices.franka import LatestWinsWorker
    gate, ran = threading.Event(), []
    w = LatestWinsWorker()
    w(lambda: (gate.wait(2), ran.append("first")))
    import time as _t
    _t.sleep(0.05)                 # let the worker pick up the first job (it blocks on the gate)
    w(lambda: ran.append("queued"))
    w.cancel()                     # what stop() does: the queued grasp must never run
    gate.set()
    w.close()
    w._thread.join(2)
    assert ran == ["first"] and not w._thread.is_alive()
