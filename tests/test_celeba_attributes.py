"""CelebA attributes from every `list_attr_celeba*.txt` given (issue 10): the 40-attribute rows of part
of the images merge with the Male-only file; images without a value get MISSING_ATTRIBUTE (-1)."""
from pathlib import Path

import numpy as np
import pytest

from features.dataset import DatasetError
from features.datasets.celeba import MISSING_ATTRIBUTE, load_celeba
from tests.fixtures import (CELEBA_ATTRIBUTES, attribute_lines, celeba_labels, make_celeba, male_column,
                            write_lines)

REAL_CELEBA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "celeba"


def _extra_file(root: Path, labels, rows: slice, name="list_attr_celeba_40attr_subset.txt"):
    part = type(labels)(ids=labels.ids[rows], split=labels.split[rows], identity=labels.identity[rows],
                        names=labels.names, attributes=labels.attributes[rows])
    write_lines(root / name, attribute_lines(part), newline="\r\n")


def test_extra_attribute_file_merges_with_missing_code(tmp_path):
    root = make_celeba(tmp_path, n=12, names=("Male",))
    full = celeba_labels(12)  # same Male column (every other id) as the Male-only file
    _extra_file(root, full, slice(2, 7))
    dataset = load_celeba(root)
    assert set(dataset.attributes) == set(CELEBA_ATTRIBUTES) | {"identity"}
    smiling = dataset.attributes["Smiling"]
    column = full.attributes[:, full.names.index("Smiling")]
    np.testing.assert_array_equal(smiling[2:7], column[2:7])
    assert np.all(smiling[:2] == MISSING_ATTRIBUTE) and np.all(smiling[7:] == MISSING_ATTRIBUTE)
    np.testing.assert_array_equal(dataset.gender, male_column(full))  # Male untouched, no missing values


def test_extra_file_that_contradicts_male_is_refused(tmp_path):
    root = make_celeba(tmp_path, n=12, names=("Male",))
    flipped = celeba_labels(12)
    flipped.attributes[:, flipped.names.index("Male")] ^= 1
    _extra_file(root, flipped, slice(0, 4))
    with pytest.raises(DatasetError, match="'Male' disagrees"):
        load_celeba(root)


def test_extra_file_naming_an_attribute_twice_is_refused(tmp_path):
    root = make_celeba(tmp_path, n=12, names=("Male",))
    _extra_file(root, celeba_labels(12), slice(0, 4))
    extra = root / "list_attr_celeba_40attr_subset.txt"
    extra.write_bytes(extra.read_bytes().replace(b" Smiling ", b" Male ", 1))
    with pytest.raises(DatasetError, match=r"40attr_subset.txt: the header names the attribute\(s\) 'Male' "
                                           "more than once"):
        load_celeba(root)


def test_extra_file_rows_outside_the_dataset_are_ignored(tmp_path):
    root = make_celeba(tmp_path, n=6, names=("Male",))
    _extra_file(root, celeba_labels(12), slice(0, 12))  # covers 12 ids, the dataset has 6
    assert np.all(load_celeba(root).attributes["Eyeglasses"] >= 0)


@pytest.mark.skipif(not REAL_CELEBA.is_dir(), reason="../shared/data/celeba not present")
def test_real_subset_has_40_attributes_for_548_images():
    dataset = load_celeba(REAL_CELEBA)
    have = dataset.attributes["Smiling"] != MISSING_ATTRIBUTE
    assert have.sum() == 548
    assert all(int((dataset.attributes[name] != MISSING_ATTRIBUTE).sum()) == 548
               for name in CELEBA_ATTRIBUTES if name != "Male")
    assert np.all(dataset.attributes["Male"] >= 0)
