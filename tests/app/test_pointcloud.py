"""RGB-D back-projection and the trace lifted into 3D, against hand computations."""
from __future__ import annotations

import numpy as np
import pytest

from app.devices.camera import Intrinsics
from app.pointcloud import MAX_DISPLAY_POINTS, backproject, depth_at, lift_trace, stride_for

K_SMALL = Intrinsics(width=6, height=4, fx=2.0, fy=4.0, cx=2.5, cy=1.5)


def rgb_for(h: int, w: int) -> np.ndarray:
    """Each pixel's colour encodes where it is: (row, col, 7)."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = np.arange(h)[:, None]
    rgb[..., 1] = np.arange(w)[None, :]
    rgb[..., 2] = 7
    return rgb


# ------------------------------------------------------------------------------------- backproject

def test_backproject_against_a_hand_computation():
    depth = np.array([[1.0, 2.0, 0.0, 1.5, 3.0, 1.0],
                      [0.5, np.nan, 2.5, 1.0, 3.5, 2.0],
                      [1.0, 1.0, np.inf, -1.0, 2.0, 1.0],
                      [0.25, 3.01, 1.0, 2.0, 1.0, 0.0]], np.float32)
    rgb = rgb_for(4, 6)
    cloud = backproject(depth, rgb, K_SMALL, stride=1)

    # by hand, row-major over valid pixels (0 < d <= 3, finite): x = (u - cx) / fx * z, y = (v - cy) / fy * z
    expected_pts, expected_rgb = [], []
    for v in range(4):
        for u in range(6):
            d = float(depth[v, u])
            if not (np.isfinite(d) and 0 < d <= 3.0):
                continue
            expected_pts.append(((u - 2.5) / 2.0 * d, (v - 1.5) / 4.0 * d, d))
            expected_rgb.append((v, u, 7))
    assert len(expected_pts) == 24 - 7          # 0, nan, inf, -1, 3.5, 3.01, 0 are dropped
    assert cloud.points.dtype == np.float32 and cloud.points.shape == (17, 3)
    assert cloud.colors.dtype == np.uint8 and cloud.colors.shape == (17, 3)
    np.testing.assert_allclose(cloud.points, expected_pts, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(cloud.colors, expected_rgb)
    # spot checks written out: pixel (u=0, v=0) at 1 m and pixel (u=4, v=0) at the 3 m limit
    np.testing.assert_allclose(cloud.points[0], [-1.25, -0.375, 1.0])
    np.testing.assert_allclose(cloud.points[3], [(4 - 2.5) / 2 * 3.0, -1.5 / 4 * 3.0, 3.0], rtol=1e-6)


def test_backproject_max_depth_and_stride():
    depth = np.full((4, 6), 2.0, np.float32)
    rgb = rgb_for(4, 6)
    assert len(backproject(depth, rgb, K_SMALL, stride=1, max_depth_m=1.5).points) == 0
    cloud = backproject(depth, rgb, K_SMALL, stride=2)
    # pixels (u, v) in {0, 2, 4} x {0, 2}
    assert cloud.points.shape == (6, 3)
    np.testing.assert_array_equal(cloud.colors[:, :2], [(0, 0), (0, 2), (0, 4), (2, 0), (2, 2), (2, 4)])
    np.testing.assert_allclose(cloud.points[4], [(2 - 2.5) / 2 * 2.0, (2 - 1.5) / 4 * 2.0, 2.0])


def test_backproject_rejects_misaligned_rgb():
    with pytest.raises(ValueError, match="aligned"):
        backproject(np.ones((4, 6), np.float32), np.zeros((4, 5, 3), np.uint8), K_SMALL)
    with pytest.raises(ValueError):
        backproject(np.ones((4, 6), np.float32), np.zeros((3, 6, 3), np.uint8), K_SMALL)


def test_stride_for_keeps_a_full_frame_under_the_display_budget():
    s = stride_for(640, 480)
    assert s == 2
    assert (-(-640 // s)) * (-(-480 // s)) <= MAX_DISPLAY_POINTS
    assert 640 * 480 > MAX_DISPLAY_POINTS                       # stride 1 would not do: s is the smallest
    assert stride_for(100, 100) == 1
    assert stride_for(1280, 720) == 4                            # 427*240 > 80k at 3; 320*180 at 4
    assert stride_for(10, 10, max_points=9) == 4                 # ceil: 3x3 at 4, 4x4 at 3


def test_backproject_default_stride_full_frame_at_640x480():
    k = Intrinsics(width=640, height=480, fx=600.0, fy=600.0, cx=319.5, cy=239.5)
    depth = np.full((480, 640), 1.0, np.float32)
    cloud = backproject(depth, np.zeros((480, 640, 3), np.uint8), k)
    assert 0 < len(cloud.points) <= MAX_DISPLAY_POINTS
    assert len(cloud.points) == 320 * 240


# ------------------------------------------------------------------------------------- lift_trace

def test_depth_at_is_the_median_of_valid_depths_in_the_window():
    depth = np.full((20, 20), 9.0, np.float32)                  # outside the 7x7 window: must not count
    win = np.full(49, 3.0, np.float32)
    win[:24] = 1.0
    win[24] = 1.5                                                # 24 x 1.0, 1.5, 24 x 3.0: median 1.5
    depth[7:14, 7:14] = win.reshape(7, 7)
    assert depth_at(depth, 10, 10) == pytest.approx(1.5)
    depth[13, 12] = 0.0                                          # two 3.0s become invalid: 47 left
    depth[13, 13] = np.nan
    assert depth_at(depth, 10, 10) == pytest.approx(1.0)
    assert depth_at(depth, 10.4, 9.6) == pytest.approx(1.0)     # rounds to the pixel (10, 10)
    depth[7:14, 7:14] = 0.0
    assert np.isnan(depth_at(depth, 10, 10))


def test_lift_trace_uses_the_median_depth_around_each_waypoint():
    h, w = 480, 640
    k = Intrinsics(width=w, height=h, fx=600.0, fy=550.0, cx=320.0, cy=240.0)
    depth = np.full((h, w), 9.0, np.float32)
    # waypoint (128, 128) → pixel (128/255*639, 128/255*479) ≈ (320.75, 240.44) → window centre (321, 240)
    u, v = 128 / 255 * 639, 128 / 255 * 479
    win = np.full(49, 3.0, np.float32)
    win[:24] = 1.0
    win[24] = 1.5
    depth[237:244, 318:325] = win.reshape(7, 7)
    # waypoint (0, 255) → pixel (0, 479): a corner with no depth at all
    depth[470:, :10] = 0.0
    # waypoint (255, 0) → pixel (639, 0): a corner window clipped at the image edge, one valid value
    depth[:4, 636:] = np.nan
    depth[0, 639] = 0.8

    pts = lift_trace([(128, 128), (0, 255), (255, 0)], depth, k)
    assert pts.shape == (3, 3) and pts.dtype == np.float32
    np.testing.assert_allclose(pts[0], [(u - 320) / 600 * 1.5, (v - 240) / 550 * 1.5, 1.5], rtol=1e-5)
    assert np.all(np.isnan(pts[1]))
    np.testing.assert_allclose(pts[2], [(639 - 320) / 600 * 0.8, (0 - 240) / 550 * 0.8, 0.8], rtol=1e-5)


def test_lift_trace_scales_model_space_to_the_depth_image():
    depth = np.full((4, 6), 2.0, np.float32)
    pts = lift_trace([(0, 0), (255, 255)], depth, K_SMALL)
    np.testing.assert_allclose(pts, [[(0 - 2.5) / 2 * 2, (0 - 1.5) / 4 * 2, 2.0],
                                     [(5 - 2.5) / 2 * 2, (3 - 1.5) / 4 * 2, 2.0]], rtol=1e-6)
