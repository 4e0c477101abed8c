"""The device front end (`extract.device_front`, ``--decode device``) run on device="cpu": its rows against
the CPU path's on real CelebA faces (aligned images and in-the-wild photos), the same status for files
the strict CPU decoder refuses or does not take from the batch decoder, and the CLI's refusal for a
backbone without a device front end.

Tolerance: torchvision's libjpeg-turbo decode is pixel-identical to OpenCV's here; the warp is grid_sample
against cv2.warpAffine's 5-bit fixed-point bilinear (about 1 grey level), and a big face's pre-shrink is
``mode="area"`` against INTER_AREA. Measured on these 24 images (`test_rows_equal_the_cpu_path` prints
them with -s): see PERFORMANCE.md. The bar is the issue's, cosine >= 0.999, on every valid row.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from extract.backbones import load_backbone
from extract.backbones.dlib_torch import ENGINE_VARIABLE as DLIB_ENGINE
from extract.backbones.onnx_nets import ENGINE_VARIABLE as SFACE_ENGINE
from extract.device_front import decodes_on_device, device_decodable, exif_rotated
from extract.faces import Alignment, FaceDetector, FaceLocator, decode
from extract.pipeline import extract_units
from features.store import Status

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ALIGNED, WILD = DATA / "celeba" / "img_align_celeba", DATA / "celeba_wild" / "img_celeba"
MIN_COSINE = 0.999
BACKBONES = {"sface": {SFACE_ENGINE: "torch"}, "dlib_resnet": {DLIB_ENGINE: "torch"}, "efficientnet_lite0": {}}

pytestmark = pytest.mark.skipif(not (ALIGNED.is_dir() and WILD.is_dir()), reason="no CelebA images")


class MemoryWriter:
    """Stands in for a store's `BackboneWriter`: one unit holding every row."""

    def __init__(self, n_rows: int, dim: int):
        self.n_rows, self.dim, self.rows = n_rows, dim, None

    def unit_rows(self, unit: int) -> tuple[int, int]:
        return 0, self.n_rows

    def write_unit(self, unit: int, embeddings: np.ndarray, status: np.ndarray) -> None:
        self.rows = (embeddings.copy(), status.copy())


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(paths, face rows, face status): 16 aligned CelebA images, 8 wild photos, then a truncated JPEG, a
    damaged one (a scan cut short, then the end marker), a PNG and an EXIF-rotated JPEG. The last four
    carry their source's face row with status OK (damaged after detection) so the front end must check."""
    folder = tmp_path_factory.mktemp("device_front")
    sources = sorted(ALIGNED.glob("*.jpg"))[:16] + sorted(WILD.glob("*.jpg"))[:8]
    paths = [str(p) for p in sources]
    data = sources[0].read_bytes()
    odd = {"truncated.jpg": data[:len(data) // 2], "damaged.jpg": data[:len(data) // 2] + b"\xff\xd9",
           "rotated.jpg": with_exif_orientation(data, 6)}
    for name, content in odd.items():
        (folder / name).write_bytes(content)
    cv2.imwrite(str(folder / "face.png"), cv2.imread(paths[1]))
    shutil.copy(paths[2], folder / "copy.jpg")
    paths += [str(folder / n) for n in ("truncated.jpg", "damaged.jpg", "face.png", "rotated.jpg", "copy.jpg")]
    locator = FaceLocator(FaceDetector(), Alignment())
    faces = np.stack([locator(decode(p).image) for p in paths[:24]])
    faces = np.concatenate([faces, faces[[0, 0, 1, 0, 2]]])
    return paths, faces, np.full(len(paths), Status.OK, dtype=np.uint8)


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an APP1 EXIF segment holding only an orientation tag."""
    tiff = b"II*\x00\x08\x00\x00\x00" + b"\x01\x00" + b"\x12\x01\x03\x00\x01\x00\x00\x00" + \
        orientation.to_bytes(2, "little") + b"\x00\x00" + b"\x00\x00\x00\x00"
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def extract_rows(backbone, images, *, on_device: bool, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    paths, faces, status = images
    writer = MemoryWriter(len(paths), backbone.dim)
    extract_units(writer, backbone, paths, [0], batch_size=8, workers=workers, progress=False,
                  faces=(faces, status), decode_on_device=on_device)
    return writer.rows


def load(name: str, monkeypatch):
    for variable, value in BACKBONES[name].items():
        monkeypatch.setenv(variable, value)
    backbone = load_backbone(name, device=torch.device("cpu"))
    if backbone.metadata["weights"] == "random":
        pytest.skip(f"{name}: no weights here")
    return backbone


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_rows_equal_the_cpu_path(name, images, monkeypatch):
    backbone = load(name, monkeypatch)
    cpu, cpu_status = extract_rows(backbone, images, on_device=False)
    device, device_status = extract_rows(backbone, images, on_device=True)
    assert device_status.tolist() == cpu_status.tolist()
    ok = cpu_status == Status.OK
    assert ok.sum() == len(ok) - 2  # the truncated and the damaged file are UNREADABLE on both paths
    a, b = cpu[ok], device[ok]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"\n{name}: {ok.sum()} rows, max abs {np.abs(a - b).max():.2e} (embedding norm "
          f"{np.linalg.norm(a, axis=1).mean():.2f}), min cosine {cosine.min():.6f}, "
          f"aligned {cosine[:16].min():.6f}, wild {cosine[16:24].min():.6f}")
    assert cosine.min() >= MIN_COSINE
    assert np.isnan(device[~ok]).all()


def test_reader_workers_give_the_same_rows(images, monkeypatch):
    backbone = load("dlib_resnet", monkeypatch)
    alone, alone_status = extract_rows(backbone, images, on_device=True)
    workers, workers_status = extract_rows(backbone, images, on_device=True, workers=2)
    assert workers_status.tolist() == alone_status.tolist()
    np.testing.assert_array_equal(workers, alone)


def test_only_jpegs_the_strict_decoder_takes_whole_go_to_the_device(images):
    paths = images[0]
    taken = {Path(p).name: device_decodable(Path(p).read_bytes()) for p in paths}
    assert [taken[n] for n in ("truncated.jpg", "damaged.jpg", "face.png", "rotated.jpg")] == [False] * 4
    assert taken["copy.jpg"] and all(device_decodable(Path(p).read_bytes()) for p in paths[:24])


def test_exif_orientation():
    jpeg = (ALIGNED / "000002.jpg").read_bytes() if (ALIGNED / "000002.jpg").exists() else b"\xff\xd8"
    assert not exif_rotated(jpeg)
    assert not exif_rotated(with_exif_orientation(jpeg, 1))
    assert exif_rotated(with_exif_orientation(jpeg, 3))


def test_decode_flag_choices(monkeypatch):
    sface = load("sface", monkeypatch)
    assert decodes_on_device("device", sface) and not decodes_on_device("cpu", sface)
    assert not decodes_on_device("auto", sface)  # auto: device on CUDA only


def test_decode_device_on_a_backbone_without_a_device_front_end(tmp_path, monkeypatch, capsys):
    from extract.cli import main

    monkeypatch.setenv(SFACE_ENGINE, "opencv")  # OpenCV's DNN: no torch model to hand a device batch to
    root = tmp_path / "faces"
    for folder, path in zip(("male", "female"), sorted(ALIGNED.glob("*.jpg"))[:2]):
        (root / folder).mkdir(parents=True)
        shutil.copy(path, root / folder / path.name)
    code = main(["--dataset", "folder", "--root", str(root), "--backbones", "sface", "--store",
                 str(tmp_path / "f.zarr"), "--decode", "device", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--decode device: sface has no device front end" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "f.zarr").exists()  # refused before the store was created
