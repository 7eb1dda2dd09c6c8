"""The particle generator (docs/gantk.md §1.3, §2): x_i ← x_i − η·(1/N)·∇_x ℓ(x_i), one jit-compiled step.

Per generator step: X_b = a copy of the current particles (no gradient flows through it) and Y = the
whole target set; the discriminator is recomputed (infinite width) or trained for ``nb_d_steps``
(finite width, after an optional re-initialisation); then every particle moves down the gradient of
the *mean* generator loss, so each one takes a step η/N·∇ℓ.

With several accelerators the particles are sharded across ``jax.devices()`` (the targets and the
discriminator are replicated); the mean is over all N particles, so a trajectory does not depend on
the device count (the original's pmap used the per-shard mean, i.e. a step η/N_shard).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dynagen.models.gantk.discriminators import GENERATOR_LOSSES, FiniteDiscriminator, InfiniteDiscriminator
from dynagen.models.gantk.kernels import analytic_kernel

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


class ParticleFlow:
    def __init__(self, config: "GanNtkConfig", targets: jnp.ndarray):
        self.config = config
        self.kernel = analytic_kernel(config)
        self.generator_loss = GENERATOR_LOSSES[config.loss]
        self.sharding = particle_sharding()
        self.y = jax.device_put(targets, self.sharding[1]) if self.sharding else jnp.asarray(targets)
        if config.infinite:
            self.discriminator = InfiniteDiscriminator(self.kernel, config.loss, config.t, config.vanilla_solver)
        else:
            self.discriminator = FiniteDiscriminator(config, targets.shape[1:])
        self.advance = jax.jit(self._advance)  # n_steps is traced: one compilation for any chunk length
        self.loss_and_grad = jax.jit(self._loss_and_grad)

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

    def discriminator_fn(self, state: FlowState):
        """q ↦ f(q): the discriminator as it stands for the particles of ``state`` (no training)."""
        if self.config.infinite:
            fitted = self.discriminator.fit(state.x, self.y)
            return lambda q: self.discriminator(q, fitted)
        trainable = self.discriminator.get_params(state.d_opt)
        return lambda q: self.discriminator.apply(state.d_frozen, trainable, q)

    def step(self, state: FlowState) -> FlowState:
        """One generator step."""
        key, frozen, opt, count = state.key, state.d_frozen, state.d_opt, state.d_count
        if not self.config.infinite:
            disc = self.discriminator
            if self.config.reset_d:  # fresh draw (f = 0 again if antisymmetric) and optimiser state
                key, init_key = jax.random.split(key)
                frozen, trainable = disc.init(init_key)
                opt, count = disc.opt_init(trainable), jnp.zeros((), jnp.int32)
            opt, count = disc.train(frozen, opt, count, jax.lax.stop_gradient(state.x), self.y)
        state = state._replace(key=key, d_frozen=frozen, d_opt=opt, d_count=count)
        f = self.discriminator_fn(state)
        mean_loss, grad = jax.value_and_grad(lambda x: self.generator_loss(f(x)).mean())(state.x)
        x = state.x - self.config.lr * grad
        if self.sharding:
            x = jax.lax.with_sharding_constraint(x, self.sharding[0])
        return state._replace(x=x, gen_loss=mean_loss)

    def _advance(self, state: FlowState, n_steps: int | jax.Array) -> FlowState:
        return jax.lax.fori_loop(0, n_steps, lambda _, s: self.step(s), state)

    def _loss_and_grad(self, state: FlowState, query: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Per-point ℓ(q) and ∇ℓ(q) under the current discriminator (plots: heat map and −∇ℓ arrows)."""
        f = self.discriminator_fn(state)
        per_point = lambda q: self.generator_loss(f(q))  # noqa: E731
        return per_point(query), jax.grad(lambda q: per_point(q).sum())(query)
