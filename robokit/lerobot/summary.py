"""What a LeRobot v3 folder holds, from its metadata alone (no frame is decoded): for ``robokit inspect``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robokit.errors import DataError
from robokit.lerobot import layout as L
from robokit.lerobot.tables import read_episodes, read_tasks


@dataclass
class LeRobotSummary:
    """``robokit inspect``'s view of a LeRobot dataset. ``problem`` says why robokit cannot import it
    (a feature it cannot map), None when it can."""

    root: Path
    version: str
    fps: float
    robot_type: str
    features: dict[str, str]  # name -> "dtype shape"
    cameras: list[str]
    episodes: list[dict[str, Any]]  # episode_index, length, seconds, tasks
    total_frames: int
    size_bytes: int
    problem: str | None = None
    tasks: list[str] = field(default_factory=list)


def summarize(root: str | Path) -> LeRobotSummary:
    """Read ``meta/info.json``, the tasks and the episodes table of a v3 dataset. Raises DataError for
    an unsupported version or unreadable metadata."""
    root = Path(root)
    info = L.read_info(root)
    pq = L.require("pyarrow.parquet")
    features = {name: f"{ft.get('dtype')} {list(ft.get('shape') or [])}"
                for name, ft in info["features"].items() if isinstance(ft, dict)}
    problem: str | None = None
    cameras: list[str] = []
    try:
        cameras = list(L.map_features(root, info["features"])["cameras"])
    except DataError as exc:
        problem = str(exc)
    tasks = read_tasks(root, pq) if (root / L.TASKS_PATH).exists() else {}
    rows = read_episodes(root, pq)
    episodes = [{"episode_index": r[L.EPISODE_INDEX], "length": r["length"],
                 "seconds": r["length"] / float(info["fps"]), "tasks": list(r.get("tasks") or []),
                 "source": r.get(L.ROBOKIT_SOURCE_COLUMN)} for r in rows]
    return LeRobotSummary(
        root=root, version=str(info["codebase_version"]), fps=float(info["fps"]),
        robot_type=str(info.get("robot_type") or "-"), features=features, cameras=cameras, episodes=episodes,
        total_frames=sum(int(r["length"]) for r in rows),
        size_bytes=sum(p.stat().st_size for p in root.rglob("*") if p.is_file()), problem=problem,
        tasks=[tasks[k] for k in sorted(tasks)])
