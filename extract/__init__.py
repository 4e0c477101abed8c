"""Embed face images with pre-trained backbones into the feature store (`python -m extract`).

The only package that imports torch / OpenCV-DNN / dlib. `embed_images` embeds a few files without a
store with every backbone of a head in one pass (classify's predict; `embed_paths`: one backbone); the
CLI (`extract.cli`) runs the resumable, shardable loop of `extract.pipeline` (the store-less one is
`extract.embed`). Importing the package
itself does not import torch (seconds), so `--help`, `list` and argument errors answer at once; both
functions load the pipeline on first use.
"""

__all__ = ["embed_images", "embed_paths"]


def __getattr__(name: str):
    if name in __all__:
        from extract import embed
        return getattr(embed, name)
    raise AttributeError(f"module 'extract' has no attribute {name!r}")
