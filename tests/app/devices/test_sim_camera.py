"""SimCamera satisfies the Camera contract: aligned metric depth, intrinsics, sim-time stamps."""
import numpy as np
import pytest

from app.devices.camera import Camera, CameraError, CameraStatus, Frame
from app.devices.sim_camera import SimCamera
from app.sim.cell import SimCell


@pytest.fixture(scope="module")
def cell():
    c = SimCell()
    yield c
    c.close()


def test_is_a_camera(cell):
    cam = SimCamera(cell, "front", 320, 240)
    assert isinstance(cam, Camera)
    assert cam.serial == "sim-front"
    assert SimCamera(cell, "wrist").serial == "sim-wrist"


def test_unknown_camera_and_bad_size_are_refused(cell):
    with pytest.raises(CameraError):
        SimCamera(cell, "ceiling")
    cam = SimCamera(cell, "front", 4000, 3000)
    with pytest.raises(CameraError):
        cam.connect()
    assert cam.status is CameraStatus.FAILED


def test_read_needs_connect(cell):
    cam = SimCamera(cell, "front", 160, 120)
    assert cam.status is CameraStatus.DISCONNECTED
    with pytest.raises(CameraError):
        cam.read()
    assert cam.read_latest() is None


@pytest.mark.parametrize("name,size", [("front", (320, 240)), ("wrist", (160, 120))])
def test_frames(cell, name, size):
    cell.reset(0, "pick_red_cube")
    with SimCamera(cell, name, *size) as cam:
        assert cam.status is CameraStatus.STREAMING
        f = cam.read()
        assert isinstance(f, Frame)
        w, h = size
        assert f.rgb.shape == (h, w, 3) and f.depth.shape == (h, w) and f.depth.dtype == np.float32
        assert (f.intrinsics.width, f.intrinsics.height) == size
        assert f.intrinsics.K[0, 2] == (w - 1) / 2
        assert f.timestamp == cell.time and f.serial == f"sim-{name}"
        valid = f.depth[f.depth > 0]
        assert valid.size > 0.5 * w * h and 0.03 < valid.min() and valid.max() < 10.0
        t = f.extras["T_world_camera"]
        assert np.allclose(t[:3, :3] @ t[:3, :3].T, np.eye(3), atol=1e-6)
        g = cam.async_read()
        assert g.index == f.index + 1
    assert cam.status is CameraStatus.DISCONNECTED


def test_timestamp_is_sim_time_and_read_latest_follows_the_sim(cell):
    cell.reset(0, "pick_red_cube")
    with SimCamera(cell, "front", 160, 120) as cam:
        first = cam.read_latest()
        assert first is not None and first.timestamp == 0.0
        assert cam.read_latest() is first                  # nothing moved: no new render
        cell.step([0.05, 0, 0, 0, 0, 0, 0])
        second = cam.read_latest()
        assert second.timestamp == pytest.approx(cell.config.control_period)
        assert second.index == first.index + 1
        assert not np.array_equal(second.rgb, first.rgb)    # the arm moved in the picture
