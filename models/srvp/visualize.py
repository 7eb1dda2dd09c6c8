"""PNG grids and GIFs of predictions: conditioning, truth, best, worst and random samples (written atomically).

A "panel" is a labelled video (T, C, H, W) in [0, 1]. Conditioning frames get a green border, predicted
frames a red one, so the boundary between observed and generated frames is visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from dynagen.models import artifacts

BORDER = 1
COND_COLOUR, PRED_COLOUR = (40, 200, 40), (220, 40, 40)
LABEL_WIDTH = 56


def _frame_rgb(frame: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """(C, H, W) in [0, 1] -> uint8 (H + 2b, W + 2b, 3) with a coloured border."""
    image = (np.clip(frame, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    if image.shape[2] == 1:
        image = image.repeat(3, 2)
    out = np.empty((image.shape[0] + 2 * BORDER, image.shape[1] + 2 * BORDER, 3), np.uint8)
    out[:] = colour
    out[BORDER:-BORDER, BORDER:-BORDER] = image
    return out


def _label(text: str, height: int) -> np.ndarray:
    canvas = Image.new("RGB", (LABEL_WIDTH, height), (255, 255, 255))
    ImageDraw.Draw(canvas).text((2, max(0, height // 2 - 6)), text, fill=(0, 0, 0))
    return np.asarray(canvas)


def grid(panels: Sequence[tuple[str, np.ndarray]], nt_cond: int) -> np.ndarray:
    """One row per panel, one column per frame: uint8 (rows * H', LABEL_WIDTH + T * W', 3)."""
    rows = []
    for label, video in panels:
        frames = [_frame_rgb(f, COND_COLOUR if t < nt_cond else PRED_COLOUR) for t, f in enumerate(np.asarray(video))]
        strip = np.concatenate(frames, 1)
        rows.append(np.concatenate([_label(label, strip.shape[0]), strip], 1))
    return np.concatenate(rows, 0)


def gif_frames(panels: Sequence[tuple[str, np.ndarray]], nt_cond: int) -> list[np.ndarray]:
    """Panels side by side, one GIF frame per time step, labels on top."""
    videos = [np.asarray(v) for _, v in panels]
    frames = []
    for t in range(len(videos[0])):
        tiles = [_frame_rgb(v[t], COND_COLOUR if t < nt_cond else PRED_COLOUR) for v in videos]
        row = np.concatenate(tiles, 1)
        header = Image.new("RGB", (row.shape[1], 12), (255, 255, 255))
        draw = ImageDraw.Draw(header)
        for i, (label, _) in enumerate(panels):
            draw.text((i * tiles[0].shape[1] + 1, 0), label[:6], fill=(0, 0, 0))
        frames.append(np.concatenate([np.asarray(header), row], 0))
    return frames


def save_png(path: str | Path, image: np.ndarray, scale: int = 2) -> Path:
    return artifacts.save_png(path, image, scale)


def save_gif(path: str | Path, frames: Sequence[np.ndarray], scale: int = 2, ms_per_frame: int = 200) -> Path:
    return artifacts.save_gif(path, frames, scale, ms_per_frame)
