"""Inception-ResNet-v1 (Szegedy et al. 2016) as used by FaceNet, 512-d face embeddings.

Written for this project with facenet-pytorch's module and parameter names (``models/inception_resnet_v1.py``:
``repeat_1.0.branch0.bn.running_mean``, ``last_bn.*``...), so its checkpoint ``20180402-114759-vggface2.pt``
loads with strict key matching, less its classifier ``logits``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-3  # TensorFlow's value, which the ported weights were trained with


class BasicConv2d(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU, children named conv, bn, relu."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size, stride: int = 1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=0.1)
        self.relu = nn.ReLU()


def _chain(*convs: BasicConv2d) -> nn.Module:
    """One conv stays bare (key ``branch0.conv``); several become a Sequential (``branch1.0.conv``)."""
    return convs[0] if len(convs) == 1 else nn.Sequential(*convs)


class _Concat(nn.Module):
    """Reduction block: branches run in parallel and are concatenated on channels."""

    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        for index, branch in enumerate(branches):
            self.add_module(f"branch{index}", branch)
        self.n_branches = len(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n_branches)], 1)


class _ResidualBlock(_Concat):
    """Parallel branches, concatenated, projected by a 1x1 ``conv2d`` and added scaled to the input."""

    def __init__(self, branches: list[nn.Module], concat_ch: int, ch: int, scale: float, relu: bool):
        super().__init__(branches)
        self.conv2d = nn.Conv2d(concat_ch, ch, kernel_size=1)
        self.scale = scale
        self.use_relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2d(super().forward(x)) * self.scale + x
        return F.relu(out) if self.use_relu else out


def block35(scale: float) -> _ResidualBlock:
    branches = [
        _chain(BasicConv2d(256, 32, 1)),
        _chain(BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1)),
        _chain(BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1), BasicConv2d(32, 32, 3, padding=1)),
    ]
    return _ResidualBlock(branches, 96, 256, scale, relu=True)


def _factorised_block(ch: int, width: int, kernel: int, scale: float, relu: bool = True) -> _ResidualBlock:
    """block17 (kernel 7) and block8 (kernel 3): a 1x1 branch and a 1x1 -> 1xk -> kx1 branch."""
    half = kernel // 2
    branches = [
        _chain(BasicConv2d(ch, width, 1)),
        _chain(
            BasicConv2d(ch, width, 1),
            BasicConv2d(width, width, (1, kernel), padding=(0, half)),
            BasicConv2d(width, width, (kernel, 1), padding=(half, 0)),
        ),
    ]
    return _ResidualBlock(branches, 2 * width, ch, scale, relu=relu)


class InceptionResnetV1(nn.Module):
    """160x160 RGB face, standardised (x - 127.5) / 128 -> L2-normalised 512-d embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.conv2d_4b = BasicConv2d(192, 256, 3, stride=2)
        self.repeat_1 = nn.Sequential(*[block35(0.17) for _ in range(5)])
        self.mixed_6a = _Concat([
            _chain(BasicConv2d(256, 384, 3, stride=2)),
            _chain(BasicConv2d(256, 192, 1), BasicConv2d(192, 192, 3, padding=1), BasicConv2d(192, 256, 3, stride=2)),
            nn.MaxPool2d(3, stride=2),
        ])
        self.repeat_2 = nn.Sequential(*[_factorised_block(896, 128, 7, 0.10) for _ in range(10)])  # block17
        self.mixed_7a = _Concat([
            _chain(BasicConv2d(896, 256, 1), BasicConv2d(256, 384, 3, stride=2)),
            _chain(BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, stride=2)),
            _chain(BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, padding=1), BasicConv2d(256, 256, 3, stride=2)),
            nn.MaxPool2d(3, stride=2),
        ])
        self.repeat_3 = nn.Sequential(*[_factorised_block(1792, 192, 3, 0.20) for _ in range(5)])  # block8
        self.block8 = _factorised_block(1792, 192, 3, 1.0, relu=False)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.last_linear = nn.Linear(1792, 512, bias=False)
        self.last_bn = nn.BatchNorm1d(512, eps=BN_EPS, momentum=0.1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The 1792-d average-pooled last feature map, the bottleneck's input."""
        # Children run in definition order up to avgpool_1a; facenet's dropout is a no-op in eval.
        for stage in list(self.children())[:-2]:
            x = stage(x)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.last_bn(self.last_linear(self.pooled(x))), p=2, dim=1)


class PooledMap(nn.Module):
    """An `InceptionResnetV1` read before its bottleneck: the 1792-d pooled map (`pooled`)."""

    def __init__(self, net: InceptionResnetV1) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.pooled(x)
