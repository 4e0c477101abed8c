"""Builders of tiny datasets on disk, in every layout the readers accept, for any test to use.

    root = make_celeba(tmp_path, n=12, layout="flat")       # also "nested", "csv"
    labels = celeba_labels(12)                              # what that folder holds, to assert on
    root = make_utkface(tmp_path, n=20)
    root = make_folder_dataset(tmp_path, n_male=6, n_female=6)
    table = synthetic_table(600, split=split_codes((300, 150, 150)))   # a table with no images
    fill_units(writer, lambda start, stop: (embeddings[start:stop], status[start:stop]))
    celeba, reference, store = extracted_store(n=20, args=args)  # module fixtures of a test that damages it

Images are real decodable images (random face-like drawings), so extraction tests can use them.
Everything is deterministic given the arguments. The image-less tables and stores serve scripts/bench/ too.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pytest

from extract.demo import (CELEBA_ATTRIBUTES, CELEBA_FILES, CELEBA_SIZE, CelebaLabels,  # noqa: F401
                          attribute_lines, celeba_labels, face_image, make_celeba, write_face, write_lines)
from features.dataset import Dataset

if TYPE_CHECKING:  # zarr: only the caller that writes a store has imported it
    from features.store import BackboneWriter


def male_column(labels: CelebaLabels) -> np.ndarray:
    """The 0/1 Male attribute of `celeba_labels`' rows."""
    return labels.attributes[:, labels.names.index("Male")]


def write_full_size_attribute_file(path: Path, rows: int = 202_599, names: int = 40, *,
                                   seed: int = 0) -> tuple[Path, np.ndarray]:
    """A `list_attr_celeba.txt` of the real file's size (CRLF), written in one go; (path, 0/1 values)."""
    rng = np.random.default_rng(seed)
    numbers = np.arange(1, rows + 1)[:, None]
    digits = (numbers // 10 ** np.arange(5, -1, -1) % 10 + ord("0")).astype(np.uint8)
    signs = rng.integers(0, 2, size=(rows, names), dtype=np.uint8)
    values = np.stack([np.full_like(signs, ord(" ")), np.where(signs, ord(" "), ord("-")),
                       np.full_like(signs, ord("1"))], axis=-1).astype(np.uint8).reshape(rows, -1)
    body = np.concatenate([digits, np.tile(np.frombuffer(b".jpg", np.uint8), (rows, 1)),
                           values, np.tile(np.frombuffer(b"\r\n", np.uint8), (rows, 1))], axis=1)
    header = f"{rows}\r\n" + " ".join(f"A{i}" for i in range(names)) + "\r\n"
    Path(path).write_bytes(header.encode() + body.tobytes())
    return Path(path), signs


def split_codes(sizes: tuple[int, ...]) -> np.ndarray:
    """int8 split codes: sizes[0] train rows, then sizes[1] val, then sizes[2] test (CelebA's order)."""
    return np.repeat(np.arange(len(sizes), dtype=np.int8), sizes)


def synthetic_table(n: int, *, name: str = "synthetic", root: str = ".", ids=None, paths=None,
                    gender=None, split=None, attributes=None, split_seed: int | None = None) -> Dataset:
    """A `Dataset` of n rows with no images behind it. Defaults: ids "000000.jpg".., paths = ids, every
    row female and train. Draws nothing at random: callers pass their own draws, so their data stay theirs."""
    ids = np.array([f"{i:06d}.jpg" for i in range(n)]) if ids is None else np.asarray(ids)
    return Dataset(name=name, root=str(root), ids=ids, paths=ids if paths is None else np.asarray(paths),
                   gender=np.zeros(n, np.int8) if gender is None else np.asarray(gender, dtype=np.int8),
                   split=np.zeros(n, np.int8) if split is None else np.asarray(split, dtype=np.int8),
                   attributes=dict(attributes or {}), split_seed=split_seed)


def fill_units(writer: BackboneWriter, rows: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
               units=None) -> None:
    """Write `units` of a backbone (default: every pending one), in order; ``rows(start, stop)`` gives
    the unit's (embeddings, status)."""
    for unit in writer.pending_units() if units is None else units:
        start, stop = writer.unit_rows(unit)
        writer.write_unit(unit, *rows(start, stop))



def utkface_name(age: int, gender: int, race: int, stamp: int) -> str:
    """A UTKFace file name; gender as in UTKFace: 0 male, 1 female."""
    return f"{age}_{gender}_{race}_{stamp}.jpg.chip.jpg"


def make_utkface(tmp_path: Path, n: int = 20, *, nested: bool = True, seed: int = 0,
                 extra_names=()) -> Path:
    """A UTKFace folder of n 200x200 JPEGs (2 of 5 male), in root/UTKFace/ or root/ itself.

    extra_names: further file names to create as they are (for malformed-name tests).
    """
    rng = np.random.default_rng(seed)
    root = Path(tmp_path) / "utkface"
    folder = root / "UTKFace" if nested else root
    names = [utkface_name(int(rng.integers(1, 100)), int(i % 5 >= 2), i % 5, 20170116000000000 + i)
             for i in range(n)]
    for number, name in enumerate([*names, *extra_names]):
        write_face(folder / name, size=(200, 200), seed=seed * 100_003 + number)
    return root


def make_folder_dataset(tmp_path: Path, n_male: int = 6, n_female: int = 6, *,
                        extensions=(".jpg", ".png", ".JPEG"), seed: int = 0) -> Path:
    """root/male/ and root/female/ holding small images, cycling through `extensions`."""
    root = Path(tmp_path) / "faces"
    for label, count in (("male", n_male), ("female", n_female)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for number in range(count):
            extension = extensions[number % len(extensions)]
            write_face(root / label / f"{label}_{number:03d}{extension}", size=(64, 80),
                       seed=seed * 100_003 + number + (0 if label == "male" else 50_000))
    return root


def extracted_store(*, n: int, args):
    """Three fixtures for the tests that damage a store: ``celeba``, a CelebA folder of ``n`` images;
    ``reference``, the store ``extract.cli.main(args(celeba, path))`` writes (both once per module); and
    ``store``, a fresh copy of it for each test."""
    @pytest.fixture(scope="module")
    def celeba(tmp_path_factory) -> Path:
        return make_celeba(tmp_path_factory.mktemp("data"), n=n)

    @pytest.fixture(scope="module")
    def reference(celeba, tmp_path_factory) -> Path:
        from extract.cli import main

        store = tmp_path_factory.mktemp("reference") / "features.zarr"
        assert main(args(celeba, store)) == 0
        return store

    @pytest.fixture
    def store(reference, tmp_path) -> Path:
        copy = tmp_path / "features.zarr"
        shutil.copytree(reference, copy)
        return copy

    return celeba, reference, store


def flip_bit(path: Path, byte: int = 5) -> None:
    """Flip a bit of a chunk file, its checksum left as it was (byte 5: an exponent bit of the second
    float32, 1e0 -> ~3e38 or the like)."""
    data = bytearray(path.read_bytes())
    data[byte] ^= 0x40
    path.write_bytes(bytes(data))


def one_error_line(capsys) -> str:
    """The one error line on stderr (progress lines may precede it; no traceback)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def write_steps(run) -> list[str]:
    """The store write steps (`features.store.crash.checkpoint`) an uninterrupted ``run()`` (an extract
    whose exit code it returns) passes, in order: where a crash test's kills can land."""
    from features.store import crash

    seen, hook = [], crash.checkpoint
    crash.checkpoint = seen.append
    try:
        assert run() == 0
    finally:
        crash.checkpoint = hook
    return seen


def scores_record(accuracy: float, *, n: int = 100, ci: tuple[float, float] | None = None, cm=None,
                  roc_auc: float = 0.9, **extra) -> dict:
    """One scored set of rows as a results file holds it (`classify.results.Scores`), with the given
    accuracy; every field a reader checks is present."""
    low, high = ci or (accuracy - 0.01, accuracy + 0.01)
    cm = cm or [[n // 2, 0], [0, n - n // 2]]
    return {"n": n, "accuracy": accuracy, "recall": accuracy, "female_recall": accuracy, "f1": accuracy,
            "macro_f1": accuracy, "roc_auc": roc_auc, "confusion_matrix": cm,
            "ci95": {"accuracy": [low, high], "f1": [low, high]}, "roc": {"fpr": [0, 1], "tpr": [0, 1]},
            "groups": {"summary": {"balanced_accuracy": accuracy, "worst_group": None}},
            "calibration": {"before": {"ece": 0.05}, "after": {"ece": 0.02}}, **extra}


def result_record(name: str, *, val: dict, test: dict, backbones: list[str] | None = None, head: str = "logreg",
                  invalid: int = 0, cross: dict | None = None) -> dict:
    """A complete results-file record (kind classify-run) of a run that never ran, for compare's tests."""
    return {"kind": "classify-run", "version": 3, "run": name,
            "config": {"backbones": backbones or [name], "head": head, "seed": 0, "stores": ["s.zarr"]},
            "store": {"path": "s.zarr", "dataset": "toy", "fingerprint": "f"},
            "metrics": {"val": val, "test": test}, "cross_dataset": cross or {},
            "decision": {"calibrator": {"method": "none"}, "threshold": {"rule": "default", "value": 0.5}},
            "selection": {}, "counts": {"test": {"invalid": {"no_face": invalid}}},
            "treatment": {"chosen": {"name": "none"}}, "balance": None, "timings": {"fit_s": 1.0},
            "head_file": {"name": f"{name}.npz", "sha256": "0" * 64}}


def typed(records: list[dict]) -> list:
    """Results records as compare takes them, read as a results folder's are (`classify.results.RunResult`)."""
    from classify.results import RunResult

    return [RunResult.from_json(record, record["run"]) for record in records]
