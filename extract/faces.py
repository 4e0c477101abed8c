"""The face front end shared by `extract` and `predict`, one module per step:

    file --decode--> BGR image (reduced when huge) --detect--> face rows --align--> each backbone's chip
    (`extract.decode`)                            (`extract.detect`)    (`extract.align`)

with `extract.face_row` the FACE_DIM values that stand for one face. This module gathers the names
scripts and tests import from the front end, so they import it from one place.
"""
from extract.align import FaceTemplate  # noqa: F401
from extract.decode import MAX_PIXELS, ImageTooLarge, Unreadable, decode  # noqa: F401
from extract.detect import (CELEBA_ALIGNED_LANDMARKS, KNOWN_ALIGNMENTS, Alignment, FaceDetector,  # noqa: F401
                            FaceLocator, NoFaceFound, template_check)
from extract.face_row import (SOURCE_DETECTED, SOURCE_TEMPLATE, face_row, landmarks_of, scaled,  # noqa: F401
                              template_row)
