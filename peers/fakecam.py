"""Distinct fake cameras for browser tests: one Y4M file per browser.

Chromium's ``--use-file-for-fake-video-capture=<file.y4m>`` loops the file as the
camera. Giving every browser its own pattern of coloured blocks lets a test tell, by
pixels alone, whose picture a tile shows: a viewer must show the sender's pattern and
not anybody else's (and a viewer without keys shows nothing, not noise that happens
to match).
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


MOVING_FPS = 30


def write_moving_y4m(
    path: Path, seed: int, width: int = 640, height: int = 480, fps: int = MOVING_FPS,
    seconds: float = 4.0, noise: int = 6,
) -> Path:
    """A camera that costs what a real one costs: the seed's pattern of blocks (still
    recognisable by ``expected``/``block_diff``), a fixed fine texture on it, a textured
    patch that moves along a Lissajous path, and fresh noise of ±`noise` luma levels in
    every frame (±noise/2 in chroma), as a camera sensor adds.

    Why: the colour blocks of ``write_y4m`` compress to almost nothing, so a browser
    publishing them never needs the bandwidth a call needs, and a bandwidth limit in a
    test would never bite. Noise is what a motion-compensated encoder cannot predict:
    with it Chromium's VP8 encoder uses its whole 640×480 ceiling (1.7 Mbit/s in
    WebRTC's GetMaxDefaultVideoBitrateKbps). Measured with Chromium 156 on this
    project's 2-core test machine, one browser publishing into sealroom's SFU on
    loopback, outbound-rtp over 10 s after a 10 s ramp: 1 716 kbit/s at 30.1 fps, 480
    lines, mean QP 31 with the default ``noise=6`` (without noise: the same rate at QP 16,
    an encoder with bits to spare); three browsers in one call: 1 658–1 738 kbit/s each,
    28.5–29.8 fps, the whole call using 1.6 of the 2 cores.

    The clip is `seconds` long and Chromium loops it (a seam every loop, like a cut).
    numpy (a dependency of the project, imported here so that the tests using only
    ``write_y4m`` do not load it) writes the 55 MB of a 4 s clip in half a second.
    """
    import numpy as np

    frames = max(1, round(seconds * fps))
    rng = np.random.default_rng(seed)
    grid = pattern(seed)
    yuv = np.array([[_yuv(c) for c in row] for row in grid], dtype=np.int16)  # ROWS×COLS×3
    rows = (np.arange(height) * ROWS) // height
    cols = (np.arange(width) * COLS) // width
    base = yuv[rows[:, None], cols[None, :]]  # height×width×3
    # A fixed texture (±12) so that key frames and the moving patch carry detail.
    base[..., 0] += rng.integers(-12, 13, size=(height, width), dtype=np.int16)
    pw, ph = width // 5, height // 5
    yy, xx = np.mgrid[0:ph, 0:pw]
    patch = (((xx // 4 + yy // 4) % 2) * 80 - 40).astype(np.int16)  # a 4-pixel checker
    patch += rng.integers(-20, 21, size=(ph, pw), dtype=np.int16)
    cw, ch = width // 2, height // 2
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for n in range(frames):
            t = 2 * np.pi * n / frames
            x0 = int((width - pw) * (0.5 + 0.5 * np.sin(t)))
            y0 = int((height - ph) * (0.5 + 0.5 * np.sin(2 * t + 0.5)))
            y_plane = base[..., 0].copy()
            y_plane[y0 : y0 + ph, x0 : x0 + pw] += patch
            y_plane += rng.integers(-noise, noise + 1, size=(height, width), dtype=np.int16)
            # 4:2:0: chroma is the base's, one sample per 2×2 pixels.
            half = max(1, noise // 2)
            u_plane = base[::2, ::2, 1] + rng.integers(-half, half + 1, size=(ch, cw),
                                                       dtype=np.int16)
            v_plane = base[::2, ::2, 2] + rng.integers(-half, half + 1, size=(ch, cw),
                                                       dtype=np.int16)
            f.write(b"FRAME\n")
            for plane in (y_plane, u_plane, v_plane):
                f.write(np.clip(plane, 0, 255).astype(np.uint8).tobytes())
    return path
