#!/usr/bin/env bash
# GPU numbers for PERFORMANCE.md: resnet50 (random weights) model-only vs full pipeline, bf16 and fp32,
# plus checks: bf16 embeddings agree with fp32 ones, and the pipeline (batches in flight, writer thread)
# stores exactly what embed_paths computes. Usage: bash scripts/bench_gpu.sh IMAGE_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
images=${1:?usage: bench_gpu.sh IMAGE_DIR}
python=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
workers=$(( $(nproc) / 2 ))  # extract's default with a GPU
for precision in bf16 fp32; do
  "$python" scripts/bench_extract.py --backbone resnet50 --weights random --device cuda \
    --precision "$precision" --batch-size 256 --workers "$workers" --images 8192 --image-dir "$images"
done
"$python" - "$images" <<'PY'
import sys, glob, tempfile, numpy as np, torch
from extract.backbones import load_backbone
from extract.pipeline import embed_paths, extract_units
from features.dataset import Dataset
from features.store import FeatureStore
paths = sorted(glob.glob(sys.argv[1] + "/*.jpg"))[:256]
a, _ = embed_paths(paths, "resnet50", weights="random", device="cuda", precision="fp32")
b, _ = embed_paths(paths, "resnet50", weights="random", device="cuda", precision="bf16")
c, _ = embed_paths(paths[:32], "resnet50", weights="random", device="cpu", precision="fp32")
rel = lambda x, y: float(np.linalg.norm(x - y) / np.linalg.norm(y))
print(f"resnet50 random: |bf16 - fp32| / |fp32| on cuda = {rel(b, a):.2e}; |cuda fp32 - cpu fp32| / |cpu| = {rel(a[:32], c):.2e}")
n = len(paths)
table = Dataset(name="check", root="/", ids=np.array([str(i) for i in range(n)]), paths=np.array(paths),
                gender=np.zeros(n, np.int8), split=np.zeros(n, np.int8))
with tempfile.TemporaryDirectory() as scratch:
    store = FeatureStore.create(scratch + "/check.zarr", table)
    model = load_backbone("resnet50", weights="random", device="cuda")
    writer = store.add_backbone("resnet50", dim=2048, unit_rows=64, metadata=model.metadata)
    extract_units(writer, model, paths, writer.pending_units(), batch_size=32, workers=4, progress=False)
    stored = store.read("resnet50").x
print(f"pipeline store vs embed_paths on cuda fp32: {rel(stored, a):.2e} (rows {len(stored)} of {n})")
PY
