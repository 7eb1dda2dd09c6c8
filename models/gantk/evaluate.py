"""Evaluation of a gan-ntk checkpoint (docs/gantk.md §5): final particles vs the targets, the initial particles as
a baseline, and a figure of the final state."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dynagen.models.gantk import metrics
from dynagen.models.gantk.experiment import GanNtkConfig
from dynagen.models.gantk.flow import ParticleFlow
from dynagen.models.gantk.targets import make_problem
from dynagen.models.gantk.train import Evaluator, _dtype, figure, restore


def evaluate(config: GanNtkConfig, state: Mapping[str, Any], out_dir, samples: int | None = None) -> dict[str, float]:
    """Final particles vs targets (and, as a baseline, the initial particles); with ``samples`` also
    against a fresh target sample drawn with another seed (generated targets only)."""
    dtype = _dtype(config)
    particles = np.asarray(state["particles"], dtype)
    source, targets = np.asarray(state["source"], dtype), np.asarray(state["targets"], dtype)
    evaluate = Evaluator(config, targets, dtype)
    result = {f"{name}/particles": value for name, value in evaluate(particles).items()}
    result |= {f"{name}/source": value for name, value in evaluate(source).items()}
    if samples and config.target in ("eight_gaussians", "ring", "image_density"):
        fresh_config = config.model_copy(update={"seed": config.seed + 1, "n_targets": int(samples)})
        fresh = make_problem(fresh_config)[1]
        result["sinkhorn/fresh_targets"] = metrics.sinkhorn(particles, fresh, config.sinkhorn_blur)
        result["energy/fresh_targets"] = metrics.energy(particles, fresh)
    flow = ParticleFlow(config, jnp.asarray(targets))
    flow_state = restore(flow.init(source, jax.random.PRNGKey(config.seed)), state, flow)
    figure(flow, flow_state, targets, Path(out_dir) / "particles.png", f"{config.arch} loss={config.loss} final")
    return result
