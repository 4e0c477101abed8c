#!/usr/bin/env bash
# GPU numbers for PERFORMANCE.md: resnet50 (random weights) model-only vs full pipeline, bf16 and fp32,
# plus a check that bf16 embeddings agree with fp32 ones. Usage: bash scripts/bench_gpu.sh IMAGE_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
images=${1:?usage: bench_gpu.sh IMAGE_DIR}
python=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
workers=$(( $(nproc) - 2 ))
for precision in bf16 fp32; do
  "$python" scripts/bench_extract.py --backbone resnet50 --weights random --device cuda \
    --precision "$precision" --batch-size 256 --workers "$workers" --images 8192 --image-dir "$images"
done
"$python" - "$images" <<'PY'
import sys, glob, numpy as np, torch
from extract.pipeline import embed_paths
paths = sorted(glob.glob(sys.argv[1] + "/*.jpg"))[:256]
a, _ = embed_paths(paths, "resnet50", weights="random", device="cuda", precision="fp32")
b, _ = embed_paths(paths, "resnet50", weights="random", device="cuda", precision="bf16")
c, _ = embed_paths(paths[:32], "resnet50", weights="random", device="cpu", precision="fp32")
rel = lambda x, y: float(np.linalg.norm(x - y) / np.linalg.norm(y))
print(f"resnet50 random: |bf16 - fp32| / |fp32| on cuda = {rel(b, a):.2e}; |cuda fp32 - cpu fp32| / |cpu| = {rel(a[:32], c):.2e}")
PY
