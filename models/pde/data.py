"""Data sets of the PDE-disentanglement experiments (docs/pde.md §5). Every item is ``(cond, target)``:
(τ, C, H, W) conditioning frames and (K, C, H, W) frames to predict ((τ, C, P) for WaveEq-100).

No data is downloaded. WaveEq is simulated (``wave.py``) unless ``data_dir`` holds the original
generator's files; Moving MNIST training sequences are generated on the fly, new ones every epoch
(:mod:`dynagen.models.training_data`), by the generator shared with
SRVP (:mod:`dynagen.models.moving_mnist`, deterministic variant = docs/pde.md §5.2) from MNIST digits in ``data_dir``
or, without a ``data_dir``, from scikit-learn's bundled 8 × 8 digits upscaled to 28 × 28 (a stand-in, NOT
MNIST: say so when you report numbers); its test set is the fixed docs/pde.md §5.2 file (:func:`mnist_test_set`).
SST, TaxiBJ and 3D Chairs read the user's files; the expected layout is documented on each loader.

Expected layouts (``data_dir``):
- wave / wave_partial: ``homogenous_wave{i}.pt`` = {'simul': (300, 64, 64) raw field, 'c': speed}
  (``python -m dynagen.models.pde.wave DIR`` writes them); absent → simulated in memory.
- mnist: optional; ``mnist.npz`` (keras layout: ``x_train``, ``x_test`` uint8 (N, 28, 28), ``y_train``,
  ``y_test``) or the MNIST IDX files ``train-images-idx3-ubyte[.gz]`` / ``t10k-images-idx3-ubyte[.gz]``
  (directly or under ``MNIST/raw/``); absent (no data_dir) → scikit-learn's digits, as above. The test set
  ``mmnist_test_2digits_64.npz`` (the original's ``make_test_set.py`` output: ``sequences`` (100, 5000[, 1],
  64, 64) uint8, ``latents`` (100, 5000, 2, 4), ``labels``, ``digits`` (5000, 2, 28, 28)) is read when
  present, else built in memory from the test digits with the same builder.
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
    test windows for WaveEq. ``original_indexing`` reproduces the original loader's bug (docs/pde.md §5.1): it counts
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
    raw = torch.stack([torch.load(f, map_location="cpu", weights_only=True)["simul"].float() for f in files])  # data, never code
    return wave.preprocess(raw, resolution=config.resolution)


def wave_dataset(config, train: bool, horizon: int | None = None) -> SequenceWindows:
    """WaveEq (or WaveEq-100) windows; train ids < int(0.8·N), test ids ≥ it (docs/pde.md §5.1)."""
    sequences = load_waves(config)
    split = int(TRAIN_FRACTION * len(sequences))
    sequences = sequences[:split] if train else sequences[split:]
    if config.dataset == "wave_partial":
        sequences = wave.to_points(sequences)
    nt_pred = config.nt_pred if horizon is None else horizon
    return SequenceWindows(sequences, config.nt_cond, nt_pred, config.original_window_indexing)


# ------------------------------------------------------------------------------------------ Moving MNIST

MNIST_TRAIN_SEQUENCES = 200_000  # docs/pde.md §5.2: the original's (arbitrary) training __len__
MNIST_NX, MNIST_DIGITS = 64, 2
MNIST_TEST_FILE = moving_mnist.test_set_filename(deterministic=True, ndigits=MNIST_DIGITS, nx=MNIST_NX)
MNIST_TEST_FRAMES = 100  # docs/pde.md §5.2: 100-frame test sequences (numpy seed 42: moving_mnist.TEST_SEED)
MNIST_SWAP_SEED = 1  # docs/pde.md §4 disentanglement: the new digits come through a seed-1 permutation


def _check_test_length(frames: int, nt_cond: int, horizon: int) -> None:
    if nt_cond + horizon > frames:
        raise ValueError(f"test_horizon: the Moving MNIST test sequences have {frames} frames, so nt_cond + "
                         f"test_horizon must be at most {frames}; got {nt_cond} + {horizon}")


def to_frames(video: np.ndarray) -> torch.Tensor:
    """uint8 video (L, nx, nx) → float (L, 1, nx, nx) in [0, 1] (docs/pde.md §5.2: summed digits clipped at 255, /255)."""
    return torch.from_numpy(video).float().div_(255)[:, None]


def render_frames(digits, paths: np.ndarray, nx: int = MNIST_NX) -> torch.Tensor:
    """The given digit images rendered on trajectories ``paths`` (2, L, 4): float (L, 1, nx, nx) in [0, 1]."""
    return to_frames(moving_mnist.render(digits, paths, nx))


class MovingMNISTWindows(Dataset):
    """Deterministic Moving MNIST (docs/pde.md §5.2) training sequences in the PDE item format: ``(cond, target)`` float
    (τ, 1, 64, 64) and (K, 1, 64, 64) in [0, 1].

    The sequences come from the shared generator (:class:`dynagen.models.moving_mnist.MovingMNIST`, 2 digits,
    deterministic reflections); sequence ``i`` of epoch ``e`` depends only on (seed, e, i): new sequences every
    epoch, as the original generates them at every access (docs/pde.md §5.2), the epoch being set by the training loop.
    """

    def __init__(self, digits: np.ndarray, n_sequences: int, nt_cond: int, nt_pred: int, seed: int, nx: int = MNIST_NX):
        self.generator = moving_mnist.MovingMNIST(digits, nx=nx, seq_len=nt_cond + nt_pred, deterministic=True,
                                                  seed=seed, ndigits=MNIST_DIGITS, length=n_sequences)
        self.nt_cond = nt_cond

    def __len__(self) -> int:
        return len(self.generator)

    def set_epoch(self, epoch: int) -> None:
        self.generator.set_epoch(epoch)

    def latents(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(digit ids (2,), trajectories (2, L, 4) of rows (row, col, d_row, d_col)) of sequence ``index``."""
        return self.generator.latents(index)

    def __getitem__(self, index: int):
        frames = to_frames(self.generator[index])
        return frames[: self.nt_cond], frames[self.nt_cond :]


class MovingMNISTTestSet(Dataset):
    """The fixed docs/pde.md §5.2 test set: window i = the first τ + K frames of test sequence i.

    ``latents(i)`` gives that sequence's trajectories (2, L, 4) and ``new_digits(i)`` the two digits the docs/pde.md §4
    disentanglement test draws on them, as the original's ``SwapDataset``: with P the MNIST test digits in
    their source order, perm = RandomState(1).permutation(len(P)) and N test sequences, the digits
    P[perm[i]] and P[perm[i + N]].
    """

    def __init__(self, sequences: np.ndarray, latents: np.ndarray, swap_digits: np.ndarray, nt_cond: int, nt_pred: int,
                 source: str):
        _check_test_length(len(sequences), nt_cond, nt_pred)
        length, n = nt_cond + nt_pred, sequences.shape[1]
        # (L, N, nx, nx) whether or not the file has the original's channel axis; a copy frees the unused frames.
        self.sequences = sequences[:length].reshape(length, n, *sequences.shape[-2:]).copy()
        self.trajectories = latents[:length]  # (L, N, 2, 4)
        self.swap_digits = np.asarray(swap_digits, dtype=np.uint8)
        if len(self.swap_digits) < MNIST_DIGITS * n:
            raise ValueError(f"swap_digits: the swap test needs {MNIST_DIGITS} per test sequence, "
                             f"{MNIST_DIGITS * n} in all; got {len(self.swap_digits)}")
        self.swap_order = np.random.RandomState(MNIST_SWAP_SEED).permutation(len(self.swap_digits))
        self.nt_cond, self.length, self.nx, self.source = nt_cond, length, sequences.shape[-1], source

    def __len__(self) -> int:
        return self.sequences.shape[1]

    def latents(self, index: int) -> np.ndarray:
        """Trajectories (2, L, 4) of test sequence ``index``, rows (row, col, d_row, d_col)."""
        return self.trajectories[:, index].transpose(1, 0, 2)

    def new_digits(self, index: int) -> list[np.ndarray]:
        """The two new digits of the swap test for sequence ``index`` (class docstring)."""
        return [self.swap_digits[self.swap_order[index + k * len(self)]] for k in range(MNIST_DIGITS)]

    def __getitem__(self, index: int):
        frames = to_frames(self.sequences[:, index])
        return frames[: self.nt_cond], frames[self.nt_cond :]


def mnist_test_set(config, horizon: int) -> MovingMNISTTestSet:
    """``data_dir/mmnist_test_2digits_64.npz`` when present (as SRVP's evaluation finds its file), else the same
    set built in memory with the shared builder from the test digits (MNIST t10k in ``data_dir``, or the
    scikit-learn stand-in without one; ``source`` says which): :func:`moving_mnist.find_or_build_test_set`.

    The swap test needs the test digits in their source order, which that function recovers from the file, so
    the new digits are exactly the original's for the spec's file (from a file built with another seed they are
    other test digits).
    """
    _check_test_length(MNIST_TEST_FRAMES, config.nt_cond, horizon)
    # Deterministic trajectories draw nothing after their start (docs/pde.md §5.2), so L-frame sequences are, frame for
    # frame, the first L frames of the 100-frame set: build only those (5000 × 100 frames would be 2 GB).
    arrays, digits, source = moving_mnist.find_or_build_test_set(
        config.data_dir, config.nt_cond + horizon, deterministic=True, ndigits=MNIST_DIGITS, nx=MNIST_NX)
    if digits is None:
        raise ValueError(f"data_dir: {Path(config.data_dir) / MNIST_TEST_FILE} has no 'digits' array (the swap test "
                         "needs the test digits; the original's make_test_set.py writes them)")
    return MovingMNISTTestSet(arrays["sequences"], arrays["latents"], digits, config.nt_cond, horizon, source)


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
    """Views start … start+L−1 (mod 62) of one chair; index → (chair = i mod n, start = i div n) (docs/pde.md §5.3).

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
    """Samples at timestamps with 8 consecutive earlier half-hour slots, in the original's order (docs/pde.md §5.4).

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
    standardised frames; ``to_temperature`` and ``zone_range`` serve the spec's temperature-space metric (docs/pde.md §4).
    """

    def __init__(self, data_dir: str, train: bool, nt_cond: int, nt_pred: int):
        import h5py

        self.zones, self.index = [], []
        for zone in SST_TRAIN_ZONES if train else SST_TEST_ZONES:
            with h5py.File(Path(data_dir) / f"data_{zone}.nc", "r") as f:
                theta = f["thetao"][:].reshape(-1, 64, 64).astype(np.float64)
                clim_mean = f["daily_mean"][:].astype(np.float64)
                clim_std = f["daily_std"][:].astype(np.float64)
            # (days,) or (days, 64, 64) → a (days, 64, 64) view, so windows of different zones stack alike.
            per_day = lambda a: np.broadcast_to(a.reshape(-1, 1, 1) if a.ndim == 1 else a, theta.shape)  # noqa: E731
            clim_mean, clim_std = per_day(clim_mean), per_day(clim_std)
            x = (theta - clim_mean) / clim_std
            mu, sigma = x.mean((1, 2), keepdims=True), x.std((1, 2), keepdims=True)
            x = (x - mu) / sigma
            days = len(x)
            split = int(TRAIN_FRACTION * days)
            lo, hi = (0, split) if train else (split, days)
            self.zones.append(dict(
                x=torch.from_numpy(x).float()[:, None], mu=mu, sigma=sigma, clim_mean=clim_mean, clim_std=clim_std,
                # Whole-zone ranges (all days) of the normalised array (the original's get_min) and of thetao.
                normalised=(x.min(), x.max()), temperature=(theta.min(), theta.max()),
            ))
            self.index += [(len(self.zones) - 1, i) for i in range(lo, hi - nt_cond - nt_pred + 1)]
        self.nt_cond, self.length = nt_cond, nt_cond + nt_pred

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int):
        zone, start = self.index[index]
        frames = self.zones[zone]["x"][start : start + self.length]
        return frames[: self.nt_cond], frames[self.nt_cond :]

    def frame_stats(self, index: int) -> dict[str, np.ndarray]:
        """Per-frame (mu, sigma) and climatology (clim_mean, clim_std) of window ``index``'s target days."""
        zone, start = self.index[index]
        future = slice(start + self.nt_cond, start + self.length)
        return {k: self.zones[zone][k][future] for k in ("mu", "sigma", "clim_mean", "clim_std")}

    def to_temperature(self, indices: list[int], frames: torch.Tensor) -> torch.Tensor:
        """Standardised frames (B, K, 1, 64, 64) aligned with the targets of windows ``indices`` → thetao units
        (float64), as the original's test (docs/pde.md §4): ·σ + μ with the *target* days' own spatial statistics (ground
        truth, also for forecasts), then ·daily_std + daily_mean."""
        stats = [self.frame_stats(i) for i in indices]
        stack = lambda key: torch.from_numpy(np.stack([s[key] for s in stats]))[:, :, None].to(frames.device)  # noqa: E731
        return (frames.double() * stack("sigma") + stack("mu")) * stack("clim_std") + stack("clim_mean")

    def zone_range(self, indices: list[int], kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(min, max) (B, 1, 1, 1, 1) over all days of each window's zone of the ``normalised`` array or of the
        ``temperature`` (thetao)."""
        if kind not in ("normalised", "temperature"):
            raise ValueError(f"kind: {kind!r}; allowed: normalised, temperature")
        low, high = np.array([self.zones[self.index[i][0]][kind] for i in indices]).T
        as_tensor = lambda v: torch.from_numpy(v).view(-1, 1, 1, 1, 1)  # noqa: E731
        return as_tensor(low), as_tensor(high)


# ------------------------------------------------------------------------------------------------ factory


def make_dataset(config, train: bool, horizon: int | None = None) -> Dataset:
    """The train or test set of ``config.dataset``; ``horizon`` overrides nt_pred (test horizons, docs/pde.md §6)."""
    nt_pred = config.nt_pred if horizon is None else horizon
    if config.dataset in ("wave", "wave_partial"):
        return wave_dataset(config, train, nt_pred)
    if config.dataset == "mnist" and not train:
        return mnist_test_set(config, nt_pred)
    if config.dataset == "mnist":
        digits, _, _ = moving_mnist.digits_for(config.data_dir, True, 28)
        return MovingMNISTWindows(digits, MNIST_TRAIN_SEQUENCES, config.nt_cond, nt_pred, config.data_seed)
    if config.data_dir is None:
        raise ValueError(f"data_dir: dataset {config.dataset!r} reads user files; set data_dir (layouts in {__name__})")
    if config.dataset == "chairs":
        return Chairs(config.data_dir, train, config.nt_cond, nt_pred)
    if config.dataset == "taxibj":
        return TaxiBJ(config.data_dir, train, config.nt_cond, nt_pred, config.taxibj_chronological)
    return SST(config.data_dir, train, config.nt_cond, nt_pred)
