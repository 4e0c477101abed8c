"""Why sface transfers poorly (issue 8's sface puzzle): measured, four questions, one table each.

SFace is a good identity embedding (same-vs-different identity ROC-AUC about 0.99 on the CelebA subset)
yet a gender head on it is weak and transfers badly to UTKFace. Candidates, each measured here with
dlib_resnet as the reference row where it makes sense:

1. feature treatment: none / L2 / standardise / L2 then standardise, logistic regression;
2. head: logreg, MLP, RBF SVM, kNN (is gender there but not linearly?);
3. the shipped int8 model: (a) the same block quantisation re-applied more coarsely (fewer bits per
   weight, so the rounding noise doubles per bit dropped): if gender accuracy barely moves while the
   noise grows many-fold, int8 is not the cause; (b) linear probes on intermediate activations
   (global-average-pooled stage outputs, and the 1024x7x7 map just before the 128-d embedding layer):
   if gender is much better decodable earlier, the last layer (its training objective) discards it;
4. input sanity: the blob's channel order (RGB from the BGR chip, as FaceRecognizerSF) against the
   swapped order, for gender and identity.

Protocol. Settings: CelebA train -> CelebA test (the store's splits); CelebA train -> UTKFace adults
(age >= --min-age); UTKFace train -> UTKFace test, a seeded stratified half/half split of the UTKFace
adult rows (identity is unknown there, so images are split). Both UTKFace columns score the same test
half. Hyper-parameters (logreg C, SVM C, kNN k) are chosen by 4-fold cross-validation on the train rows,
grouped by identity on CelebA (so one person is never on both sides of a fold). Questions 1-2 use the
stored embeddings (all valid rows); questions 3-4 re-run SFace (torch, `extract.backbones.onnx_nets`,
weights dequantised to float32) on chips cut as extract cuts them (`extract.backbones.sface.PREPROCESS`
on the stores' face rows) for a seeded subset, cached in --chips. Identity ROC-AUC: cosine of every
pair of CelebA chip rows, same identity vs different.

    PYTHONPATH=. .venv/bin/python scripts/explain_sface.py [--celeba-store S] [--utk-store S] \
        [--celeba-train 1500] [--celeba-test 500] [--utk 1500] [--bits 6 5 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC

from features.store import FeatureStore

log = logging.getLogger("explain_sface")

SHIPPED_BITS = 8
# Stage outputs probed in question 3b: the last activation at each resolution of the MobileFaceNet-style
# graph (112, 56, 28, 14, 7 px), then bn1 (the 1024x7x7 map the 128-d Gemm reads) and the embedding.
STAGES = {"conv_2_relu": "112px, 64 ch", "conv_4_relu": "56px, 128 ch", "conv_6_relu": "28px, 256 ch",
          "conv_12_relu": "14px, 512 ch", "conv_14_relu": "7px, 1024 ch"}
PRE_EMBEDDING = "bn1"
EMBEDDING = "fc1"
EMBEDDING_DIM = 128
PRE_EMBEDDING_PCA = 256  # the 50,176-d flattened map is reduced (PCA fit on each setting's train rows)


@dataclass(frozen=True)
class Config:
    celeba_store: str
    utk_store: str
    chips: str
    celeba_train: int
    celeba_test: int
    utk: int
    min_age: int
    bits: tuple[int, ...]
    seed: int
    batch: int


@dataclass
class Rows:
    """One dataset's valid rows: store index, labels, groups for CV, and per-backbone embeddings."""

    index: np.ndarray
    gender: np.ndarray
    groups: np.ndarray
    split: np.ndarray
    x: dict[str, np.ndarray]

    def take(self, where: np.ndarray) -> Rows:
        return Rows(self.index[where], self.gender[where], self.groups[where], self.split[where],
                    {k: v[where] for k, v in self.x.items()})


@dataclass
class Setting:
    """A train -> test pair of row positions into the two datasets' arrays."""

    name: str
    train: tuple[str, np.ndarray]  # (dataset, positions)
    test: tuple[str, np.ndarray]


# -- data -------------------------------------------------------------------------------------------
def read_rows(store: FeatureStore, backbones: list[str]) -> Rows:
    features = store.read(backbones)
    dims = [store.backbone_info(name)["dim"] for name in backbones]
    offsets = np.cumsum([0] + dims)
    x = {name: features.x[:, offsets[i]:offsets[i + 1]] for i, name in enumerate(backbones)}
    attributes = store.attributes
    groups = attributes["identity"][features.index] if "identity" in attributes else features.index
    return Rows(features.index, features.gender, groups, store.split[features.index], x)


def utk_adults(store: FeatureStore, rows: Rows, min_age: int) -> Rows:
    return rows.take(store.attributes["age"][rows.index] >= min_age)


def utk_halves(rows: Rows, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded stratified half/half split of positions (train, test)."""
    return train_test_split(np.arange(len(rows.index)), test_size=0.5, stratify=rows.gender, random_state=seed)


def settings_for(celeba: Rows, utk: Rows, utk_train: np.ndarray, utk_test: np.ndarray) -> list[Setting]:
    train, test = np.flatnonzero(celeba.split == 0), np.flatnonzero(celeba.split == 2)
    return [Setting("CelebA -> CelebA", ("celeba", train), ("celeba", test)),
            Setting("CelebA -> UTK adults", ("celeba", train), ("utk", utk_test)),
            Setting("UTK -> UTK adults", ("utk", utk_train), ("utk", utk_test))]


# -- heads ------------------------------------------------------------------------------------------
def treatment(name: str) -> list:
    return {"none": [], "l2": [Normalizer()], "standardise": [StandardScaler()],
            "l2+standardise": [Normalizer(), StandardScaler()]}[name]


def logreg(treat: str = "l2+standardise"):
    grid = {"logisticregression__C": [0.001, 0.01, 0.1, 1.0, 10.0]}
    return make_pipeline(*treatment(treat), LogisticRegression(max_iter=3000)), grid


def heads() -> dict[str, tuple]:
    """name -> (estimator, CV grid). All on L2 then standardised features, kNN on L2 (cosine)."""
    return {
        "logreg": logreg(),
        "MLP (256, early stop)": (make_pipeline(*treatment("l2+standardise"), MLPClassifier(
            (256,), alpha=1e-3, early_stopping=True, max_iter=300, random_state=0)), {}),
        "RBF SVM": (make_pipeline(*treatment("l2+standardise"), SVC()), {"svc__C": [0.3, 1.0, 3.0, 10.0]}),
        "kNN (cosine)": (make_pipeline(Normalizer(), KNeighborsClassifier()),
                         {"kneighborsclassifier__n_neighbors": [5, 15, 45]}),
    }


def fit(estimator, grid: dict, x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int):
    if not grid:
        return clone(estimator).fit(x, y)
    folds = StratifiedGroupKFold(n_splits=4, shuffle=True, random_state=seed)
    search = GridSearchCV(clone(estimator), grid, cv=folds, scoring="accuracy", n_jobs=1)
    return search.fit(x, y, groups=groups).best_estimator_


def scores(model, x: np.ndarray, y: np.ndarray) -> str:
    """'acc% (male recall / female recall)'."""
    predicted = model.predict(x)
    male, female = y == 1, y == 0
    return (f"{100 * np.mean(predicted == y):5.1f} ({np.mean(predicted[male] == 1):.2f}/"
            f"{np.mean(predicted[female] == 0):.2f})")


def evaluate(estimator, grid: dict, data: dict[str, Rows], features: dict[str, np.ndarray],
             setting: Setting, seed: int, *, reduce: int = 0) -> str:
    (train_set, train), (test_set, test) = setting.train, setting.test
    x_train, x_test = features[train_set][train], features[test_set][test]
    if reduce:  # a wide map: PCA fit on the train rows only
        pca = PCA(min(reduce, len(x_train) - 1), svd_solver="randomized", random_state=seed).fit(x_train)
        x_train, x_test = pca.transform(x_train), pca.transform(x_test)
    model = fit(estimator, grid, x_train, data[train_set].gender[train], data[train_set].groups[train], seed)
    return scores(model, x_test, data[test_set].gender[test])


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


# -- questions 1 and 2: stored embeddings -----------------------------------------------------------
def treatment_table(data: dict[str, Rows], settings: list[Setting], seed: int) -> None:
    rows = []
    for backbone in ("sface", "dlib_resnet"):
        features = {name: rows_.x[backbone] for name, rows_ in data.items()}
        for treat in ("none", "l2", "standardise", "l2+standardise"):
            estimator, grid = logreg(treat)
            rows.append([backbone, treat] + [evaluate(estimator, grid, data, features, s, seed) for s in settings])
    table("1. Feature treatment (logistic regression, C by grouped 4-fold CV): accuracy % (male/female recall)",
          ["backbone", "treatment"] + [s.name for s in settings], rows)


def head_table(data: dict[str, Rows], settings: list[Setting], seed: int) -> None:
    rows = []
    for backbone in ("sface", "dlib_resnet"):
        features = {name: rows_.x[backbone] for name, rows_ in data.items()}
        for head, (estimator, grid) in heads().items():
            rows.append([backbone, head] + [evaluate(estimator, grid, data, features, s, seed) for s in settings])
    table("2. Head (L2 then standardised; kNN on L2): accuracy % (male/female recall)",
          ["backbone", "head"] + [s.name for s in settings], rows)


# -- chips and the SFace graph ----------------------------------------------------------------------
def cut_chips(store: FeatureStore, index: np.ndarray) -> np.ndarray:
    """(N, 112, 112, 3) uint8 BGR chips cut as extract cuts them, from the store's face rows."""
    from classify.errors import image_paths
    from extract.backbones.sface import PREPROCESS
    from extract.faces import decode, scaled

    faces, _ = store.faces()
    paths = image_paths(store)
    chips = np.empty((len(index), 112, 112, 3), np.uint8)
    for position, row in enumerate(index):
        if not paths[row]:
            raise ValueError(f"image {store.ids[row]} not found under {store.dataset_info['root']}")
        decoded = decode(paths[row])
        chips[position] = PREPROCESS.align(decoded.image, scaled(faces[row], decoded.scale))
    return chips


def cached_chips(path: Path, key: str, store: FeatureStore, index: np.ndarray) -> np.ndarray:
    """Chips for these rows, cut once and kept in an .npz under `path` (keyed by dataset and ids)."""
    ids = store.ids[index].astype(str)
    cache = dict(np.load(path)) if path.exists() else {}
    if f"{key}_ids" in cache and np.array_equal(cache[f"{key}_ids"], ids):
        return cache[f"{key}_chips"]
    started = time.perf_counter()
    chips = cut_chips(store, index)
    log.info("cut %d %s chips in %.0f s", len(chips), key, time.perf_counter() - started)
    cache.update({f"{key}_ids": ids, f"{key}_chips": chips})
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **cache)
    return chips


def sface_file() -> Path:
    from extract.backbones._weights import default_weights_file
    from extract.backbones.sface import SPEC

    return Path(default_weights_file(SPEC))


def model_variant(source: Path, target: Path, *, bits: int, outputs: tuple[str, ...] = ()) -> float:
    """Write a copy of the SFace graph with every block-quantised tensor re-quantised to `bits` (same
    blocks, scale x 2^(8-bits): each level of the coarser grid is 2^(8-bits) int8 levels) and the named
    intermediate tensors added as graph outputs. Returns the RMS weight change relative to the weights'
    RMS (0 at 8 bits). The integers are stored as float32 arrays: OnnxModule dequantises any dtype."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    changed, total = 0.0, 0.0
    step = 2.0 ** (SHIPPED_BITS - bits)
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q_init, scale_init = initializers[node.input[0]], initializers[node.input[1]]
        q = numpy_helper.to_array(q_init).astype(np.float64)
        zero = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64)
        block = next(a.i for a in node.attribute if a.name == "block_size")
        axis = next(a.i for a in node.attribute if a.name == "axis")
        zero = np.repeat(zero, block, axis=axis).take(range(q.shape[axis]), axis=axis)
        scale = np.repeat(numpy_helper.to_array(scale_init).astype(np.float64), block, axis=axis) \
            .take(range(q.shape[axis]), axis=axis)
        coarse = zero + np.clip(np.round((q - zero) / step) * step, -128 - zero, 127 - zero)
        changed += float(np.sum(((coarse - q) * scale) ** 2))
        total += float(np.sum(((q - zero) * scale) ** 2))
        q_init.CopyFrom(numpy_helper.from_array(coarse.astype(np.float32), q_init.name))
    for name in outputs:
        graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    onnx.save(model, str(target))
    return float(np.sqrt(changed / total))


def run_graph(path: Path, chips: np.ndarray, *, rgb: bool, batch: int, keep: tuple[str, ...]) -> dict:
    """Every graph output for the chips: 4-d maps global-average-pooled, `bn1` flattened as float16."""
    import torch

    from extract.backbones.onnx_nets import OnnxModule

    net = OnnxModule(path)
    names = net.output_names
    out: dict[str, list] = {name: [] for name in names if name in keep or name == names[0]}
    with torch.inference_mode():
        for start in range(0, len(chips), batch):
            blob = torch.from_numpy(chips[start:start + batch]).float()
            blob = (blob.flip(-1) if rgb else blob).permute(0, 3, 1, 2)
            for name, value in zip(names, net(blob.contiguous(memory_format=torch.channels_last))):
                if name not in out:
                    continue
                if name == PRE_EMBEDDING:
                    out[name].append(value.flatten(1).to(torch.float16).numpy())
                else:
                    out[name].append((value.mean((2, 3)) if value.dim() == 4 else value).float().numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


def identity_auc(embeddings: np.ndarray, identity: np.ndarray) -> float:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    upper = np.triu_indices(len(unit), 1)
    cosine = (unit @ unit.T)[upper]
    return float(roc_auc_score((identity[:, None] == identity[None, :])[upper], cosine))


# -- questions 3 and 4: the graph re-run on chips ---------------------------------------------------
@dataclass
class ChipData:
    data: dict[str, Rows]
    settings: list[Setting]
    chips: dict[str, np.ndarray]


def chip_data(config: Config, stores: dict[str, FeatureStore], data: dict[str, Rows]) -> ChipData:
    """The seeded chip subsets (CelebA train and test, UTKFace adults) and their three settings."""
    rng = np.random.default_rng(config.seed)
    celeba = data["celeba"]
    train = rng.permutation(np.flatnonzero(celeba.split == 0))[: config.celeba_train]
    test = rng.permutation(np.flatnonzero(celeba.split == 2))[: config.celeba_test]
    celeba = celeba.take(np.sort(np.concatenate([train, test])))
    utk = data["utk"].take(np.sort(rng.permutation(len(data["utk"].index))[: config.utk]))
    subset = {"celeba": celeba, "utk": utk}
    utk_train, utk_test = utk_halves(utk, config.seed)
    chips = {name: cached_chips(Path(config.chips), name, stores[name], rows.index) for name, rows in subset.items()}
    return ChipData(subset, settings_for(celeba, utk, utk_train, utk_test), chips)


def embeddings_of(path: Path, chip: ChipData, *, rgb: bool, batch: int, keep: tuple[str, ...] = ()) -> dict:
    """{dataset: {output name: array}} for a model file."""
    started = time.perf_counter()
    result = {name: run_graph(path, chips, rgb=rgb, batch=batch, keep=keep) for name, chips in chip.chips.items()}
    log.info("ran %s (rgb=%s) in %.0f s", path.name, rgb, time.perf_counter() - started)
    return result


def gender_columns(chip: ChipData, features: dict[str, np.ndarray], seed: int, *, reduce: int = 0) -> list[str]:
    estimator, grid = logreg("standardise" if reduce else "l2+standardise")
    return [evaluate(estimator, grid, chip.data, features, s, seed, reduce=reduce) for s in chip.settings]


def quantisation_table(config: Config, chip: ChipData, base: dict, work: Path) -> None:
    """`base`: the shipped graph's outputs (8 bits), so it is not run twice."""
    source = sface_file()
    identity = chip.data["celeba"].groups
    shipped = {name: result[EMBEDDING] for name, result in base.items()}
    rows = []
    for bits in (SHIPPED_BITS, *config.bits):
        path = work / f"sface_{bits}bit.onnx"
        error = model_variant(source, path, bits=bits)
        if bits == SHIPPED_BITS:
            embedding = shipped
        else:
            out = embeddings_of(path, chip, rgb=True, batch=config.batch)
            embedding = {name: result[EMBEDDING] for name, result in out.items()}
        cosine = _mean_cosine(embedding["celeba"], shipped["celeba"])
        label = f"{bits} (shipped)" if bits == SHIPPED_BITS else str(bits)
        rows.append([label, f"{error:.3f}", f"{cosine:.4f}", f"{identity_auc(embedding['celeba'], identity):.4f}"]
                    + gender_columns(chip, embedding, config.seed))
    table("3a. Coarser block quantisation of SFace's weights (logreg on L2+standardised 128-d embedding): "
          "accuracy % (male/female recall)",
          ["weight bits", "RMS weight change / RMS weight", "cosine to shipped", "identity ROC-AUC"]
          + [s.name for s in chip.settings], rows)


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def random_projection(features: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """The same map projected on EMBEDDING_DIM seeded Gaussian directions: if these decode gender and the
    trained 128 (fc1) do not, the trained projection discards it."""
    width = next(iter(features.values())).shape[1]
    directions = np.random.default_rng(seed).standard_normal((width, EMBEDDING_DIM)).astype(np.float32)
    return {name: x @ directions for name, x in features.items()}


def shipped_outputs(config: Config, chip: ChipData, work: Path, *, rgb: bool = True) -> dict:
    """The shipped graph run on the chips with the probed intermediate tensors as extra outputs."""
    path = work / "sface_probes.onnx"
    names = (*STAGES, PRE_EMBEDDING)
    model_variant(sface_file(), path, bits=SHIPPED_BITS, outputs=names)
    return embeddings_of(path, chip, rgb=rgb, batch=config.batch, keep=names if rgb else ())


def probe_table(config: Config, chip: ChipData, out: dict) -> None:
    rows = []
    for name, what in [*STAGES.items(), (PRE_EMBEDDING, f"1024x7x7 flattened, PCA {PRE_EMBEDDING_PCA}"),
                       (EMBEDDING, "the 128-d embedding")]:
        features = {dataset: result[name].astype(np.float32) for dataset, result in out.items()}
        reduce = PRE_EMBEDDING_PCA if name == PRE_EMBEDDING else 0
        pooled = "" if name in (PRE_EMBEDDING, EMBEDDING) else " (global average pooled)"
        rows.append([f"{name}: {what}{pooled}"] + gender_columns(chip, features, config.seed, reduce=reduce))
        if name == PRE_EMBEDDING:  # the control: any 128 directions of this map, not the trained ones
            rows.append([f"{name} x {EMBEDDING_DIM} random directions (seeded Gaussian, the control for fc1)"]
                        + gender_columns(chip, random_projection(features, config.seed), config.seed))
    table("3b. Linear probes on SFace's intermediate activations (logreg, standardised; the embedding "
          "L2+standardised): accuracy % (male/female recall)", ["layer"] + [s.name for s in chip.settings], rows)


def channel_table(config: Config, chip: ChipData, stored: dict[str, np.ndarray], base: dict, work: Path) -> None:
    identity = chip.data["celeba"].groups
    rows = []
    for rgb, label in ((True, "RGB (as FaceRecognizerSF)"), (False, "BGR (swapped)")):
        out = base if rgb else shipped_outputs(config, chip, work, rgb=False)
        embedding = {name: result[EMBEDDING] for name, result in out.items()}
        agreement = "; ".join(f"{name} {_mean_cosine(embedding[name], stored[name]):.4f}" for name in embedding)
        rows.append([label, agreement, f"{identity_auc(embedding['celeba'], identity):.4f}"]
                    + gender_columns(chip, embedding, config.seed))
    dlib = {name: rows_.x["dlib_resnet"] for name, rows_ in chip.data.items()}
    rows.append(["dlib_resnet (stored, reference)", "-", f"{identity_auc(dlib['celeba'], identity):.4f}"]
                + gender_columns(chip, dlib, config.seed))
    table("4. Input channel order (logreg on L2+standardised embedding): accuracy % (male/female recall)",
          ["blob", "cosine to the stored (OpenCV-DNN) embeddings", "identity ROC-AUC"]
          + [s.name for s in chip.settings], rows)


# -- main -------------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> tuple[Config, set[int]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # defaults: the main job's stores (scripts/main.sh, OUT=runs/celeba)
    parser.add_argument("--celeba-store", default="runs/celeba/features.zarr")
    parser.add_argument("--utk-store", default="runs/celeba/utkface.zarr")
    parser.add_argument("--chips", default="runs/celeba/sface_chips.npz", help="chip cache (.npz, no pickle)")
    parser.add_argument("--celeba-train", type=int, default=1500, help="CelebA train rows re-run (3, 4)")
    parser.add_argument("--celeba-test", type=int, default=500, help="CelebA test rows re-run (3, 4)")
    parser.add_argument("--utk", type=int, default=1500, help="UTKFace adult rows re-run (3, 4)")
    parser.add_argument("--min-age", type=int, default=15)
    parser.add_argument("--bits", type=int, nargs="*", default=[6, 5, 4], help="coarser weight bits (3a)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--only", nargs="*", type=int, default=[1, 2, 3, 4], help="questions to run")
    args = parser.parse_args(argv)
    bad = [b for b in args.bits if not 2 <= b < SHIPPED_BITS]
    if bad:
        parser.error(f"--bits {bad}: each must be 2..7 (coarser than the shipped 8)")
    config = Config(args.celeba_store, args.utk_store, args.chips, args.celeba_train, args.celeba_test,
                    args.utk, args.min_age, tuple(args.bits), args.seed, args.batch)
    return config, set(args.only)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    config, only = parse(argv)
    try:
        stores = {"celeba": FeatureStore.open(config.celeba_store), "utk": FeatureStore.open(config.utk_store)}
        data = {name: read_rows(store, ["sface", "dlib_resnet"]) for name, store in stores.items()}
    except (OSError, ValueError, KeyError) as error:
        print(f"error: cannot read the stores ({error}); give --celeba-store/--utk-store", file=sys.stderr)
        return 2
    data["utk"] = utk_adults(stores["utk"], data["utk"], config.min_age)
    utk_train, utk_test = utk_halves(data["utk"], config.seed)
    settings = settings_for(data["celeba"], data["utk"], utk_train, utk_test)
    print(f"rows: CelebA train {len(settings[0].train[1])}, test {len(settings[0].test[1])}; UTKFace adults "
          f"(age >= {config.min_age}) train {len(utk_train)}, test {len(utk_test)}; seed {config.seed}")
    if 1 in only:
        treatment_table(data, settings, config.seed)
    if 2 in only:
        head_table(data, settings, config.seed)
    if only & {3, 4}:
        chip = chip_data(config, stores, data)
        print(f"\nchip subsets (3, 4): CelebA {len(chip.data['celeba'].index)} ({len(chip.settings[0].train[1])} "
              f"train, {len(chip.settings[0].test[1])} test), UTKFace adults {len(chip.data['utk'].index)} "
              f"({len(chip.settings[2].train[1])} train, {len(chip.settings[2].test[1])} test)")
        with tempfile.TemporaryDirectory() as work:
            base = shipped_outputs(config, chip, Path(work))
            if 3 in only:
                quantisation_table(config, chip, base, Path(work))
                probe_table(config, chip, base)
            if 4 in only:
                stored = {name: rows.x["sface"] for name, rows in chip.data.items()}
                channel_table(config, chip, stored, base, Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
