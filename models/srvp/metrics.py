"""Evaluation metrics (docs/srvp.md §4): per-frame PSNR and SSIM, best-of-N selection, optional LPIPS / FVD hooks.

Videos are (T, B, C, H, W) in [0, 1]. Per-frame metrics return (T, B): averaged over channels, one value per
frame and sequence. Sequence scores average them over the predicted frames.

SSIM is the one implementation shared with the PDE model (models/ssim.py) in SRVP's convention: an 11x11 Gaussian
window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1, *valid* convolution (a 64x64 frame gives a 54x54 map).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio

from dynagen.models.ssim import ssim, ssim_map  # noqa: F401  (ssim_map: the map itself, for tests and plots)
from dynagen.platform.configs import UsageError



def frame_psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """10 log10(1 / MSE) per frame and channel (MSE over H x W), averaged over channels: (T, B). Identical
    frames give +inf (e.g. copy-last on a static digit, docs/srvp.md §7.17)."""
    t, b, c = pred.shape[:3]
    psnr = peak_signal_noise_ratio(pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:]),
                                   data_range=1.0, reduction="none", dim=(-2, -1))
    return psnr.view(t, b, c).mean(-1)


def frame_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM (SRVP's convention, models/ssim.py) per frame: the map's mean per channel, averaged over channels: (T, B)."""
    return ssim(pred, target, "srvp")


def best_of_n(scores: torch.Tensor, higher_is_better: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """docs/srvp.md §4 best-sample selection for one metric. ``scores``: (N samples, T frames, B sequences).

    Each sequence keeps the sample whose mean over frames is best. Returns (best sequence score (B,),
    that sample's per-frame curve (T, B), best sample index (B,)).
    """
    sequence_scores = scores.mean(1)  # (N, B)
    best = sequence_scores.argmax(0) if higher_is_better else sequence_scores.argmin(0)
    curve = scores.gather(0, best[None, None].expand(1, scores.shape[1], -1))[0]
    return sequence_scores.gather(0, best[None])[0], curve, best


def mean_and_interval(values: np.ndarray) -> tuple[float, float]:
    """docs/srvp.md §4: mean over the test set and the 1.96 std / sqrt(N) half-width (numpy std, ddof = 0)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(1.96 * values.std() / np.sqrt(len(values)))


# ---------------------------------------------------------------------------------------------------------------
# Optional perceptual metrics (docs/srvp.md §4): they need network weights, which are never downloaded. The user passes
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
    """docs/srvp.md §4 LPIPS per frame (T, B). The network gets two (T*B, 3, H, W) batches in [-1, 1] (grey repeated to RGB),
    on the device of ``pred``, and returns one distance per pair: (T*B,) or lpips' (T*B, 1, 1, 1)."""
    t, b = pred.shape[:2]
    to_rgb = lambda v: v.flatten(0, 1).expand(-1, 3, -1, -1) * 2 - 1  # noqa: E731  (expand is a no-op on RGB)
    with torch.no_grad():
        out = network(to_rgb(pred), to_rgb(target))
    if out.numel() != t * b:
        raise UsageError(f"lpips: the network returned shape {tuple(out.shape)} for {t * b} frame pairs; "
                         "allowed: one distance per pair, (N,) or (N, 1, 1, 1)")
    return out.reshape(t, b)


# Relative tolerances of the Fréchet distance's matrix square root (float64): eigenvalues of the PSD product below
# -NEGATIVE_EIGENVALUE_TOL * its largest are not round-off, and the root's residual ||R R - M|| / ||M|| must stay
# below SQRT_RESIDUAL_TOL.
NEGATIVE_EIGENVALUE_TOL, SQRT_RESIDUAL_TOL = 1e-8, 1e-6
FRECHET_METHOD = "trace sqrt(S_a S_b) = sum sqrt(eig(sqrt(S_a) S_b sqrt(S_a))), symmetric eigendecompositions, residual-checked"


class FrechetError(ArithmeticError):
    """The covariances are not positive semi-definite, or the square root's residual is above tolerance."""


def _psd_sqrt(matrix: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(square root, eigenvalues) of a symmetric PSD matrix; round-off negative eigenvalues are set to 0."""
    matrix = (matrix + matrix.T) / 2
    eigenvalues, vectors = np.linalg.eigh(matrix)
    scale = max(float(np.abs(eigenvalues).max()), np.finfo(np.float64).tiny)
    if eigenvalues.min() < -NEGATIVE_EIGENVALUE_TOL * scale:
        raise FrechetError(f"{what} has eigenvalue {eigenvalues.min():.3e} (largest {scale:.3e}): not positive "
                           "semi-definite beyond round-off")
    # Eigenvalues within round-off of 0 (D eps of the largest) are 0: their square roots (~sqrt(eps)) would
    # otherwise add up to a visible error on rank-deficient covariances.
    eigenvalues = np.where(eigenvalues < len(matrix) * np.finfo(np.float64).eps * scale, 0.0, eigenvalues)
    root = (vectors * np.sqrt(eigenvalues)) @ vectors.T
    residual = np.linalg.norm(root @ root - matrix) / max(np.linalg.norm(matrix), np.finfo(np.float64).tiny)
    if residual > SQRT_RESIDUAL_TOL:
        raise FrechetError(f"square root of {what}: relative residual {residual:.3e} > {SQRT_RESIDUAL_TOL:.0e}")
    return root, eigenvalues


def gaussian_frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between N(mu_a, S_a) and N(mu_b, S_b).

    tr (S_a S_b)^(1/2) = tr (S_a^(1/2) S_b S_a^(1/2))^(1/2): the right-hand matrix is symmetric PSD, so both roots
    come from symmetric eigendecompositions, real by construction, each checked by its residual (scipy's general
    ``sqrtm`` of the non-symmetric product returned large imaginary parts on rank-deficient covariances in several
    releases, which the usual ``.real`` then silently dropped). Not PSD beyond round-off: :class:`FrechetError`.
    """
    mu_a, mu_b, cov_a, cov_b = (np.asarray(v, dtype=np.float64) for v in (mu_a, mu_b, cov_a, cov_b))
    for name, value in (("mu_a", mu_a), ("mu_b", mu_b), ("cov_a", cov_a), ("cov_b", cov_b)):
        if not np.isfinite(value).all():
            raise FrechetError(f"{name} has non-finite entries")
    root_a, _ = _psd_sqrt(cov_a, "cov_a")
    _, product_eigenvalues = _psd_sqrt(root_a @ cov_b @ root_a, "sqrt(cov_a) cov_b sqrt(cov_a)")
    trace_sqrt = float(np.sqrt(product_eigenvalues).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two embedding sets (N, D) (FVD's final step, docs/srvp.md §4)."""
    features_a, features_b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    cov = lambda f: np.atleast_2d(np.cov(f, rowvar=False))  # noqa: E731  (D = 1 gives a 0-d array)
    return gaussian_frechet_distance(features_a.mean(0), cov(features_a), features_b.mean(0), cov(features_b))


def video_embeddings(network: torch.nn.Module, videos: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """docs/srvp.md §4 FVD embeddings (B, D) of videos (T, B, C, H, W) in [0, 1], on their device.

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
