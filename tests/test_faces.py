"""The face front end (extract/faces.py): same face geometry whatever the photo, aligned-CelebA
fallback, one detection per run, strict and bounded decoding, the in-the-wild CelebA reader."""
from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from extract import cli
from extract.faces import (CELEBA_ALIGNED_LANDMARKS, MAX_PIXELS, SOURCE_TEMPLATE, FaceDetector,
                           FaceLocator, FaceTemplate, ImageTooLarge, KNOWN_ALIGNMENTS, Unreadable, decode,
                           landmarks_of)
from features.datasets import load_dataset
from features.store import FACES, FeatureStore, Status

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CELEBA, WILD = DATA / "celeba", DATA / "celeba_wild"
needs_celeba = pytest.mark.skipif(not (CELEBA / "img_align_celeba").is_dir(), reason="no ../shared/data/celeba")
needs_wild = pytest.mark.skipif(not (WILD / "img_celeba").is_dir(), reason="no ../shared/data/celeba_wild")


def _aligned(name: str = "000002.jpg") -> Path:
    return CELEBA / "img_align_celeba" / name


@needs_celeba
def test_same_crop_for_an_aligned_face_pasted_into_a_larger_photo(tmp_path):
    """The face of a CelebA aligned image, scaled 1.7x and pasted at an offset into a 900x700 photo,
    gives landmarks within 2 px of the original's (mapped) and the same 112x112 chip."""
    image = cv2.imread(str(_aligned()))
    detector = FaceDetector()
    face = detector.largest(image)
    scale, offset = 1.7, np.array([412.0, 233.0])
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    photo = np.full((700, 900, 3), 90, dtype=np.uint8)
    y, x = int(offset[1]), int(offset[0])
    photo[y:y + big.shape[0], x:x + big.shape[1]] = big[:700 - y, :900 - x]
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), photo, [cv2.IMWRITE_JPEG_QUALITY, 97])
    found = detector.largest(decode(str(path)).image)
    expected = landmarks_of(face) * scale + offset
    assert np.abs(landmarks_of(found) - expected).max() / scale <= 2.0
    template = FaceTemplate(112)
    chip, chip_pasted = template.warp(image, landmarks_of(face)), template.warp(photo, landmarks_of(found))
    assert np.abs(chip.astype(int) - chip_pasted.astype(int)).mean() < 12  # same face, same place


@needs_celeba
def test_aligned_image_without_a_detection_falls_back_to_the_template():
    image = cv2.imread(str(_aligned()))
    blurred = cv2.resize(cv2.resize(image, (6, 7), interpolation=cv2.INTER_AREA), (178, 218),
                         interpolation=cv2.INTER_NEAREST)  # pixelated: no face YuNet can find
    locator = FaceLocator(FaceDetector(), KNOWN_ALIGNMENTS["celeba_aligned"])
    assert not len(locator.detector.faces(blurred))
    row = locator(blurred)
    assert row[15] == SOURCE_TEMPLATE
    np.testing.assert_allclose(landmarks_of(row), CELEBA_ALIGNED_LANDMARKS, atol=1e-3)
    detected = locator(image)  # a real detection is kept, and agrees with the template
    assert detected[15] != SOURCE_TEMPLATE
    assert np.abs(landmarks_of(detected) - CELEBA_ALIGNED_LANDMARKS).max() < 12


@needs_celeba
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.7, 0.9, 0.99])
def test_truncated_jpeg_is_unreadable(tmp_path, fraction):
    data = _aligned().read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(Unreadable, match="end-of-image|cannot decode"):
        decode(str(path))
    rows = __import__("extract.images", fromlist=["ImageRows"]).ImageRows(
        [str(path)], lambda image: np.zeros(1, np.float32), input_shape=(1,))
    assert rows[0][2] == Status.UNREADABLE


@needs_celeba
def test_jpeg_with_damaged_data_inside_is_unreadable_with_libjpegs_warning(tmp_path, capfd):
    # Bytes inserted in the middle of the scan: libjpeg only warns ("Corrupt JPEG data") and OpenCV
    # returns an image with garbage in its lower half; the warning must make the row UNREADABLE.
    data = _aligned().read_bytes()
    middle = data.rfind(b"\xff\xda") + (len(data) - data.rfind(b"\xff\xda")) // 2
    path = tmp_path / "damaged.jpg"
    path.write_bytes(data[:middle] + bytes(range(1, 200)) + data[middle:])
    assert cv2.imread(str(path)) is not None  # what the reader used to accept
    with pytest.raises(Unreadable, match="damaged JPEG data .*Corrupt JPEG data"):
        decode(str(path))
    assert decode(str(_aligned())).image.shape == (218, 178, 3)  # an intact file: no warning left over
    capfd.readouterr()


def _scratch_inode(_=None) -> int:
    from extract.decode import warnings_file

    return os.fstat(warnings_file().fileno()).st_ino


def test_forked_reader_workers_do_not_share_the_parents_warnings_file():
    # Reader workers are forked after the parent may have decoded: sharing its scratch file (and offset)
    # let one worker read another's libjpeg warning and mark an intact image UNREADABLE.
    parent = _scratch_inode()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        children = pool.map(_scratch_inode, range(2))
    assert parent not in children
    assert _scratch_inode() == parent  # the parent keeps its own


@needs_celeba
def test_intact_jpeg_decodes_as_cv2_does():
    decoded = decode(str(_aligned()))
    np.testing.assert_array_equal(decoded.image, cv2.imread(str(_aligned())))
    assert decoded.scale == 1.0


def _huge_jpeg_header(tmp_path, width: int, height: int) -> Path:
    """A real small JPEG whose SOF0 header claims width x height (checked before any decoding)."""
    ok, data = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    data = bytearray(data.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path = tmp_path / "huge.jpg"
    path.write_bytes(bytes(data))
    return path


def test_image_over_the_pixel_limit_is_too_large(tmp_path):
    path = _huge_jpeg_header(tmp_path, 60000, 60000)
    assert 60000 * 60000 > MAX_PIXELS
    with pytest.raises(ImageTooLarge):
        decode(str(path))
    from extract.images import ImageRows
    assert ImageRows([str(path)], lambda image: np.zeros(1, np.float32), input_shape=(1,))[0][2] == Status.TOO_LARGE


PEAK_SCRIPT = """
import resource, sys, cv2, numpy as np
from extract.faces import FaceDetector, decode
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after importing extract (torch: ~0.7 GB)
decoded = decode(sys.argv[1])
faces = FaceDetector().faces(decoded.image)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(decoded.image.shape[1], decoded.scale, len(faces), after - before, after)
"""


def test_a_100_megapixel_jpeg_decodes_reduced_under_1_gb(tmp_path):
    path = tmp_path / "big.jpg"
    # 10000x10000, made from a small noise tile (cheap to encode, not compressible to nothing)
    tile = np.random.default_rng(0).integers(0, 256, (250, 250, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), np.tile(tile, (40, 40, 1)), [cv2.IMWRITE_JPEG_QUALITY, 50])
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], cwd=root, capture_output=True,
                         text=True, check=True).stdout.split()
    width, scale, added_kb, peak_kb = int(out[0]), float(out[1]), int(out[3]), int(out[4])
    assert scale == 0.25 and width == 2500
    # decoding at full size alone would add 300 MB, YuNet at full size ~9 GB (issue 9)
    # (the process peak also holds the torch import, 0.7-0.9 GB, whatever the image)
    assert added_kb < 250_000, f"decode + detect added {added_kb / 1e6:.2f} GB (peak {peak_kb / 1e6:.2f} GB)"


@needs_wild
def test_celeba_reader_accepts_img_celeba():
    dataset = load_dataset("celeba", str(WILD))
    assert len(dataset) == 1000 and dataset.images == "img_celeba"
    assert dataset.alignment == {"kind": "wild"}
    assert all("/img_celeba/" in str(path) for path in dataset.paths[:5])
    aligned = load_dataset("celeba", str(CELEBA))
    assert aligned.images == "img_align_celeba" and aligned.alignment["kind"] == "celeba_aligned"


@needs_celeba
def test_backbones_of_a_run_share_one_detection(tmp_path):
    """sface and dlib_resnet drop exactly the rows the detection pass dropped, and the store records
    the detection (faces entry) and the alignment kind."""
    images = tmp_path / "img_align_celeba"
    images.mkdir()
    names = sorted(p.name for p in (CELEBA / "img_align_celeba").glob("*.jpg"))[:6]
    for name in names:
        (images / name).write_bytes((CELEBA / "img_align_celeba" / name).read_bytes())
    (images / names[1]).write_bytes((CELEBA / "img_align_celeba" / names[1]).read_bytes()[:3000])  # truncated
    cv2.imwrite(str(images / names[2]), np.full((218, 178, 3), 128, np.uint8))  # no face: template
    lines = "\r\n".join(f"{name} {0}" for name in names)
    (tmp_path / "list_eval_partition.txt").write_text(lines + "\r\n")
    male = "\r\n".join(f"{name} {1 if i % 2 else -1}" for i, name in enumerate(names))
    (tmp_path / "list_attr_celeba.txt").write_text(f"{len(names)}\r\nMale\r\n{male}\r\n")
    store_path = tmp_path / "f.zarr"
    code = cli.main(["--dataset", "celeba", "--root", str(tmp_path), "--backbones", "sface", "dlib_resnet",
                     "--store", str(store_path), "--no-progress", "--workers", "0"])
    assert code == 0
    store = FeatureStore.open(store_path)
    assert store.backbones() == ["dlib_resnet", "sface"]
    faces, face_status = store.faces()
    assert face_status.tolist() == [1, 2, 1, 1, 1, 1]
    assert faces[2, 15] == SOURCE_TEMPLATE  # the blank aligned image took the template, not NO_FACE
    np.testing.assert_array_equal(store.status("sface"), face_status)
    np.testing.assert_array_equal(store.status("dlib_resnet"), face_status)
    assert store.dataset_info["alignment"]["kind"] == "celeba_aligned"
    assert store.backbone_info(FACES)["metadata"]["role"] == "faces"
    check = store.backbone_info(FACES)["metadata"]["template_check"]  # the aligned images vs their template
    assert (check["valid_rows"], check["template_fallback_rows"], check["detected_rows"],
            check["checked_sample"]) == (5, 1, 4, 4)
    assert 0 < check["landmark_distance_px"]["median"] <= check["landmark_distance_px"]["p95"] < 8
    assert store.backbone_info("sface")["metadata"]["normalisation"] == "l2"


@needs_celeba
def test_tta_flip_averages_the_face_and_its_mirror():
    from extract.backbones import load_backbone

    plain, flipped = load_backbone("sface"), load_backbone("sface", tta="flip")
    assert plain.metadata["tta"] == "none" and flipped.metadata["tta"] == "flip"
    import torch
    chip = torch.from_numpy(plain.preprocessor(cv2.imread(str(_aligned())))[None])
    expected = (plain.embed(chip) + plain.embed(chip.flip(2))) / 2
    torch.testing.assert_close(flipped.embed(chip), expected)
    with pytest.raises(ValueError, match="tta|test-time"):
        load_backbone("sface", tta="rotate")


def test_template_check_counts_fallbacks_and_measures_detections_against_the_template():
    """Detections shifted by known offsets from the template (one image at twice the release's size),
    one fallback row, one unreadable row: the counts and distances the faces entry records."""
    from extract.faces import SOURCE_DETECTED, face_row, template_check, template_row

    alignment = KNOWN_ALIGNMENTS["celeba_aligned"]
    size, known = alignment.size, np.array(alignment.landmarks)
    rows, sizes = [], {}
    for row, (shift, scale) in enumerate([(1.0, 1), (2.0, 1), (3.0, 2), (4.0, 1)]):
        image = (size[0] * scale, size[1] * scale)
        points = known * scale + [shift * 0.6, shift * 0.8]  # a shift of `shift` pixels
        rows.append(face_row((0, 0, 10, 10), points, 0.9, SOURCE_DETECTED))
        sizes[row] = image
    rows.append(template_row(size, known, size))
    rows.append(np.full(16, np.nan, np.float32))
    status = np.array([1, 1, 1, 1, 1, Status.UNREADABLE], np.uint8)
    check = template_check(np.stack(rows), status, alignment, sizes)
    assert (check["valid_rows"], check["template_fallback_rows"], check["detected_rows"]) == (5, 1, 4)
    assert check["landmark_distance_px"]["median"] == pytest.approx(2.5, abs=1e-3)
    assert check["landmark_distance_px"]["p95"] == pytest.approx(np.percentile([1, 2, 3, 4], 95), abs=1e-3)
    eye = np.linalg.norm(known[1] - known[0])
    assert check["landmark_distance_eye"]["median"] == pytest.approx(np.median([1, 2, 1.5, 4]) / eye, abs=1e-3)


def test_the_face_row_fields_are_named_in_one_place():
    """extract.face_row names the 16 columns; nothing else in extract reads a face row by raw index."""
    from extract import face_row as fr

    row = fr.face_row((10, 20, 30, 40), np.arange(10).reshape(5, 2), 0.9, fr.SOURCE_DETECTED)
    assert row.shape == (fr.FACE_DIM,) and row[fr.BOX].tolist() == [10, 20, 30, 40]
    assert fr.landmarks_of(row).tolist() == np.arange(10).reshape(5, 2).tolist()
    half = fr.scaled(row, 0.5)
    assert half[fr.BOX].tolist() == [5, 10, 15, 20] and half[fr.SCORE] == row[fr.SCORE]
    assert half[fr.SOURCE] == fr.SOURCE_DETECTED
    package = Path(fr.__file__).parent
    raw = re.compile(r"\[:, *1[45]\]|\[(:, *)?4:14\]|\[:14\]")
    offenders = [str(path) for path in package.rglob("*.py") if path.name != "face_row.py"
                 and raw.search(path.read_text())]
    assert offenders == []
