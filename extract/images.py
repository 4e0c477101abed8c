"""The reader of the extraction loop: decode images, preprocess them, batch them by store unit.

Each item is ``(row, array, status)``: the row of the dataset table, the preprocessed array (a zero
placeholder of the right shape and dtype when the image is invalid, so batches stay rectangular)
and a `Status` code. Invalid images never stop a run: an image OpenCV cannot decode (missing,
truncated, not an image) is UNREADABLE, one where the backbone's aligner finds no face is NO_FACE.
Batches never straddle two store units, so a resumed run feeds the model exactly the same batches
as an uninterrupted one (which keeps the CPU results bitwise equal).
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from extract.backbones import NoFaceFound
from features.store import Status

Preprocessor = Callable[[np.ndarray], np.ndarray]


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(*, gpu: bool = False) -> int:
    """Reader processes: half the CPUs (at most 4 for a CPU model), so workers plus the model's
    threads (`default_threads`) never ask for more cores than there are.

    With a GPU, measured on a 16-core H200 machine (resnet50 bf16, batch 256): 8 workers fed 5,360
    images/s, 14 only 3,340, as the workers then starve the main process that collects their batches.
    On CPU the old min(4, CPUs) plus torch's one thread per core oversubscribed a 2-core machine, and
    any competing process then stalled torch's OpenMP barriers (issue 12, PERFORMANCE.md).
    """
    cpus = available_cpus()
    return max(1, cpus // 2) if gpu else max(1, min(4, cpus // 2))


def default_threads(*, gpu: bool = False, workers: int | None = None) -> int:
    """torch intra-op threads: the CPUs the reader workers leave free (at least one).

    An OpenMP parallel region waits for its slowest thread; with more busy threads than cores, a
    descheduled thread stalls every operator, which is what made efficientnet_lite0 10x slower with
    one competing process. With a GPU the main process only launches kernels: 2 threads are enough.
    """
    workers = default_workers(gpu=gpu) if workers is None else workers
    spare = max(1, available_cpus() - workers)
    return min(2, spare) if gpu else spare


def configure_threads(*, gpu: bool = False, workers: int | None = None, threads: int | None = None) -> int:
    """Set torch's intra-op threads for extraction (``threads``, else `default_threads`); returns it."""
    torch.set_num_threads(threads or default_threads(gpu=gpu, workers=workers))
    return torch.get_num_threads()


def read_bgr(path: str) -> np.ndarray | None:
    """The image as BGR uint8 HxWx3, or None when it is missing, truncated or not an image."""
    return cv2.imread(path, cv2.IMREAD_COLOR)


def quiet_opencv() -> None:
    """OpenCV errors only: an unreadable image is counted and summarised, not warned about per file."""
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def worker_init(worker_id: int) -> None:
    """Each DataLoader worker decodes on one thread (the workers are the parallelism)."""
    cv2.setNumThreads(1)
    quiet_opencv()


class ImageRows(Dataset):
    """Rows of the dataset table -> (row, preprocessed array, status)."""

    def __init__(self, paths: Sequence[str], preprocessor: Preprocessor, *,
                 input_shape: tuple[int, ...], input_dtype: str = "float32"):
        self.paths = list(paths)
        self.preprocessor = preprocessor
        self.input_shape = tuple(input_shape)
        self.input_dtype = np.dtype(input_dtype)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> tuple[int, np.ndarray, int]:
        image = read_bgr(self.paths[row])
        if image is None:
            return row, self._placeholder(), int(Status.UNREADABLE)
        try:
            array = self.preprocessor(image)
        except NoFaceFound:
            return row, self._placeholder(), int(Status.NO_FACE)
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
    """Row batches of at most `batch_size`, unit after unit, none crossing a unit boundary."""
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, not {batch_size}")
    return [list(range(begin, min(begin + batch_size, stop)))
            for start, stop in spans for begin in range(start, stop, batch_size)]


def make_loader(rows: ImageRows, batches: list[list[int]], *, workers: int,
                pin_memory: bool = False, prefetch: int = 4) -> DataLoader:
    """A DataLoader yielding `batches` in order (workers keep that order), decoding in `workers`.

    Workers are not persistent: each loader makes a single pass (one backbone), so keeping them
    alive would only hold idle processes.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, not {workers}")
    options = {"worker_init_fn": worker_init, "prefetch_factor": prefetch} if workers else {}
    return DataLoader(rows, batch_sampler=batches, num_workers=workers, collate_fn=collate_rows,
                      pin_memory=pin_memory, **options)


def start_workers(loader: DataLoader) -> Iterator:
    """`iter(loader)`, forking its workers while OpenCV's thread pool is stopped.

    A child forked from a process whose OpenCV thread pool has run (an OpenCV-DNN net's forward, a
    resize) deadlocks in `cv2.setNumThreads`; with the pool stopped for the fork it does not.
    ("spawn"/"forkserver" workers avoid that too, but outlive a SIGKILLed parent.)
    """
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        return iter(loader)
    finally:
        cv2.setNumThreads(threads)

