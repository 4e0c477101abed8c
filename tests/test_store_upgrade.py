"""Version 2 stores (ids as zarr-python's variable-length strings) upgrade in place to version 3 (ids as
UTF-8 bytes in a uint8 array), keeping every embedding; a kill at any step leaves the old store or the new
one, both readable, and a rerun finishes. Version 2 stores are made as version 2 wrote them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec

from extract.cli import main
from features.store import CRASH_HOOK, FACES, IDS, OLD_IDS, FeatureStore, Status, StoreError
from tests.fixtures import fill_units, synthetic_table

REPO = Path(__file__).resolve().parents[1]
IDS_HELD = ["000001.jpg", "Zoë/été.jpg", "a/b/c/very_long_name_" + "x" * 70 + ".jpg", "日本/顔.png", "x",
            "000006.jpg", "z/ü.jpg"]
N = len(IDS_HELD)
UPGRADE_STEPS = ["upgrade:cleared", "upgrade:ids-declared", "upgrade:ids-written", "upgrade:declared",
                 "upgrade:cleaned"]


def new_store(path: Path) -> Path:
    """A version 3 store of N rows with a backbone and a faces entry (two units each)."""
    rng = np.random.default_rng(0)
    store = FeatureStore.create(path, synthetic_table(N, name="toy", ids=IDS_HELD, split=[0, 0, 0, 1, 1, 2, 2],
                                                      gender=rng.integers(0, 2, N),
                                                      attributes={"age": np.arange(N, dtype=np.int16)}))
    status = np.array([1, 1, 3, 1, 2, 1, 1], np.uint8)
    for name, dim in (("bb", 5), (FACES, 16)):
        rows = rng.standard_normal((N, dim)).astype(np.float32)
        fill_units(store.add_backbone(name, dim=dim, unit_rows=4, metadata={"weights": "random"}),
                   lambda start, stop, rows=rows: (rows[start:stop], status[start:stop]))
    return path


def as_version_2(path: Path) -> Path:
    """The store as schema version 2 wrote it: ids a variable-length string array at table/ids."""
    group = zarr.open_group(str(path), mode="r+")
    ids = FeatureStore.open(path).ids
    old = group.create_array(OLD_IDS, shape=(N,), dtype=str, chunks=(N,), compressors=[Crc32cCodec()])
    old[:] = ids
    zarr.core.sync.sync((group.store_path / IDS).delete_dir())
    group.attrs["schema_version"] = 2
    return path


def held(path: Path) -> dict:
    """Every backbone array's bytes and attributes, and the table's gender, split and attributes."""
    group = zarr.open_group(str(path), mode="r")
    arrays = {f"{name}/{array}": group[f"backbones/{name}/{array}"][...].tobytes()
              for name in ("bb", FACES) for array in ("embeddings", "status", "done")}
    table = {key: group[f"table/{key}"][...].tobytes() for key in ("gender", "split", "attributes/age")}
    attrs = {name: dict(group[f"backbones/{name}"].attrs) for name in ("bb", FACES)}
    return {**arrays, **table, "attrs": attrs}


@pytest.fixture
def old(tmp_path) -> Path:
    return as_version_2(new_store(tmp_path / "f.zarr"))


def test_ids_are_utf8_bytes_zero_padded_in_a_uint8_array(tmp_path):
    path = new_store(tmp_path / "f.zarr")
    array = zarr.open_group(str(path), mode="r")[IDS]
    width = max(len(i.encode()) for i in IDS_HELD)
    assert array.dtype == np.uint8 and array.shape == (N, width) and dict(array.attrs) == {
        "encoding": "utf-8", "width": width}
    raw = array[...]
    assert bytes(raw[1]).rstrip(b"\0").decode() == "Zoë/été.jpg" and raw[4, 1:].sum() == 0
    store = FeatureStore.open(path)
    assert store.ids.tolist() == IDS_HELD
    with pytest.raises(ValueError, match="read-only"):  # decoded once per store: no caller may change it
        store.ids[0] = "other.jpg"


def test_an_id_with_a_zero_byte_is_refused(tmp_path):
    with pytest.raises(StoreError, match="zero byte"):
        FeatureStore.create(tmp_path / "f.zarr", synthetic_table(2, ids=["a.jpg", "b\0.jpg"]))


def test_a_version_2_store_is_refused_with_the_upgrade_command(old, capsys):
    with pytest.raises(StoreError, match=f"schema_version 2.*python -m extract upgrade --store {old}"):
        FeatureStore.open(old)
    assert main(["upgrade", "--store", str(old)]) == 0
    assert "upgraded from schema_version 2 to 3" in capsys.readouterr().err


def test_upgrade_rewrites_the_ids_alone_and_keeps_every_embedding(old, tmp_path, capsys):
    before = held(old)
    fresh = held(new_store(tmp_path / "fresh.zarr"))
    assert main(["upgrade", "--store", str(old)]) == 0
    assert held(old) == before
    store = FeatureStore.open(old)
    assert store.ids.tolist() == IDS_HELD
    group = zarr.open_group(str(old), mode="r")
    assert OLD_IDS.split("/")[1] not in dict(group["table"].members()) and group.attrs["schema_version"] == 3
    assert group[IDS][...].tobytes() == zarr.open_group(str(tmp_path / "fresh.zarr"))[IDS][...].tobytes()
    np.testing.assert_array_equal(store.read("bb").x, np.frombuffer(fresh["bb/embeddings"], np.float32)
                                  .reshape(N, 5)[store.status("bb") == Status.OK])
    capsys.readouterr()
    assert main(["upgrade", "--store", str(old)]) == 0
    assert "nothing to do" in capsys.readouterr().err


def killed_upgrade(path: Path, step: str) -> None:
    code = f"import sys\nfrom extract.cli import main\nsys.exit(main(['upgrade', '--store', {str(path)!r}]))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, CRASH_HOOK: step},
                          timeout=120, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]


@pytest.mark.parametrize("step", UPGRADE_STEPS)
def test_a_kill_at_any_upgrade_step_leaves_a_usable_store_and_a_rerun_finishes(old, step):
    before = held(old)
    killed_upgrade(old, step)
    group = zarr.open_group(str(old), mode="r")
    assert held(old) == before
    if group.attrs["schema_version"] == 2:  # the old store, as an older version of the tool reads it
        assert group[OLD_IDS][...].tolist() == IDS_HELD
    else:
        assert FeatureStore.open(old).ids.tolist() == IDS_HELD
    assert main(["upgrade", "--store", str(old)]) == 0
    assert FeatureStore.open(old).ids.tolist() == IDS_HELD and held(old) == before
    assert "ids" not in dict(zarr.open_group(str(old), mode="r")["table"].members())


def test_a_half_deleted_old_ids_array_is_removed_by_a_rerun(old):
    assert main(["upgrade", "--store", str(old)]) == 0
    leftover = old / "table" / "ids"
    leftover.mkdir()
    (leftover / "zarr.json").write_text("{")  # what a kill in the old array's deletion may leave
    assert FeatureStore.open(old).ids.tolist() == IDS_HELD
    assert main(["upgrade", "--store", str(old)]) == 0
    assert not leftover.exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "no feature store"),
    (lambda p: zarr.open_group(str(p), mode="w", attributes={"kind": "other"}), "not a feature store"),
    (lambda p: zarr.open_group(str(as_version_2(new_store(p))), mode="r+").attrs.update(schema_version=1),
     "schema_version 1; only version 2 upgrades in place"),
])
def test_what_cannot_be_upgraded_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    path = tmp_path / "s.zarr"
    make(path)
    assert main(["upgrade", "--store", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
