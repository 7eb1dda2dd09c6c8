"""Process runtime: thread pinning and Ray start-up.

Both happen before a model's heavy imports: the thread environment must be in place before torch or
jax are first imported in a process, and a local Ray is started only when no cluster is named.
"""

from __future__ import annotations

import os
from typing import Mapping

from dynagen.platform.configs import UsageError


def thread_env(cpus: int) -> dict[str, str]:
    """Environment that keeps one process on ``cpus`` cores (torch/OpenMP/MKL and XLA's CPU
    backend); it must be in place before torch or jax are first imported in that process."""
    cpus = str(max(1, int(cpus)))
    return {
        "OMP_NUM_THREADS": cpus,
        "MKL_NUM_THREADS": cpus,
        "OPENBLAS_NUM_THREADS": cpus,
        "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={cpus}",
    }


def train_worker_env(cpus: int) -> dict[str, str]:
    """Environment of a Ray Train worker process: ``cpus`` threads, and normal CPU priority. Ray starts its
    workers at niceness 15 (to favour its own daemons), so any ordinary process on the node (the driver, Ray's
    actors importing at start-up, another job) preempts training and the GPU waits; the trainer's workers are
    the node's main work."""
    return {**thread_env(cpus), "RAY_worker_niceness": "0"}


def limit_threads(cpus: int) -> None:
    os.environ.update(thread_env(cpus))
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def ensure_ray(needs: Mapping[str, tuple[float, str]] | None = None, quiet: bool = False) -> None:
    """Connect to the cluster named by ``RAY_ADDRESS`` (``ray job submit`` sets it), else start an
    embedded local Ray without the dashboard. Never attaches to some other local Ray by accident.

    ``needs``: resource ("CPU", "GPU") -> (amount one run or trial needs at once, the option that sets
    it). An embedded Ray has no autoscaler, so a request larger than this machine would wait forever:
    that is a usage error naming the option. ``quiet``: workers' output is not forwarded to the driver, and
    Ray leaves the driver's logging as platform/console.py set it (to the run's or sweep's log file).
    """
    import ray

    if ray.is_initialized():
        return
    output = {"log_to_driver": False, "configure_logging": False} if quiet else {}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **output)
        return
    ray.init(include_dashboard=False, **output)
    available = ray.cluster_resources()
    for resource, (needed, option) in (needs or {}).items():
        if needed > available.get(resource, 0):
            ray.shutdown()
            raise UsageError(f"{option}: needs {needed:g} {resource} at once but this machine has {available.get(resource, 0):g}; "
                             f"allowed: at most that, or a cluster through RAY_ADDRESS")
