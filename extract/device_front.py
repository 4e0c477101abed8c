"""The device front end of a face backbone (``python -m extract --decode device``): JPEGs decoded in
batches on the model's device, each backbone's aligned chip cut there.

    reader workers: file -> checks (below) -> compressed bytes + the row's stored face row
    main process:   torchvision.io.decode_jpeg(list of bytes, device=...)  (nvJPEG on CUDA, libjpeg-turbo
                    on CPU) -> the backbone's chip on the device -> the backbone's embed

The aligned chip is the CPU path's (`extract.align.FaceTemplate`) done in torch; dlib's chip needs its
shape predictor on the host pixels. A row never gets another status than the CPU path gives it: the
workers hand over bytes only for a JPEG the strict CPU decoder would accept at full size
(`device_decodable`), and a file the batch decoder still refuses takes the CPU path in the main process.
Rows of the two paths agree within the decoders' and warps' differences (tests/test_device_front.py).
"""
from __future__ import annotations

import struct
import warnings
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch

from extract.backbones import Backbone
from extract.backbones.onnx_nets import warp_chips
from extract.catalog import FACE_ALIGNED, FACE_DLIB, InputTemplate
from extract.errors import UsageError
from extract.align import FaceTemplate
from extract.decode import (DECODE_MAX_PIXELS, ImageTooLarge, Unreadable, imdecode_with_warnings, jpeg_frame,
                            jpeg_is_complete, read_image_file)
from extract.face_row import landmarks_of
from extract.images import ImageRows, collate_rows
from features.store import Status

Chipper = Callable[[torch.Tensor, np.ndarray], torch.Tensor]  # (3, H, W) uint8 RGB, face row -> (S, S, 3)


# -- which backbones, which path -------------------------------------------------------------------
def device_chipper(backbone: Backbone) -> Chipper | None:
    """The function cutting ``backbone``'s chip from a decoded image on its device; None if it has none (a
    model outside torch, an input that is not a face chip, an engine whose net runs in the preprocessor)."""
    spec = backbone.spec
    if not backbone.uses_torch_device or not backbone.uses_faces or backbone.input_shape != spec.input_shape:
        return None
    if spec.face == FACE_ALIGNED:
        return lambda image, face: aligned_chip(image, face, spec.input)
    if spec.face == FACE_DLIB:  # the shape predictor is the preprocessor's (one per process)
        return lambda image, face: dlib_chip(image, face, backbone.preprocessor.aligner)
    return None


def decodes_on_device(decode: str, backbone: Backbone) -> bool:
    """Whether ``--decode`` (auto, cpu, device) runs ``backbone``'s front end on its device. auto: on
    CUDA for a backbone whose whole chip is cut there (not dlib_resnet, whose landmarks need the host);
    device on a backbone without a device front end is a UsageError."""
    if decode == "cpu":
        return False
    chipper = device_chipper(backbone)
    if decode == "device":
        if chipper is None:
            raise UsageError(f"--decode device: {backbone.name} has no device front end here (it needs a torch "
                             "model that cuts an aligned face crop or a dlib chip: the ImageNet and VGGFace2 nets, "
                             "the dlib nets, and sface/sface_map on their torch engine, which CUDA or "
                             "EXTRACT_SFACE_ENGINE=torch selects); use --decode cpu or auto")
        return True
    return chipper is not None and backbone.device.type == "cuda" and backbone.spec.face != FACE_DLIB


# -- the chips ---------------------------------------------------------------------------------------
def aligned_chip(image: torch.Tensor, face: np.ndarray, crop: InputTemplate) -> torch.Tensor:
    """The aligned chip (`extract.backbones._image.AlignedCrop` of the same template) of a decoded
    (3, H, W) uint8 RGB image on its device: (S, S, 3) uint8."""
    template, landmarks = FaceTemplate(crop.size, margin=crop.margin), landmarks_of(face)
    pixels = image.unsqueeze(0).float()
    shrunk = template.shrunk_size(template.matrix(landmarks), image.shape[2], image.shape[1])
    if shrunk is not None:  # as FaceTemplate.warp: resize first (rounded to uint8, as cv2 does), then warp
        pixels = area_resize(pixels, shrunk).round()
        landmarks = landmarks * [shrunk[0] / image.shape[2], shrunk[1] / image.shape[1]]
    matrix = torch.from_numpy(template.matrix(landmarks)).unsqueeze(0)
    chip = warp_chips(pixels, matrix, size=template.size)[0].round().clamp(0, 255).to(torch.uint8)
    chip = chip.permute(1, 2, 0)
    return chip if crop.rgb else chip.flip(-1)


def area_weights(source: int, target: int) -> np.ndarray:
    """(target, source) weights of OpenCV's INTER_AREA shrinking one axis (``computeResizeAreaTab``):
    each output pixel averages the source interval it covers, partly covered pixels by their overlap."""
    scale, weights = source / target, np.zeros((target, source))
    for out in range(target):
        start, stop = out * scale, (out + 1) * scale
        cell = min(scale, source - start)
        first, last = int(np.ceil(start)), min(int(np.floor(stop)), source - 1)
        first = min(first, last)
        if first - start > 1e-3:
            weights[out, first - 1] = (first - start) / cell
        weights[out, first:last] = 1 / cell
        if stop - last > 1e-3:
            weights[out, last] = min(min(stop - last, 1.0), cell) / cell
    return weights


def area_resize(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``cv2.resize(..., size, interpolation=INTER_AREA)`` of a (1, C, H, W) float batch as two matrix
    products on its device (torch's ``mode="area"`` pools whole pixels: 1-2% off in SFace's cosine)."""
    rows = torch.from_numpy(area_weights(pixels.shape[2], size[1])).to(pixels)
    columns = torch.from_numpy(area_weights(pixels.shape[3], size[0])).to(pixels)
    return rows @ pixels @ columns.T


def dlib_chip(image: torch.Tensor, face: np.ndarray, aligner) -> torch.Tensor:
    """dlib's chip of a decoded image: its shape predictor runs on a host copy of the pixels."""
    rgb = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
    return torch.from_numpy(aligner.chip_rgb(rgb, face)).to(image.device)


# -- reader workers ----------------------------------------------------------------------------------
def exif_rotated(data: bytes) -> bool:
    """Whether the JPEG's EXIF orientation asks for a rotation or flip (OpenCV's decoder applies it,
    torchvision's batch decoder does not). Unparsable EXIF counts as rotated (the CPU path decides)."""
    start = data.find(b"Exif\x00\x00", 2, 1 << 16)
    if start < 0:
        return False
    tiff = data[start + 6:start + 6 + (1 << 16)]
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (offset,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[offset:offset + 2])
        for entry in range(offset + 2, offset + 2 + 12 * count, 12):
            tag, _, _, value = struct.unpack(order + "HHIH", tiff[entry:entry + 10])
            if tag == 0x0112:
                return value != 1
    except (KeyError, struct.error):
        return True
    return False


def device_decodable(data: bytes) -> bool:
    """Whether the batch decoder may take this file: a JPEG the strict CPU decoder accepts at full size
    (complete, under DECODE_MAX_PIXELS, 1 or 3 components, not EXIF-rotated, and entropy-decoded by libjpeg
    without a warning: the CPU path's check, at 1/8 scale in grey, about a third of a full decode)."""
    frame = jpeg_frame(data)
    if frame is None or not jpeg_is_complete(data) or frame[0] * frame[1] > DECODE_MAX_PIXELS \
            or frame[2] not in (1, 3) or exif_rotated(data):
        return False
    image, warning = imdecode_with_warnings(data, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    return image is not None and not warning


class EncodedRows(ImageRows):
    """Rows -> (row, chip or placeholder, status, compressed bytes or None): bytes for a JPEG the device
    decodes, else the CPU path's own item (`ImageRows`), so its status and chip are the CPU path's."""

    def __getitem__(self, row: int) -> tuple[int, np.ndarray, int, torch.Tensor | None]:
        if self.face_status[row] != Status.OK:
            return row, self._placeholder(), int(self.face_status[row]), None
        try:
            data = read_image_file(self.paths[row])  # a regular file only: a FIFO would block the worker
        except (Unreadable, ImageTooLarge):
            data = b""  # the CPU path gives the row its status
        if not device_decodable(data):
            return (*self.cpu_item(row), None)
        return row, self._placeholder(), int(Status.OK), torch.frombuffer(bytearray(data), dtype=torch.uint8)

    def cpu_item(self, row: int) -> tuple[int, np.ndarray, int]:
        return ImageRows.__getitem__(self, row)


def collate_encoded(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    """(rows, chips with placeholders, status, [(position in batch, bytes), ...] to decode)."""
    return (*collate_rows([item[:3] for item in items]),
            [(i, item[3]) for i, item in enumerate(items) if item[3] is not None])


# -- main process ------------------------------------------------------------------------------------
def device_batches(backbone: Backbone, reader: EncodedRows, faces: np.ndarray,
                   encoded_batches: Iterator) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The reader's batches finished on the device (the bytes decoded, the chips cut and filled in): the
    (rows, chips on the device, status) the CPU reader would have yielded."""
    chipper, device = device_chipper(backbone), backbone.device
    for rows, chips, status, encoded in encoded_batches:
        chips, status = chips.to(device, non_blocking=True), status.clone()
        for (position, _), image in zip(encoded, decode_batch([data for _, data in encoded], device)):
            row = int(rows[position])
            if image is None:  # the batch decoder refused it: the CPU path decides
                _, array, code = reader.cpu_item(row)
                chips[position], status[position] = torch.from_numpy(array).to(device), code
            else:
                chips[position] = chipper(image, faces[row])
        yield rows, chips, status


def decode_batch(datas: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """(3, H, W) uint8 RGB images on ``device``, one call for the batch; when it fails, one by one, None
    for each file the decoder refuses."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision")
        try:
            return list(decode_jpeg(list(datas), mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass
        images = []
        for data in datas:
            try:
                images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                images.append(None)
        return images
