"""What a training function sees of the platform: one small object, ``ctx``.

A model's ``train(config, ctx)`` reads like a plain training loop::

    restored = ctx.restore()                      # (state, step) or None
    model = ctx.prepare_model(model)              # device placement, DDP when world_size > 1
    loader = ctx.prepare_data_loader(loader)      # distributed sampler, device transfer
    for step in range(start, config.steps):
        ...
        ctx.report(step, {"loss": loss}, state=lambda: {"model": ..., "optim": ...})
    return final_metrics

``report`` logs every call (TensorBoard from rank 0, the results store, Ray Train / Tune) and
checkpoints when the platform's checkpoint interval says so; ``state`` is a callable so
serialisation only happens when a checkpoint is due. Batch sizes in configs are global:
``ctx.local_batch_size(batch_size)`` is a worker's share.

:class:`LocalContext` runs everything in this process with no Ray: the same checkpoint and
TensorBoard files, used by model tests and by ``dynagen train --local``. The Ray Train and Tune
contexts live in :mod:`dynagen.platform.launch`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

StateFn = Callable[[], Mapping[str, Any]]

CHECKPOINT_FILE = "state.pt"


class Diverged(FloatingPointError):
    """Raised by a training function whose state became non-finite, at the logging step that found it and
    before any metric is computed on that state: the run ends with status ``diverged``, the message as its
    one-line reason, and no metric values (those from before the divergence are not its result)."""

    def __init__(self, reason: str, step: int):
        super().__init__(reason)
        self.step = step


class RunContext(Protocol):
    rank: int
    world_size: int
    run_dir: Path  # artifacts (PNG, GIF, ...) written by rank 0 land here

    @property
    def is_main(self) -> bool: ...

    @property
    def device(self) -> Any: ...  # torch.device for torch experiments, None for jax ones

    def local_batch_size(self, global_batch_size: int) -> int: ...

    def prepare_model(self, model: Any) -> Any: ...

    def prepare_data_loader(self, loader: Any) -> Any: ...

    def restore(self) -> tuple[Mapping[str, Any], int] | None: ...  # state saved after `step`; resume at step + 1

    def report(self, step: int, metrics: Mapping[str, float], state: StateFn | None = None, *, final: bool = False) -> None: ...

    def log_images(self, step: int, tag: str, images: Any) -> None: ...


def tensorboard_without_tensorflow() -> None:
    """Make TensorBoard use its TF stub (its documented ``tensorboard.compat.notf`` switch) unless
    TensorFlow is already loaded: writing event files needs no TensorFlow, and importing it costs
    ~10 s in every worker process."""
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


def tensorboard_writer(log_dir: Path) -> Any:
    """A SummaryWriter whose queue does not fill: with TensorBoard's default of 10 pending events,
    every scalar past the tenth waits for the writer thread to get the GIL (milliseconds in a busy
    worker). Event files are flushed every 10 s and on close."""
    tensorboard_without_tensorflow()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir), max_queue=1000, flush_secs=10)


def save_state_atomically(state: Mapping[str, Any], directory: Path) -> Path:
    """Write ``state`` to ``directory/state.pt`` through a temp file + rename."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".state-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
        target = directory / CHECKPOINT_FILE
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_state(path: str | Path) -> Mapping[str, Any]:
    """Load a checkpoint written by :func:`save_state_atomically` (a file or its directory)."""
    import torch

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    return torch.load(path, map_location="cpu", weights_only=False)


class LocalContext:
    """A single-process run: no Ray, same checkpoints and TensorBoard logs."""

    rank = 0
    world_size = 1

    def __init__(self, run_dir: str | Path, checkpoint_every: int = 0, tensorboard: bool = True, device: Any = "cpu"):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_every = checkpoint_every
        self.history: list[dict[str, float]] = []
        self._device = device
        self._writer = None
        if tensorboard:
            self._writer = tensorboard_writer(self.run_dir / "tensorboard")

    @property
    def is_main(self) -> bool:
        return True

    @property
    def device(self) -> Any:
        import torch

        return torch.device(self._device)

    def local_batch_size(self, global_batch_size: int) -> int:
        return global_batch_size

    def prepare_model(self, model: Any) -> Any:
        return model.to(self.device)

    def prepare_data_loader(self, loader: Any) -> Any:
        return loader

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoint"

    def restore(self) -> tuple[Mapping[str, Any], int] | None:
        if not (self.checkpoint_dir / CHECKPOINT_FILE).exists():
            return None
        state = load_state(self.checkpoint_dir)
        return state, int(state["_step"])

    def report(self, step: int, metrics: Mapping[str, float], state: StateFn | None = None, *, final: bool = False) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.history.append(row)
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, float(value), step)
        due = final or (self.checkpoint_every > 0 and step > 0 and step % self.checkpoint_every == 0)
        if state is not None and due:
            save_state_atomically({**state(), "_step": step}, self.checkpoint_dir)

    def log_images(self, step: int, tag: str, images: Any) -> None:
        """``images``: array [N, H, W, C] or [H, W, C] in [0, 1]."""
        if self._writer is None:
            return
        import numpy as np

        array = np.asarray(images, dtype=np.float32)
        if array.ndim == 3:
            array = array[None]
        self._writer.add_images(tag, array, step, dataformats="NHWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
