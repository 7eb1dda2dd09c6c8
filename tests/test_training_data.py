"""The shared per-epoch training stream (models/training_data.py): new draws every epoch, also in DataLoader
worker processes; shuffles seeded by the run's seed on every rank; an exact continuation after a resume.

The probe data set returns, for each access, (index, the epoch it saw, a draw from its stream), so every property
is read off the batches themselves.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dynagen.models.training_data import EpochDataset, epochs, train_loader
from dynagen.platform.context import LocalContext

N, BATCH, SEED = 10, 4, 7  # ceil(10 / 4) = 3 batches per epoch (drop_last False)


class Probe(EpochDataset):
    def __init__(self, seed: int = SEED):
        self.seed = seed

    def __len__(self) -> int:
        return N

    def __getitem__(self, index: int) -> np.ndarray:
        return np.array([index, self.epoch, self.rng(index).randint(2**30)])


def rank_ctx(rank: int, world_size: int):
    """The attributes train_loader reads from a platform context, for a rank of a DDP group (no process group:
    the sampler only needs rank and world size)."""
    return SimpleNamespace(rank=rank, world_size=world_size, device="cpu", prepare_data_loader=lambda loader: loader)


def take(stream, n: int) -> list[tuple[int, torch.Tensor]]:
    return [next(stream) for _ in range(n)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_epoch_draws_new_items_from_seed_epoch_and_index(tmp_path, num_workers):
    loader = train_loader(Probe(), LocalContext(tmp_path, tensorboard=False), BATCH, SEED, drop_last=False,
                          num_workers=num_workers)
    assert len(loader) == 3
    stream = take(epochs(loader), 6)
    assert [epoch for epoch, _ in stream] == [0, 0, 0, 1, 1, 1]
    draws = {}
    for epoch, batch in stream:
        for index, seen, draw in batch.tolist():
            assert seen == epoch  # worker processes were created after the epoch was set
            assert draw == np.random.RandomState([SEED, epoch, index]).randint(2**30)
            draws[epoch, index] = draw
    assert len(draws) == 2 * N  # each epoch visits every index once
    assert all(draws[0, i] != draws[1, i] for i in range(N))  # the same index, new data


def test_worker_processes_give_the_in_process_stream(tmp_path):
    ctx = LocalContext(tmp_path, tensorboard=False)
    streams = [take(epochs(train_loader(Probe(), ctx, BATCH, SEED, drop_last=False, num_workers=w)), 6) for w in (0, 2)]
    for (epoch_a, a), (epoch_b, b) in zip(*streams):
        assert epoch_a == epoch_b and torch.equal(a, b)


def test_the_shuffle_follows_the_run_seed_on_every_rank():
    def order(seed: int, rank: int = 0, world_size: int = 1) -> list[int]:
        loader = train_loader(Probe(seed), rank_ctx(rank, world_size), BATCH, seed, drop_last=False, num_workers=0)
        return [int(i) for _, batch in take(epochs(loader), len(loader)) for i in batch[:, 0]]

    assert order(0) == order(0) and order(0) != order(1)
    ranks = [order(3, rank, 2) for rank in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(N))  # 10 = 2 × 5: the two ranks split the epoch
    assert ranks[0] != order(4, 0, 2)  # under DDP too, another seed shuffles differently


@pytest.mark.parametrize("drop_last", [False, True])
def test_a_resumed_stream_continues_with_the_same_epochs_and_batches(drop_last):
    ctx = rank_ctx(0, 1)
    make = lambda: train_loader(Probe(), ctx, BATCH, SEED, drop_last=drop_last, num_workers=0)  # noqa: E731
    per_epoch = len(make())
    assert per_epoch == (2 if drop_last else 3)
    full = take(epochs(make()), 3 * per_epoch)
    for done in (1, per_epoch, per_epoch + 1):  # mid-epoch, at an epoch boundary, in the second epoch
        resumed = take(epochs(make(), done=done), len(full) - done)
        assert [epoch for epoch, _ in resumed] == [epoch for epoch, _ in full[done:]]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(resumed, full[done:]))


def test_a_batch_larger_than_the_data_is_a_clear_error():
    loader = train_loader(Probe(), rank_ctx(0, 1), N + 1, SEED, drop_last=True, num_workers=0)
    with pytest.raises(ValueError, match=f"batch_size: {N + 1} per worker .* {N} training items"):
        next(epochs(loader))
