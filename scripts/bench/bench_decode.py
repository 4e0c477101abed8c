"""`--decode cpu` against `--decode device` (extract/device_front.py) for one face backbone, in one run.

On the same images and face rows (one detection pass first, untimed), batch size, workers and threads: the
extraction loop (`extract_units`) with the CPU front end (decode + chip in the reader workers), then with the
device one (bytes from the workers, batched decode and chip on the model's device). Prints images/s of
each, their ratio, and how far their rows are apart (statuses, max abs, min cosine).

    PYTHONPATH=. EXTRACT_SFACE_ENGINE=torch .venv/bin/python scripts/bench/bench_decode.py --backbone sface --images 256
    python scripts/bench/bench_decode.py --backbone efficientnet_lite0 --device cuda --precision bf16 \\
        --batch-size 256 --images 8192
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from extract.device_front import decodes_on_device
from extract.errors import UsageError
from extract.pipeline import extract_units
from extract.run import face_pass

from bench_extract import common_parser, parse_timed, prepare, synchronize  # a sibling script
from tests.fixtures import synthetic_table  # importable: bench_extract put the repository root on sys.path


class MemoryWriter:
    """A store's `BackboneWriter` in memory: units of `unit` rows."""

    def __init__(self, n_rows: int, dim: int, unit: int):
        self.n_rows, self.dim, self.unit = n_rows, dim, unit
        self.embeddings = np.full((n_rows, dim), np.nan, np.float32)
        self.status = np.zeros(n_rows, np.uint8)

    @property
    def units(self) -> list[int]:
        return list(range(-(-self.n_rows // self.unit)))

    def unit_rows(self, unit: int) -> tuple[int, int]:
        return unit * self.unit, min((unit + 1) * self.unit, self.n_rows)

    def write_unit(self, unit: int, embeddings: np.ndarray, status: np.ndarray) -> None:
        start, stop = self.unit_rows(unit)
        self.embeddings[start:stop], self.status[start:stop] = embeddings, status


def timed_run(backbone, paths, faces, args, *, on_device: bool) -> tuple[float, MemoryWriter]:
    """images/s of the loop after a warm-up unit (lazy init, cuDNN autotune)."""
    writer = MemoryWriter(len(paths), backbone.dim, args.batch_size * 4)
    run = dict(batch_size=args.batch_size, workers=args.workers, progress=False, faces=faces,
               decode_on_device=on_device)
    extract_units(writer, backbone, paths, writer.units[:1], **run)
    synchronize(backbone.device)
    start = time.perf_counter()
    stats = extract_units(writer, backbone, paths, writer.units[1:], **run)
    synchronize(backbone.device)
    return stats.rows / (time.perf_counter() - start), writer


def main(argv=None) -> int:
    args = parse_timed(common_parser(backbone="sface", images=256, batch_size=8, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter), argv)
    try:  # a backbone without a device front end: one clear line, before the header
        device, backbone, paths = prepare(args, lambda backbone: backbone.metadata.get("implementation", "torch"),
                                          check=lambda backbone: decodes_on_device("device", backbone))
    except UsageError as error:
        raise SystemExit(f"error: {error}") from None
    detector = face_pass(synthetic_table(len(paths), name="bench", paths=paths))  # the run's detection pass
    detected = MemoryWriter(len(paths), detector.dim, 256)
    extract_units(detected, detector, paths, detected.units, batch_size=64, workers=args.workers, progress=False)
    faces = detected.embeddings, detected.status  # face rows and status of every image
    cpu_rate, cpu = timed_run(backbone, paths, faces, args, on_device=False)
    device_rate, on_device = timed_run(backbone, paths, faces, args, on_device=True)
    ok = (cpu.status == 1) & (on_device.status == 1)
    a, b = cpu.embeddings[ok], on_device.embeddings[ok]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print("| backbone | device | --decode cpu img/s | --decode device img/s | device / cpu | rows | same status "
          "| max abs | min cosine |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.backbone} | {device.type} {args.precision} | {cpu_rate:.1f} | {device_rate:.1f} | "
          f"{device_rate / cpu_rate:.2f} | {len(paths)} | {int((cpu.status == on_device.status).sum())} | "
          f"{np.abs(a - b).max() if ok.any() else float('nan'):.2e} | "
          f"{cosine.min() if ok.any() else float('nan'):.6f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
