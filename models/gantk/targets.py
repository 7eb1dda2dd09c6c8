"""Source (initial particles) and target sets (docs/gantk.md §4), as numpy arrays [n, *shape].

Toy targets are generated; image targets are read from files the user points to (nothing is
downloaded): scikit-learn's bundled 8×8 digits (d = 64) work out of the box, MNIST is read from the
idx file ``train-images-idx3-ubyte[.gz]`` and CelebA from a folder of images. Pixel values v ∈ [0, 1]
are mapped to 1.999·(v − 0.5) like the original; image particles start as i.i.d. N(0, 1) pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dynagen.models.idx import read_idx

if TYPE_CHECKING:
    from dynagen.models.gantk.experiment import GanNtkConfig

# Fixed 1-D / 2-D sets of docs/gantk.md §4 (source, target), used by the adequation plots.
FIXED_SETS = {
    "modes_1d": (
        1.5 * np.array([-1.2, -1.34, -0.8, -0.7, -0.3])[:, None],
        1.5 * np.array([0.6, 1.0, 1.23, 1.32, 0.2])[:, None],
    ),
    "modes_1d_overlap": (
        1.5 * np.array([-1.2, -1.34, -0.8, -0.7, -0.2])[:, None],
        1.5 * np.array([0.6, 1.0, 1.23, 1.32, -1.1, -1.0, -1.8])[:, None],
    ),
    "two_couples_2d": (np.array([[1.0, 1.0], [1.0, -1.0]]), np.array([[-1.0, -1.0], [-1.0, 1.0]])),
    "two_singles_1d": (np.array([[-1.0]]), np.array([[1.0]])),
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def ring(n: int, n_modes: int, radius: float, std: float, rng: np.random.Generator) -> np.ndarray:
    """Uniform mixture of isotropic Gaussians centred on the regular n-gon of the given radius."""
    angles = 2 * np.pi * rng.integers(n_modes, size=n) / n_modes
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres + std * rng.standard_normal((n, 2))


def image_density(path: str | Path, n: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Samples of the density drawn by a grayscale image (docs/gantk.md §4 `image`): dark = mass.

    One Gaussian per pixel (row r, col c of an h×w image): weight ∝ max(I) − I[r, c], mean
    (scale·(−1 + 2c/(w−1)), scale·(1 − 2r/(h−1))), std (scale/w, scale/h).
    """
    from PIL import Image

    with Image.open(path) as image:
        intensity = np.asarray(image.convert("L"), dtype=np.float64)
    h, w = intensity.shape
    weights = (intensity.max() - intensity).ravel()
    if weights.sum() <= 0:
        raise ValueError(f"{path}: the image is uniform, it defines no density")
    pixels = rng.choice(h * w, size=n, p=weights / weights.sum())
    rows, cols = np.divmod(pixels, w)
    means = np.stack([scale * (-1 + 2 * cols / (w - 1)), scale * (1 - 2 * rows / (h - 1))], axis=1)
    return means + rng.standard_normal((n, 2)) * np.array([scale / w, scale / h])


def to_signed(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] → [−0.9995, 0.9995] (the original's 1.999·(v − 0.5))."""
    return 1.999 * (pixels - 0.5)


def digits(n: int, rng: np.random.Generator) -> np.ndarray:
    """n of scikit-learn's bundled 8×8 digit images (1797, values 0–16), shape [n, 8, 8, 1]."""
    from sklearn.datasets import load_digits

    images = load_digits().images / 16.0
    return to_signed(images[rng.permutation(len(images))[:n], :, :, None])


def mnist(path: str | Path, n: int, rng: np.random.Generator) -> np.ndarray:
    """n MNIST training images from ``train-images-idx3-ubyte[.gz]`` (a file, or searched under a folder),
    zero-padded 28×28 → 32×32 (torchvision's CenterCrop(32)), shape [n, 32, 32, 1]."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.rglob("train-images-idx3-ubyte*"))
        if not found:
            raise FileNotFoundError(f"data_path: no train-images-idx3-ubyte[.gz] under {path}")
        path = found[0]
    images = read_idx(path, ndim=3)
    chosen = images[rng.permutation(len(images))[:n]].astype(np.float64) / 255.0
    rows, cols = chosen.shape[1:]
    top, left = (32 - rows) // 2, (32 - cols) // 2
    padded = np.zeros((len(chosen), 32, 32))
    padded[:, top : top + rows, left : left + cols] = chosen
    return to_signed(padded[..., None])


def celeba(path: str | Path, n: int, rng: np.random.Generator) -> np.ndarray:
    """n images from a folder (e.g. CelebA's img_align_celeba), resized (short side 32) and
    centre-cropped to 32×32 RGB, shape [n, 32, 32, 3]."""
    from PIL import Image

    files = sorted(p for p in Path(path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"data_path: no image files under {path}")
    images = []
    for index in rng.permutation(len(files))[:n]:
        with Image.open(files[index]) as image:
            image = image.convert("RGB")
            w, h = image.size
            scale = 32 / min(w, h)
            image = image.resize((max(32, round(w * scale)), max(32, round(h * scale))), Image.BILINEAR)
            w, h = image.size
            left, top = (w - 32) // 2, (h - 32) // 2
            images.append(np.asarray(image.crop((left, top, left + 32, top + 32)), dtype=np.float64) / 255.0)
    return to_signed(np.stack(images))


def make_problem(config: "GanNtkConfig") -> tuple[np.ndarray, np.ndarray]:
    """(initial particles [N, *shape], targets [M, *shape]) drawn with the config's seed."""
    rng = np.random.default_rng(config.seed)
    if config.target in FIXED_SETS:
        return FIXED_SETS[config.target]
    if config.target in ("eight_gaussians", "ring"):
        n_modes = 8 if config.target == "eight_gaussians" else config.n_modes
        targets = ring(config.n_targets, n_modes, config.ring_radius, config.ring_std, rng)
    elif config.target == "image_density":
        targets = image_density(config.target_image, config.n_targets, rng)
        if config.source_image is not None:
            return image_density(config.source_image, config.n_particles, rng), targets
    elif config.target == "digits":
        targets = digits(config.n_targets, rng)
    elif config.target == "mnist":
        targets = mnist(config.data_path, config.n_targets, rng)
    else:
        targets = celeba(config.data_path, config.n_targets, rng)
    return rng.standard_normal((config.n_particles, *targets.shape[1:])), targets
