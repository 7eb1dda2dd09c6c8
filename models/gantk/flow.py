"""The particle generator (docs/gantk.md §1.3, §2): x_i ← x_i − η·(1/N)·∇_x ℓ(x_i), one jit-compiled step.

Per generator step: X_b = a copy of the current particles (no gradient flows through it) and Y = the
whole target set; the discriminator is recomputed (infinite width) or trained for ``nb_d_steps``
(finite width, after an optional re-initialisation); then every particle moves down the gradient of
the *mean* generator loss, so each one takes a step η/N·∇ℓ.

With several accelerators the particles are sharded across ``jax.devices()`` (the targets and the
discriminator are replicated); the mean is over all N particles, so a trajectory does not depend on
the device count (the original's pmap used the per-shard mean, i.e. a step η/N_shard).

The targets are an argument of the compiled programs, not a constant baked into them, so all flows
of one configuration (the seeds of a sweep) share their programs, compiled once per process. (Not across
processes: JAX's persistent compilation cache is off, since on jax 0.5.3's CPU backend a loop like ``_advance``
comes back from it as a no-op; benchmarks/jax_cache_check.py.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dynagen.models.gantk.discriminators import GENERATOR_LOSSES, FiniteDiscriminator, InfiniteDiscriminator
from dynagen.models.gantk.kernels import analytic_kernel, kernel_mean

if TYPE_CHECKING:
    from dynagen.models.gantk.experiment import GanNtkConfig


class FlowState(NamedTuple):
    x: jax.Array  # particles [N, *shape]
    key: jax.Array
    d_frozen: Any  # finite discriminator: parameters that are not trained; () at infinite width
    d_opt: Any  # finite discriminator: optimiser state holding the trainable parameters
    d_count: jax.Array  # optimiser step counter (Adam's bias correction)
    gen_loss: jax.Array  # mean ℓ over particles at the last update (−1 before the first, docs/gantk.md §5 `lg`)


def particle_sharding() -> tuple[NamedSharding, NamedSharding] | None:
    """(particles split along axis 0, replicated) over all devices, or None on a single device."""
    devices = jax.devices()
    if len(devices) == 1:
        return None
    mesh = Mesh(np.array(devices), ("particles",))
    return NamedSharding(mesh, PartitionSpec("particles")), NamedSharding(mesh, PartitionSpec())


class FlowPrograms:
    """The jit-compiled generator steps and plot queries of one configuration (everything but the seed and
    the target values, which are arguments), shared by every :class:`ParticleFlow` of that configuration."""

    def __init__(self, config: "GanNtkConfig", target_shape: tuple[int, ...]):
        self.config = config
        self.kernel = analytic_kernel(config)
        self.generator_loss = GENERATOR_LOSSES[config.loss]
        self.sharding = particle_sharding()
        if config.infinite:
            self.discriminator = InfiniteDiscriminator(self.kernel, config.loss, config.t, config.vanilla_solver, config.kernel_block)
        else:
            self.discriminator = FiniteDiscriminator(config, target_shape)
        self.advance = jax.jit(self._advance)  # n_steps is traced: one compilation for any chunk length
        # several seeds of this configuration at once: states and targets stacked along a leading seed axis
        self.advance_seeds = jax.jit(jax.vmap(self._advance, in_axes=(0, None, 0)))
        self.loss_and_grad = jax.jit(self._loss_and_grad)
        kernel, block = self.kernel, config.kernel_block  # MMD² (V-statistic) under the discriminator kernel (docs/gantk.md §5)
        mean = lambda a, b: kernel_mean(kernel, a, b, block)  # noqa: E731
        self.mmd2 = jax.jit(lambda x, y: mean(x, x) + mean(y, y) - 2 * mean(x, y))

    def discriminator_fn(self, state: FlowState, y: jnp.ndarray):
        """q ↦ f(q): the discriminator as it stands for the particles of ``state`` (no training)."""
        if self.config.infinite:
            fitted = self.discriminator.fit(state.x, y)
            return lambda q: self.discriminator(q, fitted)
        trainable = self.discriminator.get_params(state.d_opt)
        return lambda q: self.discriminator.apply(state.d_frozen, trainable, q)

    def step(self, state: FlowState, y: jnp.ndarray) -> FlowState:
        """One generator step."""
        key, frozen, opt, count = state.key, state.d_frozen, state.d_opt, state.d_count
        if not self.config.infinite:
            disc = self.discriminator
            if self.config.reset_d:  # fresh draw (f = 0 again if antisymmetric) and optimiser state
                key, init_key = jax.random.split(key)
                frozen, trainable = disc.init(init_key)
                opt, count = disc.opt_init(trainable), jnp.zeros((), jnp.int32)
            opt, count = disc.train(frozen, opt, count, jax.lax.stop_gradient(state.x), y)
        state = state._replace(key=key, d_frozen=frozen, d_opt=opt, d_count=count)
        f = self.discriminator_fn(state, y)
        mean_loss, grad = jax.value_and_grad(lambda x: self.generator_loss(f(x)).mean())(state.x)
        x = state.x - self.config.lr * grad
        if self.sharding:
            x = jax.lax.with_sharding_constraint(x, self.sharding[0])
        return state._replace(x=x, gen_loss=mean_loss)

    def _advance(self, state: FlowState, n_steps: int | jax.Array, y: jnp.ndarray) -> FlowState:
        return jax.lax.fori_loop(0, n_steps, lambda _, s: self.step(s, y), state)

    def _loss_and_grad(self, state: FlowState, query: jnp.ndarray, y: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Per-point ℓ(q) and ∇ℓ(q) under the current discriminator (plots: heat map and −∇ℓ arrows)."""
        f = self.discriminator_fn(state, y)
        per_point = lambda q: self.generator_loss(f(q))  # noqa: E731
        return per_point(query), jax.grad(lambda q: per_point(q).sum())(query)


_PROGRAMS: dict[tuple, FlowPrograms] = {}  # this process's, by configuration: a reused trial process keeps them


def flow_programs(config: "GanNtkConfig", target_shape: tuple[int, ...]) -> FlowPrograms:
    # The seed only draws the particles, targets and initial parameters, all arguments of the programs.
    key = (config.model_dump_json(exclude={"seed"}), tuple(target_shape))
    if key not in _PROGRAMS:
        _PROGRAMS[key] = FlowPrograms(config, tuple(target_shape))
    return _PROGRAMS[key]


# A group's seeds advance as one vmapped program on an accelerator, where steps of a few hundred particles are
# launch-bound and one program does the work of all seeds. On a CPU only past this many seed-steps: measured on a
# 2-core x86-64 CPU at N = M = 128, relu width 128 (benchmarks/sweep.py, make gpu-check's gan-ntk-seeds), vmapping
# made the steps 0-20 % faster for 2 seeds and 26 % for 8, and compiled the step program 1.5-2x longer (~1.5 s more),
# which a few thousand seed-steps of ~5 ms win back; make demo's groups (2 seeds x 300 steps) go seed by seed.
CPU_VECTORISED_FROM_SEED_STEPS = 5000


def vectorise_seeds(backend: str, seeds: int, steps: int) -> bool:
    """Whether ``seeds`` flows of ``steps`` generator steps each advance as one vmapped program on ``backend``."""
    return seeds > 1 and (backend != "cpu" or seeds * steps >= CPU_VECTORISED_FROM_SEED_STEPS)


class SeedFlows:
    """The flows of several seeds of one configuration (nothing couples the seeds: each trajectory is its own).
    ``vectorised`` (with more than one seed): their states stacked along a leading seed axis and advanced by one
    vmapped program, which gives the same particles as the per-seed program (tests/test_gantk_flow.py) although
    some reductions (the RBF kernel's mean loss) may round differently in the last bit; else a state per seed,
    advanced seed by seed through the per-seed program, bit for bit what a run of its own computes (a single seed
    always is, with no stacking on its path)."""

    def __init__(self, flows: "list[ParticleFlow]", states: list[FlowState], vectorised: bool):
        self.flows, self.vectorised = flows, vectorised and len(flows) > 1
        if self.vectorised:
            self._stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states)
            self._y = jnp.stack([flow.y for flow in flows])
        else:
            self._states = list(states)

    def seed(self, index: int) -> FlowState:
        if self.vectorised:
            return jax.tree_util.tree_map(lambda leaf: leaf[index], self._stacked)
        return self._states[index]

    def advance(self, n_steps: int) -> Any:
        """Every seed ``n_steps`` further; returns the new states (dispatched: ``jax.block_until_ready`` waits)."""
        if self.vectorised:
            self._stacked = self.flows[0].programs.advance_seeds(self._stacked, n_steps, self._y)
            return self._stacked
        self._states = [flow.advance(state, n_steps) for flow, state in zip(self.flows, self._states)]
        return self._states


class ParticleFlow:
    """The flow of one run: its targets and the programs of its configuration."""

    def __init__(self, config: "GanNtkConfig", targets: jnp.ndarray):
        self.config = config
        self.programs = flow_programs(config, targets.shape[1:])
        self.kernel, self.discriminator, self.sharding = self.programs.kernel, self.programs.discriminator, self.programs.sharding
        self.y = jax.device_put(targets, self.sharding[1]) if self.sharding else jnp.asarray(targets)

    def advance(self, state: FlowState, n_steps: int) -> FlowState:
        return self.programs.advance(state, n_steps, self.y)

    def loss_and_grad(self, state: FlowState, query: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        return self.programs.loss_and_grad(state, query, self.y)

    def init(self, x0: np.ndarray, key: jax.Array) -> FlowState:
        x = jnp.asarray(x0, dtype=self.y.dtype)
        if self.sharding:
            if x.shape[0] % len(jax.devices()):
                raise ValueError(f"n_particles: {x.shape[0]} is not divisible by the {len(jax.devices())} devices")
            x = jax.device_put(x, self.sharding[0])
        key, d_key = jax.random.split(key)
        frozen, opt, count = (), (), jnp.zeros((), jnp.int32)
        if not self.config.infinite:
            frozen, trainable = self.discriminator.init(d_key)
            opt = self.discriminator.opt_init(trainable)
        return FlowState(x, key, frozen, opt, count, jnp.array(-1.0, x.dtype))
