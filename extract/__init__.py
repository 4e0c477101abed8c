"""Embed face images with pre-trained backbones into the feature store (`python -m extract`).

The only package that imports torch / OpenCV-DNN / dlib. `embed_paths` embeds a few files without a
store (used by classify's predict); the CLI (`extract.cli`) runs the resumable, shardable loop of
`extract.pipeline`.
"""
from extract.pipeline import embed_paths

__all__ = ["embed_paths"]
