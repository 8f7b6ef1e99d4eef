"""`robokit import-act`: turn an original-ACT checkpoint + stats pickle into a robokit checkpoint.

    robokit import-act policy_best.ckpt dataset_stats.pkl --camera top --out act.pt
    robokit import-act policy_best.ckpt dataset_stats.pkl --camera cam_high --camera cam_low \\
        --camera cam_left_wrist --camera cam_right_wrist --chunk-size 100 --out aloha_act.pt
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from robokit.commands.common import parse_image_size
from robokit.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command("import-act")
    def import_act_command(
        ckpt: Annotated[Path, typer.Argument(help="Original ACT checkpoint (policy_best.ckpt, a torch state dict).")],
        stats: Annotated[Path, typer.Argument(help="The original's dataset_stats.pkl (restricted unpickler).")],
        camera: Annotated[list[str], typer.Option("--camera", "-c",
                                                  help="Camera names in the original's order (repeat).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="robokit checkpoint to write (.pt).")],
        nheads: Annotated[int, typer.Option(help="Attention heads: not visible in the weights, so it must be right (8 in ACT).")] = 8,
        chunk_size: Annotated[int | None, typer.Option(help="Expected chunk size (checked against the weights).")]
        = None,
        hidden_dim: Annotated[int | None, typer.Option(help="Expected hidden size (checked).")] = None,
        dim_feedforward: Annotated[int | None, typer.Option(help="Expected feed-forward size (checked).")] = None,
        image_size: Annotated[str, typer.Option(
            help="HxW the model was trained on; other sizes are resized to it.")] = "480x640",
        fps: Annotated[float, typer.Option(help="Control rate of the training data (ALOHA: 50).")] = 50.0,
        verify: Annotated[bool, typer.Option(
            help="Compare against the original network layout on random inputs.")] = True,
        force: Annotated[bool, typer.Option(help="Overwrite --out if it exists.")] = False,
    ) -> None:
        """Convert an original-ACT (tonyzhaozh/act) checkpoint and stats into one robokit checkpoint."""
        from robokit.policies.act.import_original import build_imported_policy, verify_import
        from robokit.policies.checkpoint import save_checkpoint

        console = Console()
        if out.exists() and not force:
            raise UserError(f"{out} exists; pass --force to overwrite it")
        policy, sd = build_imported_policy(
            ckpt, stats, camera, nheads=nheads, image_shape=(*parse_image_size(image_size), 3), fps=fps,
            expect={"chunk_size": chunk_size, "hidden_dim": hidden_dim, "dim_feedforward": dim_feedforward})
        cfg = policy.config
        console.print(f"ACT: {cfg.backbone}, hidden {cfg.hidden_dim}, {cfg.nheads} heads, ff {cfg.dim_feedforward}, "
                      f"{cfg.enc_layers} enc / {cfg.dec_layers} dec layers (first used), chunk {cfg.chunk_size}, "
                      f"state {cfg.state_dim}, action {cfg.action_dim}, cameras {', '.join(cfg.camera_names)}")
        meta = {"source": "original-act", "imported_from": str(ckpt.resolve()),
                "stats_from": str(stats.resolve()), "camera_names": list(cfg.camera_names), "fps": fps}
        if verify:
            diff = verify_import(policy, sd)
            meta["import_max_abs_diff"] = diff
            console.print(f"verified against the original layout: max |difference| {diff:.2e}")
            if diff > 1e-4:
                raise UserError(f"the converted model differs from the original layout by {diff:.2e}; "
                                "nothing was written (please report this as a robokit bug)")
        save_checkpoint(out, policy, meta)
        console.print(f"wrote {out}  (the done head is untrained in original ACT: no done signal)")
