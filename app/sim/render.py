"""Offscreen RGB + metric depth from one MuJoCo render pass, with the camera's intrinsics.

``mujoco.Renderer`` renders twice for RGB and depth; here one ``mjr_render`` fills both buffers and
``mjr_readPixels`` reads them together, which halves the cost on llvmpipe. MuJoCo >= 3 uses a
reversed-Z float depth buffer (``mjDEPTH_ZEROFAR``: 1 at the near plane, 0 at the far plane);
inverting the projection gives the z-depth along the optical axis, d = f·n / (n + zb·(f − n)).
Pixels where nothing was drawn (zb == 0) or beyond ``max_depth_m`` read 0, as a D435 reports
invalid depth.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from app.devices.camera import Intrinsics
from app.sim.gl import mujoco


@dataclass(frozen=True)
class CameraPose:
    """World pose of a camera in the OpenCV convention (x right, y down, z forward)."""
    position: np.ndarray   # (3,)
    rotation: np.ndarray   # (3, 3): columns are the camera axes in world coordinates

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, float) - self.position) @ self.rotation


def intrinsics_for(model: mujoco.MjModel, camera_id: int, width: int, height: int) -> Intrinsics:
    """Pinhole intrinsics of a MuJoCo camera: square pixels, fovy sets fy, principal point centred.

    Pixel centres sit at integer coordinates (OpenCV), so the image centre is ((W-1)/2, (H-1)/2).
    """
    f = (height / 2.0) / math.tan(math.radians(float(model.cam_fovy[camera_id])) / 2.0)
    return Intrinsics(width=width, height=height, fx=f, fy=f, cx=(width - 1) / 2.0,
                      cy=(height - 1) / 2.0, model="none")


def camera_pose(data: mujoco.MjData, camera_id: int) -> CameraPose:
    """MuJoCo cameras look along -z with +y up; flip y and z for the OpenCV convention."""
    rot = data.cam_xmat[camera_id].reshape(3, 3) * np.array([1.0, -1.0, -1.0])
    return CameraPose(position=data.cam_xpos[camera_id].copy(), rotation=rot)


def depth_from_zbuffer(zb: np.ndarray, near: float, far: float, max_depth_m: float) -> np.ndarray:
    """Reversed-Z buffer values in [0, 1] → metric z-depth (float32), 0 where invalid."""
    z = zb.astype(np.float64)
    depth = (far * near) / (near + z * (far - near))
    depth[(z <= 0.0) | (depth > max_depth_m)] = 0.0
    return depth.astype(np.float32)


class OffscreenRenderer:
    """One GL context + MuJoCo render context for a model; renders any camera at any size up to
    the model's offscreen framebuffer. Thread-safe: each call binds the context for its duration."""

    def __init__(self, model: mujoco.MjModel, max_depth_m: float = 10.0, max_geom: int = 2000):
        self.model = model
        self.max_depth_m = max_depth_m
        self._lock = threading.Lock()
        self._width = int(model.vis.global_.offwidth)
        self._height = int(model.vis.global_.offheight)
        self._gl = mujoco.GLContext(self._width, self._height)
        # as_current() binds the context only for the block and restores whatever was bound before
        # (usually nothing), so any thread may render next and a host GL context is left alone.
        with self._gl.as_current():
            self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100.value)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self._ctx)
            self._ctx.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(model, maxgeom=max_geom)
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED

    def render(self, data: mujoco.MjData, camera: str, width: int,
               height: int) -> tuple[np.ndarray, np.ndarray, Intrinsics]:
        if not (0 < width <= self._width and 0 < height <= self._height):
            raise ValueError(f"render size {width}x{height} outside 1..{self._width}x{self._height}")
        cam_id = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam_id < 0:
            raise ValueError(f"unknown camera {camera!r}")
        rgb = np.empty((height, width, 3), np.uint8)
        zb = np.empty((height, width), np.float32)
        with self._lock:
            if self._ctx is None:
                raise RuntimeError("renderer is closed")
            self._camera.fixedcamid = cam_id
            with self._gl.as_current():
                mujoco.mjv_updateScene(self.model, data, self._option, None, self._camera,
                                       mujoco.mjtCatBit.mjCAT_ALL.value, self._scene)
                rect = mujoco.MjrRect(0, 0, width, height)
                mujoco.mjr_render(rect, self._scene, self._ctx)
                mujoco.mjr_readPixels(rgb, zb, rect, self._ctx)
        extent = float(self.model.stat.extent)
        near = float(self.model.vis.map.znear) * extent
        far = float(self.model.vis.map.zfar) * extent
        depth = depth_from_zbuffer(np.flipud(zb), near, far, self.max_depth_m)
        return np.ascontiguousarray(np.flipud(rgb)), depth, intrinsics_for(self.model, cam_id, width, height)

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                with self._gl.as_current():
                    self._ctx.free()
                self._ctx = None
                self._gl.free()
