"""The extraction loop: reader (`extract.images`) -> model (`start_embedding`) -> writer (`UnitSink`).

One batch is in flight on the GPU while a writer thread (`BackgroundSink`) stores the finished ones. A
unit is written (its rows, then its completion marker) once all its rows are embedded, so a run killed
at any moment keeps only whole units and the same command resumes the rest. Batches never cross a unit
boundary (`unit_batches`): a resumed or distributed run computes the batches an uninterrupted one does,
bitwise equal on CPU. `extract.embed` is the store-less variant.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from extract import device_front
from extract.backbones import Backbone
from extract.images import ImageRows, collate_rows, make_loader, start_workers, unit_batches
from features.store import BackboneWriter, Status

log = logging.getLogger(__name__)


class ExtractionInterrupted(Exception):
    """Ctrl-C during extraction; the workers are shut down and every finished unit is kept."""


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
                            for s in (Status.UNREADABLE, Status.NO_FACE, Status.TOO_LARGE))
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        examples = f" (first invalid: {', '.join(self.invalid_examples)})" if self.invalid_examples else ""
        return (f"{backbone}: {self.rows} rows in {self.units} units, {self.status[Status.OK.name]} valid, "
                f"invalid: {invalid}{examples}; {self.seconds:.1f} s, {rate:.1f} images/s")


# -- progress -----------------------------------------------------------------------------------
PROGRESS_EVERY_S = 10.0


def duration(seconds: float) -> str:
    """`42 s`, `7 min 05 s`, `3 h 12 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Progress of one backbone: a tqdm bar on a terminal, else (a batch job, CI, `| tee`: a run there can
    take hours) a log line every `PROGRESS_EVERY_S` seconds with the rows done, the rate and the time left;
    `--no-progress` turns the bar off, not the lines."""

    def __init__(self, total: int, *, name: str, bar: bool = True, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.name, self.done = total, name, 0
        self.every = PROGRESS_EVERY_S if every is None else every
        self._clock = clock
        self._started = self._last = clock()
        self._bar = tqdm(total=total, unit="img", desc=name, smoothing=0.1) \
            if bar and sys.stderr.isatty() else None

    def update(self, rows: int) -> None:
        self.done += rows
        if self._bar is not None:
            self._bar.update(rows)
        elif self._clock() - self._last >= self.every or self.done >= self.total:
            self._last = self._clock()
            log.info("%s", self.line())

    def line(self) -> str:
        """`sface: 1200 of 6000 rows (20%), 14.8 images/s, about 5 min 24 s left`."""
        elapsed = self._clock() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = f"about {duration((self.total - self.done) / rate)} left" if rate > 0 else "time left unknown"
        return (f"{self.name}: {self.done} of {self.total} rows ({100 * self.done / max(self.total, 1):.0f}%), "
                f"{rate:.1f} images/s, {left if self.done < self.total else 'done'}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# -- model step -----------------------------------------------------------------------------------
class PendingEmbeddings:
    """One batch's embeddings, possibly still being computed and copied back by the GPU."""

    def __init__(self, backbone: Backbone, ok: np.ndarray, values: torch.Tensor | None,
                 ready: torch.cuda.Event | None = None):
        self.backbone, self.ok, self.values, self.ready = backbone, ok, values, ready

    def result(self) -> np.ndarray:
        """(B, dim) float32 embeddings; NaN rows where status is not OK. Waits for this batch only."""
        out = np.full((len(self.ok), self.backbone.dim), np.nan, dtype=np.float32)
        if self.values is None:
            return out
        if self.ready is not None:
            self.ready.synchronize()
        values = self.values.numpy()
        if values.shape != out.shape:
            raise ValueError(f"backbone {self.backbone.name!r} returned embeddings {values.shape}, "
                             f"expected {out.shape}")
        out[self.ok] = values[self.ok]
        return out


def start_embedding(backbone: Backbone, batch: torch.Tensor, status: torch.Tensor) -> PendingEmbeddings:
    """Queue a batch on the backbone's device and return at once on CUDA (the copy back is queued too),
    so the GPU embeds batch i+1 while the CPU writes batch i."""
    ok = (status == Status.OK).numpy()
    if not ok.any():
        return PendingEmbeddings(backbone, ok, None)  # nothing valid: don't run the model on placeholders
    if backbone.uses_torch_device:
        batch = batch.to(backbone.device, non_blocking=True)
    with torch.inference_mode():
        embeddings = backbone.embed(batch).float()
    if embeddings.device.type != "cuda":
        return PendingEmbeddings(backbone, ok, embeddings.cpu())
    host = torch.empty(embeddings.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(embeddings, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record()
    return PendingEmbeddings(backbone, ok, host, ready)


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
        units = sorted(units)  # in row order: a store's units hold consecutive rows
        spans = [writer.unit_rows(u) for u in units]
        self._buffers = {u: _UnitBuffer(start, stop, writer.dim) for u, (start, stop) in zip(units, spans)}
        self._starts, self._stops = np.array(spans, dtype=np.int64).reshape(-1, 2).T
        self._units = np.asarray(units, dtype=np.int64)
        self.written: list[int] = []

    def _units_of(self, rows: np.ndarray) -> np.ndarray:
        """The unit of each row; a RuntimeError for rows outside the units handed in or already written."""
        index = np.searchsorted(self._starts, rows, side="right") - 1
        outside = (index < 0) | (rows >= self._stops[np.maximum(index, 0)])
        if outside.any():
            raise RuntimeError(f"rows {rows[outside].tolist()} lie outside the units being embedded "
                               f"({self._units.tolist()})")
        units = self._units[index]
        late = [int(unit) for unit in np.unique(units) if int(unit) not in self._buffers]
        if late:
            raise RuntimeError(f"units {late} were already written; rows {rows[np.isin(units, late)].tolist()} "
                               "arrived after them")
        return units

    def add(self, rows: np.ndarray, embeddings: np.ndarray, status: np.ndarray) -> list[int]:
        """Place rows by index; write (rows, then done marker) every unit this completes."""
        units = self._units_of(np.asarray(rows, dtype=np.int64))
        completed = []
        for unit in np.unique(units):
            buffer = self._buffers[int(unit)]
            local = rows[units == unit] - buffer.start
            if (buffer.status[local] != Status.PENDING).any():  # `_units_of` placed them inside the unit
                raise RuntimeError(f"unit {unit}: rows {rows[units == unit].tolist()} arrived twice")
            buffer.embeddings[local] = embeddings[units == unit]
            buffer.status[local] = status[units == unit]
            buffer.missing -= len(local)
            if buffer.missing == 0:
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


class BackgroundSink:
    """Runs `UnitSink.add` (and so the store writes) in a thread, overlapping the next batches. An error
    there is raised again in the caller at its next `add` or at `close`. Ctrl-C raises KeyboardInterrupt
    in the main thread only, so it cannot stop a store write half-way."""

    def __init__(self, sink: UnitSink, *, depth: int = 8):
        self.sink = sink
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="unit-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.sink.add(*item)
                except BaseException as error:  # noqa: BLE001 - handed to the caller
                    self._error = error

    def add(self, rows: np.ndarray, embeddings: np.ndarray, status: np.ndarray) -> None:
        self._raise_error()
        self._queue.put((rows, embeddings, status))

    def close(self) -> None:
        """Write everything queued, stop the thread, raise its error if any."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    @property
    def written(self) -> list[int]:
        return self.sink.written

    def check_complete(self) -> None:
        self.sink.check_complete()


# -- the loop -------------------------------------------------------------------------------------
def extract_units(writer: BackboneWriter, backbone: Backbone, paths: Sequence[str],
                  units: Sequence[int], *, batch_size: int = 64, workers: int | None = None,
                  progress: bool = True, faces: tuple[np.ndarray, np.ndarray] | None = None,
                  decode_on_device: bool = False) -> RunStats:
    """Embed the rows of `units` (in unit order) with `backbone` and write them through `writer`.
    faces: (face rows, status) of every row from the run's detection pass, for a face backbone.
    decode_on_device: JPEGs decoded and chips cut on the backbone's device (`extract.device_front`).
    Ctrl-C raises `ExtractionInterrupted` once the reader workers are shut down (written units stay)."""
    units = sorted(units)
    if not units:
        return RunStats()
    spans = [writer.unit_rows(u) for u in units]
    face_rows, face_status = faces if faces is not None else (None, None)
    rows_of = device_front.EncodedRows if decode_on_device else ImageRows
    reader = rows_of(paths, backbone.preprocessor, input_shape=backbone.input_shape,
                     input_dtype=backbone.input_dtype, faces=face_rows, face_status=face_status)
    pin = backbone.uses_torch_device and backbone.device.type == "cuda"
    loader = make_loader(reader, unit_batches(spans, batch_size), workers=workers, gpu=pin, pin_memory=pin,
                         model_in_workers=backbone.runs_in_workers,
                         collate=device_front.collate_encoded if decode_on_device else collate_rows)
    sink, stats = BackgroundSink(UnitSink(writer, units)), RunStats()
    started = time.perf_counter()
    workers_batches = start_workers(loader)
    batches = (device_front.device_batches(backbone, reader, face_rows, workers_batches)
               if decode_on_device else workers_batches)
    bar = Progress(sum(stop - start for start, stop in spans), name=backbone.name, bar=progress)
    in_flight = None
    try:
        for rows, batch, status in batches:
            pending = (rows.numpy(), status.numpy(), start_embedding(backbone, batch, status))
            if in_flight is not None:
                _finish(in_flight, sink, stats, paths, bar)
            in_flight = pending
        if in_flight is not None:
            _finish(in_flight, sink, stats, paths, bar)
        sink.close()
    except KeyboardInterrupt:
        raise ExtractionInterrupted(f"extraction of {backbone.name!r} interrupted") from None
    finally:
        _stop(sink, bar, workers_batches)
    sink.check_complete()
    stats.units = len(sink.written)
    stats.seconds = time.perf_counter() - started
    return stats


def _stop(sink: BackgroundSink, bar, batches) -> None:
    """Write what is queued, then stop the progress bar and the reader workers (also after errors): the
    DataLoader workers now, not whenever the iterator is collected."""
    try:
        with contextlib.suppress(Exception):  # a writer error must not hide the one being raised
            sink.close()
    finally:
        bar.close()
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def _finish(batch: tuple, sink: BackgroundSink, stats: RunStats, paths: Sequence[str], bar) -> None:
    rows, status, pending = batch
    sink.add(rows, pending.result(), status)
    stats.rows += len(status)
    stats.status.update(Status(int(code)).name for code in status)
    stats.invalid_examples.extend([paths[r] for r in rows[status != Status.OK]][:5 - len(stats.invalid_examples)])
    bar.update(len(rows))
