"""The face front end's names in one place, for scripts and tests: file --decode (`extract.decode`)-->
BGR image --detect (`extract.detect`)--> face rows (`extract.face_row`) --align (`extract.align`)--> chips.
"""
from extract.align import FaceTemplate  # noqa: F401
from extract.decode import MAX_PIXELS, ImageTooLarge, Unreadable, decode  # noqa: F401
from extract.detect import (CELEBA_ALIGNED_LANDMARKS, KNOWN_ALIGNMENTS, Alignment, FaceDetector,  # noqa: F401
                            FaceLocator, NoFaceFound, template_check)
from extract.face_row import (SOURCE_DETECTED, SOURCE_TEMPLATE, face_row, landmarks_of, scaled,  # noqa: F401
                              template_row)
