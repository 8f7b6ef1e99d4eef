"""Attention trees for robokit's own policies, run over chosen steps of a recorded episode.

The policies expose their attention through ``predict_chunk(obs, capture_attention=True)``:
``extras["attention"] = {"maps": float32 (layers, heads, queries, tokens),
"query_kind": "action", "layout": {segment: [start, stop] | [start, stop, h, w]}}``. This module
turns one such capture into :func:`robokit.viz.attention.render_tree` input:

* ACT: decoder cross-attention of every action query to the encoder memory ``[latent, state,
  camera grids...]``; each camera grid is drawn on that camera's frame.
* GRP: the action (CLS) token's attention to observation patches (per camera), goal-image patches
  (drawn on the goal image; skipped when the policy followed text) and text characters (skipped
  when it followed a goal image).
* VIMA-style: the action query's cross-attention to the prompt: the instruction's characters and
  the object tokens (shown as ``<name>`` after the text), in one text strip.
* VLA: the decoder's cross-attention of every action step to the instruction's words and the
  segmenter's instance tokens (``<camera:instance>`` after the words), in one text strip.

Optional ``extras["attention"]["text_tokens"]`` (list of str) overrides the token labels; without
it, character tokenizers show the instruction's characters, word tokenizers its words.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robokit.errors import UserError
from robokit.viz.attention import RenderSummary, render_tree
from robokit.viz.layout import TokenLayout

log = logging.getLogger(__name__)


def parse_steps(spec: str, length: int) -> list[int]:
    """Episode steps from ``"start:stop:step"`` (Python slice rules), ``"7"`` or ``"0,10,25"``."""
    spec = spec.strip()
    try:
        if ":" in spec:
            parts = [int(p) if p.strip() else None for p in spec.split(":")]
            if len(parts) > 3:
                raise ValueError
            steps = list(range(length))[slice(*parts)]
        else:
            steps = [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise UserError(f"--steps '{spec}' is not start:stop:step, a step number or a comma list") from None
    bad = [s for s in steps if not 0 <= s < length]
    if bad:
        raise UserError(f"step {bad[0]} is outside the episode (it has {length} steps: 0..{length - 1})")
    if not steps:
        raise UserError(f"--steps '{spec}' selects no step of an episode with {length} steps")
    return sorted(set(steps))


def policy_text_tokens(policy: Any, task: str) -> list[str] | None:
    """Token strings of ``task`` as the policy's text encoder splits it, if it can tell."""
    words = getattr(policy, "words", None)
    word_tokenizer = getattr(words, "tokenizer", words)  # a task encoder's, or the tokenizer itself
    if word_tokenizer is not None and hasattr(word_tokenizer, "words"):  # one token per word
        return list(word_tokenizer.words(task))
    enc = getattr(policy, "text_encoder", None)
    tok = getattr(enc, "tokenizer", None)
    if tok is not None and hasattr(tok, "ids"):  # character tokenizer: one token per character
        return list(task.lower() if getattr(tok, "lowercase", False) else task)
    hf = getattr(enc, "_hf_tokenizer", None)
    if hf is not None and hasattr(hf, "tokenize"):
        return [str(t) for t in hf.tokenize(task)]
    return None


def capture_to_tree_input(
    capture: Mapping[str, Any], text_tokens: Sequence[str] | None, goal_mode: str | None = None
) -> tuple[np.ndarray, dict[str, Any], list[str] | None, list[str]]:
    """``(attention [D, L, 1, 1, heads, Q, T], layout dict, text tokens, padded names)``."""
    maps = np.asarray(capture.get("maps"))
    if maps.ndim == 4:
        att = maps[None, :, None, None]
    elif maps.ndim == 5:  # (diffusion steps, layers, heads, queries, tokens)
        att = maps[:, :, None, None]
    else:
        raise UserError(
            f"the policy's attention maps have shape {maps.shape}; expected (layers, heads, "
            f"queries, tokens)"
        )
    layout = {k: list(v) for k, v in dict(capture.get("layout") or {}).items()}
    if not layout:
        raise UserError("the policy's attention capture has no token layout")
    tokens = (
        list(capture["text_tokens"])
        if capture.get("text_tokens") is not None
        else (list(text_tokens) if text_tokens is not None else None)
    )
    padded: list[str] = []
    if goal_mode == "text" and "goal_image" in layout:
        padded.append("goal_image")  # masked out while following text: nothing to show
    if goal_mode == "image":
        layout.pop("text", None)  # text masked out while following a goal image
    objects = sorted((k for k in layout if k.startswith("object/")), key=lambda k: layout[k][0])
    if objects and "text" in layout:
        att, layout, tokens = _compact_prompt(att, layout, tokens, objects)
    return att, layout, tokens, padded


def _compact_prompt(
    att: np.ndarray, layout: dict[str, list[int]], tokens: list[str] | None, objects: list[str]
) -> tuple[np.ndarray, dict[str, list[int]], list[str]]:
    """Gather [real text tokens, object tokens] into one text segment (VIMA's prompt)."""
    t0, t1 = layout["text"][:2]
    n_text = min(len(tokens), t1 - t0) if tokens is not None else t1 - t0
    labels = list(tokens[:n_text]) if tokens is not None else [f"#{i}" for i in range(n_text)]
    cols = list(range(t0, t0 + n_text))
    for name in objects:
        cols.append(layout[name][0])
        labels.append(f"<{name.split('/', 1)[1]}>")
    keep = {k: v for k, v in layout.items() if len(v) == 4}  # image grids keep their columns
    grid_cols = [c for v in keep.values() for c in range(v[0], v[1])]
    new_att = att[..., grid_cols + cols]
    out: dict[str, list[int]] = {}
    pos = 0
    for k, v in keep.items():
        out[k] = [pos, pos + v[1] - v[0], v[2], v[3]]
        pos += v[1] - v[0]
    out["text"] = [pos, pos + len(cols)]
    return new_att, out, labels


def render_policy_attention(
    policy: Any,
    episode_path: str | Path,
    steps: str | Sequence[int],
    out_dir: str | Path,
    *,
    task: str | None = None,
    history: bool = True,
    **render_kwargs: Any,
) -> list[RenderSummary]:
    """Run ``policy`` over an episode and write one attention tree per chosen step.

    ``steps``: a spec for :func:`parse_steps` or a list. With ``history`` (default) the policy sees
    every step from 0 to the last chosen one in order, so policies that keep an observation history
    (GRP frame stacking, VIMA) see what they would have seen live; attention is captured at the
    chosen steps only. The tree of step ``t`` is ``out_dir/inference_timestep_<t>/``.
    """
    from robokit.episodes.reader import open_episode

    cfg = policy.config
    out: list[RenderSummary] = []
    with open_episode(episode_path) as ep:
        missing = [c for c in cfg.camera_names if c not in ep.camera_names]
        if missing:
            raise UserError(
                f"{ep.path}: the episode has camera(s) {', '.join(ep.camera_names) or 'none'} but "
                f"the policy needs {', '.join(cfg.camera_names)} (missing: {', '.join(missing)}); "
                f"use an episode recorded with the policy's cameras"
            )
        if ep.state_dim != cfg.state_dim:
            raise UserError(
                f"{ep.path}: the episode's state has {ep.state_dim} values, the policy expects "
                f"{cfg.state_dim}"
            )
        chosen = parse_steps(steps, ep.length) if isinstance(steps, str) else sorted({int(s) for s in steps})
        bad = [s for s in chosen if not 0 <= s < ep.length]
        if bad:
            raise UserError(f"step {bad[0]} is outside the episode (it has {ep.length} steps)")
        instruction = task if task is not None else (ep.task or "")
        goal_images = {c: ep.goal_image(c) for c in ep.camera_names}
        needs = cfg.data_needs()
        goal_cam = needs.goal_camera
        qpos = ep.qpos()
        text_tokens = policy_text_tokens(policy, instruction) if instruction else None
        policy.reset()
        run = range(chosen[-1] + 1) if history else chosen
        wanted = set(chosen)
        for t in run:
            images = {c: ep.image(c, t) for c in cfg.camera_names}
            obs: dict[str, Any] = {"qpos": qpos[t], "images": images}
            if instruction and needs.instruction:
                obs["task"] = instruction
            if goal_cam is not None and goal_images.get(goal_cam) is not None:
                obs["goal_image"] = goal_images[goal_cam]
            capture = t in wanted
            _, extras = (
                policy.predict_chunk(obs, capture_attention=capture)
                if capture
                else (policy.predict_chunk(obs))
            )
            if not capture:
                continue
            if "attention" not in extras:
                raise UserError(
                    f"policy '{getattr(policy, 'name', type(policy).__name__)}' returned no "
                    f"attention although capture_attention=True was asked"
                )
            att, layout, tokens, padded = capture_to_tree_input(
                extras["attention"], text_tokens, extras.get("goal_mode")
            )
            shown = dict(images)
            if "goal_image" in layout and "goal_image" not in padded:
                goal = obs.get("goal_image")
                if goal is None:
                    padded.append("goal_image")
                else:
                    shown["goal_image"] = goal
            title = f"{Path(ep.path).name} step {t}" + (f" - {instruction}" if instruction else "")
            summary = render_tree(
                att,
                TokenLayout.from_dict(layout, padded=padded),
                out_dir,
                shown,
                tokens,
                inference_step=t,
                title=title,
                **render_kwargs,
            )
            log.debug("step %d: %d files", t, summary.files)
            out.append(summary)
    return out
