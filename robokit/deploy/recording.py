"""Writers for what a deploy run leaves behind: rollouts as episodes and camera videos."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robokit.deploy.loop import StepRecord

if TYPE_CHECKING:
    from robokit.record.scene import SimScene


class RolloutRecorder:
    """Save each rollout as a robokit episode (``--record DIR``) via the episodes writer.

    With ``chunk_shape`` (the policy's (chunk_size, action_dim)) the episode also stores
    ``/predicted_chunks`` float32 (T, chunk_size, action_dim): row t is the chunk the policy
    predicted from the observation of step t, whenever it arrived (``async`` chunks arrive some
    steps later and are filled in then), all NaN where no query was made at step t.

    With ``takeover`` (a person may take over during the rollout) it also stores ``/intervention``
    (per step 1.0 where a person commanded the arm, 0.0 where the policy did) and
    ``/policy_action`` (T, action_dim): what the policy's plan held for each step, sent or not
    (NaN where it had none) — the pairs ``robokit train`` learns corrections from.

    With ``scene`` (a simulated rollout) each step also stores where the task's objects are in every
    camera (``/objects/<name>/box_<cam>``), as ``robokit record --sim`` does: a policy with an
    object pointer then learns from the rollouts too, where the arm went that demonstrations never
    took it.
    """

    def __init__(self, folder: str | Path, camera_shapes: dict[str, tuple[int, int, int]], fps: float,
                 robot_kind: str, sim: bool, compress: str = "none",
                 chunk_shape: tuple[int, int] | None = None, takeover: bool = False,
                 action_dim: int | None = None, scene: SimScene | None = None) -> None:
        self.folder = Path(folder)
        self.scene = scene
        self.camera_shapes = camera_shapes
        self.fps = fps
        self.robot_kind = robot_kind
        self.sim = sim
        self.compress = compress
        self.chunk_shape = tuple(chunk_shape) if chunk_shape is not None else None
        self._writer: Any = None
        self._rows: dict[int, int] = {}  # loop step -> episode row (steps without frames are not recorded)
        from robokit.episodes.format import PREDICTED_CHUNKS  # here: h5py only when recording

        self._chunks_key = PREDICTED_CHUNKS
        self.takeover = bool(takeover)
        self.action_dim = action_dim
        self.interventions = 0  # steps of the current episode a person commanded

    def start(self, task: str | None) -> None:
        from robokit.episodes.files import next_episode_index
        from robokit.episodes.writer import EpisodeWriter

        attrs = {"fps": float(self.fps), "robot": self.robot_kind, "sim": self.sim, "source": "policy",
                 "camera_names": list(self.camera_shapes)}
        if task:
            attrs["task"] = task
        extras: dict[str, Any] = {self._chunks_key: self.chunk_shape} if self.chunk_shape is not None else {}
        if self.takeover:
            from robokit.episodes.format import INTERVENTION, POLICY_ACTION

            extras.update({INTERVENTION: (), POLICY_ACTION: (self.action_dim or 8,)})
        self._writer = EpisodeWriter(self.folder, next_episode_index(self.folder), self.camera_shapes,
                                     attrs=attrs, compress=self.compress, extra_step_datasets=extras or None,
                                     box_objects=self.scene.box_objects() if self.scene is not None else None)
        self._rows = {}
        self.interventions = 0

    def __call__(self, record: StepRecord) -> None:
        writer = self._writer
        if writer is None:
            return
        own = None  # the chunk predicted from this step's observation, if it is already here
        late = []
        for start, chunk in record.chunks if self.chunk_shape is not None else ():
            if start == record.step:
                own = chunk
            else:
                late.append((start, chunk))
        if record.frames:
            st = record.state
            self._rows[record.step] = writer.num_steps
            extras: dict[str, Any] = {self._chunks_key: own} if own is not None else {}
            if self.takeover:
                from robokit.episodes.format import INTERVENTION, POLICY_ACTION

                extras[INTERVENTION] = np.float32(record.intervention)
                if record.policy_action is not None:
                    extras[POLICY_ACTION] = record.policy_action
                self.interventions += int(record.intervention)
            writer.append(st.as_vector(), st.velocity_vector(), record.command.astype(np.float32),
                          {c: f.image for c, f in record.frames.items()}, t_robot=float(st.t),
                          t_images={c: float(f.t_capture) for c, f in record.frames.items()},
                          # The step's frames show the scene as it is now: the simulation advances after
                          # this call.
                          object_boxes=self.scene.object_boxes() if self.scene is not None else None,
                          extras=extras or None)
        for start, chunk in late:  # async: the row of its observation step was written earlier
            row = self._rows.get(start)
            if row is not None:
                writer.set_extra(row, self._chunks_key, chunk)

    def finish(self, success: bool | None, extra: dict[str, Any],
               goal_images: dict[str, np.ndarray] | None = None) -> str | None:
        writer, self._writer = self._writer, None
        self._rows = {}
        if writer is None:
            return None
        if writer.num_steps == 0:
            writer.discard()
            return None
        return str(writer.save(success=success, extra_attrs=extra, goal_images=goal_images))


class VideoRecorder:
    """Write the camera frames of each episode side by side into an MP4 (``--video DIR``)."""

    def __init__(self, folder: str | Path, fps: float) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self._video: Any = None

    def start(self, name: str) -> None:
        from robokit.viz.episode import MosaicVideoWriter  # here: OpenCV only when recording videos

        self._video = MosaicVideoWriter(self.folder / f"{name}.mp4", self.fps)

    def __call__(self, record: StepRecord) -> None:
        if self._video is None or not record.frames:
            return
        self._video.add([f.image for f in record.frames.values()])

    def finish(self, suffix: str) -> str | None:
        video, self._video = self._video, None
        if video is None or video.close() == 0:
            return None
        final = video.path.with_name(f"{video.path.stem}_{suffix}.mp4")
        video.path.replace(final)
        return str(final)
