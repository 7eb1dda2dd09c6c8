"""Whether JAX's persistent compilation cache gives back programs that compute what they computed when compiled, on
this machine's CPU backend: the check behind the cache staying off (README, "Sweep throughput").

Each case is a ``fori_loop`` with a traced trip count, the shape of GAN(TK)²'s generator steps
(models/gantk/flow.py), run in a fresh process that compiles it into an empty cache and then in a second process
that loads it from there; the two results must be equal. Cases: a loop body of elementwise work only, one with a
matrix product and a gradient, one that draws random numbers (threefry, itself a loop on a CPU); each with XLA:CPU's
default thunk runtime and with its older runtime (``--xla_cpu_use_thunk_runtime=false``); and, on the thunk runtime,
the same two failing bodies in a loop whose trip count is fixed when it is compiled.

Measured with jax 0.5.3: under the thunk runtime, the two loops whose body holds more than elementwise work and whose
trip count is traced come back from the cache as no-ops (the second process returns the loop's input unchanged);
with a fixed trip count they come back right. Both kinds stay a ``while`` in the compiled HLO; only the fixed one is
marked ``known_trip_count`` there, so the fault is in loops that count at run time (a ``while_loop`` with the bound in
its carry fails the same way, and so would GAN(TK)²'s data-dependent loops: the Lambert W iteration, the adaptive ODE
solver). The older runtime's are right, but that runtime rounds GAN(TK)²'s steps
differently (other results in the last bits, which the flow amplifies) and, with two cores, runs them about half as
fast. Run from the repository root: ``.venv/bin/python -m benchmarks.jax_cache_check``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

PROGRAM = """
import sys, jax, jax.numpy as jnp
jax.config.update("jax_compilation_cache_dir", sys.argv[2])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
x0 = jnp.arange(16.0).reshape(8, 2) / 8
bodies = {
    "elementwise": lambda i, x: jnp.tanh(x) * 0.9 + 0.1,
    "matmul+grad": lambda i, x: x - 0.1 * jax.grad(lambda x: jnp.tanh(x @ x.T).sum())(x),
    "random": lambda i, x: x + jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(0), i), x.shape),
}
fixed = sys.argv[3] == "fixed"  # the trip count a constant of the compiled program
loop = jax.jit(lambda x, n: jax.lax.fori_loop(0, n, bodies[sys.argv[1]], x), static_argnums=(1,) if fixed else ())
print(repr(float(loop(x0, 5).sum())))
"""

RUNTIMES = {"thunk (default)": "", "older (no thunks)": "--xla_cpu_use_thunk_runtime=false"}
# (runtime, loop body, trip count)
CASES = [(runtime, body, "traced") for runtime in RUNTIMES for body in ("elementwise", "matmul+grad", "random")]
CASES += [("thunk (default)", body, "fixed") for body in ("matmul+grad", "random")]


def run(body: str, trip: str, cache: str, flags: str) -> str:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()}
    return subprocess.run([sys.executable, "-c", PROGRAM, body, cache, trip], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def main() -> None:
    print(f"{'runtime':<18} {'loop body':<12} {'trip count':<10} {'compiled':>20} {'from the cache':>20}  same")
    for runtime, body, trip in CASES:
        with tempfile.TemporaryDirectory(prefix="dynagen-jax-cache-") as cache:
            compiled, cached = (run(body, trip, cache, RUNTIMES[runtime]) for _ in range(2))
        print(f"{runtime:<18} {body:<12} {trip:<10} {compiled:>20} {cached:>20}  {'yes' if compiled == cached else 'NO'}")


if __name__ == "__main__":
    main()
