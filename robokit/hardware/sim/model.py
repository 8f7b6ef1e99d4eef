"""MJCF (MuJoCo XML) of the Panda scene, generated from the DH parameters in :mod:`..kinematics`.

The arm is a chain of bodies whose frames are exactly the modified-DH joint frames, so the
simulated TCP (site ``tcp``) matches :func:`robokit.hardware.kinematics.fk`. Geometry is simple
(capsules and boxes); what matters is the kinematics, the limits, stiff position servos (high
gains, implicit integrator, gravity compensation as on the real arm) and a parallel gripper whose
grasps hold (elliptic friction cones, torsional friction, high impratio).

Collision groups: the table and the objects collide with everything (contype 1, conaffinity 3);
arm, hand and fingers (contype 2, conaffinity 0) collide with table and objects but not with each
other, which keeps a simple-geometry arm from jamming on itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from robokit.hardware.base import GRIPPER_MAX_WIDTH_M, PANDA_Q_MAX, PANDA_Q_MIN
from robokit.hardware.kinematics import DH_PARAMS, FLANGE_D, HAND_YAW, TCP_OFFSET

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_left", "finger_right")
FINGER_GEOMS = ("finger_left_pad", "finger_right_pad")
GRIPPER_ACTUATOR = "gripper"
PHYSICS_DT = 0.002  # upper bound; the env picks dt so that a control period is a whole number of steps

# Servo gains stiff enough to track targets like the real arm's joint controller; the Panda's torque limits.
_KP = (4500, 4500, 3500, 3500, 2000, 2000, 2000)
_KV = (450, 450, 350, 350, 200, 200, 200)
_TORQUE = (87, 87, 87, 87, 12, 12, 12)
# Rough link masses of the Panda (kg): only the dynamics' feel depends on them.
_MASS = (4.97, 0.65, 3.23, 3.59, 1.23, 1.67, 0.74)
_FINGER_KP = 2000.0
_FINGER_FORCE = 60.0  # tendon force limit; each finger gets half (≈ the Panda hand's 30 N each)

TABLE_TOP_Z = 0.0


@dataclass(frozen=True)
class CameraPlacement:
    """Where the fixed ``top`` camera is, where it looks, and its vertical field of view (degrees)."""

    pos: tuple[float, float, float]
    look_at: tuple[float, float, float]
    fovy: float


# The default fixed camera looks down at the workspace from the front right, so the arm is seen in
# 3/4 view.
TOP_CAMERA = CameraPlacement(pos=(1.0, -0.4, 1.3), look_at=(0.34, 0.0, 0.2), fovy=46.0)


@dataclass(frozen=True)
class ObjectSpec:
    """A free-moving box the tasks randomise and the expert grasps."""

    name: str
    half_size: float
    rgba: tuple[float, float, float, float]
    mass: float = 0.05


@dataclass(frozen=True)
class TargetSpec:
    """A place target: ``zone`` (flat painted patch), ``bowl`` (disc + low rim) or ``plate``."""

    name: str
    kind: str
    radius: float
    rgba: tuple[float, float, float, float]

    @property
    def surface_z(self) -> float:
        """Height (above the table) of the surface an object rests on inside the target."""
        return {"zone": 0.0, "bowl": 0.004, "plate": 0.008}[self.kind]


def _fmt(values: npt.ArrayLike) -> str:
    return " ".join(f"{float(v):.9g}" for v in np.ravel(values))


def _quat_rx(angle: float) -> np.ndarray:
    return np.array([np.cos(angle / 2), np.sin(angle / 2), 0.0, 0.0])


def _quat_rz(angle: float) -> np.ndarray:
    return np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])


def look_at_xyaxes(pos: np.ndarray, target: np.ndarray, up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> str:
    """MJCF ``xyaxes`` of a camera at ``pos`` looking at ``target`` (cameras look along -z).

    ``up`` must not be parallel to the viewing direction."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    x_axis = np.cross(forward, np.asarray(up, float))
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(x_axis, forward)
    return _fmt(np.concatenate([x_axis, y_axis]))


def _link_geoms(i: int, next_pos: np.ndarray | None) -> str:
    """Visual+collision geometry of link ``i``: a joint housing along z and a capsule to the next joint."""
    rgba = "0.92 0.92 0.94 1" if i % 2 else "0.85 0.86 0.88 1"
    housing_r = 0.06 if i <= 4 else 0.05
    parts = [
        f'<geom class="arm" type="cylinder" size="{housing_r} 0.055" rgba="{rgba}" mass="{_MASS[i] * 0.4:.4g}"/>'
    ]
    if next_pos is not None and np.linalg.norm(next_pos) > 1e-6:
        parts.append(
            f'<geom class="arm" type="capsule" fromto="0 0 0 {_fmt(next_pos)}" size="{housing_r * 0.85:.4g}" '
            f'rgba="{rgba}" mass="{_MASS[i] * 0.6:.4g}"/>'
        )
    else:
        parts.append(f'<geom class="arm" type="sphere" size="{housing_r:.4g}" rgba="{rgba}" '
                     f'mass="{_MASS[i] * 0.6:.4g}"/>')
    return "\n".join(parts)


def _dh_body_pose(a: float, d: float, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Position and quaternion of a joint frame in its parent's frame: Rx(alpha) Tx(a) Tz(d)."""
    pos = np.array([a, -np.sin(alpha) * d, np.cos(alpha) * d])
    return pos, _quat_rx(alpha)


# The wrist camera sits on the hand's front and looks past the fingertips (hand frame).
_WRIST_CAM_POS = np.array([-0.07, 0.0, 0.075])


def _arm_xml() -> str:
    poses = [_dh_body_pose(*row) for row in DH_PARAMS]
    hand_pos = np.array([0.0, 0.0, FLANGE_D])
    opened: list[str] = []
    for i, (pos, quat) in enumerate(poses):
        next_pos = poses[i + 1][0] if i + 1 < len(poses) else hand_pos
        opened.append(
            f'<body name="link{i + 1}" pos="{_fmt(pos)}" quat="{_fmt(quat)}" gravcomp="1">\n'
            f'<joint name="{ARM_JOINTS[i]}" class="arm" range="{PANDA_Q_MIN[i]:.5f} {PANDA_Q_MAX[i]:.5f}"/>\n'
            f"{_link_geoms(i, next_pos)}"
        )
    wrist_xyaxes = look_at_xyaxes(_WRIST_CAM_POS, np.array([0.0, 0.0, 0.17]), up=(1.0, 0.0, 0.0))
    # Hand frame: flange rotated by HAND_YAW; z points out of the flange towards the fingertips.
    hand = f"""
<body name="hand" pos="{_fmt(hand_pos)}" quat="{_fmt(_quat_rz(HAND_YAW))}" gravcomp="1">
  <geom class="arm" type="cylinder" size="0.045 0.01" pos="0 0 0.01" rgba="0.3 0.3 0.32 1" mass="0.2"/>
  <geom class="arm" type="box" size="0.025 0.095 0.028" pos="0 0 0.045" rgba="0.95 0.95 0.96 1" mass="0.5"/>
  <site name="tcp" pos="0 0 {TCP_OFFSET}" size="0.005" rgba="1 0 0 0"/>
  <camera name="wrist" pos="{_fmt(_WRIST_CAM_POS)}" xyaxes="{wrist_xyaxes}" fovy="75"/>
  <body name="finger_left_body" pos="0 0 0.0584" gravcomp="1">
    <joint name="{FINGER_JOINTS[0]}" class="finger" axis="0 1 0"/>
    <geom class="finger" type="box" size="0.011 0.006 0.018" pos="0 0.006 0.018" mass="0.015"/>
    <geom name="{FINGER_GEOMS[0]}" class="pad" type="box" size="0.011 0.005 0.0175" pos="0 0.005 {TCP_OFFSET - 0.0584 - 0.011}" mass="0.005"/>
  </body>
  <body name="finger_right_body" pos="0 0 0.0584" gravcomp="1">
    <joint name="{FINGER_JOINTS[1]}" class="finger" axis="0 -1 0"/>
    <geom class="finger" type="box" size="0.011 0.006 0.018" pos="0 -0.006 0.018" mass="0.015"/>
    <geom name="{FINGER_GEOMS[1]}" class="pad" type="box" size="0.011 0.005 0.0175" pos="0 -0.005 {TCP_OFFSET - 0.0584 - 0.011}" mass="0.005"/>
  </body>
</body>"""
    return (
        '<body name="link0" pos="0 0 0">\n'
        '<geom class="arm" type="cylinder" size="0.09 0.07" pos="0 0 0.07" rgba="0.25 0.25 0.27 1"/>\n'
        + "\n".join(opened)
        + hand
        + "</body>" * len(opened)
        + "\n</body>"
    )


def _target_xml(t: TargetSpec) -> str:
    rgba = _fmt(t.rgba)
    if t.kind == "zone":
        geoms = (f'<geom name="{t.name}" class="marker" type="cylinder" size="{t.radius} 0.0005" '
                 f'pos="0 0 0.0005" rgba="{rgba}"/>')
    elif t.kind == "plate":
        geoms = (f'<geom name="{t.name}" class="scene" type="cylinder" size="{t.radius} 0.004" '
                 f'pos="0 0 0.004" rgba="{rgba}"/>')
    elif t.kind == "bowl":
        floor = (f'<geom name="{t.name}" class="scene" type="cylinder" size="{t.radius} 0.002" '
                 f'pos="0 0 0.002" rgba="{rgba}"/>')
        parts = [floor]
        segments = 16
        wall_half_len = t.radius * np.sin(np.pi / segments) * 1.05
        for k in range(segments):
            ang = 2 * np.pi * k / segments
            pos = (t.radius * np.cos(ang), t.radius * np.sin(ang), 0.014)
            parts.append(
                f'<geom class="scene" type="box" size="0.004 {wall_half_len:.4g} 0.012" pos="{_fmt(pos)}" '
                f'euler="0 0 {ang:.5f}" rgba="{rgba}"/>'
            )
        geoms = "\n".join(parts)
    else:
        raise ValueError(f"unknown target kind {t.kind!r}")
    return f'<body name="{t.name}" mocap="true" pos="0.5 0 {TABLE_TOP_Z}">\n{geoms}\n</body>'


def _object_xml(o: ObjectSpec, index: int) -> str:
    h = o.half_size
    return (
        f'<body name="{o.name}" pos="0.5 {-0.3 + 0.1 * index} {TABLE_TOP_Z + h}">\n'
        f'<freejoint name="{o.name}_free"/>\n'
        f'<geom name="{o.name}" class="object" type="box" size="{h} {h} {h}" rgba="{_fmt(o.rgba)}" mass="{o.mass}"/>\n'
        "</body>"
    )


def build_scene_xml(
    objects: list[ObjectSpec],
    targets: list[TargetSpec],
    image_size: tuple[int, int],
    physics_dt: float,
    top_camera: CameraPlacement = TOP_CAMERA,
) -> str:
    """The full scene: arm, table, lights, cameras ``top`` and ``wrist``, objects and targets."""
    height, width = image_size
    top_pos = np.array(top_camera.pos, float)
    top_xyaxes = look_at_xyaxes(top_pos, np.array(top_camera.look_at, float))
    lo, hi = 0.0, GRIPPER_MAX_WIDTH_M / 2
    kp_str = [f"{kp}" for kp in _KP]
    actuators = "\n".join(
        f'<general name="act{i + 1}" joint="{ARM_JOINTS[i]}" gainprm="{kp_str[i]}" '
        f'biastype="affine" biasprm="0 -{_KP[i]} -{_KV[i]}" ctrlrange="{PANDA_Q_MIN[i]:.5f} {PANDA_Q_MAX[i]:.5f}" '
        f'forcerange="-{_TORQUE[i]} {_TORQUE[i]}"/>'
        for i in range(7)
    )
    return f"""<mujoco model="robokit_panda_scene">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{physics_dt:.8g}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <!-- Fixed scene scale: the renderer's near/far clipping planes are fractions of the extent. -->
  <statistic extent="1.5" center="0.4 0 0.3"/>
  <visual>
    <map znear="0.01" zfar="20"/>
    <global offwidth="{max(width, 640)}" offheight="{max(height, 480)}"/>
    <quality shadowsize="0" offsamples="0" numslices="16" numstacks="8" numquads="1"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.45 0.45 0.45" specular="0.05 0.05 0.05"/>
    <rgba haze="0.8 0.85 0.9 1"/>
  </visual>
  <default>
    <default class="arm">
      <joint type="hinge" axis="0 0 1" armature="0.1" damping="1"/>
      <geom contype="2" conaffinity="0" group="1" friction="1 0.005 0.0001"/>
    </default>
    <default class="finger">
      <joint type="slide" range="{lo} {hi}" armature="0.01" damping="5"/>
      <geom contype="2" conaffinity="0" rgba="0.2 0.2 0.22 1" group="1"/>
    </default>
    <default class="pad">
      <geom contype="2" conaffinity="0" condim="4" friction="2 0.02 0.001" solref="0.01 1"
            solimp="0.95 0.99 0.001" rgba="0.15 0.15 0.17 1" group="1"/>
    </default>
    <default class="object">
      <geom contype="1" conaffinity="3" condim="4" friction="1.5 0.02 0.001" solref="0.01 1"
            solimp="0.95 0.99 0.001"/>
    </default>
    <default class="scene">
      <geom contype="1" conaffinity="3" friction="1 0.005 0.0001"/>
    </default>
    <default class="marker">
      <geom contype="0" conaffinity="0"/>
    </default>
  </default>
  <worldbody>
    <light name="sun" pos="0.4 -0.3 2.0" dir="0 0.2 -1" directional="true" castshadow="false"
           diffuse="0.5 0.5 0.5" specular="0.1 0.1 0.1"/>
    <geom name="floor" type="box" size="20 20 0.01" pos="0 0 -0.77" rgba="0.42 0.44 0.47 1" contype="1" conaffinity="3"/>
    <geom name="table" class="scene" type="box" size="0.6 0.75 0.02" pos="0.35 0 {TABLE_TOP_Z - 0.02}"
          rgba="0.72 0.6 0.45 1"/>
    <geom name="table_leg" class="marker" type="box" size="0.5 0.6 0.36" pos="0.35 0 -0.4" rgba="0.5 0.42 0.32 1"/>
    <camera name="top" pos="{_fmt(top_pos)}" xyaxes="{top_xyaxes}" fovy="{top_camera.fovy:.6g}"/>
    {_arm_xml()}
    {"".join(_target_xml(t) for t in targets)}
    {"".join(_object_xml(o, k) for k, o in enumerate(objects))}
  </worldbody>
  <tendon>
    <fixed name="split">
      <joint joint="{FINGER_JOINTS[0]}" coef="0.5"/>
      <joint joint="{FINGER_JOINTS[1]}" coef="0.5"/>
    </fixed>
  </tendon>
  <equality>
    <joint joint1="{FINGER_JOINTS[0]}" joint2="{FINGER_JOINTS[1]}" solimp="0.95 0.99 0.001" solref="0.005 1"/>
  </equality>
  <actuator>
    {actuators}
    <general name="{GRIPPER_ACTUATOR}" tendon="split" gainprm="{_FINGER_KP}" biastype="affine" biasprm="0 -{_FINGER_KP} -60"
             ctrlrange="{lo} {hi}" forcerange="-{_FINGER_FORCE} {_FINGER_FORCE}"/>
  </actuator>
</mujoco>
"""
