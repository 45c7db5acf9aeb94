"""``SimCell``: the simulated robot cell (physics, end-effector control, cameras, tasks).

Control: each ``step(action)`` adds the 7-D end-effector delta to a *goal* pose (so ten 1 cm steps
move exactly 10 cm, and a zero action holds still without drift), solves IK for joint targets and
runs one control period of physics. Within the period the joint targets are interpolated linearly
and fed forward with their velocity, so the PD servos track with almost no lag. The goal is kept
inside a workspace box and on a leash to the actual pose, so an arm blocked by the table or an
object does not wind up.

Frames: the arm's base is the world origin (table top is z = 0), so base frame == world frame.
Thread safety: one lock guards physics and rendering, so a camera thread and a control thread can
share a cell.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from app.devices.camera import Intrinsics
from app.sim import scene
from app.sim.gl import BACKEND, mujoco
from app.sim.ik import IKConfig, IKSolver
from app.sim.render import CameraPose, OffscreenRenderer, camera_pose, intrinsics_for
from app.sim.tasks import Task, get_task
from app.sim.transforms import matrix_to_rpy, rotation_error, rotvec_to_matrix, rpy_to_matrix

SHOULDER = np.array([0.0, 0.0, 0.333])   # joint 2's axis: the centre of the arm's reach


@dataclass
class SimConfig:
    seed: int = 0
    task: str = "pick_red_cube"
    control_hz: float = 10.0
    timestep: float = 0.002
    substeps: int | None = None              # per control step; None: derived from the rates
    interpolation_chunks: int = 10           # target updates per control period
    front_size: tuple[int, int] = (640, 480)  # (width, height)
    wrist_size: tuple[int, int] = (320, 240)
    wrist_fovy_deg: float = scene.FOVY_DEG   # the wrist camera's vertical field of view (see wrist_camera_xml)
    shadows: bool = False
    max_depth_m: float = 10.0                # beyond this, depth reads 0 (invalid), like a D435
    workspace_low: tuple[float, float, float] = (0.15, -0.5, 0.015)
    workspace_high: tuple[float, float, float] = (0.8, 0.5, 0.7)
    max_reach_m: float = 0.78                # flange to shoulder: keeps the arm off full stretch
    max_joint_speed: float = 2.5             # rad/s per joint (the Panda's are 2.2-2.6)
    goal_leash_m: float = 0.06               # the goal may lead the actual TCP by at most this
    goal_leash_rad: float = 0.5
    settle_s: float = 0.3                    # physics time run at reset so objects come to rest
    ik: IKConfig = field(default_factory=IKConfig)

    @property
    def control_period(self) -> float:
        return 1.0 / self.control_hz

    @property
    def steps_per_control(self) -> int:
        return self.substeps or max(1, round(self.control_period / self.timestep))


@dataclass
class EEPose:
    position: np.ndarray      # (3,) metres, base frame
    rotation: np.ndarray      # (3, 3)

    @property
    def rpy(self) -> np.ndarray:
        return matrix_to_rpy(self.rotation)


def to_model_space(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel coordinates → MolmoAct's 0..255 trace space: x/(W-1)*255, y/(H-1)*255, rounded, clamped.

    A point that does not project (NaN: behind the camera) becomes (-1, -1), outside the trace space, so that
    ``datagen.traceable`` sees it; casting the NaN itself to int is undefined (x86 gives a huge negative
    number, other CPUs 0, which would pass for the image's corner)."""
    p = np.asarray(pixels, float).reshape(-1, 2)
    scaled = p / np.array([width - 1.0, height - 1.0]) * 255.0
    # np.rint rounds halves to even, like Python's round() that model/decoder.py uses going back
    projects = np.isfinite(scaled).all(axis=1)
    out = np.full(scaled.shape, -1)
    out[projects] = np.clip(np.rint(scaled[projects]), 0, 255)
    return out


class SimCell:
    def __init__(self, config: SimConfig | None = None):
        self.config = cfg = config or SimConfig()
        self.gl_backend = BACKEND
        self.model = mujoco.MjModel.from_xml_string(
            scene.build_mjcf(cfg.timestep, cfg.shadows, cfg.wrist_fovy_deg))
        self.data = mujoco.MjData(self.model)
        self.lock = threading.RLock()
        m = self.model
        self._arm_qadr = np.array([m.joint(j).qposadr[0] for j in scene.ARM_JOINTS])
        self._arm_dadr = np.array([m.joint(j).dofadr[0] for j in scene.ARM_JOINTS])
        self._finger_qadr = np.array([m.joint(j).qposadr[0] for j in scene.FINGER_JOINTS])
        self._arm_act = np.array([m.actuator(a).id for a in scene.ARM_ACTUATORS])
        self._finger_act = np.array([m.actuator(a).id for a in scene.FINGER_ACTUATORS])
        kp = np.array([m.actuator(a).gainprm[0] for a in scene.ARM_ACTUATORS])
        kv = -np.array([m.actuator(a).biasprm[2] for a in scene.ARM_ACTUATORS])
        self._ff = kv / kp   # velocity feed-forward: ctrl = q_d + (kv/kp)·q̇_d cancels the damping lag
        self._site = m.site(scene.EE_SITE).id
        self.ik = IKSolver(m, scene.EE_SITE, scene.ARM_JOINTS, scene.JOINT_LIMITS, scene.HOME_Q, cfg.ik)
        self._renderer: OffscreenRenderer | None = None
        self.task: Task = get_task(cfg.task)
        self.seed = cfg.seed
        self.initial_positions: dict[str, np.ndarray] = {}
        self.steps = 0
        self.reset(cfg.seed, cfg.task)

    # --- episode -----------------------------------------------------------------------------
    def reset(self, seed: int | None = None, task: str | Task | None = None) -> None:
        """Arm at home with the gripper open, objects laid out by the task from ``seed``."""
        with self.lock:
            if task is not None:
                self.task = task if isinstance(task, Task) else get_task(task)
            self.seed = self.seed if seed is None else int(seed)
            m, d = self.model, self.data
            mujoco.mj_resetData(m, d)
            d.qpos[self._arm_qadr] = scene.HOME_Q
            d.qpos[self._finger_qadr] = scene.FINGER_OPEN
            layout = self.task.sample_layout(np.random.default_rng(self.seed))
            for name, (x, y, yaw) in layout.items():
                z = scene.OBJECTS[name].half_height if name in scene.OBJECTS else 0.0
                adr = m.joint(f"{name}_free").qposadr[0]
                d.qpos[adr:adr + 7] = [x, y, z + 0.001, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
            self._q_target = scene.HOME_Q.copy()
            self._grip_cmd = 0.0
            d.ctrl[self._arm_act] = self._q_target
            d.ctrl[self._finger_act] = scene.FINGER_OPEN
            mujoco.mj_forward(m, d)
            self._goal_pos = d.site_xpos[self._site].copy()
            self._goal_rot = d.site_xmat[self._site].reshape(3, 3).copy()
            mujoco.mj_step(m, d, nstep=max(1, round(self.config.settle_s / m.opt.timestep)))
            d.time = 0.0
            self.steps = 0
            self.initial_positions = {n: self.object_position(n) for n in layout}

    # --- control -----------------------------------------------------------------------------
    def step(self, action) -> None:
        """Apply one 7-D action [dx,dy,dz, droll,dpitch,dyaw (base frame), gripper 0..1] for one
        control period."""
        a = np.asarray(action, float).reshape(7)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"non-finite action {a}")
        cfg = self.config
        with self.lock:
            pos, rot = self._tcp()
            goal_rot = rpy_to_matrix(a[3:6]) @ self._goal_rot
            goal_pos = self.clamp_goal(self._goal_pos + a[:3], goal_rot)
            lead = goal_pos - pos
            if np.linalg.norm(lead) > cfg.goal_leash_m:
                goal_pos = pos + lead * (cfg.goal_leash_m / np.linalg.norm(lead))
            err = rotation_error(goal_rot, rot)
            if np.linalg.norm(err) > cfg.goal_leash_rad:
                goal_rot = rotvec_to_matrix(err * (cfg.goal_leash_rad / np.linalg.norm(err))) @ rot
            self._goal_pos, self._goal_rot = goal_pos, goal_rot
            q_new = self._solve(goal_pos, goal_rot)
            self._run_period(q_new, float(np.clip(a[6], 0.0, 1.0)))
            self.steps += 1

    def clamp_goal(self, goal_pos: np.ndarray, goal_rot: np.ndarray) -> np.ndarray:
        """The TCP goal kept inside the workspace box, and pulled in so the flange stays within
        ``max_reach_m`` of the shoulder (full stretch is singular)."""
        cfg = self.config
        goal_pos = np.clip(goal_pos, cfg.workspace_low, cfg.workspace_high)
        arm = goal_pos - goal_rot[:, 2] * scene.TCP_IN_HAND - SHOULDER
        dist = float(np.linalg.norm(arm))
        if dist > cfg.max_reach_m:
            goal_pos = goal_pos - arm * (1.0 - cfg.max_reach_m / dist)
        return goal_pos

    def _solve(self, goal_pos: np.ndarray, goal_rot: np.ndarray) -> np.ndarray:
        """IK from the last targets; never accept a worse pose, never exceed the joint speed."""
        q_old = self._q_target
        res = self.ik.solve(q_old, goal_pos, goal_rot)
        w = self.config.ik.rotation_weight
        p0, r0 = self.ik.forward(q_old)
        err_old = np.linalg.norm(goal_pos - p0) + w * np.linalg.norm(rotation_error(goal_rot, r0))
        if res.position_error + w * res.rotation_error > err_old:
            return q_old
        dq = res.q - q_old
        peak = float(np.max(np.abs(dq)))
        limit = self.config.max_joint_speed * self.config.control_period
        return q_old + dq * (limit / peak) if peak > limit else res.q

    def _run_period(self, q_new: np.ndarray, grip: float) -> None:
        m, d = self.model, self.data
        n = self.config.steps_per_control
        chunks = max(1, min(self.config.interpolation_chunks, n))
        q_old, g_old = self._q_target, self._grip_cmd
        qdot = (q_new - q_old) / (n * m.opt.timestep)
        done = 0
        for c in range(1, chunks + 1):
            upto = round(n * c / chunks)
            last = c == chunks
            # hold each chunk's mid-point target (its end point in the last chunk, to land exactly)
            frac = upto / n if last else (done + upto) / (2 * n)
            ff = 0.0 if last else self._ff * qdot
            d.ctrl[self._arm_act] = q_old + frac * (q_new - q_old) + ff
            d.ctrl[self._finger_act] = scene.FINGER_OPEN * (1.0 - (g_old + frac * (grip - g_old)))
            mujoco.mj_step(m, d, nstep=upto - done)
            done = upto
        self._q_target, self._grip_cmd = q_new, grip

    def hold(self) -> None:
        """Stop where the arm is: goal and joint targets snap to the current state (gripper kept)."""
        with self.lock:
            self._q_target = self.data.qpos[self._arm_qadr].copy()
            self.data.ctrl[self._arm_act] = self._q_target
            self._goal_pos, self._goal_rot = self._tcp()

    # --- state -------------------------------------------------------------------------------
    def _tcp(self) -> tuple[np.ndarray, np.ndarray]:
        return (self.data.site_xpos[self._site].copy(),
                self.data.site_xmat[self._site].reshape(3, 3).copy())

    def ee_pose(self) -> EEPose:
        with self.lock:
            pos, rot = self._tcp()
        return EEPose(pos, rot)

    def goal_pose(self) -> EEPose:
        with self.lock:
            return EEPose(self._goal_pos.copy(), self._goal_rot.copy())

    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def joint_positions(self) -> np.ndarray:
        with self.lock:
            return self.data.qpos[self._arm_qadr].copy()

    @property
    def gripper_command(self) -> float:
        return self._grip_cmd

    @property
    def gripper_measured(self) -> float:
        """0 fully open .. 1 fully closed, measured from the finger joints."""
        with self.lock:
            q = float(np.mean(self.data.qpos[self._finger_qadr]))
        return float(np.clip(1.0 - q / scene.FINGER_OPEN, 0.0, 1.0))

    def object_position(self, name: str) -> np.ndarray:
        with self.lock:
            return self.data.body(name).xpos.copy()

    def object_yaw(self, name: str) -> float:
        with self.lock:
            r = self.data.body(name).xmat.reshape(3, 3)
            return float(np.arctan2(r[1, 0], r[0, 0]))

    def touching(self, geom_a: str, geom_b: str) -> bool:
        """Whether two named geoms are in contact now."""
        a, b = self.model.geom(geom_a).id, self.model.geom(geom_b).id
        with self.lock:
            c = self.data.contact
            g1, g2 = c.geom1[:self.data.ncon], c.geom2[:self.data.ncon]
            return bool(np.any(((g1 == a) & (g2 == b)) | ((g1 == b) & (g2 == a))))

    def success(self) -> bool:
        return self.task.success(self)

    # --- cameras -----------------------------------------------------------------------------
    def default_size(self, camera: str) -> tuple[int, int]:
        return self.config.front_size if camera == "front" else self.config.wrist_size

    def render(self, camera: str = "front", width: int | None = None,
               height: int | None = None) -> tuple[np.ndarray, np.ndarray, Intrinsics]:
        """RGB (HxWx3 uint8), z-depth in metres (HxW float32, 0 = invalid) and the intrinsics."""
        dw, dh = self.default_size(camera)
        with self.lock:
            if self._renderer is None:
                self._renderer = OffscreenRenderer(self.model, self.config.max_depth_m)
            return self._renderer.render(self.data, camera, width or dw, height or dh)

    def intrinsics(self, camera: str = "front", width: int | None = None,
                   height: int | None = None) -> Intrinsics:
        dw, dh = self.default_size(camera)
        return intrinsics_for(self.model, self.model.camera(camera).id, width or dw, height or dh)

    def camera_pose(self, camera: str = "front") -> CameraPose:
        with self.lock:
            return camera_pose(self.data, self.model.camera(camera).id)

    def project(self, points_world, width: int | None = None, height: int | None = None,
                camera: str = "front") -> np.ndarray:
        """World points (N,3) → pixel coordinates (N,2) (NaN behind the camera)."""
        k = self.intrinsics(camera, width, height)
        pc = self.camera_pose(camera).world_to_camera(np.asarray(points_world, float).reshape(-1, 3))
        z = np.where(pc[:, 2] > 1e-6, pc[:, 2], np.nan)
        return np.stack([k.fx * pc[:, 0] / z + k.cx, k.fy * pc[:, 1] / z + k.cy], axis=1)

    @staticmethod
    def to_model_space(pixels, width: int, height: int) -> np.ndarray:
        return to_model_space(pixels, width, height)

    def close(self) -> None:
        with self.lock:
            if self._renderer is not None:
                self._renderer.close()
                self._renderer = None

    def __enter__(self) -> "SimCell":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
