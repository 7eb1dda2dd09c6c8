"""Pieces every torch training loop here shares (docs/platform.md, "Writing a training loop").

Each model's loop keeps only what is its own (its loss, its schedule, what it logs); these are the
parts that were written once per model: BatchNorm statistics over the global batch, restoring the
training objects from ``ctx.restore()``'s state, stopping a diverged run before it is checkpointed,
and a ``best/`` checkpoint whose score is part of the training state (so a resume keeps it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from dynagen.platform.checkpoints import checkpoint_state, save_state_atomically
from dynagen.platform.context import Diverged


def sync_batchnorm(model: torch.nn.Module, ctx) -> torch.nn.Module:
    """BatchNorm statistics over the global batch when DDP runs on GPUs. PyTorch's SyncBatchNorm only runs on
    accelerators, so CPU DDP (tests, laptops) keeps per-worker statistics."""
    if ctx.world_size > 1 and torch.device(ctx.device).type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def load_training_state(state: Mapping[str, Any], **objects: Any) -> None:
    """``objects[key].load_state_dict(state[key])`` for each named object (model, optimiser, scheduler, scaler);
    an empty saved entry is skipped (a GradScaler saved without AMP has an empty state)."""
    for key, target in objects.items():
        if state.get(key):
            target.load_state_dict(state[key])


def all_finite(module: torch.nn.Module) -> bool:
    """Whether every parameter is finite (one host sync)."""
    return bool(torch.stack([p.isfinite().all() for p in module.parameters()]).all())


def stop_if_diverged(finite: bool, experiment: str, what: str, step: int, detail: str = "") -> None:
    """Raise before a diverged state can be checkpointed (the loop calls it at logging steps, before ``ctx.report``)."""
    if not finite:
        raise Diverged(f"{experiment}: {what} at step {step}{detail}: training diverged; "
                       "resume from the last checkpoint with a lower lr", step)


class BestCheckpoint:
    """``<run_dir>/best/state.pt``: the state with the highest score so far (rank 0).

    The score belongs in the training state (``state()`` returns ``**best.state()``): after a resume,
    ``load`` brings it back, so a first validation worse than the best before the interruption keeps ``best/``."""

    KEY = "best_score"

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.score = -math.inf

    def state(self) -> dict[str, float]:
        return {self.KEY: self.score}

    def load(self, state: Mapping[str, Any]) -> None:
        self.score = float(state.get(self.KEY, -math.inf))

    def offer(self, score: float, step: int, state: Callable[[], Mapping[str, Any]], config: Any = None) -> bool:
        """Save ``state()`` as the best checkpoint if ``score`` beats every earlier one; returns whether it did."""
        if not score > self.score:
            return False
        self.score = score
        saved_config = config.model_dump(mode="json") if config is not None else None
        save_state_atomically(checkpoint_state(state(), step, saved_config), self.directory)
        return True
