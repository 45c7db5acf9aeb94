"""Rendering: shapes, intrinsics from fovy, and depth checked against MuJoCo ray casts."""
import math

import numpy as np
import pytest

from app.sim.gl import mujoco
from app.sim.render import depth_from_zbuffer

FLAT = (int(mujoco.mjtGeom.mjGEOM_BOX), int(mujoco.mjtGeom.mjGEOM_PLANE))


@pytest.mark.parametrize("camera,size", [("front", (320, 240)), ("front", (640, 480)), ("wrist", (320, 240))])
def test_render_shapes_and_intrinsics(cell, camera, size):
    cell.reset(0, "pick_red_cube")
    w, h = size
    rgb, depth, k = cell.render(camera, w, h)
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    assert depth.shape == (h, w) and depth.dtype == np.float32
    fovy = cell.model.cam_fovy[cell.model.camera(camera).id]
    assert k.fy == pytest.approx((h / 2) / math.tan(math.radians(fovy) / 2))
    assert k.fx == pytest.approx(k.fy)
    assert (k.cx, k.cy) == ((w - 1) / 2, (h - 1) / 2)
    assert (k.width, k.height) == (w, h)
    assert rgb.std() > 10           # an actual picture, not a cleared buffer


def test_front_camera_is_d435_like(cell):
    k = cell.intrinsics("front", 640, 480)
    assert k.fx == pytest.approx(615.0, abs=0.01)


def _ray_depth(cell, camera, k, u, v, with_geom=False):
    pose = cell.camera_pose(camera)
    ray = np.array([(u - k.cx) / k.fx, (v - k.cy) / k.fy, 1.0])
    d = pose.rotation @ ray
    gid = np.zeros(1, np.int32)
    dist = mujoco.mj_ray(cell.model, cell.data, pose.position, d / np.linalg.norm(d), None, 1, -1, gid)
    # ray length · cos(angle to the optical axis) = z-depth
    z = 0.0 if dist < 0 else dist / np.linalg.norm(ray)
    return (z, int(gid[0])) if with_geom else z


@pytest.mark.parametrize("camera", ["front", "wrist"])
def test_depth_matches_ray_casts(cell, camera):
    cell.reset(1, "pick_red_cube")
    w, h = 320, 240
    _, depth, k = cell.render(camera, w, h)
    rng = np.random.default_rng(0)
    pixels = [(w // 2, h // 2), (0, h - 1), (w - 1, h - 1), (w // 3, 2 * h // 3)]
    pixels += [tuple(p) for p in rng.integers(0, [w, h], (30, 2))]
    hits = flat_hits = 0
    for u, v in pixels:
        expected, geom = _ray_depth(cell, camera, k, u, v, with_geom=True)
        corners = [_ray_depth(cell, camera, k, u + du, v + dv) for du in (-0.5, 0.5) for dv in (-0.5, 0.5)]
        if max(corners) - min(corners) > 0.01:
            continue                     # a depth edge inside this pixel: no single right answer
        if expected == 0.0:
            assert depth[v, u] == 0.0
            continue
        hits += 1
        # Flat faces (boxes, planes) are exact to float32 precision, so a half-pixel error in K or a
        # wrong z-buffer map (both mm-sized) fails; curved geoms are drawn tessellated (< 1 mm off).
        flat = int(cell.model.geom_type[geom]) in FLAT
        flat_hits += flat
        assert depth[v, u] == pytest.approx(expected, abs=2e-4 if flat else 1.5e-3), (u, v)
    assert hits >= 20 and flat_hits >= 10


def test_background_reads_zero(cell):
    """Where nothing is drawn, depth reads 0 (invalid), as a D435 reports it. The front camera looks down
    at the table and sees only the table and the floor, so this test turns it level for one render."""
    cell.reset(0, "pick_red_cube")
    cam = cell.model.camera("front").id
    saved = cell.model.cam_quat[cam].copy()
    level = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])   # columns: image x = +y, up = +z,
    quat = np.zeros(4)                                                     # looking along -x at the robot
    mujoco.mju_mat2Quat(quat, level.ravel())
    try:
        cell.model.cam_quat[cam] = quat
        mujoco.mj_forward(cell.model, cell.data)
        _, depth, k = cell.render("front", 320, 240)
        assert _ray_depth(cell, "front", k, 0, 0) == 0.0     # the top corner sees past the floor
        assert depth[0, 0] == 0.0
        assert (depth == 0).mean() > 0.02 and (depth > 0).mean() > 0.02      # the table and the arm: drawn
        assert depth.max() < cell.config.max_depth_m
    finally:
        cell.model.cam_quat[cam] = saved
        mujoco.mj_forward(cell.model, cell.data)
    _, depth, _ = cell.render("front", 320, 240)
    assert (depth > 0).all()                                 # the usual view: table and floor everywhere


def test_depth_from_zbuffer_inverts_reversed_z():
    near, far = 0.01, 100.0
    zb = np.array([[1.0, 0.0]], np.float32)
    d = depth_from_zbuffer(zb, near, far, max_depth_m=10.0)
    assert d[0, 0] == pytest.approx(near) and d[0, 1] == 0.0      # near plane; nothing drawn
    z = 2.0                                                       # forward map of a 2 m point
    zb2 = np.array([[near * (far - z) / (z * (far - near))]])
    assert depth_from_zbuffer(zb2, near, far, 10.0)[0, 0] == pytest.approx(z, rel=1e-5)
    assert depth_from_zbuffer(zb2, near, far, 1.5)[0, 0] == 0.0    # beyond range: invalid
