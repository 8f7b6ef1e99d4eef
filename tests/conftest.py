"""Shared test set-up: headless rendering, few threads (the CI machine has 2 cores)."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch

torch.set_num_threads(2)
