"""Checkpoint files: one schema for every launch path (docs/platform.md, "Checkpoints").

``<folder>/state.pt`` holds the dict a model's ``state()`` returned, plus

* ``_step``: the step of the report that saved it (``ctx.restore()`` returns it; the loop resumes at ``_step + 1``),
* ``_config``: the run's resolved config (JSON types), so ``dynagen evaluate`` needs only the checkpoint.

Local runs keep one ``checkpoint/`` (and a model's ``best/``); Ray Train and Tune keep their own
``checkpoint_*`` folders holding the same file. Written atomically through the results store's writer.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

from dynagen.platform.results import write_bytes_atomically

CHECKPOINT_FILE = "state.pt"


def checkpoint_state(state: Mapping[str, Any], step: int, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The saved dict: the model's state with the platform's ``_step`` and ``_config``."""
    return {**state, "_step": step, "_config": None if config is None else dict(config)}


def save_state_atomically(state: Mapping[str, Any], directory: Path) -> Path:
    """Write ``state`` to ``directory/state.pt`` (a temp file, then a rename)."""
    import torch

    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    write_bytes_atomically(str(directory), CHECKPOINT_FILE, buffer.getvalue())
    return Path(directory) / CHECKPOINT_FILE


def load_state(path: str | Path) -> Mapping[str, Any]:
    """Load a checkpoint written by :func:`save_state_atomically` (a file or its directory)."""
    import torch

    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    return torch.load(path, map_location="cpu", weights_only=False)


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
