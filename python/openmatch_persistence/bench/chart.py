"""The benchmark's bar chart as SVG.

SVG rather than a plotting library: a dozen labelled bars need only
rectangles and text, the viewer draws the text in real fonts (a browser,
GitHub's Markdown, an image viewer), the file diffs as text, and the
package needs no matplotlib (a 40 MB dependency with NumPy) to draw it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    #: The legend entry the bar belongs to (its color).
    series: str


@dataclass(frozen=True)
class Series:
    name: str
    color: str


def _tick(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def bar_chart(
    path: Path,
    title: str,
    bars: Sequence[Bar],
    series: Sequence[Series],
    *,
    subtitle: Sequence[str] = (),
    warning: str | None = None,
    unit: str = "ops/s",
) -> None:
    """Horizontal bars on a log scale (the cases span four decades), with
    a legend of ``series``, a title, subtitle lines (machine, parameters)
    and, for a run whose numbers are not to be compared, a ``warning``
    drawn in red under the title."""
    colors = {s.name: s.color for s in series}
    label_w = 12 + 7 * max((len(b.label) for b in bars), default=10)
    plot_w, row_h = 520, 24
    header = 34 + 18 * len(subtitle) + (22 if warning else 0)
    top = header + 10
    legend_h = 22 * math.ceil(len(series) / 3)
    width = label_w + plot_w + 110
    height = top + row_h * len(bars) + 40 + legend_h
    values = [b.value for b in bars if b.value > 0]
    lo = math.floor(math.log10(min(values))) if values else 0
    hi = max(math.ceil(math.log10(max(values))) if values else 1, lo + 1)

    def x_of(value: float) -> float:
        return label_w + plot_w * (math.log10(value) - lo) / (hi - lo)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{FONT}" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="16" font-weight="bold">{escape(title)}</text>',
    ]
    y = 22
    for line in subtitle:
        y += 18
        out.append(f'<text x="10" y="{y}" fill="#444">{escape(line)}</text>')
    if warning:
        y += 22
        out.append(
            f'<text x="10" y="{y}" fill="#b00000" font-weight="bold">{escape(warning)}</text>'
        )
    bottom = top + row_h * len(bars)
    for decade in range(lo, hi + 1):
        x = x_of(10.0**decade)
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom}" stroke="#ddd"/>')
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#555">'
            f"{_tick(10.0**decade)}</text>"
        )
    out.append(
        f'<text x="{label_w + plot_w / 2:.0f}" y="{bottom + 32}" text-anchor="middle" '
        f'fill="#555">{escape(unit)}, log scale</text>'
    )
    for i, bar in enumerate(bars):
        y0 = top + i * row_h
        out.append(
            f'<text x="{label_w - 8}" y="{y0 + 16}" text-anchor="end">{escape(bar.label)}</text>'
        )
        if bar.value > 0:
            end = max(x_of(bar.value), label_w + 2)
            color = colors.get(bar.series, "#888")
            out.append(
                f'<rect x="{label_w}" y="{y0 + 3}" width="{end - label_w:.1f}" '
                f'height="{row_h - 6}" fill="{color}"><title>{escape(bar.label)}: '
                f"{bar.value:,.0f} {escape(unit)}</title></rect>"
            )
            out.append(f'<text x="{end + 6:.1f}" y="{y0 + 16}">{bar.value:,.0f}</text>')
        else:
            out.append(f'<text x="{label_w + 6}" y="{y0 + 16}" fill="#b00000">not run</text>')
    legend_top = bottom + 48
    for i, s in enumerate(series):
        lx = 10 + (i % 3) * ((width - 20) / 3)
        ly = legend_top + (i // 3) * 22
        out.append(f'<rect x="{lx:.0f}" y="{ly}" width="14" height="14" fill="{s.color}"/>')
        out.append(f'<text x="{lx + 20:.0f}" y="{ly + 12}">{escape(s.name)}</text>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
