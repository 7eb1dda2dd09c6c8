"""Prediction grids (PNG), animations (GIF) and TensorBoard images, written atomically.

A grid has one row pair per sequence: ground truth on top, prediction below, the τ conditioning frames
first (repeated in both rows) and then the horizon. WaveEq-100 point vectors are drawn as 10 × 10 tiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dynagen.models import artifacts

PAD = 1


def to_images(frames: torch.Tensor) -> np.ndarray:
    """(..., C, H, W) or (..., C, P) in [0, 1] → (..., H, W, 3) float in [0, 1]."""
    frames = frames.detach().float().clamp(0, 1).cpu()
    if frames.shape[-2] <= 3:  # (…, C, P) point vectors: every image data set here is ≥ 32 pixels tall
        side = int(np.ceil(np.sqrt(frames.shape[-1])))
        padded = torch.nn.functional.pad(frames, (0, side * side - frames.shape[-1]))
        frames = padded.view(*frames.shape[:-1], side, side)
    channels = frames.shape[-3]
    images = frames.movedim(-3, -1).numpy()
    if channels == 1:
        images = np.repeat(images, 3, -1)
    elif channels == 2:  # TaxiBJ in/out flows → red/green
        images = np.concatenate([images, np.zeros_like(images[..., :1])], -1)
    return images


def prediction_grid(cond: torch.Tensor, target: torch.Tensor, pred: torch.Tensor, max_sequences: int = 4) -> np.ndarray:
    """(H_grid, W_grid, 3) in [0, 1] from cond (B, τ, …), target and pred (B, H, …)."""
    n = min(max_sequences, cond.shape[0])
    truth = to_images(torch.cat([cond[:n], target[:n]], 1))
    guess = to_images(torch.cat([cond[:n], pred[:n]], 1))
    rows = np.stack([truth, guess], 1).reshape(2 * n, *truth.shape[1:])  # (2n, T, h, w, 3)
    rows = np.pad(rows, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD), (0, 0)), constant_values=1.0)
    r, t, h, w, c = rows.shape
    return rows.transpose(0, 2, 1, 3, 4).reshape(r * h, t * w, c)


def _uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """``image`` [H, W, 3] in [0, 1]."""
    return artifacts.save_png(path, _uint8(image))


def sequence_frames(cond: torch.Tensor, target: torch.Tensor, pred: torch.Tensor, max_sequences: int = 4) -> np.ndarray:
    """(T, H, W, 3) in [0, 1], one frame per time step: ground truth (top row) and prediction (bottom row) per sequence."""
    n = min(max_sequences, cond.shape[0])
    truth = to_images(torch.cat([cond[:n], target[:n]], 1))  # (n, T, h, w, 3)
    guess = to_images(torch.cat([cond[:n], pred[:n]], 1))
    return np.stack([np.concatenate([np.concatenate(list(truth[:, t]), 1), np.concatenate(list(guess[:, t]), 1)], 0)
                     for t in range(truth.shape[1])])


def save_gif(path: str | Path, cond: torch.Tensor, target: torch.Tensor, pred: torch.Tensor, max_sequences: int = 4, scale: int = 2) -> Path:
    """The :func:`sequence_frames` as a GIF."""
    frames = [_uint8(frame) for frame in sequence_frames(cond, target, pred, max_sequences)]
    return artifacts.save_gif(path, frames, scale=scale, ms_per_frame=120)
