"""Inline SVG plots for the HTML report: no plotting library, no scripts, nothing fetched.

Each function returns an `<svg>` string sized by its content; texts are escaped.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from html import escape

import numpy as np

FONT = "font-family:system-ui,sans-serif;font-size:11px"
COLORS = {"gt": "#1a9850", "ref": "#2166ac", "art": "#e66101", "bar": "#4575b4", "bad": "#d73027", "grid": "#ddd"}


def _svg(width: float, height: float, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(label)}" style="{FONT}">'
            + "".join(body) + "</svg>")


def _nice_range(lo: float, hi: float) -> tuple[float, float]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-9:
        hi = lo + 1.0
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad


def drop_chart(rows: Sequence[tuple[str, float, tuple[float, float] | None, float | None]], unit: str, title: str) -> str:
    """Horizontal bars: drop per metric with its interval whiskers and the gate limit (red tick).

    rows: (label, drop, (ci_lo, ci_hi) or None, gate max_drop or None). Positive drop = worse.
    """
    if not rows:
        return ""
    label_w, plot_w, row_h, top = 190, 360, 22, 28
    vals = [v for _, d, ci, lim in rows for v in (d, *(ci or ()), *([lim] if lim is not None else [])) if math.isfinite(v)]
    lo, hi = _nice_range(min(vals, default=0.0), max(vals, default=1.0))
    x = (lambda v: label_w + (v - lo) / (hi - lo) * plot_w)
    height = top + row_h * len(rows) + 30
    body = [f'<text x="{label_w}" y="16" font-weight="bold">{escape(title)}</text>',
            f'<line x1="{x(0):.1f}" y1="{top - 4}" x2="{x(0):.1f}" y2="{top + row_h * len(rows)}" stroke="#888"/>']
    for i, (name, drop, ci, lim) in enumerate(rows):
        y = top + i * row_h
        body.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(name)}</text>')
        if math.isfinite(drop):
            x0, x1 = sorted((x(0), x(drop)))
            color = COLORS["bad"] if lim is not None and drop > lim else COLORS["bar"]
            body.append(f'<rect x="{x0:.1f}" y="{y + 4}" width="{max(x1 - x0, 1):.1f}" height="{row_h - 8}" fill="{color}" opacity="0.8">'
                        f'<title>{escape(name)}: drop {drop:+.4g} {escape(unit)}</title></rect>')
        if ci is not None and all(math.isfinite(c) for c in ci):
            cy = y + row_h / 2
            body.append(f'<line x1="{x(ci[0]):.1f}" y1="{cy}" x2="{x(ci[1]):.1f}" y2="{cy}" stroke="#222" stroke-width="1.5"/>'
                        f'<line x1="{x(ci[0]):.1f}" y1="{cy - 5}" x2="{x(ci[0]):.1f}" y2="{cy + 5}" stroke="#222"/>'
                        f'<line x1="{x(ci[1]):.1f}" y1="{cy - 5}" x2="{x(ci[1]):.1f}" y2="{cy + 5}" stroke="#222"/>')
        if lim is not None and math.isfinite(lim):
            body.append(f'<line x1="{x(lim):.1f}" y1="{y + 1}" x2="{x(lim):.1f}" y2="{y + row_h - 1}" stroke="{COLORS["bad"]}" '
                        f'stroke-width="2" stroke-dasharray="3,2"><title>gate: max drop {lim:g}</title></line>')
    ax_y = top + row_h * len(rows) + 14
    for t in np.linspace(lo, hi, 5):
        body.append(f'<text x="{x(t):.1f}" y="{ax_y}" text-anchor="middle" fill="#555">{t:+.3g}</text>')
    body.append(f'<text x="{label_w + plot_w / 2}" y="{ax_y + 14}" text-anchor="middle" fill="#555">'
                f'drop in {escape(unit)} (right = worse) · whiskers: interval · red: gate</text>')
    return _svg(label_w + plot_w + 40, height + 14, body, title)


def histogram(edges: Sequence[float], counts: Sequence[int], title: str, zero_count: int = 0) -> str:
    """Bars of a log10-binned absolute-error histogram (edges are powers of ten)."""
    counts = list(counts)
    if not counts:
        return ""
    w, h, left, top, bottom = 380, 150, 40, 22, 34
    bw = (w - left - 10) / len(counts)
    peak = max(max(counts), 1)
    body = [f'<text x="{left}" y="14" font-weight="bold">{escape(title)}</text>']
    for i, c in enumerate(counts):
        bh = (h - top - bottom) * c / peak
        body.append(f'<rect x="{left + i * bw:.1f}" y="{h - bottom - bh:.1f}" width="{max(bw - 1, 1):.1f}" height="{bh:.1f}" '
                    f'fill="{COLORS["bar"]}"><title>|error| in [{edges[i]:.1e}, {edges[i + 1]:.1e}): {c}</title></rect>')
    step = max(1, len(counts) // 6)
    for i in range(0, len(edges), step):
        body.append(f'<text x="{left + i * bw:.1f}" y="{h - bottom + 13}" text-anchor="middle" fill="#555">'
                    f'1e{math.log10(edges[i]):.0f}</text>')
    note = f"; {zero_count} exact" if zero_count else ""
    body.append(f'<text x="{left}" y="{h - 6}" fill="#555">|artifact - reference| per element (log scale){note}</text>')
    body.append(f'<text x="4" y="{top + 8}" fill="#555">{peak}</text>')
    return _svg(w, h, body, title)


def sensitivity_chart(rows: Sequence[tuple[str, float]], title: str, limit: int = 20) -> str:
    """Horizontal bars of per-layer SQNR (dB, lower = more harmful), most harmful first."""
    rows = sorted((r for r in rows if math.isfinite(r[1])), key=lambda r: r[1])[:limit]
    if not rows:
        return ""
    label_w, plot_w, row_h, top = 260, 300, 18, 24
    hi = max(v for _, v in rows)
    hi = hi if hi > 0 else 1.0
    body = [f'<text x="8" y="14" font-weight="bold">{escape(title)}</text>']
    for i, (name, v) in enumerate(rows):
        y = top + i * row_h
        short = name if len(name) <= 40 else "…" + name[-39:]
        body.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end">{escape(short)}</text>'
                    f'<rect x="{label_w}" y="{y + 3}" width="{max(v, 0) / hi * plot_w:.1f}" height="{row_h - 6}" fill="{COLORS["bar"]}">'
                    f'<title>{escape(name)}: {v:.1f} dB</title></rect>'
                    f'<text x="{label_w + max(v, 0) / hi * plot_w + 4:.1f}" y="{y + 13}">{v:.1f} dB</text>')
    return _svg(label_w + plot_w + 90, top + row_h * len(rows) + 10, body, title)


def png_data_uri(image: np.ndarray) -> str:
    """An RGB uint8 image as a base64 PNG data URI."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def boxes_on_image(image: np.ndarray, boxes: Sequence[tuple[str, Sequence[float] | None, str]], size: int = 192, title: str = "") -> str:
    """The image with boxes (x, y, w, h in [0, 1]) drawn over it: (label, box, colour key)."""
    body = [f'<image href="{png_data_uri(image)}" x="0" y="0" width="{size}" height="{size}" style="image-rendering:pixelated"/>']
    for label, box, key in boxes:
        if box is None:
            continue
        x, y, w, h = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            continue
        # clip to the image: a damaged model may predict negative sizes or boxes off the picture
        x0, y0 = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
        x1, y1 = min(max(x + max(w, 0.0), 0.0), 1.0), min(max(y + max(h, 0.0), 0.0), 1.0)
        x, y, w, h = x0 * size, y0 * size, (x1 - x0) * size, (y1 - y0) * size
        dash = ' stroke-dasharray="5,3"' if key == "art" else ""
        body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="none" stroke="{COLORS[key]}" '
                    f'stroke-width="2"{dash}><title>{escape(label)}</title></rect>')
    return _svg(size, size, body, title or "boxes")


def attention_map(attn: np.ndarray, size: int = 96, title: str = "", image: np.ndarray | None = None) -> str:
    """A patch attention vector (square number of patches) as a heat map, over the image if given.

    Scaled min..max so a nearly flat map still shows where it peaks; over an image the heat is
    drawn as translucent red (opacity = attention), alone as a dark-to-bright colour ramp.
    """
    a = np.asarray(attn, dtype=np.float64).ravel()
    g = int(round(math.sqrt(a.size)))
    if g * g != a.size or a.size == 0:
        return ""
    lo, hi = float(a.min()), float(a.max())
    span = hi - lo if hi > lo else 1.0
    cell = size / g
    body = []
    if image is not None:
        body.append(f'<image href="{png_data_uri(image)}" x="0" y="0" width="{size}" height="{size}" style="image-rendering:pixelated"/>')
    for i, v in enumerate(a):
        t = max(0.0, min(1.0, (v - lo) / span))
        x, y = (i % g) * cell, (i // g) * cell
        if image is not None:
            fill = f'fill="#ff1f1f" fill-opacity="{0.75 * t:.3f}"'
        else:
            fill = f'fill="rgb({int(255 * t)},{int(255 * t * 0.6 + 20)},{int(90 * (1 - t) + 20)})"'
        body.append(f'<rect x="{x:.2f}" y="{y:.2f}" width="{cell + 0.3:.2f}" height="{cell + 0.3:.2f}" {fill}>'
                    f'<title>patch {i}: {v:.3f}</title></rect>')
    return _svg(size, size, body, title or "attention")
