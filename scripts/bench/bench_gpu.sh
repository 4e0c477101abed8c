#!/usr/bin/env bash
# GPU numbers for PERFORMANCE.md (issue 12), in a few minutes on one GPU: each step's heading says what it
# measures. Everything printed is also written to $OUT/bench_gpu.txt (OUT defaults to ./bench_out).
# FULL_SIZE=N (default 0: skipped) adds step 6, the main job's extraction over N generated CelebA images
# (202599 = full size); PARITY_IMAGES (default 2000 of the 6,000) sizes step 4.
# Usage: bash scripts/bench/bench_gpu.sh [IMAGE_DIR]   (default ../shared/data/celeba/img_align_celeba)
# TINY=1 runs every step on the CPU with a few images (checks the script itself, numbers meaningless).
set -euo pipefail
cd "$(dirname "$0")/../.."
images=${1:-../shared/data/celeba/img_align_celeba}
python=${PYTHON:-python3}
out=${OUT:-bench_out}
mkdir -p "$out"
exec > >(tee -a "$out/bench_gpu.txt") 2>&1
if [ "${TINY:-0}" = 1 ]; then
  device=cpu; n=32; batch=4; face_batch=16; parity=${PARITY_IMAGES:-16}; workers=1; full=${FULL_SIZE:-48}
else
  device=cuda; n=8192; batch=256; face_batch=512; parity=${PARITY_IMAGES:-2000}; workers=$(( $(nproc) / 2 ))
  full=${FULL_SIZE:-0}
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) CPUs, device $device"
step() { echo; echo "## $*"; }

extract_bench() {  # BACKBONE [ARGS]
  "$python" scripts/bench/bench_extract.py --backbone "$@" --device "$device" --batch-size "$batch" \
    --workers "$workers" --images "$n" --image-dir "$images" --skip-naive
}

step "1. resnet50 random weights: model-only vs pipeline, bf16 and fp32 (target: pipeline >= 0.8 x model)"
for precision in bf16 fp32; do
  extract_bench resnet50 --weights random --precision "$precision"
done

step "2. efficientnet_lite0 real weights: model-only vs pipeline, bf16 (target >= 8,000 img/s)"
extract_bench efficientnet_lite0 --precision bf16

step "3a. sface, torch chain on the device (YuNet -> warp_chips -> SFace; target >= 3,000 img/s)"
for precision in bf16 fp32; do
  "$python" scripts/bench/bench_face_gpu.py --device "$device" --images "$n" --batch-size "$face_batch" \
    --precision "$precision" --image-dir "$images" --parity-images 256
done
step "3b. sface through the extract pipeline (EXTRACT_SFACE_ENGINE=auto: torch SFace on cuda)"
extract_bench sface --precision bf16

step "3c. dlib_resnet: torch DlibResNet on $device vs dlib (parity, bf16, net-only rate) and through the pipeline"
"$python" scripts/bench/check_dlib_parity.py --device "$device" --precision bf16 --batch "$batch" \
  --images "$(( parity < 512 ? parity : 512 ))" --image-dir "$images" || echo "PARITY FAILED"
EXTRACT_DLIB_ENGINE=torch extract_bench dlib_resnet --precision bf16

step "3d. --decode device (nvJPEG decode + chips on $device) vs --decode cpu, same face rows (extract/device_front.py)"
for b in sface dlib_resnet efficientnet_lite0; do
  EXTRACT_SFACE_ENGINE=torch EXTRACT_DLIB_ENGINE=torch "$python" scripts/bench/bench_decode.py --backbone "$b" \
    --device "$device" --precision bf16 --batch-size "$batch" --workers "$workers" --images "$n" \
    --image-dir "$images" || echo "DECODE BENCH FAILED ($b)"
done

step "3e. sface_map, dlib_age, dlib_gender (issue 8) through the extract pipeline (torch on $device)"
for b in sface_map dlib_age dlib_gender; do
  EXTRACT_SFACE_ENGINE=torch extract_bench "$b" --precision bf16
done

step "3f. facenet_casia (issue 20, torch InceptionResNetV1): model-only vs pipeline on $device, bf16 and fp32"
for precision in bf16 fp32; do
  extract_bench facenet_casia --precision "$precision"
done

step "4. parity of torch SFace/YuNet on $device with OpenCV, $parity images"
"$python" scripts/bench/check_parity.py --device "$device" --limit "$parity" --image-dir "$images" || echo "PARITY FAILED"

step "5. checks: bf16 vs fp32, pipeline store vs embed_paths"
"$python" - "$images" "$device" <<'PY'
import sys, glob, tempfile, numpy as np
from extract.backbones import load_backbone
from extract.embed import embed_paths
from extract.pipeline import extract_units
from tests.fixtures import synthetic_table
from features.store import FeatureStore
device = sys.argv[2]
paths = sorted(glob.glob(sys.argv[1] + "/*.jpg"))[:256 if device == "cuda" else 16]
a, _ = embed_paths(paths, "resnet50", weights="random", device=device, precision="fp32")
b, _ = embed_paths(paths, "resnet50", weights="random", device=device, precision="bf16")
c, _ = embed_paths(paths[:16], "resnet50", weights="random", device="cpu", precision="fp32")
rel = lambda x, y: float(np.linalg.norm(x - y) / np.linalg.norm(y))
print(f"resnet50 random: |bf16 - fp32| / |fp32| on {device} = {rel(b, a):.2e}; "
      f"|{device} fp32 - cpu fp32| / |cpu| = {rel(a[:16], c):.2e}")
n = len(paths)
table = synthetic_table(n, name="check", root="/", paths=paths)
with tempfile.TemporaryDirectory() as scratch:
    store = FeatureStore.create(scratch + "/check.zarr", table)
    model = load_backbone("resnet50", weights="random", device=device)
    writer = store.add_backbone("resnet50", dim=2048, unit_rows=64, metadata=model.metadata)
    extract_units(writer, model, paths, writer.pending_units(), batch_size=32, workers=4, progress=False)
    stored = store.read("resnet50").x
print(f"pipeline store vs embed_paths on {device} fp32: {rel(stored, a):.2e} (rows {len(stored)} of {n})")
PY

if [ "$full" -gt 0 ]; then
  step "6. main job's extraction over $full generated CelebA images"
  scratch=$(mktemp -d)
  "$python" scripts/bench/bench_full_size.py --scratch "$scratch" --size "$full" -- --device "$device"
  rm -rf "$scratch"
fi
echo; echo "# done $(date -u +%FT%TZ)"
