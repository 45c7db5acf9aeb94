"""IK reaches reachable poses within millimetres and never leaves the joint limits."""
import numpy as np
import pytest

from app.sim import scene
from app.sim.transforms import rotation_error


def _random_q(rng):
    lo, hi = scene.JOINT_LIMITS[:, 0], scene.JOINT_LIMITS[:, 1]
    return np.clip(scene.HOME_Q + rng.uniform(-0.5, 0.5, 7), lo + 0.05, hi - 0.05)


def test_ik_reaches_reachable_targets(cell):
    rng = np.random.default_rng(0)
    for _ in range(10):
        target_pos, target_rot = cell.ik.forward(_random_q(rng))
        q = scene.HOME_Q.copy()
        for _ in range(10):       # a few control steps' worth of iterations
            res = cell.ik.solve(q, target_pos, target_rot)
            q = res.q
        assert res.position_error < 0.003, res
        assert res.rotation_error < 0.01, res


def test_ik_respects_joint_limits_on_unreachable_targets(cell):
    lo, hi = scene.JOINT_LIMITS[:, 0], scene.JOINT_LIMITS[:, 1]
    for target in ([1.5, 0.0, 0.3], [0.0, 0.0, 2.0], [0.05, 0.0, -0.4]):
        res = cell.ik.solve(scene.HOME_Q, np.array(target), np.diag([1.0, -1.0, -1.0]))
        assert np.all(res.q >= lo) and np.all(res.q <= hi)
        assert res.position_error > 0.1


def test_cell_tracks_deltas_with_ik(cell):
    cell.reset(0, "pick_red_cube")
    p0 = cell.ee_pose()
    for _ in range(10):
        cell.step([0.01, 0.0, -0.01, 0.0, 0.0, 0.05, 0.0])
    for _ in range(3):
        cell.step(np.zeros(7))
    p1 = cell.ee_pose()
    assert np.allclose(p1.position - p0.position, [0.1, 0.0, -0.1], atol=0.003)
    turned = rotation_error(p1.rotation, p0.rotation)
    assert np.allclose(turned, [0.0, 0.0, 0.5], atol=0.02)


def test_random_actions_keep_joints_in_limits(cell):
    cell.reset(2, "pick_red_cube")
    lo, hi = scene.JOINT_LIMITS[:, 0], scene.JOINT_LIMITS[:, 1]
    rng = np.random.default_rng(3)
    for _ in range(150):
        cell.step(np.r_[rng.uniform(-0.05, 0.05, 3), rng.uniform(-0.3, 0.3, 3), rng.uniform()])
        q = cell.joint_positions
        assert np.all(q >= lo - 1e-3) and np.all(q <= hi + 1e-3)
    assert np.all(np.isfinite(cell.data.qpos))
