"""Done-when check: a small ACT trained on the sim task looks at the cube while grasping (slow).

Scripted pick-and-place demonstrations from the simulator (wrist camera, 64x80), a small ACT
trained on them from scratch, then on held-out scenes at the grasping steps: the hottest cell of
the head-fused (max) decoder cross-attention, averaged over the chunk's action queries, must
overlap the cube's projected box much more often than a random cell does. A few minutes on two
cores (training 2,500 steps), hence ``slow``; the same run checks the `robokit viz attention` tree
of the trained checkpoint.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch._dynamo  # must come before the sim's EGL probe, or its later import segfaults

from robokit.cli import main
from robokit.episodes.writer import EpisodeWriter
from robokit.hardware.sim import PandaSimEnv
from robokit.policies.act.model import ACTConfig, ACTPolicy
from robokit.policies.checkpoint import save_checkpoint
from robokit.viz.attention import fuse_heads
from robokit.viz.layout import TokenLayout

pytestmark = pytest.mark.slow

CAM, IMG, HZ, CHUNK = "wrist", (64, 80), 15.0, 10
TRAIN_SEEDS, TEST_SEEDS = range(20), range(100, 104)
STEPS, BATCH = 2500, 16
GRASPING = ("pre_grasp", "grasp", "close")


def record(seed: int) -> list[tuple]:
    """(qpos+gripper, action, image, cube box, expert phase) per step of one scripted episode."""
    env = PandaSimEnv(task="pick_place", seed=seed, image_size=IMG, camera_names=(CAM,), control_hz=HZ)
    cube = env.task.object_names[0]
    expert = env.task.expert()
    steps = []
    while True:
        state = env.robot.read()
        action = expert.next_action(state)
        if action is None:
            break
        qpos = np.r_[state.qpos, state.gripper].astype(np.float32)
        steps.append((qpos, action, env.render(CAM).copy(), env.object_box(CAM, cube), expert.phase))
        env.robot.command(action[:7], float(action[7]))
        env.step()
    env.close()
    return steps


def train_act(episodes: list[list[tuple]]) -> ACTPolicy:
    qpos = np.stack([s[0] for ep in episodes for s in ep])
    act = np.stack([s[1] for ep in episodes for s in ep])
    stats = {
        "qpos_mean": qpos.mean(0),
        "qpos_std": qpos.std(0) + 1e-2,
        "qpos_min": qpos.min(0),
        "qpos_max": qpos.max(0),
        "action_mean": act.mean(0),
        "action_std": act.std(0) + 1e-2,
        "action_min": act.min(0),
        "action_max": act.max(0),
    }
    cfg = ACTConfig(
        camera_names=[CAM],
        image_shape=(*IMG, 3),
        chunk_size=CHUNK,
        backbone="small",
        hidden_dim=64,
        nheads=4,
        dim_feedforward=256,
        enc_layers=2,
        dec_layers=1,
        vae_enc_layers=1,
        latent_dim=8,
        dropout=0.0,
        done_weight=0.0,
        lr=1e-3,
        lr_backbone=1e-3,
    )
    torch.manual_seed(0)
    policy = ACTPolicy(cfg)
    policy.set_norm_stats(stats)
    opt = torch.optim.AdamW(policy.optimizer_param_groups(1e-3, 1e-4), lr=1e-3, weight_decay=1e-4)
    index = [(i, t) for i, ep in enumerate(episodes) for t in range(len(ep))]
    rng = np.random.default_rng(0)
    policy.train()
    for _ in range(STEPS):
        images, q, a, pad = [], [], [], []
        for k in rng.choice(len(index), BATCH):
            i, t = index[k]
            chunk = np.stack([s[1] for s in episodes[i][t : t + CHUNK]])
            a.append(np.concatenate([chunk, np.zeros((CHUNK - len(chunk), 8), np.float32)]))
            pad.append(np.arange(CHUNK) >= len(chunk))
            images.append(episodes[i][t][2].transpose(2, 0, 1)[None])
            q.append(episodes[i][t][0])
        loss = policy.compute_loss(
            {
                "images": torch.from_numpy(np.stack(images)),
                "qpos": torch.from_numpy(np.stack(q)),
                "action": torch.from_numpy(np.stack(a)),
                "is_pad": torch.from_numpy(np.stack(pad)),
            }
        )
        opt.zero_grad()
        loss["loss"].backward()
        opt.step()
    return policy.eval()


def overlapping_cells(box: tuple[int, int, int, int], grid: tuple[int, int]) -> np.ndarray:
    """bool (h, w): grid cells whose pixel area touches the box."""
    h, w = grid
    ch, cw = IMG[0] / h, IMG[1] / w
    x0, y0, x1, y1 = box
    rows = (np.arange(h) * ch <= y1) & ((np.arange(h) + 1) * ch >= y0)
    cols = (np.arange(w) * cw <= x1) & ((np.arange(w) + 1) * cw >= x0)
    return rows[:, None] & cols[None, :]


def test_trained_act_attends_to_the_cube_while_grasping(tmp_path):
    torch.set_num_threads(1)  # the machine is shared: one thread per process trains fastest
    policy = train_act([record(s) for s in TRAIN_SEEDS])
    hits, chance, n = 0, 0.0, 0
    held_out = [record(s) for s in TEST_SEEDS]
    for ep in held_out:
        for qpos, _, image, box, phase in ep:
            if phase not in GRASPING or box is None:
                continue
            _, extras = policy.predict_chunk({"qpos": qpos, "images": {CAM: image}}, capture_attention=True)
            cap = extras["attention"]
            layout = TokenLayout.from_dict(cap["layout"])
            (view,) = layout.cameras()
            fused = fuse_heads(cap["maps"][None, :, None, None], layout).weights  # (1, L, Q, T), heads: max
            heat = fused[0, 0][:, view.index].mean(axis=0)  # the chunk's queries together, (h, w)
            cells = overlapping_cells(box, view.grid)
            hits += bool(cells.flat[int(np.argmax(heat))])
            chance += float(cells.mean())
            n += 1
    rate, chance = hits / n, chance / n
    assert n >= 100
    assert rate > chance + 0.2 and rate > 1.5 * chance, (
        f"hottest cell on the cube {rate:.2f}, chance {chance:.2f}"
    )

    # the same checkpoint through the CLI: the tree the issue specifies
    ckpt = tmp_path / "act.pt"
    save_checkpoint(ckpt, policy, {})
    w = EpisodeWriter(tmp_path / "data", 0, camera_shapes={CAM: (*IMG, 3)}, attrs={"fps": HZ, "task": "pick"})
    for k, (qpos, action, image, _, _) in enumerate(held_out[0]):
        w.append(qpos, None, action, {CAM: image}, t_robot=k / HZ)
    ep = w.save()
    grasp = next(k for k, s in enumerate(held_out[0]) if s[4] == "grasp")
    main(
        [
            "viz",
            "attention",
            str(ckpt),
            "--episode",
            str(ep),
            "--steps",
            str(grasp),
            "--out",
            str(tmp_path / "viz"),
            "--no-history",
            "--device",
            "cpu",
        ]
    )
    root = tmp_path / "viz" / f"inference_timestep_{grasp}"
    files = {os.path.relpath(p, root) for p in root.rglob("*.jpg") if "overview" not in p.parts}
    assert files == {f"action_token_{i}/layer_0/fused_attention_on_{CAM}.jpg" for i in range(CHUNK)}
