"""Rotation helpers for the simulated cell: the shared ones from ``app.rotations``."""
from app.rotations import (matrix_to_rotvec, matrix_to_rpy, rot_x, rot_y, rot_z, rotation_error,  # noqa: F401
                           rotvec_to_matrix, rpy_to_matrix)
