"""Decode the PNG screenshots headless Chromium writes (8-bit RGB/RGBA, not interlaced) into
a numpy array, so tests can look at pixels without Pillow. Filters unrolled by a numba
kernel (checked against a pure-Python reference in tests/test_report_charts.py)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numba as nb
import numpy as np


@nb.njit(cache=True)
def unfilter(raw: np.ndarray, h: int, stride: int, bpp: int) -> np.ndarray:
    out = np.zeros((h, stride), dtype=np.uint8)
    pos = 0
    for y in range(h):
        ft = raw[pos]
        pos += 1
        for x in range(stride):
            a = np.int32(out[y, x - bpp]) if x >= bpp else 0
            b = np.int32(out[y - 1, x]) if y > 0 else 0
            c = np.int32(out[y - 1, x - bpp]) if (x >= bpp and y > 0) else 0
            v = np.int32(raw[pos + x])
            if ft == 1:
                v += a
            elif ft == 2:
                v += b
            elif ft == 3:
                v += (a + b) // 2
            elif ft == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                v += a if (pa <= pb and pa <= pc) else (b if pb <= pc else c)
            out[y, x] = v & 255
        pos += stride
    return out


def read_png(path: Path) -> np.ndarray:
    """(height, width, channels) uint8."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, w, h, ch = 8, [], 0, 0, 3
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
            ch = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    return unfilter(raw, h, w * ch, ch).reshape(h, w, ch)


def ink(pixels: np.ndarray) -> np.ndarray:
    """Saturated pixels (chart marks in the palette), not text, grid or background grays."""
    rgb = pixels[..., :3].astype(np.int16)
    return (rgb.max(axis=-1) - rgb.min(axis=-1)) >= 60
