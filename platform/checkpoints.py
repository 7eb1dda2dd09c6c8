"""Checkpoint files: one schema for every launch path (docs/platform.md, "Checkpoints").

``<folder>/state.pt`` holds the dict a model's ``state()`` returned, plus

* ``_step``: the step of the report that saved it (``ctx.restore()`` returns it; the loop resumes at ``_step + 1``),
* ``_config``: the run's resolved config (JSON types), so ``dynagen evaluate`` needs only the checkpoint.

Local runs keep one ``checkpoint/`` (and a model's ``best/``); Ray Train and Tune keep their own
``checkpoint_*`` folders holding the same file. Written atomically through the results store's writer.

Checkpoints are shared between people, so loading one never runs code: every load is
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists, tuples, dicts), and numpy arrays are
saved as tensors (:func:`as_tensors`; a JAX experiment's backend turns them back, ``platform/backends.py``).
A file that would need unpickling anything else is refused with one line (:class:`CheckpointError`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

from dynagen.platform.configs import UsageError
from dynagen.platform.results import write_bytes_atomically

CHECKPOINT_FILE = "state.pt"
PLATFORM_KEYS = ("_step", "_config")
ALLOWED = "a state.pt written by dynagen (tensors, numbers, strings and containers of them)"


class CheckpointError(UsageError):
    """A file that is no checkpoint of this platform, or that could only be read by running code."""


def as_tensors(value: Any) -> Any:
    """``value`` with every numpy array (in dicts, lists, tuples) as a torch tensor and numpy scalars as Python
    numbers: what ``weights_only=True`` loads."""
    import numpy as np
    import torch

    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {key: as_tensors(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(as_tensors(item) for item in value)
    return value


def as_arrays(value: Any) -> Any:
    """The inverse of :func:`as_tensors` for state that holds no tensors of its own (JAX/numpy experiments)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.numpy()
    if isinstance(value, Mapping):
        return {key: as_arrays(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(as_arrays(item) for item in value)
    return value


def checkpoint_state(state: Mapping[str, Any], step: int, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The saved dict: the model's state with the platform's ``_step`` and ``_config``."""
    return {**state, "_step": step, "_config": None if config is None else dict(config)}


def save_state_atomically(state: Mapping[str, Any], directory: Path) -> Path:
    """Write ``state`` to ``directory/state.pt`` (a temp file, then a rename)."""
    import torch

    buffer = io.BytesIO()
    torch.save(as_tensors(dict(state)), buffer)
    write_bytes_atomically(str(directory), CHECKPOINT_FILE, buffer.getvalue())
    return Path(directory) / CHECKPOINT_FILE


def load_state(path: str | Path) -> Mapping[str, Any]:
    """Load a checkpoint written by :func:`save_state_atomically` (a file or its directory), never running code
    from it: anything but tensors and plain values, a damaged file or one without the platform's keys is a
    :class:`CheckpointError`."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            KeyError, IndexError, UnicodeDecodeError, zipfile.BadZipFile) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"checkpoint: {path} cannot be loaded without running code, or is damaged "
                              f"({type(error).__name__}: {first[:160]}); allowed: {ALLOWED}") from None
    if not isinstance(state, dict) or any(key not in state for key in PLATFORM_KEYS):
        found = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint: {path} is no dynagen checkpoint (no {' and '.join(PLATFORM_KEYS)}; found {found}); "
                              f"allowed: {ALLOWED}")
    return state


def find_checkpoint(path: Path) -> Path | None:
    """A ``state.pt``, a checkpoint folder, or a run folder (its latest checkpoint); None if there is none."""
    if path.is_file():
        return path
    if (path / CHECKPOINT_FILE).is_file():
        return path / CHECKPOINT_FILE
    candidates = sorted(path.glob(f"checkpoint_*/{CHECKPOINT_FILE}")) + sorted(path.glob(f"checkpoint/{CHECKPOINT_FILE}"))
    return candidates[-1] if candidates else None


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder holding a checkpoint file."""
    return checkpoint.parent.parent if checkpoint.parent.name.startswith("checkpoint") else checkpoint.parent
