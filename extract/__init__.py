"""Embed face images with pre-trained backbones into the feature store (`python -m extract`).

The only package that imports torch / OpenCV-DNN / dlib. `embed_paths` embeds a few files without a
store (used by classify's predict); the CLI (`extract.cli`) runs the resumable, shardable loop of
`extract.pipeline`. Importing the package itself does not import torch (seconds), so `--help`,
`list` and argument errors answer at once; `embed_paths` loads the pipeline on first use.
"""

__all__ = ["embed_paths"]


def __getattr__(name: str):
    if name == "embed_paths":
        from extract.pipeline import embed_paths
        return embed_paths
    raise AttributeError(f"module 'extract' has no attribute {name!r}")
