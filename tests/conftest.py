"""Shared fixtures: ONE real local Ray for the whole session (2 CPUs, no dashboard).

Ray workers are separate processes: they import ``tests.experiments`` (the platform's test
experiment) through PYTHONPATH, which the raylet and its workers inherit from this process.
``tests`` is a regular package so that it wins over unrelated installed ``tests`` packages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
# No usage-stats prompt from Ray in tests.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray instance shared by every test that needs Ray (num_cpus=2)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=True)
    yield ray
    ray.shutdown()
