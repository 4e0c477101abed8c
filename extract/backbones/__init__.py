"""Backbones: ``load_backbone(name, weights=..., device=..., precision=...)`` builds the registered
`BackboneSpec` (`extract.catalog`) into a `Backbone` (its spec + frozen network + picklable OpenCV
preprocessor + metadata). A built-in's module is imported when it is first loaded.
"""

from extract.catalog import BackboneSpec, backbone_names, describe_backbones, register
from extract.detect import NoFaceFound  # preprocessors raise it
from extract.errors import WeightsUnavailable

from ._registry import Backbone, load_backbone

__all__ = ["Backbone", "BackboneSpec", "NoFaceFound", "WeightsUnavailable", "backbone_names",
           "describe_backbones", "load_backbone", "register"]
