"""MuJoCo simulation of a Franka Panda at a table, with tasks and scripted experts.

    from robokit.hardware.sim import PandaSimEnv, list_tasks
    env = PandaSimEnv(task="pick_place", seed=0)
    expert = env.task.expert()
    while (action := expert.next_action(env.robot.read())) is not None:
        env.robot.send_action(action)
        env.step()
    env.task.success()

Importing this package chooses the offscreen GL backend (EGL, else OSMesa) before MuJoCo loads.
"""

from robokit.hardware.sim import _gl

_gl.configure()

from robokit.hardware.sim.devices import SimCamera, SimRobot
from robokit.hardware.sim.env import CAMERA_NAMES, PandaSimEnv
from robokit.hardware.sim.expert import ExpertResult, ScriptedExpert, run_expert_episode
from robokit.hardware.sim.tasks import TASK_SETS, SimTask, list_tasks, resolve_task

__all__ = [
    "CAMERA_NAMES",
    "TASK_SETS",
    "ExpertResult",
    "PandaSimEnv",
    "ScriptedExpert",
    "SimCamera",
    "SimRobot",
    "SimTask",
    "list_tasks",
    "resolve_task",
    "run_expert_episode",
]

