"""Distinct fake cameras for browser tests: one Y4M file per browser.

Chromium's ``--use-file-for-fake-video-capture=<file.y4m>`` loops the file as the
camera. Giving every browser its own pattern of coloured blocks lets a test tell, by
pixels alone, whose picture a tile shows: a viewer must show the sender's pattern and
not anybody else's (and a viewer without keys shows nothing, not noise that happens
to match, DESIGN.md "Testing against the real thing").
"""

from __future__ import annotations

import random
from pathlib import Path

WIDTH, HEIGHT = 320, 240
COLS, ROWS = 4, 3
FRAMES = 10

Rgb = tuple[int, int, int]


def pattern(seed: int) -> list[list[Rgb]]:
    """A ROWS × COLS grid of saturated colours, different for every seed."""
    rng = random.Random(seed)
    palette: list[Rgb] = [
        (230, 40, 40), (40, 200, 60), (40, 80, 230), (240, 220, 40), (230, 60, 220),
        (40, 220, 220), (250, 250, 250), (20, 20, 20), (250, 140, 30), (120, 60, 200),
    ]
    return [[rng.choice(palette) for _ in range(COLS)] for _ in range(ROWS)]


def _yuv(rgb: Rgb) -> tuple[int, int, int]:
    # Full-range BT.601 (JFIF), as the "C420jpeg" tag declares.
    r, g, b = rgb
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    v = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return tuple(max(0, min(255, round(c))) for c in (y, u, v))  # type: ignore[return-value]


def write_y4m(path: Path, seed: int) -> Path:
    """Write the seed's pattern as a short 4:2:0 Y4M clip (a moving bar keeps it a video)."""
    grid = pattern(seed)
    bw, bh = WIDTH // COLS, HEIGHT // ROWS
    yuv = [[_yuv(c) for c in row] for row in grid]
    y_rows = [b"".join(bytes([c[0]]) * bw for c in row) for row in yuv]
    u_rows = [b"".join(bytes([c[1]]) * (bw // 2) for c in row) for row in yuv]
    v_rows = [b"".join(bytes([c[2]]) * (bw // 2) for c in row) for row in yuv]
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F10:1 Ip A1:1 C420jpeg\n".encode())
        for n in range(FRAMES):
            y_plane = bytearray(b"".join(y_rows[r // bh] for r in range(HEIGHT)))
            for r in range(8):  # an 8-pixel bar that walks along the top
                for c in range(n * 32, n * 32 + 32):
                    y_plane[r * WIDTH + c] = 255 - y_plane[r * WIDTH + c]
            u_plane = b"".join(u_rows[(2 * r) // bh] for r in range(HEIGHT // 2))
            v_plane = b"".join(v_rows[(2 * r) // bh] for r in range(HEIGHT // 2))
            f.write(b"FRAME\n" + bytes(y_plane) + u_plane + v_plane)
    return path


def expected(seed: int, width: int = 16, height: int = 12) -> list[int]:
    """The seed's picture sampled at width × height, as flat RGB (what tiles.sample returns)."""
    grid = pattern(seed)
    out: list[int] = []
    for y in range(height):
        for x in range(width):
            out.extend(grid[(y * ROWS) // height][(x * COLS) // width])
    return out


def block_diff(sample: list[int], reference: list[int], width: int = 16, height: int = 12) -> float:
    """Mean absolute RGB difference, ignoring the samples on block edges and the top bar."""
    total = count = 0
    for y in range(height):
        if y == 0 or (y * ROWS) % height == 0 or ((y + 1) * ROWS) % height == 0:
            continue
        for x in range(width):
            if (x * COLS) % width == 0 or ((x + 1) * COLS) % width == 0:
                continue
            i = (y * width + x) * 3
            total += sum(abs(sample[i + c] - reference[i + c]) for c in range(3))
            count += 3
    return total / count
