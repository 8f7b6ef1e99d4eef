"""Single-figure renderers: a heat map blended onto a camera image, and a text strip.

Both are built once per (camera | text) with everything that does not change between figures
precomputed (the pre-scaled background image, the alpha-scaled colour lookup table, the text strip's
token boxes and glyph mask), so rendering one figure is a handful of OpenCV calls that release the
GIL: resize, colour lookup, saturating add. Images are RGB in the API and BGR inside (OpenCV).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from robokit.errors import UserError

COLORMAPS = ("turbo", "jet", "inferno", "magma", "viridis", "plasma", "hot", "parula", "cividis")
INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}
CAPTION_HEIGHT = 16  # px band under each camera figure with the figure's max / sum of attention
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def colormap_lut(name: str) -> np.ndarray:
    """OpenCV's colormap ``name`` as a (256, 1, 3) uint8 BGR lookup table (0 = cold, 255 = hot)."""
    if name not in COLORMAPS:
        raise UserError(f"unknown colormap '{name}'; choose one of: {', '.join(COLORMAPS)}")
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    return cv2.applyColorMap(ramp, getattr(cv2, f"COLORMAP_{name.upper()}")).reshape(256, 1, 3)


def to_rgb_uint8(image: np.ndarray, what: str) -> np.ndarray:
    """Accept (H, W, 3) / (3, H, W) / (H, W), uint8 or float in [0, 1]; return uint8 (H, W, 3)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3) or img.shape[0] < 1 or img.shape[1] < 1:
        raise UserError(f"{what} must be an (H, W, 3) RGB image, got shape {img.shape}")
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.dtype != np.uint8:
        if not np.issubdtype(img.dtype, np.floating):
            raise UserError(f"{what} must be uint8 or float in [0, 1], got {img.dtype}")
        lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
        if lo < 0.0 or hi > 1.0:
            raise UserError(
                f"{what} is float with values in [{lo:.3g}, {hi:.3g}]; give uint8 or floats in [0, 1]"
            )
        img = np.round(img * 255.0).astype(np.uint8)
    return np.ascontiguousarray(img)


def caption_band(width: int, text: str) -> np.ndarray:
    """A black (CAPTION_HEIGHT, width, 3) band with ``text`` in light grey."""
    band = np.zeros((CAPTION_HEIGHT, width, 3), np.uint8)
    cv2.putText(band, text, (3, CAPTION_HEIGHT - 4), _FONT, 0.38, (230, 230, 230), 1, cv2.LINE_AA)
    return band


class CameraFigure:
    """Renders heat grids of one camera onto its image.

    ``out = (1 - alpha) · image + alpha · colormap(heat)``, the heat grid upsampled to the image size.
    Without an image the heat map is drawn alone (alpha = 1).
    """

    def __init__(
        self,
        grid: tuple[int, int],
        image: np.ndarray | None = None,
        size: tuple[int, int] | None = None,
        colormap: str = "turbo",
        alpha: float = 0.5,
        interpolation: str = "linear",
        caption: bool = True,
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise UserError(f"alpha must be in (0, 1], got {alpha}")
        if interpolation not in INTERPOLATIONS:
            raise UserError(
                f"unknown interpolation '{interpolation}'; choose one of: {', '.join(INTERPOLATIONS)}"
            )
        h, w = grid
        bgr: np.ndarray
        if image is None:
            alpha = 1.0
            if size is None:  # heat alone: make each grid cell ~ 224 / max(h, w) px
                cell = max(1, 224 // max(h, w))
                size = (h * cell, w * cell)
            bgr = np.zeros((size[0], size[1], 3), np.uint8)
        else:
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            if size is not None and tuple(size) != bgr.shape[:2]:
                bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        self.size = (int(bgr.shape[0]), int(bgr.shape[1]))
        self.grid = (int(h), int(w))
        self.caption = caption
        self._interp = INTERPOLATIONS[interpolation]
        # Pre-scaled halves of the blend: floor((1-a)·img) + floor(a·lut) never exceeds 255.
        self._base = np.floor(bgr.astype(np.float32) * (1.0 - alpha)).astype(np.uint8)
        self._lut = np.floor(colormap_lut(colormap).astype(np.float32) * alpha).astype(np.uint8)

    def render(self, heat: np.ndarray, caption: str | None = None) -> np.ndarray:
        """BGR figure for one uint8 heat grid (h, w), 255 = hottest."""
        up = cv2.resize(heat, (self.size[1], self.size[0]), interpolation=self._interp)
        out = cv2.add(self._base, cv2.applyColorMap(up, self._lut))
        if self.caption:
            out = np.concatenate([out, caption_band(self.size[1], caption or "")], axis=0)
        return out

    def thumbnail_renderer(self, height: int) -> CameraFigure:
        """A renderer of the same look at thumbnail size (no caption), for overview mosaics."""
        thumb = CameraFigure.__new__(CameraFigure)
        th = int(height)
        tw = max(1, round(self.size[1] * th / self.size[0]))
        thumb.size, thumb.grid, thumb.caption, thumb._interp = (th, tw), self.grid, False, self._interp
        thumb._base = cv2.resize(self._base, (tw, th), interpolation=cv2.INTER_AREA)
        thumb._lut = self._lut
        return thumb


def display_token(token: str, max_chars: int = 18) -> str:
    """An ASCII rendering of a (sentencepiece / BPE) token for OpenCV's Hershey fonts."""
    t = token.replace("\u2581", " ").replace("\u0120", " ")  # word-start markers
    t = t.replace("\n", "\\n").replace("\t", "\\t")
    t = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in t).strip() or "_"
    return t if len(t) <= max_chars else t[: max_chars - 2] + ".."


class TextStrip:
    """Renders the text tokens as boxes coloured by attention, wrapped into lines of ``width`` px.

    The layout (box per token, glyph mask) is computed once; one figure is then a single table
    lookup: every pixel holds an index into a per-figure palette [box colours, background, glyph
    colours], so the glyph colour can flip between black and white with the box colour.
    """

    HEADER = 18
    LINE = 22
    SCALE = 0.45

    def __init__(self, tokens: Sequence[str], width: int = 672, colormap: str = "turbo") -> None:
        self.tokens = [display_token(t) for t in tokens]
        self.width = int(max(width, 120))
        self._lut = colormap_lut(colormap).reshape(256, 3)
        n = len(self.tokens)
        boxes: list[tuple[int, int, int, int]] = []  # x0, y0, x1, y1
        x, y = 2, self.HEADER + 2
        for tok in self.tokens:
            (tw, _), _ = cv2.getTextSize(tok, _FONT, self.SCALE, 1)
            bw = min(tw + 8, self.width - 4)
            if x + bw > self.width - 2 and x > 2:
                x, y = 2, y + self.LINE
            boxes.append((x, y, x + bw, y + self.LINE - 2))
            x += bw + 2
        height = (boxes[-1][3] + 3) if boxes else self.HEADER + self.LINE
        self.height = int(height)
        index = np.full((self.height, self.width), n, np.int32)  # n = background
        glyphs = np.zeros((self.height, self.width), np.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            index[y0:y1, x0:x1] = k
            cv2.putText(glyphs, self.tokens[k], (x0 + 4, y1 - 6), _FONT, self.SCALE, 255, 1, cv2.LINE_AA)
        glyph_px = glyphs > 110
        index[glyph_px] += n + 1  # glyph of token k -> n + 1 + k; on background stays unused
        index[glyph_px & (index > 2 * n)] = n
        self._index = index
        # Up to 127 tokens the palette index fits a byte: one cv2.LUT call renders the strip
        # (~10x faster than numpy fancy indexing); longer prompts fall back to np.take.
        self._index3 = (
            np.ascontiguousarray(np.repeat(index.astype(np.uint8)[:, :, None], 3, axis=2))
            if 2 * n + 1 < 256
            else None
        )
        self.boxes = boxes

    def render(self, heat: np.ndarray, header: str = "") -> np.ndarray:
        """BGR strip for uint8 heat (n_tokens,), 255 = hottest."""
        n = len(self.tokens)
        colours = self._lut[heat[:n]]
        lum = colours.astype(np.float32) @ np.array([0.114, 0.587, 0.299], np.float32)  # BGR
        glyph = np.where(lum[:, None] > 140, 0, 255).astype(np.uint8).repeat(3, axis=1)
        palette = np.concatenate([colours, np.full((1, 3), 32, np.uint8), glyph], axis=0)
        if self._index3 is not None:
            lut = np.zeros((256, 1, 3), np.uint8)
            lut[: len(palette), 0] = palette
            out = cv2.LUT(self._index3, lut)
        else:
            out = np.take(palette, self._index, axis=0)
        if header:
            cv2.putText(out, header, (3, self.HEADER - 5), _FONT, 0.4, (230, 230, 230), 1, cv2.LINE_AA)
        return out
