"""Builders of tiny datasets on disk, in every layout the readers accept, for any test to use.

    root = make_celeba(tmp_path, n=12, layout="flat")       # also "nested", "csv"
    labels = celeba_labels(12)                              # what that folder holds, to assert on
    root = make_utkface(tmp_path, n=20)
    root = make_folder_dataset(tmp_path, n_male=6, n_female=6)
    table = synthetic_table(600, split=split_codes((300, 150, 150)))   # a table with no images
    fill_units(writer, lambda start, stop: (embeddings[start:stop], status[start:stop]))
    celeba, reference, store = extracted_store(n=20, args=args)  # module fixtures of a test that damages it

Images are real decodable images (random face-like drawings), so extraction tests can use them.
Everything is deterministic given the arguments.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from extract.demo import (CELEBA_ATTRIBUTES, CELEBA_FILES, CELEBA_SIZE, CelebaLabels,  # noqa: F401
                          attribute_lines, celeba_labels, face_image, fill_units, make_celeba,
                          split_codes, synthetic_table, write_face, write_lines)


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
