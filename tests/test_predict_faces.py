"""`classify predict --all-faces` on a real photo with several faces: real CelebA faces pasted at other
scales into one larger photo, a real sface store and head (skipped without ../shared/data/celeba)."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from classify import cli as classify_cli
from classify.model import GenderModel
from extract.cli import main as extract_main
from extract.faces import FaceDetector

CELEBA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "celeba"
pytestmark = pytest.mark.skipif(not (CELEBA / "img_align_celeba").is_dir(), reason="no ../shared/data/celeba")
SCALES_AND_PLACES = ((1.0, (40, 420)), (2.0, (560, 60)), (1.4, (220, 120)))  # pasted smallest first


def _male_labels() -> dict[str, int]:
    lines = (CELEBA / "list_attr_celeba.txt").read_text().split("\n")
    column = lines[1].split().index("Male") + 1
    return {parts[0]: int(parts[column] == "1") for parts in (line.split() for line in lines[2:]) if parts}


def _celeba_subset(root: Path, names: list[str], male: dict[str, int]) -> None:
    """A CelebA folder of these real aligned images: the first 60% train, then val, then test."""
    (root / "img_align_celeba").mkdir(parents=True)
    for name in names:
        (root / "img_align_celeba" / name).write_bytes((CELEBA / "img_align_celeba" / name).read_bytes())
    split = [0 if i < 0.6 * len(names) else 1 if i < 0.8 * len(names) else 2 for i in range(len(names))]
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {s}\r\n" for n, s in zip(names, split)))
    rows = "".join(f"{n} {1 if male[n] else -1}\r\n" for n in names)
    (root / "list_attr_celeba.txt").write_text(f"{len(names)}\r\nMale\r\n{rows}")


def _group_photo(path: Path, sources: list[Path]) -> list[np.ndarray]:
    """The source faces pasted into one 1100x760 photo; their expected boxes (x, y, w, h)."""
    photo = np.full((760, 1100, 3), 90, dtype=np.uint8)
    detector, boxes = FaceDetector(), []
    for source, (scale, (x, y)) in zip(sources, SCALES_AND_PLACES):
        image = cv2.imread(str(source))
        big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        photo[y:y + big.shape[0], x:x + big.shape[1]] = big
        box = detector.largest(image)[:4].astype(np.float64)
        boxes.append(np.r_[box[:2] * scale + (x, y), box[2:] * scale])
    cv2.imwrite(str(path), photo, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return boxes


def test_predict_all_faces_on_a_group_photo(tmp_path):
    male = _male_labels()
    names = sorted(male)
    chosen = [n for n in names if male[n]][:15] + [n for n in names if not male[n]][:15]
    chosen = [chosen[i // 2 + (i % 2) * 15] for i in range(30)]  # alternate, so every split has both
    root, store, heads = tmp_path / "celeba", tmp_path / "f.zarr", tmp_path / "heads"
    _celeba_subset(root, chosen, male)
    assert extract_main(["--dataset", "celeba", "--root", str(root), "--backbones", "sface", "--store", str(store),
                         "--workers", "0", "--no-progress"]) == 0
    assert classify_cli.main(["train", "--store", str(store), "--heads", "logreg", "--bootstrap", "20",
                              "--out", str(heads)]) == 0
    head = heads / "sface__logreg.npz"

    sources = [CELEBA / "img_align_celeba" / n for n in (names[-1], names[-2], names[-3])]  # not trained on
    photo, blank = tmp_path / "group.jpg", tmp_path / "blank.jpg"
    boxes = _group_photo(photo, sources)
    cv2.imwrite(str(blank), np.full((300, 400, 3), 90, dtype=np.uint8))

    faces = GenderModel.load(head).predict_images([str(photo), str(blank)], device="cpu", all_faces=True)
    assert [(Path(p.path).name, p.face, p.status) for p in faces] == [
        ("group.jpg", 0, "ok"), ("group.jpg", 1, "ok"), ("group.jpg", 2, "ok"), ("blank.jpg", None, "no face found")]
    by_area = [boxes[1], boxes[2], boxes[0]]  # largest first: scales 2.0, 1.4, 1.0
    for p, expected in zip(faces, by_area):
        assert np.abs(np.array(p.box) - expected).max() <= 0.1 * expected[2], (p.box, expected)
    # each face of the photo embeds as its own aligned image does (matched by nearest embedding)
    import extract

    rows = extract.embed_images([str(photo), *map(str, sources)], {"sface": {}}, all_faces=True, device="cpu")
    together, alone = (rows.embeddings["sface"][rows.image == 0],
                       rows.embeddings["sface"][rows.image > 0][[1, 2, 0]])  # sources in the photo's order
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cosine = unit(together) @ unit(alone).T
    assert (np.argmax(cosine, axis=1) == [0, 1, 2]).all() and cosine.diagonal().min() > 0.9, cosine.round(3)
    # without the flag: the largest face only, with its box
    largest = GenderModel.load(head).predict_images([str(photo)], device="cpu")
    assert len(largest) == 1 and largest[0].face == 0 and largest[0].box == faces[0].box

    csv_path = tmp_path / "faces.csv"
    assert classify_cli.main(["predict", "--head", str(head), str(photo), "--all-faces", "--device", "cpu",
                              "--out", str(csv_path)]) == 0
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["face"] for r in rows] == ["0", "1", "2"]
    assert [round(float(rows[1][k])) for k in ("box_x", "box_y", "box_w", "box_h")] == [round(v) for v in faces[1].box]
