"""Write the saved-output regression artifacts that ``tests/policies/test_policy_regression.py`` checks.

For each of ACT, GRP and VIMA this folder holds a tiny model with fixed weights and what it computed
when the files were written:

* ``NAME.pt.xz``: a robokit checkpoint (``save_checkpoint``), xz-compressed;
* ``NAME_io.pt``: the inputs (observations given to ``predict_chunk`` in order, one training batch
  for ``compute_loss`` in eval mode under a fixed torch seed) and the expected outputs (the chunks,
  the done probabilities and the loss terms). It loads with ``torch.load(weights_only=True)``.

The test loads the checkpoint, runs the same inputs and compares, so a refactor cannot silently
change what a model computes.

When to regenerate: only when a change is MEANT to change a model's outputs (a new layer, a fixed
bug in the maths, another loss term), or when the checkpoint format changes on purpose. Then run::

    .venv/bin/python tests/policies/artifacts/make_regression_artifacts.py

and commit the rewritten files together with that change, saying in the message why the outputs
moved. A change that is not meant to alter a model (moving code, renaming locals, a faster path
for the same maths) must pass against the files as they are. Renaming a parameter breaks the
loading of every checkpoint users already have; the test fails on it for that reason.

Weights: the models are built under a fixed seed, then every weight tensor is redrawn sparse from
a seeded generator: about 16 non-zero entries per output unit (never fewer than 1/64 of the
entries), all of one magnitude (the default initialisation's standard deviation over the square
root of the density, so activations keep their usual scale) with random signs; one-dimensional
parameters (biases, norm scales) are rounded to multiples of 1/64. The outputs depend on every
layer as with dense weights, but the files compress to tens of KB: ACT's ``small`` backbone alone
holds about a million parameters, 4 MB as dense float32.

The inputs are given at each model's own image size (no resize on the way in): OpenCV's resize
may round a pixel differently on another CPU, which would move the outputs by more than float32
arithmetic does.
"""

from __future__ import annotations

import io
import lzma
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robokit.hardware.base import PANDA_READY_POSE
from robokit.policies.base import Policy
from robokit.policies.checkpoint import load_checkpoint, save_checkpoint
from robokit.policies.registry import get_policy_class

HERE = Path(__file__).resolve().parent
MODELS = ("act", "grp", "vima")
# The torch seed compute_loss runs under (ACT's latent sample, GRP's goal choice): with it GRP trains
# two samples of the batch on the instruction and two on the goal image.
LOSS_SEED = 2
TASK = "put the red cube in the blue bowl"

CONFIGS: dict[str, dict[str, Any]] = {
    "act": {"camera_names": ["top", "wrist"], "image_shape": (24, 32, 3), "backbone": "small",
            "hidden_dim": 32, "nheads": 4, "dim_feedforward": 64, "enc_layers": 1, "dec_layers": 2,
            "vae_enc_layers": 1, "latent_dim": 8, "chunk_size": 6, "dropout": 0.0},
    "grp": {"camera_names": ["top", "wrist"], "image_shape": (32, 48, 3), "n_embd": 32, "task_dim": 16,
            "n_head": 2, "n_blocks": 2, "chunk_size": 4, "dropout": 0.0, "goal_camera": "wrist",
            "vocabulary": ["blue", "bowl", "cube", "cubes", "drawer", "in", "open", "put", "red", "stack", "the"]},
    "vima": {"camera_names": ["top"], "image_shape": (16, 24, 3), "n_embd": 32, "n_head": 2,
             "xattn_n_heads": 2, "n_layer": 1, "prompt_layers": 1, "chunk_size": 3, "text_max_length": 12,
             "obj_crop": 8, "obj_patch": 4, "obs_grid": (1, 2), "dropout": 0.0, "bins_xyz": (20, 20, 20),
             "bins_rot": 10, "history_len": 2, "task_dim": 16, "stem_channels": (8, 16, 16),
             "vocabulary": ["blue", "bowl", "cube", "cubes", "in", "put", "red", "stack", "the"]},
}


# -- the run the test repeats -----------------------------------------------------------------------
def run(policy: Policy, inputs: dict[str, Any]) -> dict[str, Any]:
    """What ``policy`` computes on ``inputs``: the chunk and done probability of each observation
    (given in order after ``reset()``, so a policy with history uses it), and the loss terms of the
    batch in eval mode under the torch seed :data:`LOSS_SEED` (the global generator is restored)."""
    policy.eval()
    policy.reset()
    chunks, done = [], []
    for obs in inputs["observations"]:
        chunk, extras = policy.predict_chunk(as_numpy(obs))
        chunks.append(torch.from_numpy(np.asarray(chunk, np.float32)))
        done.append(float(extras.get("done", float("nan"))))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(LOSS_SEED)
        loss = {k: float(v) for k, v in policy.compute_loss(dict(inputs["batch"])).items()}
    return {"chunks": chunks, "done": done, "loss": loss}


def as_numpy(value: Any) -> Any:
    """An observation as a policy gets it: tensors become numpy arrays (the file holds tensors)."""
    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, dict):
        return {k: as_numpy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_numpy(v) for v in value]
    return value


def load_policy(name: str, folder: Path = HERE) -> Policy:
    """The saved policy ``name``, read with ``load_checkpoint`` from the decompressed file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.pt"
        path.write_bytes(lzma.decompress((folder / f"{name}.pt.xz").read_bytes()))
        policy, _ = load_checkpoint(path, expected_type=name)
    return policy


def load_io(name: str, folder: Path = HERE) -> dict[str, Any]:
    """``{"inputs": ..., "expected": ...}`` saved for ``name``."""
    return torch.load(folder / f"{name}_io.pt", weights_only=True)


# -- building the artifacts -------------------------------------------------------------------------
def sparse_weights(policy: Policy, seed: int) -> None:
    """Redraw ``policy``'s parameters compressibly, keeping their scale (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(policy.named_parameters()):
            if p.ndim == 1:
                p.copy_(torch.round(p * 64) / 64)
                continue
            fan_in = p.shape[1] * p[0, 0].numel() if p.ndim == 4 else p.shape[-1]
            density = min(1.0, max(1 / 64, 16 / fan_in))
            magnitude = float(p.std()) / density ** 0.5 if p.numel() > 1 else float(p.abs().max())
            keep = torch.rand(p.shape, generator=g) < density
            sign = torch.randint(0, 2, p.shape, generator=g) * 2 - 1
            p.copy_(keep * sign * magnitude)


def norm_stats(rng: np.random.Generator, dim: int = 8) -> dict[str, np.ndarray]:
    """Statistics that make normalisation a visible step (not mean 0, std 1), rounded to 1/16."""
    def r(x: np.ndarray) -> np.ndarray:
        return (np.round(x * 16) / 16).astype(np.float32)
    out = {}
    for key in ("qpos", "action"):
        mean = r(rng.normal(0, 0.5, dim))
        out.update({f"{key}_mean": mean, f"{key}_std": r(rng.uniform(0.5, 2.0, dim)),
                    f"{key}_min": mean - 2, f"{key}_max": mean + 2})
    return out


def images(rng: np.random.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8))


def ready_qpos(rng: np.random.Generator, n: tuple[int, ...] = ()) -> torch.Tensor:
    """Joint positions near the ready pose (VIMA codes actions as TCP poses through fk/ik)."""
    arm = PANDA_READY_POSE + rng.normal(scale=0.05, size=(*n, 7))
    return torch.from_numpy(np.concatenate([arm, rng.uniform(0, 1, (*n, 1))], -1).astype(np.float32))


def act_inputs(rng: np.random.Generator) -> dict[str, Any]:
    h, w, _ = CONFIGS["act"]["image_shape"]
    cams = CONFIGS["act"]["camera_names"]
    obs = {"qpos": torch.from_numpy(rng.normal(size=8).astype(np.float32)),
           "images": {c: images(rng, (h, w, 3)) for c in cams}}
    is_pad = torch.zeros(2, 6, dtype=torch.bool)
    is_pad[0, 4:] = True
    done = torch.zeros(2, 6)
    done[1, 3:] = 1.0
    batch = {"images": images(rng, (2, len(cams), 3, h, w)),
             "qpos": torch.from_numpy(rng.normal(size=(2, 8)).astype(np.float32)),
             "action": torch.from_numpy(rng.normal(size=(2, 6, 8)).astype(np.float32)),
             "is_pad": is_pad, "done": done}
    return {"observations": [obs], "batch": batch}


def grp_inputs(rng: np.random.Generator) -> dict[str, Any]:
    h, w, _ = CONFIGS["grp"]["image_shape"]
    cams = CONFIGS["grp"]["camera_names"]

    def obs(**goal: Any) -> dict[str, Any]:
        return {"qpos": torch.from_numpy(rng.normal(size=8).astype(np.float32)),
                "images": {c: images(rng, (h, w, 3)) for c in cams}, **goal}

    done = torch.zeros(4, 4)
    done[2, 2:] = 1.0
    batch = {"images": images(rng, (4, len(cams), 3, h, w)),
             "qpos": torch.from_numpy(rng.normal(size=(4, 8)).astype(np.float32)),
             "action": torch.from_numpy(rng.normal(size=(4, 4, 8)).astype(np.float32)),
             "is_pad": torch.tensor([[False] * 3 + [True]] + [[False] * 4] * 3), "done": done,
             "task": [TASK, "stack the cubes", TASK, "open the drawer"],
             "goal_image": images(rng, (4, 3, h, w))}
    # One observation follows the instruction, the next one a goal image of the goal camera.
    return {"observations": [obs(task=TASK), obs(goal_image=images(rng, (h, w, 3)))], "batch": batch}


def vima_inputs(rng: np.random.Generator) -> dict[str, Any]:
    h, w, _ = CONFIGS["vima"]["image_shape"]
    objects = [{"name": "red_cube", "box": [2, 3, 12, 14], "camera": "top"},
               {"name": "blue_bowl", "box": [10, 1, 22, 9], "camera": "top"}]

    def obs() -> dict[str, Any]:
        return {"qpos": ready_qpos(rng), "task": TASK, "images": {"top": images(rng, (h, w, 3))},
                "objects": objects}

    b, chunk = 2, CONFIGS["vima"]["chunk_size"]
    lo = rng.uniform(0, 0.5, (b, 2, 2))
    batch = {"images": images(rng, (b, 1, 3, h, w)), "qpos": ready_qpos(rng, (b,)),
             "action": ready_qpos(rng, (b, chunk)), "is_pad": torch.tensor([[False, False, True], [False] * 3]),
             "done": torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]), "task": [TASK, "stack the cubes"],
             "object_boxes": torch.from_numpy(np.concatenate([lo, lo + 0.3], -1)).float(),
             "object_camera": torch.zeros(b, 2, dtype=torch.long),
             "object_valid": torch.tensor([[True, True], [True, False]]),
             "object_names": [["red_cube", "blue_bowl"]] * b,
             "history_images": images(rng, (b, 1, 1, 3, h, w)), "history_qpos": ready_qpos(rng, (b, 1)),
             "history_action": ready_qpos(rng, (b, 1)), "history_valid": torch.tensor([[True], [False]])}
    # The second observation is predicted with the first one in the policy's history.
    return {"observations": [obs(), obs()], "batch": batch}


INPUTS = {"act": act_inputs, "grp": grp_inputs, "vima": vima_inputs}


def build(name: str, seed: int = 0) -> tuple[Policy, dict[str, Any]]:
    """The regression model ``name`` with its fixed weights and statistics, and its inputs."""
    rng = np.random.default_rng(seed)
    cls = get_policy_class(name)
    torch.manual_seed(seed)
    policy = cls(cls.config_class(**CONFIGS[name]))
    if name == "vima":  # its offset head starts at zero: give it weights so its outputs are checked too
        torch.nn.init.normal_(policy.offset_head[-1].weight, std=0.05)
    sparse_weights(policy, seed)
    if name == "vima":  # actions near the ready pose; object tokens in use as after training on boxes
        stats = norm_stats(rng)
        stats.update(action_min=np.r_[PANDA_READY_POSE - 0.5, 0.0].astype(np.float32),
                     action_max=np.r_[PANDA_READY_POSE + 0.5, 1.0].astype(np.float32))
        policy.set_norm_stats(stats)
        policy.objects_trained.fill_(True)
    else:
        policy.set_norm_stats(norm_stats(rng))
    return policy.eval(), INPUTS[name](rng)


def write(name: str, folder: Path = HERE) -> dict[str, Any]:
    """Write ``name``'s checkpoint and inputs/outputs into ``folder``; return the outputs."""
    policy, inputs = build(name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.pt"
        save_checkpoint(path, policy, {"purpose": "saved-output regression test"})
        (folder / f"{name}.pt.xz").write_bytes(lzma.compress(path.read_bytes(), preset=9 | lzma.PRESET_EXTREME))
    # The expected outputs come from the checkpoint as the test loads it.
    loaded = load_policy(name, folder)
    expected = run(loaded, inputs)
    buffer = io.BytesIO()
    torch.save({"inputs": inputs, "expected": expected}, buffer)
    (folder / f"{name}_io.pt").write_bytes(buffer.getvalue())
    return expected


def bin_margin(policy: Policy, inputs: dict[str, Any]) -> float:
    """VIMA: the smallest gap between the best and second-best bin logit over the predicted chunks.

    Its chunks are the argmax bins, so a near tie could flip on another CPU; a margin far above
    float32 noise makes the saved chunks a fair test."""
    o = policy.bins.offsets
    gaps: list[float] = []

    def hook(_module: Any, _args: Any, out: torch.Tensor) -> None:
        logits = out.reshape(-1, policy.bins.total)
        for d in range(len(policy.bins.counts)):
            top2 = logits[:, o[d]:o[d + 1]].topk(2, dim=-1).values
            gaps.append(float((top2[:, 0] - top2[:, 1]).min()))

    handle = policy.action_head.register_forward_hook(hook)
    try:
        policy.reset()
        for obs in inputs["observations"]:
            policy.predict_chunk(as_numpy(obs))
    finally:
        handle.remove()
        policy.reset()
    return min(gaps)


def main() -> None:
    for name in MODELS:
        expected = write(name)
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 1024:.0f} KB" for p in sorted(HERE.glob(f"{name}*")))
        print(f"{name}: {sizes}; loss {expected['loss']}")
    margin = bin_margin(load_policy("vima"), load_io("vima")["inputs"])
    print(f"vima: smallest bin logit margin {margin:.2e}")
    if margin < 1e-3:
        raise SystemExit("the VIMA chunks sit near a tie between two bins; change its inputs' seed")


if __name__ == "__main__":
    main()
