"""Taking over from the policy during deploy: the scripted expert or a person with keys commands the
arm, the rollout records who did and what the policy would have done, the handback does not jump, and
training learns from the corrections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robokit.deploy.evaluate import EvalConfig, evaluate_in_sim
from robokit.deploy.loop import ControlLoop, LoopConfig
from robokit.deploy.runner import LocalRunner
from robokit.deploy.safety import SafetyLimits
from robokit.deploy.takeover import TeleopTakeover
from robokit.episodes.format import INTERVENTION, POLICY_ACTION
from robokit.episodes.reader import open_episode
from robokit.hardware.kinematics import fk
from robokit.record.teleop import KeyboardJog


@pytest.fixture(scope="module")
def scripted_rollout(tmp_path_factory, make_tiny_checkpoint):
    """One sim rollout of an untrained policy with the scripted expert taking over."""
    out = tmp_path_factory.mktemp("takeover") / "rollouts"
    results = evaluate_in_sim(str(make_tiny_checkpoint("act")), EvalConfig(
        episodes=1, seed_start=1000, takeover="scripted", record_dir=out, max_seconds=9.0))
    return results, out


def test_the_scripted_expert_takes_over_a_stray_policy_and_the_rollout_records_it(scripted_rollout):
    results, _ = scripted_rollout
    outcome = results.outcomes[0]
    assert outcome.intervention_steps > 10
    with open_episode(outcome.episode_file) as ep:
        flags = ep.step_extra(INTERVENTION)
        planned = ep.step_extra(POLICY_ACTION)
        action = ep.action()
        assert int(ep.attrs["intervention_steps"]) == outcome.intervention_steps
        assert ep.attrs["takeover"] == "scripted"
    assert flags.shape == (ep.length,) and set(np.unique(flags)) <= {0.0, 1.0}
    assert int(flags.sum()) == outcome.intervention_steps
    assert np.isfinite(planned).all()  # the policy kept planning while the expert commanded
    human = flags > 0.5
    # where the expert commanded, what was sent is not what the policy planned
    assert np.abs(action[human, :7] - planned[human, :7]).max() > 0.01


def test_handing_back_moves_no_joint_more_than_one_clamp_step(scripted_rollout):
    from robokit.hardware.sim import PandaSimEnv

    results, _ = scripted_rollout
    with open_episode(results.outcomes[0].episode_file) as ep:
        flags, action, qpos, fps = ep.step_extra(INTERVENTION) > 0.5, ep.action(), ep.qpos(), ep.fps
    handbacks = np.flatnonzero(flags[:-1] & ~flags[1:]) + 1
    assert len(handbacks) >= 1
    env = PandaSimEnv(task="pick_place", seed=0, image_size=(32, 40))
    try:
        step = SafetyLimits.from_robot(env.robot).dq_max / fps
    finally:
        env.close()
    for t in handbacks:
        assert np.all(np.abs(action[t, :7] - qpos[t, :7]) <= step + 1e-6), t


class _ObjectSeenOff:
    """The simulator as a policy that misjudges where the object is sees it: ``offset`` metres off."""

    def __init__(self, env, offset: np.ndarray) -> None:
        self._env, self._offset = env, offset

    def object_pose(self, name: str):
        pos, rot = self._env.object_pose(name)
        return pos + self._offset, rot

    def __getattr__(self, name: str):
        return getattr(self._env, name)


@pytest.mark.parametrize("watch_approach", [True, False])
def test_the_scripted_expert_catches_a_grasp_that_misses_and_picks_the_object_up(watch_approach):
    """A policy that grasps 4.5 cm beside the cube (sideways to the fingers) is taken over: as its hand
    comes down beside the cube, before the final descent, when the approach is watched, else once its
    fingers shut on nothing; the expert then lifts the cube."""
    from robokit.deploy.takeover import ScriptedTakeover
    from robokit.hardware.kinematics import fk
    from robokit.hardware.sim import PandaSimEnv
    from robokit.hardware.sim.expert import PRE_GRASP_ABOVE, ScriptedExpert, grasp_yaw

    env = PandaSimEnv(task="pick_place", seed=0, image_size=(32, 40), control_hz=15.0)
    try:
        env.reset(seed=1000)
        task = env.task
        yaw = grasp_yaw(env.object_pose(task.object_name)[1])
        sideways = 0.045 * np.array([np.cos(yaw), np.sin(yaw), 0.0])  # across the fingers' closing axis
        stray = ScriptedExpert(_ObjectSeenOff(env, sideways), task.object_name, task.target_name)
        takeover = ScriptedTakeover(env, miss_m=0.06, align_m=0.015 if watch_approach else 1.0)
        takeover.reset()
        held, hold, height_at_takeover = False, None, None
        for _ in range(120):
            state = env.robot.read()
            planned = stray.next_action(state) if stray.phase != "done" else None
            planned = planned if planned is not None else hold  # once done, it holds its last pose
            hold = planned
            action = takeover.command(state, {}, planned)
            if takeover.active and height_at_takeover is None:
                height_at_takeover = fk(state.qpos)[0][2] - env.object_pose(task.object_name)[0][2]
            env.robot.send_action(action if action is not None else planned)
            env.step()
            held = held or (takeover.active and env.fingers_touch(task.object_name, both=True)
                            and env.object_pose(task.object_name)[0][2] > 0.05)
            if takeover.reasons() and not takeover.active:
                break
    finally:
        env.close()
    assert takeover.reasons() == ["coming down off the object" if watch_approach else "grasp missed"]
    assert held, "the expert lifted the cube after taking over"
    if watch_approach:  # the person stepped in before the hand went below the expert's own descent height
        assert height_at_takeover > PRE_GRASP_ABOVE - 0.005, height_at_takeover


class _Keys:
    """Keys pressed at given loop steps (a terminal stands in for the person)."""

    def __init__(self, loop_steps: dict[int, list[str]]) -> None:
        self.at, self.step = loop_steps, 0

    def poll(self) -> list[str]:
        keys = self.at.get(self.step, [])
        self.step += 1
        return keys


def test_a_person_takes_over_with_keys_jogs_and_hands_back(make_tiny_policy):
    from robokit.hardware.sim import PandaSimEnv

    policy = make_tiny_policy("act")
    env = PandaSimEnv(task="pick_place", seed=3, image_size=(48, 64), control_hz=15.0)
    records = []
    keys = _Keys({5: ["t"], **{s: ["u"] for s in range(6, 14)}, 30: ["t"]})
    try:
        env.reset(seed=3)
        takeover = TeleopTakeover(KeyboardJog(fps=15.0))
        with ControlLoop(env.robot, env.cameras, LocalRunner(policy), LoopConfig(fps=15.0, realtime=False,
                                                                                    max_steps=40),
                         step_fn=env.step, keys=keys, takeover=takeover) as loop:
            loop.run_episode(on_step=records.append)
    finally:
        env.close()
    flags = [r.intervention for r in records]
    assert not any(flags[:5]) and all(flags[5:30]) and not any(flags[30:])
    assert all(r.policy_action is not None for r in records)
    z = [fk(r.state.qpos)[0][2] for r in records]
    assert z[29] - z[5] > 0.04  # eight presses of "u": 8 cm up, followed at the jog's speed


def _rollout_record(length: int, human: slice, success: bool | None, fps: float = 10.0):
    from robokit.training.episode_records import EpisodeRecord

    flags = np.zeros(length, bool)
    flags[human] = True
    zeros = np.zeros((length, 8), np.float32)
    return EpisodeRecord(path=Path("r.hdf5"), layout="robokit", length=length, camera_names=["top"],
                         image_shapes={"top": (8, 8, 3)}, state_dim=8, action_dim=8, fps=fps, task=None, sim=True,
                         qpos=zeros, action=zeros, done=np.zeros(length, bool), success=success,
                         intervention=flags)


def test_corrections_weigh_interventions_and_leave_out_the_steps_that_went_wrong():
    from robokit.training.corrections import sample_weights, weigh_episodes

    demo = _rollout_record(20, slice(0, 0), None)
    demo.intervention = None
    # taken over twice: the policy's steps leading to each takeover are left out (from the start, and
    # from the first handback), those after the last handback kept (the rollout succeeded)
    won = _rollout_record(50, slice(10, 15), True)
    won.intervention[30:35] = True
    lost = _rollout_record(40, slice(10, 15), False)
    summary = weigh_episodes([demo, won, lost], intervention_weight=3.0)
    assert demo.weights is None and demo.trainable is None
    assert won.trainable.tolist() == [False] * 10 + [True] * 5 + [False] * 15 + [True] * 20
    assert won.weights[30:35].tolist() == [3.0] * 5 and won.weights[35:].tolist() == [1.0] * 15
    assert lost.trainable.tolist() == [False] * 10 + [True] * 5 + [False] * 25
    assert summary.intervention_steps == 15 and summary.rollouts == 2 and summary.demonstrations == 1
    assert summary.policy_steps_kept == 15 and summary.policy_steps_left_out == 60
    weights = sample_weights([demo, won, lost])
    assert weights.shape == (110,) and weights[:20].tolist() == [1.0] * 20
    kept = weigh_episodes([lost], keep_failed_policy_steps=True)
    assert kept.policy_steps_kept == 25 and lost.trainable[15:].all() and not lost.trainable[:10].any()


def test_weighted_batches_draw_in_proportion_and_never_draw_a_left_out_step():
    from robokit.training.batches import TrainBatches

    weights = np.array([0.0] * 10 + [1.0] * 10 + [3.0] * 10)
    batches = iter(TrainBatches(30, 8, seed=0, rank=0, world=1, start_step=0, weights=weights))
    drawn = np.concatenate([next(batches) for _ in range(400)])
    counts = np.bincount(drawn, minlength=30)
    assert counts[:10].sum() == 0
    assert 2.4 < counts[20:].sum() / counts[10:20].sum() < 3.6


def test_train_learns_from_rollouts_next_to_demonstrations(scripted_rollout, tmp_path, capsys):
    from robokit.cli import main
    from robokit.policies.checkpoint import load_checkpoint

    _, rollouts = scripted_rollout
    demos = tmp_path / "demos"
    main(["record", "--sim", "--teleop", "scripted", "--episodes", "1", "--camera", "top=sim", "--image-size",
          "24x32", "--fps", "30", "--out", str(demos)])
    code = 0
    try:
        main(["train", str(demos), "--rollouts", str(rollouts), "--intervention-weight", "2", "--out",
              str(tmp_path / "run"), "--steps", "2", "--batch-size", "4", "--val-fraction", "0", "--device", "cpu",
              "--chunk-size", "10", "--backbone", "small", "--hidden-dim", "32"])
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = " ".join(capsys.readouterr().err.split())
    assert code == 0, err
    assert "and the rollouts in" in err
    _, meta = load_checkpoint(tmp_path / "run" / "last.pt")
    assert "1 demonstration(s) + 1 rollout(s) with takeover" in meta["corrections"]
    # a folder of demonstrations passed as rollouts is named
    try:
        main(["train", str(demos), "--rollouts", str(demos), "--out", str(tmp_path / "bad"), "--steps", "1"])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    assert code == 2 and "records interventions" in capsys.readouterr().err


def test_a_simulated_rollout_stores_where_the_objects_are_for_the_object_pointer(scripted_rollout):
    from robokit.hardware.sim import PandaSimEnv
    from robokit.training.dataset import scan_episodes
    from robokit.training.episode_records import task_object_tracks

    results, out = scripted_rollout
    outcome = results.outcomes[0]
    with open_episode(outcome.episode_file) as ep:
        cams = list(ep.camera_names)
        first_boxes = {cam: ep.object_boxes(cam) for cam in cams}
        height, width = ep.image_shape(cams[0])[:2]
        length = ep.length
    # The first step's boxes are those of the scene before anything moved: the reset scene's own.
    env = PandaSimEnv(task="pick_place", seed=outcome.seed, image_size=(height, width), camera_names=tuple(cams))
    try:
        env.reset(seed=outcome.seed)
        for name in env.task.object_names:
            expected = env.object_box(cams[0], name)
            assert expected is not None
            assert np.array_equal(first_boxes[cams[0]][name][0], expected), name
    finally:
        env.close()
    # The expert moved the cube, so training finds it as the object to point at.
    (record,) = scan_episodes(out)
    _, valid = task_object_tracks(record, cams)
    assert valid.shape == (length, len(cams)) and valid[:, 0].mean() > 0.9
