"""The store is an open contract: every array of a store written by `python -m extract` opens and reads
bitwise identical in TensorStore (Google's own Zarr v3 implementation, a test dependency) and in
zarr-python, the ids included, decoded as the schema tells a non-Python reader to."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from extract.cli import main
from features.store import FACES, IDS, FeatureStore
from tests.fixtures import flip_bit, make_celeba

ts = pytest.importorskip("tensorstore")
pytestmark = pytest.mark.usefixtures("tiny_backbones")

N, UNIT_ROWS = 10, 4  # 3 units, the last one short
UTKFACE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "utkface"  # real photos, optional


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    """A store of a face backbone (sface, with the face detection pass) and a plain one (tiny_test)."""
    root = make_celeba(tmp_path_factory.mktemp("data"), n=N)
    store = tmp_path_factory.mktemp("store") / "features.zarr"
    assert main(["--dataset", "celeba", "--root", str(root), "--backbones", "sface", "tiny_test",
                 "--store", str(store), "--unit-rows", str(UNIT_ROWS), "--workers", "0",
                 "--no-progress"]) == 0
    return store


@pytest.fixture(scope="module")
def extracted_utkface(tmp_path_factory) -> Path:
    """The same on 24 real UTKFace photos (long nested ids, age and race attributes), when present."""
    if not UTKFACE.is_dir():
        pytest.skip(f"no real data at {UTKFACE}")
    store = tmp_path_factory.mktemp("utk") / "features.zarr"
    assert main(["--dataset", "utkface", "--root", str(UTKFACE), "--backbones", "sface", "--limit", "24",
                 "--store", str(store), "--unit-rows", "16", "--workers", "0", "--no-progress"]) == 0
    return store


def every_array(path: Path) -> dict[str, zarr.Array]:
    group = zarr.open_group(str(path), mode="r")
    return {key: node for key, node in group.members(max_depth=None) if isinstance(node, zarr.Array)}


def tensorstore_read(path: Path, key: str) -> np.ndarray:
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{path}/{key}/"}}
    return ts.open(spec, read=True).result().read().result()


def test_every_array_reads_bitwise_the_same_in_tensorstore(extracted):
    arrays = every_array(extracted)
    backbone_arrays = {f"backbones/{name}/{array}" for name in ("sface", "tiny_test", FACES)
                       for array in ("embeddings", "status", "done")}
    table = {IDS, "table/gender", "table/split", *(f"table/attributes/{name}" for name in
                                                  FeatureStore.open(extracted).attributes)}
    assert set(arrays) == backbone_arrays | table
    assert len(table) > 3  # the CelebA attributes are among them
    for key, array in sorted(arrays.items()):
        theirs, ours = tensorstore_read(extracted, key), array[...]
        assert theirs.dtype == ours.dtype and theirs.shape == ours.shape, key
        assert theirs.tobytes() == ours.tobytes(), key


def test_a_store_of_real_photos_reads_bitwise_the_same_in_tensorstore(extracted_utkface):
    arrays = every_array(extracted_utkface)
    assert {IDS, "table/attributes/age", "table/attributes/race", "backbones/_faces/embeddings",
            "backbones/sface/embeddings"} <= set(arrays)
    for key, array in sorted(arrays.items()):
        assert tensorstore_read(extracted_utkface, key).tobytes() == array[...].tobytes(), key
    raw = tensorstore_read(extracted_utkface, IDS)
    ids = [bytes(row).split(b"\0", 1)[0].decode("utf-8") for row in raw]
    assert ids == FeatureStore.open(extracted_utkface).ids.tolist()


def test_ids_decode_from_tensorstore_as_the_schema_says(extracted):
    """Row i: its bytes up to the first zero, as UTF-8; the width is the array's attribute."""
    raw = tensorstore_read(extracted, IDS)
    width = zarr.open_group(str(extracted), mode="r")[IDS].attrs["width"]
    assert raw.shape == (N, width)
    ids = [bytes(row).split(b"\0", 1)[0].decode("utf-8") for row in raw]
    assert ids == FeatureStore.open(extracted).ids.tolist() and len(set(ids)) == N


def test_a_flipped_bit_fails_tensorstore_s_checksum_too(extracted, tmp_path):
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(extracted, copy)
    flip_bit(copy / "backbones" / "tiny_test" / "embeddings" / "c" / "1" / "0")
    with pytest.raises(ValueError, match="Digest mismatch"):
        tensorstore_read(copy, "backbones/tiny_test/embeddings")
