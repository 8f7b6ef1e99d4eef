"""Training records: ``metrics.jsonl`` and PNG plots of the train/val curves per loss term.

One JSON object per line: ``{"split": "train"|"val", "step": int, "epoch": float, "time": float,
<loss term>: float, ...}``; train records also carry ``lr`` and ``steps_per_s``. The plots are the
original ACT code's ``plot_history`` (one figure per loss term, train and validation) against
optimizer steps.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Keys of a record that are not loss terms.
META_KEYS = frozenset({"split", "step", "epoch", "time", "lr", "steps_per_s", "best", "samples"})


class MetricsLog:
    """Append-only ``metrics.jsonl`` that survives a resume (records past the resumed step go)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []

    def load(self, up_to_step: int | None = None) -> None:
        """Read existing records, keeping those at or before ``up_to_step``, and rewrite the file."""
        self.records = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if isinstance(record, dict) and (up_to_step is None or record.get("step", 0) <= up_to_step):
                    self.records.append(record)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def append(self, record: dict[str, Any]) -> None:
        clean = {k: _plain(v) for k, v in record.items()}
        self.records.append(clean)
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def loss_terms(records: Iterable[dict[str, Any]]) -> list[str]:
    """Loss-term names in first-seen order (``loss`` first)."""
    seen: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k not in META_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool):
                seen.setdefault(k, None)
    names = list(seen)
    return (["loss"] if "loss" in seen else []) + [n for n in names if n != "loss"]


def plot_history(records: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write ``train_val_<term>.png`` for each loss term; returns the paths written."""
    # The object-oriented API with an Agg canvas: no pyplot global state, safe off the main thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    written = []
    for term in loss_terms(records):
        fig = Figure(figsize=(6, 4), dpi=80)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for split, style in (("train", "-"), ("val", "o-")):
            pts = [(r["step"], r[term]) for r in records
                   if r.get("split") == split and isinstance(r.get(term), (int, float))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, label="validation" if split == "val" else "train", markersize=3)
        ax.set_title(term)
        ax.set_xlabel("step")
        values = [r[term] for r in records if isinstance(r.get(term), (int, float)) and r[term] > 0]
        if values and max(values) / min(values) > 50:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)  # tight_layout costs more
        path = out_dir / f"train_val_{term}.png"
        tmp = path.with_suffix(".png.tmp")
        fig.savefig(tmp, format="png")
        tmp.replace(path)
        written.append(path)
    return written
