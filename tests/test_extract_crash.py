"""SIGKILL `extract` at every step that creates a store or a backbone, and at seeded random write steps
during units; each rerun of the same command must give a store equal to an uninterrupted run's.

The kill points come from the store's test hook (`features.store.CRASH_HOOK`): the process SIGKILLs
itself at a named step, or at its k-th write step. To stay fast, most runs are forked from this process
(torch already imported) and call `extract.cli.main`; one runs `python -m extract` as a subprocess.
Everything runs on one thread, so embeddings are bitwise comparable.
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
import torch
import zarr

from classify.cli import main as classify_main
from extract.cli import main
from features.store import CRASH_HOOK, FeatureStore, StoreError
from tests.fixtures import make_celeba, write_steps


REPO = Path(__file__).resolve().parents[1]
N, UNIT_ROWS, BACKBONES = 20, 4, ("tiny_test", "tiny_test_b")  # 5 units per backbone
pytestmark = pytest.mark.usefixtures("tiny_backbones")  # registered for this module only
CREATION_STEPS = ["store:root", "store:table/ids", "store:table/gender", "store:table/split",
                  "store:table/attributes/Male", "store:backbones", "store:declared",
                  "backbone:group", "backbone:embeddings", "backbone:status", "backbone:done",
                  "backbone:declared"]
N_RANDOM, SEED = 20, 9


@pytest.fixture(scope="module")
def celeba(tmp_path_factory) -> Path:
    return make_celeba(tmp_path_factory.mktemp("data"), n=N)


def args(root: Path, store: Path) -> list[str]:
    return ["--dataset", "celeba", "--root", str(root), "--backbones", *BACKBONES, "--store", str(store),
            "--unit-rows", str(UNIT_ROWS), "--batch-size", "3", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="module")
def steps(celeba, tmp_path_factory) -> list[str]:
    """The write steps of an uninterrupted run, in order (a spy on the hook)."""
    return write_steps(lambda: main(args(celeba, tmp_path_factory.mktemp("steps") / "features.zarr")))


@pytest.fixture(scope="module")
def reference(celeba, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("reference") / "features.zarr"
    assert main(args(celeba, store)) == 0
    return store


def contents(path: Path) -> dict:
    """Everything a store holds but its creation times."""
    group = zarr.open_group(str(path), mode="r")
    held = {"attrs": {k: v for k, v in group.attrs.items() if k != "created"}}
    for name, array in group["table"].arrays():
        held[f"table/{name}"] = array[:].tolist()
    for name, array in group["table/attributes"].arrays():
        held[f"attributes/{name}"] = array[:].tolist()
    for name, backbone in group["backbones"].groups():
        held[name] = {k: v for k, v in backbone.attrs.items() if k != "created"}
        # the saved run config names the --plugin that the subprocess run needs and the in-process one not
        held[name]["metadata"].get("extract_config", {}).pop("plugins", None)
        held[f"{name}/embeddings"] = backbone["embeddings"][:].tobytes()
        held[f"{name}/status"] = backbone["status"][:].tolist()
        held[f"{name}/done"] = backbone["done"][:].tolist()
    return held


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in the forked children: OpenMP thread teams do not survive a fork, and
    one thread makes every run's embeddings bitwise equal (the subprocess runs with OMP_NUM_THREADS=1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def killed_run(command: list[str], point: str, *, timeout: float = 60) -> None:
    """Run `main(command)` in a forked child that SIGKILLs itself at `point`."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.environ[CRASH_HOOK] = point
            code = main(command)
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the run to be killed at {point} hung")
        time.sleep(0.02)
    status = waited[1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"not killed at {point}"


def kill_and_rerun(celeba, store: Path, point: str) -> None:
    command = args(celeba, store)
    killed_run(command, point)
    # what classify sees in between: the complete backbones, never a traceback for a half-created one
    if (store / "zarr.json").exists():
        try:
            opened = FeatureStore.open(store)
            [opened.is_complete(name) for name in opened.backbones()]
        except StoreError as error:
            assert "creation was interrupted" in str(error)
    assert main(command) == 0


@pytest.mark.parametrize("step", CREATION_STEPS)
def test_a_kill_at_each_creation_step_then_the_same_command_equals_an_uninterrupted_run(
        celeba, reference, steps, tmp_path, step):
    assert step in steps
    kill_and_rerun(celeba, tmp_path / "features.zarr", step)
    assert contents(tmp_path / "features.zarr") == contents(reference)


@pytest.mark.parametrize("draw", range(N_RANDOM))
def test_a_kill_at_a_random_write_step_then_the_same_command_equals_an_uninterrupted_run(
        celeba, reference, steps, tmp_path, draw):
    point = int(np.random.default_rng(SEED).choice(len(steps), N_RANDOM, replace=False)[draw]) + 1
    kill_and_rerun(celeba, tmp_path / "features.zarr", str(point))
    assert contents(tmp_path / "features.zarr") == contents(reference)


def test_a_half_created_second_backbone_does_not_stop_classify(celeba, steps, tmp_path):
    store = tmp_path / "features.zarr"
    second = [i for i, step in enumerate(steps) if step == "backbone:embeddings"][1] + 1
    killed_run(args(celeba, store), str(second))
    assert FeatureStore.open(store).backbones() == ["tiny_test"]
    assert classify_main(["train", "--store", str(store), "--out", str(tmp_path / "heads"),
                          "--heads", "logreg"]) == 0
    assert sorted(path.name for path in (tmp_path / "heads").glob("*__*.json")) == ["tiny_test__logreg.json"]


def test_python_m_extract_killed_while_creating_a_backbone_then_rerun(celeba, reference, tmp_path):
    store = tmp_path / "features.zarr"
    command = [sys.executable, "-m", "extract", *args(celeba, store), "--plugin", "tests.extract_tiny"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(command, cwd=REPO, env={**env, CRASH_HOOK: "backbone:status"}, timeout=120,
                            capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    rerun = subprocess.run(command, cwd=REPO, env=env, timeout=120, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "half-created by an interrupted run; creating it again" in rerun.stderr
    assert contents(store) == contents(reference)
