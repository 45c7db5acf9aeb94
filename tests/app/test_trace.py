"""Trace editing in model space (0..255) and the model <-> pixel mapping."""
from __future__ import annotations

import math

import numpy as np
import pytest

from app import trace as tr
from app.trace import TraceEditError


# ------------------------------------------------------------------------------------- clamp / normalize

@pytest.mark.parametrize("x, y, expected", [
    (10.4, 20.6, (10, 21)),
    (-3.0, 300.0, (0, 255)),
    (255.4, -0.4, (255, 0)),
    (1e9, -1e9, (255, 0)),
    (0, 255, (0, 255)),
])
def test_clamp_point_rounds_and_clamps(x, y, expected):
    got = tr.clamp_point(x, y)
    assert got == expected
    assert all(isinstance(v, int) for v in got)


@pytest.mark.parametrize("x, y", [(math.nan, 1), (1, math.inf), (-math.inf, 0)])
def test_clamp_point_refuses_non_finite(x, y):
    with pytest.raises(TraceEditError):
        tr.clamp_point(x, y)


def test_trace_edit_error_is_a_value_error():
    assert issubclass(TraceEditError, ValueError)


def test_normalize():
    assert tr.normalize([(1.2, 2.7), [300, -5], np.array([7.0, 8.0])]) == [(1, 3), (255, 0), (7, 8)]
    assert tr.normalize([(i, i) for i in range(5)]) == [(i, i) for i in range(5)]
    with pytest.raises(TraceEditError, match="at least one"):
        tr.normalize([])
    with pytest.raises(TraceEditError, match="at most 5"):
        tr.normalize([(i, i) for i in range(6)])


# ------------------------------------------------------------------------------------- move / insert / delete

T3 = [(10, 10), (100, 10), (100, 100)]


def test_move_point_returns_a_new_list():
    new = tr.move_point(T3, 1, 50.6, -7)
    assert new == [(10, 10), (51, 0), (100, 100)]
    assert T3 == [(10, 10), (100, 10), (100, 100)]             # the input is untouched


@pytest.mark.parametrize("index", [-1, 3, 10])
def test_move_point_out_of_range(index):
    with pytest.raises(TraceEditError):
        tr.move_point(T3, index, 1, 1)


def test_insert_point():
    assert tr.insert_point(T3, 0, 1, 2) == [(1, 2), *T3]
    assert tr.insert_point(T3, 2, 300, 50) == [(10, 10), (100, 10), (255, 50), (100, 100)]
    assert tr.insert_point(T3, 3, 5, 5) == [*T3, (5, 5)]        # len(trace) appends
    assert T3 == [(10, 10), (100, 10), (100, 100)]


@pytest.mark.parametrize("index", [-1, 4])
def test_insert_point_out_of_range(index):
    with pytest.raises(TraceEditError):
        tr.insert_point(T3, index, 1, 1)


def test_insert_point_refuses_a_sixth_waypoint():
    five = [(i, i) for i in range(5)]
    with pytest.raises(TraceEditError, match="5"):
        tr.insert_point(five, 2, 9, 9)
    assert len(tr.insert_point(five[:4], 4, 9, 9)) == 5


def test_delete_point():
    assert tr.delete_point(T3, 0) == [(100, 10), (100, 100)]
    assert tr.delete_point(T3, 2) == [(10, 10), (100, 10)]
    assert T3 == [(10, 10), (100, 10), (100, 100)]
    with pytest.raises(TraceEditError):
        tr.delete_point(T3, 3)
    with pytest.raises(TraceEditError):
        tr.delete_point(T3, -1)


def test_the_last_waypoint_cannot_be_deleted():
    with pytest.raises(TraceEditError, match="last waypoint"):
        tr.delete_point([(5, 5)], 0)
    assert tr.delete_point([(5, 5), (6, 6)], 1) == [(5, 5)]


# ------------------------------------------------------------------------------------- insertion_index

@pytest.mark.parametrize("x, y, expected", [
    (50, 14, 1),         # near the middle of segment 0 → between waypoints 0 and 1
    (96, 60, 2),         # near segment 1 → between 1 and 2
    (100, 180, 3),       # past the end → append
    (0, 10, 1),          # before the start, nearest to segment 0
    (10, 10, 1),         # on waypoint 0
])
def test_insertion_index_picks_the_nearest_segment(x, y, expected):
    assert tr.insertion_index(T3, x, y) == expected


def test_insertion_index_short_traces_append():
    assert tr.insertion_index([], 5, 5) == 0
    assert tr.insertion_index([(10, 10)], 0, 0) == 1


def test_insertion_index_degenerate_segment():
    # two identical waypoints: the segment is a point; a click next to it inserts between them
    assert tr.insertion_index([(10, 10), (10, 10), (200, 10)], 10, 11) == 1


def test_insertion_index_result_is_where_insert_point_puts_it():
    idx = tr.insertion_index(T3, 100, 55)
    assert tr.insert_point(T3, idx, 100, 55) == [(10, 10), (100, 10), (100, 55), (100, 100)]


# ------------------------------------------------------------------------------------- anchored

def test_anchored_moves_only_the_start():
    edit = [(0, 0), (120, 200), (200, 100)]
    model = [(71, 81), (90, 90)]
    assert tr.anchored(edit, model) == [(71, 81), (120, 200), (200, 100)]
    assert edit == [(0, 0), (120, 200), (200, 100)]


def test_anchored_keeps_a_single_point_edit_and_an_empty_model_trace():
    assert tr.anchored([(5, 6)], [(71, 81)]) == [(5, 6)]          # a one-point edit is the goal itself
    assert tr.anchored([(5, 6), (7, 8)], []) == [(5, 6), (7, 8)]


# ------------------------------------------------------------------------------------- pixels

def test_to_pixels_corners_at_640x480():
    px = tr.to_pixels([(0, 0), (255, 255), (255, 0), (0, 255)], 640, 480)
    np.testing.assert_allclose(px, [[0, 0], [639, 479], [639, 0], [0, 479]])
    np.testing.assert_allclose(tr.to_pixels([(51, 102)], 640, 480), [[51 / 255 * 639, 102 / 255 * 479]])


def test_from_pixels_clamps_and_rounds():
    assert tr.from_pixels([(0, 0), (639, 479), (-50, 1000)], 640, 480) == [(0, 0), (255, 255), (0, 255)]
    assert tr.from_pixels([(319.5, 239.5)], 640, 480) == [(128, 128)]    # 127.5 rounds half to even


def test_pixels_round_trip_at_640x480():
    grid = [(x, y) for x in range(256) for y in (0, 1, 17, 128, 254, 255)]
    grid += [(x, y) for y in range(256) for x in (0, 3, 200, 255)]
    back = tr.from_pixels(tr.to_pixels(grid, 640, 480), 640, 480)
    assert back == grid


def test_project_to_pixels_against_a_hand_computation():
    K = np.array([[500.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])
    # camera at (0.1, 0.2, 1.0) looking straight down: camera x = world x, camera y = -world y,
    # camera z (forward) = -world z
    T = np.eye(4)
    T[:3, :3] = np.diag([1.0, -1.0, -1.0])
    T[:3, 3] = (0.1, 0.2, 1.0)
    pts = np.array([[0.3, 0.1, 0.0],      # camera frame (0.2, 0.1, 1.0)
                    [0.1, 0.2, 0.5],      # straight ahead, 0.5 m: the principal point
                    [0.0, 0.0, 1.5]])     # behind the camera
    px = tr.project_to_pixels(pts, K, T)
    assert px.shape == (3, 2)
    np.testing.assert_allclose(px[0], [500 * 0.2 / 1.0 + 320, 400 * 0.1 / 1.0 + 240])
    np.testing.assert_allclose(px[1], [320, 240])
    assert np.all(np.isnan(px[2]))


def test_project_to_pixels_rotated_camera():
    K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])
    # camera at the origin looking along world +x: camera z = world x, camera x = -world y,
    # camera y = -world z
    R = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])    # columns: camera axes in world
    T = np.eye(4)
    T[:3, :3] = R
    px = tr.project_to_pixels(np.array([2.0, -0.4, 0.2]), K, T)
    # camera frame: x = 0.4, y = -0.2, z = 2.0
    np.testing.assert_allclose(px, [[100 * 0.4 / 2 + 50, 100 * -0.2 / 2 + 40]])
