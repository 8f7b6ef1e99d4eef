"""A segmenter trained inside a policy's training run, on the masks of the run's own data.

``robokit train DATA --policy vla`` with no ``segmenter`` option and masks in DATA trains the
segmentation model first, on the cameras and image size the policy will see, saves it as
``<out>/segmenter.pt`` and then trains the policy on it (frozen). A resumed run finds the file and
does not train it again.
"""

from __future__ import annotations

import time
from pathlib import Path

from robokit.errors import ConfigError, DataError
from robokit.policies.base import RunSetup

__all__ = ["RUN_SEGMENTER", "segmenter_for_run"]

RUN_SEGMENTER = "segmenter.pt"  # the file in the run folder
STRIDE = 2  # every other masked step: neighbouring frames add little


def segmenter_for_run(run: RunSetup, steps: int, width: int, no_masks_hint: str) -> str:
    """The path of the run's segmenter, trained now on ``run.data``'s masks unless the run already
    has one. ConfigError with ``no_masks_hint`` when the data has no masks."""
    path = Path(run.out) / RUN_SEGMENTER
    if path.is_file():
        return str(path)
    from robokit.segmentation.data import load_labelled_frames
    from robokit.segmentation.models import SegmenterConfig
    from robokit.segmentation.train import save_segmenter, train_segmenter

    try:
        frames = load_labelled_frames(run.data, run.image_hw, cameras=list(run.camera_names), stride=STRIDE)
    except DataError as exc:
        if "has a mask" not in str(exc):
            raise
        raise ConfigError(f"{run.data} has no masks to train a segmenter on; {no_masks_hint}") from None
    missing = [c for c in run.camera_names if c not in frames.cameras]
    if missing:
        raise ConfigError(f"{run.data} has masks for {', '.join(frames.cameras)} but not for "
                          f"{', '.join(missing)}; {no_masks_hint}")
    if run.processes > 1:
        raise ConfigError("a run on several processes does not train its segmenter: train it first with "
                          f"`robokit seg train {run.data} --out seg.pt` and pass --set segmenter=seg.pt")
    config = SegmenterConfig(image_size=run.image_hw, cameras=list(run.camera_names),
                             instances=[list(i) for i in frames.instances], width=width)

    def on_step(step: int, terms: dict[str, float]) -> None:
        if run.progress is not None:
            run.progress("segmenter", step + 1, steps, terms["loss"])

    start = time.perf_counter()
    model, history = train_segmenter(frames, config, steps=steps, device=run.device, seed=run.seed,
                                     on_step=on_step)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_segmenter(path, model.cpu(), {"data": str(run.data), "steps": steps, "frames": len(frames),
                                       "train_seconds": round(time.perf_counter() - start, 1),
                                       "history": history[-5:]})
    return str(path)
