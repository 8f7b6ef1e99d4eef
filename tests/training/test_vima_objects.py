"""VIMA object tokens end to end: sim-recorded boxes -> dataset -> training -> wire protocol -> deploy in sim."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from robokit.deploy import protocol as P
from robokit.deploy.client import PolicyClient
from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim, scene_objects
from robokit.deploy.server import PolicyServer
from robokit.episodes.reader import open_episode
from robokit.episodes.writer import EpisodeWriter
from robokit.errors import DataError, ProtocolError
from robokit.hardware.base import PANDA_READY_POSE
from robokit.hardware.sim import PandaSimEnv, list_tasks
from robokit.policies.checkpoint import load_checkpoint
from robokit.policies.goal.vima import VIMAConfig, VIMAPolicy
from robokit.policies.nn.task_conditioning import build_vocabulary
from robokit.training.augment import ImageAugment
from robokit.training.dataset import EpisodeDataset, build_datasets
from robokit.training.episode_records import collate_samples
from robokit.training.trainer import TrainOptions, train

SIZE = (32, 40)  # recorded H, W
CAMS = ("top", "wrist")
FPS = 10.0
CUBES = ["blue_cube", "green_cube", "red_cube"]
TINY = {"n_embd": 32, "n_head": 2, "xattn_n_heads": 2, "n_layer": 1, "prompt_layers": 1, "text_max_length": 40,
        "obj_crop": 8, "obj_patch": 4, "obs_grid": (1, 2), "dropout": 0.0, "bins_xyz": (10, 10, 10),
        "bins_rot": 8, "keypoints": 4, "chunk_size": 3}
STATS = {"qpos_mean": np.zeros(8), "qpos_std": np.ones(8), "qpos_min": -np.ones(8), "qpos_max": np.ones(8),
         "action_mean": np.zeros(8), "action_std": np.ones(8),
         "action_min": np.r_[PANDA_READY_POSE - 0.5, 0.0], "action_max": np.r_[PANDA_READY_POSE + 0.5, 1.0]}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> list[Path]:
    """Two scripted multi-task episodes with per-step object boxes, as `robokit record --sim` writes them."""
    from robokit.record.session import RecordConfig, RecordingSession
    from robokit.record.teleop import Scripted

    out = tmp_path_factory.mktemp("multi")
    with PandaSimEnv(task="multi", seed=3, image_size=SIZE, camera_names=CAMS, control_hz=FPS) as env:
        session = RecordingSession(env.robot, env.cameras, Scripted(env), RecordConfig(out=out, fps=FPS, episodes=2),
                                   sim_env=env)
        session.prepare()
        return session.run()


class RecordingVIMA(VIMAPolicy):
    """The real VIMA-style policy, keeping the ``objects`` of every observation it is asked about."""

    def __init__(self, config: VIMAConfig) -> None:
        super().__init__(config)
        self.seen: list = []

    def predict_chunk(self, obs, capture_attention=False):
        self.seen.append(obs.get("objects"))
        return super().predict_chunk(obs, capture_attention)


def recording_vima(objects_trained: bool = True, image_shape=(*SIZE, 3)) -> RecordingVIMA:
    torch.manual_seed(0)
    policy = RecordingVIMA(VIMAConfig(camera_names=list(CAMS), image_shape=image_shape, fps=FPS,
                                      vocabulary=build_vocabulary(list_tasks("multi")), **TINY))
    policy.set_norm_stats(STATS)
    policy.objects_trained.fill_(objects_trained)
    return policy.eval()


def expected_slots(path: Path, cams: list[str], t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes/camera/valid of the cubes at step t straight from the file: the camera that sees each
    best (largest box as a share of its image; the first camera on a tie)."""
    boxes, cam_idx, valid = np.zeros((3, 4)), np.zeros(3, int), np.zeros(3, bool)
    with open_episode(path) as ep:
        raw = {cam: ep.object_boxes(cam) for cam in cams}
        for j, name in enumerate(CUBES):
            best = -1.0
            for k, cam in enumerate(cams):
                box = raw[cam][name][t]
                if box[0] >= 0:
                    h, w, _ = ep.image_shape(cam)
                    norm = box / np.array([w, h, w, h])
                    area = (norm[2] - norm[0]) * (norm[3] - norm[1])
                    if area > best:
                        best, boxes[j], cam_idx[j], valid[j] = area, norm, k, True
    return boxes, cam_idx, valid


# -- dataset ----------------------------------------------------------------------------------------------
def test_samples_carry_the_recorded_boxes_normalised_by_the_camera_size(recorded):
    cams = ["wrist", "top"]  # each cube's box comes from the camera that shows it larger
    small = EpisodeDataset(recorded, camera_names=cams, chunk_size=4, image_size=(16, 20), object_boxes=True)
    native = EpisodeDataset(recorded, camera_names=cams, chunk_size=4, object_boxes=True, cache_bytes=0)
    assert small.cached and not native.cached and small.object_names == CUBES
    used = set()
    for index in range(len(small)):
        e, t = small.locate(index)
        s = small[index]
        boxes, cam_idx, valid = expected_slots(small.records[e].path, cams, t)
        assert s["object_names"] == CUBES and s["object_boxes"].dtype == torch.float32
        assert s["object_valid"].tolist() == valid.tolist()
        assert s["object_camera"].dtype == torch.int64 and s["object_camera"].tolist() == cam_idx.tolist()
        np.testing.assert_allclose(s["object_boxes"].numpy(), boxes, atol=1e-6)
        # normalised boxes do not depend on the size images are resized to, nor on the RAM cache
        np.testing.assert_array_equal(native[index]["object_boxes"].numpy(), s["object_boxes"].numpy())
        used.update(cam_idx[valid].tolist())
    assert used == {0, 1}

    loader = DataLoader(small, batch_size=3, shuffle=True, collate_fn=collate_samples)
    batch = next(iter(loader))
    assert batch["object_boxes"].shape == (3, 3, 4) and batch["object_valid"].shape == (3, 3)
    assert batch["object_names"] == [CUBES] * 3 and batch["images"].dtype == torch.uint8


def test_deploy_sends_what_the_dataset_trains_on(recorded):
    """At step 0 of a recorded episode, the boxes deploy computes from the simulator are the
    sample's boxes (same objects, order, camera choice; pixels vs normalised)."""
    ds = EpisodeDataset(recorded[:1], camera_names=list(CAMS), chunk_size=2, object_boxes=True)
    sample = ds[0]
    with open_episode(recorded[0]) as ep:
        seed, task = int(ep.attrs["sim_seed"]), ep.attrs["sim_task"]
    with PandaSimEnv(task=task, seed=seed, image_size=SIZE, camera_names=CAMS) as env:
        sent = scene_objects(env, CAMS)
    assert [o["name"] for o in sent] == [n for n, v in zip(CUBES, sample["object_valid"]) if v]
    h, w = SIZE
    for obj in sent:
        j = CUBES.index(obj["name"])
        assert CAMS[int(sample["object_camera"][j])] == obj["camera"]
        np.testing.assert_allclose(np.array(obj["box"]) / [w, h, w, h], sample["object_boxes"][j].numpy(), atol=1e-6)


def _write(folder: Path, index: int, boxes: dict[str, list], length: int = 2) -> Path:
    """A tiny episode (top 16x20) whose frames are black with a white rectangle at each visible box."""
    writer = EpisodeWriter(folder, index, {"top": (16, 20, 3)}, attrs={"fps": 10.0, "task": "t", "sim": True},
                           box_objects={"top": list(boxes)})
    for t in range(length):
        image = np.zeros((16, 20, 3), np.uint8)
        for series in boxes.values():
            if series[t] is not None:
                x0, y0, x1, y1 = series[t]
                image[y0:y1, x0:x1] = 255
        q = np.full(8, 0.1 * t, np.float32)
        writer.append(q, q, q, {"top": image}, t_robot=t / 10.0,
                      object_boxes={"top": {name: series[t] for name, series in boxes.items()}})
    return writer.save()


def test_object_slots_are_the_union_padded_invalid_and_only_when_asked(tmp_path):
    cube = _write(tmp_path / "d", 0, {"cube": [(5, 4, 12, 10), None]})
    ball = _write(tmp_path / "d", 1, {"ball": [(1, 1, 3, 3), (2, 2, 4, 4)]})
    ds = EpisodeDataset([cube, ball], chunk_size=2, object_boxes=None)
    assert ds.object_names == ["ball", "cube"]
    first, gone = ds[0], ds[1]
    assert first["object_valid"].tolist() == [False, True] and gone["object_valid"].tolist() == [False, False]
    np.testing.assert_allclose(first["object_boxes"][1].numpy(), [5 / 20, 4 / 16, 12 / 20, 10 / 16])
    assert "object_boxes" not in EpisodeDataset([cube, ball], chunk_size=2)[0]  # off unless asked for
    train_ds, val_ds, _, info = build_datasets(tmp_path / "d", chunk_size=2, val_fraction=0.5, object_boxes=None)
    assert train_ds.object_names == val_ds.object_names == info.object_names == ["ball", "cube"]

    plain = _write(tmp_path / "plain", 0, {})
    assert "object_boxes" not in EpisodeDataset([plain], chunk_size=2, object_boxes=None)[0]
    with pytest.raises(DataError, match="no episode has object boxes"):
        EpisodeDataset([plain], chunk_size=2, object_boxes=True)


def test_shift_augmentation_moves_the_boxes_with_the_image(tmp_path):
    cube = _write(tmp_path / "d", 0, {"cube": [(5, 4, 12, 10), (5, 4, 12, 10)]})
    ds = EpisodeDataset([cube], chunk_size=2, object_boxes=True, augment=ImageAugment(shift=3), seed=1)
    moved = 0
    for _ in range(12):
        s = ds[0]
        ys, xs = np.nonzero(s["images"][0, 0].numpy() > 127)
        white = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_allclose(s["object_boxes"][0].numpy() * [20, 16, 20, 16], white, atol=1e-4)
        moved += white != [5, 4, 12, 10]
    assert moved > 0


# -- training ---------------------------------------------------------------------------------------------
def test_robokit_train_gives_vima_the_boxes_without_extra_options(recorded, tmp_path):
    result = train(TrainOptions(data=recorded[0].parent, out=tmp_path / "run", policy="vima", steps=2, batch_size=4,
                                image_size=(16, 24), val_fraction=0.0, log_every=1, policy_config=dict(TINY),
                                device="cpu"))
    assert result.dataset["object_names"] == CUBES
    policy, _ = load_checkpoint(result.last_path, expected_type="vima")
    assert bool(policy.objects_trained)
    # a VIMA configured without object slots is trained (and served) without them
    result = train(TrainOptions(data=recorded[0].parent, out=tmp_path / "none", policy="vima", steps=1,
                                batch_size=4, image_size=(16, 24), val_fraction=0.0,
                                policy_config={**TINY, "max_objects": 0}, device="cpu"))
    policy, _ = load_checkpoint(result.last_path, expected_type="vima")
    assert result.dataset["object_names"] == [] and not bool(policy.objects_trained)


@pytest.mark.parametrize("name, config", [("vima", {**TINY, "object_pointer": True}),
                                          ("act", {"backbone": "small", "hidden_dim": 32, "nheads": 2,
                                                   "dim_feedforward": 64, "enc_layers": 1, "vae_enc_layers": 1,
                                                   "latent_dim": 8, "object_pointer": True})])
def test_robokit_train_gives_the_object_pointer_its_target_from_the_recorded_boxes(recorded, tmp_path, name, config):
    result = train(TrainOptions(data=recorded[0].parent, out=tmp_path / "run", policy=name, steps=2, batch_size=4,
                                chunk_size=3, image_size=(16, 24), val_fraction=0.0, log_every=1,
                                policy_config=config, device="cpu"))
    logged = [line for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "pointer_l1" in line]
    assert logged
    policy, _ = load_checkpoint(result.last_path, expected_type=name)
    with open_episode(recorded[0]) as ep:
        obs = {"images": {cam: ep.image(cam, 0) for cam in CAMS}, "qpos": ep.qpos()[0], "task": ep.task}
    _, extras = policy.predict_chunk(obs)
    assert extras["pointer"].shape == (2, 2) and np.all((extras["pointer"] >= 0) & (extras["pointer"] <= 1))


# -- wire protocol ----------------------------------------------------------------------------------------
@pytest.fixture()
def served():
    policy = recording_vima(image_shape=(16, 20, 3))
    with PolicyServer(policy, bind="tcp://127.0.0.1:0", warmup=False) as server:
        server.start()
        with PolicyClient(server.address, timeout_s=10.0) as client:
            yield policy, client


def _request(qpos, images):
    return {"qpos": qpos, **{f"images/{cam}": img for cam, img in images.items()}}


def test_infer_carries_objects_to_the_policy_scaled_to_its_image_size(served):
    policy, client = served
    assert client.hello().objects is True
    qpos = np.r_[PANDA_READY_POSE, 0.0].astype(np.float32)
    images = {cam: np.zeros((*SIZE, 3), np.uint8) for cam in CAMS}
    result = client.infer(qpos, images, task="put the red cube on the yellow plate",
                          objects=[{"name": "red_cube", "box": np.array([4, 6, 20, 30]), "camera": "top"},
                                   {"name": "blue_cube", "box": (0.0, 2.0, 8.0, 10.0), "camera": "wrist"}])
    assert result.actions.shape == (3, 8)
    # images went from 32x40 to the policy's 16x20: boxes follow them
    assert policy.seen[-1] == [{"name": "red_cube", "box": [2.0, 3.0, 10.0, 15.0], "camera": "top"},
                               {"name": "blue_cube", "box": [0.0, 1.0, 4.0, 5.0], "camera": "wrist"}]
    client.infer(qpos, images, task="put the red cube on the yellow plate")
    assert policy.seen[-1] is None


@pytest.mark.parametrize(("objects", "code", "words"), [
    ({"name": "cube"}, P.BAD_REQUEST, "'objects' must be a list"),
    (["cube"], P.BAD_REQUEST, "'objects[0]' must be a map"),
    ([{"name": 3, "box": [0, 0, 1, 1], "camera": "top"}], P.BAD_REQUEST, "'objects[0].name'"),
    ([{"name": "a", "box": [0, 0, 1, 1], "camera": "top"}, {"name": "b", "box": [0, 0, 1], "camera": "top"}],
     P.BAD_REQUEST, "'objects[1].box' of object 'b' must be 4 finite numbers"),
    ([{"name": "a", "box": [0, float("nan"), 1, 1], "camera": "top"}], P.BAD_REQUEST, "finite"),
    ([{"name": "a", "box": [0, 0, "1", 1], "camera": "top"}], P.BAD_REQUEST, "'objects[0].box'"),
    ([{"name": "a", "box": [5, 0, 1, 1], "camera": "top"}], P.BAD_REQUEST, "x0 <= x1"),
    ([{"name": "a", "box": [0, 0, 1, 1], "camera": "side"}], P.BAD_REQUEST, "'objects[0].camera'"),
    ([{"name": "a", "box": [0, 0, 1, 1]}], P.BAD_REQUEST, "one of the policy's cameras (top, wrist)"),
    ([{"name": "a", "box": [0, 0, 1, 1], "camera": "top"}] * 65, P.TOO_LARGE, "at most 64"),
])
def test_malformed_objects_get_a_typed_error_naming_the_field(served, objects, code, words):
    policy, client = served
    qpos = np.r_[PANDA_READY_POSE, 0.0].astype(np.float32)
    images = {cam: np.zeros((*SIZE, 3), np.uint8) for cam in CAMS}
    with pytest.raises(ProtocolError) as err:
        client.request("infer", {"task": "put the red cube on the yellow plate", "objects": objects},
                       _request(qpos, images))
    assert err.value.code == code and words in str(err.value)
    assert policy.seen == []  # refused before the policy
    assert client.ping() > 0  # and the server keeps serving


def test_hello_says_no_objects_for_a_model_trained_without_them():
    with PolicyServer(recording_vima(objects_trained=False), bind="tcp://127.0.0.1:0", warmup=False) as server:
        server.start()
        with PolicyClient(server.address, timeout_s=10.0) as client:
            assert client.hello().objects is False
    assert P.PolicyInfo.from_header({**server.info.to_header(), "objects": None}).objects is False
    legacy = {k: v for k, v in server.info.to_header().items() if k != "objects"}  # a server before objects
    assert P.PolicyInfo.from_header(legacy).objects is False


# -- deploy in the simulation -----------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["local", "server"])
def test_evaluate_in_sim_passes_the_scene_boxes_to_the_policy(where):
    policy = recording_vima()
    kwargs = {"episodes": 1, "seed_start": 5, "task_set": "multi", "max_steps": 3, "mode": "chunk",
              "done_threshold": 2.0}
    if where == "local":
        evaluate_in_sim(policy, EvalConfig(**kwargs))
    else:
        with PolicyServer(policy, bind="tcp://127.0.0.1:0", warmup=False) as server:
            server.start()
            evaluate_in_sim(None, EvalConfig(server=server.address, timeout_s=10.0, **kwargs))
    assert policy.seen and all(seen for seen in policy.seen)
    with PandaSimEnv(task="multi", seed=5, image_size=SIZE, camera_names=CAMS) as env:
        env.reset(seed=5, task=list_tasks("multi")[0])
        first = scene_objects(env, CAMS)
    assert [o["name"] for o in first] == CUBES  # every cube is on the table at the start
    assert [(o["name"], o["camera"]) for o in policy.seen[0]] == [(o["name"], o["camera"]) for o in first]
    np.testing.assert_allclose([o["box"] for o in policy.seen[0]], [o["box"] for o in first])


def test_evaluate_in_sim_sends_no_objects_to_a_model_trained_without_them():
    policy = recording_vima(objects_trained=False)
    evaluate_in_sim(policy, EvalConfig(episodes=1, seed_start=5, task_set="multi", max_steps=2, mode="chunk",
                                       done_threshold=2.0))
    assert policy.seen and all(seen is None for seen in policy.seen)


def test_each_object_box_comes_from_the_camera_that_sees_it_best(tmp_path):
    """Per step the larger of an object's boxes (as a share of its image) wins, whatever the camera
    order; a camera that does not see the object never does."""
    shapes = {"top": (16, 20, 3), "wrist": (16, 20, 3)}
    series = {"top": [(2, 2, 6, 6), (2, 2, 6, 6), None],  # 4x4 px
              "wrist": [(0, 0, 3, 3), (0, 0, 15, 10), (1, 1, 3, 3)]}  # 3x3, 15x10, 2x2 px
    writer = EpisodeWriter(tmp_path / "d", 0, shapes, attrs={"fps": 10.0, "task": "t", "sim": True},
                           box_objects={cam: ["cube"] for cam in shapes})
    for t in range(3):
        q = np.full(8, 0.1 * t, np.float32)
        writer.append(q, q, q, {cam: np.zeros(shape, np.uint8) for cam, shape in shapes.items()}, t_robot=t / 10.0,
                      object_boxes={cam: {"cube": series[cam][t]} for cam in shapes})
    path = writer.save()
    for cams in (["top", "wrist"], ["wrist", "top"]):
        ds = EpisodeDataset([path], camera_names=cams, chunk_size=2, object_boxes=True)
        chosen = [cams[int(ds[t]["object_camera"][0])] for t in range(3)]
        assert chosen == ["top", "wrist", "wrist"]
        np.testing.assert_allclose(ds[1]["object_boxes"][0].numpy(), [0, 0, 15 / 20, 10 / 16])
