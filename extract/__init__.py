"""Embed face images with pre-trained backbones into the feature store (`python -m extract`, `extract.cli`).

The only package that imports torch / OpenCV-DNN / dlib, and only on first use (`embed_images` and
`embed_paths`, `extract.embed`: a few files without a store), so `--help`, `list` and argument errors
answer at once.
"""

import os

# OpenCV reads its decoders' pixel limit once, when it is loaded: set here, before any extract module
# imports it, to extract.decode.MAX_PIXELS (a test checks they agree); the environment's own value wins.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "250000000")

__all__ = ["embed_images", "embed_paths"]


def __getattr__(name: str):
    if name in __all__:
        from extract import embed
        return getattr(embed, name)
    raise AttributeError(f"module 'extract' has no attribute {name!r}")
