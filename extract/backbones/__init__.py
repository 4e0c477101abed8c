"""Backbone registry: ``load_backbone(name, weights=..., device=..., precision=...)`` returns a
`Backbone` record (frozen network + picklable OpenCV preprocessor + dim + metadata).

Importing this package registers every backbone module below; none loads weights at import.
"""

from ._registry import (
    Backbone,
    NoFaceFound,
    WeightsUnavailable,
    backbone_names,
    describe_backbones,
    load_backbone,
    register,
)
from . import (dlib_cydral, dlib_resnet, efficientnet_lite0, facenet_casia, inception_v3, resnet50,  # noqa: F401
               sface, sface_map, vggface2)  # (registration)

__all__ = [
    "Backbone",
    "NoFaceFound",
    "WeightsUnavailable",
    "backbone_names",
    "describe_backbones",
    "load_backbone",
    "register",
]
