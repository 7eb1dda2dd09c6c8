"""Training loop and evaluation of the gan-ntk experiment (docs/gantk.md §1.3 per-step order, §5 logging).

Every ``log_every`` generator steps (and once after the last step) the particles X_b and targets Y are
evaluated *before* that step's update: Sinkhorn divergence, energy distance, MMD² under the
discriminator kernel, the generator loss of the previous update; PNG figures at the first and last
log steps (and every ``plot_every``), particle snapshots ``particles/x_{step:08d}.npz``. The
checkpoint reported with step s holds the state after update s, so a resumed run continues at s + 1;
the final one (step = ``steps``) holds x_steps, and a run resumed with more steps continues from there.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dynagen.models.artifacts import save_npz
from dynagen.models.gantk import metrics, plots
from dynagen.models.gantk.experiment import GanNtkConfig
from dynagen.models.gantk.flow import FlowState, ParticleFlow, SeedFlows, flow_programs, vectorise_seeds
from dynagen.models.gantk.targets import make_problem
from dynagen.platform.context import Diverged

NTK_CHECK_POINTS = 32  # particles (and as many targets) on which the empirical NTK is compared at init

# JAX's monitoring events for the work that is compilation, not computation, by the phase they count as: ``trace``,
# tracing to a jaxpr and lowering it to MLIR (Python work that every process does again, compilation cache or not),
# and ``compile``, XLA's compilation (or a fetch from JAX's persistent compilation cache).
COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "trace",
    "/jax/core/compile/backend_compile_duration": "compile",
}
# (phase, start, end) of each such event since the latest Timings phase began (one listener per process). Spans, not
# a sum of durations: a function's trace holds the traces of the jitted functions it calls, whose events nest in it
# (a sum counted 1.41 s of tracing in 0.99 s of a width-128 run's wall time).
_compile_spans: list[tuple[str, float, float]] = []


def _count_compilation(event: str, duration: float, **_: Any) -> None:
    if event in COMPILE_EVENTS:
        end = time.perf_counter()
        _compile_spans.append((COMPILE_EVENTS[event], end - duration, end))


jax.monitoring.register_event_duration_secs_listener(_count_compilation)


def covered_seconds(spans: list[tuple[float, float]], start: float, end: float) -> float:
    """How much of [start, end] the union of the (start, end) ``spans`` covers."""
    total, reached = 0.0, start
    for span_start, span_end in sorted(spans):
        span_start, span_end = max(span_start, reached), min(span_end, end)
        if span_end > span_start:
            total, reached = total + span_end - span_start, span_end
    return total


class Timings:
    """Where a run's seconds go, for its summary row (``time/<phase>``): each phase is timed with
    ``with timings("steps"):`` (phases do not nest), and the tracing and compilation inside it are counted as
    ``trace`` and ``compile`` instead (an XLA compilation inside a trace as tracing)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str):
        _compile_spans.clear()
        start = time.perf_counter()
        try:
            yield
        finally:
            end = time.perf_counter()
            traced = covered_seconds([(s, e) for kind, s, e in _compile_spans if kind == "trace"], start, end)
            not_computing = covered_seconds([(s, e) for _, s, e in _compile_spans], start, end)
            self.seconds["trace"] += traced
            self.seconds["compile"] += not_computing - traced
            self.seconds[phase] += end - start - not_computing

    def row(self) -> dict[str, float]:
        return {f"time/{phase}": seconds for phase, seconds in self.seconds.items()}


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
        self.config, self.targets = config, targets
        self._mmd2 = flow_programs(config, targets.shape[1:]).mmd2
        self._y = jnp.asarray(targets, dtype)

    def __call__(self, particles) -> dict[str, float]:
        x = np.asarray(particles)
        return {
            "sinkhorn": metrics.sinkhorn(x, self.targets, self.config.sinkhorn_blur),
            "energy": metrics.energy(x, self.targets),
            "mmd2": float(self._mmd2(jnp.asarray(x, self._y.dtype), self._y)),
        }


def train(config: GanNtkConfig, ctx) -> dict[str, float]:
    """The run of docs/gantk.md §1.3 / §5 (one seed: :func:`train_seeds` of one); its result carries
    ``time/<phase>`` seconds (:class:`Timings`)."""
    return train_seeds([config], [ctx])[0]


def train_seeds(configs: list[GanNtkConfig], ctxs: list) -> list[dict[str, float] | None]:
    """The runs of one configuration at several seeds (``configs`` differ in ``seed`` only), their generator steps
    as one vmapped program where that pays (:func:`~dynagen.models.gantk.flow.vectorise_seeds`); metrics, figures and
    snapshots per seed, each in its own context. A seed whose particles become non-finite ends alone (``ctx.diverge``; None in
    the result). Each result's ``time/<phase>`` seconds are its share of the group's (the group's / its seeds)."""
    timings, config = Timings(), configs[0]
    with timings("setup"):
        dtype = _dtype(config)
        problems = [tuple(array.astype(dtype) for array in make_problem(c)) for c in configs]  # (source, targets)
        flows = [ParticleFlow(c, jnp.asarray(targets)) for c, (_, targets) in zip(configs, problems)]
        states = [flow.init(source, jax.random.PRNGKey(c.seed)) for flow, c, (source, _) in zip(flows, configs, problems)]
        evaluators = [Evaluator(c, targets, dtype) for c, (_, targets) in zip(configs, problems)]
    extras: list[dict[str, float]] = [{} for _ in configs]
    if not config.infinite:  # the discriminator at init, before any restore or reset
        with timings("metrics"):
            for extra, flow, state, (_, targets) in zip(extras, flows, states, problems):
                extra["ntk_rel_error"] = ntk_relative_error(flow, state, targets)

    start = 0
    with timings("io"):
        restored = [ctx.restore() for ctx in ctxs]
    for index, saved_step in enumerate(restored):
        if saved_step is not None:
            saved, last_step = saved_step  # after a final report the state is x_steps: resume there, not at steps + 1
            states[index], start = restore(states[index], saved, flows[index]), int(saved.get("next_update", last_step + 1))
    seeds = SeedFlows(flows, states, vectorised=vectorise_seeds(jax.default_backend(), len(configs), config.steps - start))
    resumed = any(saved_step is not None for saved_step in restored)
    running = [index for index, saved_step in enumerate(restored) if saved_step is not None or not resumed]  # a resumed
    # group's checkpoint holds the seeds still running then; one that had diverged stays ended (platform/context.py)

    def advance(n_steps: int) -> None:
        with timings("steps"):  # waits for the result: asynchronous dispatch would hide the steps in the next phase
            jax.block_until_ready(seeds.advance(n_steps))

    def log(index: int, step: int, final: bool = False) -> dict[str, float] | None:
        """Seed ``index``'s row at ``step`` (None, and its run ended, if its particles are no longer finite)."""
        c, ctx, flow, (_, targets), state = configs[index], ctxs[index], flows[index], problems[index], seeds.seed(index)
        if not np.isfinite(np.asarray(state.x)).all():  # before any metric sees them (geomloss fails on them)
            running.remove(index)
            ctx.diverge(Diverged(f"particles non-finite at step {step}", step))
            return None
        with timings("metrics"):
            row = {**evaluators[index](state.x), "gen_loss": float(state.gen_loss), **extras[index]}
        if ctx.is_main:
            plot_due = final or step == 0 or (c.plot_every and step % c.plot_every == 0)
            if plot_due:
                title = f"{c.arch} loss={c.loss} width={c.width or '∞'} step {step}"
                with timings("plots"):
                    image = figure(flow, state, targets, ctx.run_dir / "plots" / f"flow_{step:08d}.png", title)
                if image is not None:
                    with timings("io"):
                        ctx.log_images(step, "flow", image)
            if final or (c.save_every and step % c.save_every == 0):
                with timings("io"):
                    save_npz(ctx.run_dir / "particles" / f"x_{step:08d}.npz", x=np.asarray(state.x))
        return row

    def report(index: int, step: int, row: dict[str, float], next_update: int, final: bool = False) -> None:
        source, targets = problems[index]
        with timings("io"):
            ctxs[index].report(step, row, state=lambda: checkpoint(seeds.seed(index), next_update, source, targets), final=final)

    step = start
    while step < config.steps and running:
        rows = {index: log(index, step) for index in list(running)} if step % config.log_every == 0 else {}
        advance(1)
        for index, row in rows.items():
            if row is not None:
                report(index, step, row, step + 1)
        next_log = min((step // config.log_every + 1) * config.log_every, config.steps)
        if next_log - step - 1 > 0:
            advance(next_log - step - 1)
        step = next_log
    finals: list[dict[str, float] | None] = [None] * len(configs)
    for index in list(running):
        finals[index] = log(index, config.steps, final=True)
        if finals[index] is not None:
            report(index, config.steps, finals[index], config.steps, final=True)
    share = {key: seconds / len(configs) for key, seconds in timings.row().items()}
    return [None if final is None else {**final, **share} for final in finals]
