"""`ExtractConfig`: everything that defines an extraction run, built once from the command line and
checked there (before torch is imported), then handed to the run (`extract.run`) and saved with each
backbone it writes (``extract_config``): a record, not a resume key, so a store stays resumable with
other --workers, --batch-size or --decode. `parse`: argparse for every extract subcommand.
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import asdict, dataclass, field, fields
from typing import Sequence

from extract import catalog
from extract.errors import UsageError
from features.cli import EXIT_BAD_INPUT, EXIT_OK

DTYPES = ("float32", "float16")
DECODES = ("auto", "cpu", "device")  # --decode: where a face backbone decodes JPEGs (extract.device_front)
CONFIG_KEY = "extract_config"  # backbone metadata key holding `ExtractConfig.record()`
CPU_BATCH, CUDA_BATCH = 8, 256  # measured: efficientnet_lite0 on 2 CPU cores runs ~2x faster at 8 than 32


@dataclass(frozen=True)
class ExtractConfig:
    """One `python -m extract` run. ``weights``: backbone -> "random" or a weight file (backbones not
    named load their default weights). None for batch_size, workers, unit_rows and limit: the defaults
    (CPU_BATCH or CUDA_BATCH, `extract.images.default_workers`, the store's unit size, every image)."""

    dataset: str
    root: str
    backbones: tuple[str, ...]
    store: str
    weights: dict[str, str] = field(default_factory=dict)
    batch_size: int | None = None
    workers: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    dtype: str = "float32"
    unit_rows: int | None = None
    limit: int | None = None
    seed: int = 0
    tta: str = "none"
    decode: str = "auto"
    wait_lock: bool = False
    progress: bool = True
    plugins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for option in ("batch_size", "unit_rows", "limit"):
            value = getattr(self, option)
            if value is not None and value < 1:
                raise UsageError(f"--{option.replace('_', '-')} must be a positive integer, not {value}")
        if self.workers is not None and self.workers < 0:
            raise UsageError(f"--workers must be 0 or more, not {self.workers}")
        for option, valid in (("precision", catalog.PRECISIONS), ("tta", catalog.TTAS), ("dtype", DTYPES),
                              ("decode", DECODES)):
            if getattr(self, option) not in valid:
                raise UsageError(f"--{option} {getattr(self, option)!r}: valid: {', '.join(valid)}")
        known, backbones = catalog.backbone_names(), self.backbones
        unknown = [name for name in backbones if name not in known]
        if unknown:
            raise UsageError(f"unknown backbone(s) {', '.join(map(repr, unknown))}; valid names: {', '.join(known)}")
        if len(set(backbones)) != len(backbones):
            raise UsageError(f"--backbones names a backbone twice: {' '.join(backbones)}")
        strays = sorted(set(self.weights) - set(backbones))
        if strays:
            raise UsageError(f"--weights names {', '.join(strays)}, not among --backbones ({', '.join(backbones)})")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExtractConfig:
        """The config of parsed arguments (plugins already imported, so their backbones are known)."""
        renamed = {"backbones": tuple(args.backbones), "weights": parse_weights(args.weights, args.backbones),
                   "progress": not args.no_progress, "plugins": tuple(args.plugin)}
        return cls(**renamed, **{f.name: getattr(args, f.name) for f in fields(cls) if f.name not in renamed})

    def record(self) -> dict:
        """The JSON-ready dict saved in the store with each backbone: every option but --store (the
        record lives there, and a store copied or written elsewhere holds the same bytes)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
                if key != "store"}


def parse_weights(specs: Sequence[str], backbones: Sequence[str]) -> dict[str, str]:
    """--weights values -> {backbone: "random" | path}; backbones not named keep their defaults."""
    if list(specs) == ["random"]:
        return {name: "random" for name in backbones}
    weights = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"--weights {spec!r}: expected NAME=PATH, NAME=random, or 'random' alone")
        if name not in backbones:
            raise UsageError(f"--weights {spec!r}: {name!r} is not among --backbones ({', '.join(backbones)})")
        weights[name] = value
    return weights


class ParseExit(Exception):
    """argparse stopped (--help, or an error it has printed): the exit code to return."""

    def __init__(self, code: int):
        self.code = code


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """parse_args, raising `ParseExit` instead of exiting; then import the --plugin modules, if any."""
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as stop:
        raise ParseExit(EXIT_OK if stop.code in (0, None) else EXIT_BAD_INPUT) from None
    for module in getattr(args, "plugin", ()):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise UsageError(f"--plugin {module}: cannot import it ({error})") from None
    return args
