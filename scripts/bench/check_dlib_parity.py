"""Parity and speed of dlib's ResNet in torch (extract/backbones/dlib_torch.py) against dlib itself.

On the 150x150 chips dlib_resnet cuts (YuNet box -> shape predictor -> get_face_chip) from the first N
CelebA images: max |torch - dlib| over every descriptor component and the min cosine; then both engines'
rates on those chips, net only (dlib: one chip at a time, as its reader workers run it; torch: batches on
--device, --threads threads, 1 like one dlib worker). --precision bf16/fp16 (CUDA) also compares those.

    .venv/bin/python scripts/bench/check_dlib_parity.py --images 300
    .venv/bin/python scripts/bench/check_dlib_parity.py --images 2000 --device cuda --precision bf16
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from extract.backbones import dlib_resnet
from extract.backbones._torchnet import DeviceEmbed
from extract.backbones.dlib_torch import dlib_resnet_module
from extract.faces import FaceDetector, NoFaceFound

from bench_extract import DEFAULT_IMAGES  # a sibling script


def face_chips(paths: list[Path]) -> np.ndarray:
    """dlib_resnet's chips of the images with a face: (N, 150, 150, 3) uint8 RGB."""
    landmarks = dlib_resnet.package_model_file("dlib_resnet", dlib_resnet.REQUIREMENT, dlib_resnet.LANDMARKS_FILE)
    aligner, detector = dlib_resnet.DlibChip(str(landmarks)), FaceDetector()
    chips = []
    for path in paths:
        image = cv2.imread(str(path))
        try:
            chips.append(aligner(image, detector.largest(image)))
        except NoFaceFound:
            continue
    return np.stack(chips)


def dlib_descriptors(chips: np.ndarray, recognizer: Path) -> tuple[np.ndarray, float]:
    """dlib's descriptors and img/s."""
    import dlib

    net = dlib.face_recognition_model_v1(str(recognizer))
    net.compute_face_descriptor(chips[0])  # warm-up
    start = time.perf_counter()
    out = np.stack([np.asarray(net.compute_face_descriptor(chip), np.float32) for chip in chips])
    return out, len(chips) / (time.perf_counter() - start)


def torch_descriptors(chips: np.ndarray, embed: DeviceEmbed, *, batch: int) -> tuple[np.ndarray, float]:
    """The torch engine's descriptors and img/s (after one warm-up batch)."""
    embed(torch.from_numpy(chips[:batch]))
    if embed.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = [embed(torch.from_numpy(chips[i:i + batch])).cpu() for i in range(0, len(chips), batch)]
    return torch.cat(out).numpy(), len(chips) / (time.perf_counter() - start)


def compare(name: str, ours: np.ndarray, reference: np.ndarray) -> float:
    cosine = (ours * reference).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    worst = float(np.abs(ours - reference).max())
    print(f"{name} vs dlib on {len(ours)} chips: max abs difference {worst:.2e}, min cosine {cosine.min():.8f}")
    return worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--images", type=int, default=300, help="first N images")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="also measured besides fp32 (CUDA)")
    args = parser.parse_args(argv)
    paths = sorted(args.image_dir.glob("*.jpg"))[:args.images]
    if not paths:
        print(f"no .jpg images in {args.image_dir}; pass --image-dir", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    recognizer = dlib_resnet.default_weights_file(dlib_resnet.SPEC)
    chips = face_chips(paths)
    reference, dlib_rate = dlib_descriptors(chips, recognizer)
    device = torch.device(args.device)
    module = dlib_resnet_module(recognizer)
    ours, torch_rate = torch_descriptors(chips, DeviceEmbed(module, device=device, precision="fp32"),
                                         batch=args.batch)
    worst = compare("torch fp32", ours, reference)
    print(f"throughput, net only, {len(chips)} chips: dlib {dlib_rate:.1f} img/s (1 thread, one chip at a time), "
          f"torch fp32 on {device} {torch_rate:.1f} img/s (batch {args.batch}, {args.threads} threads): "
          f"ratio torch/dlib {torch_rate / dlib_rate:.2f}")
    if args.precision != "fp32":
        half, rate = torch_descriptors(chips, DeviceEmbed(module, device=device, precision=args.precision),
                                       batch=args.batch)
        compare(f"torch {args.precision}", half, reference)
        print(f"torch {args.precision} on {device}: {rate:.1f} img/s")
    print("parity: OK" if worst <= 1e-4 else "parity: FAILED (tolerance: 1e-4 per component)")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
