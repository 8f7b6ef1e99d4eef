"""Train a policy on a folder of episodes (``robokit train`` and the demo use :func:`train`).

The trainer is policy-agnostic: it builds the policy from the registry, gives it the dataset's
normalisation statistics (``set_norm_stats``), optimises ``compute_loss(batch)["loss"]`` with AdamW
over ``optimizer_param_groups(lr, weight_decay)``, and never looks inside the model.

Output folder::

    best.pt            lowest validation loss so far (a single-file robokit checkpoint)
    last.pt            the latest weights (also written on Ctrl-C)
    train_state.pt     optimizer state, step, RNG states: what --resume needs besides last.pt
                       (tensors and plain containers only: torch.load(weights_only=True) reads it)
    metrics.jsonl      one record per log interval and per validation (see logs.py)
    train_val_<term>.png   curves per loss term
    tensorboard/, wandb/   with --log tensorboard / wandb (loggers.py)
    best_success.pt, sim_eval.jsonl, train_success.png   with --eval-sim (highest simulated
                       success so far; robokit.deploy.train_eval)

Steps are optimizer steps. One epoch is one pass over every start step of the training episodes
(see dataset.py). Under ``torchrun`` (DDP) every process loads the data, ``batch_size`` is per process,
rank 0 alone validates, logs and saves.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

import robokit
from robokit.errors import CheckpointError, ConfigError
from robokit.policies.base import Policy, PolicyConfig, RunSetup
from robokit.policies.checkpoint import atomic_torch_save
from robokit.policies.registry import get_policy_class
from robokit.training.augment import ImageAugment
from robokit.training.batches import (
    TRAIN_STATE_FORMAT,
    TRAIN_STATE_VERSION,
    LossModule,
    TrainBatches,
    config_default,
    load_train_state,
    to_device,
)
from robokit.training.corrections import sample_weights, scan_training_episodes
from robokit.training.dataset import build_datasets
from robokit.training.episode_records import check_consistent, collate_samples
from robokit.training.logs import MetricsLog, plot_history
from robokit.training.observers import Observers, TrainObserver
from robokit.training.optimizer import adamw, load_optimizer_state
from robokit.training.options import (
    DATA_OPTIONS,
    DEFAULT_STEPS,
    ProgressCallback,
    TrainOptions,
    TrainProgress,
    TrainResult,
    lr_factor,
    validation_samples,
)
from robokit.training.runtime import (
    Distributed,
    StopRequest,
    host_rng_state,
    ignore_sigint_in_worker,
    pick_device,
    restore_rng_state,
)
from robokit.training.validation import validation_losses
from robokit.training.warm_start import warm_start

log = logging.getLogger(__name__)
PLOT_INTERVAL_S = 60.0


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------
def train(options: TrainOptions, progress: ProgressCallback | None = None,
          observers: Sequence[TrainObserver] = ()) -> TrainResult:
    """Train a policy as ``options`` says; returns where the checkpoints are and the final figures.

    ``progress`` gets every :class:`TrainProgress`; ``observers`` also get the live run (see
    :mod:`robokit.training.observers`: loggers, the simulation evaluation).

    Ctrl-C (or SIGTERM) stops at the next step boundary, saves last.pt and returns a result with
    ``interrupted=True``; ``--resume`` continues from there. Raises ConfigError / DataError /
    CheckpointError with one clear message for bad options, data or checkpoints.
    """
    device = pick_device(options.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist = Distributed.from_env(device)
    try:
        with Observers(options, progress, observers, dist.is_main) as hub:  # checks them on every rank
            return _Trainer(options, device, dist, hub).run()
    finally:
        dist.close()


class _Trainer:
    def __init__(self, opts: TrainOptions, device: torch.device, dist: Distributed,
                 progress: ProgressCallback | None) -> None:
        self.opts, self.device, self.dist = opts, device, dist
        self.progress = progress if dist.is_main else None
        self.out = Path(opts.out)
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        self.state_path = self.out / "train_state.pt"
        self.amp = bool(opts.amp and device.type == "cuda")
        if opts.amp and not self.amp:
            log.warning("--amp (bf16 autocast) applies on CUDA only; training in float32 on %s", device)

    # -- set-up --------------------------------------------------------------------------------
    def _prepare_out_dir(self) -> dict[str, Any] | None:
        opts = self.opts
        if opts.resume:
            if not self.last_path.exists():
                raise ConfigError(f"{self.out}: nothing to resume (no last.pt); drop --resume to start "
                                  "a new run")
            return load_train_state(self.state_path)
        if self.last_path.exists() or self.best_path.exists():
            raise ConfigError(f"{self.out} already holds a training run; pass --resume to continue it "
                              "or choose another --out")
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        return None

    def _effective_options(self, state: dict[str, Any] | None) -> TrainOptions:
        """On resume the data-defining options come from the original run."""
        if state is None:
            return self.opts
        saved = state.get("options", {})
        given = self.opts.to_dict()
        defaults = TrainOptions(data=".", out=".").to_dict()
        values = dict(given)
        for name in DATA_OPTIONS:
            if name not in saved:
                continue
            if given[name] != defaults[name] and given[name] != saved[name]:
                log.warning("--resume keeps the original run's %s (%r), not %r", name, saved[name],
                            given[name])
            values[name] = saved[name]
        return TrainOptions(**values)

    def _build_data(self, opts: TrainOptions, policy_cls: type[Policy]) -> None:
        chunk = opts.chunk_size or config_default(policy_cls.config_class, "chunk_size") or 100
        augment = ImageAugment(shift=opts.augment_shift, brightness=opts.augment_color,
                               contrast=opts.augment_color, saturation=opts.augment_color)
        records, corrections = scan_training_episodes(opts.data, opts.rollouts, opts.intervention_weight,
                                                      opts.keep_failed_policy_steps)
        self.corrections = corrections.describe() if corrections.rollouts else None
        if self.corrections and self.dist.is_main:
            log.info("training on %s", self.corrections)
        cameras = list(opts.camera_names or records[0].camera_names)
        check_consistent(records, cameras, opts.image_size)
        # The policy's config says what it reads besides the current frames (history, goal
        # images, object boxes); the dataset builds exactly that and nothing else.
        first = records[0]
        height, width = opts.image_size or first.image_shapes[cameras[0]][:2]
        opts.policy_config = policy_cls.config_class.options_for_run(dict(opts.policy_config), RunSetup(
            Path(opts.data), self.out, tuple(cameras), (height, width), opts.seed, str(self.device),
            self.dist.world_size, self._stage_progress))
        needs = policy_cls.config_class.from_dict({
            **opts.policy_config, "camera_names": cameras, "image_shape": (height, width, 3),
            "state_dim": first.state_dim, "action_dim": first.action_dim}).data_needs()
        goal_images = opts.goal_images if needs.goal_camera is not None else False
        if opts.goal_images and needs.goal_camera is None:
            log.warning("--goal-images is ignored: a %s policy reads no goal image", opts.policy)
        self.train_ds, self.val_ds, self.stats, self.info = build_datasets(
            opts.data, records=records, camera_names=cameras, chunk_size=chunk,
            val_fraction=opts.val_fraction, seed=opts.seed, image_size=opts.image_size, augment=augment,
            cache_bytes=int(opts.cache_gb * 1024**3), goal_images=goal_images,
            goal_camera=needs.goal_camera, act_real_shift=opts.act_real_shift, history=needs.history,
            object_boxes=None if needs.object_boxes else False, task_object=needs.task_object)
        self.chunk_size = chunk

    def _stage_progress(self, stage: str, step: int, total: int, loss: float) -> None:
        if self.progress is not None:
            self.progress(TrainProgress(phase=stage, step=step, total_steps=total, epoch=0.0, loss=loss))

    def _build_config(self, opts: TrainOptions, policy_cls: type[Policy]) -> PolicyConfig:
        info = self.info
        fps = opts.fps or info.fps
        if fps is None:
            fps = config_default(policy_cls.config_class, "fps") or 30.0
            log.warning("the episodes do not record their rate; assuming %g Hz (set it with --fps)", fps)
        values = dict(opts.policy_config)
        # --lr / --weight-decay are the policy's own lr / weight_decay where its config has them,
        # so the checkpoint's config says what the run used.
        fields = {f.name for f in dataclasses.fields(policy_cls.config_class)}
        if opts.lr is not None and "lr" in fields:
            values["lr"] = opts.lr
        if opts.weight_decay is not None and "weight_decay" in fields:
            values["weight_decay"] = opts.weight_decay
        values.update(camera_names=list(info.camera_names), image_shape=tuple(info.image_shape),
                      state_dim=info.state_dim, action_dim=info.action_dim,
                      chunk_size=self.chunk_size, fps=float(fps))
        values = policy_cls.config_class.options_for_tasks(values, list(info.tasks))
        return policy_cls.config_class.from_dict(values)

    def _make_loader(self, ds: Any, batch_sampler: Any = None, batch_size: int | None = None) -> DataLoader:
        workers = self.opts.num_workers
        if workers is None:
            workers = 0 if self.train_ds.cached else min(4, max(1, (os.cpu_count() or 2) // 2))
        kwargs: dict[str, Any] = {"num_workers": workers, "pin_memory": self.device.type == "cuda",
                                  "collate_fn": collate_samples,
                                  "generator": torch.Generator().manual_seed(self.opts.seed)}
        if workers > 0:
            kwargs.update(worker_init_fn=ignore_sigint_in_worker, prefetch_factor=4)
        if batch_sampler is not None:
            return DataLoader(ds, batch_sampler=batch_sampler, **kwargs)
        return DataLoader(ds, batch_size=batch_size, shuffle=False, **kwargs)

    # -- main loop -----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        state = self._prepare_out_dir()
        opts = self._effective_options(state)
        self.opts = opts
        random.seed(opts.seed)
        np.random.seed(opts.seed % 2**32)
        torch.manual_seed(opts.seed)

        policy_cls = get_policy_class(opts.policy)
        self._build_data(opts, policy_cls)
        config = self._build_config(opts, policy_cls)

        if state is not None:
            from robokit.policies.checkpoint import load_checkpoint

            policy, meta = load_checkpoint(self.last_path, map_location="cpu", expected_type=opts.policy)
            if int(meta.get("step", -1)) != int(state["step"]):
                raise CheckpointError(f"{self.last_path} is at step {meta.get('step')} but "
                                      f"{self.state_path} at step {state['step']}; the run was cut off "
                                      "while saving: start a new run from best.pt's data")
            if policy.config.to_dict() != config.to_dict():
                log.warning("resuming with the checkpoint's policy config; the dataset now implies %s",
                            config.to_dict())
        else:
            policy = policy_cls(config)
            policy.set_norm_stats(self.stats)
            if opts.init_from:
                warm_start(policy, opts.init_from, opts.policy)
                if self.dist.is_main:
                    log.info("starting from the weights of %s", opts.init_from)
        policy.to(self.device)
        policy.train()
        self.policy = policy

        lr = opts.lr or float(getattr(policy.config, "lr", 0) or 1e-4)
        wd = opts.weight_decay if opts.weight_decay is not None else float(
            getattr(policy.config, "weight_decay", 1e-4))
        self.optimizer = adamw(policy.optimizer_param_groups(lr, wd), lr, wd, self.device)
        self.lr = lr
        # Each group's own base rate (a backbone may train slower); the schedule scales them all.
        self.base_lrs = [float(group["lr"]) for group in self.optimizer.param_groups]

        start_step = 0
        self.best_val = None
        self.train_seconds_before = 0.0
        if state is not None:
            load_optimizer_state(self.optimizer, state["optimizer"])
            start_step = int(state["step"])
            self.best_val = state.get("best_val_loss")
            self.train_seconds_before = float(state.get("train_seconds", 0.0))
        self.model: nn.Module = LossModule(policy)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)

        sampler = TrainBatches(len(self.train_ds), opts.batch_size, opts.seed, self.dist.rank,
                                self.dist.world_size, start_step, sample_weights(self.train_ds.records))
        self.steps_per_epoch = sampler.steps_per_epoch
        if opts.steps is not None:
            total = int(opts.steps)
        elif opts.epochs is not None:
            total = max(1, math.ceil(opts.epochs * self.steps_per_epoch))
        else:
            total = DEFAULT_STEPS
        if start_step >= total:
            raise ConfigError(f"{self.out} has already trained {start_step} steps; to go on, pass "
                              f"--steps larger than {start_step}")
        self.total = total
        self.val_every = opts.val_every or max(1, min(1000, total // 10))

        self.metrics = MetricsLog(self.out / "metrics.jsonl")
        if self.dist.is_main:
            self.metrics.load(up_to_step=start_step if state is not None else -1)
        if state is not None:
            restore_rng_state(state, self.device)
        self.last_val: float | None = None
        self.last_train: float | None = None
        self._terms: dict[str, float] = {}
        self._last_plot = time.monotonic()  # first refresh after PLOT_INTERVAL_S, or at the end
        return self._loop(sampler, start_step)

    def _loop(self, sampler: TrainBatches, start_step: int) -> TrainResult:
        opts, device, dist = self.opts, self.device, self.dist
        loader = self._make_loader(self.train_ds, batch_sampler=sampler)
        step = start_step
        sums: dict[str, torch.Tensor] = {}
        window_steps, window_time, window_start = 0, 0.0, time.perf_counter()
        run_start = time.perf_counter()
        if isinstance(self.progress, Observers):  # rank 0: observers may evaluate and save the policy
            self.progress.bind(self.policy, lambda path, at: self._save(path, at, run_start))
        steps_per_s: float | None = None
        interrupted = False
        self._emit("start", step, steps_per_s)
        autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if self.amp
                    else nullcontext())
        with StopRequest() as stop:
            batches = iter(loader)
            try:
                while step < self.total:
                    # Under DDP every rank must stop at the same step: agree on it at log steps.
                    check = not dist.enabled or step % opts.log_every == 0
                    if check and dist.any(stop.requested, device):
                        interrupted = True
                        break
                    batch = to_device(next(batches), device)
                    self._apply_lr_schedule(step)
                    with autocast:
                        out = self.model(batch)
                    loss = out["loss"]
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if opts.grad_clip:
                        nn.utils.clip_grad_norm_(self.policy.parameters(), opts.grad_clip)
                    self.optimizer.step()
                    step += 1
                    window_steps += 1
                    for k, v in out.items():
                        if torch.is_tensor(v) and v.numel() == 1:
                            sums[k] = sums.get(k, 0) + v.detach().float()

                    if step % opts.log_every == 0 or step == self.total:
                        elapsed = window_time + time.perf_counter() - window_start
                        steps_per_s = window_steps / elapsed if elapsed > 0 else None
                        terms = {k: float(v.item()) / window_steps for k, v in sums.items()}
                        if not all(math.isfinite(v) for v in terms.values()):
                            raise ConfigError(f"the training loss became non-finite ({terms}) by step "
                                              f"{step}; lower the learning rate (--lr) or check the data")
                        self.last_train = terms.get("loss")
                        if dist.is_main:
                            self.metrics.append({"split": "train", "step": step, "epoch": self._epoch(step),
                                                 "time": round(time.time(), 3), **terms, "lr": self._lr(),
                                                 "steps_per_s": steps_per_s})
                        sums, window_steps, window_time, window_start = {}, 0, 0.0, time.perf_counter()
                        self._terms = terms
                    if step % self.val_every == 0 or step == self.total:
                        window_time += time.perf_counter() - window_start
                        self._validate_and_save(step, run_start)
                        window_start = time.perf_counter()  # validation time is not training speed
                    self._emit("train", step, steps_per_s)
            finally:
                del batches
        if interrupted:
            log.warning("stopped at step %d; saving %s", step, self.last_path)
            self._save_last(step, run_start)
            if dist.is_main:
                self._plot(force=True)
        result = TrainResult(
            out_dir=self.out, step=step, total_steps=self.total, last_path=self.last_path,
            best_path=self.best_path if self.best_path.exists() else None, best_val_loss=self.best_val,
            last_val_loss=self.last_val, train_loss=self.last_train,
            train_seconds=self._train_seconds(run_start), interrupted=interrupted,
            dataset=self.info.to_dict(), device=str(device), world_size=dist.world_size)
        dist.barrier()  # the others wait while rank 0 validates and saves the last time
        self._emit("done", step, steps_per_s)
        return result

    # -- pieces ----------------------------------------------------------------------------------
    def _epoch(self, step: int) -> float:
        return round(step / self.steps_per_epoch, 4)

    def _apply_lr_schedule(self, step: int) -> None:
        """Set every group's rate for optimizer step ``step`` (0-based) from its base rate."""
        factor = lr_factor(self.opts.lr_schedule, step, self.total)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _train_seconds(self, run_start: float) -> float:
        return self.train_seconds_before + (time.perf_counter() - run_start)

    def _emit(self, phase: str, step: int, steps_per_s: float | None) -> None:
        if self.progress is None:
            return
        remaining = self.total - step
        self.progress(TrainProgress(
            phase=phase, step=step, total_steps=self.total, epoch=self._epoch(step),
            loss=self.last_train, lr=self._lr(), steps_per_s=steps_per_s,
            eta_s=remaining / steps_per_s if steps_per_s else None, val_loss=self.last_val,
            best_val_loss=self.best_val, terms=dict(self._terms)))

    def _validate(self) -> dict[str, float] | None:
        if self.val_ds is None or len(self.val_ds) == 0:
            return None
        n = validation_samples(len(self.val_ds), self.opts, self.val_every)
        idx = np.unique(np.linspace(0, len(self.val_ds) - 1, n).round().astype(int)).tolist()
        loader = self._make_loader(Subset(self.val_ds, idx), batch_size=self.opts.val_batch_size)
        return validation_losses(self.policy, loader, self.device, self.opts.seed + 12345, self.amp)

    def _validate_and_save(self, step: int, run_start: float) -> None:
        if not self.dist.is_main:
            return  # rank 0 validates alone; the others wait for it in the next all-reduce
        val = self._validate()
        if val is not None:
            self.last_val = val.get("loss")
            score = self.last_val
        else:
            score = self.last_train  # no validation set: keep the lowest training loss
        improved = score is not None and (self.best_val is None or score < self.best_val)
        if val is not None:
            self.metrics.append({"split": "val", "step": step, "epoch": self._epoch(step),
                                 "time": round(time.time(), 3), **val, "best": improved})
        if improved:
            self.best_val = score
            self._save(self.best_path, step, run_start)
        self._save_last(step, run_start)
        self._plot(force=step == self.total)
        self._emit("val", step, None)

    def _plot(self, force: bool = False) -> None:
        # Four PNGs take about a second: at most one refresh per PLOT_INTERVAL_S, plus the last.
        now = time.monotonic()
        if not force and now - self._last_plot < PLOT_INTERVAL_S:
            return
        self._last_plot = now
        try:
            plot_history(self.metrics.records, self.out)
        except Exception as exc:  # noqa: BLE001 - a plot must never cost a training run
            log.warning("could not write plots: %s", exc)

    def _meta(self, step: int, run_start: float) -> dict[str, Any]:
        info = self.info
        return {
            "dataset": info.folder, "episodes": list(info.episodes), "num_episodes": len(info.episodes),
            "train_episodes": list(info.train_episodes), "val_episodes": list(info.val_episodes),
            "step": int(step), "epoch": self._epoch(step),
            "val_loss": None if self.last_val is None else float(self.last_val),
            "best_val_loss": None if self.best_val is None else float(self.best_val),
            "train_loss": None if self.last_train is None else float(self.last_train),
            "fps": float(self.policy.config.fps), "camera_names": list(info.camera_names),
            "tasks": list(info.tasks),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "robokit_version": robokit.__version__,
            "train_seconds": round(self._train_seconds(run_start), 2),
            "policy": self.opts.policy, "seed": int(self.opts.seed), "batch_size": int(self.opts.batch_size),
            "world_size": int(self.dist.world_size), "lr": float(self.lr), "device": str(self.device),
            "total_steps": int(self.total), "corrections": self.corrections, "init_from": self.opts.init_from,
        }

    def _save(self, path: Path, step: int, run_start: float) -> None:
        from robokit.policies.checkpoint import save_checkpoint

        save_checkpoint(path, self.policy, self._meta(step, run_start))

    def _save_last(self, step: int, run_start: float) -> None:
        if not self.dist.is_main:
            return
        # last.pt first: a crash between the two leaves train_state at an older step, which
        # --resume detects instead of pairing new weights with an old optimizer.
        self._save(self.last_path, step, run_start)
        state = {
            "format": TRAIN_STATE_FORMAT, "version": TRAIN_STATE_VERSION, "step": int(step),
            "optimizer": self.optimizer.state_dict(), "best_val_loss": self.best_val,
            "train_seconds": float(self._train_seconds(run_start)), "options": self.opts.to_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            **host_rng_state(),
        }
        atomic_torch_save(state, self.state_path)
