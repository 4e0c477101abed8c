"""Crafted head files and sidecars: each is refused by `GenderModel.load` with one `HeadFileError` line
(exit 2 through the CLIs), before any array is inflated beyond what the header implies, in bounded
memory; and the public API gives what ``python -m classify predict`` gives."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import types
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from classify import GenderModel, HeadFileError
from classify import cli as classify_cli
from classify.calibration import Calibrator
from classify.decision import Decision
from classify.heads import LogRegHead, MLPHead
from features.provenance import sha256_file

DIM = 8


def _model(head: str = "logreg") -> GenderModel:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200).astype(np.int8)
    x = (rng.normal(size=(200, DIM)) + y[:, None]).astype(np.float32)
    fitted = (LogRegHead(Cs=(1.0,)) if head == "logreg" else MLPHead(hidden_grid=((4,),), max_epochs=2))
    fitted.fit(x[:150], y[:150], x[150:], y[150:])
    decision = Decision("platt", Calibrator("platt", {"a": 1.5, "b": -0.1}), {"rule": "default", "value": 0.5})
    return GenderModel(fitted, {"bb": {"dim": DIM, "metadata": {"weights": "random"}}},
                       {"name": "none", "per_backbone": {"bb": "none"}}, decision)


@pytest.fixture(params=["logreg", "mlp"])
def saved(request, tmp_path) -> Path:
    path = tmp_path / f"bb__{request.param}.npz"
    _model(request.param).save(path)
    return path


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, value, allow_pickle=False)
    return buffer.getvalue()


def _header_text(path: Path) -> str:
    return str(np.lib.format.read_array(io.BytesIO(_members(path)["header.npy"])))


def _rewrite(path: Path, members: dict[str, bytes]) -> None:
    """The head file with ``members``, and its sidecar's sha256 brought up to date (so only the crafted
    content, not the hash, is what the loader must catch)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    _set_sha(path)


def _set_sha(path: Path) -> None:
    sidecar = path.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    record["head_file"]["sha256"] = sha256_file(path)
    sidecar.write_text(json.dumps(record))


def _edit_header(path: Path, text: str) -> None:
    _rewrite(path, {**_members(path), "header.npy": _npy(np.array(text))})


def _edit_header_field(path: Path, key: str, value) -> None:
    header = json.loads(_header_text(path))
    header[key] = value
    _edit_header(path, json.dumps(header))


def _edit_array(path: Path, name: str, change) -> None:
    members = _members(path)
    array = np.lib.format.read_array(io.BytesIO(members[f"a/{name}.npy"])).copy()
    change(array)
    _rewrite(path, {**members, f"a/{name}.npy": _npy(array)})


def _edit_sidecar(path: Path, edit) -> None:
    sidecar = path.with_suffix(".json")
    sidecar.write_text(edit(sidecar.read_text()))


def _refused(path: Path, match: str, capsys) -> None:
    """One HeadFileError line from the loader, and exit 2 with one line from predict and evaluate."""
    with pytest.raises(HeadFileError, match=match) as caught:
        GenderModel.load(path)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 2000
    capsys.readouterr()
    assert classify_cli.main(["predict", "--head", str(path), str(path.parent)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_a_saved_model_loads_and_scores_as_the_object_it_was(saved):
    model = _model(saved.stem.split("__")[1])
    loaded = GenderModel.load(saved)
    x = np.random.default_rng(5).normal(size=(30, DIM)).astype(np.float32)
    np.testing.assert_array_equal(loaded.p_male(x), model.p_male(x))
    np.testing.assert_array_equal(loaded.predict(x), (model.p_male(x) > 0.5).astype(np.int8))
    assert loaded.names == ("bb",) and loaded.threshold == 0.5


@pytest.mark.parametrize("name, value", [("mean", np.nan), ("scale", np.inf), ("mean", -np.inf)])
def test_non_finite_arrays_are_refused(saved, name, value, capsys):
    _edit_array(saved, name, lambda a: a.__setitem__(0, value))
    _refused(saved, "NaN or infinite", capsys)


def test_a_non_finite_mlp_weight_is_refused(tmp_path, capsys):
    path = tmp_path / "bb__mlp.npz"
    _model("mlp").save(path)
    _edit_array(path, "layer0_weight", lambda a: a.__setitem__((1, 2), np.nan))
    _refused(path, "layer0_weight.npy holds NaN", capsys)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_and_infinity_in_the_header_json_are_refused(tmp_path, literal, capsys):
    path = tmp_path / "bb__logreg.npz"
    _model().save(path)
    header = json.loads(_header_text(path))
    text = json.dumps(header).replace(f'"intercept": {header["fitted"]["intercept"]!r}', f'"intercept": {literal}')
    assert literal in text
    _edit_header(path, text)
    _refused(path, "the header", capsys)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e999"])
def test_nan_and_infinity_in_the_sidecar_are_refused(saved, literal, capsys):
    _edit_sidecar(saved, lambda text: text.replace('"a": 1.5', f'"a": {literal}'))
    _refused(saved, "sidecar", capsys)


@pytest.mark.parametrize("value", [[1, 2], "bb", [{"name": "bb", "dim": "8", "weights": "random"}], None])
def test_header_backbones_of_the_wrong_type_are_refused(saved, value, capsys):
    _edit_header_field(saved, "backbones", value)
    _refused(saved, "backbones must be", capsys)


@pytest.mark.parametrize("value", [[1, 2], "bb", [["bb"]]])
def test_sidecar_backbones_of_the_wrong_type_are_refused(saved, value, capsys):
    def edit(text):
        record = json.loads(text)
        record["config"]["backbones"] = value
        return json.dumps(record)
    _edit_sidecar(saved, edit)
    _refused(saved, "config.backbones", capsys)


@pytest.mark.parametrize("params", [5, "x", ["a"], {"a": "1", "b": 0}, {"a": True, "b": 0}])
def test_calibrator_params_of_the_wrong_type_are_refused(saved, params, capsys):
    """A sidecar-only edit of decision.calibrator.params (the head file untouched, its hash still right)."""
    def edit(text):
        record = json.loads(text)
        record["decision"]["calibrator"]["params"] = params
        return json.dumps(record)
    _edit_sidecar(saved, edit)
    _refused(saved, "decision: platt calibrator", capsys)


def test_the_same_edit_in_the_head_file_is_refused(saved, capsys):
    header = json.loads(_header_text(saved))
    header["decision"]["calibrator"]["params"] = {"a": 5, "b": "x"}
    _edit_header(saved, json.dumps(header))
    _refused(saved, "decision: platt calibrator parameters must be finite numbers", capsys)


@pytest.mark.parametrize("where", ["sidecar", "header"])
def test_nesting_200000_deep_is_one_line(saved, where, capsys):
    deep = "[" * 200_000 + "]" * 200_000
    if where == "sidecar":
        _edit_sidecar(saved, lambda text: text.replace('"params": {', f'"deep": {deep}, "params": {{', 1))
    else:
        _edit_header(saved, _header_text(saved).replace('"fitted": {', f'"deep": {deep}, "fitted": {{', 1))
    _refused(saved, "nested too deeply", capsys)


def test_unknown_entries_are_refused(saved, capsys):
    _rewrite(saved, {**_members(saved), "a/extra.npy": _npy(np.zeros(3))})
    _refused(saved, "unexpected", capsys)


def test_a_declared_shape_of_ten_to_the_thirteen_is_refused_unread(saved, capsys):
    members = _members(saved)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (10**13,)})
    _rewrite(saved, {**members, "a/mean.npy": buffer.getvalue() + b"\0" * 64})
    _refused(saved, r"declares float32 \(10000000000000,\)", capsys)


def test_a_fitted_state_declaring_a_huge_mlp_is_refused(tmp_path, capsys):
    path = tmp_path / "bb__mlp.npz"
    _model("mlp").save(path)
    header = json.loads(_header_text(path))
    header["fitted"]["hidden_sizes"] = [65_536] * 16
    _edit_header(path, json.dumps(header))
    _refused(path, "declares .* bytes of arrays", capsys)


def _bomb(path: Path) -> None:
    """An extra member: a valid .npy of 2 GB of zeros (2**28 float64), deflated to about 2 MB.

    Deflating 2 GB takes most of a minute; a full flush makes deflate blocks independent, so 64 MB of
    zeros is deflated once and its block repeated (the stream inflates to the 2 GB; zipfile still
    computes the CRC and sizes of the real data)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**28,)})
    chunk = bytes(64 << 20)
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    blocks = {"header": deflate.compress(header.getvalue()) + deflate.flush(zlib.Z_FULL_FLUSH),
              "zeros": deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)}
    members = _members(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        with archive.open("a/zeros.npy", "w", force_zip64=True) as member:
            member._compressor = types.SimpleNamespace(  # zipfile's writer calls compress() and flush()
                compress=lambda data: blocks["header"] if data is not chunk else blocks["zeros"],
                flush=deflate.flush)
            member.write(header.getvalue())
            for _ in range(32):
                member.write(chunk)
    _set_sha(path)


_PEAK = """
import sys
from classify import GenderModel, HeadFileError
try:
    GenderModel.load(sys.argv[1])
except HeadFileError as error:
    print("refused:", error)
# VmHWM: this process's own peak (ru_maxrss would carry the pytest parent's peak across a vfork+exec)
print("peak_mb", int([line for line in open('/proc/self/status') if line.startswith('VmHWM')][0].split()[1]) / 1024)
"""


def _peak_mb(path: Path) -> tuple[str, float]:
    done = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, timeout=300)
    lines = done.stdout.strip().splitlines()
    return lines[0], float(lines[-1].split()[1])


def test_a_deflated_2gb_array_is_refused_without_inflating_it(tmp_path, capsys):
    path = tmp_path / "bb__logreg.npz"
    _model().save(path)
    _bomb(path)
    assert path.stat().st_size < 20 << 20
    refused, peak = _peak_mb(path)
    assert refused.startswith("refused:") and "unexpected" in refused
    assert peak < 1024, f"peak RSS {peak:.0f} MB"
    assert classify_cli.main(["evaluate", "--head", str(path), "--store", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_memory_stays_bounded_on_a_declared_huge_shape(tmp_path):
    path = tmp_path / "bb__logreg.npz"
    _model().save(path)
    members = _members(path)
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": (10**13,)})
    _rewrite(path, {**members, "a/coef.npy": buffer.getvalue()})
    refused, peak = _peak_mb(path)
    assert refused.startswith("refused:") and "declares" in refused
    assert peak < 1024, f"peak RSS {peak:.0f} MB"


def test_a_head_file_that_lies_about_its_inflated_size_is_refused(saved, capsys):
    members = _members(saved)
    _rewrite(saved, {**members, "a/mean.npy": members["a/mean.npy"] + bytes(1 << 20)})
    _refused(saved, "inflates to", capsys)


def test_a_fifo_sidecar_does_not_hang(saved, capsys):
    sidecar = saved.with_suffix(".json")
    sidecar.unlink()
    import os

    os.mkfifo(sidecar)
    _refused(saved, "no sidecar", capsys)


# ------------------------------------------------------------------------------- the public API itself


@pytest.mark.usefixtures("tiny_backbones")
def test_the_api_gives_what_the_predict_cli_gives(tmp_path, capsys):
    from extract.cli import main as extract_main
    from tests.fixtures import make_celeba

    root = make_celeba(tmp_path, n=40)
    store, out = tmp_path / "s.zarr", tmp_path / "runs"
    assert extract_main(["--dataset", "celeba", "--root", str(root), "--backbones", "tiny_test", "--store",
                         str(store), "--workers", "0", "--unit-rows", "16", "--plugin", "tests.extract_tiny",
                         "--no-progress"]) == 0
    assert classify_cli.main(["train", "--store", str(store), "--heads", "logreg", "--bootstrap", "20",
                              "--calibrate", "platt", "--out", str(out)]) == 0
    head = out / "tiny_test__logreg.npz"
    images = sorted((root / "img_align_celeba").glob("*.jpg"))[:12]
    (tmp_path / "empty.jpg").write_bytes(b"")
    paths = [*images, tmp_path / "empty.jpg"]
    table = tmp_path / "p.csv"
    assert classify_cli.main(["predict", "--head", str(head), *map(str, paths), "--device", "cpu",
                              "--out", str(table)]) == 0
    rows = list(csv.DictReader(open(table)))
    predictions = GenderModel.load(head).predict_images(paths, device="cpu")
    assert [p.path for p in predictions] == [row["path"] for row in rows]
    assert [p.gender or "" for p in predictions] == [row["gender"] for row in rows]
    assert [p.status for p in predictions] == [row["status"] for row in rows]
    assert [f"{p.probability:.4f}" if p.probability is not None else "" for p in predictions] == \
        [row["probability"] for row in rows]
    assert predictions[-1].gender is None and predictions[-1].reason == "empty file"
    for p in predictions[:-1]:
        assert p.probability == pytest.approx(p.p_male if p.gender == "male" else 1 - p.p_male)


def test_the_api_imports_without_torch():
    code = ("import sys, classify; assert 'classify.model' not in sys.modules; "
            "from classify import GenderModel; assert 'torch' not in sys.modules and 'extract' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
