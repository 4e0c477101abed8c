"""The head file: a fitted head as arrays plus JSON, loadable without running any code.

``<run>.npz`` (numpy's zip of ``.npy`` arrays), format version 2, read with ``allow_pickle=False`` so
an object array or a pickle renamed to ``.npz`` is refused, never unpickled:

    header          0-d unicode array: a JSON object
                      kind            "classify-head"
                      version         2 (1: before the decision was recorded; refused: retrain)
                      head            registered head name ("logreg", "mlp")
                      fitted          JSON scalars of the fitted state (logreg: C, intercept; mlp:
                                      hidden_sizes, learning_rate, best_epoch)
                      backbones       [{name, dim, weights}] in column order; dims sum to n_features
                      n_features      int
                      treatment       the feature treatment (`classify.treatment`): {name, per_backbone}
                      training_stores [{path, dataset, fingerprint, n_rows}] the train/val rows came from
                      decision        what turns the head's p(male) into the output (`classify.decision`):
                                      {calibrate, calibrator (`Calibrator.to_json`), threshold {rule, value}}
    a/<name>        the head's arrays (`Head.to_arrays`): logreg mean, scale (float32, n_features),
                    coef (float64, n_features); mlp mean, scale, layer<i>_weight, layer<i>_bias (float32)

Its sidecar, the run's results file ``<run>.json`` (`classify.results`), records the file's sha256 and the
same backbones, dims, head and treatment. Old heads (``.joblib``, a pickle) are never loaded: retrain.

Reading (`read_head_file`) trusts nothing in the file: the zip holds exactly ``header.npy`` and the
``a/<name>.npy`` the header implies (`Head.array_spec`: names, shapes, dtypes); the header's size is
capped before it is inflated and its JSON is strict (no NaN/Infinity, bounded nesting) and typed; each
array's ``.npy`` header and inflated size are checked before a byte of its data is read (a 2 GB array of
zeros deflated to 2 MB, or a declared shape of 10**13, is refused unread), and every value must be
finite. Any failure is one `HeadFileError` line.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from functools import partial
from pathlib import Path

import numpy as np

from classify import treatment
from classify.calibration import CalibrationError
from classify.decision import Decision
from classify.heads import get_head_class
from features import atomic
from features.jsonfile import loads_strict

HEAD_KIND = "classify-head"
HEAD_VERSION = 2
SUFFIX = ".npz"
RESULTS_KIND = "classify-run"  # the sidecar's kind (`classify.results`)
RESULTS_VERSION = 3
MAX_FEATURES = 1 << 20  # columns a head may take: far beyond any concatenation of backbones
MAX_ARRAY_BYTES = 1 << 29  # all of a head's arrays together (512 MB)
_MAX_HEADER_BYTES = 16 << 20
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,200}$")


class HeadFileError(ValueError):
    """A saved head (or its sidecar) that is missing, malformed, or does not match: one line, exit 2."""


def write_head_file(path: Path, header: dict, arrays: dict[str, np.ndarray]) -> None:
    """Save ``header`` (kind and version added) and ``arrays`` to ``path`` (an .npz), atomically."""
    header = {"kind": HEAD_KIND, "version": HEAD_VERSION, **header}
    payload = {f"a/{name}": np.asarray(value) for name, value in arrays.items()}
    with atomic.atomic_open(path, "wb") as handle:  # a file object: np.savez would append .npz to another suffix
        np.savez(handle, header=np.array(json.dumps(header, allow_nan=False)), **payload)


def check_kind_and_version(record, path, *, kind: str, version: int, what: str, news: str,
                           error: type[Exception]) -> None:
    """Raise ``error`` unless ``record`` is a ``kind`` object at ``version``; an older one is told ``news``: retrain."""
    if not isinstance(record, dict) or record.get("kind") != kind:
        raise error(f"{path} is not a {what} (no kind={kind!r})")
    if record.get("version") != version:
        raise error(f"{path} is a {what} of version {str(record.get('version'))[:20]}; this tool reads version "
                    f"{version} ({news}): retrain with `python -m classify train`")


check_results_kind = partial(check_kind_and_version, kind=RESULTS_KIND, version=RESULTS_VERSION,
                             what="classify results file", news="with calibration, threshold and per-group metrics")


def read_head_file(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a head file, every check of the module docstring made; HeadFileError else."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            if "header.npy" not in members:
                raise HeadFileError(f"{path} has no JSON header")
            header = _header(archive, members.pop("header.npy"), path)
            spec = array_spec(header)
            names = {name: f"a/{name}.npy" for name in spec}
            strays = sorted(set(members) - set(names.values()))
            if strays or len(members) != len(names):
                shown = [name[:40] for name in strays[:5]] or sorted(set(names.values()) - set(members))[:5]
                raise HeadFileError(f"{path} holds unexpected or lacks expected entries ({shown})")
            arrays = {name: _array(archive, members[member], *spec[name], path=path) for name, member in names.items()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as error:
        raise HeadFileError(f"{path} is not a head file ({str(error)[:200]})") from None
    return header, arrays


def _header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> dict:
    """The header member's JSON object, its size capped before it is inflated."""
    if info.file_size > _MAX_HEADER_BYTES:
        raise HeadFileError(f"{path}: the header is larger than {_MAX_HEADER_BYTES} bytes")
    with archive.open(info) as stream:
        data = stream.read(_MAX_HEADER_BYTES + 1)
    try:
        value = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise HeadFileError(f"{path}: the header is not a saved string ({str(error)[:200]})") from None
    if value.shape != () or value.dtype.kind != "U":
        raise HeadFileError(f"{path} has no JSON header")
    try:
        header = loads_strict(str(value))
    except ValueError as error:
        raise HeadFileError(f"{path}: the header: {error}") from None
    check_kind_and_version(header, path, kind=HEAD_KIND, version=HEAD_VERSION, what="head file",
                           news="heads now carry their calibrator and decision threshold", error=HeadFileError)
    if problem := header_problem(header):
        raise HeadFileError(f"{path}: the header's {problem}")
    return header


def head_kind_problem(head) -> str | None:
    """What is wrong with a recorded head kind (None when it names a registered head)."""
    if not isinstance(head, str):
        return "head must name a head kind"
    try:
        get_head_class(head)
    except ValueError as error:
        return str(error)[:200]
    return None


def header_problem(header: dict) -> str | None:
    """What is wrong with a head header's fields as data (None when every field has its type)."""
    head, backbones = header.get("head"), header.get("backbones")
    if problem := head_kind_problem(head):
        return problem
    if (not isinstance(backbones, list) or not backbones or not all(
            isinstance(b, dict) and isinstance(b.get("name"), str) and SAFE_NAME.match(b["name"])
            and positive_int(b.get("dim")) and isinstance(b.get("weights"), (str, type(None))) for b in backbones)):
        return "backbones must be a non-empty list of {name, dim, weights} records"
    n_features = header.get("n_features")
    if not positive_int(n_features) or n_features > MAX_FEATURES or n_features != sum(b["dim"] for b in backbones):
        return f"n_features must be the sum of the backbones' dims (at most {MAX_FEATURES})"
    return chain_problem(header.get("training_stores", []), header.get("treatment"),
                         tuple(b["name"] for b in backbones), header.get("decision"))


def chain_problem(training_stores, chosen_treatment, names: tuple[str, ...], decision) -> str | None:
    """What is wrong with the recorded training stores, feature treatment and decision (None: sound as data)."""
    if not isinstance(training_stores, list) or not all(isinstance(entry, dict) for entry in training_stores):
        return "training_stores must be a list of store records"
    if problem := treatment.check(chosen_treatment, names):
        return problem
    try:
        Decision.from_json(decision)
    except CalibrationError as error:
        return f"decision: {error}"
    return None


def positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def array_spec(header: dict) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The arrays a valid header's head must hold (`Head.array_spec`), within `MAX_ARRAY_BYTES`."""
    try:
        spec = get_head_class(header["head"]).array_spec(header.get("fitted"), header["n_features"])
    except ValueError as error:
        raise HeadFileError(f"the header's {error}") from None
    total = sum(int(np.prod(shape, dtype=object)) * dtype.itemsize for shape, dtype in spec.values())
    if total > MAX_ARRAY_BYTES:
        raise HeadFileError(f"the header declares {total} bytes of arrays (at most {MAX_ARRAY_BYTES})")
    return spec


def _array(archive: zipfile.ZipFile, info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype, *,
           path: Path) -> np.ndarray:
    """One member's array, checked as the module docstring says."""
    name = info.filename
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    with archive.open(info) as stream:
        try:
            version = np.lib.format.read_magic(stream)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"npy format version {version}")
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            declared, fortran, found = read(stream)
        except (ValueError, SyntaxError, TypeError, EOFError) as error:
            raise HeadFileError(f"{path}: {name} is not a saved array ({str(error)[:200]})") from None
        if tuple(declared) != shape or found != dtype or fortran:
            raise HeadFileError(f"{path}: {name} declares {str(found)[:20]} {str(declared)[:60]}, the header implies "
                                f"{dtype.name} {shape}")
        if info.file_size != stream.tell() + nbytes:
            raise HeadFileError(f"{path}: {name} inflates to {info.file_size} bytes, not the {nbytes} its shape "
                                "needs (plus its header)")
        data = stream.read(nbytes)
    if len(data) != nbytes:
        raise HeadFileError(f"{path}: {name} is truncated")
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    if not np.isfinite(array).all():
        raise HeadFileError(f"{path}: {name} holds NaN or infinite values")
    return array
