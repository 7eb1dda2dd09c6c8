"""SRVP building blocks (docs/srvp.md §1.1-§1.3, §1.6): conv blocks, MLPs, DCGAN64 / VGG64 frame encoders and decoders.

Encoders map one frame to ``h in (-1, 1)^nhx`` plus the block outputs ("skips"), deepest first.
Decoders map ``[w, y]`` (and optionally the skips of one frame) back to a frame in (0, 1).
The DCGAN pair also accepts 32x32 frames (one fewer stride-2 block, docs/srvp.md §8).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dynagen.models.layers import conv_block

def conv3x3_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """VGG64's every conv: 3x3 s1 p1 + BN + LeakyReLU(0.2)."""
    return conv_block(nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False), out_channels)


def _dcgan_depth(nx: int) -> int:
    """Number of stride-2 blocks taking ``nx`` down to 4x4: 4 for 64x64, 3 for 32x32."""
    depth = int(math.log2(nx)) - 2
    if nx not in (32, 64):
        raise ValueError(f"nx: DCGAN supports 32 or 64, got {nx}")
    return depth


class FrameEncoder(nn.Module):
    """Runs ``blocks`` then ``last``; returns (h in (-1,1)^nhx, skips deepest first). Skips are post-activation."""

    blocks: nn.ModuleList
    last: nn.Module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
        return self.last(x).flatten(1), skips[::-1]


class FrameDecoder(nn.Module):
    """Runs ``first`` on ``[w, y]`` as a 1x1 map, then ``blocks``, concatenating skip i before block i; sigmoid."""

    first: nn.Module
    blocks: nn.ModuleList
    skipco: bool

    def forward(self, v: torch.Tensor, skips: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = self.first(v[:, :, None, None])
        for i, block in enumerate(self.blocks):
            if self.skipco:
                x = torch.cat([x, skips[i]], 1)
            x = block(x)
        return torch.sigmoid(x)


class DCGANEncoder(FrameEncoder):
    """docs/srvp.md §1.2 DCGAN64Encoder: stride-2 4x4 convs (first without BN), then a 4x4 valid conv + BN + tanh."""

    def __init__(self, nc: int, nf: int, nhx: int, nx: int = 64):
        super().__init__()
        depth = _dcgan_depth(nx)
        channels = [nc] + [nf * 2**i for i in range(depth)]
        self.blocks = nn.ModuleList(
            conv_block(nn.Conv2d(channels[i], channels[i + 1], 4, 2, 1, bias=False), channels[i + 1], bn=i > 0)
            for i in range(depth)
        )
        self.last = conv_block(nn.Conv2d(channels[-1], nhx, 4, 1, 0, bias=False), nhx, activation=nn.Tanh())


class DCGANDecoder(FrameDecoder):
    """docs/srvp.md §1.3 DCGAN64Decoder: 4x4 valid transposed conv to 8nf x 4x4, stride-2 transposed convs, sigmoid."""

    def __init__(self, n_in: int, nc: int, nf: int, nx: int = 64, skipco: bool = False):
        super().__init__()
        depth = _dcgan_depth(nx)
        coef = 2 if skipco else 1
        channels = [nf * 2**i for i in reversed(range(depth))] + [nc]  # e.g. 8nf, 4nf, 2nf, nf, nc
        self.first = conv_block(nn.ConvTranspose2d(n_in, channels[0], 4, 1, 0, bias=False), channels[0])
        self.blocks = nn.ModuleList()
        for i in range(depth):
            conv = nn.ConvTranspose2d(channels[i] * coef, channels[i + 1], 4, 2, 1, bias=False)
            is_last = i == depth - 1
            self.blocks.append(conv if is_last else conv_block(conv, channels[i + 1]))
        self.skipco = skipco


class VGGEncoder(FrameEncoder):
    """docs/srvp.md §1.2 VGG64Encoder: four VGG blocks (64, 32, 16, 8), max-pool to 4x4, 4x4 valid conv + BN + tanh."""

    def __init__(self, nc: int, nf: int, nhx: int, nx: int = 64):
        super().__init__()
        if nx != 64:
            raise ValueError(f"nx: VGG supports 64 only, got {nx}")
        pool = nn.MaxPool2d(2)
        self.blocks = nn.ModuleList([
            nn.Sequential(conv3x3_block(nc, nf), conv3x3_block(nf, nf)),
            nn.Sequential(pool, conv3x3_block(nf, 2 * nf), conv3x3_block(2 * nf, 2 * nf)),
            nn.Sequential(pool, conv3x3_block(2 * nf, 4 * nf), conv3x3_block(4 * nf, 4 * nf), conv3x3_block(4 * nf, 4 * nf)),
            nn.Sequential(pool, conv3x3_block(4 * nf, 8 * nf), conv3x3_block(8 * nf, 8 * nf), conv3x3_block(8 * nf, 8 * nf)),
        ])
        self.last = nn.Sequential(
            pool, conv_block(nn.Conv2d(8 * nf, nhx, 4, 1, 0, bias=False), nhx, activation=nn.Tanh())
        )


class VGGDecoder(FrameDecoder):
    """docs/srvp.md §1.3 VGG64Decoder: 4x4 transposed conv + upsample, VGG blocks with nearest upsampling, 3x3 transposed conv."""

    def __init__(self, n_in: int, nc: int, nf: int, nx: int = 64, skipco: bool = False):
        super().__init__()
        if nx != 64:
            raise ValueError(f"nx: VGG supports 64 only, got {nx}")
        coef = 2 if skipco else 1
        up = nn.Upsample(scale_factor=2, mode="nearest")
        self.first = nn.Sequential(conv_block(nn.ConvTranspose2d(n_in, 8 * nf, 4, 1, 0, bias=False), 8 * nf), up)
        self.blocks = nn.ModuleList([
            nn.Sequential(conv3x3_block(8 * nf * coef, 8 * nf), conv3x3_block(8 * nf, 8 * nf), conv3x3_block(8 * nf, 4 * nf), up),
            nn.Sequential(conv3x3_block(4 * nf * coef, 4 * nf), conv3x3_block(4 * nf, 4 * nf), conv3x3_block(4 * nf, 2 * nf), up),
            nn.Sequential(conv3x3_block(2 * nf * coef, 2 * nf), conv3x3_block(2 * nf, nf), up),
            nn.Sequential(conv3x3_block(nf * coef, nf), nn.ConvTranspose2d(nf, nc, 3, 1, 1, bias=False)),
        ])
        self.skipco = skipco


ENCODERS = {"dcgan": DCGANEncoder, "vgg": VGGEncoder}
DECODERS = {"dcgan": DCGANDecoder, "vgg": VGGDecoder}


def init_conv_weights(module: nn.Module) -> None:
    """docs/srvp.md §1.6: conv / transposed-conv weights ~ N(0, 0.02); BatchNorm weights ~ N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
