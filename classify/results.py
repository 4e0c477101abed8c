"""Results files: one ``<run>.json`` per (backbone(s), head) run, and the fitted head beside it.

``<run>.json`` is also the sidecar of the head file ``<run>.npz`` (`classify.headfile`), which
`classify.model.GenderModel.load` checks against it before anything runs. Beyond the schema below it
holds the whole `RunConfig`, each backbone's store metadata (weights identity and source), the tried
treatments, library versions and timings; ``decision`` is the head file's too, and each Scores record is
`classify.protocol.score_split`'s. Version 2 (no decision, groups or calibration) is refused: retrain.

`write_run` writes it; `read_result` reads it as a `RunResult` of frozen dataclasses, every field read
checked with its type (else one `RunResultError` line naming the file and the field). What only a report
renders whole (group tables, reliability bins, recalls) stays as each `Scores`' validated JSON (``record``).

Schema (the fields read; others are kept in ``record`` untouched)::

    kind "classify-run", version 3, run (str)
    config      {backbones [str], head str, seed int, min_group_n int (default 30), stores [str]}
    store       {path str, dataset str, fingerprint str}: the first training store
    training_stores [{dataset str, ...}] (default: [store]): path, dataset, fingerprint, n_rows of each
    metrics     {val: Scores, test: Scores}
    cross_dataset {label: {path str, dataset str, fingerprint str, rows "test"|"all",
                           report: Scores (+ accuracy_all, invalid, seen_in_training), val: Scores|null}}
    decision    {calibrator {method str}, threshold {rule str, value number}}
    selection   {str: JSON}          counts {test {invalid {str: int}}}
    treatment   {chosen {name str}}  balance {attribute str}|null    timings {fit_s number}
    head_file   {name str, sha256 str}
    Scores      {n int, accuracy number, recall/female_recall/f1/macro_f1/roc_auc number|null,
                 ci95 {accuracy [lo, hi], f1 [lo, hi]}, confusion_matrix [[int]*2]*2,
                 roc {fpr [number], tpr [number]}, groups {summary {balanced_accuracy number|null,
                 worst_group {family, group, accuracy, n}|null}}, calibration {before, after {ece number}}}
"""
from __future__ import annotations

import logging
import platform
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from classify.headfile import RESULTS_KIND, RESULTS_VERSION, SUFFIX, HeadFileError, check_results_kind
from classify.model import SIDECAR_LIMIT, GenderModel
from classify.protocol import RunConfig
from features import provenance
from features.jsonfile import read_json, regular_file

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_NUMBER = (int, float)


def run_name(config: RunConfig) -> str:
    """File stem of a run: '<backbone>[+<backbone>...]__<head>'."""
    name = f"{config.backbone_spec}__{config.head}"
    if not _SAFE_NAME.match(name):
        raise ValueError(f"run name {name!r} is not a safe file name (letters, digits, _ . + - only)")
    return name


def library_versions() -> dict[str, str]:
    """Versions of the libraries that produce the numbers (torch is deliberately not imported)."""
    return {"python": platform.python_version(),
            **provenance.library_versions("numpy", "scipy", "scikit-learn", "zarr", "matplotlib")}


def store_identity(store, backbones: tuple[str, ...] = ()) -> dict:
    """Path, dataset and fingerprint of the store, and the metadata of each backbone used."""
    identity = {"path": str(store.path), "dataset": store.dataset_name, "fingerprint": store.fingerprint,
                "n_rows": store.n_rows}
    if backbones:
        identity["backbones"] = {name: store.backbone_info(name) for name in backbones}
    return identity


def write_run(out_dir: Path, config: RunConfig, model: GenderModel, results: dict, *, store_info: dict,
              training_stores: list[dict]) -> Path:
    """Save the model: its head (.npz, `classify.headfile`) and the results/sidecar JSON; returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run_name(config)
    record = {"kind": RESULTS_KIND, "version": RESULTS_VERSION, "run": name,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "config": asdict(config), "store": store_info, "training_stores": training_stores, **results,
              "library_versions": library_versions()}
    return replace(model, backbones=store_info["backbones"], record=record).save(out_dir / f"{name}{SUFFIX}")


def read_result(path: Path) -> RunResult:
    """One results file as a `RunResult`; HeadFileError naming the file and the field if it is not one."""
    return RunResult.from_json(read_json(path, limit=SIDECAR_LIMIT, error=HeadFileError, what="results file"), path)


def load_results(directory: Path) -> list[RunResult]:
    """Every results file in ``directory``; other JSON files (errors.json silently), files that are not
    regular files (a FIFO would block the read) and malformed results are skipped with a warning."""
    runs = []
    for path in sorted(Path(directory).glob("*.json")):
        if path.name.startswith("errors."):  # `classify.errors`' files
            continue
        if not regular_file(path):
            log.warning("skipping %s: not a regular file", path)
            continue
        try:
            runs.append(read_result(path))
        except HeadFileError as error:
            log.warning("skipping %s", error)
    return runs


class RunResultError(HeadFileError):
    """A results folder's JSON file (a run's results, its error lists) with a field missing or mistyped."""


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class WorstGroup:
    family: str
    group: str
    accuracy: float
    n: int


@dataclass(frozen=True)
class Scores:
    """One scored set of rows (`classify.protocol.score_split`'s record)."""

    n: int
    accuracy: float
    recall: float | None  # male recall
    female_recall: float | None
    f1: float | None
    macro_f1: float | None
    roc_auc: float | None
    accuracy_ci95: Interval
    f1_ci95: Interval
    confusion_matrix: tuple[tuple[int, int], tuple[int, int]]
    roc_fpr: tuple[float, ...]
    roc_tpr: tuple[float, ...]
    balanced_accuracy: float | None
    worst_group: WorstGroup | None
    ece: float | None  # after the calibrator
    ece_raw: float | None  # before it
    record: dict = field(repr=False, compare=False, default_factory=dict)


@dataclass(frozen=True)
class StoreRef:
    """A store a run read: where it was and what it held (its dataset fingerprint)."""

    path: str
    dataset: str
    fingerprint: str


@dataclass(frozen=True)
class CrossResult:
    """The run on one eval store (`classify.protocol` step 8)."""

    path: str
    dataset: str
    fingerprint: str
    rows: str  # "test" or "all"
    report: Scores
    accuracy_all: float
    val: Scores | None


@dataclass(frozen=True)
class RunResult:
    """One results file, validated; ``record`` is its JSON (for writers that pass it on whole)."""

    run: str
    backbones: tuple[str, ...]
    head: str
    seed: int
    min_group_n: int
    stores: tuple[str, ...]
    store: StoreRef  # the first training store
    training_stores: tuple[StoreRef, ...]
    val: Scores
    test: Scores
    cross: dict[str, CrossResult]
    calibrator: str
    threshold: float
    threshold_rule: str
    selection: dict
    invalid_test: int
    treatment: str
    balanced_by: str | None
    fit_s: float
    head_sha256: str
    record: dict = field(repr=False, compare=False, default_factory=dict)

    @property
    def title(self) -> str:
        return f"{'+'.join(self.backbones)} + {self.head}"

    @classmethod
    def from_json(cls, record, file: Path | str) -> RunResult:
        """The typed record of ``record`` (a results file's JSON), RunResultError naming the field."""
        check_results_kind(record, file, error=RunResultError)
        r = FieldReader(record, str(file))
        config = r.sub("config")
        store = r.sub("store")
        training = r.get("training_stores", list, default=None)
        refs = (_store_ref(store),) if training is None else tuple(
            _store_ref(r.sub(("training_stores", i))) for i in range(len(training)))
        decision = r.sub("decision")
        head_file = r.sub("head_file")
        invalid = r.sub("counts.test.invalid")
        balance = r.get("balance", dict, default=None, none=True)
        return cls(
            run=r.get("run", str), backbones=config.strings("backbones"),
            head=config.get("head", str), seed=config.get("seed", int),
            min_group_n=config.get("min_group_n", int, default=30), stores=config.strings("stores"),
            store=_store_ref(store), training_stores=refs,
            val=_scores(r.sub("metrics.val")), test=_scores(r.sub("metrics.test")),
            cross={label: _cross(r.sub(("cross_dataset", label)))
                   for label in r.get("cross_dataset", dict, default={})},
            calibrator=decision.get("calibrator.method", str), threshold=decision.get("threshold.value", _NUMBER),
            threshold_rule=decision.get("threshold.rule", str), selection=r.get("selection", dict),
            invalid_test=sum(invalid.get(key, int) for key in invalid.value),
            treatment=r.get("treatment.chosen.name", str),
            balanced_by=None if balance is None else r.get("balance.attribute", str, default=None, none=True),
            fit_s=r.get("timings.fit_s", _NUMBER), head_sha256=head_file.get("sha256", str), record=record)


class FieldReader:
    """Typed access to a JSON object by path: dotted literal keys ("a.b"), or a tuple of keys taken as they are
    (a label, which may hold a dot; a list index); errors (`RunResultError`) name the file and the full path."""

    def __init__(self, value, file: str, prefix: str = ""):
        self.value, self.file, self.prefix = value, file, prefix

    def _fail(self, where: str | tuple, what: str):
        raise RunResultError(f"{self.file}: field {self.prefix}{_dotted(where)} {what}")

    def get(self, where: str | tuple, kind, *, default=..., none: bool = False):
        value, keys = self.value, tuple(where.split(".")) if isinstance(where, str) else where
        for depth, key in enumerate(keys):
            if isinstance(value, list) and isinstance(key, int) and key < len(value):
                value = value[key]
            elif isinstance(value, dict) and key in value:
                value = value[key]
            elif default is not ...:
                return default
            elif isinstance(value, (dict, list)) or depth == 0:
                self._fail(keys[:depth + 1], "is missing")
            else:
                self._fail(keys[:depth], f"must be an object, not {str(value)[:40]!r}")
        if value is None and none:
            return None
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            names = {str: "a string", int: "an integer", dict: "an object", list: "a list", _NUMBER: "a number"}
            self._fail(where, f"must be {names.get(kind, kind)}, not {str(value)[:40]!r}")
        return value

    def sub(self, where: str | tuple) -> FieldReader:
        return FieldReader(self.get(where, dict), self.file, f"{self.prefix}{_dotted(where)}.")

    def number(self, where: str) -> float | None:
        value = self.get(where, _NUMBER, none=True)
        return None if value is None else float(value)

    def strings(self, where: str) -> tuple[str, ...]:
        values = self.get(where, list)
        if not all(isinstance(v, str) for v in values):
            self._fail(where, "must be a list of strings")
        return tuple(values)

    def numbers(self, where: str, *, size: int | None = None, what: str = "a list of numbers") -> tuple[float, ...]:
        values = self.get(where, list)
        if size not in (None, len(values)) or not all(isinstance(v, _NUMBER) and type(v) is not bool for v in values):
            self._fail(where, f"must be {what}")
        return tuple(float(v) for v in values)

    def interval(self, where: str) -> Interval:
        return Interval(*self.numbers(where, size=2, what="[low, high], two numbers"))


def _dotted(where: str | tuple) -> str:
    return where if isinstance(where, str) else ".".join(map(str, where))


def _store_ref(r: FieldReader) -> StoreRef:
    return StoreRef(r.get("path", str), r.get("dataset", str), r.get("fingerprint", str))


def _scores(r: FieldReader) -> Scores:
    matrix = r.get("confusion_matrix", list)
    if len(matrix) != 2 or not all(isinstance(row, list) and len(row) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in row) for row in matrix):
        r._fail("confusion_matrix", "must be 2 x 2 integers")
    summary = r.sub("groups.summary")
    worst = summary.get("worst_group", dict, none=True)
    if worst is not None:
        w = summary.sub("worst_group")
        worst = WorstGroup(w.get("family", str), str(w.get("group", (str, int))),
                           float(w.get("accuracy", _NUMBER)), w.get("n", int))
    calibration = r.sub("calibration")
    return Scores(n=r.get("n", int), accuracy=float(r.get("accuracy", _NUMBER)), recall=r.number("recall"),
                  female_recall=r.number("female_recall"), f1=r.number("f1"), macro_f1=r.number("macro_f1"),
                  roc_auc=r.number("roc_auc"), accuracy_ci95=r.interval("ci95.accuracy"),
                  f1_ci95=r.interval("ci95.f1"), confusion_matrix=tuple(tuple(row) for row in matrix),
                  roc_fpr=r.numbers("roc.fpr"), roc_tpr=r.numbers("roc.tpr"),
                  balanced_accuracy=summary.number("balanced_accuracy"), worst_group=worst,
                  ece=calibration.number("after.ece"), ece_raw=calibration.number("before.ece"), record=r.value)


def _cross(r: FieldReader) -> CrossResult:
    val = r.get("val", dict, none=True)
    return CrossResult(path=r.get("path", str), dataset=r.get("dataset", str),
                       fingerprint=r.get("fingerprint", str), rows=r.get("rows", str), report=_scores(r.sub("report")),
                       accuracy_all=float(r.get("report.accuracy_all", _NUMBER)),
                       val=None if val is None else _scores(r.sub("val")))
