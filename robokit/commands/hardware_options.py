"""Hardware options every command shares: ``--sim --robot --host --realtime --dynamics --camera``.

Use the annotated types as parameters of a typer command, then build the hardware from them::

    from robokit.commands.hardware_options import (
        CameraOpt, DynamicsOpt, HardwareOptions, HostOpt, RealtimeOpt, RobotOpt, SimOpt)

    @app.command("record")
    def record(sim: SimOpt = False, robot: RobotOpt = "franka", host: HostOpt = None,
               realtime: RealtimeOpt = "enforce", dynamics: DynamicsOpt = 0.1,
               camera: CameraOpt = None) -> None:
        hw = HardwareOptions.from_cli(sim=sim, robot=robot, host=host, realtime=realtime,
                                      dynamics=dynamics, camera=camera)
        env = hw.make_sim_env(task="pick_place", seed=0, image_size=(240, 320), realtime=True)
        arm = hw.make_robot(env)
        cams = hw.make_cameras(env, size=(240, 320), fps=30)

so that every command validates and documents them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from robokit.errors import UserError
from robokit.hardware.base import Camera, Robot
from robokit.hardware.factory import (
    CAMERA_SPEC_FORMS,
    ROBOT_CHOICES,
    CameraSpec,
    make_cameras,
    make_robot,
    parse_camera_specs,
)

if TYPE_CHECKING:
    from robokit.hardware.sim import PandaSimEnv

REALTIME_HELP = (
    "enforce: require a real-time kernel (the safe choice on hardware); "
    "ignore: for franky-sim and non-RT test machines."
)

SimOpt = Annotated[bool, typer.Option("--sim", help="Use the MuJoCo simulation instead of real hardware.")]
RobotOpt = Annotated[
    str, typer.Option("--robot", help=f"Real robot backend ({', '.join(ROBOT_CHOICES)}); ignored with --sim.")
]
HostOpt = Annotated[
    str | None, typer.Option("--host", help="The Franka's FCI IP address (the one you open Desk with).")
]
RealtimeOpt = Annotated[str, typer.Option("--realtime", help=REALTIME_HELP)]
DynamicsOpt = Annotated[
    float,
    typer.Option("--dynamics", help="Franka relative dynamics factor in (0, 1]: the fraction of the arm's "
                 "velocity/acceleration/jerk limits joint motions may use (0.1 is conservative)."),
]
CollisionOpt = Annotated[
    str | None,
    typer.Option("--collision", help="Franka reflex thresholds TORQUE_NM,FORCE_N (every joint / axis), e.g. "
                 "'25,30'; default: the robot's own."),
]
CameraOpt = Annotated[
    list[str] | None,
    typer.Option("--camera", help=f"Camera NAME=SPEC, repeatable. SPEC: {CAMERA_SPEC_FORMS}."),
]


@dataclass
class HardwareOptions:
    """Validated hardware choices of one command invocation."""

    sim: bool = False
    robot: str = "franka"
    host: str | None = None
    realtime: str = "enforce"
    cameras: list[CameraSpec] = field(default_factory=list)
    dynamics: float = 0.1
    collision: tuple[float, float] | None = None  # Franka reflex thresholds (torque Nm, force N)

    @classmethod
    def from_cli(
        cls,
        sim: bool = False,
        robot: str = "franka",
        host: str | None = None,
        realtime: str = "enforce",
        camera: list[str] | None = None,
        require_robot: bool = True,
        dynamics: float = 0.1,
        collision: str | None = None,
    ) -> HardwareOptions:
        """Check the combination; raises :class:`UserError` with what to change.

        ``require_robot=False`` lets a command run without ``--sim`` or ``--host`` (e.g.
        ``robokit devices`` listing only cameras).
        """
        realtime = (realtime or "").strip().lower()
        if realtime not in ("enforce", "ignore"):
            raise UserError(f"--realtime must be 'enforce' or 'ignore', got {realtime!r}")
        robot = (robot or "").strip().lower()
        if robot not in ROBOT_CHOICES:
            raise UserError(f"--robot must be one of: {', '.join(ROBOT_CHOICES)}, got {robot!r}")
        if sim and host:
            raise UserError("--sim and --host exclude each other: drop --host to simulate, or --sim to drive the robot")
        if require_robot and not sim and not host:
            raise UserError("say which robot to use: --sim for the simulation, or --robot franka --host IP")
        if not 0.0 < dynamics <= 1.0:
            raise UserError(f"--dynamics must be in (0, 1], got {dynamics}")
        specs = parse_camera_specs(camera or [])
        if not sim:
            for spec in specs:
                if spec.kind == "sim":
                    raise UserError(f"camera spec {spec.text!r} renders from the simulator: add --sim")
        return cls(sim=sim, robot=robot, host=host, realtime=realtime, cameras=specs, dynamics=float(dynamics),
                   collision=_collision_thresholds(collision))

    def sim_camera_names(self, default: tuple[str, ...] = ("top", "wrist")) -> tuple[str, ...]:
        """The simulator cameras to render: those the ``sim`` specs name, else ``default``."""
        named = tuple(dict.fromkeys(str(s.source) for s in self.cameras if s.kind == "sim"))
        if named:
            return named
        return default if not self.cameras else ()

    def make_sim_env(self, **env_options: Any) -> PandaSimEnv | None:
        """A :class:`~robokit.hardware.sim.PandaSimEnv` when ``--sim`` was given, else None.

        ``camera_names`` defaults to :meth:`sim_camera_names`; other options go to PandaSimEnv.
        """
        if not self.sim:
            return None
        from robokit.hardware.sim import PandaSimEnv  # imports mujoco: only when simulating

        env_options.setdefault("camera_names", self.sim_camera_names())
        return PandaSimEnv(**env_options)

    def make_robot(self, sim_env: PandaSimEnv | None = None, **franka_options: Any) -> Robot:
        """The simulator's robot, or a not-yet-connected FrankaRobot (use it in ``with``)."""
        if self.sim and sim_env is None:
            raise UserError("--sim was given but no simulation was built (internal: call make_sim_env first)")
        franka_options.setdefault("relative_dynamics_factor", self.dynamics)
        if self.collision is not None and sim_env is None:
            franka_options.setdefault("collision_thresholds", self.collision)
        return make_robot(sim_env, robot=self.robot, host=self.host, realtime=self.realtime, **franka_options)

    def make_cameras(
        self, sim_env: PandaSimEnv | None = None, size: tuple[int, int] = (480, 640), fps: float = 30.0
    ) -> dict[str, Camera]:
        """Cameras by name (not open); with --sim and no --camera, all simulator cameras."""
        return make_cameras(self.cameras, sim_env=sim_env, size=size, fps=fps)


def _collision_thresholds(text: str | None) -> tuple[float, float] | None:
    """``--collision TORQUE_NM,FORCE_N`` -> (torque, force); None when not given."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        torque, force = (float(p) for p in parts)
    except ValueError:
        raise UserError(f"--collision takes TORQUE_NM,FORCE_N (two numbers, e.g. 25,30), got {text!r}") from None
    if not (torque > 0 and force > 0):
        raise UserError(f"--collision thresholds must be positive, got {text!r}")
    return torque, force
