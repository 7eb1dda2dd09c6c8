"""The one SSIM shared by SRVP and the PDE model: both layouts give the same numbers, conventions are named."""

from __future__ import annotations

import pytest
import torch

from dynagen.models.pde.metrics import ssim_per_frame
from dynagen.models.srvp.metrics import frame_ssim
from dynagen.models.ssim import CONVENTIONS, ssim


def test_srvp_and_pde_layouts_score_the_same_frames_identically_and_scaling_is_the_pde_option():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 2, 32, 32, dtype=torch.float64)  # PDE layout (B, T, C, H, W)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    pde = ssim_per_frame(y, x)
    srvp = frame_ssim(y.transpose(0, 1), x.transpose(0, 1)).transpose(0, 1)  # SRVP layout (T, B, C, H, W)
    assert torch.equal(pde, srvp)
    low, high = torch.tensor(-1.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    scaled = ssim_per_frame(y, x, value_range=(low, high))
    assert torch.equal(scaled, ssim((y - low) / (high - low), (x - low) / (high - low), "srvp"))
    assert not torch.allclose(scaled, pde)  # the range matters: K1, K2 are fixed against data range 1
    with pytest.raises(ValueError, match="value_range is for 'pde'"):
        ssim(y, x, "srvp", value_range=(low, high))
    assert CONVENTIONS["srvp"].window == CONVENTIONS["pde"].window == 11
