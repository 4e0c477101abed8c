"""Parity of the torch SFace/YuNet (extract/backbones/onnx_nets.py, tests/onnx_parity.py) with OpenCV's DNN on CelebA.

YuNet: torch (batched) vs cv2.FaceDetectorYN on every image: images with a different face count,
max landmark / box error in px, max score difference. SFace: on the chips OpenCV's own path makes
(OpenCV YuNet + warpAffine), the cosine between the torch and the OpenCV embedding: min / median.

    .venv/bin/python scripts/bench/check_parity.py                 # all 6,000 shared CelebA images
    .venv/bin/python scripts/bench/check_parity.py --limit 256 --device cuda
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from extract.backbones import sface  # noqa: E402
from extract.backbones._weights import package_model_file  # noqa: E402
from tests.onnx_parity import opencv_chip, sface_cosines, yunet_parity  # noqa: E402

from bench_extract import DEFAULT_IMAGES  # noqa: E402 - a sibling script


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--device", default="cpu", help="where the torch nets run (cpu, cuda)")
    parser.add_argument("--score-threshold", type=float, default=0.6, help="YuNet's (sface's aligner uses 0.6)")
    args = parser.parse_args(argv)
    paths = sorted(args.image_dir.glob("*.jpg"))[:args.limit]
    if not paths:
        print(f"no .jpg images in {args.image_dir}; pass --image-dir", file=sys.stderr)
        return 2
    detector = str(package_model_file("sface", sface.REQUIREMENT, sface.DETECTOR_FILE))
    recognizer = str(package_model_file("sface", sface.REQUIREMENT, sface.RECOGNIZER_FILE))
    images = [cv2.imread(str(p)) for p in paths]
    start = time.perf_counter()
    detection = yunet_parity(images, detector, score_threshold=args.score_threshold, device=args.device)
    print(f"YuNet on {detection.images} images ({time.perf_counter() - start:.0f} s): {detection.faces} faces, "
          f"{detection.count_mismatches} images with a different face count, max landmark error "
          f"{detection.max_landmark_error_px:.2e} px, max box error {detection.max_box_error_px:.2e} px, "
          f"max score difference {detection.max_score_error:.2e}", flush=True)
    start = time.perf_counter()
    chips = (opencv_chip(image, detector) for image in images)  # OpenCV's own: FaceDetectorYN + alignCrop
    cosines = sface_cosines([chip for chip in chips if chip is not None], recognizer, device=args.device)
    print(f"SFace on {len(cosines)} aligned chips ({time.perf_counter() - start:.0f} s): cosine to OpenCV "
          f"min {cosines.min():.7f}, median {np.median(cosines):.7f}")
    ok = detection.count_mismatches == 0 and detection.max_landmark_error_px < 1 and cosines.min() >= 0.999
    print("parity: OK" if ok else "parity: FAILED (tolerances: same faces, landmarks < 1 px, cosine >= 0.999)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
