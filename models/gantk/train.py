"""Training loop and evaluation of the gan-ntk experiment (docs/gantk.md §1.3 per-step order, §5 logging).

Every ``log_every`` generator steps (and once after the last step) the particles X_b and targets Y are
evaluated *before* that step's update: Sinkhorn divergence, energy distance, MMD² under the
discriminator kernel, the generator loss of the previous update; PNG figures at the first and last
log steps (and every ``plot_every``), particle snapshots ``particles/x_{step:08d}.npz``. The
checkpoint reported with step s holds the state after update s, so a resumed run continues at s + 1;
the final one (step = ``steps``) holds x_steps, and a run resumed with more steps continues from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dynagen.models.artifacts import save_npz
from dynagen.models.gantk import metrics, plots
from dynagen.models.gantk.experiment import GanNtkConfig
from dynagen.models.gantk.flow import FlowState, ParticleFlow
from dynagen.models.gantk.kernels import analytic_kernel
from dynagen.models.gantk.targets import make_problem
from dynagen.platform.context import Diverged

NTK_CHECK_POINTS = 32  # particles (and as many targets) on which the empirical NTK is compared at init


def _dtype(config: GanNtkConfig):
    if config.precision == "float64":
        jax.config.update("jax_enable_x64", True)
        return np.float64
    return np.float32


def checkpoint(state: FlowState, next_update: int, source: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """Everything needed to resume (and to evaluate) as numpy arrays; ``next_update`` is the index of
    the first generator update not yet applied to ``state``."""
    leaves = lambda tree: [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]  # noqa: E731
    return {
        "particles": np.asarray(state.x), "key": np.asarray(state.key), "d_frozen": leaves(state.d_frozen),
        "d_opt": leaves(state.d_opt), "d_count": int(state.d_count), "gen_loss": float(state.gen_loss),
        "next_update": next_update, "source": source, "targets": targets,
    }


def restore(template: FlowState, saved: Mapping[str, Any], flow: ParticleFlow) -> FlowState:
    """``saved``: :func:`checkpoint`'s dict, its arrays as numpy arrays or as the torch tensors a checkpoint file
    stores them as (docs/platform.md, "Checkpoints")."""
    def tree(like, leaves):
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), [jnp.asarray(np.asarray(a)) for a in leaves])

    x = jnp.asarray(np.asarray(saved["particles"]), template.x.dtype)
    if flow.sharding:
        x = jax.device_put(x, flow.sharding[0])
    return template._replace(
        x=x, key=jnp.asarray(np.asarray(saved["key"])), d_frozen=tree(template.d_frozen, saved["d_frozen"]),
        d_opt=tree(template.d_opt, saved["d_opt"]), d_count=jnp.asarray(saved["d_count"], jnp.int32),
        gen_loss=jnp.asarray(saved["gen_loss"], template.gen_loss.dtype),
    )


def ntk_relative_error(flow: ParticleFlow, state: FlowState, targets: np.ndarray) -> float:
    """‖Θ̂ − Θ‖_F / ‖Θ‖_F between the finite discriminator's empirical kernel and the analytic one (docs/gantk.md §8.12)."""
    points = jnp.concatenate([state.x[:NTK_CHECK_POINTS], jnp.asarray(targets[:NTK_CHECK_POINTS], state.x.dtype)])
    trainable = flow.discriminator.get_params(state.d_opt)
    empirical = flow.discriminator.empirical_kernel(state.d_frozen, trainable, points, points)
    analytic = flow.kernel(points, points)
    return float(jnp.linalg.norm(empirical - analytic) / jnp.linalg.norm(analytic))


def figure(flow: ParticleFlow, state: FlowState, targets: np.ndarray, path: Path, title: str) -> np.ndarray | None:
    """The 2-D / 1-D / image figure of the current state (None for other inputs)."""
    x = np.asarray(state.x)
    if x.ndim == 2 and x.shape[1] == 2:
        grid = plots.grid_2d(x, targets)
        loss, grad = flow.loss_and_grad(state, jnp.concatenate([jnp.asarray(grid, state.x.dtype), state.x]))
        return plots.flow_2d(path, x, targets, grid, np.asarray(loss[: len(grid)]), np.asarray(grad[len(grid) :]), title)
    if x.ndim == 2 and x.shape[1] == 1:
        line = plots.grid_2d(np.c_[x, x], np.c_[targets, targets], n=200)[:200, :1]
        line_loss, _ = flow.loss_and_grad(state, jnp.asarray(line, state.x.dtype))
        return plots.flow_1d(path, x, targets, line, np.asarray(line_loss), title)
    if x.ndim == 4:
        return plots.image_row(path, x, title=title)
    return None


class Evaluator:
    """Metrics of docs/gantk.md §5 on the particles vs the targets."""

    def __init__(self, config: GanNtkConfig, targets: np.ndarray, dtype):
        kernel = analytic_kernel(config)
        self.config, self.targets = config, targets
        self._mmd2 = jax.jit(lambda x, y: kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean())
        self._y = jnp.asarray(targets, dtype)

    def __call__(self, particles) -> dict[str, float]:
        x = np.asarray(particles)
        return {
            "sinkhorn": metrics.sinkhorn(x, self.targets, self.config.sinkhorn_blur),
            "energy": metrics.energy(x, self.targets),
            "mmd2": float(self._mmd2(jnp.asarray(x, self._y.dtype), self._y)),
        }


def train(config: GanNtkConfig, ctx) -> dict[str, float]:
    dtype = _dtype(config)
    source, targets = make_problem(config)
    source, targets = source.astype(dtype), targets.astype(dtype)
    flow = ParticleFlow(config, jnp.asarray(targets))
    state = flow.init(source, jax.random.PRNGKey(config.seed))
    evaluate = Evaluator(config, targets, dtype)
    extra: dict[str, float] = {}
    if not config.infinite:  # the discriminator at init, before any restore or reset
        extra["ntk_rel_error"] = ntk_relative_error(flow, state, targets)

    start = 0
    restored = ctx.restore()
    if restored is not None:
        saved, last_step = restored  # after a final report the state is x_steps: resume there, not at steps + 1
        state, start = restore(state, saved, flow), int(saved.get("next_update", last_step + 1))

    def log(step: int, final: bool = False) -> dict[str, float]:
        if not np.isfinite(np.asarray(state.x)).all():  # before any metric sees them (geomloss fails on them)
            raise Diverged(f"particles non-finite at step {step}", step)
        row = {**evaluate(state.x), "gen_loss": float(state.gen_loss), **extra}
        if ctx.is_main:
            plot_due = final or step == 0 or (config.plot_every and step % config.plot_every == 0)
            if plot_due:
                title = f"{config.arch} loss={config.loss} width={config.width or '∞'} step {step}"
                image = figure(flow, state, targets, ctx.run_dir / "plots" / f"flow_{step:08d}.png", title)
                if image is not None:
                    ctx.log_images(step, "flow", image)
            if final or (config.save_every and step % config.save_every == 0):
                save_npz(ctx.run_dir / "particles" / f"x_{step:08d}.npz", x=np.asarray(state.x))
        return row

    step = start
    while step < config.steps:
        row = log(step) if step % config.log_every == 0 else None
        state = flow.advance(state, 1)
        if row is not None:
            ctx.report(step, row, state=lambda: checkpoint(state, step + 1, source, targets))
        next_log = min((step // config.log_every + 1) * config.log_every, config.steps)
        if next_log - step - 1 > 0:
            state = flow.advance(state, next_log - step - 1)
        step = next_log
    final = log(config.steps, final=True)
    ctx.report(config.steps, final, state=lambda: checkpoint(state, config.steps, source, targets), final=True)
    return final
