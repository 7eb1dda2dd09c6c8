"""Data sets of the PDE-disentanglement experiments (spec §5). Every item is ``(cond, target)``:
(τ, C, H, W) conditioning frames and (K, C, H, W) frames to predict ((τ, C, P) for WaveEq-100).

No data is downloaded. WaveEq is simulated (``wave.py``) unless ``data_dir`` holds the original
generator's files; Moving MNIST is generated on the fly by the generator shared with SRVP
(:mod:`dynagen.models.moving_mnist`, deterministic variant = §5.2) from MNIST digits in ``data_dir`` or,
without a ``data_dir``, from scikit-learn's bundled 8 × 8 digits upscaled to 28 × 28 (a stand-in, NOT
MNIST: say so when you report numbers). SST, TaxiBJ and 3D Chairs read the user's files; the expected
layout is documented on each loader.

Expected layouts (``data_dir``):
- wave / wave_partial: ``homogenous_wave{i}.pt`` = {'simul': (300, 64, 64) raw field, 'c': speed}
  (``python -m dynagen.models.pde.wave DIR`` writes them); absent → simulated in memory.
- mnist: optional; ``mnist.npz`` (keras layout: ``x_train``, ``x_test`` uint8 (N, 28, 28), ``y_train``,
  ``y_test``) or the MNIST IDX files ``train-images-idx3-ubyte[.gz]`` / ``t10k-images-idx3-ubyte[.gz]``
  (directly or under ``MNIST/raw/``); absent (no data_dir) → scikit-learn's digits, as above.
- chairs: one folder per chair holding its 62 renders ``0.png … 61.png`` at 64 × 64 RGB
  (``preprocess_chairs(src, dst)`` makes them from rendered_chairs' ``<chair>/renders/*.png``).
- taxibj: ``BJ13_M32x32_T30_InOut.h5`` … ``BJ16_M32x32_T30_InOut.h5`` (datasets ``data`` (N, 2, 32, 32)
  and ``date`` (N,) bytes ``YYYYMMDDSS``, SS = half-hour slot 1…48).
- sst: ``data_{zone}.nc`` (netCDF-4/HDF5) with ``thetao`` (days, 64, 64), ``daily_mean`` and
  ``daily_std`` (days,) or (days, 64, 64).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dynagen.models import moving_mnist
from dynagen.models.pde import wave

TRAIN_FRACTION = 0.8


def frame_shape(config) -> tuple[int, ...]:
    """(C, H, W), or (C, P) for WaveEq-100."""
    return {
        "wave": (1, config.resolution, config.resolution),
        "wave_partial": (1, wave.N_POINTS),
        "mnist": (1, 64, 64),
        "chairs": (3, 64, 64),
        "taxibj": (2, 32, 32),
        "sst": (1, 64, 64),
    }[config.dataset]


# ----------------------------------------------------------------------------------------------- WaveEq


class SequenceWindows(Dataset):
    """All windows of ``nt_cond + nt_pred`` consecutive frames (stride 1) of sequences (N, T, ...).

    Fixed indexing (default): N·(T − L + 1) windows, i.e. 240·126 = 30,240 train and 60·106 = 6,360
    test windows for WaveEq. ``original_indexing`` reproduces the original loader's bug (§5.1): it counts
    ``counted_length − L + 1`` windows per sequence, with counted_length the frame height 64 instead of
    the 150 frames, but indexes with the true stride T − L + 1, so only the first sequences are ever
    seen (9,600 train windows from 77 of the 240 training sequences, 1,200 test windows from 12 of 60).
    """

    def __init__(self, sequences: torch.Tensor, nt_cond: int, nt_pred: int, original_indexing: bool = False, counted_length: int = wave.GRID):
        self.sequences, self.nt_cond, self.length = sequences, nt_cond, nt_cond + nt_pred
        n, frames = sequences.shape[:2]
        self.stride = frames - self.length + 1
        self.n_windows = n * ((counted_length if original_indexing else frames) - self.length + 1)

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, index: int):
        sequence, start = divmod(index, self.stride)
        window = self.sequences[sequence, start : start + self.length]
        return window[: self.nt_cond], window[self.nt_cond :]


def sequence_id(path: Path) -> int:
    """The integer in the file *name* (the original searched the full path, so digits in the folder broke the split)."""
    return int(re.search(r"\d+", path.name).group())


@functools.lru_cache(maxsize=4)
def simulated_waves(n_sequences: int, seed: int, resolution: int) -> torch.Tensor:
    return wave.generate_dataset(n_sequences, seed, resolution)[0]


def load_waves(config) -> torch.Tensor:
    """Preprocessed sequences (N, 150, 1, H, W) ordered by id: from ``data_dir`` if set, else simulated."""
    if config.data_dir is None:
        return simulated_waves(config.n_sequences, config.data_seed, config.resolution)
    files = sorted(Path(config.data_dir).glob("homogenous_wave*.pt"), key=sequence_id)
    if not files:
        raise FileNotFoundError(f"no homogenous_wave{{i}}.pt files in {config.data_dir}")
    raw = torch.stack([torch.load(f, map_location="cpu")["simul"].float() for f in files])
    return wave.preprocess(raw, resolution=config.resolution)


def wave_dataset(config, train: bool, horizon: int | None = None) -> SequenceWindows:
    """WaveEq (or WaveEq-100) windows; train ids < int(0.8·N), test ids ≥ it (§5.1)."""
    sequences = load_waves(config)
    split = int(TRAIN_FRACTION * len(sequences))
    sequences = sequences[:split] if train else sequences[split:]
    if config.dataset == "wave_partial":
        sequences = wave.to_points(sequences)
    nt_pred = config.nt_pred if horizon is None else horizon
    return SequenceWindows(sequences, config.nt_cond, nt_pred, config.original_window_indexing)


# ------------------------------------------------------------------------------------------ Moving MNIST

MNIST_TRAIN_SEQUENCES, MNIST_TEST_SEQUENCES = 200_000, 5000  # §5.2: train __len__ (arbitrary), test set size


class MovingMNISTWindows(Dataset):
    """Deterministic Moving MNIST (§5.2) in the PDE item format: ``(cond, target)`` float (τ, 1, 64, 64) and
    (K, 1, 64, 64) in [0, 1] (digits summed, clipped at 255, divided by 255).

    The sequences come from the shared generator (:class:`dynagen.models.moving_mnist.MovingMNIST`, 2 digits,
    deterministic reflections); sequence ``i`` depends only on (seed, i).
    """

    def __init__(self, digits: np.ndarray, n_sequences: int, nt_cond: int, nt_pred: int, seed: int, nx: int = 64):
        self.generator = moving_mnist.MovingMNIST(digits, nx=nx, seq_len=nt_cond + nt_pred, deterministic=True,
                                                  seed=seed, length=n_sequences)
        self.nt_cond, self.length, self.nx = nt_cond, nt_cond + nt_pred, nx

    @property
    def digits(self) -> np.ndarray:
        return self.generator.digits

    def __len__(self) -> int:
        return len(self.generator)

    def latents(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(digit ids (2,), trajectories (2, L, 4) of rows (row, col, d_row, d_col)) of sequence ``index``."""
        return self.generator.latents(index)

    def frames(self, digits, paths: np.ndarray) -> torch.Tensor:
        """The given digit images rendered on trajectories ``paths``: float (L, 1, nx, nx) in [0, 1]."""
        return torch.from_numpy(moving_mnist.render(digits, paths, self.nx)).float().div_(255)[:, None]

    def __getitem__(self, index: int):
        digit_ids, paths = self.latents(index)
        frames = self.frames([self.digits[i] for i in digit_ids], paths)
        return frames[: self.nt_cond], frames[self.nt_cond :]


# ----------------------------------------------------------------------------------------------- Chairs

CHAIR_VIEWS = 62


def preprocess_chairs(source: str | Path, destination: str | Path) -> None:
    """rendered_chairs ``<chair>/renders/*.png`` (600²) → ``<chair>/{0..61}.png``: crop (100,100,500,500), LANCZOS 64²."""
    from PIL import Image

    for chair in sorted(p for p in Path(source).iterdir() if p.is_dir()):
        out = Path(destination) / chair.name
        out.mkdir(parents=True, exist_ok=True)
        for view, image in enumerate(sorted((chair / "renders").glob("*.png"))):
            Image.open(image).convert("RGB").crop((100, 100, 500, 500)).resize((64, 64), Image.LANCZOS).save(out / f"{view}.png")


class Chairs(Dataset):
    """Views start … start+L−1 (mod 62) of one chair; index → (chair = i mod n, start = i div n) (§5.3).

    Chair folders are sorted, shuffled with RandomState(42), and the first 85 % are train.
    """

    def __init__(self, data_dir: str, train: bool, nt_cond: int, nt_pred: int):
        from PIL import Image

        chairs = sorted(p for p in Path(data_dir).iterdir() if p.is_dir())
        if not chairs:
            raise FileNotFoundError(f"no chair folders in {data_dir}")
        np.random.RandomState(42).shuffle(chairs)
        split = int(0.85 * len(chairs))
        chairs = chairs[:split] if train else chairs[split:]
        self.views = np.stack(
            [[np.asarray(Image.open(c / f"{v}.png").convert("RGB")) for v in range(CHAIR_VIEWS)] for c in chairs]
        )  # (n_chairs, 62, 64, 64, 3) uint8
        self.nt_cond, self.length = nt_cond, nt_cond + nt_pred

    def __len__(self) -> int:
        return CHAIR_VIEWS * len(self.views)

    def render(self, chair: int, start: int) -> torch.Tensor:
        views = (start + np.arange(self.length)) % CHAIR_VIEWS
        return torch.from_numpy(self.views[chair, views]).permute(0, 3, 1, 2).float() / 255.0

    def __getitem__(self, index: int):
        frames = self.render(index % len(self.views), index // len(self.views))
        return frames[: self.nt_cond], frames[self.nt_cond :]


# ----------------------------------------------------------------------------------------------- TaxiBJ

TAXIBJ_FILES = [f"BJ{year}_M32x32_T30_InOut.h5" for year in (13, 14, 15, 16)]
TAXIBJ_TEST = 48 * 7 * 4  # the last 1344 samples (four weeks)
TAXIBJ_SLOTS = 48


def load_taxibj_frames(data_dir: str) -> tuple[np.ndarray, list[int]]:
    """Complete days only, negatives set to 0; returns flows (N, 2, 32, 32) and each frame's absolute slot."""
    import h5py

    frames, slots = [], []
    for name in TAXIBJ_FILES:
        with h5py.File(Path(data_dir) / name, "r") as f:
            data, dates = f["data"][:], [d.decode() if isinstance(d, bytes) else str(d) for d in f["date"][:]]
        per_day: dict[str, list[int]] = {}
        for i, d in enumerate(dates):
            per_day.setdefault(d[:8], []).append(i)
        for day, indices in per_day.items():
            if len(indices) != TAXIBJ_SLOTS:
                continue
            ordinal = np.datetime64(f"{day[:4]}-{day[4:6]}-{day[6:8]}").astype(int)
            for i in indices:
                frames.append(np.maximum(data[i], 0))
                slots.append(int(ordinal) * TAXIBJ_SLOTS + int(dates[i][8:]) - 1)
    return np.stack(frames).astype(np.float32), slots


class TaxiBJ(Dataset):
    """Samples at timestamps with 8 consecutive earlier half-hour slots, in the original's order (§5.4).

    sequence[j] = frame at i − (j+1)·30 min, so sequence[0] is the most recent frame and the "future"
    (target = sequence[4:]) is *older* than the conditioning frames; ``chronological=True`` reverses
    each sample so the targets follow the conditioning frames in time. Min-max scaled to [0, 1] with
    statistics of all frames except the last 1344; the last 1344 samples are the test set.
    """

    def __init__(self, data_dir: str, train: bool, nt_cond: int = 4, nt_pred: int = 4, chronological: bool = False):
        frames, slots = load_taxibj_frames(data_dir)
        fit = frames[:-TAXIBJ_TEST]
        low, high = fit.min(), fit.max()
        self.frames = torch.from_numpy((frames - low) / (high - low))
        position = {slot: k for k, slot in enumerate(slots)}
        length = nt_cond + nt_pred
        samples = [
            [position[s - j] for j in range(1, length + 1)]
            for s in slots
            if all(s - j in position for j in range(1, length + 1))
        ]
        samples = samples[:-TAXIBJ_TEST] if train else samples[-TAXIBJ_TEST:]
        self.samples = [s[::-1] for s in samples] if chronological else samples
        self.nt_cond = nt_cond

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        frames = self.frames[self.samples[index]]
        return frames[: self.nt_cond], frames[self.nt_cond :]


# -------------------------------------------------------------------------------------------------- SST

SST_TRAIN_ZONES, SST_TEST_ZONES = range(1, 30), range(17, 21)


class SST(Dataset):
    """Daily 64² SST patches per zone: (x − daily_mean)/daily_std, then per-frame spatial standardisation.

    First 80 % of days are train, the last 20 % test, in every zone; zones 1–29 train, 17–20 test. A
    window is τ input days ending at day i and the next nt_pred days. ``__getitem__`` returns the
    standardised frames; ``frame_stats`` gives the per-frame (mean, std) and climatology used to
    de-normalise targets for the spec's SST metric.
    """

    def __init__(self, data_dir: str, train: bool, nt_cond: int, nt_pred: int):
        import h5py

        self.zones, self.index = [], []
        for zone in SST_TRAIN_ZONES if train else SST_TEST_ZONES:
            with h5py.File(Path(data_dir) / f"data_{zone}.nc", "r") as f:
                theta = f["thetao"][:].reshape(-1, 64, 64).astype(np.float64)
                clim_mean = f["daily_mean"][:].astype(np.float64)
                clim_std = f["daily_std"][:].astype(np.float64)
            clim_mean = clim_mean.reshape(len(theta), *([1, 1] if clim_mean.ndim == 1 else clim_mean.shape[1:]))
            clim_std = clim_std.reshape(len(theta), *([1, 1] if clim_std.ndim == 1 else clim_std.shape[1:]))
            x = (theta - clim_mean) / clim_std
            mu, sigma = x.mean((1, 2), keepdims=True), x.std((1, 2), keepdims=True)
            days = len(x)
            split = int(TRAIN_FRACTION * days)
            lo, hi = (0, split) if train else (split, days)
            self.zones.append(dict(x=torch.from_numpy((x - mu) / sigma).float()[:, None], mu=mu, sigma=sigma, clim_mean=clim_mean, clim_std=clim_std))
            self.index += [(len(self.zones) - 1, i) for i in range(lo, hi - nt_cond - nt_pred + 1)]
        self.nt_cond, self.length = nt_cond, nt_cond + nt_pred

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int):
        zone, start = self.index[index]
        frames = self.zones[zone]["x"][start : start + self.length]
        return frames[: self.nt_cond], frames[self.nt_cond :]

    def frame_stats(self, index: int) -> dict[str, np.ndarray]:
        zone, start = self.index[index]
        future = slice(start + self.nt_cond, start + self.length)
        return {k: v[future] for k, v in self.zones[zone].items() if k != "x"}


# ------------------------------------------------------------------------------------------------ factory


def make_dataset(config, train: bool, horizon: int | None = None) -> Dataset:
    """The train or test set of ``config.dataset``; ``horizon`` overrides nt_pred (test horizons, §6)."""
    nt_pred = config.nt_pred if horizon is None else horizon
    if config.dataset in ("wave", "wave_partial"):
        return wave_dataset(config, train, nt_pred)
    if config.dataset == "mnist":
        digits, _, _ = moving_mnist.digits_for(config.data_dir, train, 28)
        # §5.2: training sequences are effectively unlimited (200k per epoch); the test set has 5000.
        n_sequences = MNIST_TRAIN_SEQUENCES if train else MNIST_TEST_SEQUENCES
        return MovingMNISTWindows(digits, n_sequences, config.nt_cond, nt_pred, config.data_seed + (0 if train else 1))
    if config.data_dir is None:
        raise ValueError(f"data_dir: dataset {config.dataset!r} reads user files; set data_dir (layouts in {__name__})")
    if config.dataset == "chairs":
        return Chairs(config.data_dir, train, config.nt_cond, nt_pred)
    if config.dataset == "taxibj":
        return TaxiBJ(config.data_dir, train, config.nt_cond, nt_pred, config.taxibj_chronological)
    return SST(config.data_dir, train, config.nt_cond, nt_pred)
