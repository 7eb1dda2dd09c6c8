"""Encoder, decoder and residual networks of the separable model (docs/pde.md §1.3–§1.5).

Every network is the original's layer for layer, so parameter counts match docs/pde.md §1.6 (checked in
tests/test_pde_model.py). Notation: nf = hidden filters; a "block" is conv → BatchNorm2d → LeakyReLU(0.2).
Encoders see the τ conditioning frames, stacked on channels (conv) or flattened (MLP); none has an
output activation. With ``skip=True`` a conv encoder also returns its stage outputs, deepest first,
which the matching decoder concatenates as [h, skip_i] before each stage.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from dynagen.models.layers import MLP, conv_block


def block3x3(c_in: int, c_out: int, transposed: bool = False) -> nn.Sequential:
    conv = (nn.ConvTranspose2d if transposed else nn.Conv2d)(c_in, c_out, 3, 1, 1)
    return conv_block(conv, c_out)


def nested_mlp(n_in: int, n_hidden: int, n_out: int, n_layers: int) -> nn.Sequential:
    """docs/pde.md §1.3's MLP held under ``net`` as in the original, so its parameters stay ``<owner>.net.<i>.*``."""
    return nn.Sequential(OrderedDict(net=MLP(n_in, n_hidden, n_out, n_layers)))


# ----------------------------------------------------------------------------------------- encoders (docs/pde.md §1.4)


class MLPEncoder(nn.Module):
    def __init__(self, n_cond: int, shape: Sequence[int], n_hidden: int, code: int, n_layers: int):
        super().__init__()
        self.mlp = nested_mlp(n_cond * math.prod(shape), n_hidden, code, n_layers)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.mlp(cond.flatten(1))


class DCGAN64Encoder(nn.Module):
    """64² only: 4×4/s2 convs 64→32→16→8→4, then Linear(8nf·16 → code)."""

    def __init__(self, c_in: int, code: int, nf: int, skip: bool = False):
        super().__init__()
        self.skip = skip
        self.stages = nn.ModuleList(
            [
                conv_block(nn.Conv2d(c_in, nf, 4, 2, 1), nf, bn=False),
                conv_block(nn.Conv2d(nf, nf * 2, 4, 2, 1), nf * 2),
                conv_block(nn.Conv2d(nf * 2, nf * 4, 4, 2, 1), nf * 4),
                conv_block(nn.Conv2d(nf * 4, nf * 8, 4, 2, 1), nf * 8),
            ]
        )
        self.out = nn.Sequential(nn.Flatten(), nn.Linear(nf * 8 * 4 * 4, code))

    def forward(self, cond: torch.Tensor):
        h, skips = cond.flatten(1, 2), []
        for stage in self.stages:
            h = stage(h)
            skips.append(h)
        code = self.out(h)
        return (code, skips[::-1]) if self.skip else code


class VGG64Encoder(nn.Module):
    """64² or 32²: four VGG stages, a final MaxPool (64² only), Conv4×4/p0 → BatchNorm (a 1 × 1 code map)."""

    def __init__(self, c_in: int, code: int, nf: int, size: int, skip: bool = False):
        super().__init__()
        self.skip = skip
        self.stages = nn.ModuleList(
            [
                nn.Sequential(block3x3(c_in, nf), block3x3(nf, nf)),
                nn.Sequential(nn.MaxPool2d(2), block3x3(nf, nf * 2), block3x3(nf * 2, nf * 2)),
                nn.Sequential(nn.MaxPool2d(2), *[block3x3(a, nf * 4) for a in (nf * 2, nf * 4, nf * 4)]),
                nn.Sequential(nn.MaxPool2d(2), *[block3x3(a, nf * 8) for a in (nf * 4, nf * 8, nf * 8)]),
            ]
        )
        pool = [nn.MaxPool2d(2)] if size == 64 else []
        self.out = nn.Sequential(*pool, nn.Conv2d(nf * 8, code, 4, 1, 0), nn.BatchNorm2d(code))

    def forward(self, cond: torch.Tensor):
        h, skips = cond.flatten(1, 2), []
        for stage in self.stages:
            h = stage(h)
            skips.append(h)
        code = self.out(h).flatten(1)
        return (code, skips[::-1]) if self.skip else code


class BasicBlock(nn.Module):
    """conv3-BN-ReLU-conv3-BN + shortcut (1×1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1),
            nn.BatchNorm2d(c_out),
        )
        changes = stride != 1 or c_in != c_out
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride), nn.BatchNorm2d(c_out)) if changes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18Encoder(nn.Module):
    """DrNet's ResNet18 (Chairs), 64²: spatial sizes 33 → 17 → 17 → 9 → 5 → 3 → 1; returns no skips.

    The original also defines a ``bn_out`` it never calls; it is left out here, so the parameter count
    is 2·code below the original's (docs/pde.md §1.6 total 27,190,507 for Chairs includes 2·(128 + 10) = 276).
    """

    def __init__(self, c_in: int, code: int):
        super().__init__()
        widths, strides = (64, 128, 256, 512), (1, 2, 2, 2)
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, 64, 5, 2, 3),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ]
        c = 64
        for width, stride in zip(widths, strides):
            layers += [BasicBlock(c, width, stride), BasicBlock(width, width, 1)]
            c = width
        layers.append(nn.Conv2d(512, code, 3, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.net(cond.flatten(1, 2)).flatten(1)


class EncoderSST(nn.Module):
    """64² → a (code, 16, 16) feature map; skips [h3@16², h2@32², h1@64²]."""

    def __init__(self, c_in: int, code: int, skip: bool = False):
        super().__init__()
        self.skip = skip
        self.conv1 = nn.Sequential(block3x3(c_in, 64), block3x3(64, 64))
        self.conv2 = nn.Sequential(nn.MaxPool2d(2), block3x3(64, 128), block3x3(128, 128))
        self.conv3 = nn.Sequential(nn.MaxPool2d(2), block3x3(128, 256), block3x3(256, 256), block3x3(256, 256))
        self.conv4 = nn.Sequential(block3x3(256, 512), block3x3(512, code), nn.Conv2d(code, code, 3, 1, 1))

    def forward(self, cond: torch.Tensor):
        h1 = self.conv1(cond.flatten(1, 2))
        h2 = self.conv2(h1)
        h3 = self.conv3(h2)
        code = self.conv4(h3)
        return (code, [h3, h2, h1]) if self.skip else code


class ConstantS(nn.Module):
    """``--no_s`` ablation: the content code is a constant ones vector (mixing is then forced to mul)."""

    def __init__(self, code: int):
        super().__init__()
        self.code = code

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return cond.new_ones(cond.shape[0], self.code)


# ----------------------------------------------------------------------------------------- decoders (docs/pde.md §1.5)


class MLPDecoder(nn.Module):
    def __init__(self, code: int, shape: Sequence[int], n_hidden: int, n_layers: int, last_activation: nn.Module):
        super().__init__()
        self.shape = tuple(shape)
        self.mlp = nested_mlp(code, n_hidden, math.prod(shape), n_layers)
        self.last_activation = last_activation

    def forward(self, z: torch.Tensor, skips=None) -> torch.Tensor:
        return self.last_activation(self.mlp(z)).view(-1, *self.shape)


class SkipDecoder(nn.Module):
    """A first block from the code vector, then stages that each take the encoder's skip map when given."""

    first: nn.Module
    stages: nn.ModuleList
    last_activation: nn.Module

    def forward(self, z: torch.Tensor, skips=None) -> torch.Tensor:
        h = self.first(z[:, :, None, None])
        for i, stage in enumerate(self.stages):
            h = stage(h if skips is None else torch.cat([h, skips[i]], 1))
        return self.last_activation(h)


class DCGAN64Decoder(SkipDecoder):
    """z → (ny,1,1) → 4² → 8² → 16² → 32² → 64² with 4×4 transposed convs; k = 2 when skips are concatenated."""

    def __init__(self, code: int, c_out: int, nf: int, last_activation: nn.Module, skip: bool = False):
        super().__init__()
        k = 2 if skip else 1
        self.first = conv_block(nn.ConvTranspose2d(code, nf * 8, 4, 1, 0), nf * 8)
        self.stages = nn.ModuleList(
            [
                conv_block(nn.ConvTranspose2d(nf * 8 * k, nf * 4, 4, 2, 1), nf * 4),
                conv_block(nn.ConvTranspose2d(nf * 4 * k, nf * 2, 4, 2, 1), nf * 2),
                conv_block(nn.ConvTranspose2d(nf * 2 * k, nf, 4, 2, 1), nf),
                nn.ConvTranspose2d(nf * k, c_out, 4, 2, 1),
            ]
        )
        self.last_activation = last_activation


class VGG64Decoder(SkipDecoder):
    """Mirror of VGG64Encoder: ConvT4×4 to 4², then 4 stages of 3×3 blocks with nearest ×2 upsampling."""

    def __init__(self, code: int, c_out: int, nf: int, size: int, last_activation: nn.Module, skip: bool = False):
        super().__init__()
        k = 2 if skip else 1
        up = nn.Upsample(scale_factor=2, mode="nearest")
        self.first = nn.Sequential(
            conv_block(nn.ConvTranspose2d(code, nf * 8, 4, 1, 0), nf * 8), *([up] if size == 64 else [])
        )
        t = dict(transposed=True)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(block3x3(nf * 8 * k, nf * 8, **t), block3x3(nf * 8, nf * 8, **t), block3x3(nf * 8, nf * 4, **t), up),
                nn.Sequential(block3x3(nf * 4 * k, nf * 4, **t), block3x3(nf * 4, nf * 4, **t), block3x3(nf * 4, nf * 2, **t), up),
                nn.Sequential(block3x3(nf * 2 * k, nf * 2, **t), block3x3(nf * 2, nf, **t), up),
                nn.Sequential(block3x3(nf * k, nf, **t), nn.ConvTranspose2d(nf, c_out, 3, 1, 1)),
            ]
        )
        self.last_activation = last_activation


class DecoderSST(nn.Module):
    """concat[S-map, T-map] (16²) → 64²; the last layer is a full block (BN + LeakyReLU), as in the original."""

    def __init__(self, code: int, c_out: int, skip: bool = False):
        super().__init__()
        self.skip = skip
        up = nn.Upsample(scale_factor=2, mode="nearest")
        if skip:
            self.stages = nn.ModuleList(
                [
                    nn.Sequential(block3x3(code, 256), block3x3(256, 256), block3x3(256, 128)),
                    nn.Sequential(block3x3(256 + 128, 128), block3x3(128, 64), block3x3(64, 64), up),
                    nn.Sequential(block3x3(128 + 64, 128), block3x3(128, 64), block3x3(64, 64), up),
                    nn.Sequential(block3x3(64 + 64, 64), block3x3(64, 64), block3x3(64, c_out)),
                ]
            )
        else:
            self.stages = nn.ModuleList(
                [
                    nn.Sequential(block3x3(code, 256), block3x3(256, 256), block3x3(256, 128), up),
                    nn.Sequential(block3x3(128, 128), block3x3(128, 128), block3x3(128, 64), up),
                    nn.Sequential(block3x3(64, 64), block3x3(64, c_out)),
                ]
            )

    def forward(self, z: torch.Tensor, skips=None) -> torch.Tensor:
        h = self.stages[0](z)
        for i, stage in enumerate(self.stages[1:]):
            h = stage(h if skips is None else torch.cat([skips[i], h], 1))  # skip first, as the original
        return h


# ------------------------------------------------------------------------------ residual vector fields (docs/pde.md §1.2)


class MLPField(nn.Module):
    """g_b(y) = Linear(d→h) → ReLU → Linear(h→h) → ReLU → Linear(h→d)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = MLP(dim, hidden, dim, 3)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class ConvField(nn.Module):
    """SST's residual branch on (B, d, 16, 16): Conv3-BN-LReLU → Conv3-BN-LReLU → Conv3-BN."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            block3x3(dim, hidden), block3x3(hidden, hidden), nn.Conv2d(hidden, dim, 3, 1, 1), nn.BatchNorm2d(dim)
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


# ------------------------------------------------------------------------------------- initialisation (docs/pde.md §1.5)


def init_normal(module: nn.Module, gain: float = 0.02) -> None:
    """Encoders/decoders: conv and linear weights ~ N(0, gain), BN weights ~ N(1, gain), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
