"""Build the configured camera and arm. Real-arm SDKs are imported only when asked for."""
from __future__ import annotations

from ..config import ArmConfig, CameraConfig, SimTaskConfig
from .arm import Arm
from .camera import Camera


def make_sim_cell(camera: CameraConfig, task: SimTaskConfig, instruction: str):
    """The simulated cell, reset to the task named by ``task.task`` or by the instruction."""
    from ..sim.cell import SimCell, SimConfig
    from ..sim.tasks import get_task

    spec = get_task(task.task or instruction)
    cell = SimCell(SimConfig(seed=task.seed, task=spec.name, front_size=(camera.width, camera.height)))
    cell.reset(task.seed, spec.name)
    return cell


def make_camera(cfg: CameraConfig, cell=None) -> Camera:
    if cfg.type == "sim":
        from .sim_camera import SimCamera
        if cell is None:
            raise ValueError("the sim camera needs the simulated cell")
        return SimCamera(cell, cfg.sim_camera, cfg.width, cfg.height)
    if cfg.type == "realsense":
        from .realsense import RealSenseCamera, RealSenseConfig
        return RealSenseCamera(RealSenseConfig(serial=cfg.serial, width=cfg.width, height=cfg.height, fps=cfg.fps))
    from .realsense import RecordingCamera
    return RecordingCamera(cfg.path)


def make_arm(cfg: ArmConfig, cell=None) -> Arm | None:
    if cfg.type == "none":
        return None
    if cfg.type == "sim":
        from .sim_arm import SimArm
        if cell is None:
            raise ValueError("the sim arm needs the simulated cell")
        return SimArm(cell)
    if cfg.type == "xarm":
        from .xarm import XArm, XArmConfig
        return XArm(XArmConfig(ip=cfg.host) if cfg.host else XArmConfig())
    if cfg.type == "ur":
        from .ur import URConfig, UniversalRobot
        return UniversalRobot(URConfig(host=cfg.host) if cfg.host else URConfig())
    from .franka import Franka, FrankaConfig
    return Franka(FrankaConfig(host=cfg.host) if cfg.host else FrankaConfig())
