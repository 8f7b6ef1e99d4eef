"""Shared test set-up: headless rendering and one torch thread per process.

The models in the tests are tiny: a second thread gains nothing, and on a busy 2-core machine two
spinning OpenMP threads per process make every step many times slower. Subprocesses (CLI tests,
torchrun) inherit OMP_NUM_THREADS.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["OMP_NUM_THREADS"] = "1"

import torch

torch.set_num_threads(1)
