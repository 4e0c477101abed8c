"""The readers on the real shared data (../shared/data); skipped where that folder is absent.

Counts are those documented in ../shared/data/README.md.
"""
from pathlib import Path

import numpy as np
import pytest

from features.dataset import FEMALE, MALE, split_code
from features.datasets import load_dataset
from features.datasets.celeba import (read_attribute_file, read_identity_file,
                                      read_partition_file)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FULL = DATA / "celeba_labels_full"


def needs(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"real data not present at {path}")


@needs(DATA / "celeba")
def test_celeba_subset_counts_split_and_identity():
    data = load_dataset("celeba", DATA / "celeba")
    assert len(data) == 6000
    assert np.bincount(data.split, minlength=3).tolist() == [4560, 780, 660]
    assert int((data.gender == MALE).sum()) == 1726
    for split, males, females in (("train", 1351, 3209), ("val", 219, 561), ("test", 156, 504)):
        gender = data.gender[data.split == split_code(split)]
        assert ((gender == MALE).sum(), (gender == FEMALE).sum()) == (males, females), split
    identity = data.attributes["identity"]
    assert len(np.unique(identity)) == 200
    per_identity_splits = [np.unique(data.split[identity == i]).size for i in np.unique(identity)]
    assert max(per_identity_splits) == 1  # the official split is identity-disjoint
    assert all(Path(p).is_file() for p in data.paths[:20])


@needs(DATA / "celeba")
def test_celeba_40_attribute_subset_found_by_header_name():
    ids, names, values = read_attribute_file(DATA / "celeba" / "list_attr_celeba_40attr_subset.txt")
    assert len(ids) == 548 and len(names) == 40 and names.index("Male") == 20
    data = load_dataset("celeba", DATA / "celeba")
    row = {image_id: index for index, image_id in enumerate(data.ids)}
    np.testing.assert_array_equal(values[:, names.index("Male")], data.gender[[row[i] for i in ids]])


@needs(FULL)
def test_full_label_files_parse_and_agree():
    ids, split = read_partition_file(FULL / "list_eval_partition.txt")
    identity_ids, identity = read_identity_file(FULL / "identity_CelebA.txt")
    assert np.bincount(split, minlength=3).tolist() == [162770, 19867, 19962]
    assert len(ids) == len(identity_ids) == 202599
    np.testing.assert_array_equal(ids, identity_ids)
    assert identity.min() >= 1


@needs(FULL)
def test_attribute_rows_cut_after_20000_parse():
    path = FULL / "list_attr_celeba_rows000001-020000.txt"
    ids, names, values = read_attribute_file(path, check_count=False)
    assert len(ids) == 20000 and len(names) == 40 and ids[-1] == "020000.jpg"
    assert set(np.unique(values).tolist()) == {0, 1}


@needs(DATA / "utkface")
def test_utkface_subset_counts():
    data = load_dataset("utkface", DATA / "utkface", seed=0)
    assert len(data) == 5000
    assert (int((data.gender == MALE).sum()), int((data.gender == FEMALE).sum())) == (2596, 2404)
    assert data.attributes["age"].min() >= 1 and data.attributes["age"].max() <= 116
    assert set(np.unique(data.attributes["race"]).tolist()) <= {0, 1, 2, 3, 4}
    for label in (MALE, FEMALE):  # 80/10/10 within each gender
        shares = np.bincount(data.split[data.gender == label], minlength=3) / (data.gender == label).sum()
        np.testing.assert_allclose(shares, [0.8, 0.1, 0.1], atol=0.002)
