"""Write RGB-D frames as a RealSense recording (``.db3``, what pyrealsense2 2.59 writes) through the SDK's
own software device and recorder, so they play back through the live pipeline path (``RecordingCamera``).

Uses: turning simulated frames into a 30 fps "camera" for the display benchmark and demos, and
test fixtures; both sensors share the colour geometry, so depth is already aligned.
"""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Iterable

import numpy as np

from app.devices.camera import Intrinsics


def write_recording(path: str | Path, frames: Iterable[tuple[np.ndarray, np.ndarray]], k: Intrinsics,
                    depth_scale: float = 0.001, serial: str = "000000000", fps: int = 30,
                    name: str = "Synthetic D435") -> Path:
    """``frames``: (rgb HxWx3 uint8, depth HxW uint16 in ``depth_scale`` units) pairs."""
    import pyrealsense2 as rs

    path = Path(path)
    if path.suffix != ".db3":
        raise ValueError(f"pyrealsense2 2.59 records rosbag2 only: {path} must end in .db3")
    w, h = k.width, k.height
    sd = rs.software_device()
    sd.register_info(rs.camera_info.name, name)
    sd.register_info(rs.camera_info.serial_number, serial)
    depth_sensor, color_sensor = sd.add_sensor("Stereo Module"), sd.add_sensor("RGB Camera")
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = w, h, k.fx, k.fy, k.cx, k.cy
    intr.model, intr.coeffs = rs.distortion.brown_conrady, [0.0] * 5

    def stream(kind, uid, bpp, fmt):
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid = kind, 0, uid
        vs.width, vs.height, vs.fps, vs.bpp, vs.fmt, vs.intrinsics = w, h, fps, bpp, fmt, intr
        return vs

    dp = depth_sensor.add_video_stream(stream(rs.stream.depth, 0, 2, rs.format.z16), True)
    cp = color_sensor.add_video_stream(stream(rs.stream.color, 1, 3, rs.format.rgb8), True)
    depth_sensor.add_read_only_option(rs.option.depth_units, depth_scale)
    sd.create_matcher(rs.matchers.default)
    ext = rs.extrinsics()
    ext.rotation, ext.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0.0, 0.0, 0.0]
    dp.register_extrinsics_to(cp, ext)

    recorder = rs.recorder(str(path), sd)
    sensors = recorder.query_sensors()
    for s in sensors:
        s.open(s.get_stream_profiles()[0])
        s.start(lambda f: None)
    for i, (rgb, depth) in enumerate(frames):
        if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8 or depth.shape != (h, w) or depth.dtype != np.uint16:
            raise ValueError(f"frame {i}: need rgb {h}x{w}x3 uint8 and depth {h}x{w} uint16")
        for sensor, prof, arr, bpp in ((depth_sensor, dp, depth, 2), (color_sensor, cp, rgb, 3)):
            f = rs.software_video_frame()
            f.pixels, f.stride, f.bpp = np.ascontiguousarray(arr), w * bpp, bpp
            f.timestamp, f.domain, f.frame_number = i * 1000 / fps, rs.timestamp_domain.hardware_clock, i
            f.profile = prof.as_video_stream_profile()
            if bpp == 2:
                f.depth_units = depth_scale
            sensor.on_video_frame(f)
    for s in sensors:
        s.stop()
        s.close()
    del sensors, recorder                        # the file is finalised only when these go
    gc.collect()
    return path


__all__ = ["write_recording"]
