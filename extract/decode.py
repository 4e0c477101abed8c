"""Strict, bounded decoding of one image file (the face front end's first step, `extract.faces`).

- a JPEG must end with its end-of-image marker after its last scan (a truncated file does not), and
  must decode from memory without error (OpenCV's in-memory JPEG source fails on "Premature end of JPEG
  file", where `cv2.imread` only warns and returns a grey-filled image): else `Unreadable`;
  a JPEG whose decoding makes libjpeg warn (damaged entropy-coded data, "Corrupt JPEG data") is
  `Unreadable` too, as OpenCV would hand back an image with garbage in it;
- the pixel count is read from the JPEG/PNG header before decoding: above MAX_PIXELS the image is
  `ImageTooLarge` (Status.TOO_LARGE); above DECODE_MAX_PIXELS a JPEG is decoded reduced by 2, 4 or 8
  in the DCT (`cv2.IMREAD_REDUCED_COLOR_N`), so a 100-megapixel photo decodes to about 6 megapixels.

OpenCV and numpy only (no torch): classify's HTML report makes its thumbnails with `decode` too.
"""
from __future__ import annotations

import os
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DECODE_MAX_PIXELS = 16_000_000   # larger JPEGs decode reduced (48 MB as BGR at most)
MAX_PIXELS = 250_000_000         # hard limit: TOO_LARGE beyond (reduced by 8 that is still ~4 MP)


class Unreadable(Exception):
    """The file cannot be read or decoded completely; the message says why."""


class ImageTooLarge(Exception):
    """The image has more than MAX_PIXELS pixels."""


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF marker, or None when not a JPEG / no SOF found."""
    frame = jpeg_frame(data)
    return frame[:2] if frame is not None else None


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


def png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def jpeg_is_complete(data: bytes) -> bool:
    """An end-of-image marker after the last start-of-scan (an EXIF thumbnail's own EOI comes before
    the main image's scans, and 0xFFD9 cannot occur inside entropy-coded data)."""
    return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") >= 0


def reduction_for(pixels: int) -> int:
    """The smallest DCT reduction (1, 2, 4, 8) bringing `pixels` under DECODE_MAX_PIXELS."""
    for factor in (1, 2, 4, 8):
        if pixels <= DECODE_MAX_PIXELS * factor * factor:
            return factor
    return 8


_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}


@dataclass(frozen=True)
class Decoded:
    """A decoded BGR uint8 image and its scale: decoded pixels per original pixel (1, 1/2, 1/4, 1/8)."""

    image: np.ndarray
    scale: float


def decode(path: str) -> Decoded:
    """Read and decode one image strictly and within bounded memory (see the module docstring)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise Unreadable(f"cannot read the file ({error.strerror or type(error).__name__})") from None
    if not data:
        raise Unreadable("empty file")
    size = jpeg_size(data) or png_size(data)
    is_jpeg = data[:2] == b"\xff\xd8"
    if is_jpeg and not jpeg_is_complete(data):
        raise Unreadable("JPEG without its end-of-image marker (truncated file)")
    factor = 1
    if size is not None:
        pixels = size[0] * size[1]
        if pixels > MAX_PIXELS:
            raise ImageTooLarge(f"{size[0]}x{size[1]} pixels, over the {MAX_PIXELS:,} limit")
        factor = reduction_for(pixels) if is_jpeg else 1
    image, warning = imdecode_with_warnings(data, _REDUCED_FLAGS[factor]) if is_jpeg else \
        (cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED_FLAGS[factor]), "")
    if warning:
        raise Unreadable(f"damaged JPEG data (libjpeg: {warning})")
    if image is None:
        raise Unreadable("OpenCV cannot decode it (corrupt, truncated or not an image)")
    if size is None and image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageTooLarge(f"{image.shape[1]}x{image.shape[0]} pixels, over the {MAX_PIXELS:,} limit")
    return Decoded(image, 1.0 / factor)


_DECODE_LOCK = threading.Lock()
_WARNINGS_FILES: dict[int, object] = {}  # pid -> that process's scratch file


def warnings_file():
    """This process's scratch file for libjpeg's warnings. Keyed by pid: a reader worker forked after
    its parent decoded must not share the parent's file (and its offset) with its sibling workers, or
    one worker's warning about a damaged file is read as another's."""
    pid = os.getpid()
    if pid not in _WARNINGS_FILES:
        _WARNINGS_FILES.clear()  # an inherited parent's entry: this process never writes to it
        _WARNINGS_FILES[pid] = tempfile.TemporaryFile()
    return _WARNINGS_FILES[pid]


def imdecode_with_warnings(data: bytes, flag: int) -> tuple[np.ndarray | None, str]:
    """`cv2.imdecode` of a JPEG, and the first warning libjpeg printed while decoding it ("" if none).

    libjpeg reports damaged entropy-coded data ("Corrupt JPEG data: N extraneous bytes before marker")
    only as a warning on file descriptor 2 and still returns an image with garbage in it; OpenCV does not
    surface it. So fd 2 points at a scratch file (one per process, never a pipe: a long message cannot
    block) for the call. The lock keeps threads of one process from interleaving; what another thread
    writes to stderr in that instant lands in the scratch file and is shown as part of the warning.
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

