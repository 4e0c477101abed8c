"""Dataset readers on tiny generated folders: every layout parses right, every bad input says why."""
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from features.dataset import FEMALE, MALE, DatasetError
from features.datasets import dataset_kinds, load_dataset
from features.datasets.celeba import read_attribute_file, read_partition_file
from features.datasets.splits import stratified_split
from tests.fixtures import (CELEBA_FILES, attribute_lines, celeba_labels, make_celeba,
                            make_folder_dataset, make_utkface, male_column,
                            write_full_size_attribute_file, write_lines)


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    """Replace the regex `old` by `new` in a generated file (count=0: everywhere)."""
    text, replaced = re.subn(old, new, path.read_bytes().decode(), count=count)
    assert replaced, f"fixture changed: {old!r} not in {path}"
    path.write_bytes(text.encode())


# --- registry ---------------------------------------------------------------------------------

def test_registry_lists_kinds_and_rejects_unknown_ones(tmp_path):
    assert dataset_kinds() == ["celeba", "folder", "utkface"]
    with pytest.raises(ValueError, match="unknown dataset kind 'imagenet'; valid: celeba, folder, utkface"):
        load_dataset("imagenet", tmp_path)


@pytest.mark.parametrize("kind", ["celeba", "utkface", "folder"])
def test_missing_root_is_named(tmp_path, kind):
    with pytest.raises(DatasetError, match=f"{kind} dataset root .*nowhere does not exist"):
        load_dataset(kind, tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="file.txt is not a folder"):
        load_dataset(kind, tmp_path / "file.txt")


def test_loaders_called_directly_check_the_root_and_give_absolute_paths(tmp_path, monkeypatch):
    from features.datasets.celeba import load_celeba
    make_celeba(tmp_path, n=3)
    monkeypatch.chdir(tmp_path)
    data = load_celeba("celeba_flat")
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in data.paths)
    assert data.root == str(tmp_path.resolve() / "celeba_flat")
    with pytest.raises(DatasetError, match="celeba dataset root missing does not exist"):
        load_celeba("missing")


# --- CelebA -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["flat", "nested", "csv"])
def test_celeba_layouts_give_labels_splits_attributes_and_identity(tmp_path, layout):
    root = make_celeba(tmp_path, n=12, layout=layout)
    labels = celeba_labels(12)
    data = load_dataset("celeba", root)
    assert data.name == "celeba" and data.split_seed is None
    assert data.ids.tolist() == labels.ids
    np.testing.assert_array_equal(data.gender, male_column(labels))
    assert data.gender.dtype == np.int8 and data.split.dtype == np.int8
    np.testing.assert_array_equal(data.split, labels.split)
    assert set(data.attributes) == set(labels.names) | {"identity"}
    for column, name in enumerate(labels.names):
        np.testing.assert_array_equal(data.attributes[name], labels.attributes[:, column], err_msg=name)
    np.testing.assert_array_equal(data.attributes["identity"], labels.identity)
    image_folder = (root / CELEBA_FILES[layout][3]).resolve()
    assert [Path(p) for p in data.paths] == [image_folder / i for i in labels.ids]
    assert cv2.imread(str(data.paths[0])).shape == (218, 178, 3)  # real 178x218 JPEGs


def test_celeba_csv_images_directly_in_img_align_celeba(tmp_path):
    root = make_celeba(tmp_path, n=6, layout="csv", identity=False)
    inner = root / "img_align_celeba" / "img_align_celeba"
    for image in inner.iterdir():
        image.rename(root / "img_align_celeba" / image.name)
    inner.rmdir()
    data = load_dataset("celeba", root)
    assert Path(data.paths[0]).parent == (root / "img_align_celeba").resolve()
    assert "identity" not in data.attributes


def test_celeba_lf_line_ends_and_male_only_attribute_file(tmp_path):
    root = make_celeba(tmp_path, n=10, names=("Male",), newline="\n")
    data = load_dataset("celeba", root)
    np.testing.assert_array_equal(data.gender, male_column(celeba_labels(10, names=("Male",))))
    assert set(data.attributes) == {"Male", "identity"}


def test_celeba_rows_follow_the_partition_file_order(tmp_path):
    root = make_celeba(tmp_path, n=9)
    labels = celeba_labels(9)
    lines = attribute_lines(labels)
    write_lines(root / "list_attr_celeba.txt", lines[:2] + lines[:1:-1], newline="\r\n")  # rows reversed
    data = load_dataset("celeba", root)
    assert data.ids.tolist() == labels.ids
    np.testing.assert_array_equal(data.gender, male_column(labels))
    np.testing.assert_array_equal(data.attributes["Smiling"],
                                  labels.attributes[:, labels.names.index("Smiling")])


def test_celeba_missing_images_are_counted_and_named(tmp_path):
    root = make_celeba(tmp_path, n=12)
    for image_id in ("000003.jpg", "000007.jpg"):
        (root / "img_align_celeba" / image_id).unlink()
    missing = r"missing from .*img_align_celeba: 2 \(first: 000003.jpg, 000007.jpg\)"
    with pytest.raises(DatasetError, match=missing):
        load_dataset("celeba", root)


def test_celeba_missing_label_files_say_where_they_were_looked_for(tmp_path):
    root = make_celeba(tmp_path, n=3)
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(DatasetError) as error:
        load_dataset("celeba", root)
    message = str(error.value)
    assert "found only list_attr_celeba.txt" in message
    for looked_for in ("flat: list_attr_celeba.txt + list_eval_partition.txt",
                       "nested: Anno/list_attr_celeba.txt + Eval/list_eval_partition.txt",
                       "csv: list_attr_celeba.csv + list_eval_partition.csv"):
        assert looked_for in message


def test_celeba_missing_image_folder(tmp_path):
    root = make_celeba(tmp_path, n=3, layout="nested")
    shutil.rmtree(root / "Img")
    with pytest.raises(DatasetError, match=r"image folder .*Img/img_align_celeba does not exist \(nested"):
        load_dataset("celeba", root)


def test_celeba_ids_only_in_one_label_file(tmp_path):
    root = make_celeba(tmp_path, n=6)
    edit(root / "list_eval_partition.txt", "000006.jpg 2\r\n", "")
    edit(root / "list_eval_partition.txt", "000001.jpg 0", "000099.jpg 0")
    with pytest.raises(DatasetError) as error:
        load_dataset("celeba", root)
    message = str(error.value)
    assert "1 (first: 000099.jpg) ids in list_eval_partition.txt but not in list_attr_celeba.txt" in message
    assert "2 (first: 000001.jpg, 000006.jpg) ids in list_attr_celeba.txt but not in list_eval_partition.txt" \
        in message


def test_celeba_identity_file_must_cover_the_same_ids(tmp_path):
    root = make_celeba(tmp_path, n=6)
    edit(root / "identity_CelebA.txt", "000004.jpg 2\r\n", "")
    only_in_partition = r"1 \(first: 000004.jpg\) ids in list_eval_partition.txt but not in identity_CelebA.txt"
    with pytest.raises(DatasetError, match=only_in_partition):
        load_dataset("celeba", root)


@pytest.mark.parametrize("file_name, old, new, message", [
    ("list_eval_partition.txt", "000005.jpg 0", "000002.jpg 0", r"duplicate ids: 1 \(first: 000002.jpg\)"),
    ("list_attr_celeba.txt", "000005.jpg", "000002.jpg", r"duplicate ids: 1 \(first: 000002.jpg\)"),
    ("list_eval_partition.txt", "000004.jpg 0", "000004.jpg 3",
     r"split codes must be one of 0, 1, 2; bad values in 1 \(first: 000004.jpg \('3'\)\)"),
    ("list_eval_partition.txt", "000004.jpg 0", "000004.jpg 0 1",
     r"1 malformed line\(s\), each should have 2 fields \(line 4: '000004.jpg 0 1'\)"),
    ("list_attr_celeba.txt", "000003.jpg +-?1", "000003.jpg",
     r"1 malformed line\(s\), each should have 41 fields \(line 5: '000003.jpg "),
    ("list_attr_celeba.txt", "000002.jpg +-?1", "000002.jpg  0",
     r"attribute values must be one of 1, -1, \+1; bad values in 1 \(first: 000002.jpg \('0'\)\)"),
    ("list_attr_celeba.txt", "12\r\n", "13\r\n", "line 1 says 13 rows but the file has 12"),
    ("list_attr_celeba.txt", " Male ", " Female ", "no 'Male' column among the attributes 40"),
    ("list_attr_celeba.txt", " Smiling ", " Male ",  # before: the last 'Male' column was the label
     r"names the attribute\(s\) 'Male' more than once; keep one column per attribute"),
    ("identity_CelebA.txt", "000002.jpg 1", "000002.jpg x",
     r"identities must be a non-negative integer.*1 \(first: 000002.jpg \('x'\)\)"),
])
def test_celeba_bad_label_files_raise_naming_the_problem(tmp_path, file_name, old, new, message):
    root = make_celeba(tmp_path, n=12)
    edit(root / file_name, old, new)
    with pytest.raises(DatasetError, match=message) as error:
        load_dataset("celeba", root)
    assert file_name in str(error.value)


def test_celeba_bad_values_are_all_counted(tmp_path):
    root = make_celeba(tmp_path, n=12, names=("Male",))
    edit(root / "list_attr_celeba.txt", " 1\r\n", " 2\r\n", count=0)  # every male row
    with pytest.raises(DatasetError, match=r"bad values in 6 \(first: 000002.jpg \('2'\), 000004.jpg"):
        load_dataset("celeba", root)


def test_celeba_csv_attribute_header_naming_a_column_twice_is_refused(tmp_path):
    root = make_celeba(tmp_path, n=6, layout="csv")
    edit(root / "list_attr_celeba.csv", ",Smiling,", ",Male,")
    edit(root / "list_attr_celeba.csv", ",Young", ",Wavy_Hair")
    with pytest.raises(DatasetError, match=r"list_attr_celeba.csv: the header names the attribute\(s\) "
                                           r"'Male', 'Wavy_Hair' more than once"):
        load_dataset("celeba", root)


def test_celeba_csv_label_values(tmp_path):
    root = make_celeba(tmp_path, n=6, layout="csv")
    edit(root / "list_eval_partition.csv", "000003.jpg,0", "000003.jpg,")
    with pytest.raises(DatasetError, match=r"partition.csv: 1 malformed line.*line 4: '000003.jpg,'"):
        load_dataset("celeba", root)


# --- label-only readers -----------------------------------------------------------------------

def test_label_only_readers_agree_with_the_labels(tmp_path):
    labels = celeba_labels(15)
    root = make_celeba(tmp_path, n=15, newline="\n")
    ids, split = read_partition_file(root / "list_eval_partition.txt")
    assert ids.tolist() == labels.ids and split.dtype == np.int8
    np.testing.assert_array_equal(split, labels.split)
    ids, names, values = read_attribute_file(root / "list_attr_celeba.txt")
    assert names == list(labels.names) and values.dtype == np.int8
    np.testing.assert_array_equal(values, labels.attributes)


def test_attribute_file_cut_short_parses_without_the_count_check(tmp_path):
    labels = celeba_labels(8)
    path = write_lines(tmp_path / "cut.txt", ["202599"] + attribute_lines(labels)[1:], newline="\r\n")
    with pytest.raises(DatasetError, match="says 202599 rows but the file has 8"):
        read_attribute_file(path)
    ids, _, values = read_attribute_file(path, check_count=False)
    assert len(ids) == 8
    np.testing.assert_array_equal(values, labels.attributes)


def test_full_size_attribute_file_parses(tmp_path):
    """202,599 rows x 40 attributes, like the real list_attr_celeba.txt (speed: scripts/bench/bench_labels.py)."""
    path, signs = write_full_size_attribute_file(tmp_path / "list_attr_celeba.txt")
    ids, parsed_names, parsed = read_attribute_file(path)
    assert ids[0] == "000001.jpg" and ids[-1] == "202599.jpg" and len(parsed_names) == signs.shape[1]
    np.testing.assert_array_equal(parsed, signs)


# --- UTKFace ----------------------------------------------------------------------------------

@pytest.mark.parametrize("nested", [True, False])
def test_utkface_labels_from_names_with_gender_flipped_to_one_male(tmp_path, nested):
    root = make_utkface(tmp_path, n=20, nested=nested)
    data = load_dataset("utkface", root, seed=3)
    names = sorted(p.name for p in (root / "UTKFace" if nested else root).iterdir())
    assert data.ids.tolist() == names and data.name == "utkface" and data.split_seed == 3
    fields = np.array([name.split("_")[:3] for name in names], dtype=int)
    np.testing.assert_array_equal(data.gender, np.where(fields[:, 1] == 0, MALE, FEMALE))
    assert (data.gender == MALE).sum() == 8  # 2 of every 5 fixture names
    np.testing.assert_array_equal(data.attributes["age"], fields[:, 0])
    np.testing.assert_array_equal(data.attributes["race"], fields[:, 2])
    assert data.attributes["age"].dtype == np.int16 and data.attributes["race"].dtype == np.int8
    assert all(Path(p).is_file() and Path(p).is_absolute() for p in data.paths)


def test_utkface_split_is_seeded_and_stratified(tmp_path):
    root = make_utkface(tmp_path, n=40)
    first, again, other = (load_dataset("utkface", root, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(first.split, again.split)
    assert not np.array_equal(first.split, other.split)
    for label in (MALE, FEMALE):  # 16 male -> 12/2/2 (>= 1 each), 24 female -> 20/2/2
        counts = np.bincount(first.split[first.gender == label], minlength=3)
        assert counts.tolist() == ([12, 2, 2] if label == MALE else [20, 2, 2])


def test_utkface_malformed_names_are_counted_and_listed(tmp_path):
    bad = ["39_1_5_20170116174525125.jpg.chip.jpg", "61_3_0_20170109150557335.jpg.chip.jpg", "face.jpg"]
    root = make_utkface(tmp_path, n=5, extra_names=bad)
    listed = r"3 \(first: 39_1_5_2017.*, 61_3_0_.*, face.jpg\) file names do not follow"
    with pytest.raises(DatasetError, match=listed):
        load_dataset("utkface", root)


def test_utkface_accepts_the_known_name_variant_and_ignores_other_files(tmp_path):
    root = make_utkface(tmp_path, n=4, extra_names=["55_0_0_20170116232725357jpg.chip.jpg"])
    (root / "UTKFace" / "notes.txt").write_text("not an image")
    (root / "UTKFace" / ".hidden.jpg").write_bytes(b"")
    data = load_dataset("utkface", root)
    assert len(data) == 5 and "55_0_0_20170116232725357jpg.chip.jpg" in data.ids


def test_utkface_names_without_a_race_are_kept_with_race_unknown(tmp_path):
    no_race = ["39_1_20170116174525125.jpg.chip.jpg", "61_0_20170109150557335.jpg.chip.jpg"]
    root = make_utkface(tmp_path, n=4, extra_names=no_race)  # as the 3 such files of the full release
    data = load_dataset("utkface", root)
    rows = [data.ids.tolist().index(name) for name in no_race]
    assert data.attributes["race"][rows].tolist() == [-1, -1]
    assert data.attributes["age"][rows].tolist() == [39, 61] and data.gender[rows].tolist() == [FEMALE, MALE]
    assert (data.attributes["race"] >= 0).sum() == 4


def test_utkface_without_images(tmp_path):
    (tmp_path / "UTKFace").mkdir()
    with pytest.raises(DatasetError, match=r"no UTKFace images \(\*.jpg\) in .*UTKFace"):
        load_dataset("utkface", tmp_path)


# --- folder -----------------------------------------------------------------------------------

def test_folder_dataset_ids_labels_and_extensions(tmp_path):
    root = make_folder_dataset(tmp_path, n_male=4, n_female=5)
    (root / "female" / "sub").mkdir()
    (root / "female" / "sub" / "extra.BMP").write_bytes(b"BM")
    (root / "male" / "notes.txt").write_text("not an image")
    (root / "male" / ".DS_Store").write_bytes(b"")
    data = load_dataset("folder", root, seed=1)
    assert data.ids.tolist() == sorted(data.ids.tolist()) and len(data) == 10
    assert "female/sub/extra.BMP" in data.ids and "male/male_002.JPEG" in data.ids
    assert not any(i.endswith((".txt", ".DS_Store")) for i in data.ids)
    np.testing.assert_array_equal(data.gender, [MALE if i.startswith("male/") else FEMALE for i in data.ids])
    assert [Path(p) for p in data.paths] == [root.resolve() / i for i in data.ids]
    assert data.split_seed == 1 and data.name == "folder"


def test_folder_class_names_match_in_any_case(tmp_path):
    root = make_folder_dataset(tmp_path, n_male=3, n_female=3)
    (root / "male").rename(root / "Male")
    data = load_dataset("folder", root)
    assert data.gender[np.char.startswith(data.ids, "Male/")].tolist() == [MALE] * 3
    assert data.gender.sum() == 3


def test_folder_missing_or_empty_class_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no 'male' folder; .* found folders: none"):
        load_dataset("folder", tmp_path / "empty")
    root = make_folder_dataset(tmp_path, n_male=3, n_female=3)
    shutil.rmtree(root / "female")
    (root / "women").mkdir()
    expected = (r"no 'female' folder; expected one 'male' and one 'female' folder, "
                r"found folders: 2 \(first: male, women\)")
    with pytest.raises(DatasetError, match=expected):
        load_dataset("folder", root)
    (root / "women").rename(root / "female")
    (root / "female" / "readme.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"class folder .*female holds no images"):
        load_dataset("folder", root)


# --- split ------------------------------------------------------------------------------------

def test_stratified_split_keeps_class_shares_and_is_reproducible():
    labels = np.repeat([0, 1], [1000, 300])
    split = stratified_split(labels, seed=5)
    np.testing.assert_array_equal(split, stratified_split(labels, seed=5))
    assert split.dtype == np.int8
    assert np.bincount(split[labels == 0]).tolist() == [800, 100, 100]
    assert np.bincount(split[labels == 1]).tolist() == [240, 30, 30]
    assert not np.array_equal(split, stratified_split(labels, seed=6))


def test_utkface_names_must_carry_a_datetime_and_an_age_in_range(tmp_path):
    bad = ["25_0_3.jpg.chip.jpg", "0_1_0_20170116174525125.jpg.chip.jpg",
           "999_0_1_20170116174525126.jpg.chip.jpg", "117_0_1_20170116174525127.jpg.chip.jpg"]
    root = make_utkface(tmp_path, n=4, extra_names=bad)
    with pytest.raises(DatasetError) as raised:
        load_dataset("utkface", root)
    message = str(raised.value)
    assert "\n" not in message and "4 (first: " in message
    for name in bad:
        assert name in message
    assert "1..116" in message


def test_utkface_ages_at_the_bounds_are_kept(tmp_path):
    names = ["1_0_0_20170116174525125.jpg.chip.jpg", "116_1_2_20170116174525126.jpg.chip.jpg"]
    data = load_dataset("utkface", make_utkface(tmp_path, n=4, extra_names=names))
    rows = [data.ids.tolist().index(name) for name in names]
    assert data.attributes["age"][rows].tolist() == [1, 116]


def test_utkface_a_name_that_is_not_utf8_is_named(tmp_path):
    root = make_utkface(tmp_path, n=4)
    folder = os.fsencode(root / "UTKFace")
    bad = b"30_0_1_20170116174525125\xff.jpg.chip.jpg"
    with open(os.path.join(folder, bad), "wb") as handle:
        handle.write(b"\xff\xd8\xff")
    with pytest.raises(DatasetError) as raised:
        load_dataset("utkface", root)
    message = str(raised.value)
    assert "not valid UTF-8" in message and "30_0_1_20170116174525125" in message and "1 " in message


@pytest.mark.skipif(not (REAL_UTKFACE := Path(__file__).resolve().parents[1] / "../shared/data/utkface").is_dir(),
                    reason="../shared/data/utkface is absent")
def test_utkface_real_subset_loads_all_5000_rows():
    data = load_dataset("utkface", REAL_UTKFACE)
    assert len(data) == 5000
    assert data.attributes["age"].min() >= 1 and data.attributes["age"].max() <= 116
