"""Build robots and cameras from command-line style descriptions.

    spec = parse_camera_spec("wrist=/dev/video2")
    robot = make_robot(None, robot="franka", host="172.16.0.2", realtime="enforce")
    cameras = make_cameras(["top=0", "wrist=/dev/video2"], size=(480, 640), fps=30)
    with robot, open_cameras(cameras):
        ...

Camera specs are ``NAME=SPEC`` where SPEC is a device index (``0``), a device path
(``/dev/video2``), ``synthetic`` (moving test pattern), ``sim`` (the simulator camera called NAME;
``sim:OTHER`` picks another one) or a video file (``clip.mp4``; played in a loop, for testing).
Nothing here opens a device: the returned objects are opened with ``with`` / :func:`open_cameras`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robokit.errors import UserError
from robokit.hardware.base import Camera, Robot

if TYPE_CHECKING:  # the simulator imports mujoco; only load it when a sim is asked for
    from robokit.hardware.sim import PandaSimEnv

CAMERA_SPEC_FORMS = (
    "NAME=INDEX (e.g. top=0), NAME=/dev/videoN, NAME=synthetic, NAME=sim (or NAME=sim:SIMCAM with --sim), "
    "or NAME=path/to/video.mp4"
)
ROBOT_CHOICES = ("franka",)
VIDEO_FILE_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,31}$")


@dataclass(frozen=True)
class CameraSpec:
    """A parsed ``--camera NAME=SPEC``.

    ``kind`` is ``"opencv"`` (``source`` = int index, device path or video file), ``"synthetic"``
    (``source`` None) or ``"sim"`` (``source`` = the simulator camera's name).
    """

    name: str
    kind: str
    source: int | str | None
    text: str

    def __str__(self) -> str:
        return self.text


def parse_camera_spec(text: str) -> CameraSpec:
    """Parse ``NAME=SPEC``; raises :class:`UserError` naming the spec and the accepted forms."""
    raw = str(text).strip()
    name, sep, spec = raw.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise UserError(f"camera spec {raw!r} is not NAME=SPEC; accepted forms: {CAMERA_SPEC_FORMS}")
    if not _NAME_RE.match(name):
        raise UserError(
            f"camera name {name!r} in {raw!r} must start with a letter and use only letters, digits, '_' "
            "or '-' (at most 32 characters): it becomes a dataset name in episode files"
        )
    lowered = spec.lower()
    if spec.isdigit():
        return CameraSpec(name, "opencv", int(spec), raw)
    if lowered == "synthetic":
        return CameraSpec(name, "synthetic", None, raw)
    if lowered == "sim":
        return CameraSpec(name, "sim", name, raw)
    if lowered.startswith("sim:") and spec[4:].strip():
        return CameraSpec(name, "sim", spec[4:].strip(), raw)
    if spec.startswith("/dev/"):
        return CameraSpec(name, "opencv", spec, raw)
    if Path(spec).suffix.lower() in VIDEO_FILE_SUFFIXES:
        return CameraSpec(name, "opencv", spec, raw)
    raise UserError(f"unknown camera spec {spec!r} in {raw!r}; accepted forms: {CAMERA_SPEC_FORMS}")


def parse_camera_specs(texts: Iterable[str | CameraSpec]) -> list[CameraSpec]:
    """Parse several specs; camera names must be unique."""
    specs = [t if isinstance(t, CameraSpec) else parse_camera_spec(t) for t in texts]
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise UserError(f"camera name {spec.name!r} is given twice; each --camera needs its own name")
        seen.add(spec.name)
    return specs


def make_robot(
    sim_env: PandaSimEnv | None = None,
    robot: str = "franka",
    host: str | None = None,
    realtime: str = "enforce",
    **franka_options: Any,
) -> Robot:
    """The simulator's robot when ``sim_env`` is given, else a (not yet open) real robot.

    ``franka_options`` go to :class:`~robokit.hardware.franka.FrankaRobot` (e.g.
    ``relative_dynamics_factor=0.1``).
    """
    if sim_env is not None:
        return sim_env.robot
    robot = (robot or "").lower()
    if robot not in ROBOT_CHOICES:
        raise UserError(f"unknown robot {robot!r}; choose one of: {', '.join(ROBOT_CHOICES)} (or use --sim)")
    if not host:
        raise UserError("--robot franka needs --host with the robot's IP address (the one you open Desk with)")
    if realtime not in ("enforce", "ignore"):
        raise UserError(f"--realtime must be enforce or ignore, got {realtime!r}")
    from robokit.hardware.franka import FrankaRobot

    return FrankaRobot(host, realtime=realtime, **franka_options)


def make_cameras(
    specs: Sequence[str | CameraSpec],
    sim_env: PandaSimEnv | None = None,
    size: tuple[int, int] = (480, 640),
    fps: float = 30.0,
    **opencv_options: Any,
) -> dict[str, Camera]:
    """Camera objects (not open) by name, in the order given.

    With no specs and a ``sim_env``, all the simulator's cameras. ``size`` is (H, W); OpenCV cameras
    request it (and warn if the device delivers another), synthetic cameras draw at it; simulator
    cameras render at the size the env was built with.
    """
    parsed = parse_camera_specs(specs)
    if not parsed and sim_env is not None:
        return dict(sim_env.cameras)
    cameras: dict[str, Camera] = {}
    for spec in parsed:
        camera: Camera
        if spec.kind == "sim":
            if sim_env is None:
                raise UserError(f"camera spec {spec.text!r} renders from the simulator: add --sim")
            available = dict(sim_env.cameras)
            if spec.source not in available:
                raise UserError(
                    f"camera spec {spec.text!r}: the simulator has no camera {spec.source!r}; "
                    f"it has: {', '.join(available) or 'none'}"
                )
            camera = available[spec.source]
        elif spec.kind == "synthetic":
            from robokit.hardware.synthetic import SyntheticCamera

            camera = SyntheticCamera(spec.name, size=size, fps=fps)
        elif spec.source is not None:
            from robokit.hardware.opencv_camera import OpenCVCamera

            camera = OpenCVCamera(spec.name, spec.source, size=size, fps=fps, **opencv_options)
        else:
            raise UserError(f"camera spec {spec.text!r} names no device; accepted forms: {CAMERA_SPEC_FORMS}")
        cameras[spec.name] = camera
    return cameras


@contextlib.contextmanager
def open_cameras(cameras: dict[str, Camera]) -> Iterator[dict[str, Camera]]:
    """Open every camera, close them all on exit (also those opened before one failed)."""
    with contextlib.ExitStack() as stack:
        for camera in cameras.values():
            stack.enter_context(camera)
        yield cameras
