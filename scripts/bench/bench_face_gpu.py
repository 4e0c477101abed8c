"""sface with its face front end on the device: YuNet detect -> similarity warp -> SFace, all torch.

Decoded images (same size, preloaded in pinned memory: JPEG decode is not timed) go through `YuNet`
(batched; NMS on the CPU), the largest face's 5 landmarks give the similarity (as sface's aligner),
`warp_chips` cuts the 112x112 chips on the device and `SFace` embeds them. Prints images/s of detection,
embedding and the whole chain, and the chain's cosine to the OpenCV path (`embed_paths`, OpenCV's DNN).

    .venv/bin/python scripts/bench/bench_face_gpu.py --device cuda --images 8192 --batch-size 512 --precision bf16
    .venv/bin/python scripts/bench/bench_face_gpu.py --device cpu --images 64 --batch-size 32   # a quick check
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from extract.backbones import sface  # noqa: E402
from extract.backbones._torchnet import autocast  # noqa: E402
from extract.backbones._weights import package_model_file  # noqa: E402
from extract.backbones.onnx_nets import SFace, warp_chips  # noqa: E402
from tests.onnx_parity import YuNet, largest_face_matrix  # noqa: E402

from bench_extract import DEFAULT_IMAGES, image_files, synchronize  # noqa: E402 - a sibling script


class FaceChain:
    def __init__(self, device: torch.device, precision: str):
        self.device, self.precision = device, precision
        self.detector = YuNet(package_model_file("sface", sface.REQUIREMENT, sface.DETECTOR_FILE),
                              score_threshold=0.6).to(device)
        self.recognizer = SFace(package_model_file("sface", sface.REQUIREMENT, sface.RECOGNIZER_FILE)).to(device)

    def detect(self, batch: torch.Tensor) -> tuple[torch.Tensor, list[np.ndarray]]:
        # YuNet stays fp32: under bf16 autocast its landmarks move enough to change the aligned chip
        # (chain cosine to OpenCV fell to 0.94 on CPU); SFace alone in bf16 keeps cosine >= 0.9998.
        images = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return images, self.detector.decode(self.detector(images), tuple(images.shape[-2:]))

    def embed(self, chips_bgr: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.recognizer(chips_bgr.flip(1))  # BGR -> RGB: the blob OpenCV builds

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        images, faces = self.detect(batch)
        found = np.array([i for i, f in enumerate(faces) if len(f)], dtype=np.int64)
        if not len(found):
            return found, torch.empty(0, 128)
        matrices = np.array([largest_face_matrix(faces[i]) for i in found])  # onto the ArcFace template
        chips = warp_chips(images[torch.from_numpy(found).to(self.device)], torch.from_numpy(matrices))
        chips = chips.round().clamp(0, 255)  # the uint8 chip the CPU path embeds
        return found, self.embed(chips)


def rate(function, batches: list[torch.Tensor], device: torch.device) -> float:
    function(batches[0])  # warm-up: cuDNN autotune, lazy init
    synchronize(device)
    start = time.perf_counter()
    for batch in batches:
        function(batch)
    synchronize(device)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def parity(chain: FaceChain, paths: list[str], images: torch.Tensor, count: int) -> str:
    from extract.embed import embed_paths

    os.environ["EXTRACT_SFACE_ENGINE"] = "opencv"
    reference, _ = embed_paths(paths[:count], "sface", device="cpu", workers=0)
    found, ours = chain(images[:count])
    ours = ours.float().cpu().numpy()
    both = [k for k, i in enumerate(found) if not np.isnan(reference[i]).any()]
    a, b = ours[both], reference[found[both]]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    no_face = int(np.isnan(reference).any(1).sum())
    return (f"parity with the OpenCV path on {count} images: faces found {len(found)} (OpenCV: {count - no_face}); "
            f"cosine min {cosine.min():.5f}, median {np.median(cosine):.6f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--parity-images", type=int, default=256)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    paths = image_files(args.image_dir, args.images)
    decoded = {path: cv2.imread(path) for path in set(paths)}
    images = torch.from_numpy(np.stack([decoded[p] for p in paths]))  # (N, H, W, 3) BGR uint8
    if device.type == "cuda":
        images = images.pin_memory()
    chain = FaceChain(device, args.precision)
    batches = list(images.split(args.batch_size))
    chips = torch.rand(args.batch_size, 3, 112, 112, device=device) * 255
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# sface torch chain, {args.images} images {tuple(images.shape[1:3])}, batch {args.batch_size}, "
          f"{args.precision}, {device} {card}, torch {torch.__version__}", flush=True)
    detect = rate(lambda b: chain.detect(b), batches, device)
    embed = rate(lambda b: chain.embed(chips[:len(b)]), batches, device)
    whole = rate(chain, batches, device)
    print("| sface (torch) | device | YuNet detect img/s | SFace embed img/s | detect+align+embed img/s |")
    print("|---|---|---|---|---|")
    print(f"| {card} | {device.type} {args.precision} | {detect:.0f} | {embed:.0f} | {whole:.0f} |", flush=True)
    print(parity(chain, paths, images, min(args.parity_images, args.images)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
