"""Does the deploy path agree with the demonstrations? The scripted expert's own actions, replayed
as action chunks through the same control loop a policy is evaluated in.

A policy that imitated its demonstrations perfectly would output, at every query, the next
``chunk_size`` actions the scripted expert took on that scene. This script builds exactly that
"policy": for each evaluation episode it runs the expert on the same seed (and instruction) in a
scene of its own, keeps the action sequence (plus the recorder's end frames), and answers each
query of :func:`robokit.deploy.evaluate.evaluate_in_sim` with the rows from the query's step on.
The run goes through everything a trained policy goes through — observation, safety filter,
chunking or temporal ensembling, the watchdog, the success check — so a success rate below the
expert's own says the evaluation path and the demonstrations disagree, and by how much.

Baseline, same run, same seeds: the expert driven directly (closed loop, no deploy loop). The
ratio loop / direct is printed per mode.

    .venv/bin/python benchmarks/expert_through_loop.py                        # multi, 60 seeds
    .venv/bin/python benchmarks/expert_through_loop.py --task-set pick_place --episodes 50
    .venv/bin/python benchmarks/expert_through_loop.py --modes chunk,ensemble --query-every 10

Writes benchmarks/results/expert_through_loop.json (``--json PATH`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim
from robokit.hardware.sim import PandaSimEnv, list_tasks
from robokit.hardware.sim.expert import run_expert_episode

RESULTS = Path(__file__).resolve().parent / "results"
END_FRAMES = 5  # what the recorder appends after the expert finishes (the demo's --end-frames)


class ReplayedExpert:
    """A stand-in policy whose chunks are the scripted expert's own actions on the same scene.

    Episodes are taken in :func:`evaluate_in_sim`'s order (seed ``seed_start + i``, instructions in
    turn); the query step is counted, which holds in the simulation's lock-step mode, where a query
    is answered before the next tick (``ensemble``: every step; ``chunk``: every ``query_every``).
    """

    name = "expert-replay"

    def __init__(self, task_set: str, seed_start: int, cameras: tuple[str, ...], image_hw: tuple[int, int],
                 fps: float, chunk_size: int, query_stride: int) -> None:
        self.config = SimpleNamespace(camera_names=list(cameras), image_shape=(*image_hw, 3), state_dim=8,
                                      action_dim=8, chunk_size=chunk_size, fps=fps)
        self._instructions = list_tasks(task_set)
        self._seed_start = seed_start
        self._stride = query_stride
        self._env = PandaSimEnv(task=task_set, seed=seed_start, image_size=image_hw, camera_names=(),
                                control_hz=fps)
        self._episode = -1
        self._plan = np.zeros((1, 8), np.float32)
        self._calls = 0

    def reset(self) -> None:
        self._episode += 1
        seed = self._seed_start + self._episode
        task = self._instructions[self._episode % len(self._instructions)] if len(self._instructions) > 1 else None
        env = self._env
        env.reset(seed=seed, task=task)
        expert = env.task.expert()
        actions = []
        while (action := expert.next_action(env.robot.read())) is not None:
            actions.append(action)
            env.robot.send_action(action)
            env.step()
        self._plan = np.asarray(actions + [actions[-1]] * END_FRAMES, np.float32)
        self._calls = 0

    def predict_chunk(self, obs: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        t = self._calls * self._stride
        self._calls += 1
        rows = np.arange(t, t + self.config.chunk_size).clip(max=len(self._plan) - 1)
        return self._plan[rows], {}

    def close(self) -> None:
        self._env.close()


def direct_expert(task_set: str, seeds: range, fps: float) -> float:
    """Success rate of the expert driven directly on ``seeds`` (instructions in turn, as evaluated)."""
    tasks = list_tasks(task_set)
    wins = 0
    with PandaSimEnv(task=task_set, seed=seeds.start, camera_names=(), control_hz=fps) as env:
        for i, seed in enumerate(seeds):
            wins += run_expert_episode(env, seed, tasks[i % len(tasks)] if len(tasks) > 1 else None).success
    return wins / len(seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task-set", default="multi", choices=["pick_place", "multi"])
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--seed-start", type=int, default=1000)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--image-size", default="64x80")
    parser.add_argument("--cameras", default="top,wrist")
    parser.add_argument("--chunk-size", type=int, default=20)
    parser.add_argument("--query-every", type=int, default=10, help="chunk mode's query interval")
    parser.add_argument("--modes", default="chunk,ensemble")
    parser.add_argument("--json", type=Path, default=RESULTS / "expert_through_loop.json")
    args = parser.parse_args()
    h, w = (int(v) for v in args.image_size.lower().split("x"))
    cameras = tuple(c for c in args.cameras.split(",") if c)
    seeds = range(args.seed_start, args.seed_start + args.episodes)

    t0 = time.perf_counter()
    baseline = direct_expert(args.task_set, seeds, args.fps)
    print(f"expert, direct: {baseline:.0%} on {len(seeds)} seeds ({time.perf_counter() - t0:.0f} s)")
    results: dict[str, Any] = {"benchmark": "expert_through_loop", "task_set": args.task_set,
                               "episodes": args.episodes, "seed_start": args.seed_start, "fps": args.fps,
                               "chunk_size": args.chunk_size, "expert_direct": baseline, "modes": {}}
    for mode in [m for m in args.modes.split(",") if m]:
        stride = args.query_every if mode == "chunk" else 1
        policy = ReplayedExpert(args.task_set, args.seed_start, cameras, (h, w), args.fps, args.chunk_size, stride)
        t0 = time.perf_counter()
        try:
            out = evaluate_in_sim(policy, EvalConfig(episodes=args.episodes, seed_start=args.seed_start,
                                                     task_set=args.task_set, mode=mode,
                                                     query_every=stride if mode == "chunk" else None,
                                                     done_threshold=2.0))
        finally:
            policy.close()
        rate = out.success_rate
        failures = [{"seed": o.seed, "task": o.task, "reason": o.reason} for o in out.outcomes if not o.success]
        results["modes"][mode] = {"success_rate": rate, "ratio_to_direct": rate / baseline if baseline else None,
                                  "per_task": out.per_task(), "failures": failures,
                                  "seconds": round(time.perf_counter() - t0, 1)}
        print(f"expert through the loop, {mode}: {rate:.0%} ({out.successes}/{out.episodes}); "
              f"ratio to direct {rate / baseline if baseline else float('nan'):.2f}")
        for task, (wins, n) in sorted(out.per_task().items()):
            print(f"    {wins:3d}/{n:<3d} {task}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"-> {args.json}")


if __name__ == "__main__":
    main()
