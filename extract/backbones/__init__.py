"""Backbones: ``load_backbone(name, weights=..., device=..., precision=...)`` builds the registered
`BackboneSpec` (`extract.catalog`) into a `Backbone` (its spec + frozen network + picklable OpenCV
preprocessor + metadata). A built-in's module is imported when it is first loaded.
"""

from ._registry import (
    Backbone,
    BackboneSpec,
    NoFaceFound,
    WeightsUnavailable,
    backbone_names,
    describe_backbones,
    load_backbone,
    register,
)

__all__ = [
    "Backbone",
    "BackboneSpec",
    "NoFaceFound",
    "WeightsUnavailable",
    "backbone_names",
    "describe_backbones",
    "load_backbone",
    "register",
]
