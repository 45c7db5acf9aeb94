"""Rotation helpers: the rpy convention of the action/ArmState and rotation vectors round-trip."""
import numpy as np
import pytest

from app.sim.transforms import (matrix_to_rotvec, matrix_to_rpy, rot_x, rot_z, rotation_error,
                                rotvec_to_matrix, rpy_to_matrix)


def test_rpy_is_extrinsic_xyz():
    r, p, y = 0.3, -0.4, 1.2
    m = rpy_to_matrix([r, p, y])
    assert np.allclose(m, rot_z(y) @ np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0],
                                                [-np.sin(p), 0, np.cos(p)]]) @ rot_x(r))
    assert np.allclose(matrix_to_rpy(m), [r, p, y])


def test_rpy_round_trip_random():
    rng = np.random.default_rng(0)
    for _ in range(50):
        rpy = rng.uniform([-3, -1.5, -3], [3, 1.5, 3])
        assert np.allclose(rpy_to_matrix(matrix_to_rpy(rpy_to_matrix(rpy))), rpy_to_matrix(rpy))


@pytest.mark.parametrize("angle", [0.0, 1e-9, 0.3, 2.0, np.pi - 1e-6, np.pi])
def test_rotvec_round_trip(angle):
    axis = np.array([0.2, -0.5, 0.84])
    axis /= np.linalg.norm(axis)
    m = rotvec_to_matrix(axis * angle)
    assert np.allclose(rotvec_to_matrix(matrix_to_rotvec(m)), m, atol=1e-6)


def test_rotation_error_is_world_frame():
    current = rot_x(np.pi)                      # pointing down
    target = rot_z(0.2) @ current               # yawed about the world z axis
    assert np.allclose(rotation_error(target, current), [0, 0, 0.2])
