"""`robokit train DATA --policy act --out runs/NAME`: train a policy on a folder of episodes.

    robokit train data/pick --policy act --out runs/pick --steps 2000 --batch-size 8
    robokit train data/pick --policy act --backbone small --hidden-dim 128 --image-size 96x128
    robokit train data/pick --config run.toml --steps 500        # flags override the file
    robokit train data/pick --out runs/pick --resume --steps 4000 # continue from runs/pick/last.pt
    robokit train data/pick --rollouts rollouts/round1 --intervention-weight 2 --out runs/pick-dagger
    robokit train data/pick --rollouts rollouts/round1 --init-from runs/pick/last.pt --out runs/pick-ft
    robokit train data/pick --log tensorboard,wandb --eval-sim 10 --eval-every 500  # curves, sim success
    torchrun --nproc_per_node 2 -m robokit.cli train data/pick --out runs/ddp  # DDP

The config file (TOML) takes the option names with ``_`` or ``-`` (``data``, ``out``, ``policy``,
``steps``, ``batch_size``, ``camera`` = ["top", "wrist"], ``image_size`` = "96x128", ...) and a
``[policy_config]`` table of policy options (``backbone``, ``hidden_dim``, ``kl_weight``, ...).
Unknown keys are errors. Values given as flags override the file's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from robokit.commands.common import format_duration, format_number, parse_image_size, training_fields
from robokit.errors import ConfigError

# TOML key -> TrainOptions field, where the file uses the flag's name.
_ALIASES = {"camera": "camera_names", "cameras": "camera_names"}
_NOT_IN_FILE = {"resume"}  # a property of one invocation, not of a run's configuration
STAGES = ("segmenter",)  # progress phases of a model trained before the policy (the VLA's segmenter)


def load_config_file(path: Path) -> dict[str, Any]:
    """TOML run file -> TrainOptions keyword arguments (checked: unknown keys are errors)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise ConfigError("--config needs Python 3.11 or newer (tomllib)") from None
    from robokit.training.trainer import TrainOptions

    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    fields = {f.name for f in dataclasses.fields(TrainOptions)} - _NOT_IN_FILE
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        name = _ALIASES.get(name, name)
        if name not in fields:
            known = ", ".join(sorted(fields | {"camera"}))
            raise ConfigError(f"{path}: unknown key '{key}'; known keys: {known}")
        if name == "policy_config" and not isinstance(value, dict):
            raise ConfigError(f"{path}: [policy_config] must be a table of policy options")
        if name == "image_size":
            value = parse_image_size(value)
        if name == "camera_names" and isinstance(value, str):
            value = [value]
        out[name] = value
    if "policy_config" in out:
        out["policy_config"] = {k.replace("-", "_"): v for k, v in out["policy_config"].items()}
    return out


def coerce_policy_value(policy: str, key: str, text: str) -> Any:
    """A ``--set key=value`` string as the type of the policy config field ``key``."""
    from robokit.policies.registry import get_policy_class

    config_class = get_policy_class(policy).config_class
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    if key not in fields:
        raise ConfigError(f"policy '{policy}' has no option '{key}'; its options: "
                          f"{', '.join(sorted(fields))}")
    f = fields[key]
    default = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(default, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--set {key}={text}: expected true or false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--set {key}={text}: expected an integer") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--set {key}={text}: expected a number") from None
    if isinstance(default, str):
        return text
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_options(flags: dict[str, Any], config_file: Path | None, sets: list[str]) -> Any:
    """TrainOptions from defaults < config file < flags (flags that are None were not given)."""
    from robokit.training.trainer import TrainOptions

    values: dict[str, Any] = load_config_file(config_file) if config_file else {}
    policy_config = dict(values.pop("policy_config", {}))
    for name, value in flags.items():
        if name == "policy_config":
            policy_config.update(value)
        elif value is not None:
            values[name] = value
    policy = values.get("policy", "act")
    for item in sets:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE, got {item!r}")
        policy_config[key] = coerce_policy_value(policy, key, text)
    values["policy_config"] = policy_config
    if not values.get("data"):
        raise ConfigError("give the dataset folder: robokit train DATA (or `data = ...` in --config)")
    if not values.get("out"):
        values["out"] = str(Path("runs") / f"{Path(values['data']).name}-{policy}")
    return TrainOptions(**values)


class _ProgressView:
    """A rich progress bar fed by the trainer's progress callback."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), console=console, transient=False)
        self.task: Any = None
        self.stage_tasks: dict[str, Any] = {}

    def __enter__(self) -> _ProgressView:  # noqa: PYI034
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, p: Any) -> None:
        if p.phase in STAGES:
            if p.phase not in self.stage_tasks:
                self.stage_tasks[p.phase] = self.progress.add_task(p.phase, total=p.total_steps, info="")
            self.progress.update(self.stage_tasks[p.phase], completed=p.step,
                                 info=f"{p.phase} · loss {format_number(p.loss)}")
            return
        if self.task is None:
            self.task = self.progress.add_task("train", total=p.total_steps, completed=p.step, info="")
        parts = [*training_fields(p), f"lr {p.lr:.1e}", f"ETA {format_duration(p.eta_s)}"]
        self.progress.update(self.task, completed=p.step, total=p.total_steps, info=" · ".join(parts))


class _LineView:
    """Without a terminal (CI, nohup): one line per validation instead of a live bar."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, p: Any) -> None:
        if p.phase in STAGES and (p.step % 100 == 0 or p.step == p.total_steps):
            self.console.print(f"{p.phase} step {p.step}/{p.total_steps} loss {format_number(p.loss)}",
                               highlight=False)
        if p.phase != "val":
            return
        val = f"{p.val_loss:.4f}" if p.val_loss is not None else "n/a"
        self.console.print(f"step {p.step}/{p.total_steps} loss {format_number(p.loss)} val {val} "
                           f"lr {p.lr:.1e}", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        data: Annotated[Path | None, typer.Argument(help="Folder of episode_<N>.hdf5 files.")] = None,
        policy: Annotated[str | None, typer.Option("--policy", "-p",
                                                   help="act | cnnmlp | grp | vima | vla (default act).")] = None,
        out: Annotated[Path | None, typer.Option("--out", "-o",
                                                 help="Run folder (default runs/<data>-<policy>).")] = None,
        steps: Annotated[int | None, typer.Option(help="Optimizer steps in total (default 5000).")] = None,
        epochs: Annotated[float | None, typer.Option(
            help="Train for this many passes over the training steps instead of --steps.")] = None,
        batch_size: Annotated[int | None, typer.Option("--batch-size", "-b",
                                                       help="Batch size per process (default 8).")] = None,
        camera: Annotated[list[str] | None, typer.Option(
            "--camera", "-c", help="Camera to train on; repeat for several (default: all).")] = None,
        chunk_size: Annotated[int | None, typer.Option(help="Action chunk length H.")] = None,
        image_size: Annotated[str | None, typer.Option(
            help="Resize images to HxW at load time, e.g. 96x128 (default: native).")] = None,
        device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N | mps.")] = None,
        seed: Annotated[int | None, typer.Option(help="Seed of the split, init and sampling.")] = None,
        lr: Annotated[float | None, typer.Option(help="Learning rate (default: the policy's).")] = None,
        lr_schedule: Annotated[str | None, typer.Option(
            help="constant (the original ACT's) or cosine (decays to 0 at the last step).")] = None,
        val_every: Annotated[int | None, typer.Option(help="Validate and save every N steps.")] = None,
        val_fraction: Annotated[float | None, typer.Option(
            help="Share of episodes held out for validation (default 0.2).")] = None,
        val_samples: Annotated[int | None, typer.Option(
            help="Validation samples per evaluation (default 512; fewer = faster on a CPU).")] = None,
        val_batch_size: Annotated[int | None, typer.Option(
            help="Batch size of validation (default: twice --batch-size).")] = None,
        num_workers: Annotated[int | None, typer.Option(help="DataLoader worker processes.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from last.pt.")] = False,
        init_from: Annotated[Path | None, typer.Option(
            "--init-from", help="Start from this checkpoint's weights (fine-tune): same model and cameras, "
                                "a fresh optimizer and schedule.")] = None,
        amp: Annotated[bool | None, typer.Option("--amp/--no-amp", help="bf16 autocast (CUDA only).")] = None,
        config: Annotated[Path | None, typer.Option("--config", help="TOML file of these options.")] = None,
        backbone: Annotated[str | None, typer.Option(help="Policy backbone, e.g. resnet18 or small.")] = None,
        hidden_dim: Annotated[int | None, typer.Option(help="Policy hidden dimension.")] = None,
        fps: Annotated[float | None, typer.Option(help="Control rate, if the episodes do not say.")] = None,
        augment_shift: Annotated[int | None, typer.Option(help="Random-shift augmentation (pixels).")] = None,
        augment_color: Annotated[float | None, typer.Option(help="Colour jitter strength 0..1.")] = None,
        rollouts: Annotated[list[Path] | None, typer.Option(
            "--rollouts", help="A folder of deploy rollouts with takeover (--record) to learn the corrections "
                               "of, next to DATA; repeatable.")] = None,
        intervention_weight: Annotated[float | None, typer.Option(
            help="How much more often intervention steps are drawn than other steps (default 1).")] = None,
        keep_failed_policy_steps: Annotated[bool | None, typer.Option(
            "--keep-failed-policy-steps/--drop-failed-policy-steps",
            help="Train on the policy's own steps of failed rollouts too (default: left out).")] = None,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="Any policy option, KEY=VALUE (repeatable), e.g. --set kl_weight=10.")] = None,
        log: Annotated[list[str] | None, typer.Option(
            "--log", help="Also log to tensorboard and/or wandb (repeatable or a,b; needs robokit[logs]).")] = None,
        wandb_project: Annotated[str | None, typer.Option(
            help="wandb project; logs online unless WANDB_MODE says otherwise (default: offline).")] = None,
        eval_sim: Annotated[int | None, typer.Option(
            help="Run N simulation episodes every --eval-every steps and at the end (sim data only).")] = None,
        eval_every: Annotated[int | None, typer.Option(
            help="Steps between simulation evaluations (default: as --val-every).")] = None,
        eval_seed: Annotated[int | None, typer.Option(
            help="First seed of the held-out evaluation scenes (default 1000).")] = None,
    ) -> None:
        """Train a policy on recorded episodes: progress, validation, best.pt/last.pt, plots, metrics."""
        from robokit.training.trainer import train

        policy_config: dict[str, Any] = {}
        if backbone is not None:
            policy_config["backbone"] = backbone
        if hidden_dim is not None:
            policy_config["hidden_dim"] = hidden_dim
        flags = {
            "data": str(data) if data else None, "policy": policy, "out": str(out) if out else None,
            "steps": steps, "epochs": epochs, "batch_size": batch_size, "camera_names": camera or None,
            "chunk_size": chunk_size, "image_size": parse_image_size(image_size) if image_size is not None else None, "device": device,
            "seed": seed, "lr": lr, "lr_schedule": lr_schedule, "val_every": val_every, "val_fraction": val_fraction,
            "val_samples": val_samples, "val_batch_size": val_batch_size,
            "num_workers": num_workers, "amp": amp, "fps": fps, "augment_shift": augment_shift,
            "augment_color": augment_color, "resume": resume or None, "policy_config": policy_config,
            "init_from": str(init_from) if init_from else None,
            "rollouts": [str(r) for r in rollouts] if rollouts else None,
            "intervention_weight": intervention_weight, "keep_failed_policy_steps": keep_failed_policy_steps,
            "log": log or None, "wandb_project": wandb_project, "eval_sim": eval_sim, "eval_every": eval_every,
            "eval_seed": eval_seed,
        }
        options = build_options(flags, config, set_ or [])
        sim_eval = None
        if options.eval_sim:  # checks the data is simulated before any training
            from robokit.deploy.train_eval import SimEvaluation

            sim_eval = SimEvaluation(options)
        observers = [sim_eval] if sim_eval is not None else []
        is_main = int(os.environ.get("RANK", "0")) == 0
        console = Console(stderr=True)
        if is_main:
            extra = f" and the rollouts in {', '.join(options.rollouts)}" if options.rollouts else ""
            console.print(f"training [bold]{options.policy}[/] on {options.data}{extra} -> {options.out}",
                          highlight=False)
        if is_main and console.is_terminal:
            with _ProgressView(console) as view:
                result = train(options, progress=view, observers=observers)
        else:
            result = train(options, progress=_LineView(console) if is_main else None, observers=observers)
        if not is_main:
            return
        best = f"{result.best_val_loss:.4f}" if result.best_val_loss is not None else "n/a"
        # Without a validation split best.pt is chosen by the training loss: say which it is.
        best_label = "best val loss" if options.val_fraction > 0 else "lowest train loss"
        console.print(
            f"{'stopped' if result.interrupted else 'done'} at step {result.step}/{result.total_steps} "
            f"in {format_duration(result.train_seconds)} on {result.device}"
            f"{f' x{result.world_size}' if result.world_size > 1 else ''}; {best_label} {best}",
            highlight=False)
        console.print(f"checkpoints: {result.last_path}"
                      f"{f', {result.best_path}' if result.best_path else ''}; "
                      f"curves: {result.out_dir}/train_val_*.png, {result.out_dir}/metrics.jsonl",
                      highlight=False)
        if sim_eval is not None and sim_eval.best is not None:
            console.print(f"success in simulation: best {100 * sim_eval.best:.0f}% at step {sim_eval.best_step} "
                          f"({result.out_dir}/best_success.pt); curve: {result.out_dir}/train_success.png",
                          highlight=False)
        if result.interrupted:
            console.print(f"resume with: robokit train {options.data} --out {options.out} --resume",
                          highlight=False)
            sys.exit(130)
