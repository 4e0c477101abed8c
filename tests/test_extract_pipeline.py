"""The extraction loop's pieces alone (reader, writer sink, batching) and together, in-process."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from extract import embed_paths
from extract.backbones import load_backbone
from extract.images import ImageRows, collate_rows, unit_batches
from extract.pipeline import BackgroundSink, UnitSink, extract_units
from features.dataset import Dataset
from features.store import FeatureStore, Status
from tests.fixtures import synthetic_table, write_face

OK, UNREADABLE, NO_FACE = Status.OK, Status.UNREADABLE, Status.NO_FACE
pytestmark = pytest.mark.usefixtures("tiny_backbones")


def make_images(folder: Path, n: int) -> tuple[list[str], np.ndarray]:
    """n small images where row 2 is truncated, row 5 garbage, row 7 missing, row 9 black (no face).

    Returns the paths and the status each row must get.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = [write_face(folder / f"{i:03d}.jpg", size=(24, 30), seed=i) for i in range(n)]
    expected = np.full(n, OK, dtype=np.uint8)
    if n > 2:
        paths[2].write_bytes(paths[2].read_bytes()[:300])
        expected[2] = UNREADABLE
    if n > 5:
        paths[5].write_bytes(b"not an image at all" * 20)
        expected[5] = UNREADABLE
    if n > 7:
        paths[7].unlink()
        expected[7] = UNREADABLE
    if n > 9:
        import cv2
        cv2.imwrite(str(paths[9]), np.zeros((30, 24, 3), np.uint8))
        expected[9] = NO_FACE
    return [str(p) for p in paths], expected


def make_dataset(paths: list[str], root: Path) -> Dataset:
    return synthetic_table(len(paths), name="tiny", root=str(root), ids=[Path(p).name for p in paths],
                           paths=paths, gender=np.arange(len(paths)) % 2)


class RecordingWriter:
    """Stands in for `BackboneWriter`: records write_unit calls."""

    def __init__(self, n_rows: int, unit_rows: int, dim: int = 2):
        self.n_rows, self.rows_per_unit, self.dim = n_rows, unit_rows, dim
        self.n_units = -(-n_rows // unit_rows)
        self.calls: list[tuple[int, np.ndarray, np.ndarray]] = []

    def unit_rows(self, unit: int) -> tuple[int, int]:
        return unit * self.rows_per_unit, min((unit + 1) * self.rows_per_unit, self.n_rows)

    def write_unit(self, unit, embeddings, status) -> None:
        self.calls.append((unit, embeddings.copy(), status.copy()))


class FailingWriter(RecordingWriter):
    def write_unit(self, unit, embeddings, status) -> None:
        raise OSError(f"disk full writing unit {unit}")


def test_background_sink_writes_in_order_and_hands_errors_back():
    writer = RecordingWriter(n_rows=4, unit_rows=2)
    sink = BackgroundSink(UnitSink(writer, [0, 1]))
    sink.add(np.array([0, 1]), np.ones((2, 2)), np.full(2, OK, np.uint8))
    sink.add(np.array([2, 3]), np.zeros((2, 2)), np.full(2, OK, np.uint8))
    sink.close()
    assert [unit for unit, _, _ in writer.calls] == [0, 1] and sink.written == [0, 1]
    failing = BackgroundSink(UnitSink(FailingWriter(n_rows=2, unit_rows=2), [0]))
    failing.add(np.array([0, 1]), np.ones((2, 2)), np.full(2, OK, np.uint8))
    with pytest.raises(OSError, match="disk full writing unit 0"):
        failing.close()


def test_unit_batches_follow_units_and_never_cross_them():
    assert unit_batches([(0, 5), (10, 13)], 2) == [[0, 1], [2, 3], [4], [10, 11], [12]]
    assert unit_batches([], 4) == []
    with pytest.raises(ValueError, match="batch size"):
        unit_batches([(0, 2)], 0)


def test_sink_writes_each_unit_once_complete_whatever_the_arrival_order():
    writer = RecordingWriter(n_rows=10, unit_rows=4)
    sink = UnitSink(writer, [0, 2])  # unit 1 (rows 4-7) is done already: not ours
    rows = np.array([9, 0, 3, 8, 1, 2])
    embeddings = np.stack([rows, -rows], axis=1).astype(np.float32)
    status = np.where(rows == 3, UNREADABLE, OK).astype(np.uint8)
    assert sink.add(rows[:3], embeddings[:3], status[:3]) == []
    assert sink.add(rows[3:5], embeddings[3:5], status[3:5]) == [2]  # rows 8, 9 complete unit 2
    assert writer.calls[0][0] == 2 and writer.calls[0][1][:, 0].tolist() == [8, 9]
    with pytest.raises(RuntimeError, match="rows never embedded"):
        sink.check_complete()
    assert sink.add(rows[5:], embeddings[5:], status[5:]) == [0]
    unit, written, written_status = writer.calls[1]
    assert unit == 0 and written[:, 0].tolist() == [0, 1, 2, 3]
    assert written_status.tolist() == [OK, OK, OK, UNREADABLE]
    sink.check_complete()
    with pytest.raises(RuntimeError, match=r"units \[0\] were already written; rows \[0\] arrived after"):
        sink.add(np.array([0]), embeddings[:1], status[:1])


@pytest.mark.parametrize("row", [-2, 5, 10, 99])  # before unit 0, in unit 1 (not ours), past the end
def test_sink_refuses_rows_outside_its_units(row):
    writer = RecordingWriter(n_rows=10, unit_rows=4)
    sink = UnitSink(writer, [0, 2])
    with pytest.raises(RuntimeError, match=rf"rows \[{row}\] lie outside the units being embedded \(\[0, 2\]\)"):
        sink.add(np.array([row]), np.zeros((1, 2), np.float32), np.array([OK], np.uint8))
    assert writer.calls == []


def test_sink_refuses_a_row_twice():
    sink = UnitSink(RecordingWriter(n_rows=4, unit_rows=4), [0])
    sink.add(np.array([1]), np.zeros((1, 2), np.float32), np.array([OK], np.uint8))
    with pytest.raises(RuntimeError, match="arrived twice"):
        sink.add(np.array([1]), np.zeros((1, 2), np.float32), np.array([OK], np.uint8))


def test_reader_statuses_and_placeholders(tmp_path):
    paths, expected = make_images(tmp_path / "img", 10)
    backbone = load_backbone("tiny_test")
    reader = ImageRows(paths, backbone.preprocessor, input_shape=backbone.input_shape)
    items = [reader[row] for row in range(len(paths))]
    assert [status for _, _, status in items] == expected.tolist()
    assert [row for row, _, _ in items] == list(range(10))
    for _, array, status in items:
        assert array.shape == (3, 16, 16) and array.dtype == np.float32
        assert (array == 0).all() == (status != OK)
    rows, batch, status = collate_rows(items[:4])
    assert rows.tolist() == [0, 1, 2, 3] and tuple(batch.shape) == (4, 3, 16, 16)
    assert status.tolist() == expected[:4].tolist()


def test_reader_rejects_a_preprocessor_of_the_wrong_shape(tmp_path):
    paths, _ = make_images(tmp_path / "img", 1)
    reader = ImageRows(paths, lambda image: np.zeros((3, 8, 8), np.float32), input_shape=(3, 16, 16))
    with pytest.raises(ValueError, match=r"expected float32 \(3, 16, 16\)"):
        reader[0]


@pytest.mark.parametrize("workers", [0, 2])
def test_extract_units_fills_the_store(tmp_path, workers):
    paths, expected = make_images(tmp_path / "img", 11)
    store = FeatureStore.create(tmp_path / "s.zarr", make_dataset(paths, tmp_path))
    writer = store.add_backbone("tiny_test", dim=8, unit_rows=4, metadata={"weights": "random"})
    backbone = load_backbone("tiny_test")
    stats = extract_units(writer, backbone, paths, writer.pending_units(), batch_size=3,
                          workers=workers, progress=False)
    assert store.is_complete("tiny_test") and writer.pending_units() == []
    assert store.status("tiny_test").tolist() == expected.tolist()
    assert stats.rows == 11 and stats.units == 3
    assert dict(stats.status) == {"OK": 7, "UNREADABLE": 3, "NO_FACE": 1}
    assert "7 valid, invalid: 3 unreadable, 1 no face" in stats.summary("tiny_test")
    features = store.read("tiny_test")
    assert features.index.tolist() == np.flatnonzero(expected == OK).tolist()
    assert np.isfinite(features.x).all() and features.x.std(axis=0).min() > 0  # real, varied rows
    # the same embeddings as the model applied image by image
    reference, codes = embed_paths(paths, "tiny_test", device="cpu", batch_size=1)
    assert codes.tolist() == expected.tolist()
    np.testing.assert_allclose(features.x, reference[expected == OK], rtol=1e-5, atol=1e-6)
    assert np.isnan(reference[expected != OK]).all()


def test_extract_units_only_touches_the_units_given(tmp_path):
    paths, _ = make_images(tmp_path / "img", 10)
    store = FeatureStore.create(tmp_path / "s.zarr", make_dataset(paths, tmp_path))
    writer = store.add_backbone("tiny_test", dim=8, unit_rows=4, metadata={"weights": "random"})
    extract_units(writer, load_backbone("tiny_test"), paths, [2, 0], batch_size=4, workers=0,
                  progress=False)
    assert writer.pending_units() == [1]
    status = store.status("tiny_test")
    assert (status[4:8] == Status.PENDING).all() and (status[[0, 1, 8, 9]] != Status.PENDING).all()


class SlowWriter(RecordingWriter):
    """Writes take a while, so batches queue up in the writer thread behind them."""

    def write_unit(self, unit, embeddings, status) -> None:
        time.sleep(0.2)
        super().write_unit(unit, embeddings, status)


def test_an_error_in_the_loop_still_writes_the_units_queued_before_it(tmp_path):
    paths, _ = make_images(tmp_path / "img", 12)
    backbone = load_backbone("tiny_test")
    calls = []

    def embed(batch):  # batch 5 fails: batches 1-3 (units 0-2) were handed to the sink, 4 in flight
        calls.append(len(batch))
        if len(calls) == 5:
            raise RuntimeError("model failed")
        return backbone.embed(batch)

    writer = SlowWriter(n_rows=12, unit_rows=2, dim=8)
    with pytest.raises(RuntimeError, match="model failed"):
        extract_units(writer, replace(backbone, embed=embed), paths, range(6), batch_size=2, workers=0,
                      progress=False)
    assert [unit for unit, _, _ in writer.calls] == [0, 1, 2]  # written before the error came out
    assert not any(thread.name == "unit-writer" for thread in threading.enumerate())


def test_embed_paths_of_nothing_but_invalid_images(tmp_path):
    paths, expected = make_images(tmp_path / "img", 10)
    invalid = [p for p, code in zip(paths, expected) if code != OK]
    embeddings, status = embed_paths(invalid, "tiny_test", device="cpu")
    assert embeddings.shape == (4, 8) and embeddings.dtype == np.float32 and np.isnan(embeddings).all()
    assert status.dtype == np.uint8 and status.tolist() == [UNREADABLE] * 3 + [NO_FACE]


def test_embed_paths_refuses_weights_other_than_expected(tmp_path):
    paths, _ = make_images(tmp_path / "img", 2)
    with pytest.raises(ValueError, match="not the sha256:0123"):
        embed_paths(paths, "tiny_test", device="cpu", expect_weights="sha256:0123456789abcdef")
    _, status = embed_paths(paths, "tiny_test", device="cpu", expect_weights="random")
    assert status.tolist() == [OK, OK]


FORK_AFTER_OPENCV_THREADS = """
import sys, cv2, numpy as np
import tests.extract_tiny
from extract import embed_paths
for _ in range(3):  # run OpenCV's thread pool in this (parent) process, as an OpenCV-DNN net does
    cv2.resize(np.zeros((1500, 1500, 3), np.uint8), (700, 700))
embeddings, status = embed_paths(sys.argv[1:], "tiny_test", weights="random", device="cpu", workers=2)
assert (status == 1).all(), status
"""


def test_reader_workers_start_after_opencv_threads_ran_in_the_parent(tmp_path):
    """Forked workers used to deadlock in cv2.setNumThreads when the parent's OpenCV pool had run."""
    import subprocess
    import sys

    paths = [str(write_face(tmp_path / f"{i}.jpg", size=(24, 30), seed=i)) for i in range(6)]
    result = subprocess.run([sys.executable, "-c", FORK_AFTER_OPENCV_THREADS, *paths], timeout=120,
                            cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
