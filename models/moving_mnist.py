"""Moving MNIST generated on the fly, shared by SRVP and the PDE-disentanglement model.

One generator serves both specs: docs/srvp.md §5 (Franceschi et al., ICML 2020: stochastic and deterministic variants)
and docs/pde.md §5.2 (Donà et al., ICLR 2021), which is exactly SRVP's *deterministic* variant (2 digits of 28x28
on a 64x64 canvas, start U{0..36}², velocity U{-4..4}², exact sub-step reflections, digits summed, clipped at 255;
the PDE wrapper divides by 255). Trajectories draw from numpy's legacy ``RandomState`` as the originals do, so a
seeded test set (:func:`make_test_set`) reproduces bit for bit; :func:`find_or_build_test_set` reads the original's
file or builds the same set, for both models' evaluations.

Digit sources (:func:`digits_for`). Nothing is ever downloaded:

- real MNIST from a ``data_dir`` holding either the IDX files ``train-images-idx3-ubyte[.gz]`` /
  ``t10k-images-idx3-ubyte[.gz]`` (optionally the ``*-labels-idx1-ubyte[.gz]`` files), directly or under
  ``MNIST/raw/``, or ``mnist.npz`` in the keras layout (``x_train``, ``x_test`` uint8 (N, 28, 28) and
  ``y_train``, ``y_test``); the IDX files win when both are present;
- without a ``data_dir``, scikit-learn's bundled 8x8 digits (1,797 images, bilinearly upscaled and padded to
  the digit size). They are a stand-in, NOT MNIST: strokes are thicker and there are far fewer distinct digits,
  so numbers obtained with them are not comparable to the papers'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from dynagen.models.idx import read_idx
from dynagen.models.training_data import EpochDataset

COLLISION_EPS = 1e-8  # docs/srvp.md §5 tolerance when testing out-of-bounds positions and wall intersections
VIRTUAL_LENGTH = 500_000  # docs/srvp.md §3: on-the-fly training sets have this virtual length (the default __len__)


# ---------------------------------------------------------------------------------------------------------------
# The generator (docs/srvp.md §5; docs/pde.md §5.2 is the deterministic variant)


def _bounce(sx, sy, dx, dy, x_max, y_max, rng: np.random.RandomState, max_speed: int, deterministic: bool):
    """docs/srvp.md §5 collision resolution, repeated while the exact position is out of [0, x_max] x [0, y_max]."""
    eps = COLLISION_EPS
    low_x, low_y, high_x, high_y = sx < -eps, sy < -eps, sx > x_max + eps, sy > y_max + eps
    while low_x or high_x or low_y or high_y:
        # 1. Wall crossing point c on the straight line of the last move (the last valid intersection wins).
        if dx == 0:
            cx, cy = (sx, 0) if low_y else (sx, y_max)
        elif dy == 0:
            cx, cy = (0, sy) if low_x else (x_max, sy)
        else:
            a = dy / dx
            b = sy - a * sx
            # Keep a wall flag only if the line meets that wall within the other axis' range.
            if low_x:
                low_x = -eps <= a * 0 + b <= y_max + eps
                if low_x:
                    cx, cy = 0, b
            if high_x:
                high_x = -eps <= a * x_max + b <= y_max + eps
                if high_x:
                    cx, cy = x_max, a * x_max + b
            if low_y:
                low_y = -eps <= (0 - b) / a <= x_max + eps
                if low_y:
                    cx, cy = (0 - b) / a, 0
            if high_y:
                high_y = -eps <= (y_max - b) / a <= x_max + eps
                if high_y:
                    cx, cy = (y_max - b) / a, y_max
        # 2. Fraction of the move left after the wall.
        p = (sx - cx) / dx if dx != 0 else (sy - cy) / dy
        # 3. Stochastic variant: a brand-new integer velocity; deterministic: keep it.
        if not deterministic:
            dx = rng.randint(-max_speed, max_speed + 1)
            dy = rng.randint(-max_speed, max_speed + 1)
        # 4. Point the velocity away from every wall hit (a mirror reflection in the deterministic case).
        if low_x:
            dx = abs(dx)
        if high_x:
            dx = -abs(dx)
        if low_y:
            dy = abs(dy)
        if high_y:
            dy = -abs(dy)
        # 5. Finish the move from the wall, then re-check (several bounces per step are possible).
        sx, sy = cx + dx * p, cy + dy * p
        low_x, low_y, high_x, high_y = sx < -eps, sy < -eps, sx > x_max + eps, sy > y_max + eps
    return sx, sy, dx, dy


def trajectory(
    rng: np.random.RandomState, seq_len: int, x_max: int, y_max: int, max_speed: int = 4, deterministic: bool = False,
    rounded: bool = True,
) -> np.ndarray:
    """docs/srvp.md §5 trajectory of one digit: (seq_len, 4) int rows (round(sx), round(sy), dx, dy) (float exact positions
    instead when ``rounded`` is False).

    Draw order sx, sy, dx, dy, then the bounce draws, all from ``rng`` (numpy's legacy RandomState, as the
    original, so a seeded test set reproduces bit for bit). Positions are exact and unrounded between frames.
    """
    sx = rng.randint(0, x_max + 1)
    sy = rng.randint(0, y_max + 1)
    dx = rng.randint(-max_speed, max_speed + 1)
    dy = rng.randint(-max_speed, max_speed + 1)
    rows = []
    for _ in range(seq_len):
        sx, sy, dx, dy = _bounce(sx, sy, dx, dy, x_max, y_max, rng, max_speed, deterministic)
        rows.append((int(round(sx)), int(round(sy)), dx, dy) if rounded else (sx, sy, dx, dy))  # half to even
        sx, sy = sx + dx, sy + dy
    return np.asarray(rows, dtype=np.int64 if rounded else np.float64)


def render(digits: Sequence[np.ndarray], trajectories: Sequence[np.ndarray], nx: int) -> np.ndarray:
    """Sum the digits into a float canvas at their top-left corners (sx is the row), clip at 255, cast to uint8."""
    seq_len = len(trajectories[0])
    canvas = np.zeros((seq_len, nx, nx), dtype=np.float32)
    for digit, path in zip(digits, trajectories):
        h, w = digit.shape
        for t, (sx, sy, _, _) in enumerate(path):
            canvas[t, sx : sx + h, sy : sy + w] += digit
    return np.minimum(canvas, 255).astype(np.uint8)


class MovingMNIST(EpochDataset):
    """Stochastic or deterministic Moving MNIST, generated on the fly (docs/srvp.md §5; docs/pde.md §5.2 = deterministic).

    Item ``i`` of epoch ``e`` is generated from ``RandomState((seed, e, i))`` (:class:`EpochDataset`): a new video
    at every access of a training run, as the originals draw, yet reproducible, resumable and split across
    workers by the sampler like any map-style dataset.
    """

    def __init__(self, digits: np.ndarray, nx: int = 64, seq_len: int = 15, max_speed: int = 4,
                 deterministic: bool = False, ndigits: int = 2, seed: int = 0, length: int = VIRTUAL_LENGTH):
        self.digits = np.asarray(digits, dtype=np.uint8)
        self.nx, self.seq_len, self.max_speed = nx, seq_len, max_speed
        self.deterministic, self.ndigits, self.seed, self.length = deterministic, ndigits, seed, length
        if self.digits.shape[1] > nx:
            raise ValueError(f"digits of size {self.digits.shape[1]} do not fit a {nx}x{nx} canvas")

    def __len__(self) -> int:
        return self.length

    def paths(self, rng: np.random.RandomState, digit_ids: Sequence[int]) -> np.ndarray:
        """Trajectories (ndigits, T, 4) of the given digits, drawn in order from ``rng``."""
        return np.stack([
            trajectory(rng, self.seq_len, self.nx - self.digits[i].shape[0], self.nx - self.digits[i].shape[1],
                       self.max_speed, self.deterministic)
            for i in digit_ids
        ])

    def generate(self, rng: np.random.RandomState, digit_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """One video from the given digits: (uint8 video (T, nx, nx), trajectories (ndigits, T, 4))."""
        paths = self.paths(rng, digit_ids)
        return render([self.digits[i] for i in digit_ids], paths, self.nx), paths

    def latents(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(digit ids (ndigits,), trajectories (ndigits, T, 4)) of item ``index`` in the current epoch, drawn from
        the same stream as ``self[index]``: the digit ids first, then each digit's trajectory."""
        rng = self.rng(index)
        digit_ids = rng.randint(len(self.digits), size=self.ndigits)
        return digit_ids, self.paths(rng, digit_ids)

    def __getitem__(self, index: int) -> np.ndarray:
        """uint8 video (T, nx, nx)."""
        digit_ids, paths = self.latents(index)
        return render([self.digits[i] for i in digit_ids], paths, self.nx)


TEST_SEED = 42  # docs/srvp.md §5: make_test_set.py seeds numpy with 42


def make_test_set(digits: np.ndarray, labels: np.ndarray, nx: int = 64, seq_len: int = 25, max_speed: int = 4,
                  deterministic: bool = False, ndigits: int = 2, seed: int = TEST_SEED) -> dict[str, np.ndarray]:
    """docs/srvp.md §5 fixed test set: RandomState(seed), one permutation of the digits, sequence i uses digits
    perm[n*i .. n*i+n-1] (each digit once), then the trajectories in order. Returns the .npz arrays:
    ``sequences`` (T, N, nx, nx) uint8, ``latents`` (T, N, ndigits, 4), ``labels`` (N, ndigits), ``digits``."""
    rng = np.random.RandomState(seed)
    perm = rng.permutation(len(digits))
    generator = MovingMNIST(digits, nx, seq_len, max_speed, deterministic, ndigits)
    videos, latents, ids = [], [], []
    for i in range(len(digits) // ndigits):
        chosen = perm[ndigits * i : ndigits * (i + 1)]
        video, paths = generator.generate(rng, chosen)
        videos.append(video)
        latents.append(paths)
        ids.append(chosen)
    ids = np.asarray(ids)
    return {
        "sequences": np.stack(videos, 1),
        "latents": np.stack(latents).transpose(2, 0, 1, 3),
        "labels": np.asarray(labels)[ids].astype(np.int16),
        "digits": np.asarray(digits)[ids],
    }


def test_set_filename(deterministic: bool, ndigits: int, nx: int) -> str:
    """The original file names: ``smmnist_test_2digits_64.npz`` (stochastic), ``mmnist_test_2digits_64.npz``."""
    return f"{'' if deterministic else 's'}mmnist_test_{ndigits}digits_{nx}.npz"


def save_npz_atomically(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    from dynagen.models.artifacts import save_npz

    path = save_npz(path, compressed=True, **arrays)
    return path


def find_or_build_test_set(data_dir: str | Path | None, seq_len: int, *, deterministic: bool, ndigits: int, nx: int,
                           max_speed: int = 4, digit_size: int = 28, save_dir: str | Path | None = None,
                           ) -> tuple[dict[str, np.ndarray], np.ndarray | None, str]:
    """The docs/srvp.md §5 fixed test set, for SRVP's and the PDE model's evaluations: ``data_dir/<test_set_filename>`` (the
    original's ``make_test_set.py`` output) when it exists, with all its frames; else the same set built by
    :func:`make_test_set` (seed 42) with ``seq_len`` frames from the test digits (MNIST t10k in ``data_dir``, or the
    scikit-learn stand-in without one), written to ``save_dir`` when one is given.

    Returns (the .npz arrays, the test digits in their source order, a description). A file holds its digits in the
    builder's order, i.e. permuted by RandomState(42); that is undone, exactly when the builder used every digit
    (the spec's 10,000 digits in 5,000 pairs). The digits are None for a file without ``digits``.
    """
    name = test_set_filename(deterministic, ndigits, nx)
    given = Path(data_dir) / name if data_dir else None
    if given is not None and given.exists():
        with np.load(given) as npz:
            arrays = {key: npz[key] for key in npz.files}
        digits = None
        if "digits" in arrays:
            built = arrays["digits"].reshape(-1, *arrays["digits"].shape[-2:])
            digits = np.empty_like(built)
            digits[np.random.RandomState(TEST_SEED).permutation(len(built))] = built
        return arrays, digits, f"fixed test set {given}"
    digits, labels, source = digits_for(data_dir, False, digit_size)
    arrays = make_test_set(digits, labels, nx, seq_len, max_speed, deterministic, ndigits, TEST_SEED)
    description = f"test set built from {source}" + (f" (no {name} in {data_dir})" if data_dir else "")
    if save_dir is not None:
        description += f"; saved to {save_npz_atomically(Path(save_dir) / name, arrays)}"
    return arrays, digits, description


# ---------------------------------------------------------------------------------------------------------------
# Digit sources


KERAS_NPZ = "mnist.npz"  # keras layout: x_train, x_test (N, 28, 28) uint8; y_train, y_test (N,)


def _find(data_dir: Path, stem: str) -> Path:
    """MNIST IDX file ``stem[.gz]`` in ``data_dir`` or ``data_dir/MNIST/raw``."""
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).exists():
                return folder / name
    raise FileNotFoundError(
        f"data_dir: no {stem}[.gz] in {data_dir} or {data_dir / 'MNIST' / 'raw'} (MNIST IDX files) "
        f"and no {data_dir / KERAS_NPZ} (keras layout)"
    )


def resize_digits(images: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, h, w) uint8 digits to size x size (box filter when shrinking, bilinear when enlarging)."""
    from PIL import Image

    if images.shape[1] == size:
        return images
    method = Image.Resampling.BOX if size < images.shape[1] else Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(img).resize((size, size), method)) for img in images])


def mnist_digits(data_dir: str | Path, train: bool, digit_size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST from the user's files: (images (N, s, s) uint8, labels (N,) int16, -1 when unknown).

    Reads the IDX files ``{train,t10k}-images-idx3-ubyte[.gz]`` (and ``-labels-idx1-ubyte[.gz]`` when present)
    from ``data_dir`` or ``data_dir/MNIST/raw``; without them, ``data_dir/mnist.npz`` in the keras layout
    (``x_train`` / ``x_test`` and, when present, ``y_train`` / ``y_test``).
    """
    data_dir = Path(data_dir)
    prefix = "train" if train else "t10k"
    try:
        images_file = _find(data_dir, f"{prefix}-images-idx3-ubyte")
    except FileNotFoundError:
        if not (data_dir / KERAS_NPZ).exists():
            raise
        split = "train" if train else "test"
        with np.load(data_dir / KERAS_NPZ) as arrays:
            images = np.asarray(arrays[f"x_{split}"], dtype=np.uint8)
            labels = arrays[f"y_{split}"].astype(np.int16) if f"y_{split}" in arrays else np.full(len(images), -1, np.int16)
        return resize_digits(images, digit_size), labels
    images = read_idx(images_file, ndim=3)
    try:
        labels = read_idx(_find(data_dir, f"{prefix}-labels-idx1-ubyte"), ndim=1).astype(np.int16)
    except FileNotFoundError:
        labels = np.full(len(images), -1, dtype=np.int16)
    return resize_digits(images, digit_size), labels


SKLEARN_TEST_FRACTION = 0.2
STAND_IN = "a stand-in, NOT MNIST"


def sklearn_digits(train: bool, digit_size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Stand-in digits from scikit-learn's bundled 8x8 set (NOT MNIST): values 0..16 scaled to 0..255,
    bilinearly upscaled to 6/7 of ``digit_size`` and zero-padded to ``digit_size`` (8x8 -> 24x24 -> 28x28).
    A fixed RandomState(0) permutation keeps 20% of the 1,797 images as the test digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(bunch.images * 16, 0, 255).astype(np.uint8)
    inner = round(digit_size * 6 / 7)
    pad = (digit_size - inner) // 2
    images = np.pad(resize_digits(images, inner), ((0, 0), (pad, digit_size - inner - pad), (pad, digit_size - inner - pad)))
    perm = np.random.RandomState(0).permutation(len(images))
    n_test = int(SKLEARN_TEST_FRACTION * len(images))
    chosen = perm[n_test:] if train else perm[:n_test]
    return images[chosen], bunch.target[chosen].astype(np.int16)


def digits_for(data_dir: str | Path | None, train: bool, digit_size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Digits from MNIST files when ``data_dir`` is given, else the scikit-learn stand-in; plus a description."""
    if data_dir:
        images, labels = mnist_digits(data_dir, train, digit_size)
        return images, labels, f"MNIST {'train' if train else 'test'} digits from {data_dir}"
    images, labels = sklearn_digits(train, digit_size)
    return images, labels, f"scikit-learn's bundled 8x8 digits upscaled ({STAND_IN}; no data_dir given)"


