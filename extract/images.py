"""The reader of the extraction loop: decode images (`extract.decode`), preprocess them, batch them by unit.

Each item is ``(row, array, status)``: the row of the dataset table, the preprocessed array (a zero
placeholder when the image is invalid: UNREADABLE, TOO_LARGE or NO_FACE, which never stops a run) and a
`Status` code. With `faces` (the run's detection pass) a face backbone aligns from the stored face row,
and a row whose detection failed takes that status undecoded: every backbone drops the same images.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from extract.backbones import NoFaceFound
from extract.decode import ImageTooLarge, Unreadable, decode
from extract.detect import FaceLocator
from extract.face_row import scaled
from features.store import Status


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(*, gpu: bool = False, model_in_workers: bool = False) -> int:
    """Reader processes: half the CPUs (at most 4 for a CPU model), so workers plus the model's threads
    (`default_threads`) never ask for more cores than there are; every CPU when the model itself runs in
    the workers (dlib's net, the detection pass). More starve the main process that collects their batches
    (16-core H200, resnet50: 8 workers fed 5,360 images/s, 14 only 3,340; PERFORMANCE.md)."""
    cpus = available_cpus()
    if model_in_workers:
        return cpus
    return max(1, cpus // 2) if gpu else max(1, min(4, cpus // 2))


def default_threads(*, gpu: bool = False, workers: int | None = None) -> int:
    """torch intra-op threads: the CPUs the reader workers leave free (at least one; at most 2 with a GPU,
    which they only feed). An OpenMP region waits for its slowest thread: more busy threads than cores stall
    every operator (efficientnet_lite0 ran 10x slower beside one other process)."""
    workers = default_workers(gpu=gpu) if workers is None else workers
    spare = max(1, available_cpus() - workers)
    return min(2, spare) if gpu else spare


def configure_threads(*, gpu: bool = False, workers: int | None = None, threads: int | None = None) -> int:
    """Lower torch's intra-op threads to ``threads`` (else `default_threads`); returns the count in force.
    Only ever lowered: a process forked after OpenMP ran (a test harness, a fork-based launcher) has one
    thread, GNU OpenMP's pool not surviving a fork, and raising it deadlocks the first parallel operator."""
    wanted = threads or default_threads(gpu=gpu, workers=workers)
    torch.set_num_threads(min(wanted, torch.get_num_threads()))
    return torch.get_num_threads()


# The front end's exceptions and the store status each makes a row: written once, used by every reader.
_STATUS_OF_ERROR = ((Unreadable, Status.UNREADABLE), (ImageTooLarge, Status.TOO_LARGE), (NoFaceFound, Status.NO_FACE))
INVALID_ROW_ERRORS = tuple(error for error, _ in _STATUS_OF_ERROR)


def invalid_status(error: Exception) -> int:
    """The `Status` code of a row whose decoding or face finding raised ``error``."""
    return next(int(status) for kind, status in _STATUS_OF_ERROR if isinstance(error, kind))


def quiet_opencv() -> None:
    """OpenCV errors only: an unreadable image is counted and summarised, not warned about per file."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def worker_init(worker_id: int) -> None:
    """Each DataLoader worker decodes on one thread (the workers are the parallelism)."""
    cv2.setNumThreads(1)
    quiet_opencv()


class ImageRows(Dataset):
    """Rows of the dataset table -> (row, preprocessed array, status)."""

    def __init__(self, paths: Sequence[str], preprocessor: Callable[[np.ndarray], np.ndarray], *,
                 input_shape: tuple[int, ...], input_dtype: str = "float32",
                 faces: np.ndarray | None = None, face_status: np.ndarray | None = None):
        self.paths = list(paths)
        self.preprocessor = preprocessor
        self.input_shape = tuple(input_shape)
        self.input_dtype = np.dtype(input_dtype)
        self.faces, self.face_status = faces, face_status
        # the detection pass itself: its rows go back to original-image coordinates
        self.locates_faces = isinstance(preprocessor, FaceLocator)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> tuple[int, np.ndarray, int]:
        if self.faces is not None and self.face_status[row] != Status.OK:
            return row, self._placeholder(), int(self.face_status[row])
        try:
            decoded = decode(self.paths[row])
            if self.faces is not None:
                array = self.preprocessor.align(decoded.image, scaled(self.faces[row], decoded.scale))
            else:
                array = self.preprocessor(decoded.image)
                if self.locates_faces:
                    array = scaled(array, 1.0 / decoded.scale)
        except INVALID_ROW_ERRORS as error:
            return row, self._placeholder(), invalid_status(error)
        if array.shape != self.input_shape or array.dtype != self.input_dtype:
            raise ValueError(f"backbone preprocessor returned {array.dtype} {array.shape} for "
                             f"{self.paths[row]}, expected {self.input_dtype} {self.input_shape}")
        return row, array, int(Status.OK)

    def _placeholder(self) -> np.ndarray:
        return np.zeros(self.input_shape, dtype=self.input_dtype)


def collate_rows(items: list[tuple[int, np.ndarray, int]]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows int64 (B,), arrays (B, *input_shape), status uint8 (B,)) as tensors."""
    rows, arrays, status = zip(*items)
    return (torch.tensor(rows, dtype=torch.int64), torch.from_numpy(np.stack(arrays)),
            torch.tensor(status, dtype=torch.uint8))


def unit_batches(spans: Iterable[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Row batches of at most `batch_size`, unit after unit, none crossing a unit boundary: a resumed run
    feeds the model exactly an uninterrupted run's batches, which keeps CPU results bitwise equal."""
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, not {batch_size}")
    return [list(range(begin, min(begin + batch_size, stop)))
            for start, stop in spans for begin in range(start, stop, batch_size)]


def make_loader(rows: Dataset, batches: list[list[int]], *, workers: int | None, gpu: bool = False,
                pin_memory: bool = False, collate: Callable[[list], Any] = collate_rows,
                model_in_workers: bool = False) -> DataLoader:
    """A DataLoader yielding `batches` of `rows` in order, decoding in `workers` processes (None:
    `default_workers`; 0: this process). Not persistent: a loader makes one pass (one backbone)."""
    workers = default_workers(gpu=gpu, model_in_workers=model_in_workers) if workers is None else workers
    options = {"worker_init_fn": worker_init, "prefetch_factor": 4} if workers else {}
    return DataLoader(rows, batch_sampler=batches, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, **options)


def start_workers(loader: DataLoader) -> Iterator:
    """`iter(loader)`, forking its workers while OpenCV's thread pool is stopped: a child forked from a
    process whose pool has run (a DNN forward, a resize) deadlocks in `cv2.setNumThreads`. ("spawn" and
    "forkserver" workers avoid that too, but outlive a SIGKILLed parent.)"""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return iter(loader)
    finally:
        cv2.setNumThreads(threads)

