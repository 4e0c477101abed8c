"""A trained gender model: the fitted chain feature treatment -> head -> calibrator -> threshold, one object.

As scikit-learn's ``CalibratedClassifierCV`` and ``TunedThresholdClassifierCV`` wrap a fitted estimator
with its calibration and threshold, `GenderModel` holds the fitted head (`classify.heads`), the feature
treatment chosen on val (`classify.treatment`), the decision (`classify.decision`: calibrator and
threshold) and the backbones whose features it takes, in column order. Callers ask, never rebuild the
chain (example: the README's "From Python").

Features in: `p_male`, `predict`; images in: `predict_images` (torch imported only then). On disk: the
head file ``<run>.npz`` (`classify.headfile`) and its sidecar ``<run>.json`` (the run's results file,
`classify.results`), both checked by `load`, the one loader, before anything runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from classify import treatment
from classify.decision import Decision
from classify.headfile import (RESULTS_KIND, RESULTS_VERSION, SAFE_NAME, SUFFIX, HeadFileError, chain_problem,
                               check_results_kind, head_kind_problem, positive_int, read_head_file, write_head_file)
from classify.heads import Head, get_head_class
from classify.images import Prediction, embed, expand_inputs, face_indices, status_text, unreadable_reason
from features import atomic
from features.jsonfile import dumps, jsonable, read_json, regular_file
from features.provenance import sha256_file
from features.store import Status

SIDECAR_LIMIT = 64 << 20  # bytes of a results file; real ones are well under 1 MB


def compatibility_of(info: dict) -> dict:
    """What must match between two store records of one backbone for their features to mean the same thing."""
    metadata = info.get("metadata") or {}
    return {"dim": info["dim"], "weights": metadata.get("weights"), "precision": metadata.get("precision"),
            "preprocessing": metadata.get("preprocessing"), "aligner_weights": metadata.get("aligner_weights"),
            "tta": metadata.get("tta", "none")}


@dataclass(frozen=True, eq=False)
class GenderModel:
    """The fitted chain; ``record`` is the run's results record (the sidecar) when there is one."""

    head: Head
    backbones: dict[str, dict]  # name -> {"dim", "metadata", ...} as the store recorded it, column order
    treatment: dict
    decision: Decision
    record: dict | None = field(default=None, repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.backbones)

    @property
    def threshold(self) -> float:
        return self.decision.value

    @property
    def name(self) -> str:
        """The run that fitted it (its results file's ``run``), "" for a model without one."""
        return str((self.record or {}).get("run", ""))

    @property
    def head_sha256(self) -> str | None:
        """The sha256 of the head file it was loaded from (None for a model not loaded from one)."""
        return ((self.record or {}).get("head_file") or {}).get("sha256")

    @property
    def min_group_n(self) -> int:
        """The smallest group its run reported per-group metrics for (30 unless the run said)."""
        value = ((self.record or {}).get("config") or {}).get("min_group_n", 30)
        return value if positive_int(value) else 30

    @property
    def training_stores(self) -> list[dict]:
        """The stores its train and val rows came from ({path, dataset, fingerprint, n_rows} each)."""
        return list((self.record or {}).get("training_stores", []))

    def compatibility(self) -> dict[str, dict]:
        """`compatibility_of` each backbone, as a store's must be for these features to fit the model."""
        return {name: compatibility_of(info) for name, info in self.backbones.items()}

    def raw_p_male(self, x: np.ndarray) -> np.ndarray:
        """The head's own p(male) of the treated features, before the calibrator (float64)."""
        dims = {name: info["dim"] for name, info in self.backbones.items()}
        treated = treatment.apply(x, self.treatment, self.names, dims)
        return self.head.predict_proba(treated)[:, 1].astype(np.float64)

    def p_male(self, x: np.ndarray) -> np.ndarray:
        """The calibrated p(male) per row of features, the probability predict reports."""
        return self.decision.p_male(self.raw_p_male(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """1 male / 0 female per row: the calibrated p(male) above the recorded threshold."""
        return self.decision.is_male(self.p_male(x))

    def predict_images(self, paths: list[str | Path], *, all_faces: bool = False,
                       device: str = "auto") -> list[Prediction]:
        """One `Prediction` per image (its largest face), or per face with ``all_faces``, in input
        order; folders are searched for images (`classify.images.expand_inputs`)."""
        images = expand_inputs([str(p) for p in paths])
        faces, x = embed(images, self.backbones, device=device, all_faces=all_faces)
        ok = faces.status == Status.OK
        male = iter(self.p_male(x[ok]) if ok.any() else np.empty(0))
        out = []
        for image, face, box, code in zip(faces.image, face_indices(faces.image), faces.box, faces.status):
            path = images[image]
            if code != Status.OK:
                reason = unreadable_reason(path) if code == Status.UNREADABLE else ""
                out.append(Prediction(str(path), status_text(int(code)), reason=reason))
                continue
            p = float(next(male))
            gender = "male" if self.decision.is_male(p) else "female"
            where = {"face": int(face), "box": None if np.isnan(box).any() else tuple(float(v) for v in box)}
            out.append(Prediction(str(path), "ok", gender, p if gender == "male" else 1 - p, p, **where))
        return out

    def save(self, path: Path | str) -> Path:
        """Write the head file ``path`` (.npz) and its sidecar beside it (the run record, or a minimal one),
        each atomically; the sidecar records the head file's sha256. Returns the sidecar's path."""
        path = Path(path)
        if path.suffix != SUFFIX:
            raise HeadFileError(f"{path}: a model is saved as a {SUFFIX} head file")
        fitted, arrays = self.head.to_arrays()
        record = self.record or {  # a model fitted outside `classify train`: the fields `load` checks
            "kind": RESULTS_KIND, "version": RESULTS_VERSION, "run": path.stem,
            "config": {"head": self.head.head_name, "backbones": list(self.names)},
            "store": {"backbones": self.backbones}, "treatment": {"chosen": self.treatment},
            "decision": self.decision.to_json(), "training_stores": []}
        write_head_file(path, jsonable({
            "head": self.head.head_name, "fitted": fitted, "backbones": _header_backbones(self.backbones),
            "n_features": self.head.n_features_in_, "treatment": self.treatment,
            "training_stores": record.get("training_stores", []), "decision": self.decision.to_json()}), arrays)
        record = {**record, "head_file": {"name": path.name, "sha256": sha256_file(path)}}
        sidecar = path.with_suffix(".json")
        atomic.write_text(sidecar, dumps(record))
        return sidecar

    @classmethod
    def load(cls, path: Path | str) -> GenderModel:
        """The model saved at ``path`` (a ``<run>.npz``), every check made; HeadFileError naming the problem."""
        head_path = Path(path)
        if head_path.suffix == ".joblib":
            raise HeadFileError(f"{head_path} is a head of the old pickle format, which this version never loads "
                                "(a pickle can run code): retrain with `python -m classify train`")
        if head_path.suffix != SUFFIX:
            raise HeadFileError(f"{head_path} is not a head file: pass the <run>{SUFFIX} written by train")
        if not regular_file(head_path):
            raise HeadFileError(f"no head file at {head_path} (or not a regular file)")
        sidecar = head_path.with_suffix(".json")
        if not regular_file(sidecar):
            raise HeadFileError(f"head {head_path} has no sidecar {sidecar.name} beside it; cannot verify it")
        record = read_json(sidecar, limit=SIDECAR_LIMIT, error=HeadFileError, what="sidecar")
        check_results_kind(record, sidecar, error=HeadFileError)
        if problem := sidecar_problem(record, head_path.name):
            raise HeadFileError(f"{sidecar}: {problem}; this sidecar does not describe a head train wrote: retrain")
        expected, actual = record["head_file"]["sha256"], sha256_file(head_path)
        if actual != expected:
            raise HeadFileError(f"head file {head_path} does not match its sidecar (sha256 {actual[:16]}... "
                                f"expected {expected[:16]}...): refusing a modified file")
        header, arrays = read_head_file(head_path)
        try:
            return _rebuild(header, arrays, record)
        except (HeadFileError, ValueError) as error:
            raise HeadFileError(f"{head_path}: {error}: retrain") from None


def sidecar_problem(record: dict, file_name: str) -> str | None:
    """What makes a sidecar unusable (None when it is sound): fields, names and dims, checked as data."""
    config, store = record.get("config"), record.get("store")
    if not isinstance(config, dict) or not isinstance(store, dict) or not isinstance(store.get("backbones"), dict):
        return "no config or store record"
    head_name, backbones = config.get("head"), config.get("backbones")
    if problem := head_kind_problem(head_name):
        return problem
    if (not isinstance(backbones, list) or not backbones
            or not all(isinstance(b, str) and SAFE_NAME.match(b) for b in backbones)):
        return "config.backbones must be a non-empty list of backbone names"
    for name in backbones:
        info = store["backbones"].get(name)
        if not isinstance(info, dict) or not positive_int(info.get("dim")):
            return f"no positive dim recorded for backbone {name!r}"
        if not isinstance(info.get("metadata", {}), dict):
            return f"the metadata recorded for backbone {name!r} is not a record"
    if not isinstance(record.get("treatment"), dict):
        return "no treatment record"
    if problem := chain_problem(record.get("training_stores", []), record["treatment"].get("chosen"),
                                tuple(backbones), record.get("decision")):
        return problem
    head_file = record.get("head_file")
    if (not isinstance(head_file, dict) or head_file.get("name") != file_name
            or not isinstance(head_file.get("sha256"), str) or not head_file["sha256"]):
        return f"head_file must name {file_name} and its sha256"
    return None


def _header_backbones(infos: dict[str, dict]) -> list[dict]:
    """The head header's ``backbones``: {name, dim, weights} of each recorded backbone, in column order."""
    return [{"name": name, "dim": info["dim"], "weights": (info.get("metadata") or {}).get("weights")}
            for name, info in infos.items()]


def _rebuild(header: dict, arrays: dict, record: dict) -> GenderModel:
    """The model from its file, after checking the file says what the sidecar says."""
    infos = {name: record["store"]["backbones"][name] for name in record["config"]["backbones"]}
    recorded = _header_backbones(infos)
    in_file = [{key: b.get(key) for key in ("name", "dim", "weights")} for b in header["backbones"]]
    if in_file != recorded:
        raise HeadFileError(f"the head file was fitted on backbones {str(in_file)[:300]}, the sidecar names "
                            f"{str(recorded)[:300]}")
    if header["head"] != record["config"]["head"]:
        raise HeadFileError(f"the head file holds a {header['head']!r} head, the sidecar says "
                            f"{record['config']['head']!r}")
    if header["treatment"] != record["treatment"]["chosen"]:
        raise HeadFileError("the head file's feature treatment differs from the sidecar's")
    if header["decision"] != record["decision"]:
        raise HeadFileError("the head file's calibrator or decision threshold differs from the sidecar's")
    head = get_head_class(header["head"]).from_arrays(header["fitted"], arrays)
    return GenderModel(head, infos, header["treatment"], Decision.from_json(header["decision"]), record)
