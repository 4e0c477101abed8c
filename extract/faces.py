"""The face front end shared by `extract` and `predict`, one module per step:

    file --decode--> BGR image (reduced when huge) --detect--> face rows --align--> each backbone's chip
    (`extract.decode`)                            (`extract.detect`)    (`extract.align`)

- `extract.decode`: strict, bounded decoding (the size read from the header before any pixel is);
  `Unreadable`, `ImageTooLarge`.
- `extract.detect`: one YuNet detection per image (`FaceDetector`), an aligned dataset's known
  landmarks as check and fallback (`FaceLocator`, `Alignment`); `NoFaceFound`.
- `extract.face_row`: the FACE_DIM values that stand for one face, their named columns.
- `extract.align`: the similarity warp of the 5 landmarks onto each backbone's own template
  (`FaceTemplate`: ArcFace 112x112 for sface, a margin crop for the ImageNet / VGGFace2 nets; the dlib
  nets use the detector's box through their own shape predictor, see backbones/dlib_resnet.py).

This module gathers their public names, so callers import the front end from one place.
"""
from extract.align import ARCFACE_112, CANONICAL, FaceTemplate, similarity_transform
from extract.decode import (DECODE_MAX_PIXELS, MAX_PIXELS, Decoded, ImageTooLarge, Unreadable, decode,
                            imdecode_with_warnings, jpeg_frame, jpeg_is_complete, jpeg_size, png_size)
from extract.detect import (CELEBA_ALIGNED_LANDMARKS, CELEBA_ALIGNED_SIZE, DETECT_MAX_SIDE, DETECTOR_FILE,
                            DETECTOR_REQUIREMENT, KNOWN_ALIGNMENTS, SCORE_THRESHOLD, TEMPLATE_TOLERANCE,
                            Alignment, FaceDetector, FaceLocator, NoFaceFound, detector_path, image_size,
                            template_check)
from extract.face_row import (FACE_DIM, SOURCE_DETECTED, SOURCE_TEMPLATE, face_row, landmarks_of, scaled,
                              template_row)

__all__ = [
    "ARCFACE_112", "CANONICAL", "CELEBA_ALIGNED_LANDMARKS", "CELEBA_ALIGNED_SIZE", "DECODE_MAX_PIXELS",
    "DETECTOR_FILE", "DETECTOR_REQUIREMENT", "DETECT_MAX_SIDE", "FACE_DIM", "KNOWN_ALIGNMENTS", "MAX_PIXELS",
    "SCORE_THRESHOLD", "SOURCE_DETECTED", "SOURCE_TEMPLATE", "TEMPLATE_TOLERANCE", "Alignment", "Decoded",
    "FaceDetector", "FaceLocator", "FaceTemplate", "ImageTooLarge", "NoFaceFound", "Unreadable", "decode",
    "detector_path", "face_row", "image_size", "imdecode_with_warnings", "jpeg_frame", "jpeg_is_complete",
    "jpeg_size", "landmarks_of", "png_size", "scaled", "similarity_transform", "template_check",
    "template_row",
]
