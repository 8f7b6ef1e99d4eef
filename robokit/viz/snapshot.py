"""Camera snapshots: one PNG per camera and a contact sheet with each camera's name and resolution.

What ``robokit devices --snapshot DIR`` writes: the first look at a new rig, without a display or a
GUI build of OpenCV (the install has headless OpenCV)::

    DIR/<camera>.png         the newest frame of each camera, full resolution
    DIR/contact_sheet.png    all of them side by side, scaled to one height, labelled "name  WxH"
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from robokit.errors import HardwareFault, StaleFrame, UserError
from robokit.hardware.base import Camera

__all__ = ["CONTACT_SHEET", "Snapshot", "contact_sheet", "take_snapshots"]

CONTACT_SHEET = "contact_sheet.png"
TILE_HEIGHT = 240
COLUMNS = 3
LABEL_HEIGHT = 28


@dataclass(frozen=True)
class Snapshot:
    """One camera's saved frame."""

    name: str
    path: Path
    width: int
    height: int


def _first_frame(name: str, camera: Camera, timeout_s: float) -> np.ndarray:
    """The newest frame of an open camera, waiting up to ``timeout_s`` for its first one."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return camera.read_latest(max_age_s=timeout_s).image
        except StaleFrame:  # a capture thread that has not delivered yet
            if time.monotonic() > deadline:
                raise HardwareFault(f"camera {name!r} delivered no frame within {timeout_s:.0f} s; check its "
                                    "cable and that no other program holds it") from None
            time.sleep(0.02)


def take_snapshots(cameras: dict[str, Camera], out: str | Path, timeout_s: float = 5.0) -> list[Snapshot]:
    """Open ``cameras`` (closed again on return), save one frame of each as ``out/<name>.png`` and
    the contact sheet ``out/contact_sheet.png``; returns what was saved, in camera order."""
    if not cameras:
        raise UserError("no camera to snapshot: give --camera NAME=SPEC (or --sim for the simulator's)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, np.ndarray] = {}
    with contextlib.ExitStack() as stack:
        for camera in cameras.values():
            stack.enter_context(camera)
        for name, camera in cameras.items():
            images[name] = _first_frame(name, camera, timeout_s)
    saved = []
    for name, image in images.items():
        path = out / f"{name}.png"
        _write(path, image)
        saved.append(Snapshot(name, path, int(image.shape[1]), int(image.shape[0])))
    _write(out / CONTACT_SHEET, contact_sheet(images))
    return saved


def contact_sheet(images: dict[str, np.ndarray], tile_height: int = TILE_HEIGHT, columns: int = COLUMNS) -> np.ndarray:
    """The images (RGB) in a grid, each scaled to ``tile_height`` and labelled with its name and
    resolution; RGB uint8."""
    tiles = []
    for name, image in images.items():
        h, w = image.shape[:2]
        width = max(1, round(w * tile_height / h))
        tile = cv2.resize(np.ascontiguousarray(image), (width, tile_height), interpolation=cv2.INTER_AREA)
        label = np.full((LABEL_HEIGHT, width, 3), 30, np.uint8)
        cv2.putText(label, f"{name}  {w}x{h}", (6, LABEL_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                    (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(np.vstack([label, tile]))
    rows = [tiles[i:i + columns] for i in range(0, len(tiles), columns)]
    sheet_width = max(sum(t.shape[1] for t in row) for row in rows) + 4 * (columns + 1)
    lines = []
    for row in rows:
        line = np.zeros((tile_height + LABEL_HEIGHT + 4, sheet_width, 3), np.uint8)
        x = 4
        for tile in row:
            line[4:, x:x + tile.shape[1]] = tile
            x += tile.shape[1] + 4
        lines.append(line)
    return np.vstack([*lines, np.zeros((4, sheet_width, 3), np.uint8)])


def _write(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
        raise UserError(f"cannot write {path}: check the folder is writable")
