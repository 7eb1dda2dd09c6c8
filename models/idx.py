"""The IDX format of the MNIST files (``*-images-idx3-ubyte``, ``*-labels-idx1-ubyte``, optionally gzipped).

Layout: two zero bytes, a type byte (0x08 = unsigned byte, the only type
MNIST uses), the number of dimensions, one big-endian uint32 size per dimension, then the values row-major.
Read by Moving MNIST (SRVP, PDE) and by GAN(TK)²'s MNIST target set.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

UNSIGNED_BYTE = 0x08


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """The uint8 array stored in the IDX file ``path`` (gzipped when its name ends in ``.gz``).

    ``ndim`` (3 for images, 1 for labels), when given, is checked against the file's header.
    """
    path = Path(path)
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as handle:
        data = handle.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != UNSIGNED_BYTE or (ndim is not None and data[3] != ndim):
        expected = f"idx{ndim}-ubyte" if ndim is not None else "unsigned-byte IDX"
        raise ValueError(f"{path}: not an {expected} file")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3]))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * data[3]).reshape(shape)
