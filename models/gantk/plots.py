"""Figures written atomically (models/artifacts.py) as PNG; each also returns the RGB image.

* 2-D (docs/gantk.md §5): targets (orange), particles (magenta), heat map of the per-point generator loss ℓ
  on a grid over the scatter extent, and arrows −∇ℓ at the particles;
* 1-D: ℓ(x) on a line with the particles and targets marked (the adequation plots of docs/gantk.md §6.5);
* images: the first particles as a row of pictures, mapped back to [0, 1].
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dynagen.models.artifacts import save_figure


def _save(figure, path: Path) -> np.ndarray:
    """Render ``figure`` to PNG bytes, write them atomically, return the image [H, W, 3] in [0, 1]."""
    from PIL import Image

    data = save_figure(path, figure, dpi=100)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255.0


def grid_2d(x: np.ndarray, y: np.ndarray, n: int = 40, margin: float = 0.1) -> np.ndarray:
    """An n×n grid of query points [n·n, 2] covering the particles and the targets."""
    points = np.concatenate([x, y])
    low, high = points.min(0), points.max(0)
    pad = margin * (high - low + 1e-9)
    axes = [np.linspace(low[i] - pad[i], high[i] + pad[i], n) for i in range(2)]
    return np.stack(np.meshgrid(*axes), axis=-1).reshape(-1, 2)


def flow_2d(path: Path, x, y, grid, grid_loss, grad_at_x, title: str = "") -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = int(round(np.sqrt(len(grid))))
    figure, axis = plt.subplots(figsize=(6, 6))
    mesh = axis.pcolormesh(
        grid[:, 0].reshape(n, n), grid[:, 1].reshape(n, n), np.asarray(grid_loss).reshape(n, n),
        shading="auto", cmap="viridis",
    )
    figure.colorbar(mesh, ax=axis, fraction=0.046, label="generator loss ℓ")
    axis.scatter(y[:, 0], y[:, 1], s=6, c="orange", label="targets")
    axis.scatter(x[:, 0], x[:, 1], s=6, c="magenta", label="particles")
    if np.any(grad_at_x):  # f₀ ≡ 0 (antisymmetric init) gives no arrows to scale
        axis.quiver(x[:, 0], x[:, 1], -grad_at_x[:, 0], -grad_at_x[:, 1], color="white", width=0.003)
    axis.set_aspect("equal")
    axis.set_title(title)
    axis.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def flow_1d(path: Path, x, y, line, line_loss, title: str = "") -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(line[:, 0], line_loss, color="tab:blue", label="generator loss ℓ")
    axis.scatter(y[:, 0], np.zeros(len(y)), c="orange", marker="o", label="targets", zorder=3)
    axis.scatter(x[:, 0], np.zeros(len(x)), c="magenta", marker="x", label="particles", zorder=3)
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def image_row(path: Path, particles, count: int = 8, title: str = "") -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.clip(np.asarray(particles[:count]) / 1.999 + 0.5, 0, 1)
    figure, axes = plt.subplots(1, len(images), figsize=(1.2 * len(images), 1.5), squeeze=False)
    for axis, image in zip(axes[0], images):
        axis.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        axis.axis("off")
    figure.suptitle(title, fontsize=8)
    return _save(figure, path)
