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


@pytest.fixture
def float64():
    """JAX in double precision for one test: the spec's reference numbers are float64."""
    import jax

    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP barriers stall."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray instance shared by every test that needs Ray (num_cpus=2), with one logical GPU: Ray's
    resources are counts it schedules by, so trials asking for a share of a GPU are placed on it without a device
    (tests/test_platform_gpu_share.py); without CUDA, torch and jax in those trials still run on the CPU."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=True)
    yield ray
    ray.shutdown()
