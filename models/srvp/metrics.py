"""Evaluation metrics (spec §4): per-frame PSNR and SSIM, best-of-N selection, optional LPIPS / FVD hooks.

Videos are (T, B, C, H, W) in [0, 1]. Per-frame metrics return (T, B): averaged over channels, one value per
frame and sequence. Sequence scores average them over the predicted frames.

SSIM uses an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1, and a *valid*
convolution (no padding): the map of a 64x64 frame is 54x54. torchmetrics 1.9 reflect-pads the input and
averages the padded border into its score, so the map is computed here with the same window and checked
against torchmetrics' map on the interior (tests/test_srvp_metrics.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def frame_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """10 log10(1 / MSE) per frame and channel (MSE over H x W), averaged over channels: (T, B). Identical
    frames give +inf (e.g. copy-last on a static digit, §7.17)."""
    t, b, c = pred.shape[:3]
    psnr = peak_signal_noise_ratio(pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:]),
                                   data_range=1.0, reduction="none", dim=(-2, -1))
    return psnr.view(t, b, c).mean(-1)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM map of (N, C, H, W) images with the valid 11x11 Gaussian window, per channel: (N, C, H-10, W-10)."""
    c = pred.shape[1]
    window = gaussian_window().to(pred)[None, None].expand(c, 1, -1, -1)
    filt = lambda v: F.conv2d(v, window, groups=c)  # noqa: E731
    mu_x, mu_y = filt(pred), filt(target)
    var_x = filt(pred * pred) - mu_x**2
    var_y = filt(target * target) - mu_y**2
    cov = filt(pred * target) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def frame_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of the SSIM map per frame and channel, averaged over channels: (T, B)."""
    t, b = pred.shape[:2]
    return ssim_map(pred.flatten(0, 1), target.flatten(0, 1)).mean((-2, -1)).mean(-1).view(t, b)


def best_of_n(scores: torch.Tensor, higher_is_better: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """§4 best-sample selection for one metric. ``scores``: (N samples, T frames, B sequences).

    Each sequence keeps the sample whose mean over frames is best. Returns (best sequence score (B,),
    that sample's per-frame curve (T, B), best sample index (B,)).
    """
    sequence_scores = scores.mean(1)  # (N, B)
    best = sequence_scores.argmax(0) if higher_is_better else sequence_scores.argmin(0)
    curve = scores.gather(0, best[None, None].expand(1, scores.shape[1], -1))[0]
    return sequence_scores.gather(0, best[None])[0], curve, best


def mean_and_interval(values: np.ndarray) -> tuple[float, float]:
    """§4: mean over the test set and the 1.96 std / sqrt(N) half-width (numpy std, ddof = 0)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(1.96 * values.std() / np.sqrt(len(values)))


# ---------------------------------------------------------------------------------------------------------------
# Optional perceptual metrics: they need network weights, which are never downloaded.


def load_scripted(path: str | Path | None, what: str) -> torch.jit.ScriptModule:
    """A TorchScript network the user provides; a clear error otherwise."""
    if not path:
        raise ValueError(f"{what} needs network weights: pass a TorchScript file (no weights are downloaded)")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}: weight file {path} does not exist")
    return torch.jit.load(str(path), map_location="cpu").eval()


def frame_lpips(network: torch.nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """§4 LPIPS per frame (T, B): the user's AlexNet-lin network on [-1, 1] RGB inputs (grey repeated)."""
    t, b = pred.shape[:2]
    to_rgb = lambda v: (v.flatten(0, 1).expand(-1, 3, -1, -1) if v.shape[2] == 1 else v.flatten(0, 1)) * 2 - 1  # noqa: E731
    with torch.no_grad():
        return network(to_rgb(pred), to_rgb(target)).reshape(t, b)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two embedding sets (N, D) (FVD's final step, §4)."""
    from scipy import linalg

    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def video_embeddings(network: torch.nn.Module, videos: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """§4 FVD embeddings: videos (T, B, C, H, W) -> RGB, bilinear 224x224, [-1, 1], (B, T, 224, 224, 3) into the
    user's I3D network in chunks of 16 (the last chunk padded with the first videos, the padding dropped)."""
    t, b = videos.shape[:2]
    frames = videos.flatten(0, 1)
    frames = frames.expand(-1, 3, -1, -1) if frames.shape[1] == 1 else frames
    frames = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False) * 2 - 1
    clips = frames.view(t, b, 3, 224, 224).permute(1, 0, 3, 4, 2)
    out = []
    with torch.no_grad():
        for start in range(0, b, chunk):
            part = clips[start : start + chunk]
            n = len(part)
            if n < chunk:
                part = torch.cat([part, clips[torch.arange(chunk - n) % b]])
            out.append(network(part)[:n].cpu().numpy())
    return np.concatenate(out)
