"""GAN(TK)² speed: time per generator step against the number of particles N (= targets M) for the
infinite-width IPM and LSGAN discriminators and a finite one (width 128, 1 SGD step), with peak memory.

Runs on whatever ``jax.devices()`` offers (GPU when present, with several accelerators the particles
are sharded). Prints one table. Past ``kernel_block`` (4096) points the infinite discriminators compute
their kernel products in blocks, so memory grows with N, not N·(N+M). On a CPU inf_lsgan stops at
N = 2000: it eigendecomposes the (2N)×(2N) kernel matrix every step (minutes per step at 10,000); pass
``--sizes``/``--losses`` to choose.

    python -m benchmarks.gan_ntk [--sizes 500 1000 2000 4000 10000] [--steps 3]
"""

from __future__ import annotations

import argparse
import resource
import time

import jax
import numpy as np

from dynagen.models.gantk.experiment import GanNtkConfig
from dynagen.models.gantk.flow import ParticleFlow
from dynagen.models.gantk.targets import ring

SETTINGS = {
    "inf_ipm": {"loss": "ipm", "width": 0},
    "inf_lsgan": {"loss": "lsgan", "width": 0},
    "finite_w128": {"loss": "ipm", "width": 128, "nb_d_steps": 1, "reset_d": False},
}
CPU_LIMITS = {"inf_ipm": 10_000, "inf_lsgan": 2000, "finite_w128": 10_000}  # larger N takes minutes per step on CPU


def peak_memory_mb() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:  # accelerator memory
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # host: process max RSS (KiB → MiB)


def time_step(setting: str, n: int, steps: int) -> tuple[float, float, float]:
    config = GanNtkConfig(arch="relu", lr=2.0 * n, t=1.0, n_particles=n, n_targets=n, **SETTINGS[setting])
    rng = np.random.default_rng(0)
    flow = ParticleFlow(config, ring(n, 8, 5.0, 0.5, rng).astype(np.float32))
    state = flow.init(rng.standard_normal((n, 2)).astype(np.float32), jax.random.PRNGKey(0))
    start = time.perf_counter()
    state = flow.advance(state, 1)
    state.x.block_until_ready()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    state = flow.advance(state, steps)
    state.x.block_until_ready()
    return (time.perf_counter() - start) / steps * 1e3, compile_s, peak_memory_mb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 4000, 10_000])
    parser.add_argument("--losses", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after one warm-up)")
    args = parser.parse_args()
    on_cpu = jax.default_backend() == "cpu"
    print(f"devices: {jax.devices()}  (float32, eight_gaussians, 3-layer ReLU NTK, N = M)")
    print(f"{'discriminator':<13} {'N':>6} {'ms/step':>10} {'compile s':>10} {'peak MiB':>10} {'one N×2N MiB':>13}")
    for setting in args.losses:
        for n in args.sizes:
            if on_cpu and n > CPU_LIMITS[setting]:
                print(f"{setting:<13} {n:>6} {'skipped on CPU (minutes per step)':>32}")
                continue
            ms, compile_s, peak = time_step(setting, n, args.steps)
            matrix = n * 2 * n * 4 / 2**20  # one float32 kernel matrix k(X, Z), what a step would hold unbatched
            print(f"{setting:<13} {n:>6} {ms:>10.1f} {compile_s:>10.1f} {peak:>10.0f} {matrix:>13.0f}", flush=True)


if __name__ == "__main__":
    main()
