"""A bar chart as a PNG, written with zlib alone.

Drawing a dozen labelled bars does not justify a plotting dependency
(matplotlib is not installed where this runs): the PNG format is a zlib
stream of scanlines, and the labels use the classic 5x7 bitmap font below.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

# 5x7 glyphs, one string of 7 rows per character, '#' = ink.
_FONT_ROWS = {
    "A": ".###.#...##...#######...##...##...#",
    "B": "####.#...##...#####.#...##...#####.",
    "C": ".###.#...##....#....#....#...#.###.",
    "D": "####.#...##...##...##...##...#####.",
    "E": "######....#....####.#....#....#####",
    "F": "######....#....####.#....#....#....",
    "G": ".###.#...##....#.####...##...#.####",
    "H": "#...##...##...#######...##...##...#",
    "I": ".###...#....#....#....#....#...###.",
    "J": "..###...#....#....#....#.#..#..##..",
    "K": "#...##..#.#.#..##...#.#..#..#.#...#",
    "L": "#....#....#....#....#....#....#####",
    "M": "#...###.###.#.##...##...##...##...#",
    "N": "#...##...###..##.#.##..###...##...#",
    "O": ".###.#...##...##...##...##...#.###.",
    "P": "####.#...##...#####.#....#....#....",
    "Q": ".###.#...##...##...##.#.##..#..##.#",
    "R": "####.#...##...#####.#.#..#..#.#...#",
    "S": ".####.....#.....###.....#....#####.",
    "T": "#####..#....#....#....#....#....#..",
    "U": "#...##...##...##...##...##...#.###.",
    "V": "#...##...##...##...##...#.#.#...#..",
    "W": "#...##...##...##.#.##.#.##.#.#.#.#.",
    "X": "#...##...#.#.#...#...#.#.#...##...#",
    "Y": "#...##...#.#.#...#....#....#....#..",
    "Z": "#####....#...#...#...#...#....#####",
    "0": ".###.#...##..###.#.###..##...#.###.",
    "1": "..#...##....#....#....#....#...###.",
    "2": ".###.#...#....#...#...#...#...#####",
    "3": "#####...#...#.....#.....##...#.###.",
    "4": "...#...##..#.#.#..#.#####...#....#.",
    "5": "######....####.....#....##...#.###.",
    "6": "..##..#...#....####.#...##...#.###.",
    "7": "#####....#...#...#...#....#....#...",
    "8": ".###.#...##...#.###.#...##...#.###.",
    "9": ".###.#...##...#.####....#...#..##..",
    " ": "." * 35,
    ".": "." * 25 + ".##...##..",
    ",": ".....................##....#...#...",
    "-": "." * 15 + "#####" + "." * 15,
    "/": ".........#...#...#...#...#.........",
    "(": "...#...#...#....#....#.....#.....#.",
    ")": ".#.....#.....#....#....#...#...#...",
    ":": "......##...##........##...##.......",
    "=": "..........#####.....#####..........",
    "%": "##...##..#...#...#...#...#..##...##",
    "+": ".......#....#..#####..#....#.......",
    "_": "." * 30 + "#####",
}


def _glyph(ch: str) -> list[str]:
    rows = _FONT_ROWS.get(ch.upper(), _FONT_ROWS[" "])
    rows = (rows + "." * 35)[:35]
    return [rows[i * 5 : i * 5 + 5] for i in range(7)]


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(b"\xff" * (width * height * 3))

    def rect(self, x: int, y: int, w: int, h: int, color: tuple[int, int, int]) -> None:
        px = bytes(color)
        for row in range(max(y, 0), min(y + h, self.height)):
            start = (row * self.width + max(x, 0)) * 3
            end = (row * self.width + min(x + w, self.width)) * 3
            if end > start:
                self.pixels[start:end] = px * ((end - start) // 3)

    def text(
        self, x: int, y: int, s: str, scale: int = 2, color: tuple[int, int, int] = (0, 0, 0)
    ) -> None:
        for i, ch in enumerate(s):
            for r, line in enumerate(_glyph(ch)):
                for c, cell in enumerate(line):
                    if cell == "#":
                        self.rect(x + (i * 6 + c) * scale, y + r * scale, scale, scale, color)

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[row * self.width * 3 : (row + 1) * self.width * 3])
            for row in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def bar_chart(
    path: Path,
    title: str,
    bars: Sequence[tuple[str, float, tuple[int, int, int]]],
    unit: str = "ops/s",
) -> None:
    """Horizontal bars on a log scale (the cases span four decades)."""
    scale = 2
    char_w = 6 * scale
    label_w = max((len(label) for label, _, _ in bars), default=10) * char_w + 20
    bar_area = 520
    row_h = 26
    top = 50
    width = label_w + bar_area + 160
    height = top + row_h * len(bars) + 30
    canvas = Canvas(width, height)
    canvas.text(10, 12, title, scale)
    values = [v for _, v, _ in bars if v > 0]
    lo = math.floor(math.log10(min(values))) if values else 0
    hi = math.ceil(math.log10(max(values))) if values else 1
    hi = max(hi, lo + 1)
    for decade in range(lo, hi + 1):
        x = label_w + int(bar_area * (decade - lo) / (hi - lo))
        canvas.rect(x, top - 6, 1, row_h * len(bars) + 6, (210, 210, 210))
        canvas.text(x - 10, height - 22, f"1E{decade}", 1, (90, 90, 90))
    for i, (label, value, color) in enumerate(bars):
        y = top + i * row_h
        canvas.text(10, y + 4, label, scale)
        if value > 0:
            length = int(bar_area * (math.log10(value) - lo) / (hi - lo))
            canvas.rect(label_w, y + 2, max(length, 2), row_h - 6, color)
            canvas.text(label_w + max(length, 2) + 6, y + 4, f"{value:,.0f}", scale)
        else:
            canvas.text(label_w + 6, y + 4, "NOT RUN", scale, (150, 0, 0))
    path.write_bytes(canvas.png())
    _ = unit
