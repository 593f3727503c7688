"""The function's own PNG decoder against Pillow's, on every colour type, depth and filter PNG allows here."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from flcore.shared import png

RNG = np.random.default_rng(3)


def encoded(img: Image.Image, **opts) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **opts)
    return buf.getvalue()


def smooth(h: int, w: int, c: int) -> np.ndarray:
    """Gradients plus noise: Pillow's encoder picks different filters row by row for such pixels."""
    y, x = np.mgrid[:h, :w]
    base = (x * 7 + y * 3)[..., None] + np.arange(c) * 40
    return ((base + RNG.integers(0, 30, (h, w, c))) % 256).astype(np.uint8)


def pillow_pixels(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    img = img.convert("RGB" if img.mode in ("RGB", "RGBA", "P") else "L")
    arr = np.asarray(img)
    return arr[..., None] if arr.ndim == 2 else arr


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "1", "I;16"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (40, 33)])
def test_decodes_like_pillow(mode, shape):
    h, w = shape
    if mode in ("RGB", "RGBA"):
        img = Image.fromarray(smooth(h, w, len(mode)), mode)
    elif mode == "LA":
        img = Image.fromarray(smooth(h, w, 2), "LA")
    elif mode == "I;16":
        img = Image.fromarray(smooth(h, w, 1)[..., 0].astype(np.uint16) * 257)
        img = img.convert("I;16")
    else:
        img = Image.fromarray(smooth(h, w, 1)[..., 0], "L").convert(mode)
    data = encoded(img)
    ours = png.decode(data)
    if mode == "I;16":  # Pillow's I;16 -> L clips instead of scaling: compare the high bytes
        expect = (np.asarray(img, np.uint16) >> 8).astype(np.uint8)[..., None]
    else:
        expect = pillow_pixels(data)
    assert ours.dtype == np.uint8 and ours.shape == expect.shape
    assert np.array_equal(ours, expect)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_small_palettes_and_grey_depths(bits):
    img = Image.fromarray(smooth(9, 11, 1)[..., 0], "L").quantize(2**bits)
    data = encoded(img, bits=bits)
    assert png.size(data) == (11, 9)
    assert np.array_equal(png.decode(data), pillow_pixels(data))


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def handmade(width: int, height: int, raw: bytes, depth=8, color=0, interlace=0) -> bytes:
    return (
        png.SIGNATURE
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_every_filter_by_hand():
    """Rows with filters 0..4 (RGB, so bpp 3) decoded to the values the spec's formulas give."""
    w, pixels = 4, RNG.integers(0, 256, (5, 4, 3)).astype(np.int64)
    raw = bytearray()
    prev = np.zeros(w * 3, np.int64)
    for y, kind in enumerate(range(5)):
        cur = pixels[y].reshape(-1)
        left = np.concatenate([np.zeros(3, np.int64), cur[:-3]])
        upleft = np.concatenate([np.zeros(3, np.int64), prev[:-3]])
        pred = {0: 0 * cur, 1: left, 2: prev, 3: (left + prev) // 2}.get(kind)
        if kind == 4:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        raw += bytes([kind]) + bytes(((cur - pred) % 256).astype(np.uint8))
        prev = cur
    assert np.array_equal(png.decode(handmade(w, 5, bytes(raw), color=2)), pixels)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xff\xd8\xff\xe0 a JPEG", "not a PNG"),
        (png.SIGNATURE + b"\x00\x00", "truncated"),
        (handmade(2, 2, b"\x00ab\x00cd")[:-5], "truncated"),
        (handmade(2, 2, b"\x00ab\x00cd").replace(b"IHDR", b"IHDr"), "CRC"),
        (handmade(2, 2, b"\x00ab\x00cd", interlace=1), "interlaced"),
        (handmade(2, 2, b"\x00ab\x00cd", depth=3), "bit depth 3"),
        (handmade(2, 2, b"\x00ab\x00cd", color=3), "palette"),
        (handmade(2, 2, b"\x00ab"), "does not match"),
        (handmade(2, 2, b"\x00ab\x00cd" + b"\x00" * 10_000_000), "does not match"),  # a bomb stops at the header's size
        (handmade(2, 2, b"\x07ab\x00cd"), "unknown filter 7"),
        (handmade(0, 2, b""), "no pixels"),
    ],
)
def test_bad_pngs_are_refused_with_the_reason(data, message):
    with pytest.raises(png.PngError, match=message):
        png.decode(data)


def test_area_resize_averages_what_each_pixel_covers():
    img = np.arange(16, dtype=np.float64).reshape(1, 4, 4)
    assert np.allclose(png.resize(img, 2)[0], [[2.5, 4.5], [10.5, 12.5]])
    big = np.kron(img, np.ones((1, 10, 10)))  # each pixel blown up 10x: shrinking it back is exact
    assert np.allclose(png.resize(big, 4), img)
    assert np.allclose(png.resize(img, 4), img)
    assert png.resize(np.ones((3, 5, 9)), 28).shape == (3, 28, 28)
