"""One SSIM for SRVP and the PDE model, with the two originals' conventions as named options.

Both originals (SRVP's ``metrics/ssim.py``, docs/srvp.md §4; the PDE model's Caffe2-derived ``utils/ssim.py``, docs/pde.md
§4) compute the same map: an 11x11 normalised Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1,
per channel, over the *valid* region only (no padding: a 64x64 frame gives a 54x54 map), averaged over the map
and then over channels. They differ in what reaches it:

- ``srvp``: the frames as given, in [0, 1] (the model's predictions are clamped before scoring).
- ``pde``: the frames min-max scaled with a caller's ``value_range = (low, high)`` when one is given. The PDE
  original's SST test scales de-normalised temperatures with the zone's range of the *normalised* array (a quirk,
  docs/pde.md §4, kept as it is: models/pde/evaluate.py), so the scaled values leave [0, 1]; nothing is clamped.

torchmetrics 1.9 reflect-pads the input and averages the padded border into its score, so the map is computed here;
tests check it against torchmetrics' map on the valid interior and against a scipy reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SSIMConvention:
    window: int
    sigma: float
    k1: float
    k2: float
    data_range: float
    scaling: str  # what happens to the frames before the map (recorded in evaluation manifests)
    accepts_value_range: bool


_WINDOW = dict(window=11, sigma=1.5, k1=0.01, k2=0.03, data_range=1.0)
CONVENTIONS = {
    "srvp": SSIMConvention(**_WINDOW, scaling="frames as given, in [0, 1]", accepts_value_range=False),
    "pde": SSIMConvention(**_WINDOW, scaling="(x - low) / (high - low) with the caller's value_range, unclamped",
                          accepts_value_range=True),
}


def gaussian_window(size: int, sigma: float, device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised (size, size) Gaussian window in float64, built on ``device`` (no host-to-device copy per call)."""
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim_map(pred: torch.Tensor, target: torch.Tensor, convention: str = "srvp") -> torch.Tensor:
    """SSIM map of (N, C, H, W) images with the convention's valid window, per channel: (N, C, H-10, W-10)."""
    c, conv = pred.shape[1], CONVENTIONS[convention]
    window = gaussian_window(conv.window, conv.sigma, device=pred.device).to(pred.dtype)[None, None].expand(c, 1, -1, -1)
    filt = lambda v: F.conv2d(v, window, groups=c)  # noqa: E731
    mu_x, mu_y = filt(pred), filt(target)
    var_x = filt(pred * pred) - mu_x**2
    var_y = filt(target * target) - mu_y**2
    cov = filt(pred * target) - mu_x * mu_y
    c1, c2 = (conv.k1 * conv.data_range) ** 2, (conv.k2 * conv.data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(pred: torch.Tensor, target: torch.Tensor, convention: str = "srvp",
         value_range: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Per-image SSIM of (..., C, H, W) frames: the map's mean per channel, averaged over channels, shape (...).

    ``value_range`` (``pde`` only): (low, high), broadcastable to the frames, for the min-max scaling.
    """
    if value_range is not None:
        if not CONVENTIONS[convention].accepts_value_range:
            raise ValueError(f"convention {convention!r} scores frames as given; value_range is for 'pde'")
        low, high = value_range
        pred, target = (pred - low) / (high - low), (target - low) / (high - low)
    lead = pred.shape[:-3]
    flat = lambda v: v.reshape(-1, *v.shape[-3:])  # noqa: E731
    return ssim_map(flat(pred), flat(target), convention).mean((-2, -1)).mean(-1).view(lead)
