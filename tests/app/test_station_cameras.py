"""A checkpoint that takes several images gets them from the station's cameras, in its order."""
from __future__ import annotations

import numpy as np
import pytest

from app.config import CameraConfig, ModelConfig, StationConfig
from app.devices.factory import make_extra_cameras
from app.session import SessionConfig
from app.station import StationError, open_session
from model.checkpoint import CheckpointError, load_checkpoint
from tests.checkpoints import TINY_MODEL, tiny_with_cameras

class SeenImages:
    """Wraps the real decoder and keeps the image sizes of every observation it reasons on."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.sizes: list[list[tuple[int, int]]] = []

    def reason(self, obs):
        self.sizes.append([im.shape[:2] for im in obs.images])
        return self.inner.reason(obs)

    def steer_text(self, trace):
        return self.inner.steer_text(trace)

    def steer_visual(self, obs, trace):
        return self.inner.steer_visual(obs, trace)


def test_a_front_and_wrist_checkpoint_reasons_on_both_sim_cameras(tmp_path):
    path = tiny_with_cameras(tmp_path, ["front", "wrist"])
    assert load_checkpoint(path).cameras == ("front", "wrist")
    s = open_session(StationConfig(model=ModelConfig(path=str(path))), SessionConfig())
    try:
        assert [c.camera for c in s.extra_cameras] == ["wrist"]
        s.policy = SeenImages(s.policy)
        s.start(frames=False)
        s.step()
        s.wait_idle(30)
        assert s.policy.sizes == [[(480, 640), (240, 320)]]
    finally:
        s.close()
    assert all(c.status.value == "disconnected" for c in s.extra_cameras)


def test_a_one_image_checkpoint_gets_no_extra_camera():
    s = open_session(StationConfig(model=ModelConfig(path=str(TINY_MODEL))))
    try:
        assert load_checkpoint(TINY_MODEL).cameras == ("front",) and s.extra_cameras == []
    finally:
        s.close()


def test_a_camera_the_sim_lacks_fails_before_anything_runs(tmp_path):
    path = tiny_with_cameras(tmp_path, ["front", "top"])
    with pytest.raises(StationError, match="'top' image; the simulated cell has front, wrist"):
        open_session(StationConfig(model=ModelConfig(path=str(path))))


@pytest.mark.parametrize("camera, flag", [(CameraConfig(type="realsense"), "--camera.wrist_serial"),
                                          (CameraConfig(type="recording", path=__file__), "--camera.wrist_path")])
def test_a_real_cell_must_name_its_wrist_camera(camera, flag):
    with pytest.raises(ValueError, match=flag):
        make_extra_cameras(camera, ("wrist",))
    with pytest.raises(ValueError, match="only a wrist camera"):
        make_extra_cameras(camera, ("top",))


@pytest.mark.parametrize("cameras", [[], "front", ["front", "front"], ["front", ""], [["front"]]])
def test_malformed_cameras_in_the_config_are_refused(tmp_path, cameras):
    with pytest.raises(CheckpointError, match="'cameras'"):
        load_checkpoint(tiny_with_cameras(tmp_path, cameras))
