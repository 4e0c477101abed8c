"""Hostile store attributes (issue 19 item 5): a store edited by hand or by an attacker is one error line
naming the store and the field, exit 2, in both CLIs; never a traceback, a division by zero on resume,
or an allocation sized by a forged shape. Each case edits a copy of a store written by `extract`."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import zarr

from classify.cli import main as classify_main
from extract.cli import main
from features.store import FeatureStore, StoreError
from tests.fixtures import extracted_store, one_error_line

N, UNIT_ROWS = 12, 4
pytestmark = pytest.mark.usefixtures("tiny_backbones")


def args(root: Path, store: Path) -> list[str]:
    return ["--dataset", "celeba", "--root", str(root), "--backbones", "tiny_test", "--store", str(store),
            "--unit-rows", str(UNIT_ROWS), "--workers", "0", "--no-progress"]


celeba, reference, store = extracted_store(n=N, args=args)


def set_attr(key: str, field: str, value):
    """Set one attribute of node `key` ("" the root; "a.b" a nested field) in its zarr.json."""
    def edit(store: Path) -> None:
        group = zarr.open_group(str(store), mode="r+")
        node = group[key] if key else group
        top, _, inner = field.partition(".")
        if inner:
            node.attrs[top] = {**node.attrs[top], inner: value}
        else:
            node.attrs[top] = value
    return edit


def set_metadata(key: str, field: str, value):
    """Set a field of array `key`'s zarr.json itself (its shape, chunk grid, attributes)."""
    def edit(store: Path) -> None:
        path = store / key / "zarr.json"
        metadata = json.loads(path.read_text())
        metadata[field] = value
        path.write_text(json.dumps(metadata))
    return edit


BB = "backbones/tiny_test"
CHUNKS = {"name": "regular", "configuration": {"chunk_shape": [UNIT_ROWS + 1, 8]}}
CASES = {  # what is edited -> the field the error line names
    "dim text": (set_attr(BB, "dim", "abc"), "backbones/tiny_test attribute dim is 'abc'"),
    "dim zero": (set_attr(BB, "dim", 0), "attribute dim is 0, not a positive integer"),
    "dim a bool": (set_attr(BB, "dim", True), "attribute dim is True"),
    "metadata a list": (set_attr(BB, "metadata", [1]), "attribute metadata is [1], not a dict"),
    "weights a number": (set_attr(BB, "metadata.weights", 5), "attribute metadata.weights is 5, not text"),
    "preprocessing a number": (set_attr(BB, "metadata.preprocessing", 3), "metadata.preprocessing is 3"),
    "unit_rows zero": (set_attr(BB, "unit_rows", 0), "attribute unit_rows is 0, not a positive integer"),
    "unit_rows other than the chunks": (set_attr(BB, "unit_rows", 3), "embeddings chunks is [4, 8], not [3, 8]"),
    "dtype float64": (set_attr(BB, "dtype", "float64"), "attribute dtype is 'float64'"),
    "name another": (set_attr(BB, "name", "x"), "attribute name is 'x'"),
    "embeddings 10**9 rows": (set_metadata(f"{BB}/embeddings", "shape", [10**9, 8]),
                              "embeddings shape is [1000000000, 8], not [12, 8]"),
    "embeddings chunks": (set_metadata(f"{BB}/embeddings", "chunk_grid", CHUNKS), "embeddings chunks"),
    "status 10**12 rows": (set_metadata(f"{BB}/status", "shape", [10**12]), "status shape is [1000000000000]"),
    "done 10**9 units": (set_metadata(f"{BB}/done", "shape", [10**9]), "done shape is [1000000000]"),
    "n_rows text": (set_attr("", "dataset.n_rows", "12"), "attribute dataset.n_rows is '12'"),
    "n_rows 10**9": (set_attr("", "dataset.n_rows", 10**9), "not [1000000000"),
    "dataset a list": (set_attr("", "dataset", [1]), "attribute dataset is [1], not a dict"),
    "dataset name a number": (set_attr("", "dataset.name", 7), "attribute dataset.name is 7, not text"),
    "alignment text": (set_attr("", "dataset.alignment", "wild"), "dataset.alignment is 'wild', not a dict"),
    "gender 10**9 rows": (set_metadata("table/gender", "shape", [10**9]), "table/gender shape is [1000000000]"),
    "ids width": (set_attr("table/ids_utf8", "width", 3), "table/ids_utf8 attributes is"),
}


@pytest.mark.parametrize("case", CASES)
def test_an_edited_store_is_one_line_naming_store_and_field_in_both_clis(store, celeba, case, capsys):
    edit, named = CASES[case]
    edit(store)
    capsys.readouterr()
    started = time.monotonic()
    assert main(["verify", "--store", str(store)]) == 2
    line = one_error_line(capsys)
    assert named in line and str(store) in line, line
    assert classify_main(["train", "--store", str(store), "--out", str(store.parent / "heads"),
                          "--heads", "logreg"]) == 2
    line = one_error_line(capsys)
    assert named in line and str(store) in line, line
    assert time.monotonic() - started < 30  # nothing sized by a forged shape was allocated or iterated


@pytest.mark.parametrize("case", ["unit_rows zero", "dim text", "embeddings 10**9 rows"])
def test_resuming_into_an_edited_store_is_one_line(store, celeba, case, capsys):
    """The ZeroDivisionError of `unit_rows: 0` on resume, among others, is a StoreError line now."""
    CASES[case][0](store)
    capsys.readouterr()
    assert main(args(celeba, store)) == 2
    assert CASES[case][1] in one_error_line(capsys)


def test_the_python_api_raises_store_error(store):
    set_attr(BB, "metadata", [1])(store)
    opened = FeatureStore.open(store)
    for read in (lambda: opened.read("tiny_test"), lambda: opened.backbone_info("tiny_test"),
                 lambda: opened.backbone_writer("tiny_test"), lambda: opened.status("tiny_test")):
        with pytest.raises(StoreError, match="attribute metadata is"):
            read()
