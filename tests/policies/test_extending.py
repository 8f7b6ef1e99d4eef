"""Adding a policy takes one module and a registry entry: a toy policy that looks back one step and
reads a goal image of its own camera, defined here and nowhere else, trains, saves, serves and
deploys through robokit's own trainer, checkpoint, server and simulation evaluation."""

from __future__ import annotations

import collections
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from robokit.deploy.client import PolicyClient
from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim
from robokit.deploy.server import PolicyServer
from robokit.policies.base import DataNeeds, Policy, PolicyConfig
from robokit.policies.checkpoint import load_checkpoint
from robokit.policies.registry import get_policy_class, register_policy
from robokit.training.trainer import TrainOptions, train

CAMS = {"top": (24, 32), "wrist": (24, 32)}


@dataclass
class ToyConfig(PolicyConfig):
    """Mean colours of the current frames, the frames before them and the goal, plus qpos."""

    image_shape: tuple[int, int, int] = (24, 32, 3)
    chunk_size: int = 4
    look_back: int = 1
    goal_camera: str = "wrist"

    def data_needs(self) -> DataNeeds:
        return DataNeeds(camera_names=tuple(self.camera_names), history=self.look_back,
                         goal_camera=self.goal_camera)


@register_policy("toy_look_back_goal")
class ToyPolicy(Policy):
    config_class = ToyConfig

    def __init__(self, config: ToyConfig) -> None:
        super().__init__(config)
        k = len(config.camera_names)
        features = config.state_dim + 3 * k * (1 + config.look_back) + 3
        self.head = nn.Linear(features, config.chunk_size * config.action_dim)
        self._frames: collections.deque[np.ndarray] = collections.deque(maxlen=config.look_back)
        self.seen: list[dict[str, Any]] = []

    def _features(self, images: torch.Tensor, history: torch.Tensor, goal: torch.Tensor,
                  qpos: torch.Tensor) -> torch.Tensor:
        def colours(x: torch.Tensor) -> torch.Tensor:  # (..., 3, H, W) uint8 -> (..., 3) in [0, 1]
            return x.float().mean(dim=(-1, -2)) / 255.0

        b = images.shape[0]
        return torch.cat([colours(images).reshape(b, -1), colours(history).reshape(b, -1), colours(goal),
                          self.normalize_qpos(qpos)], dim=1)

    def compute_loss(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # The trainer must have built exactly what data_needs() declared.
        assert batch["history_images"].shape[1] == self.config.look_back
        assert batch["goal_image"].shape[1:] == (3, *self.config.image_shape[:2])
        c = self.config
        features = self._features(batch["images"], batch["history_images"], batch["goal_image"], batch["qpos"])
        pred = self.head(features).view(-1, c.chunk_size, c.action_dim)
        error = (pred - self.normalize_action(batch["action"])).abs().mean(-1)
        l1 = (error * ~batch["is_pad"]).sum() / (~batch["is_pad"]).sum().clamp(min=1)
        return {"loss": l1, "l1": l1}

    def predict_chunk(self, obs: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        c = self.config
        self.seen.append({"cams": sorted(obs["images"]), "goal": obs.get("goal_image") is not None})
        now = np.stack([obs["images"][cam].transpose(2, 0, 1) for cam in c.camera_names])
        if not self._frames:
            self._frames.extend([now] * c.look_back)
        history = torch.from_numpy(np.stack(list(self._frames)))[None]
        self._frames.append(now)
        goal = torch.from_numpy(np.ascontiguousarray(obs["goal_image"].transpose(2, 0, 1)))[None]
        qpos = torch.as_tensor(np.asarray(obs["qpos"], np.float32))[None]
        with torch.no_grad():
            features = self._features(torch.from_numpy(now)[None], history, goal, qpos)
            chunk = self.denormalize_action(self.head(features).view(c.chunk_size, c.action_dim))
        return chunk.numpy().astype(np.float32), {}

    def reset(self) -> None:
        self._frames.clear()


@pytest.fixture()
def dataset(tmp_path: Path, episode_files) -> Path:
    for i in range(4):
        episode_files.v1(tmp_path / "data", i, length=10, cams=CAMS, goal=True)
    return tmp_path / "data"


def test_a_policy_defined_in_one_module_trains_saves_serves_and_deploys(dataset: Path, tmp_path: Path):
    assert get_policy_class("toy_look_back_goal") is ToyPolicy
    result = train(TrainOptions(data=dataset, out=tmp_path / "run", policy="toy_look_back_goal", steps=6,
                                batch_size=4, val_fraction=0.25, val_every=3, num_workers=0))
    assert result.step == 6 and result.best_path is not None

    policy, meta = load_checkpoint(result.best_path)
    assert isinstance(policy, ToyPolicy) and meta["camera_names"] == ["top", "wrist"]

    config = EvalConfig(episodes=2, seed_start=1000, task_set="pick_place", goal="image", max_steps=5,
                        mode="chunk", done_threshold=2.0, timeout_s=30.0)
    with PolicyServer(policy.eval(), bind="tcp://127.0.0.1:0", warmup=False) as server:
        server.start()
        with PolicyClient(server.address, timeout_s=10.0) as client:
            info = client.hello()
        assert (info.history, info.goal_camera, info.instruction) == (1, "wrist", False)
        results = evaluate_in_sim(None, replace(config, server=server.address))
    assert results.episodes == 2 and all(o.steps == 5 for o in results.outcomes)
    assert policy.seen and all(s["goal"] and s["cams"] == ["top", "wrist"] for s in policy.seen)
