"""Configs chosen on the command line in lerobot's dotted style (``--camera.type=realsense``).

Validated in ``__post_init__`` so a typo fails before any device is opened.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CAMERA_TYPES = ("sim", "realsense", "recording")
ARM_TYPES = ("none", "sim", "xarm", "ur", "franka")


@dataclass
class CameraConfig:
    type: str = "sim"
    serial: str | None = None          # realsense: which device (None = the only one)
    path: str | None = None            # recording: a .bag (older SDKs) or .db3 (2.59) file
    width: int = 640
    height: int = 480
    fps: int = 30
    sim_camera: str = "front"          # sim: "front" or "wrist"
    wrist_serial: str | None = None    # realsense: the wrist camera, for a model that takes a wrist image
    wrist_path: str | None = None      # recording: the wrist camera's recording, likewise

    def __post_init__(self) -> None:
        if self.type not in CAMERA_TYPES:
            raise ValueError(f"--camera.type={self.type!r}: choose one of {', '.join(CAMERA_TYPES)}")
        if self.type == "recording" and not self.path:
            raise ValueError("--camera.type=recording needs --camera.path=FILE")
        if self.path and self.type == "recording" and not Path(self.path).is_file():
            raise ValueError(f"--camera.path: no such recording: {self.path}")
        if self.wrist_path and self.type == "recording" and not Path(self.wrist_path).is_file():
            raise ValueError(f"--camera.wrist_path: no such recording: {self.wrist_path}")
        if min(self.width, self.height, self.fps) <= 0:
            raise ValueError("--camera.width/height/fps must be positive")


@dataclass
class ArmConfig:
    type: str = "sim"
    host: str | None = None            # real arms: controller address (each adapter has a default)
    enable: bool = False               # headless only: the operator's explicit go for motion

    def __post_init__(self) -> None:
        if self.type not in ARM_TYPES:
            raise ValueError(f"--arm.type={self.type!r}: choose one of {', '.join(ARM_TYPES)}")


@dataclass
class SimTaskConfig:
    task: str | None = None            # sim task name; None: taken from the instruction
    seed: int = 0


# the embedded default: the small MolmoAct trained on the simulated cell by ``python -m app.sim.train``
DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[1] / "assets" / "sim-molmoact"


@dataclass
class ModelConfig:
    path: str = str(DEFAULT_MODEL_PATH)
    device: str = "cpu"
    unnorm_key: str | None = None      # None: the checkpoint's only (or first) key

    def __post_init__(self) -> None:
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"--model.device={self.device!r}: use cpu or cuda[:N]")


def default_data_dir() -> Path:
    """Where the station keeps the operator's data (XDG: ``$XDG_DATA_HOME/molmoact-station``)."""
    import os
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "molmoact-station"


@dataclass
class FeedbackConfig:
    path: str = field(default_factory=lambda: str(default_data_dir() / "feedback.sqlite"))
    operator: str = "operator"


@dataclass
class StationConfig:
    camera: CameraConfig = field(default_factory=CameraConfig)
    arm: ArmConfig = field(default_factory=ArmConfig)
    sim: SimTaskConfig = field(default_factory=SimTaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)

    def __post_init__(self) -> None:
        if self.arm.type == "sim" and self.camera.type != "sim":
            raise ValueError("--arm.type=sim needs --camera.type=sim (both are the simulated cell)")
