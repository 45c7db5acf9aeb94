"""Build the configured camera and arm. Real-arm SDKs are imported only when asked for."""
from __future__ import annotations

from ..config import ArmConfig, CameraConfig, SimTaskConfig
from .arm import Arm
from .camera import Camera


def make_sim_cell(camera: CameraConfig, task: SimTaskConfig, instruction: str, model_training: dict | None = None):
    """The simulated cell, reset to the task named by ``task.task`` or by the instruction; its wrist camera
    as the model's training saw it (``model_training``: the checkpoint's ``training`` record)."""
    from ..sim.cell import SimCell, SimConfig
    from ..sim.scene import wrist_fovy_of
    from ..sim.tasks import get_task

    spec = get_task(task.task or instruction)
    cell = SimCell(SimConfig(seed=task.seed, task=spec.name, front_size=(camera.width, camera.height),
                             wrist_fovy_deg=wrist_fovy_of(model_training)))
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


def make_extra_cameras(cfg: CameraConfig, names: "tuple[str, ...] | list[str]", cell=None) -> list[Camera]:
    """The cameras for a model's images after the first (``LoadedCheckpoint.cameras[1:]``): on the sim
    cell its camera of that name; on a real cell only a wrist camera, given by serial or recording."""
    cameras: list[Camera] = []
    for name in names:
        if cfg.type == "sim":
            from app.sim import scene
            from .sim_camera import SimCamera
            if name not in scene.CAMERAS:
                raise ValueError(f"the model takes a {name!r} image; the simulated cell has {', '.join(scene.CAMERAS)}")
            cameras.append(SimCamera(cell, name))
            continue
        if name != "wrist":
            raise ValueError(f"the model takes a {name!r} image; a real cell can add only a wrist camera")
        if cfg.type == "realsense":
            if not cfg.wrist_serial:
                raise ValueError("the model takes a wrist image too: pass --camera.wrist_serial=SERIAL")
            from .realsense import RealSenseCamera, RealSenseConfig
            cameras.append(RealSenseCamera(RealSenseConfig(serial=cfg.wrist_serial, width=cfg.width,
                                                           height=cfg.height, fps=cfg.fps)))
        else:
            if not cfg.wrist_path:
                raise ValueError("the model takes a wrist image too: pass --camera.wrist_path=FILE")
            from .realsense import RecordingCamera
            cameras.append(RecordingCamera(cfg.wrist_path))
    return cameras
