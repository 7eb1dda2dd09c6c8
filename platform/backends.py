"""Backends: what differs between torch and JAX experiments, looked up once per run.

An experiment names its backend (``Experiment.backend``); :func:`backend_of` turns the name into
one of these objects, and the platform asks it instead of testing names:

* ``device(use_gpu)`` / ``prepare_model(model, device)``: what ``ctx.device`` and ``ctx.prepare_model``
  give an in-process (Tune or local) run;
* ``in_trainer(workers, single_run)``: whether a run goes through a Ray Train ``TorchTrainer`` (DDP ranks)
  rather than in the Tune trial's own process;
* ``trial_resources(cpus, gpus, workers)``: what one Tune trial reserves;
* ``loaded(state)``: a checkpoint's dict as the experiment's code expects it;
* ``limit_gpu_memory(share, device)``: keep a trial's or worker's process inside a fractional GPU share
  (``platform/runtime.py``: ``gpu_memory_fraction``; docs/platform.md, "GPU shares"), before the model's heavy imports.

Checkpoints are saved the same way for both (``platform/checkpoints.py``): numpy arrays are stored as torch
tensors so that every checkpoint loads with ``torch.load(weights_only=True)``; a JAX experiment's state is
numpy arrays, and its backend turns the tensors back into them on every load (restore, evaluate).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from dynagen.platform.configs import UsageError
from dynagen.platform.runtime import gpu_memory_fraction, jax_gpu_memory_env

# A Ray Train trial's driver holds no CPU (its workers reserve them through the ScalingConfig), only a
# little memory: Tune needs a non-empty request.
TRAINER_DRIVER_RESOURCES = {"cpu": 0, "gpu": 0, "memory": 64 * 1024**2}


@dataclass(frozen=True)
class TorchBackend:
    name: str = "torch"

    def device(self, use_gpu: bool) -> Any:
        import torch

        return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")

    def local_device(self, use_gpu: bool) -> str:
        """The device of a ``--local`` run; asking for a GPU that is not there is a usage error."""
        if not use_gpu:
            return "cpu"
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--gpu: torch sees no CUDA device here; allowed: --gpu only where one is visible")
        return "cuda"

    def prepare_model(self, model: Any, device: Any) -> Any:
        return model.to(device)

    def in_trainer(self, workers: int, single_run: bool) -> bool:
        """A single run always uses Ray Train (failure recovery, its checkpoints); a sweep trial only for DDP."""
        return single_run or workers > 1

    def trial_resources(self, cpus: float, gpus: float, workers: int) -> dict[str, float]:
        return dict(TRAINER_DRIVER_RESOURCES) if self.in_trainer(workers, single_run=False) else {"cpu": cpus, "gpu": gpus}

    def loaded(self, state: Any) -> Any:
        return state

    def limit_gpu_memory(self, share: float, device: Any = None) -> float | None:
        """torch's per-process memory fraction for a fractional ``share`` of ``device`` (default: the current one);
        returns it, or None (no GPU, a whole one, or no CUDA device visible)."""
        fraction = gpu_memory_fraction(share)
        if fraction is None:
            return None
        import torch

        if not torch.cuda.is_available():
            return None
        torch.cuda.set_per_process_memory_fraction(fraction, device)
        return fraction


@dataclass(frozen=True)
class JaxBackend:
    """JAX places arrays itself: ``ctx.device`` is None and ``prepare_model`` the identity."""

    name: str = "jax"

    def device(self, use_gpu: bool) -> Any:
        return None

    def local_device(self, use_gpu: bool) -> str:
        return "cpu"  # the LocalContext's torch device; JAX picks its own accelerator

    def prepare_model(self, model: Any, device: Any) -> Any:
        return model

    def in_trainer(self, workers: int, single_run: bool) -> bool:
        return False

    def trial_resources(self, cpus: float, gpus: float, workers: int) -> dict[str, float]:
        return {"cpu": cpus, "gpu": gpus}

    def loaded(self, state: Any) -> Any:
        from dynagen.platform.checkpoints import as_arrays

        return as_arrays(state)

    def limit_gpu_memory(self, share: float, device: Any = None) -> float | None:
        """The environment that keeps this process's jax inside a fractional ``share`` (read once, when jax's GPU
        backend starts); returns the fraction, or None (no GPU, a whole one). A process Tune reuses for the next
        trial (reuse_actors) has the same share (one sweep, one ``resources.gpu``), so it finds its environment
        already in place; jax imported under another setting is an error."""
        fraction = gpu_memory_fraction(share)
        if fraction is None:
            return None
        wanted = jax_gpu_memory_env(share)
        if "jax" in sys.modules and any(os.environ.get(key) != value for key, value in wanted.items()):
            raise RuntimeError(f"jax was imported in this process before its GPU share {share:g} could limit its memory "
                               f"({', '.join(f'{k}={v}' for k, v in wanted.items())}); start the trial in a fresh process")
        os.environ.update(wanted)
        return fraction


BACKENDS = {backend.name: backend for backend in (TorchBackend(), JaxBackend())}


def backend_of(experiment) -> TorchBackend | JaxBackend:
    return BACKENDS[experiment.backend]
