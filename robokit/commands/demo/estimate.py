"""How long the demo will take on this machine, measured before it starts.

Training is most of the demo's time, and the speed of a training step differs more than twofold
between machines of the same type (and again when other processes share the CPU), so a fixed
figure would mislead. Instead the demo times a few training steps of its own model on synthetic
data of the demo's shapes (about a second) and scales: the training stage is ``steps`` such steps,
and the other stages (scene, expert, recording, deployment) take a number of training steps' worth
of time, per demonstration recorded and per episode evaluated, as where it was measured: they slow
down with the machine in about the same proportion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from robokit.commands.demo.config import DemoConfig

if TYPE_CHECKING:
    import torch

# The simulated Panda's joint positions + gripper: the demo's state and action sizes.
PANDA_DIM = 8
# Everything but the training steps (scene, expert, recording, deployment, the trainer's start-up and
# checkpoints), in training steps at batch REFERENCE_BATCH. Measured on a 2-core machine of the
# demo's type with AVX2 kernels (docs/demo.md), where a step took 0.10 s: recording 100
# demonstrations 50 s (5 steps' worth each), evaluating 100 episodes 32 s (3 each), the rest ~14 s.
# A step's time is about proportional to its batch, so other batches scale the counts.
FIXED_STEPS = 140
STEPS_PER_DEMONSTRATION = 5
STEPS_PER_EVALUATION = 3
REFERENCE_BATCH = 16
TIMED_STEPS = 3  # after one warm-up step (its allocations and oneDNN kernel choices are slower)


@dataclass
class Estimate:
    """The expected wall time of a demo run, and what it was computed from."""

    step_s: float  # one training step, measured now
    train_s: float
    other_s: float

    @property
    def total_s(self) -> float:
        return self.train_s + self.other_s


def measure_step_seconds(cfg: DemoConfig, timed_steps: int = TIMED_STEPS) -> float:
    """Median wall time of one training step of the demo's ACT (batch, images, chunk of ``cfg``)."""
    times = training_step_times(cfg, timed_steps)
    return sorted(times)[len(times) // 2]


def training_step_times(cfg: DemoConfig, steps: int, warmup: int = 1) -> list[float]:
    """Wall times of ``steps`` training steps of the demo's ACT and optimizer on one synthetic batch
    of ``cfg``'s shapes, after ``warmup`` untimed ones (their allocations and oneDNN kernel choices
    are slower)."""
    import torch

    from robokit.policies.act.model import ACTConfig, ACTPolicy
    from robokit.training.optimizer import adamw
    from robokit.training.runtime import pick_device

    device = pick_device(cfg.device)
    height, width = cfg.image_size
    policy_cfg = cast(ACTConfig, ACTConfig.from_dict({
        **cfg.policy_config, "camera_names": list(cfg.cameras), "image_shape": (height, width, 3),
        "state_dim": PANDA_DIM, "action_dim": PANDA_DIM, "chunk_size": cfg.chunk_size, "fps": cfg.fps}))
    # A generator of its own: the measurement leaves the global random state (and so the recorded
    # data and the training run) exactly as it would be without it.
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        policy = ACTPolicy(policy_cfg).to(device).train()
    batch = synthetic_batch(cfg, gen)
    optimizer = adamw(policy.optimizer_param_groups(cfg.lr, 1e-4), cfg.lr, 1e-4, device)
    times = []
    with torch.random.fork_rng(devices=[]):
        for i in range(warmup + steps):
            start = time.perf_counter()
            loss = policy.compute_loss(batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def synthetic_batch(cfg: DemoConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A training batch of the demo's shapes with random contents (a step's time does not depend on them)."""
    import torch

    b, k = cfg.batch_size, len(cfg.cameras)
    height, width = cfg.image_size
    batch = {
        "images": torch.randint(0, 256, (b, k, 3, height, width), dtype=torch.uint8, generator=generator),
        "qpos": torch.randn(b, PANDA_DIM, generator=generator),
        "action": torch.randn(b, cfg.chunk_size, PANDA_DIM, generator=generator),
        "is_pad": torch.zeros(b, cfg.chunk_size, dtype=torch.bool),
    }
    if cfg.policy_config.get("object_pointer"):  # its training target: the object's centre per camera
        batch["task_object_xy"] = torch.rand(b, k, 2, generator=generator)
        batch["task_object_valid"] = torch.ones(b, k, dtype=torch.bool)
    return batch


def estimate(cfg: DemoConfig, step_s: float | None = None) -> Estimate:
    """The expected duration of a demo with ``cfg`` (``step_s`` measured now unless given)."""
    step = measure_step_seconds(cfg) if step_s is None else step_s
    other_steps = (FIXED_STEPS + STEPS_PER_DEMONSTRATION * cfg.episodes
                   + STEPS_PER_EVALUATION * cfg.eval_episodes) * REFERENCE_BATCH / cfg.batch_size
    other = other_steps * step
    return Estimate(step_s=step, train_s=cfg.steps * step, other_s=other)
