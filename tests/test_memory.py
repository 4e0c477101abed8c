"""Memory of the classify stage: the treatment and the fit work on the train matrix, never beside a copy.

At CelebA size the train matrix is 1.3 GB (162,770 x 2,048 float32): one float64 copy of it is 2.7 GB,
and `classify train` once peaked at 6.2x the matrix (PERFORMANCE.md, "Classify at full CelebA size").
These tests count the bytes numpy allocates (tracemalloc sees every array) instead of timing anything.
"""
import dataclasses
import tracemalloc

import numpy as np
import pytest

from classify import treatment
from classify.protocol import RunConfig, read_training, run
from tests.fixtures import fill_units, split_codes, synthetic_table
from features.store import FeatureStore

SIZES = (40_000, 4_000, 4_000)
DIM = 64


def _l2_reference(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation the whole-matrix way (float64 norms): the numbers to keep."""
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12).astype(np.float32)


def _peak_bytes(call) -> tuple[object, int]:
    """``call()``'s result and the most bytes it held allocated at once."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_l2_treatment_copies_the_matrix_once_or_not_at_all_and_keeps_its_numbers():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40_000, 100)).astype(np.float32)
    per = {"name": "l2", "per_backbone": {"a": "l2", "b": "none", "c": "l2"}}
    dims = {"a": 60, "b": 15, "c": 25}
    expected = x.copy()
    expected[:, :60], expected[:, 75:] = _l2_reference(x[:, :60]), _l2_reference(x[:, 75:])
    block = 2 * treatment.BLOCK_ROWS * x.shape[1] * 8  # a float64 block of rows and its squares, at most
    assert block < 0.5 * x.nbytes
    copied, copy_peak = _peak_bytes(lambda: treatment.apply(x, per, ("a", "b", "c"), dims))
    inplace = x.copy()
    same, inplace_peak = _peak_bytes(lambda: treatment.apply(inplace, per, ("a", "b", "c"), dims, in_place=True))
    assert same is inplace
    for got in (copied, inplace):
        assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))  # bit for bit
    assert copy_peak <= x.nbytes + block  # the copy it returns, and no float64 one (2x each) beside it
    assert inplace_peak <= block


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    """A 48,000-row store, one 64-d backbone, gender a noisy linear function of the features."""
    rng = np.random.default_rng(1)
    n = sum(SIZES)
    x = (rng.standard_normal((n, DIM)) + 2.0).astype(np.float32)
    gender = (x[:, :8].sum(axis=1) + 2 * rng.standard_normal(n) > 16).astype(np.int8)
    dataset = synthetic_table(n, name="memory-test", gender=gender, split=split_codes(SIZES))
    created = FeatureStore.create(tmp_path_factory.mktemp("memory") / "s.zarr", dataset)
    writer = created.add_backbone("bb", dim=DIM, unit_rows=2048, metadata={"weights": "random"})
    fill_units(writer, lambda start, stop: (x[start:stop], np.ones(stop - start, np.uint8)))
    return FeatureStore.open(created.path)


def test_run_treats_the_train_matrix_in_place_then_reads_it_back(store):
    data = read_training([store], ("bb",))
    train = data.splits["train"].x
    original = train.copy()
    refills = []

    def refill(x: np.ndarray) -> None:  # the store read, without its decode buffers in the count
        refills.append(x is train)
        x[...] = original

    config = RunConfig(stores=(store.path,), backbones=("bb",), head="logreg", n_resamples=20, calibrate="none",
                       head_params={"Cs": (0.01, 1.0), "max_iter": 20})
    _, copied = run(config, dataclasses.replace(data, refill_train=None))  # a treated copy (and imports done)
    (_, results), peak = _peak_bytes(lambda: run(config, dataclasses.replace(data, refill_train=refill)))
    assert [t["name"] for t in results["treatment"]["tried"]] == ["none", "l2"]
    assert refills == [True]  # l2 was applied to the train matrix itself, then undone once
    assert np.array_equal(train.view(np.uint32), original.view(np.uint32))
    assert peak < 0.75 * train.nbytes  # a treated copy alone is 1x, and main's float64 norms 4x more
    assert results["metrics"] == copied["metrics"] and results["treatment"] == copied["treatment"]


def test_training_data_refills_the_train_matrix_from_the_store(store):
    data = read_training([store], ("bb",))
    train = data.splits["train"].x
    original = train.copy()
    train *= 3.0
    data.refill_train(train)
    assert np.array_equal(train.view(np.uint32), original.view(np.uint32))


def test_store_read_into_an_array_of_another_shape_is_refused(store):
    rows = int(np.sum(store.split == 0))
    with pytest.raises(ValueError, match="float32"):
        store.read(["bb"], "train", out=np.empty((rows, DIM), dtype=np.float64))
    with pytest.raises(ValueError, match="float32"):
        store.read(["bb"], "train", out=np.empty((rows - 1, DIM), dtype=np.float32))
