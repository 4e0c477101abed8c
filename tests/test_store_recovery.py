"""Recovery of a face-backbone store: a damaged detection pass found and repaired by verify, kills while a
store is first written or rebuilt, while a half-created backbone is deleted, and between the detection
pass and its template check. Every case ends with the same extract command giving the store an
uninterrupted run gives.

Kills are deterministic: a child process SIGKILLs itself at a write step (`CRASH_HOOK`), or inside zarr's
atomic write or shutil.rmtree at the file named; a state a kill leaves in some file orders only is made
directly. sface (offline OpenCV-DNN weights) is the face backbone; the images are synthetic CelebA
aligned ones, so every row takes the dataset's template and the runs are quick.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

from extract.cli import main
from features.store import CRASH_HOOK, FACES, FeatureStore, StoreError
from tests.fixtures import extracted_store, flip_bit, one_error_line, write_steps

REPO = Path(__file__).resolve().parents[1]
N, UNIT_ROWS = 8, 4  # 2 units per entry


def args(root: Path, store: Path) -> list[str]:
    return ["--dataset", "celeba", "--root", str(root), "--backbones", "sface", "--store", str(store),
            "--unit-rows", str(UNIT_ROWS), "--workers", "0", "--no-progress"]


celeba, reference, store = extracted_store(n=N, args=args)


@pytest.fixture(scope="module")
def steps(celeba, tmp_path_factory) -> list[str]:
    """The write steps of an uninterrupted run, in order (a spy on the hook)."""
    return write_steps(lambda: main(args(celeba, tmp_path_factory.mktemp("steps") / "features.zarr")))


def entries(path: Path) -> dict:
    """What the store's entries hold: bytes of every array, and the metadata but its creation times."""
    held = {}
    for name, group in zarr.open_group(str(path), mode="r")["backbones"].groups():
        metadata = dict(group.attrs["metadata"])
        metadata.pop("extract_config", None)
        held[name] = {"metadata": metadata, **{array: group[array][:].tobytes()
                                               for array in ("embeddings", "status", "done")}}
    return held


def killed_run(command: list[str], *, hook: str | None = None, patch: str = "") -> None:
    """Extract's `main(command)` in a child process killed at the CRASH_HOOK step `hook`, or by `patch`:
    Python run in the child first, with this module as `t`, that arranges for the child to SIGKILL
    itself. A new process, not a fork: a fork of this one, whose earlier runs used OpenCV's DNN, can
    hang in the child's first forward pass (sface runs one at load)."""
    code = "\n".join(["import sys", "from pathlib import Path", "import tests.test_store_recovery as t", patch,
                      "from extract.cli import main", f"sys.exit(main({command!r}))"])
    env = {**os.environ, **({CRASH_HOOK: hook} if hook else {})}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, timeout=180, capture_output=True)
    assert done.returncode == -signal.SIGKILL, f"not killed (rc {done.returncode}): {done.stderr.decode()[-2000:]}"


def kill_after_unlinking(store_part: Path) -> None:
    """Make this process SIGKILL itself right after it deletes `store_part/zarr.json` (as shutil.rmtree
    does, by a file descriptor of its folder, or by path)."""
    unlink = os.unlink

    def unlink_then_die(path, *, dir_fd=None):
        unlink(path, dir_fd=dir_fd)
        folder = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else os.path.dirname(str(path))
        if os.path.basename(str(path)) == "zarr.json" and Path(folder) == store_part:
            os.kill(os.getpid(), signal.SIGKILL)

    os.unlink = unlink_then_die


def kill_in_first_zarr_json_write() -> None:
    """SIGKILL inside zarr's atomic write of the first zarr.json (the root's, when the store is new): its
    `zarr.<hex>.partial` temporary is written, not yet moved to its name (a link when the write is
    exclusive, else a rename)."""
    import pathlib

    import zarr.storage._local as local

    def die_before(move):
        def move_or_die(source, destination):
            if str(destination).endswith("zarr.json"):
                os.kill(os.getpid(), signal.SIGKILL)
            return move(source, destination)
        return move_or_die

    local._safe_move = die_before(local._safe_move)
    pathlib.Path.replace = die_before(pathlib.Path.replace)


# -- 1. a damaged detection pass: verify finds it, --repair un-marks it and the rows embedded from it ----
@pytest.mark.parametrize("chunk", ["embeddings/c/1/0", "done/c/1"])
def test_verify_repairs_a_damaged_face_unit_and_the_face_backbone_units_cut_from_it(celeba, reference, store,
                                                                                     capsys, chunk):
    named, chunk = chunk, store / "backbones" / FACES / chunk
    flip_bit(chunk, byte=0)  # a value byte: the chunk's checksum no longer matches
    capsys.readouterr()
    assert main(args(celeba, store)) == 2
    assert FACES in one_error_line(capsys)
    assert main(["verify", "--store", str(store)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{FACES} unit 1: {named}: does not decode")
    assert out[1].startswith("sface unit 1: embedded from damaged face rows") and len(out) == 2
    assert main(["verify", "--store", str(store), "--repair"]) == 0
    opened = FeatureStore.open(store)
    assert opened.backbone_writer(FACES).pending_units() == [1]
    assert opened.backbone_writer("sface").pending_units() == [1]
    assert main(args(celeba, store)) == 0
    assert "sface: 1 of 2 units to embed (1 done before)" in capsys.readouterr().err
    assert main(["verify", "--store", str(store)]) == 0
    assert entries(store) == entries(reference)


def test_verify_repair_unmarks_a_face_backbones_own_damage_and_its_units_cut_from_damaged_faces(celeba, reference,
                                                                                               store, capsys):
    """sface unit 0 damaged itself, unit 1 cut from a damaged face unit: both are re-embedded (the units
    cut from damaged faces once replaced the backbone's own damaged units, which stayed marked done)."""
    flip_bit(store / "backbones" / FACES / "embeddings/c/1/0", byte=0)
    flip_bit(store / "backbones" / "sface" / "embeddings/c/0/0", byte=0)
    capsys.readouterr()
    assert main(["verify", "--store", str(store), "--repair"]) == 0
    assert FeatureStore.open(store).backbone_writer("sface").pending_units() == [0, 1]
    assert main(args(celeba, store)) == 0
    assert main(["verify", "--store", str(store)]) == 0
    assert entries(store) == entries(reference)


# -- 2. a kill before the root zarr.json exists: our leftovers are rebuilt, foreign content refused -----
def test_a_kill_inside_the_first_root_zarr_json_write_then_the_same_command(celeba, reference, tmp_path):
    store = tmp_path / "features.zarr"
    killed_run(args(celeba, store), patch="t.kill_in_first_zarr_json_write()")
    assert [p.suffix for p in store.iterdir()] == [".partial"]  # the temporary, never renamed
    with pytest.raises(StoreError, match="creation was interrupted"):
        FeatureStore.open(store)
    assert main(args(celeba, store)) == 0
    assert entries(store) == entries(reference)


def test_a_kill_while_a_half_created_store_is_deleted_to_be_rebuilt_then_the_same_command(
        celeba, reference, tmp_path):
    store = tmp_path / "features.zarr"
    killed_run(args(celeba, store), hook="store:table/gender")  # half-created: the rerun rebuilds it
    killed_run(args(celeba, store), patch=f"t.kill_after_unlinking(Path({str(store)!r}))")  # killed in that rebuild
    assert not (store / "zarr.json").exists() and (store / "table").is_dir()
    assert main(args(celeba, store)) == 0
    assert entries(store) == entries(reference)


@pytest.mark.parametrize("foreign", ["notes.txt", "table/notes.txt", "photos/a.jpg"])
def test_leftovers_beside_foreign_content_are_refused_and_left_alone(celeba, tmp_path, capsys, foreign):
    store = tmp_path / "features.zarr"
    killed_run(args(celeba, store), hook="store:table/gender")
    (store / "zarr.json").unlink()  # as a kill in the rebuild's rmtree leaves it
    (store / foreign).parent.mkdir(parents=True, exist_ok=True)
    (store / foreign).write_text("mine")
    before = sorted(str(p.relative_to(store)) for p in store.rglob("*"))
    capsys.readouterr()
    assert main(args(celeba, store)) == 2
    assert "existing folder that is not a Zarr store" in one_error_line(capsys)
    assert sorted(str(p.relative_to(store)) for p in store.rglob("*")) == before


# -- 3. a kill while a half-created backbone is deleted: its arrays without its group zarr.json ---------
def test_a_half_created_backbone_without_its_group_metadata_is_deleted_and_built_again(
        celeba, reference, tmp_path, capsys):
    store = tmp_path / "features.zarr"
    killed_run(args(celeba, store), hook="backbone:status")  # _faces: group, embeddings, status
    # what a kill in the rerun's rmtree of it leaves when zarr.json goes first: the arrays alone
    (store / "backbones" / FACES / "zarr.json").unlink()
    assert (store / "backbones" / FACES / "embeddings" / "zarr.json").exists()
    capsys.readouterr()
    assert main(args(celeba, store)) == 0
    assert "half-created by an interrupted run; creating it again" in capsys.readouterr().err
    assert entries(store) == entries(reference)


def test_a_kill_in_the_rmtree_of_a_half_created_backbone_then_the_same_command(celeba, reference, tmp_path):
    store = tmp_path / "features.zarr"
    killed_run(args(celeba, store), hook="backbone:status")
    killed_run(args(celeba, store), patch=f"t.kill_after_unlinking(Path({str(store / 'backbones' / FACES)!r}))")
    assert main(args(celeba, store)) == 0
    assert entries(store) == entries(reference)


# -- 4. a kill between the last detection unit and the template check ---------------------------------
def test_a_kill_right_after_the_detection_pass_still_records_its_template_check(celeba, reference, steps,
                                                                                tmp_path):
    store = tmp_path / "features.zarr"
    last_face_unit = steps.index("backbone:group", steps.index("backbone:declared")) - 1
    assert steps[last_face_unit] == "unit:done"
    # a subprocess: OpenCV's thread pool, used by the detection pass here already, hangs a forked child
    killed = subprocess.run([sys.executable, "-m", "extract", *args(celeba, store)], cwd=REPO, timeout=120,
                            env={**os.environ, CRASH_HOOK: str(last_face_unit + 1)}, capture_output=True)
    assert killed.returncode == -signal.SIGKILL  # the hook counts steps from 1
    opened = FeatureStore.open(store)
    assert opened.is_complete(FACES) and "template_check" not in opened.backbone_info(FACES)["metadata"]
    assert main(args(celeba, store)) == 0
    check = FeatureStore.open(store).backbone_info(FACES)["metadata"]["template_check"]
    assert (check["valid_rows"], check["template_fallback_rows"]) == (N, N)
    assert entries(store) == entries(reference)
