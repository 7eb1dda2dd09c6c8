"""Process runtime: thread pinning, GPU memory shares and Ray start-up.

All happen before a model's heavy imports: the thread environment and a JAX process's GPU memory limit must be
in place before torch or jax are first imported in a process, and a local Ray is started only when no cluster is named.
"""

from __future__ import annotations

import os
from typing import Mapping

from dynagen.platform.configs import UsageError


# Eigen's own thread pool off: it would add a pool of every core under XLA:CPU's. (XLA:CPU still runs independent
# parts of a program on a pool sized to the cores the process may run on, its affinity mask: jaxlib 0.5.3 has no
# setting for that pool, benchmarks/sweep.py measures it.)
XLA_CPU_FLAGS = ("--xla_cpu_multi_thread_eigen=false",)


def thread_env(cpus: int) -> dict[str, str]:
    """Environment that keeps one process's math libraries to ``cpus`` threads (torch/OpenMP/MKL/OpenBLAS, and
    Eigen under XLA:CPU); it must be in place before torch or jax are first imported in that process. The caller's
    own ``XLA_FLAGS`` are kept, after dynagen's, so that theirs win. Only ``--flags`` go in: XLA stops reading the
    variable at the first word that is not one (TensorFlow's ``intra_op_parallelism_threads=N``, say) and silently
    drops every flag after it."""
    cpus = str(max(1, int(cpus)))
    own = [flag for flag in os.environ.get("XLA_FLAGS", "").split() if flag not in XLA_CPU_FLAGS]
    return {
        "OMP_NUM_THREADS": cpus,
        "MKL_NUM_THREADS": cpus,
        "OPENBLAS_NUM_THREADS": cpus,
        "XLA_FLAGS": " ".join([*XLA_CPU_FLAGS, *own]),
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


# Of a fractional GPU share, the part a trial's allocator may pool: the rest stays outside for what every process
# holds besides its pool (the CUDA context and its kernels, cuBLAS/cuDNN workspaces), so that trials packed to a
# whole GPU (4 x 0.25) still all start (docs/platform.md, "GPU shares").
GPU_POOL_OF_SHARE = 0.9


def gpu_share_problem(gpu: float) -> str | None:
    """Why ``gpu`` cannot be one trial's (or worker's) GPU request, or None: Ray packs shares of one GPU (0 < gpu < 1)
    or gives whole GPUs; 1.5 would be one GPU and half of another, which no process can use as one device."""
    if gpu > 1 and gpu != int(gpu):
        return f"got {gpu:g}; allowed: 0 (no GPU), a share of one GPU (0 < gpu < 1), or a whole number of GPUs (1, 2, ...)"
    return None


def gpu_memory_fraction(share: float) -> float | None:
    """The fraction of its GPU's memory a process with a GPU ``share`` may allocate; None for no GPU or whole GPUs
    (then the process is alone on its GPUs and keeps the libraries' defaults)."""
    return round(share * GPU_POOL_OF_SHARE, 4) if 0 < share < 1 else None


def jax_gpu_memory_env(share: float) -> dict[str, str]:
    """The environment that keeps a JAX process with a fractional GPU ``share`` inside it; read by jax when its GPU
    backend starts, so it must be in place before jax is first imported. JAX otherwise preallocates 75 % of the GPU
    per process, so a second trial could not start. Preallocating the share reserves it at start-up: a packing that
    does not fit fails at once, not hours into a sweep when another trial grows. ``XLA_CLIENT_MEM_FRACTION`` is the
    name newer jax reads, ``XLA_PYTHON_CLIENT_MEM_FRACTION`` the pinned jax's (docs/platform.md, "GPU shares")."""
    fraction = gpu_memory_fraction(share)
    if fraction is None:
        return {}
    return {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{fraction:g}", "XLA_CLIENT_MEM_FRACTION": f"{fraction:g}",
            "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}


CONNECT_TIMEOUT_S = 10.0  # how long an unreachable RAY_ADDRESS may take to be reported


def _check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A TCP connection to ``host:port`` (``ray://`` prefix allowed) within ``timeout_s``, else a usage error naming
    it: Ray itself retries an unreachable GCS for a minute and then fails with a traceback."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise UsageError(f"RAY_ADDRESS: cannot reach {address} within {timeout_s:g} s ({error.strerror or error}); "
                         f"allowed: the address of a running Ray cluster, or unset RAY_ADDRESS for an embedded one") from None


_embedded_session: str | None = None  # the node id of the embedded Ray this process started, while it may be up


def serves_state_api() -> bool:
    """Whether the Ray this process is connected to serves Ray's state API (``ray.util.state``), as far as dynagen
    knows: not the embedded one :func:`ensure_ray` starts, whose API server (the dashboard) is not started and whose
    dependencies (``ray[default]``) are not installed; a cluster through ``RAY_ADDRESS`` is taken to serve it."""
    import ray

    return not (_embedded_session is not None and ray.is_initialized() and ray.get_runtime_context().get_node_id() == _embedded_session)


def ensure_ray(needs: Mapping[str, tuple[float, str]] | None = None, quiet: bool = False) -> None:
    """Connect to the cluster named by ``RAY_ADDRESS`` (``ray job submit`` sets it), failing in one line naming the
    address if it cannot be reached; else start a NEW embedded local Ray without the dashboard
    (``address="local"``: a plain ``ray.init()`` would join whatever cluster Ray's ``ray_current_cluster`` file
    names, a stale or another user's one included).

    ``needs``: resource ("CPU", "GPU") -> (amount one run or trial needs at once, the option that sets
    it). An embedded Ray has no autoscaler, so a request larger than this machine would wait forever:
    that is a usage error naming the option. ``quiet``: workers' output is not forwarded to the driver, and
    Ray leaves the driver's logging as platform/console.py set it (to the run's or sweep's log file).
    """
    import ray

    if ray.is_initialized():
        return
    output = {"log_to_driver": False, "configure_logging": False} if quiet else {}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **output)
        except (ConnectionError, TimeoutError, RuntimeError) as error:
            lines = str(error).strip().splitlines() or [type(error).__name__]
            raise UsageError(f"RAY_ADDRESS: cannot connect to {address} ({lines[0][:160]}); "
                             f"allowed: the address of a running Ray cluster, or unset RAY_ADDRESS for an embedded one") from None
        return
    ray.init(address="local", include_dashboard=False, **output)
    global _embedded_session
    _embedded_session = ray.get_runtime_context().get_node_id()
    available = ray.cluster_resources()
    for resource, (needed, option) in (needs or {}).items():
        if needed > available.get(resource, 0):
            ray.shutdown()
            raise UsageError(f"{option}: needs {needed:g} {resource} at once but this machine has {available.get(resource, 0):g}; "
                             f"allowed: at most that, or a cluster through RAY_ADDRESS")
