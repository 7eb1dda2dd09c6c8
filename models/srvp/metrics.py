"""Evaluation metrics (spec §4): per-frame PSNR and SSIM, best-of-N selection, optional LPIPS / FVD hooks.

Videos are (T, B, C, H, W) in [0, 1]. Per-frame metrics return (T, B): averaged over channels, one value per
frame and sequence. Sequence scores average them over the predicted frames.

SSIM uses an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1, and a *valid*
convolution (no padding): the map of a 64x64 frame is 54x54. torchmetrics 1.9 reflect-pads the input and
averages the padded border into its score, so the map is computed here with the same window and checked
against torchmetrics' map on the interior (tests/test_srvp_loss_metrics.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio

from dynagen.platform.configs import UsageError

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def frame_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """10 log10(1 / MSE) per frame and channel (MSE over H x W), averaged over channels: (T, B). Identical
    frames give +inf (e.g. copy-last on a static digit, §7.17)."""
    t, b, c = pred.shape[:3]
    psnr = peak_signal_noise_ratio(pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:]),
                                   data_range=1.0, reduction="none", dim=(-2, -1))
    return psnr.view(t, b, c).mean(-1)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised (size, size) Gaussian window in float64, built on ``device`` (no host-to-device copy per call)."""
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim_map(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM map of (N, C, H, W) images with the valid 11x11 Gaussian window, per channel: (N, C, H-10, W-10)."""
    c = pred.shape[1]
    window = gaussian_window(device=pred.device).to(pred.dtype)[None, None].expand(c, 1, -1, -1)
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
# Optional perceptual metrics (§4): they need network weights, which are never downloaded. The user passes
# TorchScript files; models/srvp/README.md says how to make them and the call contract below.


def load_scripted(path: str | Path, option: str, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The TorchScript network in ``path`` (evaluation option ``option``), in eval mode on ``device``.

    Bad paths are user input, so they end in the CLI's one-line error naming the option (exit code 2).
    """
    allowed = "allowed: a file written by torch.jit.save (see models/srvp/README.md)"
    if not Path(str(path)).is_file():
        raise UsageError(f"{option}: no such file: {path}; {allowed}")
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError:  # a state dict, a pickle or any other non-TorchScript file
        raise UsageError(f"{option}: {path} is not a TorchScript file; {allowed}") from None


def frame_lpips(network: torch.nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """§4 LPIPS per frame (T, B). The network gets two (T*B, 3, H, W) batches in [-1, 1] (grey repeated to RGB),
    on the device of ``pred``, and returns one distance per pair: (T*B,) or lpips' (T*B, 1, 1, 1)."""
    t, b = pred.shape[:2]
    to_rgb = lambda v: v.flatten(0, 1).expand(-1, 3, -1, -1) * 2 - 1  # noqa: E731  (expand is a no-op on RGB)
    with torch.no_grad():
        out = network(to_rgb(pred), to_rgb(target))
    if out.numel() != t * b:
        raise UsageError(f"lpips: the network returned shape {tuple(out.shape)} for {t * b} frame pairs; "
                         "allowed: one distance per pair, (N,) or (N, 1, 1, 1)")
    return out.reshape(t, b)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two embedding sets (N, D) (FVD's final step, §4)."""
    from scipy import linalg

    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def video_embeddings(network: torch.nn.Module, videos: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """§4 FVD embeddings (B, D) of videos (T, B, C, H, W) in [0, 1], on their device.

    Chunks of 16 videos become RGB, bilinear 224x224, [-1, 1], laid out (16, T, 224, 224, 3) as TF-Hub's I3D
    takes them; the last chunk is padded with the first videos and the padding dropped. Resizing one chunk at a
    time keeps memory at 16 videos (a whole KTH test set at 224x224 would take ~24 GB).
    """
    t, b = videos.shape[:2]
    out = []
    with torch.no_grad():
        for start in range(0, b, chunk):
            ids = torch.arange(start, start + chunk, device=videos.device)
            n = min(chunk, b - start)
            frames = videos[:, ids % b].flatten(0, 1)  # ids past the end wrap to the first videos (padding)
            frames = F.interpolate(frames.expand(-1, 3, -1, -1), size=(224, 224), mode="bilinear", align_corners=False)
            clips = (frames * 2 - 1).view(t, chunk, 3, 224, 224).permute(1, 0, 3, 4, 2)
            embedding = network(clips)
            if embedding.ndim != 2 or len(embedding) != chunk:
                raise UsageError(f"fvd: the network returned shape {tuple(embedding.shape)} for {chunk} videos; "
                                 "allowed: (N, D) embeddings")
            out.append(embedding[:n].double().cpu().numpy())
    return np.concatenate(out)
