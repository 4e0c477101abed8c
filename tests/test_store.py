"""The feature store contract: round trips, resume bookkeeping, refusals with clear errors."""
import multiprocessing

import numpy as np
import pytest
import zarr

from tests.fixtures import fill_units, synthetic_table
from features.dataset import Dataset
from features.store import SCHEMA_VERSION, FeatureStore, Status, StoreError


def make_table(n=10, *, name="toy", seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    split = np.array([0] * (n - 4) + [1, 1, 2, 2], dtype=np.int8)
    return synthetic_table(n, name=name, root="/data/toy", paths=[f"/data/toy/{i:06d}.jpg" for i in range(n)],
                           gender=rng.integers(0, 2, n), split=split, attributes={"age": np.arange(n, dtype=np.int16)})


def fill(writer, embeddings, status, units=None):
    fill_units(writer, lambda start, stop: (embeddings[start:stop], status[start:stop]), units)


@pytest.fixture
def table():
    return make_table()


@pytest.fixture
def store(tmp_path, table):
    return FeatureStore.create(tmp_path / "f.zarr", table)


def test_table_round_trip(store, table):
    reopened = FeatureStore.open(store.path)
    assert reopened.dataset_name == "toy" and reopened.n_rows == 10
    np.testing.assert_array_equal(reopened.ids, table.ids)
    np.testing.assert_array_equal(reopened.gender, table.gender)
    np.testing.assert_array_equal(reopened.split, table.split)
    np.testing.assert_array_equal(reopened.attributes["age"], table.attributes["age"])
    assert reopened.fingerprint == table.fingerprint()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_embeddings_round_trip_by_split(store, table, dtype):
    emb = np.random.default_rng(1).standard_normal((10, 3)).astype(np.float32)
    fill(store.add_backbone("bb", dim=3, dtype=dtype, unit_rows=4, metadata={"weights": "random"}),
         emb, np.full(10, Status.OK, np.uint8))
    feats = store.read("bb", "train")
    np.testing.assert_array_equal(feats.index, np.arange(6))
    np.testing.assert_allclose(feats.x, emb[:6], rtol=1e-3 if dtype == "float16" else 0)
    assert feats.x.dtype == np.float32
    np.testing.assert_array_equal(feats.gender, table.gender[:6])
    assert feats.n_invalid == {}


def test_invalid_rows_are_nan_excluded_and_counted(store):
    status = np.full(10, Status.OK, np.uint8)
    status[[1, 8]] = Status.NO_FACE
    status[2] = Status.UNREADABLE
    fill(store.add_backbone("bb", dim=2, unit_rows=4, metadata={"weights": "random"}),
         np.ones((10, 2)), status)
    raw = zarr.open_group(store.path, mode="r")["backbones/bb/embeddings"][:]
    assert np.isnan(raw[[1, 2, 8]]).all() and np.isfinite(raw[[0, 3]]).all()
    train = store.read("bb", "train")
    assert train.index.tolist() == [0, 3, 4, 5]
    assert train.n_invalid == {"no_face": 1, "unreadable": 1}
    assert store.read("bb", "test").n_invalid == {"no_face": 1}


def test_several_backbones_concatenate_and_intersect_validity(store):
    a, b = np.zeros((10, 2)), np.ones((10, 3))
    status_b = np.full(10, Status.OK, np.uint8)
    status_b[0] = Status.NO_FACE
    fill(store.add_backbone("a", dim=2, unit_rows=4, metadata={"weights": "random"}),
         a, np.full(10, Status.OK, np.uint8))
    fill(store.add_backbone("b", dim=3, unit_rows=3, metadata={"weights": "random"}), b, status_b)
    feats = store.read(["a", "b"], "train")
    assert feats.x.shape == (5, 5) and feats.index.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(feats.x[:, :2], 0)
    np.testing.assert_array_equal(feats.x[:, 2:], 1)
    assert store.backbones() == ["a", "b"]


def test_resume_bookkeeping(store):
    writer = store.add_backbone("bb", dim=2, unit_rows=3, metadata={"weights": "random"})
    emb, status = np.arange(20.0).reshape(10, 2), np.full(10, Status.OK, np.uint8)
    fill(writer, emb, status, units=[0, 2])
    assert writer.pending_units() == [1, 3]
    assert not store.is_complete("bb")
    with pytest.raises(StoreError, match="incomplete .*2 of 4 units"):
        store.read("bb", "train")
    partial = store.read("bb", "train", allow_incomplete=True)
    assert partial.index.tolist() == [0, 1, 2]
    assert partial.n_invalid == {"pending": 3}
    again = FeatureStore.open(store.path, mode="r+").add_backbone(
        "bb", dim=2, unit_rows=3, metadata={"weights": "random"})
    assert again.pending_units() == [1, 3]
    fill(again, emb, status)
    np.testing.assert_array_equal(store.read("bb").x, emb)


def _write_units(path, units):
    writer = FeatureStore.open(path, mode="r+").backbone_writer("bb")
    emb = np.arange(20.0).reshape(10, 2)
    fill(writer, emb, np.full(10, Status.OK, np.uint8), units=units)


def test_processes_write_disjoint_units_of_one_store(store):
    store.add_backbone("bb", dim=2, unit_rows=2, metadata={"weights": "random"})
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_units, args=(store.path, units)) for units in ([0, 2, 4], [1, 3])]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert store.is_complete("bb")
    np.testing.assert_array_equal(store.read("bb").x, np.arange(20.0).reshape(10, 2))


@pytest.mark.parametrize("url", ["memory://{name}/features.zarr", "file://{tmp}/features.zarr"])
def test_store_on_an_fsspec_url_round_trips(url, tmp_path):
    url = url.format(tmp=tmp_path, name=tmp_path.name)  # memory:// is per process: a fresh name
    writer = FeatureStore.create(url, make_table()).add_backbone(
        "bb", dim=2, unit_rows=4, metadata={"weights": "random"})
    emb = np.arange(20.0).reshape(10, 2)
    fill(writer, emb, np.full(10, Status.OK, np.uint8))
    np.testing.assert_array_equal(FeatureStore.open(url).read("bb").x, emb)
    with pytest.raises(StoreError, match="already exists"):
        FeatureStore.create(url, make_table())


def test_open_or_create_refuses_another_dataset(store):
    with pytest.raises(StoreError, match="another dataset"):
        FeatureStore.open_or_create(store.path, make_table(name="other"))
    assert FeatureStore.open_or_create(store.path, make_table()).n_rows == 10


def test_create_refuses_existing_store(store, table):
    with pytest.raises(StoreError, match="already exists"):
        FeatureStore.create(store.path, table)


def test_other_schema_version_is_refused(store):
    zarr.open_group(store.path, mode="r+").attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(StoreError, match="schema_version"):
        FeatureStore.open(store.path)


def test_missing_store_and_plain_zarr_group_are_refused(tmp_path):
    with pytest.raises(StoreError, match="no feature store"):
        FeatureStore.open(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore.open(tmp_path / "plain.zarr")


def test_backbone_mismatch_on_resume_is_refused(store):
    store.add_backbone("bb", dim=2, metadata={"weights": "random"})
    with pytest.raises(StoreError, match="already holds backbone 'bb'"):
        store.add_backbone("bb", dim=2, metadata={"weights": "sha256:abc"})
    with pytest.raises(StoreError, match="already holds backbone 'bb'"):
        store.add_backbone("bb", dim=4, metadata={"weights": "random"})


def test_unknown_backbone_names_those_held(store):
    store.add_backbone("bb", dim=2, metadata={"weights": "random"})
    with pytest.raises(StoreError, match="no backbone 'nope'; it holds: bb"):
        store.read("nope")


def test_write_unit_rejects_wrong_shapes_and_nonfinite_valid_rows(store):
    writer = store.add_backbone("bb", dim=2, unit_rows=4, metadata={"weights": "random"})
    with pytest.raises(StoreError, match="expected embeddings"):
        writer.write_unit(0, np.zeros((3, 2)), np.ones(3, np.uint8))
    with pytest.raises(StoreError, match="non-finite"):
        writer.write_unit(0, np.full((4, 2), np.nan), np.ones(4, np.uint8))
    with pytest.raises(StoreError, match="not final"):
        writer.write_unit(0, np.zeros((4, 2)), np.zeros(4, np.uint8))
    assert writer.pending_units() == [0, 1, 2]


def test_unknown_split_lists_valid_ones(store):
    store.add_backbone("bb", dim=2, metadata={"weights": "random"})
    with pytest.raises(ValueError, match="train, val, test"):
        store.read("bb", "dev", allow_incomplete=True)


def test_reads_span_blocks_and_gaps_exactly(tmp_path, monkeypatch):
    """Several read blocks, gaps of invalid rows, a float16 backbone beside a float32 one."""
    from features.store import reads

    monkeypatch.setattr(reads, "READ_BLOCK_BYTES", 64)  # a block of one chunk (4 rows) per read
    rng = np.random.default_rng(3)
    n = 50
    table = make_table(n)
    store = FeatureStore.create(tmp_path / "f.zarr", table)
    a, b = rng.standard_normal((n, 3)), rng.standard_normal((n, 2))
    status = np.where(rng.random(n) < 0.3, Status.NO_FACE, Status.OK).astype(np.uint8)
    fill(store.add_backbone("a", dim=3, unit_rows=4, metadata={"weights": "random"}), a, status)
    fill(store.add_backbone("b", dim=2, dtype="float16", unit_rows=4, metadata={"weights": "random"}),
         b, np.full(n, Status.OK, np.uint8))
    feats = store.read(["a", "b"], "train")
    expected = np.flatnonzero((table.split == 0) & (status == Status.OK))
    np.testing.assert_array_equal(feats.index, expected)
    np.testing.assert_array_equal(feats.x[:, :3], a[expected].astype(np.float32))
    np.testing.assert_array_equal(feats.x[:, 3:], b[expected].astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("url", ["memory://{name}/left.zarr", "{tmp}/left.zarr"])
def test_a_half_created_backbone_whose_group_metadata_went_first_is_built_again(url, tmp_path):
    """A kill while a half-created backbone is deleted may leave its arrays without its group zarr.json:
    add_backbone deletes the whole prefix (local or fsspec) and builds the backbone again."""
    url = url.format(tmp=tmp_path, name=tmp_path.name)
    store = FeatureStore.create(url, make_table())
    left = zarr.open_group(url, mode="r+")["backbones"].create_group("bb")
    left.create_array("embeddings", shape=(10, 2), chunks=(4, 2), dtype="float32")[:] = 7
    zarr.core.sync.sync((left.store_path / "zarr.json").delete())  # as rmtree may leave it
    assert store.backbones() == []
    writer = store.add_backbone("bb", dim=3, unit_rows=4, metadata={"weights": "random"})
    emb = np.arange(30.0).reshape(10, 3)
    fill(writer, emb, np.full(10, Status.OK, np.uint8))
    np.testing.assert_array_equal(FeatureStore.open(url).read("bb").x, emb)
