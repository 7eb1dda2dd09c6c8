"""Video data for SRVP: Moving MNIST (docs/srvp.md §5) and loaders for preprocessed KTH, BAIR, Human3.6M.

Every video is a uint8 array (T, H, W) or (T, H, W, C); :func:`collate` stacks a list of them into a float
tensor (T, B, C, H, W) in [0, 1] (time-major, as the model expects).

The Moving MNIST generator (stochastic and deterministic docs/srvp.md §5 variants, the fixed test-set builder) and its digit
sources (MNIST IDX files or ``mnist.npz`` under ``data_dir``; else scikit-learn's 8x8 digits upscaled, a stand-in,
NOT MNIST) live in :mod:`dynagen.models.moving_mnist`, shared with the PDE model. This module adds docs/srvp.md §3
train/validation fold and the real-data loaders. Nothing is ever downloaded.

Training items are random clips drawn anew every epoch (docs/srvp.md §3): item ``i`` of epoch ``e`` comes from
``RandomState((seed, e, i))`` (:class:`dynagen.models.training_data.EpochDataset`), the epoch being set by the
training loop; test clips are fixed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dynagen.models import moving_mnist
from dynagen.models.moving_mnist import VIRTUAL_LENGTH  # docs/srvp.md §3, also the on-the-fly Moving MNIST length
from dynagen.models.training_data import EpochDataset


# ---------------------------------------------------------------------------------------------------------------
# Moving MNIST: the train / validation fold of the training digits


def train_val_split(n: int, fold: str) -> np.ndarray:
    """docs/srvp.md §3 ``get_fold``: RandomState(42) shuffle of the training items, first 95% train, last 5% validation."""
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


class KTH(EpochDataset):
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
        video, start = _random_clip(self.rng(index), self.videos, self.seq_len)
        return np.stack([_read_png(p, grey=True) for p in video[start : start + self.seq_len]])


class Human36M(EpochDataset):
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
        video, start = _random_clip(self.rng(index), self.videos, window)
        return video[start : start + window : self.subsampling]


class BAIR(EpochDataset):
    """Preprocessed BAIR robot pushing (softmotion30_44k, image_aux1; RGB 64x64, 30 frames). Expected layout::

        processed_data/{train,test}/<tfrecord name>/<video index>/<frame>.png    # 30 PNGs per video

    Training draws a random start in [0, 30 - seq_len], a new one every epoch; testing starts at frame 0.
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
        start = self.rng(index).randint(len(video) - self.seq_len + 1) if self.train else 0
        return np.stack([_read_png(p, grey=False) for p in video[start : start + self.seq_len]])


def collate(videos: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 videos (T, H, W) or (T, H, W, C) -> float tensor (T, B, C, H, W) in [0, 1]."""
    batch = torch.from_numpy(np.stack(videos))
    if batch.ndim == 4:
        batch = batch[..., None]
    return batch.permute(1, 0, 4, 2, 3).float().div_(255)


def make_dataset(config, split: str, seq_len: int) -> tuple[torch.utils.data.Dataset, str]:
    """``split``: 'train' / 'val' (the docs/srvp.md §3 95/5 fold of the training items) or 'test'; returns (dataset, description)."""
    if config.dataset in ("smmnist", "mmnist"):
        digits, _, source = moving_mnist.digits_for(config.data_dir, split != "test", config.digit_size)
        if split != "test":
            digits = digits[train_val_split(len(digits), split)]
        seed = config.seed if split == "train" else 1
        dataset = moving_mnist.MovingMNIST(digits, config.nx, seq_len, config.max_speed, config.deterministic,
                                           config.ndigits, seed=seed)
        return dataset, f"{'deterministic' if config.deterministic else 'stochastic'} Moving MNIST from {source}"
    train = split != "test"
    if config.dataset == "kth":
        dataset = KTH(config.data_dir, seq_len, train, config.nx, config.seed)
    elif config.dataset == "human":
        dataset = Human36M(config.data_dir, seq_len, train, config.subsampling, config.nx, config.seed)
    else:
        dataset = BAIR(config.data_dir, seq_len, train, config.seed)
    return dataset, f"{config.dataset} from {config.data_dir}"
