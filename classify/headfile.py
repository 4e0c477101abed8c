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

The run's results file ``<run>.json`` (`classify.results`) is the head's sidecar: it records the
file's sha256 and the same backbones, dims, head and treatment, and is checked against this header and
the arrays before any backbone runs. Old heads (``.joblib``, a pickle) are never loaded: retrain.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from features.provenance import sha256_file  # noqa: F401  (re-exported: results and predict check head files)

HEAD_KIND = "classify-head"
HEAD_VERSION = 2
SUFFIX = ".npz"


class HeadFormatError(ValueError):
    """A head file that is not a valid head of this format."""


def write_head_file(path: Path, header: dict, arrays: dict[str, np.ndarray]) -> None:
    """Save ``header`` (kind and version added) and ``arrays`` to ``path`` (an .npz)."""
    header = {"kind": HEAD_KIND, "version": HEAD_VERSION, **header}
    payload = {f"a/{name}": np.asarray(value) for name, value in arrays.items()}
    with open(path, "wb") as handle:  # a file object: np.savez would append .npz to another suffix
        np.savez(handle, header=np.array(json.dumps(header)), **payload)


def check_kind_and_version(record, path, *, kind: str, version: int, what: str, news: str,
                           error: type[Exception]) -> None:
    """Raise ``error`` unless ``record`` is a JSON object of ``kind`` at ``version``; an older version is
    told what changed (``news``) and to retrain. Shared by head files and results files."""
    if not isinstance(record, dict) or record.get("kind") != kind:
        raise error(f"{path} is not a {what} (no kind={kind!r})")
    if record.get("version") != version:
        raise error(f"{path} is a {what} of version {record.get('version')}; this tool reads version "
                    f"{version} ({news}): retrain with `python -m classify train`")


def read_head_file(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a head file; HeadFormatError for anything else, nothing is unpickled."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise HeadFormatError(f"{path} is a single array, not a head file")
            contents = {name: data[name] for name in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:  # pickles raise ValueError here
        raise HeadFormatError(f"{path} is not a head file ({error})") from None
    header_array = contents.pop("header", None)
    if header_array is None or header_array.shape != () or header_array.dtype.kind != "U":
        raise HeadFormatError(f"{path} has no JSON header")
    try:
        header = json.loads(str(header_array))
    except json.JSONDecodeError as error:
        raise HeadFormatError(f"{path}: the header is not JSON ({error})") from None
    check_kind_and_version(header, path, kind=HEAD_KIND, version=HEAD_VERSION, what="head file",
                           news="heads now carry their calibrator and decision threshold", error=HeadFormatError)
    if any(not name.startswith("a/") for name in contents):
        raise HeadFormatError(f"{path} holds unexpected entries {sorted(contents)}")
    return header, {name[2:]: value for name, value in contents.items()}
