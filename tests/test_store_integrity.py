"""Damaged, garbage and foreign stores, and two writers: one clear error (exit 2), never silent results.

Damage is done to the files on disk as a disk fault or a careless user would: a deleted, truncated or
bit-flipped chunk, a deleted status chunk, garbage metadata.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from classify.cli import main as classify_main
from extract.cli import main
from features.store import FeatureStore, Status, StoreError, writer_lock
from tests.fixtures import extracted_store, flip_bit, one_error_line


N, UNIT_ROWS = 20, 4  # 5 units; make_celeba's split puts rows of every split in several units
pytestmark = pytest.mark.usefixtures("tiny_backbones")  # registered for this module only


def args(root: Path, store: Path, *extra: str) -> list[str]:
    return ["--dataset", "celeba", "--root", str(root), "--backbones", "tiny_test", "--store", str(store),
            "--unit-rows", str(UNIT_ROWS), "--batch-size", "3", "--workers", "0", "--no-progress", *extra]


celeba, reference, store = extracted_store(n=N, args=args)


def chunk(store: Path, array: str, unit: int) -> Path:
    return store / "backbones" / "tiny_test" / array / "c" / str(unit) / ("0" if array == "embeddings" else "")


def test_schema_version_is_3_and_new_chunks_carry_a_checksum(store):
    group = zarr.open_group(str(store), mode="r")
    assert group.attrs["schema_version"] == 3
    for array in ("backbones/tiny_test/embeddings", "backbones/tiny_test/status", "backbones/tiny_test/done",
                  "table/ids_utf8", "table/gender", "table/split"):
        codecs = group[array].metadata.codecs
        assert [type(codec).__name__ for codec in codecs][-1] == "Crc32cCodec"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


DAMAGE = {
    "embedding chunk deleted": (lambda s: chunk(s, "embeddings", 4).unlink(), "embeddings/c/4/0"),
    "embedding chunk truncated": (lambda s: truncate(chunk(s, "embeddings", 4)), "embeddings/c/4/0"),
    "embedding bit flipped": (lambda s: flip_bit(chunk(s, "embeddings", 4)), "embeddings/c/4/0"),
    "status chunk deleted": (lambda s: chunk(s, "status", 4).unlink(), "status/c/4"),
    "status chunk bit flipped": (lambda s: flip_bit(chunk(s, "status", 4)), "status/c/4"),
}


@pytest.mark.parametrize("fault", DAMAGE)
def test_damage_is_one_error_naming_backbone_unit_and_chunk(store, fault, capsys):
    damage, named = DAMAGE[fault]
    damage(store)
    with pytest.raises(StoreError, match=rf"backbone 'tiny_test' unit 4, chunk backbones/tiny_test/{named}"):
        FeatureStore.open(store).read("tiny_test", None)
    capsys.readouterr()
    assert classify_main(["train", "--store", str(store), "--out", str(store.parent / "heads"),
                          "--heads", "logreg"]) == 2
    line = one_error_line(capsys)
    assert "unit 4" in line and "verify" in line


def test_nonfinite_rows_marked_ok_are_refused_even_with_a_valid_checksum(store):
    embeddings = zarr.open_group(str(store), mode="r+")["backbones/tiny_test/embeddings"]
    embeddings[0] = np.inf  # through zarr: the checksum matches, the value does not
    with pytest.raises(StoreError, match=r"unit 0, chunk backbones/tiny_test/embeddings/c/0/0: 1 rows marked "
                                         r"OK are not finite"):
        FeatureStore.open(store).read("tiny_test", "train")


@pytest.mark.parametrize("fault", DAMAGE)
def test_verify_lists_the_damaged_unit_and_repair_re_embeds_exactly_it(celeba, reference, store, fault,
                                                                        capsys):
    DAMAGE[fault][0](store)
    capsys.readouterr()
    assert main(["verify", "--store", str(store)]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith("tiny_test unit 4: ") and len(out.splitlines()) == 1
    assert "1 damaged units" in err
    assert main(["verify", "--store", str(store), "--repair"]) == 0
    assert FeatureStore.open(store).backbone_writer("tiny_test").pending_units() == [4]
    assert main(args(celeba, store)) == 0
    assert "tiny_test: 1 of 5 units to embed (4 done before)" in capsys.readouterr().err
    assert main(["verify", "--store", str(store)]) == 0
    a, b = (zarr.open_group(str(s), mode="r")["backbones/tiny_test"] for s in (store, reference))
    assert a["embeddings"][:].tobytes() == b["embeddings"][:].tobytes()
    assert a["status"][:].tolist() == b["status"][:].tolist()


def test_verify_of_an_intact_store(store, capsys):
    assert main(["verify", "--store", str(store)]) == 0
    assert "no damage found in 1 backbones" in capsys.readouterr().err


# -- garbage and foreign stores (item 6) ----------------------------------------------------------------
def test_garbage_root_metadata_is_one_line(celeba, store, capsys):
    (store / "zarr.json").write_text("{not json")
    capsys.readouterr()
    assert main(args(celeba, store)) == 2
    assert "zarr.json is not readable Zarr metadata" in one_error_line(capsys)
    assert classify_main(["train", "--store", str(store), "--out", str(store.parent / "h")]) == 2
    assert "zarr.json is not readable Zarr metadata" in one_error_line(capsys)


def test_truncated_array_metadata_is_one_line(store, capsys):
    truncate(store / "table" / "gender" / "zarr.json")
    capsys.readouterr()
    assert classify_main(["train", "--store", str(store), "--out", str(store.parent / "h")]) == 2
    assert "table/gender/zarr.json is not readable" in one_error_line(capsys)


def test_store_pointing_at_a_foreign_folder_or_file_is_one_line_and_touches_nothing(celeba, tmp_path,
                                                                                   capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"jpeg")
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    for target, what in ((folder, "existing folder that is not a Zarr store"), (file, "existing file")):
        capsys.readouterr()
        assert main(args(celeba, target)) == 2
        assert what in one_error_line(capsys)
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg"] and file.read_text() == "mine"


def test_an_empty_folder_is_used_as_a_new_store(celeba, tmp_path):
    (tmp_path / "new.zarr").mkdir()
    assert main(args(celeba, tmp_path / "new.zarr")) == 0


def test_a_version_1_store_is_refused_with_what_to_do(store):
    group = zarr.open_group(str(store), mode="r+")
    group.attrs["schema_version"] = 1
    with pytest.raises(StoreError, match="schema_version 1; .* re-extract into a new store"):
        FeatureStore.open(store)


# -- one writer per backbone (item 2) ---------------------------------------------------------------------
def _hold_lock(path: str, ready, release) -> None:
    with writer_lock(path, "tiny_test"):
        ready.set()
        release.wait(30)


def test_a_second_writer_gets_one_line_or_waits_with_wait_lock(celeba, tmp_path, capsys):
    store = tmp_path / "features.zarr"
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(store), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        capsys.readouterr()
        assert main(args(celeba, store)) == 2
        line = one_error_line(capsys)
        assert "another process is writing backbone 'tiny_test' in" in line and str(store) in line
        assert "--wait-lock" in line
        assert "tiny_test" not in FeatureStore.open(store).backbones()  # nothing of it was written
        context.Process(target=lambda: (time.sleep(1), release.set())).start()
        assert main(args(celeba, store, "--wait-lock")) == 0
        assert FeatureStore.open(store).is_complete("tiny_test")
    finally:
        release.set()
        holder.join(30)


def test_the_lock_lives_beside_the_store_not_in_it(celeba, tmp_path):
    store = tmp_path / "features.zarr"
    assert main(args(celeba, store)) == 0
    assert sorted(os.listdir(tmp_path / "features.zarr.locks")) == ["create.lock", "tiny_test.lock"]
    assert "locks" not in os.listdir(store)


def test_status_codes_of_a_done_unit_are_checked_by_verify(store, capsys):
    status = zarr.open_group(str(store), mode="r+")["backbones/tiny_test/status"]
    status[8] = Status.PENDING
    capsys.readouterr()
    assert main(["verify", "--store", str(store)]) == 2
    assert capsys.readouterr().out.startswith("tiny_test unit 2: status/c/2: 1 rows pending")
