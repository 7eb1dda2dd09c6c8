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
from dynagen.models.manifest import arrays_sha256, library_versions


def evaluate(config: GanNtkConfig, state: Mapping[str, Any], out_dir, samples: int | None = None,
             progress=None) -> dict[str, Any]:
    """Final particles vs targets (and, as a baseline, the initial particles); with ``samples`` also
    against a fresh target sample drawn with another seed (generated targets only). With the manifest of
    what was scored and how. ``progress(phase, done, total)``: the particle sets scored, then the figure
    (docs/platform.md, "Registering an experiment"; ``dynagen evaluate`` shows it)."""
    dtype = _dtype(config)
    particles = np.asarray(state["particles"], dtype)
    source, targets = np.asarray(state["source"], dtype), np.asarray(state["targets"], dtype)
    fresh_targets = bool(samples) and config.target in ("eight_gaussians", "ring", "image_density")
    report, total = progress or (lambda phase, done, total: None), 3 + int(fresh_targets)  # particles, source, [fresh], figure
    report("evaluation", 0, total)
    evaluate = Evaluator(config, targets, dtype)
    result = {f"{name}/particles": value for name, value in evaluate(particles).items()}
    report("evaluation", 1, total)
    result |= {f"{name}/source": value for name, value in evaluate(source).items()}
    report("evaluation", 2, total)
    if fresh_targets:
        fresh_config = config.model_copy(update={"seed": config.seed + 1, "n_targets": int(samples)})
        fresh = make_problem(fresh_config)[1]
        result["sinkhorn/fresh_targets"] = metrics.sinkhorn(particles, fresh, config.sinkhorn_blur)
        result["energy/fresh_targets"] = metrics.energy(particles, fresh)
        report("evaluation", 3, total)
    flow = ParticleFlow(config, jnp.asarray(targets))
    flow_state = restore(flow.init(source, jax.random.PRNGKey(config.seed)), state, flow)
    figure(flow, flow_state, targets, Path(out_dir) / "particles.png", f"{config.arch} loss={config.loss} final")
    report("evaluation", total, total)
    result["manifest"] = {
        "test_set": {"target": config.target, "n_targets": config.n_targets, "seed": config.seed,
                     "sha256": arrays_sha256([np.asarray(state["targets"])]),
                     "fresh_targets": None if not samples else {"seed": config.seed + 1, "n": int(samples)}},
        "samples": {"n": config.n_particles, "best_of_n": "none: every particle"},
        "metrics": {"sinkhorn": f"geomloss SamplesLoss('sinkhorn', p=2, blur={config.sinkhorn_blur}, scaling=0.95), float32",
                    "energy": "geomloss SamplesLoss('energy'): E|x-y| - E|x-x'|/2 - E|y-y'|/2 (V-statistics)",
                    "mmd2": f"analytic {config.kernel} kernel of the discriminator, V-statistics"},
        "versions": library_versions("jax", "neural-tangents", "geomloss", "torch"),
    }
    return result
