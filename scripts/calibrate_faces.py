"""Derive the face front end's constants from real CelebA aligned images (prints them; run once).

1. CELEBA_ALIGNED_LANDMARKS (extract/faces.py): the median of YuNet's 5 landmarks (largest face) over
   every 10th image of ../shared/data/celeba/img_align_celeba (600 images).
2. DLIB_BOX (extract/backbones/dlib_resnet.py): dlib's shape predictor was trained on boxes of dlib's
   own HOG detector; the median offset and size of the HOG box relative to YuNet's box on the first 300
   of those images, so YuNet's box can stand in for the HOG pass.

    .venv/bin/python scripts/calibrate_faces.py [CELEBA_ROOT]
"""
import sys
from pathlib import Path

import cv2
import numpy as np

from extract.face_row import BOX, landmarks_of
from extract.faces import FaceDetector


def main() -> None:
    import dlib

    root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/celeba")
    files = sorted((root / "img_align_celeba").glob("*.jpg"))[::10][:600]
    detector, hog = FaceDetector(), dlib.get_frontal_face_detector()
    landmarks, fails, boxes = [], 0, []
    for i, path in enumerate(files):
        image = cv2.imread(str(path))
        faces = detector.faces(image)
        if not len(faces):
            fails += 1
            continue
        face = faces[0]
        landmarks.append(landmarks_of(face))
        rects = hog(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), 0) if i < 300 else []
        if len(rects):
            r = max(rects, key=lambda r: r.area())
            x, y, w, h = face[BOX]
            boxes.append((((r.left() + r.right()) / 2 - (x + w / 2)) / w,
                          ((r.top() + r.bottom()) / 2 - (y + h / 2)) / h,
                          (r.right() - r.left()) / w, (r.bottom() - r.top()) / h))
    landmarks, boxes = np.array(landmarks), np.array(boxes)
    print(f"{len(files)} images, YuNet found no face in {fails}")
    print("CELEBA_ALIGNED_LANDMARKS (median):", np.round(np.median(landmarks, 0), 2).tolist())
    print("  MAD px:", np.round(np.median(np.abs(landmarks - np.median(landmarks, 0)), 0), 2).tolist())
    print(f"DLIB_BOX from {len(boxes)} HOG boxes: (dx/w, dy/h, width/w, height/h) =",
          np.round(np.median(boxes, 0), 4).tolist(),
          "MAD", np.round(np.median(np.abs(boxes - np.median(boxes, 0)), 0), 4).tolist())


if __name__ == "__main__":
    main()
