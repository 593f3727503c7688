"""PNG decoding with zlib and numpy, for ``predict``'s ``image`` input.

Why not Pillow: it and its codec libraries were 22 MB of the function's 84 MB
package, to read one kind of picture the function needs. Everything here is
bounded before it is decoded: the header's size is checked, the decompressed
length is exactly what the header implies (a zip bomb stops at that length),
and every chunk's CRC is verified.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


class PngError(ValueError):
    """The bytes are not a PNG this decoder reads; the message says why."""


def _chunks(data: bytes):
    """(type, body) of each chunk up to IEND, CRCs checked."""
    if not data.startswith(SIGNATURE):
        raise PngError("not a PNG (JPEG, GIF and other formats are not read: convert to PNG or send pixels)")
    pos = len(SIGNATURE)
    while True:
        if pos + 12 > len(data):
            raise PngError("the PNG is truncated")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise PngError("the PNG is truncated")
        if zlib.crc32(kind + body) != struct.unpack(">I", crc)[0]:
            raise PngError(f"the PNG's {kind.decode('latin-1')!r} chunk fails its CRC")
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length


def size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header alone, so a huge image is refused before decoding."""
    width, height, *_ = _header(data)
    return width, height


def _header(data: bytes) -> tuple[int, int, int, int]:
    kind, body = next(_chunks(data))
    if kind != b"IHDR" or len(body) != 13:
        raise PngError("the PNG does not start with its header")
    width, height, depth, color, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
    if color not in CHANNELS or depth not in DEPTHS[color] or compression or filtering:
        raise PngError(f"unsupported PNG: colour type {color}, bit depth {depth}")
    if interlace:
        raise PngError("interlaced PNGs are not read: save it without interlacing")
    if not width or not height:
        raise PngError("the PNG has no pixels")
    return width, height, depth, color


def decode(data: bytes) -> np.ndarray:
    """The image as height x width x (1 grey or 3 RGB) uint8; alpha is dropped, a palette expanded."""
    width, height, depth, color = _header(data)
    idat, palette = [], None
    for kind, body in _chunks(data):
        if kind == b"IDAT":
            idat.append(body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body[: len(body) // 3 * 3], np.uint8).reshape(-1, 3)
    channels = CHANNELS[color]
    row_bytes = (width * channels * depth + 7) // 8
    expected = height * (row_bytes + 1)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), expected)
    except zlib.error:
        raise PngError("the PNG's image data is corrupt") from None
    if len(raw) != expected or inflater.unconsumed_tail:
        raise PngError("the PNG's image data does not match its header's size")
    rows = _unfilter(np.frombuffer(raw, np.uint8).reshape(height, row_bytes + 1), max(1, channels * depth // 8))
    samples = _samples(rows, width * channels, depth).reshape(height, width, channels)
    if color == 3:
        if palette is None or samples.max() >= len(palette):
            raise PngError("the PNG's palette is missing or too short")
        return palette[samples[..., 0]]
    if depth < 8:
        return (samples.astype(np.uint16) * 255 // (2**depth - 1)).astype(np.uint8)
    return samples[..., :3] if color == 6 else samples[..., :1] if color == 4 else samples


def _unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Undo each row's filter (none, sub, up, average, Paeth), as the PNG spec defines them."""
    out = np.zeros((len(rows), rows.shape[1] - 1), np.uint8)
    prev = np.zeros(rows.shape[1] - 1, np.uint8)
    for y, row in enumerate(rows):
        kind, cur = row[0], row[1:]
        if kind == 0:
            out[y] = cur
        elif kind == 1:  # each byte adds the one bpp to its left: a running sum per byte lane
            lanes = np.zeros(-(-len(cur) // bpp) * bpp, np.uint8)
            lanes[: len(cur)] = cur
            out[y] = np.cumsum(lanes.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)[: len(cur)]
        elif kind == 2:
            out[y] = cur + prev
        elif kind in (3, 4):
            out[y] = _sequential(cur.tolist(), prev.tolist(), bpp, kind == 4)
        else:
            raise PngError(f"row {y} of the PNG has an unknown filter {kind}")
        prev = out[y]
    return out


def _sequential(cur: list[int], up: list[int], bpp: int, paeth: bool) -> list[int]:
    """Average and Paeth depend on the byte just decoded to the left, so they go byte by byte."""
    out = [0] * len(cur)
    for i, f in enumerate(cur):
        a = out[i - bpp] if i >= bpp else 0
        b = up[i]
        if not paeth:
            out[i] = (f + (a + b) // 2) & 255
            continue
        c = up[i - bpp] if i >= bpp else 0
        pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
        out[i] = (f + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return out


def _samples(rows: np.ndarray, per_row: int, depth: int) -> np.ndarray:
    """Unpacked samples, ``per_row`` a row: 16-bit keeps its high byte, 1/2/4-bit become integers."""
    if depth == 8:
        return rows
    if depth == 16:
        return rows[:, 0::2]
    bits = np.unpackbits(rows, axis=1).reshape(len(rows), -1, depth)[:, :per_row]
    return (bits * (1 << np.arange(depth - 1, -1, -1, dtype=np.uint8))).sum(axis=2, dtype=np.uint8)


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Grey or RGB pixels as ``channels`` planes (C x H x W, float64); grey uses ITU-R 601 weights."""
    px = pixels.astype(np.float64)
    if channels == 1 and px.shape[2] == 3:
        return (px @ np.array([0.299, 0.587, 0.114]))[None]
    if channels == 3 and px.shape[2] == 1:
        px = np.repeat(px, 3, axis=2)
    return px.transpose(2, 0, 1)


def resize(planes: np.ndarray, side: int) -> np.ndarray:
    """C x H x W planes to C x side x side by area averaging: each output pixel is the mean of what it covers."""
    return _area_weights(planes.shape[1], side) @ planes @ _area_weights(planes.shape[2], side).T


def _area_weights(n: int, side: int) -> np.ndarray:
    """side x n: how much of input pixel j lies under output pixel i, rows normalised to 1."""
    edges_out = np.arange(side + 1) * (n / side)
    lo = np.maximum(edges_out[:-1, None], np.arange(n)[None])
    hi = np.minimum(edges_out[1:, None], np.arange(1, n + 1)[None])
    weights = np.clip(hi - lo, 0, None)
    return weights / weights.sum(axis=1, keepdims=True)
