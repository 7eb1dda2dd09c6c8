"""Files a model writes into its run folder (PNG, GIF, CSV, npz, torch files), all atomically.

Each is encoded in memory and handed to the platform's one atomic writer
(``dynagen.platform.results.write_bytes_atomically``: a hidden temp file, then a rename), so a reader
never sees half a file and a crash leaves the previous version.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from dynagen.platform.results import write_bytes_atomically


def write_atomically(path: str | Path, data: bytes) -> Path:
    path = Path(path).absolute()
    write_bytes_atomically(str(path.parent), path.name, data)
    return path


def encoded(write: Callable[[io.BytesIO], Any]) -> bytes:
    """The bytes ``write(buffer)`` produces."""
    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


def _pictures(frames: Iterable[np.ndarray], scale: int):
    from PIL import Image

    pictures = [Image.fromarray(np.asarray(frame)) for frame in frames]
    if scale != 1:
        pictures = [p.resize((p.width * scale, p.height * scale), Image.Resampling.NEAREST) for p in pictures]
    return pictures


def save_png(path: str | Path, image: np.ndarray, scale: int = 1) -> Path:
    """``image``: uint8 [H, W] or [H, W, C]; ``scale``: integer nearest-neighbour magnification."""
    (picture,) = _pictures([image], scale)
    return write_atomically(path, encoded(lambda buffer: picture.save(buffer, format="PNG")))


def save_gif(path: str | Path, frames: Sequence[np.ndarray], scale: int = 1, ms_per_frame: int = 200) -> Path:
    """An endlessly looping GIF of uint8 frames."""
    pictures = _pictures(frames, scale)
    return write_atomically(path, encoded(lambda buffer: pictures[0].save(
        buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=ms_per_frame, loop=0)))


def save_figure(path: str | Path, figure: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG (closed afterwards); returns the PNG bytes."""
    import matplotlib.pyplot as plt

    data = encoded(lambda buffer: figure.savefig(buffer, format="png", dpi=dpi))
    plt.close(figure)
    write_atomically(path, data)
    return data


def save_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    return write_atomically(path, text.getvalue().encode())


def save_npz(path: str | Path, compressed: bool = False, **arrays: np.ndarray) -> Path:
    save = np.savez_compressed if compressed else np.savez
    return write_atomically(path, encoded(lambda buffer: save(buffer, **arrays)))


def save_torch(path: str | Path, value: Any) -> Path:
    import torch

    return write_atomically(path, encoded(lambda buffer: torch.save(value, buffer)))
