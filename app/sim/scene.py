"""The cell's MJCF, written here with primitive geometry (no downloaded meshes).

A table whose top is the world's z = 0 plane, a 7-DoF arm with the Franka Panda's kinematics (the
standard link offsets and joint limits) standing at the origin (so base frame == world frame), a
parallel gripper that can grasp and lift, four coloured objects, a shallow bowl, a front camera
with RealSense-D435-like colour intrinsics and a wrist camera. Names used by the rest of
``app.sim`` are the module constants below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# --- names -------------------------------------------------------------------------------------
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
ARM_ACTUATORS = tuple(f"act{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_left", "finger_right")
FINGER_ACTUATORS = ("act_finger_left", "act_finger_right")
PAD_GEOMS = ("pad_left", "pad_right")
EE_SITE = "tcp"
CAMERAS = ("front", "wrist")

# --- robot -------------------------------------------------------------------------------------
JOINT_LIMITS = np.array([
    (-2.8973, 2.8973), (-1.7628, 1.7628), (-2.8973, 2.8973), (-3.0718, -0.0698),
    (-2.8973, 2.8973), (-0.0175, 3.7525), (-2.8973, 2.8973)])
HOME_Q = np.array([0.0, -0.5, 0.0, -2.3, 0.0, 1.8, math.pi / 4])
KP = (6000, 6000, 5000, 5000, 2500, 2500, 2000)   # position servo stiffness, N·m/rad
KV = (300, 300, 250, 250, 100, 100, 80)           # servo damping, N·m·s/rad
TORQUE = (174, 174, 174, 174, 24, 24, 24)         # 2x the Panda's rated torque: tracking headroom
FINGER_OPEN = 0.04                                # per finger, metres (8 cm total opening)
FINGER_FORCE = 40.0                               # per finger, N (Panda: 70 N continuous)
TCP_IN_HAND = 0.1034                              # flange-to-fingertip-centre, as on the Panda

# --- cameras -----------------------------------------------------------------------------------
D435_FX_640 = 615.0
FOVY_DEG = math.degrees(2 * math.atan(240 / D435_FX_640))   # ~42.6°: fy = 615 at 640x480
D405_FOVY_DEG = 58.0    # a RealSense D405's vertical field of view (87° x 58°); 73° across at 4:3
FRONT_CAM_POS = np.array([1.0, 0.0, 0.9])       # 53° down, 0.97 m from the work area's centre: a centimetre
FRONT_CAM_TARGET = np.array([0.42, 0.0, 0.12])   # on the table is 5-6 px of 640x480 (the objects fill more of it)
MAX_RENDER_SIZE = (1280, 960)                    # offscreen framebuffer (width, height)


@dataclass(frozen=True)
class ObjectSpec:
    """A graspable object: a free body with one geom; ``half_height`` is its resting centre z."""
    name: str
    colour: str
    geom: str          # MuJoCo geom type
    size: tuple[float, ...]
    rgba: tuple[float, float, float, float]
    mass: float
    half_height: float
    footprint: float   # radius of a circle that covers it on the table, for layout

    @property
    def body(self) -> str:
        return self.name


OBJECTS: dict[str, ObjectSpec] = {o.name: o for o in (
    ObjectSpec("red_cube", "red", "box", (0.025, 0.025, 0.025), (0.85, 0.12, 0.1, 1), 0.08, 0.025, 0.036),
    ObjectSpec("blue_block", "blue", "box", (0.02, 0.035, 0.025), (0.12, 0.3, 0.85, 1), 0.09, 0.025, 0.041),
    ObjectSpec("green_cylinder", "green", "cylinder", (0.025, 0.035), (0.15, 0.7, 0.25, 1), 0.08, 0.035,
               0.026),
    ObjectSpec("yellow_ball", "yellow", "sphere", (0.025,), (0.95, 0.82, 0.1, 1), 0.05, 0.025, 0.026),
)}
BOWL = "bowl"
BOWL_INNER_RADIUS = 0.075
BOWL_WALL_HEIGHT = 0.035
BOWL_FLOOR = 0.006          # thickness of the bowl's floor
BOWL_FOOTPRINT = 0.09


def _fmt(v) -> str:
    return " ".join(f"{x:.6g}" for x in np.atleast_1d(v))


def _look_at_xyaxes(pos: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> str:
    """MuJoCo cameras look along their -z with +y up: return the 'xyaxes' attribute for that."""
    fwd = target - pos
    fwd = fwd / np.linalg.norm(fwd)
    x = np.cross(fwd, up)
    x /= np.linalg.norm(x)
    y = np.cross(x, fwd)
    return _fmt(np.concatenate([x, y]))


def _object_xml(o: ObjectSpec) -> str:
    extra = ' condim="6" friction="1.2 0.01 0.0005"' if o.geom == "sphere" else ' condim="4"'
    return f"""
    <body name="{o.body}" pos="0.5 0 {o.half_height}">
      <freejoint name="{o.name}_free"/>
      <geom name="{o.name}" type="{o.geom}" size="{_fmt(o.size)}" rgba="{_fmt(o.rgba)}" mass="{o.mass}"
            class="object"{extra}/>
    </body>"""


def _bowl_xml(segments: int = 16) -> str:
    r_wall = BOWL_INNER_RADIUS + 0.005
    half_t = math.pi * r_wall / segments * 1.08
    walls = []
    for i in range(segments):
        a = 2 * math.pi * i / segments
        walls.append(
            f'<geom class="bowl" type="box" size="0.005 {half_t:.5f} {BOWL_WALL_HEIGHT / 2}" '
            f'pos="{r_wall * math.cos(a):.5f} {r_wall * math.sin(a):.5f} {BOWL_WALL_HEIGHT / 2}" '
            f'euler="0 0 {a:.5f}"/>')
    return f"""
    <body name="{BOWL}" pos="0.5 0.2 0">
      <freejoint name="{BOWL}_free"/>
      <geom name="bowl_floor" class="bowl" contype="1" conaffinity="1" type="cylinder"
            size="{r_wall + 0.005} {BOWL_FLOOR / 2}" pos="0 0 {BOWL_FLOOR / 2}" mass="0.15"/>
      {"".join(walls)}
    </body>"""


def _finger_xml(side: str, sign: int) -> str:
    """A finger sliding along the hand's ±y; its pad's inner face sits at y = ±q (q = opening)."""
    return f"""
          <body name="{side}_finger" pos="0 0 0.0584">
            <joint name="finger_{side}" type="slide" axis="0 {sign} 0" range="0 {FINGER_OPEN}"
                   damping="20" armature="0.01"/>
            <geom class="robot" type="box" size="0.01 0.006 0.031" pos="0 {sign * 0.014} 0.031"
                  rgba="0.2 0.2 0.22 1" mass="0.03"/>
            <geom name="pad_{side}" class="pad" type="box" size="0.009 0.004 0.016"
                  pos="0 {sign * 0.004} 0.045" mass="0.01"/>
          </body>"""


def wrist_camera_xml(fovy_deg: float = FOVY_DEG) -> str:
    """On a bracket beside the hand, looking down past the fingertips: the fingers in the lower corners
    and what is between them (a grasped object's centre stays in view) in the lower middle.

    ``fovy_deg``: the D435's ~42.6° by default; ``D405_FOVY_DEG`` (58°, the RealSense made for wrist mounting)
    keeps an object 4-6 cm beside the fingers in view where the narrower view loses it in about a third
    of the directions around it."""
    pos = np.array([0.06, 0.0, 0.03])
    target = np.array([0.0, 0.0, 0.12])
    return (f'<camera name="wrist" pos="{_fmt(pos)}" '
            f'xyaxes="{_look_at_xyaxes(pos, target, up=(1.0, 0.0, 0.0))}" fovy="{fovy_deg:.10g}"/>')


def wrist_fovy_of(training: dict | None) -> float:
    """The wrist camera a checkpoint of ``app.sim.train`` saw (its ``config.json`` records it; before it did,
    every run rendered the D435's field of view): the sim cell that runs it must render the same."""
    return float((training or {}).get("wrist_fovy_deg", FOVY_DEG))


def build_mjcf(timestep: float = 0.002, shadows: bool = False, wrist_fovy_deg: float = FOVY_DEG) -> str:
    """The whole cell as an MJCF string."""
    kin = [  # (pos, quat) of each link frame in its parent: the Panda's standard offsets
        ("0 0 0.333", "1 0 0 0"), ("0 0 0", "1 -1 0 0"), ("0 -0.316 0", "1 1 0 0"),
        ("0.0825 0 0", "1 1 0 0"), ("-0.0825 0.384 0", "1 -1 0 0"), ("0 0 0", "1 1 0 0"),
        ("0.088 0 0", "1 1 0 0")]
    shapes = [  # capsule/cylinder geoms of each link, in its own frame
        '<geom class="robot" type="capsule" fromto="0 0 -0.19 0 0 -0.02" size="0.06"/>',
        '<geom class="robot" type="capsule" fromto="0 0 0 0 -0.2 0" size="0.06"/>',
        '<geom class="robot" type="capsule" fromto="0 0 -0.15 0 0 0" size="0.06"/>'
        '<geom class="robot" type="capsule" fromto="0 0 -0.05 0.06 0 -0.05" size="0.05"/>',
        '<geom class="robot" type="capsule" fromto="0 0 0 -0.0825 0.12 0" size="0.055"/>',
        '<geom class="robot" type="capsule" fromto="0 0 -0.27 0 0 -0.03" size="0.05"/>'
        '<geom class="robot" type="capsule" fromto="0 0.08 -0.09 0 0.08 -0.26" size="0.035"/>',
        '<geom class="robot" type="capsule" fromto="0 0 -0.02 0.088 0 -0.02" size="0.045"/>',
        '<geom class="robot" type="cylinder" fromto="0 0 -0.03 0 0 0.09" size="0.045"/>',
    ]
    masses = (4.0, 3.0, 3.0, 2.5, 3.0, 1.5, 0.5)
    bodies_open, bodies_close = "", ""
    for i, ((pos, quat), shape, mass) in enumerate(zip(kin, shapes, masses), start=1):
        lo, hi = JOINT_LIMITS[i - 1]
        bodies_open += f"""
      <body name="link{i}" pos="{pos}" quat="{quat}" gravcomp="1">
        <inertial pos="0 0 0" mass="{mass}" diaginertia="{mass * 0.004} {mass * 0.004} {mass * 0.003}"/>
        <joint name="joint{i}" range="{lo} {hi}"/>
        {shape}"""
        bodies_close += "\n      </body>"
    hand = f"""
        <body name="hand" pos="0 0 0.107" quat="0.9238795 0 0 -0.3826834" gravcomp="1">
          <inertial pos="0 0 0.03" mass="0.7" diaginertia="0.002 0.0005 0.002"/>
          <geom class="robot" type="box" size="0.025 0.09 0.028" pos="0 0 0.03" rgba="0.9 0.9 0.92 1"/>
          <site name="{EE_SITE}" pos="0 0 {TCP_IN_HAND}" size="0.006" rgba="1 0 1 0.0"/>
          {wrist_camera_xml(wrist_fovy_deg)}
          {_finger_xml("left", 1)}
          {_finger_xml("right", -1)}
        </body>"""
    actuators = "\n".join(
        f'<position name="{a}" joint="{j}" kp="{kp}" kv="{kv}" forcerange="-{t} {t}" '
        f'ctrlrange="{lo - 0.5} {hi + 0.5}"/>'
        for a, j, kp, kv, t, (lo, hi) in zip(ARM_ACTUATORS, ARM_JOINTS, KP, KV, TORQUE, JOINT_LIMITS))
    actuators += "\n" + "\n".join(
        f'<position name="{a}" joint="{j}" kp="2000" forcerange="-{FINGER_FORCE} {FINGER_FORCE}" '
        f'ctrlrange="0 {FINGER_OPEN}"/>' for a, j in zip(FINGER_ACTUATORS, FINGER_JOINTS))
    objects = "".join(_object_xml(o) for o in OBJECTS.values())
    legs = "".join(
        f'<geom class="decor" type="box" size="0.03 0.03 0.36" pos="{x} {y} -0.41" rgba="0.35 0.25 0.18 1"/>'
        for x in (-0.2, 0.9) for y in (-0.7, 0.7))
    front_axes = _look_at_xyaxes(FRONT_CAM_POS, FRONT_CAM_TARGET)
    light_shadow = "true" if shadows else "false"
    return f"""<mujoco model="molmoact_sim_cell">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <statistic extent="2" center="0.3 0 0.3"/>
  <visual>
    <global offwidth="{MAX_RENDER_SIZE[0]}" offheight="{MAX_RENDER_SIZE[1]}" fovy="{FOVY_DEG:.10g}"/>
    <quality shadowsize="1024" offsamples="0"/>  <!-- MSAA would resolve depth off pixel centres -->
    <map znear="0.005" zfar="50"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0.1 0.1 0.1"/>
  </visual>
  <asset>
    <texture name="floor_tex" type="2d" builtin="checker" rgb1="0.32 0.34 0.37" rgb2="0.27 0.29 0.31"
             width="256" height="256"/>
    <material name="floor_mat" texture="floor_tex" texrepeat="6 6"/>
    <material name="table_mat" rgba="0.72 0.6 0.45 1" specular="0.1"/>
  </asset>
  <default>
    <joint axis="0 0 1" damping="1" armature="0.1"/>
    <!-- collision bits: 1 = table/objects/bowl floor, 2 = bowl walls. Robot geoms hit both but
         not each other; bowl walls skip the table (saves ~60 resting contacts) -->
    <default class="robot">
      <geom contype="1" conaffinity="2" rgba="0.93 0.93 0.95 1" friction="0.8 0.02 0.001" group="1"/>
    </default>
    <default class="pad">
      <geom contype="1" conaffinity="2" rgba="0.15 0.15 0.15 1" friction="1.6 0.05 0.001" condim="4"
            solref="0.004 1" solimp="0.95 0.99 0.001" priority="1" group="1"/>
    </default>
    <default class="object">
      <geom contype="1" conaffinity="3" friction="1.0 0.01 0.0005" solref="0.004 1"
            solimp="0.95 0.99 0.001" group="2"/>
    </default>
    <default class="bowl">
      <geom contype="2" conaffinity="0" friction="0.8 0.01 0.0005" rgba="0.92 0.92 0.88 1" mass="0.02"
            group="2"/>
    </default>
    <default class="decor">
      <geom contype="0" conaffinity="0" group="0"/>
    </default>
  </default>
  <worldbody>
    <light name="key" pos="0.6 -0.6 2.2" dir="-0.2 0.3 -1" directional="true" diffuse="0.55 0.55 0.55"
           castshadow="{light_shadow}"/>
    <geom name="floor" class="decor" type="plane" pos="0 0 -0.77" size="2.5 2.5 0.05" material="floor_mat"/>
    <geom name="table" type="box" pos="0.35 0 -0.02" size="0.6 0.75 0.02" material="table_mat"
          friction="0.8 0.01 0.0005"/>
    {legs}
    <camera name="front" pos="{_fmt(FRONT_CAM_POS)}" xyaxes="{front_axes}" fovy="{FOVY_DEG:.10g}"/>
    <body name="link0">
      <geom class="robot" type="cylinder" fromto="0 0 0 0 0 0.14" size="0.075"/>
      {bodies_open}{hand}{bodies_close}
    </body>
    {objects}
    {_bowl_xml()}
  </worldbody>
  <actuator>
    {actuators}
  </actuator>
</mujoco>
"""
