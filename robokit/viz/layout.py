"""Token layouts: which positions of an attention sequence are which camera's patches, text, state.

A layout tells the attention renderer how to read the key axis (``seq``) of an attention array:

* an **image segment** is a grid of ``h × w`` feature tokens in raster order (left to right, then top
  to bottom) belonging to one camera; several cameras *folded along width* (ACT concatenates the
  cameras' feature maps side by side before flattening) form one grid of ``h × (w·n)`` that is split
  into ``n`` equal column blocks, one per camera;
* the **text** segment holds language / prompt tokens;
* anything else (state, action, latent tokens) is carried along but not drawn.

Two spellings are accepted (see docs/viz.md):

* the flat form used by the policies' ``extras["attention"]["layout"]``:
  ``{"top": [0, 300, 15, 20], "text": [300, 348], "state": [348, 349]}``; a name joined with ``|``
  (``"top|wrist": [2, 602, 15, 40]``) is a width-folded group;
* the full form, for files: ``{"segments": [{"name": ..., "start": ..., "stop": ..., "grid": [h, w],
  "cameras": [...], "padded": bool, "kind": "image"|"text"|"other"}, ...], "sequence_length": 867,
  "action_queries": [1, 51], "padded": ["right_wrist_0_rgb"]}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robokit.errors import UserError

_RESERVED_KEYS = {"segments", "sequence_length", "action_queries", "padded", "query_offset"}


@dataclass(frozen=True)
class Segment:
    """A contiguous range ``[start, stop)`` of the key sequence."""

    name: str
    start: int
    stop: int
    kind: str = "other"  # "image" | "text" | "other"
    grid: tuple[int, int] | None = None  # (h, w) of the whole grid for image segments
    cameras: tuple[str, ...] = ()  # image segments: camera names, >1 = folded along width
    padded: bool = False

    @property
    def length(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class CameraView:
    """One camera's tokens: ``index[r, c]`` is the sequence position of grid cell (r, c)."""

    name: str
    index: np.ndarray = field(compare=False)  # int64 (h, w)
    padded: bool = False

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.index.shape[0]), int(self.index.shape[1])


@dataclass(frozen=True)
class TokenLayout:
    """A validated layout of the attention key axis (and, optionally, which queries are actions)."""

    segments: tuple[Segment, ...]
    sequence_length: int | None = None
    action_queries: tuple[int, int] | None = None  # [start, stop) on the query axis

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any], padded: Iterable[str] = ()) -> TokenLayout:
        """Parse the flat (policy) or full (file) form; ``padded`` marks cameras as absent."""
        if not isinstance(values, Mapping):
            raise UserError(f"a token layout must be a JSON object / dict, got {type(values).__name__}")
        padded_names = set(padded) | set(_as_str_list(values.get("padded", []), "padded"))
        segments: list[Segment] = []
        if "segments" in values:
            raw = values["segments"]
            if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
                raise UserError("layout 'segments' must be a list of {name, start, stop, ...} objects")
            for item in raw:
                segments.append(_segment_from_object(item, padded_names))
        for name, spec in values.items():
            if name in _RESERVED_KEYS:
                continue
            segments.append(_segment_from_flat(str(name), spec, padded_names))
        if not segments:
            raise UserError("the token layout has no segments; give at least one camera or text range")
        seq_len = values.get("sequence_length")
        aq = values.get("action_queries")
        layout = cls(
            segments=tuple(sorted(segments, key=lambda s: s.start)),
            sequence_length=None if seq_len is None else _as_int(seq_len, "sequence_length"),
            action_queries=None if aq is None else _as_range(aq, "action_queries"),
        )
        layout._check_self()
        known = {c for s in layout.segments for c in s.cameras}
        unknown = sorted(padded_names - known)
        if unknown:
            raise UserError(
                f"padded camera(s) {', '.join(unknown)} are not in the layout; "
                f"its cameras are: {', '.join(sorted(known)) or 'none'}"
            )
        return layout

    @classmethod
    def load(cls, path: str | Path, padded: Iterable[str] = ()) -> TokenLayout:
        """Read a layout JSON file (either form)."""
        p = Path(path)
        try:
            values = json.loads(p.read_text())
        except FileNotFoundError:
            raise UserError(f"layout file {p} does not exist") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"layout file {p} is not valid JSON: {exc}") from None
        try:
            return cls.from_dict(values, padded=padded)
        except UserError as exc:
            raise UserError(f"{p}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The full form (round-trips through :meth:`from_dict`)."""
        segs = []
        for s in self.segments:
            item: dict[str, Any] = {"name": s.name, "start": s.start, "stop": s.stop, "kind": s.kind}
            if s.grid is not None:
                item["grid"] = list(s.grid)
                item["cameras"] = list(s.cameras)
            if s.padded:
                item["padded"] = True
            segs.append(item)
        out: dict[str, Any] = {"segments": segs}
        if self.sequence_length is not None:
            out["sequence_length"] = self.sequence_length
        if self.action_queries is not None:
            out["action_queries"] = list(self.action_queries)
        return out

    # -- views ----------------------------------------------------------------------------------
    def cameras(self) -> list[CameraView]:
        """Every camera in layout order, folded groups split along width (padded ones included)."""
        views: list[CameraView] = []
        for s in self.segments:
            if s.kind != "image" or s.grid is None:
                continue
            h, w_total = s.grid
            grid = np.arange(s.start, s.stop, dtype=np.int64).reshape(h, w_total)
            w = w_total // len(s.cameras)
            for k, cam in enumerate(s.cameras):
                views.append(
                    CameraView(cam, np.ascontiguousarray(grid[:, k * w : (k + 1) * w]), padded=s.padded)
                )
        return views

    def text(self) -> Segment | None:
        """The text segment, or None when the layout has none."""
        texts = [s for s in self.segments if s.kind == "text"]
        return texts[0] if texts else None

    def segment(self, name: str) -> Segment | None:
        for s in self.segments:
            if s.name == name:
                return s
        return None

    # -- checks against an attention array -----------------------------------------------------
    def check_sequence(self, seq_len: int, shape: tuple[int, ...]) -> None:
        """Raise a clear UserError when this layout cannot describe keys of length ``seq_len``."""
        if self.sequence_length is not None and self.sequence_length != seq_len:
            raise UserError(
                f"attention array shape {shape} does not match the layout: its last axis has {seq_len} "
                f"tokens but the layout describes a sequence of {self.sequence_length}"
            )
        for s in self.segments:
            if s.stop > seq_len:
                raise UserError(
                    f"layout segment '{s.name}' [{s.start}, {s.stop}) goes past the attention sequence "
                    f"of {seq_len} tokens (last axis of shape {shape}); fix the layout or the array"
                )

    def action_query_range(self, num_queries: int, seq_len: int, shape: tuple[int, ...]) -> tuple[int, int]:
        """Which entries of the query axis are action tokens.

        Explicit ``action_queries`` wins. Otherwise, when the layout has an ``action`` segment inside
        the key sequence and there are fewer queries than keys, the queries are taken to be the LAST
        ``num_queries`` positions of the sequence (pi0: the expert's suffix ``[state, actions]``).
        Otherwise every query is an action query (robokit's policies).
        """
        if self.action_queries is not None:
            a, b = self.action_queries
        else:
            action = self.segment("action")
            if action is not None and num_queries < seq_len:
                offset = seq_len - num_queries
                a, b = action.start - offset, action.stop - offset
                if a < 0:
                    raise UserError(
                        f"attention array shape {shape} does not match the layout: the 'action' segment "
                        f"[{action.start}, {action.stop}) is not inside the last {num_queries} positions "
                        f"(the queries); give 'action_queries' explicitly"
                    )
            else:
                a, b = 0, num_queries
        if not (0 <= a < b <= num_queries):
            raise UserError(
                f"attention array shape {shape} does not match the layout: action queries "
                f"[{a}, {b}) are outside the query axis of length {num_queries}"
            )
        return int(a), int(b)

    # -- internal -------------------------------------------------------------------------------
    def _check_self(self) -> None:
        seen: dict[str, Segment] = {}
        cams: set[str] = set()
        prev: Segment | None = None
        for s in self.segments:
            if s.name in seen:
                raise UserError(f"layout segment '{s.name}' appears twice")
            seen[s.name] = s
            if prev is not None and s.start < prev.stop:
                raise UserError(
                    f"layout segments '{prev.name}' [{prev.start}, {prev.stop}) and "
                    f"'{s.name}' [{s.start}, {s.stop}) overlap"
                )
            prev = s
            for c in s.cameras:
                if c in cams:
                    raise UserError(f"camera '{c}' appears in two layout segments")
                cams.add(c)
        if len([s for s in self.segments if s.kind == "text"]) > 1:
            raise UserError("the layout has more than one text segment")
        if self.sequence_length is not None:
            for s in self.segments:
                if s.stop > self.sequence_length:
                    raise UserError(
                        f"layout segment '{s.name}' [{s.start}, {s.stop}) goes past the "
                        f"layout's sequence_length {self.sequence_length}"
                    )


def pi0_layout(
    camera_names: Sequence[str] = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"),
    grid: tuple[int, int] = (16, 16),
    text_tokens: int = 48,
    state_tokens: int = 1,
    action_tokens: int = 50,
    padded: Iterable[str] = (),
) -> TokenLayout:
    """openpi's pi0 layout ``[image tokens, text tokens, state token, action tokens]`` (867 long).

    The expert's queries are ``[state, actions]``, i.e. the last ``state_tokens + action_tokens``
    positions of the sequence; ``padded`` names cameras whose image slot was filled with padding.
    """
    h, w = grid
    segs: list[dict[str, Any]] = []
    pos = 0
    for cam in camera_names:
        segs.append({"name": cam, "start": pos, "stop": pos + h * w, "grid": [h, w]})
        pos += h * w
    for name, n, kind in (
        ("text", text_tokens, "text"),
        ("state", state_tokens, "other"),
        ("action", action_tokens, "other"),
    ):
        segs.append({"name": name, "start": pos, "stop": pos + n, "kind": kind})
        pos += n
    return TokenLayout.from_dict(
        {
            "segments": segs,
            "sequence_length": pos,
            "action_queries": [state_tokens, state_tokens + action_tokens],
        },
        padded=padded,
    )


# -- parsing helpers ---------------------------------------------------------------------------
def _as_int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise UserError(f"layout {what} must be an integer, got {v!r}")
    return int(v)


def _as_range(v: Any, what: str) -> tuple[int, int]:
    if not isinstance(v, Sequence) or isinstance(v, (str, bytes)) or len(v) != 2:
        raise UserError(f"layout {what} must be [start, stop], got {v!r}")
    a, b = _as_int(v[0], what), _as_int(v[1], what)
    if not 0 <= a < b:
        raise UserError(f"layout {what} [{a}, {b}) is empty or negative")
    return a, b


def _as_str_list(v: Any, what: str) -> list[str]:
    if isinstance(v, str) or not isinstance(v, Sequence) or not all(isinstance(x, str) for x in v):
        raise UserError(f"layout {what} must be a list of names, got {v!r}")
    return list(v)


def _make_segment(
    name: str,
    start: int,
    stop: int,
    grid: tuple[int, int] | None,
    kind: str | None,
    cameras: Sequence[str] | None,
    padded_names: set[str],
    padded: bool,
) -> Segment:
    if not 0 <= start < stop:
        raise UserError(f"layout segment '{name}' [{start}, {stop}) is empty or negative")
    if kind is None:
        kind = "image" if grid is not None else ("text" if name == "text" else "other")
    if kind not in ("image", "text", "other"):
        raise UserError(f"layout segment '{name}' has unknown kind '{kind}' (image, text or other)")
    if kind == "image":
        if grid is None:
            raise UserError(f"layout segment '{name}' is an image but has no grid [h, w]")
        h, w = grid
        if h <= 0 or w <= 0 or h * w != stop - start:
            raise UserError(
                f"layout segment '{name}' [{start}, {stop}) has {stop - start} tokens but its "
                f"grid {h}x{w} has {h * w}"
            )
        cams = tuple(cameras) if cameras else tuple(name.split("|"))
        if len(cams) > 1 and w % len(cams):
            raise UserError(
                f"layout segment '{name}': grid width {w} cannot be split evenly between "
                f"{len(cams)} cameras folded along width"
            )
        # A folded group is padded as a whole only if every camera is; single cameras by name.
        is_padded = padded or all(c in padded_names for c in cams)
        if len(cams) > 1 and any(c in padded_names for c in cams) and not is_padded:
            raise UserError(
                f"cameras {', '.join(cams)} share one folded grid: they can only be padded together"
            )
        return Segment(name, start, stop, "image", (h, w), cams, is_padded)
    return Segment(name, start, stop, kind)


def _segment_from_flat(name: str, spec: Any, padded_names: set[str]) -> Segment:
    if not isinstance(spec, Sequence) or isinstance(spec, (str, bytes)) or len(spec) not in (2, 4):
        raise UserError(f"layout segment '{name}' must be [start, stop] or [start, stop, h, w], got {spec!r}")
    vals = [_as_int(v, f"segment '{name}'") for v in spec]
    grid = (vals[2], vals[3]) if len(vals) == 4 else None
    return _make_segment(name, vals[0], vals[1], grid, None, None, padded_names, False)


def _segment_from_object(item: Any, padded_names: set[str]) -> Segment:
    if not isinstance(item, Mapping) or not {"name", "start", "stop"} <= set(item):
        raise UserError(f"layout segments need 'name', 'start' and 'stop'; got {item!r}")
    name = str(item["name"])
    allowed = {"name", "start", "stop", "grid", "kind", "cameras", "padded"}
    extra = sorted(set(item) - allowed)
    if extra:
        raise UserError(
            f"layout segment '{name}' has unknown key(s) {', '.join(extra)}; "
            f"known: {', '.join(sorted(allowed))}"
        )
    grid = None
    if item.get("grid") is not None:
        g = item["grid"]
        if not isinstance(g, Sequence) or len(g) != 2:
            raise UserError(f"layout segment '{name}' grid must be [h, w], got {g!r}")
        grid = (_as_int(g[0], f"segment '{name}' grid"), _as_int(g[1], f"segment '{name}' grid"))
    cameras = item.get("cameras")
    if cameras is not None:
        cameras = _as_str_list(cameras, f"segment '{name}' cameras")
    return _make_segment(
        name,
        _as_int(item["start"], f"segment '{name}' start"),
        _as_int(item["stop"], f"segment '{name}' stop"),
        grid,
        item.get("kind"),
        cameras,
        padded_names,
        bool(item.get("padded", False)),
    )
