"""Strict, bounded decoding of one image file (the face front end's first step, `extract.faces`).

- only a regular file (after links) of at most MAX_FILE_BYTES is read (`read_image_file`);
- the size comes from the header before any pixel is decoded (`header_size`; a format it does not know,
  or a header it cannot parse, is `Unreadable`, never "decode and see"); a JPEG must end with its
  end-of-image marker, and over the pixel limits an image is `ImageTooLarge` (`checked_size`); above
  DECODE_MAX_PIXELS a JPEG is decoded reduced by 2, 4 or 8 in the DCT (a 100-megapixel photo to about 6);
- a JPEG must decode without error (`cv2.imread` would only warn and fill it with grey) or libjpeg
  warning ("Corrupt JPEG data": OpenCV would hand back garbage): else `Unreadable`. OpenCV's own limit
  (OPENCV_IO_MAX_IMAGE_PIXELS, set to MAX_PIXELS by `extract/__init__.py` unless the environment sets
  it) stands behind: what it refuses is `Unreadable`.

OpenCV and numpy only (no torch): classify's HTML report makes its thumbnails with `decode` too.
"""
from __future__ import annotations

import os
import stat
import struct
import tempfile
import threading
from typing import NamedTuple

import cv2
import numpy as np

DECODE_MAX_PIXELS = 16_000_000   # larger JPEGs decode reduced (48 MB as BGR at most)
MAX_PIXELS = 250_000_000         # hard limit: TOO_LARGE beyond (reduced by 8 that is still ~4 MP)
UNREDUCED_MAX_PIXELS = 100_000_000  # formats decoded at full size: 0.3 GB as BGR, ~0.8 GB while decoding
MAX_FILE_BYTES = 512 << 20       # read into memory whole: a larger file is TOO_LARGE unread


class Unreadable(Exception):
    """The file cannot be read or decoded completely; the message says why."""


class ImageTooLarge(Exception):
    """The image has more than MAX_PIXELS pixels."""


def jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, colour components) from a JPEG's SOF marker, or None when not a JPEG / no SOF."""
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if position + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[position + 5:position + 9])
            return width, height, data[position + 9] if position + 9 < len(data) else 0
        position += 2 + length
    return None


# -- sizes from headers (each reader is called on data that starts with its format's magic) -------------
def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None."""
    return struct.unpack(">II", data[16:24]) if len(data) >= 24 and data[12:16] == b"IHDR" else None


def gif_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a GIF's decoder allocates: its logical screen, widened to hold its first frame."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        return None
    width, height = struct.unpack("<HH", data[6:10])
    position = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while position < len(data) and data[position] == 0x21:  # extensions before the first frame
        position += 2
        while position < len(data) and data[position]:
            position += data[position] + 1
        position += 1
    if position + 9 > len(data) or data[position] != 0x2C:
        return None
    left, top, frame_width, frame_height = struct.unpack("<HHHH", data[position + 1:position + 9])
    return max(width, left + frame_width), max(height, top + frame_height)


def bmp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a BMP's DIB header (any version; a negative height is a top-down image)."""
    if data[:2] != b"BM" or len(data) < 26:
        return None
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return (width, abs(height)) if header >= 40 and width > 0 and height != 0 else None


def tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a TIFF's first image file directory (the page the decoder reads)."""
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])
    if order is None or len(data) < 8:
        return None
    (offset,) = struct.unpack(order + "I", data[4:8])
    if offset + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[offset:offset + 2])
    found = {}
    for entry in range(offset + 2, min(offset + 2 + 12 * count, len(data) - 11), 12):
        tag, kind = struct.unpack(order + "HH", data[entry:entry + 4])
        if tag in (256, 257) and kind in (3, 4):  # ImageWidth, ImageLength as SHORT or LONG
            code, size = ("H", 2) if kind == 3 else ("I", 4)
            (found[tag],) = struct.unpack(order + code, data[entry + 8:entry + 8 + size])
    return (found[256], found[257]) if len(found) == 2 else None


def webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a WebP's first chunk: VP8 (lossy), VP8L (lossless) or VP8X (extended canvas)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:
        (bits,) = struct.unpack("<I", data[21:25])
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    return None


def pnm_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PBM/PGM/PPM header (P1-P6: magic, then width and height, # comments)."""
    fields, position = [], 2
    while len(fields) < 2 and position < min(len(data), 4096):
        while position < len(data) and data[position:position + 1].isspace():
            position += 1
        if data[position:position + 1] == b"#":
            newline = data.find(b"\n", position)
            position = len(data) if newline < 0 else newline + 1
            continue
        end = position
        while end < len(data) and data[end:end + 1].isdigit():
            end += 1
        if end == position:
            return None
        fields.append(int(data[position:end]))
        position = end
    return tuple(fields) if len(fields) == 2 else None


# format name -> (its first bytes, its reader of (width, height, ...)); every format `decode` accepts, and only these
HEADER_READERS = {
    "JPEG": ((b"\xff\xd8",), jpeg_frame),
    "PNG": ((b"\x89PNG\r\n\x1a\n",), png_size),
    "GIF": ((b"GIF87a", b"GIF89a"), gif_size),
    "BMP": ((b"BM",), bmp_size),
    "TIFF": ((b"II*\x00", b"MM\x00*"), tiff_size),
    "WebP": ((b"RIFF",), webp_size),
    "PNM": ((b"P1", b"P2", b"P3", b"P4", b"P5", b"P6"), pnm_size),
}


def header_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) read from the header alone; `Unreadable` when the format is not one
    `decode` accepts or its header cannot be parsed (a crafted header that hides the size is no bomb)."""
    for name, (magics, reader) in HEADER_READERS.items():
        if data.startswith(magics):
            size = reader(data)
            if size is None or min(size[:2]) <= 0:
                raise Unreadable(f"{name} header cannot be parsed (damaged, or crafted to hide its size)")
            return name, size[0], size[1]
    raise Unreadable(f"not an image format this tool reads ({', '.join(HEADER_READERS)})")


def jpeg_is_complete(data: bytes) -> bool:
    """An end-of-image marker after the last start-of-scan (an EXIF thumbnail's own EOI comes before
    the main image's scans, and 0xFFD9 cannot occur inside entropy-coded data)."""
    return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") >= 0


_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}


class Decoded(NamedTuple):
    """A decoded BGR uint8 image and its scale: decoded pixels per original pixel (1, 1/2, 1/4, 1/8)."""

    image: np.ndarray
    scale: float


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"))


def read_image_file(path: str | os.PathLike, *, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of ``path`` (at most ``limit``: `ImageTooLarge` beyond), if it is a regular file after
    links; else `Unreadable` at once. Opened non-blocking and checked on the open descriptor, so a FIFO
    (which would block a plain open or read forever) or a file swapped after a check is never read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "not a file")
                raise Unreadable(f"not a regular file ({kind})")
            if info.st_size > limit:
                raise ImageTooLarge(f"a file of {info.st_size:,} bytes, over the {limit:,} limit")
            with os.fdopen(os.dup(descriptor), "rb") as handle:
                return handle.read(limit)
        finally:
            os.close(descriptor)
    except OSError as error:
        raise Unreadable(f"cannot read the file ({error.strerror or type(error).__name__})") from None


def checked_size(data: bytes) -> tuple[str, int]:
    """(format, pixels) of an image file's bytes: `Unreadable` unless its header gives its size (and a
    JPEG is complete), `ImageTooLarge` when that size is over the format's limit."""
    if not data:
        raise Unreadable("empty file")
    kind, width, height = header_size(data)
    if kind == "JPEG" and not jpeg_is_complete(data):
        raise Unreadable("JPEG without its end-of-image marker (truncated file)")
    limit = MAX_PIXELS if kind == "JPEG" else UNREDUCED_MAX_PIXELS
    if width * height > limit:
        raise ImageTooLarge(f"{width}x{height} pixels, over the {limit:,} limit"
                            + ("" if kind == "JPEG" else f" of a {kind} (decoded at full size)"))
    return kind, width * height


def decode(path: str | os.PathLike) -> Decoded:
    """Read and decode one image strictly and within bounded memory (see the module docstring)."""
    data = read_image_file(path)
    kind, pixels = checked_size(data)
    # a JPEG: the smallest DCT reduction (1, 2, 4, 8) bringing it under DECODE_MAX_PIXELS (else 8)
    factor = next((f for f in (1, 2, 4) if pixels <= DECODE_MAX_PIXELS * f * f), 8) if kind == "JPEG" else 1
    try:
        image, warning = imdecode_with_warnings(data, _REDUCED_FLAGS[factor]) if kind == "JPEG" else \
            (cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR), "")
    except cv2.error:  # OpenCV's own size limit, or a decoder's assertion on a crafted file
        raise Unreadable("OpenCV refuses it (a size or structure its decoder does not accept)") from None
    if warning:
        raise Unreadable(f"damaged JPEG data (libjpeg: {warning})")
    if image is None:
        raise Unreadable("OpenCV cannot decode it (corrupt, truncated or not an image)")
    return Decoded(image, 1.0 / factor)


_DECODE_LOCK = threading.Lock()
_WARNINGS_FILE: list = [None, None]  # [pid, that process's scratch file]


def warnings_file():
    """This process's scratch file for libjpeg's warnings. Keyed by pid: a reader worker forked after
    its parent decoded must not share the parent's file (and its offset) with its sibling workers, or
    one worker's warning about a damaged file is read as another's."""
    if _WARNINGS_FILE[0] != os.getpid():  # none yet, or a parent's (inherited: this process never writes to it)
        _WARNINGS_FILE[:] = os.getpid(), tempfile.TemporaryFile()
    return _WARNINGS_FILE[1]


def imdecode_with_warnings(data: bytes, flag: int) -> tuple[np.ndarray | None, str]:
    """`cv2.imdecode` of a JPEG, and the first warning libjpeg printed while decoding it ("" if none).

    libjpeg reports damaged data only as a warning on fd 2, so fd 2 points at a scratch file (never a
    pipe: a long message cannot block) for the call, under a lock; what another thread writes to stderr
    in that instant lands in the scratch file and is shown as part of the warning.
    """
    with _DECODE_LOCK:
        scratch = warnings_file().fileno()
        os.ftruncate(scratch, 0)
        os.lseek(scratch, 0, os.SEEK_SET)
        saved = os.dup(2)
        try:
            os.dup2(scratch, 2)
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        os.lseek(scratch, 0, os.SEEK_SET)
        printed = os.read(scratch, 4096).decode("utf-8", "replace")
    lines = [line.strip() for line in printed.splitlines() if "JPEG" in line]
    return image, lines[0] if lines else ""

