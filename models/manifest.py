"""Pieces of the evaluation manifest every ``evaluate`` writes into metrics.json (what was scored, and how).

The platform adds the checkpoint evaluated; each experiment adds its test set, frames, samples and metric
conventions (models/srvp/evaluate.py, models/pde/evaluation.py, models/gantk/experiment.py).
"""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, version
from typing import Iterable

from dynagen.platform.results import file_sha256  # noqa: F401  (re-exported: one hash for every manifest file)


def arrays_sha256(arrays: Iterable) -> str:
    """SHA-256 of arrays' bytes in order (C order, their own dtype): the identity of a test set's content."""
    import numpy as np

    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array.detach().cpu().numpy() if hasattr(array, "detach") else np.asarray(array))
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def library_versions(*packages: str) -> dict[str, str]:
    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {name: installed(name) for name in ("dynagen", *packages)}
