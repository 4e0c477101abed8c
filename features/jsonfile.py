"""Reading JSON a user may have crafted: only regular files, bounded size, strict values, one error line.

`read_json` refuses what Python's json module would otherwise accept or choke on: a FIFO or device
(reading one blocks forever), a file larger than the caller's limit (memory), ``NaN``/``Infinity`` and
numbers that overflow to infinity (strict JSON has none; a NaN weight would predict nonsense), and
nesting too deep for the parser (``RecursionError`` instead of a message).
"""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path


def regular_file(path: Path | str) -> bool:
    """Whether ``path``, links resolved, is a regular file (not a folder, FIFO, socket or device)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} overflows to infinity")
    return value


def loads_strict(text: str):
    """``json.loads`` without NaN/Infinity; ValueError (one line) for anything that is not strict JSON."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error.msg} at line {error.lineno} column {error.colno})") from None


def read_json(path: Path | str, *, limit: int, error: type[Exception] = ValueError, what: str = "JSON file"):
    """The strict JSON value in ``path`` (at most ``limit`` bytes); else ``error``, one line naming the file."""
    if not regular_file(path):
        raise error(f"{what} {path} is missing or not a regular file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as problem:
        raise error(f"cannot read {what} {path}: {problem.strerror or problem}") from None
    if len(data) > limit:
        raise error(f"{what} {path} is larger than {limit} bytes")
    try:
        return loads_strict(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as problem:
        raise error(f"{what} {path}: {problem}") from None


def jsonable(value):
    """NaN/inf -> None (strict JSON), tuples -> lists, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value) -> str:
    """The strict JSON text every results file of the project is written as (`jsonable`, indent 1)."""
    return json.dumps(jsonable(value), indent=1, allow_nan=False)
