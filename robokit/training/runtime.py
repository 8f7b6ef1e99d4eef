"""Process-level plumbing of the trainer: device choice, torchrun/DDP, Ctrl-C, RNG states.

Kept apart from the training loop (trainer.py) so that each file has one job.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robokit.errors import ConfigError

log = logging.getLogger(__name__)


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA if visible, else MPS, else CPU. Asking for a missing device is an error."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is visible to torch; use --device cpu "
                              "(or check the driver / CUDA_VISIBLE_DEVICES)")
        if name == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device(name)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ConfigError("--device mps: Apple's MPS backend is not available here; use --device cpu")
        return torch.device("mps")
    raise ConfigError(f"unknown device '{name}'; choose auto, cpu, cuda, cuda:N or mps")


@dataclass
class Distributed:
    """The process group when run under torchrun (WORLD_SIZE > 1), else a single process."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        owns = False
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend=backend, timeout=_dt.timedelta(minutes=30))
            owns = True
        return cls(world_size=world, rank=rank, local_rank=local, owns_group=owns)

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if ``flag`` is True on any (so all ranks stop at the same step)."""
        if not self.enabled:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


class StopRequest:
    """First Ctrl-C (SIGINT/SIGTERM) asks the loop to stop at the next step boundary and save
    last.pt; another one a second or more later aborts at once (without saving). Signals in quick
    succession count as one: torchrun forwards a SIGTERM right after the terminal's SIGINT."""

    def __init__(self) -> None:
        self.requested = False
        self._at = 0.0
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            if time.monotonic() - self._at >= 1.0:
                raise KeyboardInterrupt
            return
        self.requested = True
        self._at = time.monotonic()
        log.warning("stop requested: finishing this step and saving last.pt (Ctrl-C again to abort)")

    def __enter__(self) -> StopRequest:  # noqa: PYI034
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def ignore_sigint_in_worker(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the main process decides when to stop, so a worker
    # must not die mid-batch (the main process would then fail fetching instead of saving).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def host_rng_state() -> dict[str, Any]:
    """numpy's and Python's RNG states as tensors and ints (weights_only-loadable)."""
    state = np.random.get_state(legacy=True)
    if isinstance(state, dict):  # numpy's global generator was replaced by another kind
        raise ConfigError(f"numpy's global random generator is {state.get('bit_generator')}; "
                          "training checkpoints hold MT19937 states only (leave np.random's default)")
    _kind, keys, pos, has_gauss, gauss = state
    version, internal, py_gauss = random.getstate()
    return {"rng_numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "rng_python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                           "gauss": py_gauss}}


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Put back the torch (CPU and CUDA), numpy and Python RNG states a training state saved."""
    if state.get("rng_cpu") is not None:
        torch.set_rng_state(state["rng_cpu"])
    if state.get("rng_cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["rng_cuda"], device)
    set_host_rng_state(state)


def set_host_rng_state(state: dict[str, Any]) -> None:
    rn = state.get("rng_numpy")
    if rn is not None:
        np.random.set_state(("MT19937", rn["keys"].numpy().astype(np.uint32), rn["pos"],
                             rn["has_gauss"], rn["gauss"]))
    rp = state.get("rng_python")
    if rp is not None:
        random.setstate((rp["version"], tuple(int(v) for v in rp["internal"].tolist()), rp["gauss"]))
