"""Issue 19, the input side: files that are not regular files, decompression bombs, crafted headers,
hostile attribute names, a full disk and huge ids. Each reproduction hung, tracebacked, went past 1.5 GB
or silently did nonsense before; extraction runs at batch size 1 as the issue measured it.
"""
from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from extract.cli import main
from extract.decode import ImageTooLarge, Unreadable, decode
from features.dataset import DatasetError
from features.datasets import load_dataset
from features.store import FeatureStore, Status
from tests.fixtures import make_celeba, make_folder_dataset, make_utkface
from tests.hostile_images import jpeg_with_stray_byte, write_bombs

REPO = Path(__file__).resolve().parents[1]
PEAK_RSS_LIMIT_MB = 1536
pytestmark = pytest.mark.usefixtures("tiny_backbones")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _extract(args: list[str], *, seconds: int = 90) -> subprocess.CompletedProcess:
    """`python -m extract ARGS` under `timeout` (a hang is exit 124, not a stuck test run), printing
    its peak RSS in MB on the last line of stdout."""
    # VmHWM: this process's own peak (ru_maxrss can carry a parent's peak across exec)
    code = ("import sys\nfrom extract.cli import main\nrc = main(sys.argv[1:])\n"
            "print(int([line for line in open('/proc/self/status') if line.startswith('VmHWM')][0].split()[1]) // 1024)"
            "\nsys.exit(rc)")
    return subprocess.run(["timeout", str(seconds), sys.executable, "-c", code, *args, "--plugin", "tests.extract_tiny",
                           "--backbones", "tiny_test", "--batch-size", "1", "--workers", "0", "--no-progress"],
                          cwd=REPO, env=_env(), capture_output=True, text=True)


def _status_of(store: Path) -> dict[str, int]:
    """File name -> tiny_test's status of its row."""
    import zarr

    status = zarr.open_group(str(store), mode="r")["backbones/tiny_test/status"][:]
    return {str(image_id).rsplit("/", 1)[-1]: int(code) for image_id, code in zip(FeatureStore.open(store).ids, status)}


# -- only regular files are read ---------------------------------------------------------------------------
def _fifo_dataset(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A dataset of `kind` with one image replaced by a FIFO; (root, the FIFO's file name)."""
    if kind == "folder":
        root = make_folder_dataset(tmp_path, n_male=2, n_female=2, extensions=(".jpg",))
        fifo = root / "female" / "x.jpg"
    elif kind == "celeba":
        root = make_celeba(tmp_path, n=6)
        fifo = root / "img_align_celeba" / "000002.jpg"
        fifo.unlink()
    else:
        root = make_utkface(tmp_path, n=6)
        fifo = sorted((root / "UTKFace").iterdir())[1]
        fifo.unlink()
    os.mkfifo(fifo)
    return root, fifo.name


@pytest.mark.parametrize("kind", ["folder", "celeba", "utkface"])
def test_a_fifo_named_like_an_image_is_unreadable_not_a_hang(tmp_path, kind):
    root, fifo = _fifo_dataset(tmp_path, kind)
    store = tmp_path / "s.zarr"
    result = _extract(["--dataset", kind, "--root", str(root), "--store", str(store)])
    assert result.returncode == 0, result.stderr  # 124 before: the reader blocked in read_bytes()
    statuses = _status_of(store)
    assert statuses[fifo] == Status.UNREADABLE
    assert sum(code == Status.OK for code in statuses.values()) == len(statuses) - 1


def test_predicts_embedding_of_a_fifo_is_unreadable_not_a_hang(tmp_path):
    image = make_folder_dataset(tmp_path, n_male=1, n_female=1, extensions=(".jpg",)) / "male" / "male_000.jpg"
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    code = ("import sys, tests.extract_tiny\nfrom extract.embed import embed_paths\n"
            "print(embed_paths(sys.argv[1:], 'tiny_test', workers=0)[1].tolist())")
    result = subprocess.run(["timeout", "60", sys.executable, "-c", code, str(fifo), str(image)], cwd=REPO,
                            env=_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == str([int(Status.UNREADABLE), int(Status.OK)])


def test_a_fifo_as_a_label_file_is_one_dataset_error(tmp_path):
    fifo = tmp_path / "list_attr_celeba.txt"
    os.mkfifo(fifo)
    code = ("import sys\nfrom features.datasets.celeba_labels import read_attribute_file\n"
            "read_attribute_file(sys.argv[1])")
    result = subprocess.run(["timeout", "60", sys.executable, "-c", code, str(fifo)], cwd=REPO, env=_env(),
                            capture_output=True, text=True)
    assert result.returncode == 1 and "DatasetError" in result.stderr and "not a regular file" in result.stderr


def test_a_device_or_folder_is_unreadable_at_once(tmp_path):
    for path in ("/dev/null", tmp_path):  # not /dev/zero: read whole, it would fill the memory
        with pytest.raises(Unreadable, match="not a regular file"):
            decode(path)


# -- sizes from headers, before decoding -------------------------------------------------------------------
FORMATS = [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("GIF", {}), ("BMP", {}),
           ("TIFF", {"compression": "tiff_adobe_deflate"}), ("TIFF", {}), ("WEBP", {}),
           ("WEBP", {"lossless": True}), ("PPM", {})]


@pytest.mark.parametrize(("kind", "options"), FORMATS, ids=[f"{k}{o}" for k, o in FORMATS])
def test_every_format_the_decoder_takes_has_its_size_read_from_the_header(tmp_path, kind, options):
    from PIL import Image

    from extract.decode import header_size

    buffer = io.BytesIO()
    Image.new("RGB", (41, 30), (10, 200, 30)).save(buffer, kind, **options)
    path = tmp_path / f"image.{kind.lower()}"
    path.write_bytes(buffer.getvalue())
    assert header_size(buffer.getvalue())[1:] == (41, 30)
    assert decode(path).image.shape == (30, 41, 3)  # and it still decodes


@pytest.mark.parametrize("data", [b"\x59\xa6\x6a\x95" + bytes(60), b"#?RADIANCE\n" + bytes(60), b"\xff\xd8\xff",
                                  b"\x89PNG\r\n\x1a\n" + bytes(4), b"GIF89a\x10\x00", jpeg_with_stray_byte()],
                         ids=["sun-raster", "radiance", "bare-soi", "short-png", "short-gif", "stray-byte-jpeg"])
def test_a_header_that_cannot_be_parsed_is_unreadable_never_decoded(tmp_path, data):
    path = tmp_path / "x.img"
    path.write_bytes(data)
    with pytest.raises(Unreadable):
        decode(path)


def test_opencvs_own_pixel_limit_stands_behind_the_header_check(tmp_path):
    """Set before OpenCV loads (extract/__init__.py) to MAX_PIXELS; what it refuses is Unreadable."""
    import cv2
    import numpy as np

    path = tmp_path / "small.png"
    cv2.imwrite(str(path), np.zeros((50, 50, 3), np.uint8))
    code = ("import os, sys\nimport extract.faces\nfrom extract.decode import MAX_PIXELS, Unreadable, decode\n"
            "print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'] == str(MAX_PIXELS))\n"
            "try:\n    decode(sys.argv[1])\nexcept Unreadable as error:\n    print(error)")
    results = [subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True,
                              env={**_env(), **limit}).stdout.split("\n")
               for limit in ({}, {"OPENCV_IO_MAX_IMAGE_PIXELS": "100"})]
    assert results[0][:2] == ["True", ""]
    assert results[1][0] == "False" and "OpenCV refuses it" in results[1][1]


def test_bombs_are_refused_from_their_headers_under_1_5_gb(tmp_path):
    """The issue's bombs: 2.4 GB (TIFF, RLE BMP), 3.2 GB (GIF), 3.7 GB (JPEG with a stray byte) before."""
    root = make_folder_dataset(tmp_path, n_male=2, n_female=2, extensions=(".jpg",))
    bombs = write_bombs(root / "female")
    store = tmp_path / "s.zarr"
    result = _extract(["--dataset", "folder", "--root", str(root), "--store", str(store)], seconds=240)
    assert result.returncode == 0, result.stderr
    statuses = _status_of(store)
    expected = {"bomb.tif": Status.TOO_LARGE, "bomb_gif.png": Status.TOO_LARGE, "bomb_rle.bmp": Status.TOO_LARGE,
                "bomb_stray.jpg": Status.UNREADABLE}
    assert {bomb.name: statuses[bomb.name] for bomb in bombs} == expected
    assert int(result.stdout.split()[-1]) < PEAK_RSS_LIMIT_MB


def test_html_report_thumbnails_go_through_the_checked_decoder(tmp_path):
    from classify.html_report import thumbnail_data_uri

    bomb = write_bombs(tmp_path)[0]
    image = make_folder_dataset(tmp_path, n_male=1, n_female=1, extensions=(".jpg",)) / "male" / "male_000.jpg"
    assert thumbnail_data_uri(bomb) is None and thumbnail_data_uri(tmp_path / "missing.jpg") is None
    assert thumbnail_data_uri(image).startswith("data:image/jpeg;base64,")
    with pytest.raises(ImageTooLarge):
        decode(bomb)


# -- attribute names -----------------------------------------------------------------------------------------
BAD_NAMES = ["$^$", "a/b", "zarr.json", "../../x", "=1+1", "x" * 65, "é"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_an_attribute_name_outside_the_whitelist_is_one_dataset_error(tmp_path, name):
    root = make_celeba(tmp_path, n=6, names=("Male", name, "Smiling"))
    with pytest.raises(DatasetError, match="attribute name") as error:
        load_dataset("celeba", root)
    assert "\n" not in str(error.value) and len(str(error.value)) < 400


def test_a_bad_attribute_name_stops_extract_before_a_store_is_made(tmp_path, capsys):
    root = make_celeba(tmp_path, n=6, names=("Male", "zarr.json"))
    store = tmp_path / "s.zarr"
    args = ["--dataset", "celeba", "--root", str(root), "--backbones", "tiny_test", "--store", str(store),
            "--plugin", "tests.extract_tiny", "--workers", "0", "--no-progress"]
    assert main(args) == 2
    assert not store.exists() and capsys.readouterr().err.count("\n") == 1


def test_good_attribute_names_pass(tmp_path):
    names = ("Male", "5_o_Clock_Shadow", "Wearing-Hat", "x" * 64)
    attributes = load_dataset("celeba", make_celeba(tmp_path, n=6, names=names)).attributes
    assert set(names) <= set(attributes)


# -- a full disk, long ids ---------------------------------------------------------------------------------
def test_a_full_disk_is_one_line_and_the_rerun_recovers(tmp_path, monkeypatch, capsys):
    from features.store import BackboneWriter

    root = make_folder_dataset(tmp_path, n_male=3, n_female=3, extensions=(".jpg",))
    store = tmp_path / "s.zarr"
    args = ["--dataset", "folder", "--root", str(root), "--backbones", "tiny_test", "--store", str(store),
            "--plugin", "tests.extract_tiny", "--workers", "0", "--no-progress", "--unit-rows", "2"]
    write_unit = BackboneWriter.write_unit
    calls = []

    def full_after_one(self, *arguments, **options):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(store / "backbones"))
        return write_unit(self, *arguments, **options)

    monkeypatch.setattr(BackboneWriter, "write_unit", full_after_one)
    assert main(args) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left" in errors[0] and "Traceback" not in err
    monkeypatch.setattr(BackboneWriter, "write_unit", write_unit)
    assert main(args) == 0
    assert FeatureStore.open(store).is_complete("tiny_test")


def test_error_messages_cut_long_ids_and_escape_newlines(capsys):
    name = "x" * 100_000 + "\nsecond line"
    assert main(["--dataset", "folder", "--root", "r", "--backbones", name, "--store", "s.zarr"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 2200 and "more characters" in err
