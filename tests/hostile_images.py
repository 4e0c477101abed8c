"""Decompression bombs and hostile image files, built in a fraction of a second without holding their
pixels (issue 19): a 20000x20000 deflated TIFF (0.4 MB), a GIF and an RLE BMP of that size, and a
25000x25000 JPEG with a stray byte after its APP0 segment (which hid its size from a strict header walk).

    python tests/hostile_images.py OUT_DIR     # writes them there (for measuring by hand)
"""
from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np

SIDE = 20_000
JPEG_SIDE = 25_000


def deflated_zeros(size: int, *, chunk: int = 4 << 20) -> bytes:
    """A zlib stream of ``size`` zero bytes: one fully flushed deflate segment repeated (each segment
    stands alone after a full flush), so building it costs one chunk's compression."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(size, chunk)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    last = tail.compress(bytes(rest)) + tail.flush(zlib.Z_FINISH)
    checksum = 1
    for _ in range(count):
        checksum = zlib.adler32(bytes(chunk), checksum)
    checksum = zlib.adler32(bytes(rest), checksum)
    return b"\x78\xda" + segment * count + last + struct.pack(">I", checksum)


def tiff_bomb(side: int = SIDE) -> bytes:
    """An 8-bit grey TIFF of side x side zeros in one Adobe-deflate strip."""
    strip = deflated_zeros(side * side)
    entries = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, 0),
               (277, 3, 1), (278, 4, side), (279, 4, len(strip))]
    offset = 8 + 2 + 12 * len(entries) + 4
    entries[5] = (273, 4, offset)
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        for tag, kind, value in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + strip


def gif_bomb(side: int = SIDE) -> bytes:
    """A side x side GIF: one frame, two colours, LZW data of a clear code and the end code."""
    screen = b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, side, side, 0)
    return screen + frame + b"\x02\x01\x2c\x00" + b"\x3b"  # code size 2; codes 4 (clear), 5 (end)


def rle_bmp_bomb(side: int = SIDE) -> bytes:
    """A side x side 8-bit RLE BMP (3 MB): each row runs of 255 pixels of colour 0, then end of line."""
    runs, left = divmod(side, 255)
    row = b"\xff\x00" * runs + (bytes([left, 0]) if left else b"") + b"\x00\x00"
    pixels = row * side + b"\x00\x01"
    palette = b"".join(bytes([v, v, v, 0]) for v in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    start = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", start + len(pixels), 0, 0, start) + info + palette + pixels


def jpeg_with_stray_byte(side: int = JPEG_SIDE) -> bytes:
    """A small JPEG whose frame header claims side x side, with a 0x00 byte after its APP0 segment."""
    ok, encoded = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    data = bytearray(encoded.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
    app0_end = 4 + struct.unpack(">H", bytes(data[4:6]))[0]
    return bytes(data[:app0_end]) + b"\x00" + bytes(data[app0_end:])


BOMBS = {"bomb.tif": tiff_bomb, "bomb_gif.png": gif_bomb,  # named .png: folder datasets list no .gif
         "bomb_rle.bmp": rle_bmp_bomb,
         "bomb_stray.jpg": jpeg_with_stray_byte}


def write_bombs(folder: Path) -> list[Path]:
    """Every bomb of `BOMBS` written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in BOMBS]
    for path, build in zip(paths, BOMBS.values()):
        path.write_bytes(build())
    return paths


if __name__ == "__main__":
    for written in write_bombs(Path(sys.argv[1])):
        print(written, written.stat().st_size)
