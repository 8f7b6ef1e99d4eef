"""LeRobotDataset v3.0 export: speed (frames/s) and image fidelity (PSNR) on a sim dataset.

Records scripted sim episodes (or takes ``--data``), then, in the same run:

* baseline: the episodes' frames read from HDF5 and encoded to one MP4 per camera with the same codec
  and settings, nothing else (the floor any export pays: decoding the files and encoding video);
* ours: ``robokit export --format lerobot`` (that, plus the parquet tables, stats and metadata);
* fidelity: the export imported back; PSNR per camera against the recorded frames, next to the
  PSNR of yuv420p alone (the pixel format LeRobot uses; no encoder can beat it);
* with ``--lerobot-python PY`` (a separate venv with ``lerobot[dataset]``; robokit's venv never
  needs it): LeRobot itself loads the export (``LeRobotDataset(repo_id, root=...)``) and every
  frame's state, action, task and images are compared with the recording; and LeRobot's own writer
  (``LeRobotDataset.create`` + ``add_frame`` + ``save_episode``, its default AV1 encoder) writes the
  same frames, timed, as a second baseline.

Min and median of ``--repeats`` runs; writes benchmarks/results/lerobot_export.json.

    python benchmarks/lerobot_export.py                       # 2 episodes at 240x320
    python benchmarks/lerobot_export.py --lerobot-python /tmp/lerobot-venv/bin/python
    python benchmarks/lerobot_export.py --quick               # smoke run: 32x40, one repeat
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from robokit.episodes.reader import list_episodes, open_episode
from robokit.lerobot.export import export_lerobot
from robokit.lerobot.importer import import_lerobot
from robokit.lerobot.video import DEFAULT_CRF, VideoWriter, pick_codec

RESULTS = Path(__file__).resolve().parent / "results" / "lerobot_export.json"

# Run by the lerobot venv's Python: argv = export folder, originals .npz, work folder. Prints one JSON line.
LEROBOT_SIDE = r'''
import json, shutil, sys, time
from pathlib import Path
import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

export, originals, work = Path(sys.argv[1]), np.load(sys.argv[2]), Path(sys.argv[3])
cams = [str(c) for c in originals["cams"]]
lengths = originals["lengths"].tolist()
tasks = [str(t) for t in originals["tasks"]]
out = {}
t0 = time.perf_counter()
ds = LeRobotDataset("local/robokit_export", root=export)
out["backend"] = ds._video_backend
out["num_frames"], out["num_episodes"], out["fps"] = ds.num_frames, ds.num_episodes, ds.fps
state_diff = action_diff = 0.0
task_ok = True
sq = {c: 0.0 for c in cams}
starts = np.cumsum([0] + lengths)
for i in range(len(ds)):
    item = ds[i]
    ep, t = int(item["episode_index"]), int(item["frame_index"])
    g = starts[ep] + t
    state_diff = max(state_diff, float(np.abs(item["observation.state"].numpy() - originals["state"][g]).max()))
    action_diff = max(action_diff, float(np.abs(item["action"].numpy() - originals["action"][g]).max()))
    task_ok &= item["task"] == tasks[ep]
    for c in cams:
        img = np.round(item[f"observation.images.{c}"].numpy().transpose(1, 2, 0) * 255.0)
        sq[c] += float(np.mean((img - originals[f"img_{c}"][g].astype(np.float64)) ** 2))
out["load_and_read_s"] = time.perf_counter() - t0
out["max_state_diff"], out["max_action_diff"], out["tasks_equal"] = state_diff, action_diff, bool(task_ok)
out["psnr"] = {c: 10 * np.log10(255.0**2 / (sq[c] / len(ds))) for c in cams}

# LeRobot's own writer on the same frames (its default encoder), as a baseline for export speed.
root = work / "lerobot_writer"
shutil.rmtree(root, ignore_errors=True)
h, w = originals[f"img_{cams[0]}"].shape[1:3]
dims = originals["state"].shape[1]
features = {"observation.state": {"dtype": "float32", "shape": (dims,), "names": None},
            "action": {"dtype": "float32", "shape": (originals["action"].shape[1],), "names": None}}
for c in cams:
    features[f"observation.images.{c}"] = {"dtype": "video", "shape": (h, w, 3),
                                           "names": ["height", "width", "channels"]}
t0 = time.perf_counter()
writer = LeRobotDataset.create("local/lerobot_writer", fps=int(originals["fps"]), features=features, root=root)
for ep, n in enumerate(lengths):
    for t in range(n):
        g = starts[ep] + t
        frame = {"observation.state": originals["state"][g], "action": originals["action"][g], "task": tasks[ep]}
        frame.update({f"observation.images.{c}": originals[f"img_{c}"][g] for c in cams})
        writer.add_frame(frame)
    writer.save_episode()
writer.finalize()
out["lerobot_writer_s"] = time.perf_counter() - t0
print("RESULT " + json.dumps(out))
'''


def record(out: Path, episodes: int, size: str) -> None:
    cmd = [sys.executable, "-m", "robokit.cli", "record", "--sim", "--teleop", "scripted", "--episodes",
           str(episodes), "--image-size", size, "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "MUJOCO_GL": "egl"})


def encode_only(data: Path, dest: Path, codec: str, crf: int) -> float:
    """The baseline: read every frame from the episode files and encode one MP4 per camera."""
    shutil.rmtree(dest, ignore_errors=True)
    start = time.perf_counter()
    paths = list_episodes(data)
    writers: dict[str, VideoWriter] = {}
    for path in paths:
        with open_episode(path) as ep:
            for cam in ep.camera_names:
                if cam not in writers:
                    h, w, _ = ep.image_shape(cam)
                    writers[cam] = VideoWriter(dest / f"{cam}.mp4", round(ep.fps or 30), h, w, codec, crf=crf)
                for lo in range(0, ep.length, 64):
                    writers[cam].write(ep.images(cam, lo, min(lo + 64, ep.length)))
    for writer in writers.values():
        writer.close()
    return time.perf_counter() - start


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def yuv420_psnr(frames: np.ndarray) -> float:
    import av

    back = np.stack([av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                     .reformat(format="yuv420p").to_ndarray(format="rgb24") for f in frames])
    return psnr(frames, back)


def load_originals(data: Path) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {"state": [], "action": []}
    lengths, tasks, cams, fps = [], [], [], 0.0
    for path in list_episodes(data):
        with open_episode(path) as ep:
            cams = list(ep.camera_names)
            parts["state"].append(ep.qpos())
            parts["action"].append(ep.action())
            for cam in cams:
                parts.setdefault(f"img_{cam}", []).append(ep.images(cam))
            lengths.append(ep.length)
            tasks.append(ep.task or "")
            fps = ep.fps or 30.0
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out.update(lengths=np.array(lengths), tasks=np.array(tasks), cams=np.array(cams), fps=np.array(fps))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="Folder of episodes to export (default: record sim ones).")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--image-size", default="240x320")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--codec", default="auto")
    parser.add_argument("--crf", type=int, default=DEFAULT_CRF)
    parser.add_argument("--lerobot-python", help="Python of a venv with lerobot[dataset] installed.")
    parser.add_argument("--quick", action="store_true", help="32x40, one repeat.")
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.repeats = "32x40", 1
    work = Path(tempfile.mkdtemp(prefix="lerobot_export_bench_"))
    try:
        data = args.data
        if data is None:
            data = work / "data"
            record(data, args.episodes, args.image_size)
        originals = load_originals(data)
        frames = int(originals["lengths"].sum())
        codec = pick_codec(args.codec)
        base_s, ours_s = [], []
        for r in range(args.repeats):  # interleaved, so machine noise hits both alike
            base_s.append(encode_only(data, work / "encode_only", codec, args.crf))
            out = work / f"export_{r}"
            report = export_lerobot(data, out, codec=codec, crf=args.crf)
            ours_s.append(report.seconds)
            if r < args.repeats - 1:
                shutil.rmtree(out)
        export = work / f"export_{args.repeats - 1}"
        back = work / "back"
        import_lerobot(export, back)
        imported = load_originals(back)
        cams = [str(c) for c in originals["cams"]]
        fidelity = {cam: {"psnr_db": round(psnr(originals[f"img_{cam}"], imported[f"img_{cam}"]), 2),
                          "yuv420p_only_db": round(yuv420_psnr(originals[f"img_{cam}"]), 2)} for cam in cams}
        exact = bool(np.array_equal(originals["state"], imported["state"])
                     and np.array_equal(originals["action"], imported["action"]))
        result = {
            "frames": frames, "cameras": cams, "image_size": list(originals[f"img_{cams[0]}"].shape[1:3]),
            "codec": report.codec, "crf": args.crf, "export_bytes": report.bytes,
            "encode_only_s": {"min": min(base_s), "median": statistics.median(base_s)},
            "export_s": {"min": min(ours_s), "median": statistics.median(ours_s)},
            "export_frames_per_s": round(frames / statistics.median(ours_s), 1),
            "encode_only_frames_per_s": round(frames / statistics.median(base_s), 1),
            "export_over_encode_only": round(statistics.median(ours_s) / statistics.median(base_s), 3),
            "round_trip_states_actions_exact": exact, "fidelity": fidelity,
        }
        print(f"{frames} frames x {len(cams)} cameras at {result['image_size'][0]}x{result['image_size'][1]}, "
              f"{report.codec} crf {args.crf}, {report.bytes / 1e6:.2f} MB")
        print(f"encode only      {result['encode_only_frames_per_s']:8.1f} frames/s (median of {args.repeats})")
        print(f"robokit export   {result['export_frames_per_s']:8.1f} frames/s  "
              f"(time x{result['export_over_encode_only']} of encode only)")
        for cam, f in fidelity.items():
            print(f"PSNR {cam:8s} {f['psnr_db']:6.2f} dB  (yuv420p alone {f['yuv420p_only_db']:.2f} dB)")
        print(f"states/actions round trip exact: {exact}")
        if args.lerobot_python:
            result["lerobot"] = lerobot_side(args.lerobot_python, export, originals, work, frames,
                                             statistics.median(ours_s))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def lerobot_side(python: str, export: Path, originals: dict[str, np.ndarray], work: Path, frames: int,
                 ours_s: float) -> dict:
    """Load the export with LeRobot, compare its frames, and time LeRobot's own writer (other venv)."""
    npz = work / "originals.npz"
    np.savez(npz, **originals)
    script = work / "lerobot_side.py"
    script.write_text(LEROBOT_SIDE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([python, str(script), str(export), str(npz), str(work)], capture_output=True, text=True,
                          env={**env, "HF_HUB_OFFLINE": "1"}, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if done.returncode or line is None:
        print("lerobot side failed:\n" + (done.stderr or done.stdout)[-3000:])
        return {"error": (done.stderr or done.stdout)[-3000:]}
    out = json.loads(line[len("RESULT "):])
    out["lerobot_writer_frames_per_s"] = round(frames / out["lerobot_writer_s"], 1)
    out["export_over_lerobot_writer"] = round(ours_s / out["lerobot_writer_s"], 3)
    print(f"LeRobot loads the export ({out['backend']} decoder): {out['num_episodes']} episodes, "
          f"{out['num_frames']} frames, fps {out['fps']}; max |state diff| {out['max_state_diff']}, "
          f"max |action diff| {out['max_action_diff']}, tasks equal {out['tasks_equal']}")
    for cam, value in out["psnr"].items():
        print(f"PSNR {cam:8s} {value:6.2f} dB as LeRobot decodes it")
    print(f"LeRobot's writer {out['lerobot_writer_frames_per_s']:8.1f} frames/s  "
          f"(robokit export time x{out['export_over_lerobot_writer']} of it)")
    return out


if __name__ == "__main__":
    main()
