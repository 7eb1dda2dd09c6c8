"""Video data for SRVP: Moving MNIST generated on the fly (spec §5) and loaders for preprocessed KTH, BAIR, Human3.6M.

Every video is a uint8 array (T, H, W) or (T, H, W, C); :func:`collate` stacks a list of them into a float
tensor (T, B, C, H, W) in [0, 1] (time-major, as the model expects).

Moving MNIST digits come either from MNIST files the user points to (``data_dir`` holding the IDX files
``train-images-idx3-ubyte[.gz]`` / ``t10k-images-idx3-ubyte[.gz]``, directly or under ``MNIST/raw/``), or, when
no ``data_dir`` is given, from scikit-learn's bundled 8x8 digits (1,797 images, bilinearly upscaled and padded to
the digit size). The latter are a stand-in, not MNIST: strokes are thicker and there are far fewer distinct
digits, so numbers obtained with them are not comparable to the paper's. Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

COLLISION_EPS = 1e-8  # §5 tolerance when testing out-of-bounds positions and wall intersections
VIRTUAL_LENGTH = 500_000  # §3: on-the-fly training datasets have this virtual length


# ---------------------------------------------------------------------------------------------------------------
# Moving MNIST (§5)


def _bounce(sx, sy, dx, dy, x_max, y_max, rng: np.random.RandomState, max_speed: int, deterministic: bool):
    """§5 collision resolution, repeated while the exact position is out of [0, x_max] x [0, y_max]."""
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
    """§5 trajectory of one digit: (seq_len, 4) int rows (round(sx), round(sy), dx, dy) (float exact positions
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


class MovingMNIST(torch.utils.data.Dataset):
    """Stochastic or deterministic Moving MNIST, generated on the fly (§5).

    Item ``i`` is generated from ``RandomState((seed, i))``, so a video depends only on its index: data are
    reproducible, resumable and split across workers by the sampler like any map-style dataset.
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

    def generate(self, rng: np.random.RandomState, digit_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """One video from the given digits: (uint8 video (T, nx, nx), trajectories (ndigits, T, 4))."""
        digits = [self.digits[i] for i in digit_ids]
        paths = [
            trajectory(rng, self.seq_len, self.nx - d.shape[0], self.nx - d.shape[1], self.max_speed, self.deterministic)
            for d in digits
        ]
        return render(digits, paths, self.nx), np.stack(paths)

    def __getitem__(self, index: int) -> np.ndarray:
        rng = np.random.RandomState([self.seed % 2**32, index])
        return self.generate(rng, rng.randint(len(self.digits), size=self.ndigits))[0]


def make_test_set(digits: np.ndarray, labels: np.ndarray, nx: int = 64, seq_len: int = 25, max_speed: int = 4,
                  deterministic: bool = False, ndigits: int = 2, seed: int = 42) -> dict[str, np.ndarray]:
    """§5 fixed test set: RandomState(seed), one permutation of the digits, sequence i uses digits
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------------------------
# Digit sources


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST's format), optionally gzipped."""
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(data_dir: Path, stem: str) -> Path:
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).exists():
                return folder / name
    raise FileNotFoundError(f"data_dir: no {stem}[.gz] in {data_dir} or {data_dir / 'MNIST' / 'raw'} (MNIST IDX files)")


def resize_digits(images: np.ndarray, size: int) -> np.ndarray:
    """Resize (N, h, w) uint8 digits to size x size (box filter when shrinking, bilinear when enlarging)."""
    from PIL import Image

    if images.shape[1] == size:
        return images
    method = Image.Resampling.BOX if size < images.shape[1] else Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(img).resize((size, size), method)) for img in images])


def mnist_digits(data_dir: str | Path, train: bool, digit_size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST from the user's IDX files: (images (N, s, s) uint8, labels (N,))."""
    prefix = "train" if train else "t10k"
    images = _read_idx(_find(Path(data_dir), f"{prefix}-images-idx3-ubyte"))
    try:
        labels = _read_idx(_find(Path(data_dir), f"{prefix}-labels-idx1-ubyte")).astype(np.int16)
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


def train_val_split(n: int, fold: str) -> np.ndarray:
    """§3 ``get_fold``: RandomState(42) shuffle of the training items, first 95% train, last 5% validation."""
    ids = list(range(n))
    np.random.RandomState(42).shuffle(ids)
    n_train = int(0.95 * n)
    return np.sort(np.asarray(ids[:n_train] if fold == "train" else ids[n_train:]))


# ---------------------------------------------------------------------------------------------------------------
# Real-data loaders (preprocessed as the original repository's preprocessing scripts do)


def _frame_files(folder: Path) -> list[Path]:
    """The PNG frames of a video folder in natural order (``2.png`` before ``10.png``)."""
    key = lambda p: [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", p.name)]  # noqa: E731
    return sorted(folder.glob("*.png"), key=key)


def _read_png(path: str | Path, grey: bool) -> np.ndarray:
    from PIL import Image

    array = np.asarray(Image.open(path))
    if grey:
        return array[..., 0] if array.ndim == 3 else array  # KTH: channel 0 of the PNG
    return array[..., :3]


def _random_clip(rng: np.random.RandomState, videos: Sequence, length: int) -> tuple[Sequence, int]:
    """A random video at least ``length`` long and a random start in it."""
    long_enough = [v for v in videos if len(v) >= length]
    if not long_enough:
        raise ValueError(f"no video has {length} frames")
    video = long_enough[rng.randint(len(long_enough))]
    return video, rng.randint(len(video) - length + 1)


class KTH(torch.utils.data.Dataset):
    """Preprocessed KTH (grey 64x64). Expected layout under ``data_dir``::

        processed_64/{boxing,handclapping,handwaving,jogging,running,walking}/personPP_ACTION_dN/*.png
        svg_test_set_{T}.npz           # test: ``sequences`` (N, T, 64, 64) uint8, 1,000 clips of T = 40 frames

    Training uses persons 01-20 (a random video and start per item); persons 21-25 are the test persons.
    """

    classes = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")

    def __init__(self, data_dir: str | Path, seq_len: int, train: bool = True, nx: int = 64, seed: int = 0):
        self.seq_len, self.train, self.seed = seq_len, train, seed
        root = Path(data_dir)
        if train:
            self.videos = []
            for action in self.classes:
                for video_dir in sorted((root / f"processed_{nx}" / action).glob("person*")):
                    if video_dir.is_dir() and int(video_dir.name.split("_")[0][-2:]) <= 20:
                        self.videos.append(_frame_files(video_dir))
            if not self.videos:
                raise FileNotFoundError(f"data_dir: no KTH videos under {root / f'processed_{nx}'}")
        else:
            self.sequences = np.load(root / f"svg_test_set_{seq_len}.npz")["sequences"]

    def __len__(self) -> int:
        return VIRTUAL_LENGTH if self.train else len(self.sequences)

    def __getitem__(self, index: int) -> np.ndarray:
        if not self.train:
            return self.sequences[index][: self.seq_len]
        video, start = _random_clip(np.random.RandomState([self.seed % 2**32, index]), self.videos, self.seq_len)
        return np.stack([_read_png(p, grey=True) for p in video[start : start + self.seq_len]])


class Human36M(torch.utils.data.Dataset):
    """Preprocessed Human3.6M (RGB 64x64, one frame in ``subsampling`` kept). Expected layout::

        train/*.npz                               # one video per file, key ``image``: (L, 64, 64, 3) uint8
        test_set_64_{T}_{subsampling}/*.npz       # test clips, same key (subjects 9 and 11; T = 53)

    Train subjects are 1, 5, 6, 7, 8. Training draws a random video and start and keeps every
    ``subsampling``-th frame of a window of (seq_len - 1) * subsampling + 1 raw frames.
    """

    def __init__(self, data_dir: str | Path, seq_len: int, train: bool = True, subsampling: int = 8, nx: int = 64,
                 seed: int = 0):
        self.seq_len, self.train, self.subsampling, self.seed = seq_len, train, subsampling, seed
        folder = Path(data_dir) / ("train" if train else f"test_set_{nx}_{seq_len}_{subsampling}")
        files = sorted(folder.glob("*.npz"))
        if not files:
            raise FileNotFoundError(f"data_dir: no Human3.6M .npz videos in {folder}")
        self.videos = [np.load(f)["image"] for f in files]

    def __len__(self) -> int:
        return VIRTUAL_LENGTH if self.train else len(self.videos)

    def __getitem__(self, index: int) -> np.ndarray:
        window = (self.seq_len - 1) * self.subsampling + 1
        if not self.train:
            return self.videos[index][:window : self.subsampling]
        video, start = _random_clip(np.random.RandomState([self.seed % 2**32, index]), self.videos, window)
        return video[start : start + window : self.subsampling]


class BAIR(torch.utils.data.Dataset):
    """Preprocessed BAIR robot pushing (softmotion30_44k, image_aux1; RGB 64x64, 30 frames). Expected layout::

        processed_data/{train,test}/<tfrecord name>/<video index>/<frame>.png    # 30 PNGs per video

    Training draws a random start in [0, 30 - seq_len]; testing starts at frame 0.
    """

    def __init__(self, data_dir: str | Path, seq_len: int, train: bool = True, seed: int = 0):
        if seq_len > 30:
            raise ValueError(f"seq_len: BAIR videos have 30 frames, got {seq_len}")
        self.seq_len, self.train, self.seed = seq_len, train, seed
        root = Path(data_dir) / "processed_data" / ("train" if train else "test")
        self.videos = [_frame_files(d) for d in sorted(root.glob("*/*")) if d.is_dir()]
        if not self.videos:
            raise FileNotFoundError(f"data_dir: no BAIR videos under {root}")

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> np.ndarray:
        video = self.videos[index]
        start = np.random.RandomState([self.seed % 2**32, index]).randint(len(video) - self.seq_len + 1) if self.train else 0
        return np.stack([_read_png(p, grey=False) for p in video[start : start + self.seq_len]])


def collate(videos: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 videos (T, H, W) or (T, H, W, C) -> float tensor (T, B, C, H, W) in [0, 1]."""
    batch = torch.from_numpy(np.stack(videos))
    if batch.ndim == 4:
        batch = batch[..., None]
    return batch.permute(1, 0, 4, 2, 3).float().div_(255)


def cycle(loader) -> Iterator[torch.Tensor]:
    """Endless iteration over a loader, advancing a DistributedSampler's epoch when there is one."""
    epoch = 0
    while True:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1
