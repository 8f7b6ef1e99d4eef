"""What a recording session records and where (:class:`RecordConfig`, the ``robokit record`` options)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robokit.episodes.files import DEFAULT_MIN_FREE_BYTES
from robokit.errors import UserError
from robokit.hardware.workspace import Workspace


@dataclass
class RecordConfig:
    """What to record and where (the ``robokit record`` options)."""

    out: Path
    fps: float = 30.0
    task: str = ""
    episodes: int | None = None  # stop after this many saved episodes (None: until q)
    end_frames: int = 5
    compress: str = "none"
    jpeg_quality: int = 90
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    goal_images: bool = False  # store each camera's final frame as /goal_images/<cam>
    keep_failed: bool = False  # keep scripted episodes whose task check failed
    segmentation: bool = False  # sim: store each camera's instance mask per step
    extra_attrs: dict[str, Any] = field(default_factory=dict)
    #: The box the hand never leaves (the teleop's commands go through deploy's safety filter;
    #: None: joint limits and speed only).
    workspace: Workspace | None = None

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if not self.fps > 0:
            raise UserError(f"--fps must be positive, got {self.fps}")
        if self.end_frames < 0:
            raise UserError(f"--end-frames must be 0 or more, got {self.end_frames}")
        if self.episodes is not None and self.episodes < 1:
            raise UserError(f"--episodes must be at least 1, got {self.episodes}")
        if not 1 <= self.jpeg_quality <= 100:
            raise UserError(f"--jpeg-quality must be 1..100, got {self.jpeg_quality}")
