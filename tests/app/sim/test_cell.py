"""SimCell: resets, end-effector control, gripper, projection into the front camera."""
import numpy as np
import pytest

from app.sim import scene
from app.sim.cell import to_model_space


def test_reset_is_seeded(cell):
    cell.reset(5, "pick_red_cube")
    a = {n: cell.object_position(n) for n in scene.OBJECTS}
    cell.step([0.02, 0, 0, 0, 0, 0, 1])
    cell.reset(5)
    b = {n: cell.object_position(n) for n in scene.OBJECTS}
    cell.reset(6)
    c = {n: cell.object_position(n) for n in scene.OBJECTS}
    assert all(np.allclose(a[n], b[n], atol=1e-6) for n in a)
    assert not all(np.allclose(a[n], c[n], atol=1e-3) for n in a)
    assert cell.time == 0.0 and cell.steps == 0
    assert np.allclose(cell.joint_positions, scene.HOME_Q, atol=0.01)


def test_objects_rest_on_the_table_after_reset(cell):
    cell.reset(3, "place_red_cube_in_bowl")
    for name, spec in scene.OBJECTS.items():
        assert cell.object_position(name)[2] == pytest.approx(spec.half_height, abs=0.003)
    assert np.linalg.norm(cell.data.qvel) < 0.05


def test_step_advances_one_control_period(cell):
    cell.reset(0, "pick_red_cube")
    cell.step(np.zeros(7))
    assert cell.time == pytest.approx(cell.config.control_period)


def test_zero_action_holds_still(cell):
    cell.reset(0, "pick_red_cube")
    p0 = cell.ee_pose().position
    for _ in range(20):
        cell.step(np.zeros(7))
    assert np.linalg.norm(cell.ee_pose().position - p0) < 0.001


def test_workspace_keeps_the_tcp_above_the_table(cell):
    cell.reset(0, "pick_red_cube")
    for _ in range(30):
        cell.step([0.0, 0.0, -0.05, 0, 0, 0, 0])
    assert cell.ee_pose().position[2] >= cell.config.workspace_low[2] - 0.003


def test_gripper_closes_and_opens(cell):
    cell.reset(0, "pick_red_cube")
    assert cell.gripper_measured < 0.05
    for _ in range(3):
        cell.step([0, 0, 0, 0, 0, 0, 1.0])
    assert cell.gripper_measured > 0.95
    for _ in range(3):
        cell.step([0, 0, 0, 0, 0, 0, 0.0])
    assert cell.gripper_measured < 0.05


def test_non_finite_action_is_refused(cell):
    with pytest.raises(ValueError):
        cell.step([np.nan, 0, 0, 0, 0, 0, 0])


def test_to_model_space():
    px = np.array([[0, 0], [639, 479], [319.5, 239.5], [-20, 900]])
    assert to_model_space(px, 640, 480).tolist() == [[0, 0], [255, 255], [128, 128], [0, 255]]
    assert to_model_space([[100, 50]], 320, 240).tolist() == [[80, 53]]


def test_a_point_that_does_not_project_is_outside_the_trace_space():
    """A point behind the camera projects to NaN: it becomes (-1, -1) on every CPU, where casting the NaN to int
    would give a huge negative number on x86 and 0 (the image's corner, a valid point) elsewhere."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no "invalid value encountered in cast"
        out = to_model_space([[np.nan, np.nan], [639, 479], [np.nan, 10.0], [np.inf, 5.0]], 640, 480)
    assert out.tolist() == [[-1, -1], [255, 255], [-1, -1], [-1, -1]]


def test_projection_lands_on_the_object_in_the_image(cell):
    cell.reset(4, "pick_red_cube")
    w, h = 640, 480
    rgb, depth, k = cell.render("front", w, h)
    pose = cell.camera_pose("front")
    for name in ("red_cube", "blue_block", "green_cylinder", "yellow_ball"):
        centre = cell.object_position(name)
        top = centre + [0, 0, scene.OBJECTS[name].half_height * 0.9]     # visible from above
        u, v = np.rint(cell.project(top, w, h)[0]).astype(int)
        colour = rgb[v, u].astype(int)
        want = np.array(scene.OBJECTS[name].rgba[:3]) * 255
        assert np.argmax(colour) == np.argmax(want) or name == "yellow_ball", (name, colour)
        z_cam = pose.world_to_camera(top[None])[0, 2]
        assert depth[v, u] == pytest.approx(z_cam, abs=0.02)
    # red is red, yellow is red+green without blue
    u, v = np.rint(cell.project(cell.object_position("yellow_ball") + [0, 0, 0.02], w, h)[0]).astype(int)
    r, g, b = rgb[v, u].astype(int)
    assert r > 120 and g > 100 and b < 90


def test_project_matches_intrinsics_and_flags_points_behind(cell):
    k = cell.intrinsics("front", 320, 240)
    pose = cell.camera_pose("front")
    on_axis = pose.position + pose.rotation[:, 2] * 1.0
    assert np.allclose(cell.project(on_axis, 320, 240)[0], [k.cx, k.cy])
    behind = pose.position - pose.rotation[:, 2]
    assert np.isnan(cell.project(behind)).all()


def test_left_is_minus_y_and_image_left(cell):
    """The push task's 'left': −y in the base frame is the left of the front camera's image."""
    p = np.array([0.5, 0.0, 0.0])
    u0 = cell.project(p)[0, 0]
    u_left = cell.project(p - [0, 0.1, 0])[0, 0]
    assert u_left < u0 - 20


def _in_wrist_view_around(c, beside_m: float, above_m: float, directions: int = 8) -> int:
    """In how many of ``directions`` around the red cube, with the open hand ``beside_m`` beside it and
    ``above_m`` above its centre, the cube's centre is inside the wrist image."""
    from app.sim.datagen import WRIST_SIZE, in_view
    seen = 0
    for angle in np.linspace(0, 2 * np.pi, directions, endpoint=False):
        c.reset(1234, "pick_red_cube")
        cube = c.object_position("red_cube")
        goal = cube + np.array([beside_m * np.cos(angle), beside_m * np.sin(angle), above_m])
        for _ in range(40):
            a = np.zeros(7)
            a[:3] = np.clip(goal - c.ee_pose().position, -0.025, 0.025)
            c.step(a)
        assert np.linalg.norm(c.ee_pose().position - goal) < 0.005
        uv = in_view(c.project(c.object_position("red_cube")[None], *WRIST_SIZE, camera="wrist"), *WRIST_SIZE)
        seen += bool(np.isfinite(uv).all())
    return seen


def test_a_d405_wide_wrist_camera_keeps_an_object_beside_the_fingers_in_view(cell):
    """Why ``--wrist-fovy 58``: 4 cm beside the cube and 8 cm above it, the D435's 42.6° view loses the cube
    in 3 of 8 directions around it; a D405's 58° keeps it in all of them. The field of view is the
    MuJoCo camera's, so the intrinsics (and the projection) follow it."""
    from app.sim.cell import SimCell, SimConfig
    from app.sim.datagen import WRIST_SIZE
    wide = SimCell(SimConfig(wrist_fovy_deg=scene.D405_FOVY_DEG))
    try:
        w, h = WRIST_SIZE
        fy = lambda c: c.intrinsics("wrist", w, h).fy      # noqa: E731
        assert fy(cell) == pytest.approx((h / 2) / np.tan(np.radians(scene.FOVY_DEG) / 2))
        assert fy(wide) == pytest.approx((h / 2) / np.tan(np.radians(58.0) / 2))
        assert wide.intrinsics("front", 640, 480).fy == pytest.approx(cell.intrinsics("front", 640, 480).fy)
        assert _in_wrist_view_around(cell, 0.04, 0.08) <= 5
        assert _in_wrist_view_around(wide, 0.04, 0.08) == 8
    finally:
        wide.close()


def test_which_wrist_camera_a_checkpoint_saw():
    """Checkpoints from before the field was recorded saw the D435's view."""
    assert scene.wrist_fovy_of(None) == scene.wrist_fovy_of({"seed": 0}) == scene.FOVY_DEG
    assert scene.wrist_fovy_of({"wrist_fovy_deg": 58}) == 58.0
