"""Layers shared by SRVP and the PDE-disentanglement model (both from the same group's code base).

Parameter layouts are the originals' (state_dict names and shapes), so parameter counts and checkpoints stay as
they are: docs/srvp.md §1.1 and §1.6, docs/pde.md §1.3 and §1.5.
"""

from __future__ import annotations

from torch import nn

LRELU_SLOPE = 0.2


def conv_block(conv: nn.Module, out_channels: int, bn: bool = True, activation: nn.Module | None = None) -> nn.Sequential:
    """``conv`` -> BatchNorm2d(out_channels) (unless ``bn=False``) -> ``activation`` (default LeakyReLU(0.2))."""
    layers = [conv]
    if bn:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(activation if activation is not None else nn.LeakyReLU(LRELU_SLOPE, inplace=True))
    return nn.Sequential(*layers)


class MLP(nn.Sequential):
    """``Linear -> [ReLU -> Linear] x (n_layers - 1)``: no activation before the first layer, linear output.

    Hidden layers are ``n_hidden`` wide; with ``n_layers=1`` it is a single ``Linear(n_in, n_out)``. The linear
    layers sit at indices 0, 2, 4, ... of the sequence.
    """

    def __init__(self, n_in: int, n_hidden: int, n_out: int, n_layers: int):
        if n_layers < 1:
            raise ValueError(f"n_layers: an MLP has at least one linear layer, got {n_layers}")
        sizes = [n_in] + [n_hidden] * (n_layers - 1) + [n_out]
        layers: list[nn.Module] = [nn.Linear(sizes[0], sizes[1])]
        for a, b in zip(sizes[1:-1], sizes[2:]):
            layers += [nn.ReLU(inplace=True), nn.Linear(a, b)]
        super().__init__(*layers)


def init_orthogonal(module: nn.Module, gain: float) -> None:
    """Every conv / linear layer in ``module``: orthogonal weights with ``gain``, zero biases; every BatchNorm2d:
    weights ~ N(1, gain), zero biases (the PDE original's choice for its temporal model).

    Layers are visited in ``module.modules()`` order, so the random draws follow the order of definition.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

