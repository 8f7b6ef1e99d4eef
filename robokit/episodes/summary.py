"""The figures ``robokit inspect`` shows for an episode: length, duration, achieved rates, frame ages."""

from __future__ import annotations

from typing import Any

import numpy as np

from robokit.episodes.reader import Episode

__all__ = ["episode_summary"]


def episode_summary(ep: Episode) -> dict[str, Any]:
    """Steps, duration, declared and achieved fps, camera rates, frame ages (ms) and done count.

    ``camera_rates`` counts distinct frames per second (a camera slower than the loop repeats
    frames); ``frame_age_ms`` maps a camera to (median, max) of robot time minus capture time.
    Rates and ages are only known for files with timestamps.
    """
    out: dict[str, Any] = {"steps": ep.length, "duration_s": ep.duration_s, "fps": ep.fps,
                           "fps_achieved": None, "camera_rates": {}, "frame_age_ms": {},
                           "done_steps": int(ep.done().sum()) if ep.length else 0}
    ts = ep.timestamps("robot")
    if ts is not None and ep.length > 1 and np.all(np.isfinite(ts[[0, -1]])) and ts[-1] > ts[0]:
        span = float(ts[-1] - ts[0])
        out["fps_achieved"] = (ep.length - 1) / span
        for cam in ep.camera_names:
            tc = ep.timestamps(cam)
            if tc is None:
                continue
            finite = tc[np.isfinite(tc)]
            out["camera_rates"][cam] = max(len(np.unique(finite)) - 1, 0) / span if finite.size else 0.0
            age = (ts - tc)[np.isfinite(tc)]
            if age.size:
                out["frame_age_ms"][cam] = (float(np.median(age)) * 1e3, float(np.max(age)) * 1e3)
    return out
