"""Training data that are new every epoch yet reproducible, shared by SRVP and the PDE model.

The originals draw a fresh random clip at every access: docs/srvp.md §3 (Franceschi et al., ICML 2020) a new synthetic Moving
MNIST video, or a random video and start for KTH / Human3.6M, and a random start in each BAIR video; docs/pde.md §5.2
(Donà et al., ICLR 2021) a new Moving MNIST sequence. Here item ``i`` of epoch ``e`` is drawn from
``RandomState((seed, e, i))`` (:class:`EpochDataset`): every epoch brings new clips, while a run stays
reproducible and resumable and DataLoader workers need no random state of their own.

The training loop takes its batches from :func:`epochs`, which sets the epoch on the dataset and on the sampler
before each pass. Loader workers are not persistent (do not set ``persistent_workers``): each pass creates its
workers from the main process's dataset, so they see the epoch just set.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class EpochDataset(Dataset):
    """Base of the on-the-fly training sets: ``rng(index)`` is item ``index``'s stream in the current epoch.

    ``epoch`` stays 0 unless a training loop advances it, so fixed sets built from these classes (validation
    clips, test sets) never change.
    """

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, index: int) -> np.random.RandomState:
        return np.random.RandomState([self.seed % 2**32, self.epoch, index])


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` whose next pass can skip the samples a resumed run has already consumed."""

    skip = 0  # samples of this rank to leave out of the next pass

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, None)


def train_loader(dataset: Dataset, ctx, batch_size: int, seed: int, *, drop_last: bool, num_workers: int,
                 collate_fn: Callable | None = None) -> DataLoader:
    """The shuffled training loader of this rank (``batch_size`` is the local one), prepared by ``ctx``.

    The sampler is this module's ``DistributedSampler`` for every world size, seeded with the run's ``seed``: epoch
    ``e`` is ordered by (seed, e) alone, so runs with different seeds shuffle differently (under DDP, Ray's
    ``prepare_data_loader`` would otherwise add a sampler with seed 0; it leaves a loader that has one alone) and
    a resumed run replays the same order. Batches are page-locked on GPU so host-to-device copies overlap compute.
    """
    sampler = EpochSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed,
                           drop_last=drop_last)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=num_workers,
        collate_fn=collate_fn, pin_memory=torch.device(ctx.device).type == "cuda",
        generator=torch.Generator().manual_seed(seed),  # worker base seeds: never a draw from the global torch RNG
    )
    return ctx.prepare_data_loader(loader)


def epochs(loader: DataLoader, done: int = 0) -> Iterator[tuple[int, Any]]:
    """Endless ``(epoch, batch)`` pairs from a :func:`train_loader`, ``done`` batches into the run.

    Before each pass the epoch is set on the sampler (its order) and on the dataset (its draws, when it has
    ``set_epoch``). A run resumed after ``done`` batches starts in epoch ``done // len(loader)`` and skips the
    batches that epoch already gave (sampler indices only: nothing is loaded), so it sees exactly the batches of
    an uninterrupted run and its epochs begin on the same steps (PDE's learning rate changes per epoch, docs/pde.md §3.7).
    """
    per_epoch = len(loader)
    if per_epoch == 0:  # drop_last with fewer items than one batch: the loader would never yield
        raise ValueError(f"batch_size: {loader.batch_size} per worker is more than this worker's "
                         f"{len(loader.sampler)} training items; allowed: at most {len(loader.sampler)}")
    epoch, skip = divmod(done, per_epoch)
    while True:
        for target in (loader.sampler, loader.dataset):
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)
        loader.sampler.skip = skip * loader.batch_size
        for batch in loader:
            yield epoch, batch
        epoch, skip = epoch + 1, 0
