"""PandaSimEnv: the MuJoCo scene, its clock, its robot and cameras.

One object owns the model and the data; :class:`~robokit.hardware.sim.devices.SimRobot` and
:class:`~robokit.hardware.sim.devices.SimCamera` are thin views of it that implement the hardware
interfaces, so recording, replay and deploy run unchanged on the simulator. Physics advances only
in :meth:`PandaSimEnv.step` (one control period), which makes a run a pure function of the seed
and the commands: the same seed and actions give the same images and states, bit for bit.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING

from robokit.hardware.sim import _gl

_gl.configure()

import mujoco
import numpy as np

from robokit.errors import HardwareFault, UserError
from robokit.hardware.base import GRIPPER_MAX_WIDTH_M, PANDA_READY_POSE, RobotState
from robokit.hardware.sim.devices import SimCamera, SimRobot
from robokit.hardware.sim.model import (
    ARM_JOINTS,
    FINGER_JOINTS,
    GRIPPER_ACTUATOR,
    PHYSICS_DT,
    TABLE_TOP_Z,
    build_scene_xml,
)
from robokit.hardware.sim.segmentation import geom_instances, instance_table, render_mask
from robokit.hardware.sim.tasks import TASK_SETS, SimTask, resolve_task

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

CAMERA_NAMES = ("top", "wrist")


class PandaSimEnv:
    """A simulated Panda at a table with a task (``pick_place``, ``multi`` or a ``multi`` instruction).

    ``image_size`` is (H, W) of every camera. ``realtime=True`` makes :meth:`step` wait for the
    wall clock (a person driving the arm); otherwise the simulation runs as fast as it can.
    """

    def __init__(
        self,
        task: str = "pick_place",
        seed: int = 0,
        image_size: tuple[int, int] = (240, 320),
        camera_names: tuple[str, ...] | list[str] = CAMERA_NAMES,
        control_hz: float = 30.0,
        realtime: bool = False,
    ) -> None:
        height, width = (int(v) for v in image_size)
        if not (8 <= height <= 2048 and 8 <= width <= 2048):
            raise UserError(f"sim image size must be between 8 and 2048 pixels a side, got {height}x{width}")
        if not control_hz > 0:
            raise UserError(f"control_hz must be positive, got {control_hz}")
        unknown = [c for c in camera_names if c not in CAMERA_NAMES]
        if unknown:
            raise UserError(f"unknown sim camera(s) {', '.join(unknown)}; the sim has {', '.join(CAMERA_NAMES)}")
        self.image_size = (height, width)
        self.control_hz = float(control_hz)
        self.control_dt = 1.0 / self.control_hz
        self.realtime = bool(realtime)
        self._substeps = max(1, math.ceil(self.control_dt / PHYSICS_DT - 1e-9))
        self._task_set, self._default_task = resolve_task(task)
        self._seed_rng = np.random.default_rng(_check_seed(seed))
        self._render_lock = threading.Lock()
        self._renderer: mujoco.Renderer | None = None
        self._closed = False
        self._episode = 0
        self._steps = 0
        self._frames: dict[str, tuple[tuple[int, int], np.ndarray]] = {}
        self._masks: dict[str, tuple[tuple[int, int], np.ndarray]] = {}
        self._build(self._task_set)
        self.robot = SimRobot(self)
        self.cameras = {name: SimCamera(self, name) for name in camera_names}
        self.reset(seed=seed)

    # ------------------------------------------------------------------ model
    def _build(self, task_set: str) -> None:
        spec = TASK_SETS[task_set]
        xml = build_scene_xml(list(spec.objects), list(spec.targets), self.image_size,
                              self.control_dt / self._substeps, spec.top_camera)
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self._spec = spec
        m = self.model
        self._arm_qadr = np.array([m.joint(j).qposadr[0] for j in ARM_JOINTS])
        self._arm_vadr = np.array([m.joint(j).dofadr[0] for j in ARM_JOINTS])
        self._finger_qadr = np.array([m.joint(j).qposadr[0] for j in FINGER_JOINTS])
        self._arm_act = np.array([m.actuator(f"act{i + 1}").id for i in range(7)])
        self._grip_act = m.actuator(GRIPPER_ACTUATOR).id
        self._finger_bodies = {m.body(b).id for b in ("finger_left_body", "finger_right_body")}
        self._objects = {o.name: o for o in spec.objects}
        self._targets = {t.name: t for t in spec.targets}
        self._obj_body = {name: m.body(name).id for name in self._objects}
        self._obj_qadr = {name: m.joint(f"{name}_free").qposadr[0] for name in self._objects}
        self._obj_vadr = {name: m.joint(f"{name}_free").dofadr[0] for name in self._objects}
        self._target_mocap = {name: m.body(name).mocapid[0] for name in self._targets}
        self._geom_instances = geom_instances(m, list(self._objects), list(self._targets))
        with self._render_lock:  # a new model needs a new renderer
            if self._renderer is not None:
                self._renderer.close()
                self._renderer = None

    # ------------------------------------------------------------------ episode
    def draw_seed(self) -> int:
        """The next scene seed of the environment's own generator (what ``reset(seed=None)`` uses)."""
        return int(self._seed_rng.integers(0, 2**31 - 1))

    def reset(self, seed: int | None = None, task: str | None = None) -> None:
        """Start a new randomised scene: arm at the ready pose, gripper open, objects placed.

        ``seed`` None draws the next seed from the environment's own generator (seeded at
        construction), so a sequence of resets is reproducible too. ``task`` picks the task
        (for ``multi``: an instruction; drawn from the seed when None).
        """
        self._check_open()
        if seed is None:
            seed = self.draw_seed()
        seed = _check_seed(seed)
        if task is not None:
            task_set, name = resolve_task(task)
            if task_set != self._task_set:
                self._task_set = task_set
                self._build(task_set)
        else:
            name = self._default_task if self._default_task in self._spec.tasks else None
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        task_names = list(self._spec.tasks)
        drawn = task_names[int(rng.integers(len(task_names)))]  # always drawn: same layout for a seed
        self.task = SimTask(self, self._spec, name if name is not None else drawn)
        objects, targets = self._spec.layout(rng)

        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[self._arm_qadr] = PANDA_READY_POSE
        d.qpos[self._finger_qadr] = GRIPPER_MAX_WIDTH_M / 2
        d.ctrl[self._arm_act] = PANDA_READY_POSE
        d.ctrl[self._grip_act] = GRIPPER_MAX_WIDTH_M / 2
        for name, (x, y, yaw) in objects.items():
            adr = self._obj_qadr[name]
            d.qpos[adr:adr + 3] = (x, y, TABLE_TOP_Z + self._objects[name].half_size)
            d.qpos[adr + 3:adr + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        for name, (x, y) in targets.items():
            d.mocap_pos[self._target_mocap[name]] = (x, y, TABLE_TOP_Z)
        mujoco.mj_forward(m, d)
        self._episode += 1
        self._steps = 0
        self._frames.clear()
        self._wall_start = time.monotonic()
        self._lag_reported = False
        self.robot._on_reset()

    def step(self) -> None:
        """Advance physics by one control period (and, if ``realtime``, wait for the wall clock)."""
        self._check_open()
        if self._steps == 0:
            # The wall clock starts with the first step, not at reset: a person may wait in between.
            self._wall_start = time.monotonic()
        mujoco.mj_step(self.model, self.data, nstep=self._substeps)
        # Recompute positions and contacts for the new state, so images, projections and success
        # checks all describe the same instant (mj_step leaves them one substep behind).
        mujoco.mj_forward(self.model, self.data)
        self._steps += 1
        if self.realtime:
            due = self._wall_start + self._steps * self.control_dt
            lag = time.monotonic() - due
            if lag < 0:
                time.sleep(-lag)
            elif lag > 0.25:
                if not self._lag_reported:
                    log.warning("simulation is %.0f ms behind the wall clock (rendering too slow for "
                                "real time?); re-synchronising", lag * 1000)
                    self._lag_reported = True
                self._wall_start = time.monotonic() - self._steps * self.control_dt

    @property
    def time(self) -> float:
        """Simulated seconds since the last reset."""
        return float(self.data.time)

    @property
    def step_count(self) -> int:
        """Control steps since the last reset."""
        return self._steps

    @property
    def task_set(self) -> str:
        return self._task_set

    def close(self) -> None:
        """Release the renderer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._render_lock:
            if self._renderer is not None:
                self._renderer.close()
                self._renderer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise HardwareFault("the simulation was closed; create a new PandaSimEnv")

    # ------------------------------------------------------------------ robot I/O (used by SimRobot)
    def _read_state(self) -> RobotState:
        d = self.data
        width = float(np.sum(d.qpos[self._finger_qadr]))
        gripper = float(np.clip(1.0 - width / GRIPPER_MAX_WIDTH_M, 0.0, 1.0))
        return RobotState(t=self.time, qpos=d.qpos[self._arm_qadr].copy(),
                          qvel=d.qvel[self._arm_vadr].copy(), gripper=gripper)

    def _set_targets(self, qpos: np.ndarray, gripper: float) -> None:
        self.data.ctrl[self._arm_act] = qpos
        self.data.ctrl[self._grip_act] = (1.0 - gripper) * GRIPPER_MAX_WIDTH_M / 2

    def _arm_targets(self) -> tuple[np.ndarray, float]:
        ctrl = self.data.ctrl
        return ctrl[self._arm_act].copy(), float(1.0 - 2.0 * ctrl[self._grip_act] / GRIPPER_MAX_WIDTH_M)

    # ------------------------------------------------------------------ privileged state
    def _body_id(self, name: str) -> int:
        if name in self._obj_body:
            return self._obj_body[name]
        if name in self._targets:
            return self.model.body(name).id
        known = list(self._objects) + list(self._targets)
        raise UserError(f"unknown sim object {name!r}; this scene has {', '.join(known)}")

    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and rotation (3, 3) of an object or target."""
        body = self._body_id(name)
        return self.data.xpos[body].copy(), self.data.xmat[body].reshape(3, 3).copy()

    def target_position(self, name: str) -> np.ndarray:
        """World position (3,) of a target's centre on the table."""
        if name not in self._targets:
            raise UserError(f"unknown sim target {name!r}; this scene has {', '.join(self._targets)}")
        return self.data.mocap_pos[self._target_mocap[name]].copy()

    def target_surface_z(self, name: str) -> float:
        return self._targets[name].surface_z

    def object_half_size(self, name: str) -> float:
        return self._objects[name].half_size

    def object_speed(self, name: str) -> float:
        adr = self._obj_vadr[name]
        return float(np.linalg.norm(self.data.qvel[adr:adr + 3]))

    def fingers_touch(self, name: str, both: bool = False) -> bool:
        """True when a finger of the gripper touches the object (``both``: each finger does: it is
        pinched between them, not just brushed by one)."""
        body = self._body_id(name)
        m, d = self.model, self.data
        touching = set()
        for c in d.contact[: d.ncon]:
            b1, b2 = m.geom_bodyid[c.geom1], m.geom_bodyid[c.geom2]
            if b1 == body and b2 in self._finger_bodies:
                touching.add(b2)
            elif b2 == body and b1 in self._finger_bodies:
                touching.add(b1)
        return len(touching) == len(self._finger_bodies) if both else bool(touching)

    # ------------------------------------------------------------------ rendering
    def _get_renderer(self) -> mujoco.Renderer:
        if self._renderer is None:
            height, width = self.image_size
            try:
                renderer = mujoco.Renderer(self.model, height, width)
            except Exception as exc:  # the GL stack raises many types; one clear message instead
                raise HardwareFault(
                    f"cannot create an offscreen MuJoCo renderer (MUJOCO_GL={_gl.configure()}): {exc}. "
                    "Install Mesa's EGL (libegl1) or OSMesa (libosmesa6) and set MUJOCO_GL=egl or osmesa "
                    "before anything imports mujoco"
                ) from exc
            flags = renderer.scene.flags
            # Speed: shadows, reflections and the skybox cost more than everything else together.
            flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
            self._renderer = renderer
        return self._renderer

    def render(self, camera: str) -> np.ndarray:
        """Render ``camera`` now: uint8 (H, W, 3) RGB."""
        self._check_open()
        self._camera_id(camera)
        with self._render_lock:
            renderer = self._get_renderer()
            renderer.update_scene(self.data, camera=camera)
            image = renderer.render().copy()
            _gl.release_current_context()
            return image

    def instance_table(self) -> list[tuple[str, str]]:
        """``(name, kind)`` of the instances of :meth:`camera_mask`; id = position + 1 (0: background)."""
        return instance_table(list(self._objects), list(self._targets))

    def camera_mask(self, camera: str) -> np.ndarray:
        """Instance ids (uint8 (H, W)) of what ``camera`` sees at the current step, rendered at most
        once per step; see :meth:`instance_table` for what the ids are."""
        key = (self._episode, self._steps)
        cached = self._masks.get(camera)
        if cached is None or cached[0] != key:
            self._check_open()
            self._camera_id(camera)
            with self._render_lock:
                mask = render_mask(self._get_renderer(), self.data, camera, self._geom_instances)
                _gl.release_current_context()
            cached = (key, mask)
            self._masks[camera] = cached
        return cached[1]

    def _camera_image(self, camera: str) -> np.ndarray:
        """The image of ``camera`` for the current step, rendered at most once per step."""
        key = (self._episode, self._steps)
        cached = self._frames.get(camera)
        if cached is None or cached[0] != key:
            cached = (key, self.render(camera))
            self._frames[camera] = cached
        return cached[1]

    def _camera_id(self, camera: str) -> int:
        cam = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam < 0:
            raise UserError(f"unknown sim camera {camera!r}; the sim has {', '.join(CAMERA_NAMES)}")
        return cam

    def project(self, camera: str, points_world: np.ndarray) -> np.ndarray:
        """Pixel coordinates (N, 2) as (u, v) of world points (N, 3) in ``camera``'s image.

        u grows to the right and v downwards from the top-left corner of the image; points
        behind the camera give NaN.
        """
        cam = self._camera_id(camera)
        pts = np.asarray(points_world, dtype=float).reshape(-1, 3)
        height, width = self.image_size
        pos = self.data.cam_xpos[cam]
        mat = self.data.cam_xmat[cam].reshape(3, 3)
        local = (pts - pos) @ mat  # camera frame: x right, y up, looking along -z
        depth = -local[:, 2]
        focal = 0.5 * height / math.tan(math.radians(self.model.cam_fovy[cam]) / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = width / 2 + focal * local[:, 0] / depth
            v = height / 2 - focal * local[:, 1] / depth
        uv = np.stack([u, v], axis=1)
        uv[depth <= 1e-6] = np.nan
        return uv

    def object_corners(self, name: str) -> np.ndarray:
        """World coordinates (8·k, 3) of the bounding-box corners of an object's or target's geoms."""
        body = self._body_id(name)
        m, d = self.model, self.data
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
        corners = []
        for g in np.flatnonzero(m.geom_bodyid == body):
            centre, half = m.geom_aabb[g, :3], m.geom_aabb[g, 3:]
            local = centre + signs * half
            corners.append(d.geom_xpos[g] + local @ d.geom_xmat[g].reshape(3, 3).T)
        return np.concatenate(corners, axis=0)

    def object_box(self, camera: str, object_name: str) -> tuple[int, int, int, int] | None:
        """Pixel box (x0, y0, x1, y1) of an object or target in ``camera``, clipped to the image;
        None when it is behind the camera or entirely outside the image."""
        uv = self.project(camera, self.object_corners(object_name))
        if np.isnan(uv).any():
            return None
        height, width = self.image_size
        x0, y0 = np.floor(uv.min(axis=0))
        x1, y1 = np.ceil(uv.max(axis=0))
        x0, x1 = max(0, int(x0)), min(width - 1, int(x1))
        y0, y1 = max(0, int(y0)), min(height - 1, int(y1))
        if x0 >= x1 or y0 >= y1:
            return None
        return x0, y0, x1, y1


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"a sim seed must be a whole number >= 0, got {seed!r}")
    return int(seed)
