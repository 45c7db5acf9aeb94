"""Damped-least-squares IK on the end-effector site (position + orientation).

Runs on a scratch ``MjData`` so the simulation state is never touched. Warm-started from the last
joint targets, a few iterations per control step are enough because the goal moves a few cm per
step; joint limits are enforced by clamping every iterate (with a small margin, so the servos never
ram the hard stops), and a null-space pull toward a rest posture keeps the redundant 7th DoF tame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.sim.gl import mujoco
from app.sim.transforms import rotation_error


@dataclass
class IKConfig:
    iterations: int = 8
    damping: float = 0.02            # λ of the DLS solve
    rotation_weight: float = 0.3     # metres of position error worth one radian of rotation error
    nullspace_gain: float = 0.05     # pull toward the rest posture per iteration
    max_joint_step: float = 0.25     # rad per iteration
    limit_margin: float = 0.01       # rad kept away from each joint limit
    tolerance_m: float = 2e-4        # stop early below this position (and scaled rotation) error


@dataclass
class IKResult:
    q: np.ndarray
    position_error: float            # metres
    rotation_error: float            # radians
    iterations: int


class IKSolver:
    def __init__(self, model: mujoco.MjModel, site: str, joints: tuple[str, ...],
                 limits: np.ndarray, rest_q: np.ndarray, config: IKConfig | None = None):
        self.model = model
        self.config = config or IKConfig()
        self._data = mujoco.MjData(model)
        self._site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
        jids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, j) for j in joints]
        self._qadr = np.array([model.jnt_qposadr[j] for j in jids])
        self._dadr = np.array([model.jnt_dofadr[j] for j in jids])
        m = self.config.limit_margin
        self.lower = np.asarray(limits, float)[:, 0] + m
        self.upper = np.asarray(limits, float)[:, 1] - m
        self.rest_q = np.asarray(rest_q, float)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Site position and rotation matrix at joint configuration ``q``."""
        d = self._data
        d.qpos[self._qadr] = q
        mujoco.mj_kinematics(self.model, d)
        return d.site_xpos[self._site].copy(), d.site_xmat[self._site].reshape(3, 3).copy()

    def solve(self, q_init: np.ndarray, target_pos: np.ndarray, target_rot: np.ndarray) -> IKResult:
        cfg = self.config
        w = cfg.rotation_weight
        q = np.clip(np.asarray(q_init, float).copy(), self.lower, self.upper)
        d = self._data
        lam2 = cfg.damping ** 2
        eye6, eye7 = np.eye(6), np.eye(len(q))
        it = 0
        for it in range(1, cfg.iterations + 1):
            pos, rot = self.forward(q)
            e_pos = target_pos - pos
            e_rot = rotation_error(target_rot, rot)
            if np.linalg.norm(e_pos) < cfg.tolerance_m and w * np.linalg.norm(e_rot) < cfg.tolerance_m:
                it -= 1
                break
            mujoco.mj_comPos(self.model, d)
            mujoco.mj_jacSite(self.model, d, self._jacp, self._jacr, self._site)
            jac = np.vstack([self._jacp[:, self._dadr], w * self._jacr[:, self._dadr]])
            err = np.concatenate([e_pos, w * e_rot])
            jjt_inv = np.linalg.inv(jac @ jac.T + lam2 * eye6)
            j_pinv = jac.T @ jjt_inv
            dq = j_pinv @ err + (eye7 - j_pinv @ jac) @ (cfg.nullspace_gain * (self.rest_q - q))
            peak = np.max(np.abs(dq))
            if peak > cfg.max_joint_step:
                dq *= cfg.max_joint_step / peak
            q = np.clip(q + dq, self.lower, self.upper)
        pos, rot = self.forward(q)
        return IKResult(q=q, position_error=float(np.linalg.norm(target_pos - pos)),
                        rotation_error=float(np.linalg.norm(rotation_error(target_rot, rot))),
                        iterations=it)
