"""Overviews of an attention tree: mosaics and an ``index.html`` to scan thousands of figures.

Per inference step (``inference_timestep_<k>/``)::

    overview/[diffusion_<j>_]<camera>.jpg   rows = layers, columns = action tokens: a thumbnail of
                                            every fused_attention_on_<camera>.jpg
    overview/[diffusion_<j>_]text.png       one block per layer: rows = action tokens, columns = text
                                            tokens, coloured like the strips
    index.html                              the mosaics, plus a viewer (sliders for diffusion step,
                                            layer, action token; click a mosaic cell to jump there)

and ``<out>/index.html`` links every inference step found under ``<out>``. Plain static HTML + a
little JavaScript: it works from ``file://`` with no server.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from robokit.viz.figures import CameraFigure, colormap_lut

THUMB = 40  # px height of a mosaic cell
LEFT, TOP, GAP = 40, 18, 1
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _label_canvas(
    rows: int, cols: int, cell_h: int, cell_w: int, row_labels: Sequence[str], col_every: int = 5
) -> np.ndarray:
    h = TOP + rows * (cell_h + GAP)
    w = LEFT + cols * (cell_w + GAP)
    canvas = np.full((h, w, 3), 24, np.uint8)
    for r, lab in enumerate(row_labels):
        y = TOP + r * (cell_h + GAP) + cell_h // 2 + 4
        cv2.putText(canvas, lab, (2, y), _FONT, 0.35, (220, 220, 220), 1, cv2.LINE_AA)
    for c in range(0, cols, col_every):
        cv2.putText(
            canvas, str(c), (LEFT + c * (cell_w + GAP), TOP - 5), _FONT, 0.35, (220, 220, 220), 1, cv2.LINE_AA
        )
    return canvas


class OverviewBuilder:
    """Collects thumbnails while the tree is written (thread-safe: rows are disjoint), then writes."""

    def __init__(
        self,
        root: Path,
        figures: Mapping[str, CameraFigure],
        d_ids: Sequence[int],
        l_ids: Sequence[int],
        qa_n: int,
        with_diffusion: bool,
        text_heat: np.ndarray | None,
        colormap: str = "turbo",
    ) -> None:
        self.root = Path(root)
        self.d_ids, self.l_ids, self.qa_n = list(d_ids), list(l_ids), qa_n
        self.with_diffusion = with_diffusion
        self.text_heat = text_heat
        self.colormap = colormap
        self.files_written = 0
        self._thumbs = {name: fig.thumbnail_renderer(THUMB) for name, fig in figures.items()}
        self._canvases: dict[tuple[int, str], np.ndarray] = {}
        self.cell = {name: t.size for name, t in self._thumbs.items()}
        row_labels = [f"L{l_id}" for l_id in self.l_ids]
        for di in range(len(self.d_ids)):
            for name, (th, tw) in self.cell.items():
                self._canvases[(di, name)] = _label_canvas(len(self.l_ids), qa_n, th, tw, row_labels)

    def _prefix(self, di: int) -> str:
        return f"diffusion_{self.d_ids[di]}_" if self.with_diffusion else ""

    def add_row(self, di: int, li: int, cam_heat: Mapping[str, np.ndarray]) -> None:
        """Thumbnails of every action token for one (diffusion step, layer)."""
        for name, thumb in self._thumbs.items():
            th, tw = thumb.size
            canvas = self._canvases[(di, name)]
            y = TOP + li * (th + GAP)
            for q in range(self.qa_n):
                x = LEFT + q * (tw + GAP)
                canvas[y : y + th, x : x + tw] = thumb.render(cam_heat[name][di, li, q])

    def _text_overview(self, di: int) -> np.ndarray:
        if self.text_heat is None:
            raise ValueError("no text attention to draw: the overview was built without text heat")
        heat = self.text_heat[di]  # (L, Qa, Nt) uint8
        n_l, qa, nt = heat.shape
        sx = max(2, min(8, 400 // max(nt, 1)))
        sy = max(2, min(6, 240 // max(qa, 1)))
        bw, bh = nt * sx, qa * sy
        ncol = max(1, min(n_l, math.ceil(math.sqrt(n_l * bh / max(bw, 1) * 1.6))))
        nrow = math.ceil(n_l / ncol)
        lab = 16
        canvas = np.full((nrow * (bh + lab + 6) + 4, ncol * (bw + 8) + 4, 3), 24, np.uint8)
        lut = colormap_lut(self.colormap).reshape(256, 3)
        for li in range(n_l):
            r, c = divmod(li, ncol)
            x, y = 4 + c * (bw + 8), r * (bh + lab + 6) + lab
            block = np.repeat(np.repeat(lut[heat[li]], sy, axis=0), sx, axis=1)
            canvas[y : y + bh, x : x + bw] = block
            cv2.putText(
                canvas, f"layer {self.l_ids[li]}", (x, y - 4), _FONT, 0.38, (220, 220, 220), 1, cv2.LINE_AA
            )
        return canvas

    def finish(
        self,
        title: str,
        info: Mapping[str, str],
        cam_names: Sequence[str],
        has_text: bool,
        text_tokens: Sequence[str],
    ) -> Path:
        """Write the mosaics and index.html; return the index path."""
        out = self.root / "overview"
        out.mkdir(parents=True, exist_ok=True)
        sections = []
        for di, d in enumerate(self.d_ids):
            items = []
            for name in cam_names:
                rel = f"overview/{self._prefix(di)}{name}.jpg"
                cv2.imwrite(str(self.root / rel), self._canvases[(di, name)], [cv2.IMWRITE_JPEG_QUALITY, 85])
                self.files_written += 1
                th, tw = self.cell[name]
                items.append((name, rel, th, tw))
            if has_text and self.text_heat is not None:
                rel = f"overview/{self._prefix(di)}text.png"
                cv2.imwrite(str(self.root / rel), self._text_overview(di))
                self.files_written += 1
                items.append(("text", rel, 0, 0))
            sections.append((di, d, items))
        index = self.root / "index.html"
        index.write_text(self._html(title, info, cam_names, has_text, sections, text_tokens))
        self.files_written += 1
        write_root_index(self.root.parent)
        return index

    def _html(
        self,
        title: str,
        info: Mapping[str, str],
        cam_names: Sequence[str],
        has_text: bool,
        sections: list,
        text_tokens: Sequence[str],
    ) -> str:
        e = html.escape
        rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in info.items())
        figs = list(cam_names) + (["text"] if has_text else [])
        cfg = {
            "diff": self.d_ids if self.with_diffusion else [],
            "layers": self.l_ids,
            "tokens": self.qa_n,
            "figs": figs,
            "left": LEFT,
            "top": TOP,
            "gap": GAP,
        }
        blocks = []
        for di, d, items in sections:
            head = (
                f"<h2>diffusion step {d}</h2>"
                if self.with_diffusion
                else "<h2>all layers × action tokens</h2>"
            )
            imgs = []
            for name, rel, th, tw in items:
                if name == "text":
                    imgs.append(
                        f"<figure><figcaption>text (one block per layer: rows = action tokens, "
                        f'columns = text tokens)</figcaption><img loading="lazy" src="{e(rel)}"></figure>'
                    )
                else:
                    imgs.append(
                        f"<figure><figcaption>{e(name)} (rows = layers, columns = action tokens; "
                        f'click a cell)</figcaption><img class="mosaic" loading="lazy" src="{e(rel)}" '
                        f'data-d="{di}" data-th="{th}" data-tw="{tw}"></figure>'
                    )
            blocks.append(head + "".join(imgs))
        tokens = e(" ".join(text_tokens)) if text_tokens else ""
        return _PAGE.format(
            title=e(title), rows=rows, cfg=json.dumps(cfg), blocks="".join(blocks), tokens=tokens
        )


def write_root_index(out_dir: Path) -> Path:
    """``<out>/index.html`` linking every ``inference_timestep_<k>/index.html`` below ``out_dir``."""
    out_dir = Path(out_dir)
    steps = []
    for p in out_dir.iterdir():
        m = re.fullmatch(r"inference_timestep_(\d+)", p.name)
        if m and (p / "index.html").exists():
            steps.append((int(m.group(1)), p.name))
    links = "".join(f'<li><a href="{n}/index.html">inference step {k}</a></li>' for k, n in sorted(steps))
    index = out_dir / "index.html"
    index.write_text(
        "<!doctype html><meta charset='utf-8'><title>attention</title>"
        "<style>body{font-family:sans-serif;background:#181818;color:#ddd}a{color:#8cf}</style>"
        f"<h1>attention maps</h1><ul>{links}</ul>"
    )
    return index


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:sans-serif;background:#181818;color:#ddd;margin:1em}}
table{{border-collapse:collapse}} th,td{{text-align:left;padding:2px 8px}}
figure{{margin:0.5em 0}} img{{max-width:100%}} .mosaic{{cursor:crosshair}}
#viewer img{{margin-right:4px;vertical-align:top}} label{{margin-right:1em}}
</style></head><body>
<h1>{title}</h1>
<table>{rows}</table>
<p>tokens: <code>{tokens}</code></p>
<h2>viewer</h2>
<div id="controls"></div>
<div id="viewer"></div>
{blocks}
<script>
const C = {cfg};
const state = {{d: 0, l: 0, q: 0}};
function path(fig) {{
  const dpart = C.diff.length ? `diffusion_timestep_${{C.diff[state.d]}}/` : "";
  return `${{dpart}}action_token_${{state.q}}/layer_${{C.layers[state.l]}}/fused_attention_on_${{fig}}.jpg`;
}}
function show() {{
  document.getElementById("viewer").innerHTML = C.figs.map(f => `<img src="${{path(f)}}" title="${{f}}">`).join("");
  for (const k of ["d", "l", "q"]) {{
    const s = document.getElementById("s_" + k); if (s) {{ s.value = state[k]; }}
    const o = document.getElementById("o_" + k); if (o) {{ o.textContent = k == "l" ? C.layers[state.l] : (k == "d" ? C.diff[state.d] : state.q); }}
  }}
}}
function slider(k, name, n) {{
  return `<label>${{name}} <input id="s_${{k}}" type="range" min="0" max="${{n - 1}}" value="0"
    oninput="state.${{k}}=+this.value;show()"> <span id="o_${{k}}"></span></label>`;
}}
document.getElementById("controls").innerHTML =
  (C.diff.length ? slider("d", "diffusion step", C.diff.length) : "") +
  slider("l", "layer", C.layers.length) + slider("q", "action token", C.tokens);
for (const img of document.querySelectorAll("img.mosaic")) {{
  img.addEventListener("click", ev => {{
    const s = img.naturalWidth / img.clientWidth;
    const x = ev.offsetX * s - C.left, y = ev.offsetY * s - C.top;
    const q = Math.floor(x / (+img.dataset.tw + C.gap)), l = Math.floor(y / (+img.dataset.th + C.gap));
    if (q >= 0 && q < C.tokens && l >= 0 && l < C.layers.length) {{
      state.d = +img.dataset.d; state.l = l; state.q = q; show(); window.scrollTo(0, 0);
    }}
  }});
}}
show();
</script>
</body></html>
"""
