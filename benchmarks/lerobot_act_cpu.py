"""LeRobot's ACT on the CPU, timed on command: the anchor ``cpu_inference.py --lerobot-python`` runs.

Runs in a separate environment that has ``lerobot`` installed (it pins its own torch, which robokit's
environment need not share), as a persistent worker: JSON commands on stdin, one JSON reply per line
on stdout. Staying up between calls lets the caller interleave LeRobot's calls with robokit's round
by round, so both see the same machine, without paying an import and a model build per call.

The policy is LeRobot's ``ACTConfig`` at its defaults -- ResNet-18 (from scratch:
``pretrained_backbone_weights=None``, nothing is downloaded), dim_model 512, 8 heads, feed-forward
3200, 4 encoder layers, 1 decoder layer, chunk 100, the VAE (unused at inference) -- with K cameras
of HxW, state and action of 8, random weights and statistics, in eval mode. One call is what
LeRobot's own record/eval loop does for a new chunk (``common.control_utils.predict_action``):
``prepare_observation_for_inference`` (uint8 HWC -> float CHW), the preprocessor (normalisation,
batching), ``predict_action_chunk`` and the postprocessor (de-normalisation) on the chunk, all under
``torch.inference_mode``. ``predict_action_chunk`` alone on the preprocessed batch ("model") is timed
too, to show how little the processors add.

Commands (one JSON object a line):

    {"cmd": "setup", "cameras": K, "image_hw": [H, W]}  -> {"ok": true, "chunk_shape": [...], "finite": ...}
    {"cmd": "time", "what": "pipeline" | "model"}        -> {"ms": milliseconds of one call}
    {"cmd": "quit"}

Started as ``python lerobot_act_cpu.py --threads 2``; the first reply line is the versions. The
environment, outside the repository (LeRobot 0.6.1 needs Python >= 3.12 and torch < 2.12):

    uv venv --python 3.12 /work/lerobot-venv
    uv pip install --python /work/lerobot-venv/bin/python lerobot==0.6.1 torch==2.11.0 torchvision==0.26.0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch


def build(cameras: int, image_hw: tuple[int, int]) -> dict[str, Any]:
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.act.processor_act import make_act_pre_post_processors

    torch.manual_seed(0)
    h, w = image_hw
    images = [f"observation.images.cam{i}" for i in range(cameras)]
    config = ACTConfig(
        input_features={"observation.state": PolicyFeature(FeatureType.STATE, (8,)),
                        **{name: PolicyFeature(FeatureType.VISUAL, (3, h, w)) for name in images}},
        output_features={"action": PolicyFeature(FeatureType.ACTION, (8,))},
        pretrained_backbone_weights=None, device="cpu")
    policy = ACTPolicy(config).eval()
    rng = np.random.default_rng(0)
    stats: dict[str, dict[str, torch.Tensor]] = {
        key: {"mean": torch.tensor(rng.normal(size=8), dtype=torch.float32),
              "std": torch.tensor(rng.uniform(0.1, 1, 8), dtype=torch.float32)}
        for key in ("observation.state", "action")}
    for name in images:  # ImageNet's, as a pretrained backbone would use
        stats[name] = {"mean": torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1),
                       "std": torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)}
    pre, post = make_act_pre_post_processors(config, dataset_stats=stats)
    obs = {"observation.state": rng.normal(size=8).astype(np.float32),
           **{name: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for name in images}}
    return {"policy": policy, "pre": pre, "post": post, "obs": obs}


def pipeline(state: dict[str, Any]) -> torch.Tensor:
    from lerobot.policies import prepare_observation_for_inference

    with torch.inference_mode():
        batch = prepare_observation_for_inference(dict(state["obs"]), torch.device("cpu"))
        batch = state["pre"](batch)
        chunk = state["policy"].predict_action_chunk(batch)
        return state["post"](chunk)  # type: ignore[no-any-return]


def model_only(state: dict[str, Any]) -> torch.Tensor:
    with torch.inference_mode():
        return state["policy"].predict_action_chunk(state["batch"])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import lerobot

    out = sys.stdout
    out.write(json.dumps({"lerobot": lerobot.__version__, "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "python": sys.version.split()[0]}) + "\n")
    out.flush()
    state: dict[str, Any] = {}
    for line in sys.stdin:
        request = json.loads(line)
        reply: dict[str, Any]
        if request["cmd"] == "quit":
            break
        if request["cmd"] == "setup":
            state = build(int(request["cameras"]), tuple(request["image_hw"]))  # type: ignore[arg-type]
            from lerobot.policies import prepare_observation_for_inference

            with torch.inference_mode():
                state["batch"] = state["pre"](prepare_observation_for_inference(dict(state["obs"]),
                                                                                torch.device("cpu")))
            chunk = pipeline(state)
            reply = {"ok": True, "chunk_shape": list(chunk.shape), "finite": bool(torch.isfinite(chunk).all()),
                     "parameters": sum(p.numel() for p in state["policy"].parameters())}
        elif request["cmd"] == "time":
            fn = pipeline if request.get("what", "pipeline") == "pipeline" else model_only
            t0 = time.perf_counter()
            fn(state)
            reply = {"ms": (time.perf_counter() - t0) * 1e3}
        else:
            reply = {"error": f"unknown command {request['cmd']!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
