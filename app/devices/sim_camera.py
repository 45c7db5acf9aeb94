"""A ``Camera`` backed by a ``SimCell`` camera: RGB, aligned metric depth, D435-like intrinsics.

The sim has no frame clock of its own: a frame is rendered on demand from the cell's current state
and stamped with sim time. ``read``/``async_read`` render now; ``read_latest`` (the UI's call)
re-renders only when sim time moved and the cell is free, otherwise it returns the cached frame.
"""
from __future__ import annotations

import threading

import numpy as np

from app.devices.camera import CameraError, CameraStatus, Frame
from app.sim import scene
from app.sim.cell import SimCell


class SimCamera:
    def __init__(self, cell: SimCell, camera: str = "front", width: int | None = None,
                 height: int | None = None):
        if camera not in scene.CAMERAS:
            raise CameraError(f"unknown sim camera {camera!r}; have {', '.join(scene.CAMERAS)}")
        self.cell = cell
        self.camera = camera
        dw, dh = cell.default_size(camera)
        self.width, self.height = int(width or dw), int(height or dh)
        self.serial = f"sim-{camera}"
        self._status = CameraStatus.DISCONNECTED
        self._latest: Frame | None = None
        self._index = 0
        self._lock = threading.Lock()

    @property
    def status(self) -> CameraStatus:
        return self._status

    def connect(self) -> None:
        max_w, max_h = scene.MAX_RENDER_SIZE
        if not (0 < self.width <= max_w and 0 < self.height <= max_h):
            self._status = CameraStatus.FAILED
            raise CameraError(f"{self.serial}: {self.width}x{self.height} is outside 1..{max_w}x{max_h}")
        self._status = CameraStatus.STREAMING

    def disconnect(self) -> None:
        self._status = CameraStatus.DISCONNECTED

    def _render(self) -> Frame:
        if self._status is not CameraStatus.STREAMING:
            raise CameraError(f"{self.serial} is {self._status.value}; call connect() first")
        with self.cell.lock:
            rgb, depth, k = self.cell.render(self.camera, self.width, self.height)
            t = self.cell.time
            pose = self.cell.camera_pose(self.camera)
        t_world_cam = np.eye(4)
        t_world_cam[:3, :3], t_world_cam[:3, 3] = pose.rotation, pose.position
        with self._lock:
            self._index += 1
            frame = Frame(rgb=rgb, depth=depth, intrinsics=k, timestamp=t, serial=self.serial,
                          index=self._index, depth_scale=0.001,
                          extras={"camera": self.camera, "T_world_camera": t_world_cam})
            self._latest = frame
        return frame

    def read(self, timeout_s: float = 1.0) -> Frame:
        return self._render()

    def async_read(self, timeout_s: float = 1.0) -> Frame:
        return self._render()

    def read_latest(self) -> Frame | None:
        if self._status is not CameraStatus.STREAMING:
            return self._latest
        latest = self._latest
        if latest is not None and latest.timestamp == self.cell.time:
            return latest
        if not self.cell.lock.acquire(blocking=False):   # a control step is running: don't wait
            return latest
        try:
            return self._render()
        finally:
            self.cell.lock.release()

    def __enter__(self) -> "SimCamera":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()
