"""The camera contract shared by RealSense (live or recorded) and the simulated cell.

Reads as lerobot has them: ``read()`` blocks for the next frame, ``async_read()`` returns the newest
frame not yet consumed (control loops), ``read_latest()`` never blocks (the UI). Unlike lerobot, a
``Frame`` always carries depth *aligned to colour*, in metres, with the colour intrinsics.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, runtime_checkable

import numpy as np


class CameraStatus(str, Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"   # unplugged or stalled: a retry loop is running
    ENDED = "ended"                 # a recording reached its end
    FAILED = "failed"


class CameraError(RuntimeError):
    """No device, wrong serial, unreadable recording: said once, clearly."""


@dataclass(frozen=True)
class Intrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    model: str = "none"                         # distortion model name as the SDK reports it
    coeffs: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


@dataclass
class Frame:
    rgb: np.ndarray              # HxWx3 uint8
    depth: np.ndarray            # HxW float32 metres, aligned to rgb; 0 = invalid
    intrinsics: Intrinsics       # of the colour stream (depth is aligned to it)
    timestamp: float             # seconds (device clock for RealSense, sim time for the sim)
    serial: str
    index: int = 0               # frame counter of this camera
    depth_scale: float = 0.001   # metres per raw depth unit the device reported (informational)
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        h, w = self.rgb.shape[:2]
        if self.rgb.dtype != np.uint8 or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError("Frame.rgb must be HxWx3 uint8")
        if self.depth.shape != (h, w) or self.depth.dtype != np.float32:
            raise ValueError(f"Frame.depth must be float32 {h}x{w} (aligned to colour), got "
                             f"{self.depth.dtype} {self.depth.shape}")


@runtime_checkable
class Camera(Protocol):
    serial: str

    @property
    def status(self) -> CameraStatus: ...

    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    def read(self, timeout_s: float = 1.0) -> Frame: ...

    def async_read(self, timeout_s: float = 1.0) -> Frame: ...

    def read_latest(self) -> Frame | None: ...

    def __enter__(self) -> "Camera": ...

    def __exit__(self, *exc) -> None: ...
