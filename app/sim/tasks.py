"""Tasks of the simulated cell: instruction, seeded layout, success check and a scripted expert.

"Left" is −y in the base frame, which is also the left of the front camera's image (the front
camera looks back at the robot along −x, so image right is +y).

Every task lays out all objects and the bowl (the others are distractors), non-overlapping, inside
the arm's comfortable reach, from a seed. The expert is a waypoint script: each step it outputs a
7-D action toward its current waypoint, plus the trace the model is trained on later: the future
TCP path (current TCP, then the remaining waypoints) resampled to ≤ 5 evenly spaced points and
projected into the front camera, in MolmoAct's 0..255 image space.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from app.sim import scene
from app.sim.transforms import matrix_to_rpy, rot_z, rotation_error, rotvec_to_matrix

if TYPE_CHECKING:  # the cell imports this module; only type hints go the other way
    from app.sim.cell import SimCell

LIFT_SUCCESS_M = 0.05
PUSH_SUCCESS_M = 0.08
REGION_X = (0.36, 0.62)
REGION_Y = (-0.24, 0.24)
DOWN = np.diag([1.0, -1.0, -1.0])        # TCP pointing down, hand x along world x (yaw 0)
TRACE_POINTS = 5
TRANSIT_M = 0.04                 # Expert.in_transit: this far from the current waypoint
EXPERTS = ("script", "servo")             # Task.make_expert's kinds
FUNNEL_HEIGHT_M = 0.12   # ServoPickExpert: how high above the grasp point it travels while far from the object
FUNNEL_START_M = 0.04    # ... the horizontal distance from the object where its descent begins
FUNNEL_END_M = 0.005     # ... and where the descent reaches the grasp height
CLOSE_M = 0.008          # ... this close to the grasp point (xy and z), it closes the fingers
DESCENT_SPEED_M = 0.025  # ... metres per step within FUNNEL_START_M
LIFT_SPEED_M = 0.03
EMPTY_CLOSED = 0.8       # gripper_measured above this: the fingers met each other, nothing between them
LIFT_HEIGHT_M = 0.15     # above the grasp point: lifted, done (the waypoint script's height too)


Layout = dict[str, tuple[float, float, float]]   # name -> (x, y, yaw)


def _footprint(name: str) -> float:
    return scene.BOWL_FOOTPRINT if name == scene.BOWL else scene.OBJECTS[name].footprint


@dataclass(frozen=True)
class Task:
    name: str
    instruction: str
    kind: str                     # "pick" | "place" | "push"
    target: str                   # object the instruction is about

    # --- layout ------------------------------------------------------------------------------
    def sample_layout(self, rng: np.random.Generator, max_tries: int = 2000) -> Layout:
        """Place the target first (in its task-specific area), then the others around it."""
        names = [self.target] + [n for n in (*scene.OBJECTS, scene.BOWL) if n != self.target]
        for _ in range(max_tries):
            placed: Layout = {}
            for name in names:
                for _ in range(200):
                    xy = self._sample_xy(name, rng)
                    if self._fits(name, xy, placed):
                        placed[name] = (float(xy[0]), float(xy[1]), self._sample_yaw(name, rng))
                        break
                else:
                    break
            if len(placed) == len(names):
                return placed
        raise RuntimeError(f"could not lay out task {self.name}")

    def _sample_xy(self, name: str, rng: np.random.Generator) -> np.ndarray:
        if name == self.target and self.kind == "push":
            return np.array([rng.uniform(0.42, 0.58), rng.uniform(0.0, 0.16)])
        if name == self.target:
            return np.array([rng.uniform(0.4, 0.58), rng.uniform(-0.18, 0.18)])
        return np.array([rng.uniform(*REGION_X), rng.uniform(*REGION_Y)])

    @staticmethod
    def _sample_yaw(name: str, rng: np.random.Generator) -> float:
        if name == scene.BOWL or scene.OBJECTS[name].geom in ("sphere", "cylinder"):
            return 0.0
        return float(rng.uniform(-np.pi / 2, np.pi / 2))

    def _fits(self, name: str, xy: np.ndarray, placed: Layout) -> bool:
        for other, (ox, oy, _) in placed.items():
            # the open gripper spans ~6 cm either side of the target: keep its neighbours clear
            margin = 0.06 if self.target in (name, other) else 0.025
            if np.hypot(xy[0] - ox, xy[1] - oy) < _footprint(name) + _footprint(other) + margin:
                return False
            if self.kind == "push" and other == self.target:
                # keep the push corridor (block to 16 cm left of it, and the pusher's start) clear
                if abs(xy[0] - ox) < _footprint(name) + 0.07 and oy - 0.2 < xy[1] < oy + 0.13:
                    return False
        return True

    # --- success -----------------------------------------------------------------------------
    def success(self, cell: "SimCell") -> bool:
        p = cell.object_position(self.target)
        p0 = cell.initial_positions[self.target]
        if self.kind == "pick":
            return bool(p[2] - p0[2] >= LIFT_SUCCESS_M)
        if self.kind == "push":
            return bool(p0[1] - p[1] >= PUSH_SUCCESS_M)
        # place: resting inside the bowl (xy within its wall, low) and released by the gripper
        b = cell.object_position(scene.BOWL)
        inside = np.hypot(*(p[:2] - b[:2])) < scene.BOWL_INNER_RADIUS - 0.015
        low = p[2] - b[2] < scene.BOWL_FLOOR + scene.OBJECTS[self.target].half_height + 0.02
        held = any(cell.touching(pad, self.target) for pad in scene.PAD_GEOMS)
        return bool(inside and low and not held)

    def make_expert(self, cell: "SimCell", kind: str = "script") -> "Expert":
        """The waypoint script; with ``kind="servo"`` a pick task gets ``ServoPickExpert`` (a law of the
        state) instead (place and push keep the script)."""
        if kind not in EXPERTS:
            raise ValueError(f"unknown expert {kind!r}; known: {', '.join(EXPERTS)}")
        return ServoPickExpert(self, cell) if kind == "servo" and self.kind == "pick" else Expert(self, cell)


def _task_list() -> list[Task]:
    tasks = [Task(f"pick_{o.name}", f"pick up the {o.name.replace('_', ' ')}", "pick", o.name)
             for o in scene.OBJECTS.values()]
    tasks.append(Task("place_red_cube_in_bowl", "put the red cube in the bowl", "place", "red_cube"))
    tasks.append(Task("push_blue_block_left", "push the blue block to the left", "push", "blue_block"))
    return tasks


TASKS: dict[str, Task] = {t.name: t for t in _task_list()}


def get_task(name: str) -> Task:
    if name in TASKS:
        return TASKS[name]
    for t in TASKS.values():          # the instruction text works too
        if t.instruction == name.strip().lower():
            return t
    raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}")


# --- expert ---------------------------------------------------------------------------------------
@dataclass
class Waypoint:
    position: np.ndarray
    yaw: float
    gripper: float
    speed: float = 0.04           # max metres per control step toward this waypoint
    tolerance: float = 0.004      # metres
    dwell: int = 0                # control steps to wait once reached (gripper motion, settling)


@dataclass
class ExpertStep:
    action: np.ndarray            # (7,)
    trace: np.ndarray             # (k<=5, 2) int in 0..255, front camera, first = current TCP
    done: bool
    waypoint: int


@dataclass
class Expert:
    """Scripted policy for one episode; plans from the object poses at its first step."""
    task: Task
    cell: "SimCell"
    max_rotation: float = 0.25    # rad per control step
    waypoints: list[Waypoint] = field(default_factory=list)
    index: int = 0
    _dwell_left: int = -1

    def _grasp_yaw(self, name: str, current_yaw: float) -> float:
        """Keep the hand's yaw when the object fits between the open fingers at it; otherwise close the
        fingers (hand y axis) across the object's narrow side.

        Why keep it: the model sees the scene through 6x6 image tokens and cannot read an object's yaw
        well, so a turn it cannot predict would be noise in its labels, and a pause above the object
        while the hand turns would teach it to hover. Every object but the blue block in its worst
        orientations (8.06 cm across its diagonal) fits the 8 cm opening at any yaw.
        """
        spec = scene.OBJECTS[name]
        if spec.geom in ("sphere", "cylinder"):
            return current_yaw
        obj_yaw = self.cell.object_yaw(name)
        if width_across_fingers(spec.size, obj_yaw - current_yaw) <= 2 * scene.FINGER_OPEN:
            return current_yaw
        period = np.pi / 2 if spec.name == "red_cube" else np.pi
        base = obj_yaw - np.pi / 2          # finger axis along the object's x (its narrow side)
        k = np.round((current_yaw - base) / period)
        return float(base + k * period)

    def plan(self) -> list[Waypoint]:
        t, cell = self.task, self.cell
        yaw0 = _yaw_of(cell.ee_pose().rotation)
        obj = cell.object_position(t.target)
        if t.kind == "push":
            spec = scene.OBJECTS[t.target]
            oy = cell.object_yaw(t.target)
            half_y = abs(np.sin(oy)) * spec.size[0] + abs(np.cos(oy)) * spec.size[1]
            start_y = obj[1] + half_y + 0.035
            z = 0.025
            yaw = -np.pi / 2    # closed fingers spread along x: a 4 cm wide pusher
            return [
                Waypoint(np.array([obj[0], start_y, 0.12]), yaw, 1.0),
                Waypoint(np.array([obj[0], start_y, z]), yaw, 1.0, speed=0.03),
                Waypoint(np.array([obj[0], obj[1] - 0.13 + half_y, z]), yaw, 1.0, speed=0.02),
                Waypoint(np.array([obj[0], obj[1] - 0.13 + half_y, 0.12]), yaw, 1.0, dwell=1),
            ]
        yaw = self._grasp_yaw(t.target, yaw0)
        grasp_z = self.grasp_z()
        above = np.array([obj[0], obj[1], grasp_z + 0.12])
        grasp = np.array([obj[0], obj[1], grasp_z])
        lifted = np.array([obj[0], obj[1], grasp_z + LIFT_HEIGHT_M])
        pick = [
            Waypoint(above, yaw, 0.0, tolerance=0.006),
            Waypoint(grasp, yaw, 0.0, speed=0.025, tolerance=0.003, dwell=1),
            Waypoint(grasp, yaw, 1.0, dwell=4),
            Waypoint(lifted, yaw, 1.0, speed=0.03, dwell=3),
        ]
        if t.kind == "pick":
            return pick
        bowl = cell.object_position(scene.BOWL)
        carry = np.array([bowl[0], bowl[1], grasp_z + 0.15])
        drop = np.array([bowl[0], bowl[1], scene.BOWL_FLOOR + grasp_z + 0.02])
        return pick[:-1] + [
            Waypoint(lifted, yaw, 1.0, speed=0.03, tolerance=0.01),
            Waypoint(carry, yaw, 1.0, speed=0.04, tolerance=0.006),
            Waypoint(drop, yaw, 1.0, speed=0.025, dwell=1),
            Waypoint(drop, yaw, 0.0, dwell=4),
            Waypoint(carry, yaw, 0.0, speed=0.04, dwell=1),
        ]

    @property
    def done(self) -> bool:
        return bool(self.waypoints) and self.index >= len(self.waypoints)

    def act(self) -> ExpertStep:
        if not self.waypoints:
            self.waypoints = self.plan()
        pose = self.cell.ee_pose()
        self._advance(pose.position, pose.rotation)
        if self.done:
            last = self.waypoints[-1]
            action = np.zeros(7)
            action[6] = last.gripper
            return ExpertStep(action, self.trace(pose.position), True, self.index)
        return ExpertStep(self._toward(self.waypoints[self.index], pose), self.trace(pose.position), False,
                          self.index)

    def _toward(self, wp: Waypoint, pose) -> np.ndarray:
        """The 7-D action one control step toward ``wp`` (speed- and turn-limited)."""
        err = wp.position - pose.position
        dist = float(np.linalg.norm(err))
        dpos = err if dist <= wp.speed else err * (wp.speed / dist)
        rot_err = rotation_error(rot_z(wp.yaw) @ DOWN, pose.rotation)
        ang = float(np.linalg.norm(rot_err))
        if ang > self.max_rotation:
            rot_err *= self.max_rotation / ang
        return np.concatenate([dpos, matrix_to_rpy(rotvec_to_matrix(rot_err)), [wp.gripper]])

    def _advance(self, pos: np.ndarray, rot: np.ndarray) -> None:
        """Move past reached waypoints (after their dwell)."""
        while self.index < len(self.waypoints):
            wp = self.waypoints[self.index]
            reached = (np.linalg.norm(wp.position - pos) <= wp.tolerance and
                       np.linalg.norm(rotation_error(rot_z(wp.yaw) @ DOWN, rot)) < 0.08)
            if not reached:
                return
            if self._dwell_left < 0:
                self._dwell_left = wp.dwell
            if self._dwell_left > 0:
                self._dwell_left -= 1
                return
            self._dwell_left = -1
            self.index += 1

    def future_path(self, current: np.ndarray) -> np.ndarray:
        """Current TCP then the positions of the waypoints still ahead, (k, 3)."""
        ahead = [w.position for w in self.waypoints[self.index:]]
        return np.array([current, *ahead])

    def trace(self, current: np.ndarray, n: int = TRACE_POINTS) -> np.ndarray:
        return self.project_path(self.future_path(current), n)

    def project_path(self, path: np.ndarray, n: int = TRACE_POINTS) -> np.ndarray:
        """A 3-D TCP path as a trace: ``n`` points by arc length, in the front camera's 0..255 space."""
        pts = resample_path(path, n)
        w, h = self.cell.config.front_size
        return self.cell.to_model_space(self.cell.project(pts, w, h), w, h)

    def grasp_z(self) -> float:
        """The TCP height that grasps the target (its centre, but not so low the fingers hit the table)."""
        return max(scene.OBJECTS[self.task.target].half_height, 0.02)

    def holding(self) -> bool:
        """Both finger pads on the target with the fingers commanded closed."""
        return self.cell.gripper_command > 0.5 and all(self.cell.touching(pad, self.task.target)
                                                       for pad in scene.PAD_GEOMS)

    def in_transit(self) -> bool:
        """Far from the current waypoint: executed-action noise there shows the model off-path states,
        while near waypoints (grasp, release) the expert must be able to settle within its tolerance."""
        if self.done or not self.waypoints:
            return False
        wp = self.waypoints[self.index]
        return float(np.linalg.norm(wp.position - self.cell.ee_pose().position)) > TRANSIT_M


GRASP_XY_M = 0.006      # StateExpert: this close to the grasp point (xy and z), it closes the fingers
CORRIDOR_M = 0.015      # ... this close (xy) above the object, it descends straight to the grasp point


@dataclass
class StateExpert(Expert):
    """The pick expert planned from the state alone at every step, not from how far its script got.

    The scripted ``Expert`` ticks its waypoints off in order, so from a state its script never
    reached (the model's own, for DAgger-style labels) it can ask for the wrong thing: a fresh one
    re-opens a hand that holds the object, or climbs back to its approach point from just above the
    object. This one reads the phase from the cell: holding the object → lift it; at the grasp point →
    close; fingers closed on nothing → open and rise to the approach point; within ``CORRIDOR_M`` above
    the object → descend onto it; otherwise → approach from above. The waypoints and speeds are the
    scripted expert's, so both label the states they share alike.
    """

    def plan(self) -> list[Waypoint]:
        t, cell = self.task, self.cell
        if t.kind != "pick":
            raise ValueError(f"StateExpert labels pick tasks, not {t.kind!r} ({t.name})")
        pos = cell.ee_pose().position
        approach, grasp, close, lift = Expert.plan(self)
        if self.holding():
            return [replace_position(lift, np.array([pos[0], pos[1], lift.position[2]]))]
        xy_err = float(np.linalg.norm(pos[:2] - grasp.position[:2]))
        if xy_err <= GRASP_XY_M and abs(pos[2] - grasp.position[2]) <= GRASP_XY_M:
            return [close, lift]
        if cell.gripper_measured > 0.5 or cell.gripper_command > 0.5:     # closed (or closing) on nothing
            return [approach, grasp, close, lift]
        if xy_err <= CORRIDOR_M and pos[2] <= approach.position[2] + 0.01:
            return [grasp, close, lift]
        return [approach, grasp, close, lift]

    def act(self) -> ExpertStep:
        pose = self.cell.ee_pose()
        self.waypoints, self.index = self.plan(), 0
        first = self.waypoints[0]
        if len(self.waypoints) == 1 and np.linalg.norm(first.position - pose.position) <= first.tolerance:
            action = np.zeros(7)            # lifted: done, holding
            action[6] = 1.0
            self.index = 1
            return ExpertStep(action, self.trace(pose.position), True, self.index)
        return ExpertStep(self._toward(first, pose), self.trace(pose.position), False, self.index)


def replace_position(wp: Waypoint, position: np.ndarray) -> Waypoint:
    return Waypoint(position, wp.yaw, wp.gripper, wp.speed, wp.tolerance, wp.dwell)


@dataclass
class ServoPickExpert(Expert):
    """The pick task as a law of the state at every step, with no phases to tick off.

    Every step it moves toward the object's grasp point along a funnel: its height above the grasp
    point is a function of the horizontal distance to the object (``FUNNEL_HEIGHT_M`` from
    ``FUNNEL_START_M`` out, the grasp height at ``FUNNEL_END_M``), and the horizontal part of its
    action always closes the remaining horizontal error.

    Why: the waypoint script goes above the object, then straight down with no horizontal motion once
    within 6 mm. A model that sees the cell through a few pixels per centimetre cannot tell 6 mm from
    4 cm. It learned to switch to the straight descent too early, and a descent has no horizontal
    correction to learn from, so it stopped 3-4 cm beside the object with its fingers on top of it
    (2026-12-05 rollouts of the GPU-trained checkpoint bundled then). Here the action is always the
    error that remains, so an early guess of the phase still moves toward the object, and every state,
    the model's own included, has a label that corrects it.

    Holding the object: lift it. At the grasp point: close. Fingers closed on nothing: open and rise.
    """
    _yaw: float | None = None

    def funnel_target(self, p: np.ndarray, obj: np.ndarray) -> np.ndarray:
        e = float(np.hypot(*(p[:2] - obj[:2])))
        frac = float(np.clip((e - FUNNEL_END_M) / (FUNNEL_START_M - FUNNEL_END_M), 0.0, 1.0))
        return np.array([obj[0], obj[1], self.grasp_z() + FUNNEL_HEIGHT_M * frac])

    def _speed(self, p: np.ndarray, obj: np.ndarray) -> float:
        return Waypoint.speed if np.hypot(*(p[:2] - obj[:2])) > FUNNEL_START_M else DESCENT_SPEED_M

    def at_grasp(self, p: np.ndarray, obj: np.ndarray) -> bool:
        return bool(np.hypot(*(p[:2] - obj[:2])) <= CLOSE_M and abs(p[2] - self.grasp_z()) <= CLOSE_M)

    def phase(self) -> str:
        """'lift' | 'close' | 'open' | 'approach', read from the cell."""
        cell, p = self.cell, self.cell.ee_pose().position
        if self.holding():
            return "lift"
        closed = cell.gripper_command > 0.5 or cell.gripper_measured > 0.5
        if self.at_grasp(p, cell.object_position(self.task.target)) and cell.gripper_measured < EMPTY_CLOSED:
            return "close"
        return "open" if closed else "approach"

    @property
    def done(self) -> bool:
        return self.holding() and self.cell.ee_pose().position[2] >= self.grasp_z() + LIFT_HEIGHT_M - 0.01

    def in_transit(self) -> bool:
        """Away from the grasp (and not carrying the object): where noise shows the model off-path states."""
        p, obj = self.cell.ee_pose().position, self.cell.object_position(self.task.target)
        near = np.hypot(*(p[:2] - obj[:2])) < 0.02 and p[2] < self.grasp_z() + 0.04
        return not near and not self.holding()

    def act(self) -> ExpertStep:
        cell, pose = self.cell, self.cell.ee_pose()
        p, obj = pose.position, cell.object_position(self.task.target)
        if self._yaw is None:
            self._yaw = self._grasp_yaw(self.task.target, _yaw_of(pose.rotation))
        lift_z = self.grasp_z() + LIFT_HEIGHT_M
        phase = self.phase()
        if phase == "lift":
            path = [p, np.array([p[0], p[1], lift_z])]
            wp = Waypoint(path[1], self._yaw, 1.0, speed=LIFT_SPEED_M)
        elif phase == "close":
            path = [p, np.array([obj[0], obj[1], lift_z])]
            wp = Waypoint(p, self._yaw, 1.0)
        elif phase == "open":
            up = p + np.array([0.0, 0.0, 0.02])
            path = [p, *self.funnel_path(up, obj), np.array([obj[0], obj[1], lift_z])]
            wp = Waypoint(up, self._yaw, 0.0)
        else:
            path = [p, *self.funnel_path(p, obj)[1:], np.array([obj[0], obj[1], lift_z])]
            wp = Waypoint(self.funnel_target(p, obj), self._yaw, 0.0, speed=self._speed(p, obj))
        done = self.done
        if done:
            action = np.zeros(7)
            action[6] = 1.0
        else:
            action = self._toward(wp, pose)
        return ExpertStep(action, self.project_path(np.array(path)), done, 0)

    def funnel_path(self, p: np.ndarray, obj: np.ndarray, max_steps: int = 40) -> list[np.ndarray]:
        """Where the law would take the TCP from ``p`` (no physics): p, ..., the grasp point."""
        pts = [np.asarray(p, float)]
        for _ in range(max_steps):
            q = pts[-1]
            if self.at_grasp(q, obj):
                break
            err = self.funnel_target(q, obj) - q
            speed = self._speed(q, obj)
            dist = float(np.linalg.norm(err))
            pts.append(q + (err if dist <= speed else err * (speed / dist)))
        return pts


def width_across_fingers(half_size: tuple[float, ...], relative_yaw: float) -> float:
    """A box's extent along the hand's y axis (the fingers' closing axis) when the box is turned
    ``relative_yaw`` from the hand."""
    sx, sy = half_size[0], half_size[1]
    return float(2.0 * (sx * abs(np.sin(relative_yaw)) + sy * abs(np.cos(relative_yaw))))


def resample_path(path: np.ndarray, n: int) -> np.ndarray:
    """``n`` points evenly spaced by arc length along a polyline, from its first point to its last
    (just the first point when the path has no length)."""
    path = np.asarray(path, float)
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    total = float(seg.sum())
    if total < 1e-6:
        return path[:1]
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.linspace(0.0, total, n)
    return np.stack([np.interp(s, cum, path[:, i]) for i in range(path.shape[1])], axis=1)


def _yaw_of(rot: np.ndarray) -> float:
    return float(np.arctan2(rot[1, 0], rot[0, 0]))


def run_expert(cell: "SimCell", max_steps: int = 150,
               on_step: Callable[[ExpertStep], None] | None = None, kind: str = "script") -> bool:
    """Roll the task's expert out on ``cell`` until it is done; return the task's success."""
    expert = cell.task.make_expert(cell, kind)
    for _ in range(max_steps):
        step = expert.act()
        if on_step is not None:
            on_step(step)
        if step.done:
            break
        cell.step(step.action)
    return cell.success()
