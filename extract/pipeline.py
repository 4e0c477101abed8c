"""The extraction loop: reader (`extract.images`) -> model (`embed_batch`) -> writer (`UnitSink`).

`extract_units` embeds the rows of the given store units of one backbone and writes each unit as
soon as all its rows are embedded; the store writes a unit's rows before its completion marker, so
a run killed at any moment leaves only whole units marked done, and the same command resumes with
the pending ones. Batches follow unit order and never cross a unit boundary: a resumed (or
distributed) run computes exactly the batches an uninterrupted one does.

`embed_paths` is the store-less variant for predicting on a handful of images.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from extract.backbones import Backbone, load_backbone
from extract.images import ImageRows, default_workers, make_loader, start_workers, unit_batches
from features.store import BackboneWriter, Status

log = logging.getLogger(__name__)


class ExtractionInterrupted(Exception):
    """Ctrl-C during extraction; the workers are shut down and every finished unit is kept."""

    def __init__(self, backbone: str):
        super().__init__(f"extraction of {backbone!r} interrupted")
        self.backbone = backbone


@dataclass
class RunStats:
    """What one run (or one rank) did for one backbone."""

    rows: int = 0
    units: int = 0
    seconds: float = 0.0
    status: Counter = field(default_factory=Counter)  # Status name -> rows
    invalid_examples: list[str] = field(default_factory=list)  # first few invalid paths

    def add(self, other: RunStats) -> RunStats:
        """Merge another rank's stats (runs in parallel: the slowest rank sets the time)."""
        return RunStats(rows=self.rows + other.rows, units=self.units + other.units,
                        seconds=max(self.seconds, other.seconds), status=self.status + other.status,
                        invalid_examples=(self.invalid_examples + other.invalid_examples)[:5])

    def summary(self, backbone: str) -> str:
        if not self.rows:
            return f"{backbone}: nothing left to embed"
        invalid = ", ".join(f"{self.status[s.name]} {s.name.lower().replace('_', ' ')}"
                            for s in (Status.UNREADABLE, Status.NO_FACE))
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        examples = f" (first invalid: {', '.join(self.invalid_examples)})" if self.invalid_examples else ""
        return (f"{backbone}: {self.rows} rows in {self.units} units, {self.status[Status.OK.name]} valid, "
                f"invalid: {invalid}{examples}; {self.seconds:.1f} s, {rate:.1f} images/s")


# -- model step -----------------------------------------------------------------------------------
def resolve_device(device: str | torch.device, *, local_rank: int | None = None) -> torch.device:
    """"auto" -> cuda when available (cuda:LOCAL_RANK under torchrun), else cpu."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available here")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return device


def embed_batch(backbone: Backbone, batch: torch.Tensor, status: torch.Tensor) -> np.ndarray:
    """(B, dim) float32 embeddings of a batch; NaN rows where status is not OK."""
    ok = (status == Status.OK).numpy()
    out = np.full((len(status), backbone.dim), np.nan, dtype=np.float32)
    if not ok.any():
        return out  # nothing valid: no need to run the model on placeholders
    if backbone.uses_torch_device:
        batch = batch.to(backbone.device, non_blocking=True)
    with torch.inference_mode():
        embeddings = backbone.embed(batch)
    embeddings = embeddings.float().cpu().numpy()
    if embeddings.shape != out.shape:
        raise ValueError(f"backbone {backbone.name!r} returned embeddings {embeddings.shape}, "
                         f"expected {out.shape}")
    out[ok] = embeddings[ok]
    return out


# -- writer ---------------------------------------------------------------------------------------
class _UnitBuffer:
    def __init__(self, start: int, stop: int, dim: int):
        self.start = start
        self.embeddings = np.full((stop - start, dim), np.nan, dtype=np.float32)
        self.status = np.zeros(stop - start, dtype=np.uint8)  # PENDING until its row arrives
        self.missing = stop - start


class UnitSink:
    """Buffers embedded rows per unit, in any order, and writes each unit once all its rows are in."""

    def __init__(self, writer: BackboneWriter, units: Sequence[int]):
        self.writer = writer
        spans = [writer.unit_rows(u) for u in units]
        self._buffers = {u: _UnitBuffer(start, stop, writer.dim) for u, (start, stop) in zip(units, spans)}
        self._starts = np.array([start for start, _ in spans], dtype=np.int64)
        self._units = np.asarray(units, dtype=np.int64)
        order = np.argsort(self._starts)
        self._starts, self._units = self._starts[order], self._units[order]
        self.written: list[int] = []

    def add(self, rows: np.ndarray, embeddings: np.ndarray, status: np.ndarray) -> list[int]:
        """Place rows by index; write (rows, then done marker) every unit this completes."""
        units = self._units[np.searchsorted(self._starts, rows, side="right") - 1]
        completed = []
        for unit in np.unique(units):
            buffer = self._buffers[int(unit)]
            local = rows[units == unit] - buffer.start
            if (local >= len(buffer.status)).any() or (buffer.status[local] != Status.PENDING).any():
                raise RuntimeError(f"unit {unit}: rows {rows[units == unit].tolist()} arrived twice "
                                   "or lie outside the unit")
            buffer.embeddings[local] = embeddings[units == unit]
            buffer.status[local] = status[units == unit]
            buffer.missing -= len(local)
            if buffer.missing == 0:
                with _sigint_deferred():  # Ctrl-C while writing: finish this unit, then stop
                    self.writer.write_unit(int(unit), buffer.embeddings, buffer.status)
                del self._buffers[int(unit)]
                completed.append(int(unit))
        self.written.extend(completed)
        return completed

    def check_complete(self) -> None:
        """Every unit handed in was written (the loop saw every row)."""
        if self._buffers:
            left = {u: b.missing for u, b in self._buffers.items()}
            raise RuntimeError(f"units left with rows never embedded (unit: rows missing): {left}")


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold back Ctrl-C until the block ends, then raise it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


# -- the loop -------------------------------------------------------------------------------------
def extract_units(writer: BackboneWriter, backbone: Backbone, paths: Sequence[str],
                  units: Sequence[int], *, batch_size: int = 64, workers: int | None = None,
                  progress: bool = True) -> RunStats:
    """Embed the rows of `units` (in unit order) with `backbone` and write them through `writer`.

    Raises `ExtractionInterrupted` on Ctrl-C after shutting the reader workers down; every unit
    written before that stays done.
    """
    units = sorted(units)
    if not units:
        return RunStats()
    spans = [writer.unit_rows(u) for u in units]
    reader = ImageRows(paths, backbone.preprocessor, input_shape=backbone.input_shape,
                       input_dtype=backbone.input_dtype)
    pin = backbone.uses_torch_device and backbone.device.type == "cuda"
    loader = make_loader(reader, unit_batches(spans, batch_size),
                         workers=default_workers() if workers is None else workers, pin_memory=pin)
    sink, stats = UnitSink(writer, units), RunStats()
    started = time.perf_counter()
    batches = start_workers(loader)
    bar = tqdm(total=sum(stop - start for start, stop in spans), unit="img", desc=backbone.name,
               disable=not progress, smoothing=0.1)
    try:
        for rows, batch, status in batches:
            embeddings = embed_batch(backbone, batch, status)
            rows, status = rows.numpy(), status.numpy()
            stats.units += len(sink.add(rows, embeddings, status))
            _count(stats, status, [paths[r] for r in rows[status != Status.OK]])
            bar.update(len(rows))
    except KeyboardInterrupt:
        raise ExtractionInterrupted(backbone.name) from None
    finally:
        bar.close()
        _shutdown(batches)
    sink.check_complete()
    stats.seconds = time.perf_counter() - started
    return stats


def _count(stats: RunStats, status: np.ndarray, invalid_paths: list[str]) -> None:
    stats.rows += len(status)
    stats.status.update(Status(int(code)).name for code in status)
    stats.invalid_examples.extend(invalid_paths[:5 - len(stats.invalid_examples)])


def _shutdown(batches) -> None:
    """Stop the DataLoader workers now (not whenever the iterator is collected)."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


# -- store-less embedding -------------------------------------------------------------------------
def embed_paths(paths: Sequence[str], backbone: str, *, weights: str | None = None,
                device: str = "auto", batch_size: int = 32, workers: int | None = 0,
                precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Embed image files without a store: ((N, dim) float32 with NaN rows, (N,) uint8 `Status`).

    workers: DataLoader workers (0 decodes in this process; None = min(4, CPUs)).
    """
    paths = [str(p) for p in paths]
    model = load_backbone(backbone, weights=weights, device=resolve_device(device), precision=precision)
    reader = ImageRows(paths, model.preprocessor, input_shape=model.input_shape,
                       input_dtype=model.input_dtype)
    embeddings = np.full((len(paths), model.dim), np.nan, dtype=np.float32)
    status = np.zeros(len(paths), dtype=np.uint8)
    pin = model.uses_torch_device and model.device.type == "cuda"
    loader = make_loader(reader, unit_batches([(0, len(paths))], batch_size),
                         workers=default_workers() if workers is None else workers, pin_memory=pin)
    for rows, batch, batch_status in start_workers(loader):
        embeddings[rows.numpy()] = embed_batch(model, batch, batch_status)
        status[rows.numpy()] = batch_status.numpy()
    assert (status != Status.PENDING).all(), "every path must have been read"
    return embeddings, status
