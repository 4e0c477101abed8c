"""Study: how does a face backbone's crop margin move its accuracy in domain and across datasets?

For each margin, the backbone's aligned crop (`extract.faces.FaceTemplate` with that margin) is cut
from the detections already stored in two feature stores (a training store and an eval store), embedded,
and a logreg head (C chosen on the training store's val) is fitted on a sample of the training store's
train rows. Printed per margin: val accuracy, and accuracy with per-sex recall on a sample of the eval
store's faces (aged >= 15 when it records ages). Slow on CPU: about 2-3 min per margin for the defaults.

    PYTHONPATH=. .venv/bin/python scripts/studies/measure_crop_margin.py --store runs/celeba/features.zarr \\
        --eval-store runs/celeba/utkface.zarr --margins 0 0.1 0.25 0.5
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from classify.errors import image_paths  # noqa: E402
from classify.heads import make_head  # noqa: E402
from extract.backbones import load_backbone  # noqa: E402
from extract.backbones._image import AlignedCrop  # noqa: E402
from extract.faces import FaceTemplate, decode, scaled  # noqa: E402
from features.store import FeatureStore, Status  # noqa: E402


def sample(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(rows, min(n, len(rows)), replace=False))


def embed(backbone, crop: AlignedCrop, paths: np.ndarray, faces: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(rows), 32):
        decoded = [(decode(paths[i]), faces[i]) for i in rows[start:start + 32]]
        chips = [crop(image.image, scaled(face, image.scale)) for image, face in decoded]
        out.append(backbone.embed(torch.from_numpy(np.stack(chips))).numpy())
    return np.concatenate(out)


def opened(path: str):
    store = FeatureStore.open(path)
    faces, status = store.faces()
    return store, image_paths(store), faces, status == Status.OK


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="training store (its detections, labels, split)")
    parser.add_argument("--eval-store", required=True, help="a store of another dataset")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--margins", nargs="+", type=float, default=[0.0, 0.1, 0.25, 0.5])
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--eval-rows", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    backbone = load_backbone(args.backbone, weights=None, device=torch.device("cpu"), precision="fp32")
    aligner = backbone.preprocessor.aligner
    train, train_paths, train_faces, train_ok = opened(args.store)
    other, other_paths, other_faces, other_ok = opened(args.eval_store)
    rng = np.random.default_rng(args.seed)
    fit_rows = sample(np.flatnonzero(train_ok & (train.split == 0)), args.train_rows, rng)
    val_rows = np.flatnonzero(train_ok & (train.split == 1))
    ages = other.attributes.get("age")
    usable = other_ok & (ages >= 15) if ages is not None else other_ok
    eval_rows = sample(np.flatnonzero(usable), args.eval_rows, rng)
    y_eval = other.gender[eval_rows]
    for margin in args.margins:
        started = time.perf_counter()
        crop = AlignedCrop(FaceTemplate(aligner.template.size, margin=margin), mean=aligner.mean, std=aligner.std,
                           rgb=aligner.rgb)
        x_fit, x_val = (embed(backbone, crop, train_paths, train_faces, rows) for rows in (fit_rows, val_rows))
        head = make_head("logreg", seed=args.seed).fit(x_fit, train.gender[fit_rows], x_val, train.gender[val_rows])
        p = head.predict_proba(embed(backbone, crop, other_paths, other_faces, eval_rows))[:, 1]
        male, female = np.mean(p[y_eval == 1] > 0.5), np.mean(p[y_eval == 0] <= 0.5)
        print(f"margin {margin}: val {np.mean(head.predict(x_val) == train.gender[val_rows]):.4f}, "
              f"{other.dataset_name} {np.mean((p > 0.5) == y_eval):.4f} (male recall {male:.3f}, "
              f"female {female:.3f}) on {len(eval_rows)} faces "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
