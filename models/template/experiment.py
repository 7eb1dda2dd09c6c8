"""The template experiment: copy this folder to add a model (docs/platform.md, "Adding a model").

``experiment.py`` imports only pydantic: it declares the config, the presets, and names the train and
evaluate functions (imported on first call) with their typed evaluate options. Register the copy with
one line in pyproject.toml under ``[project.entry-points."dynagen.experiments"]``.
"""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from dynagen.platform.registry import EvaluateOptions, Experiment, ExperimentConfig


class TemplateConfig(ExperimentConfig):
    steps: int = Field(200, ge=1, description="optimisation updates")
    log_every: int = Field(20, ge=1)
    lr: float = Field(0.1, gt=0)
    batch_size: int = Field(64, ge=1, description="global, split across workers")
    hidden: int = Field(32, ge=1)


class TemplateEvaluateOptions(EvaluateOptions):
    noise: Optional[float] = Field(None, ge=0, description="observation noise of the test set (default: the training one)")


EXPERIMENT = Experiment(
    name="template",
    config=TemplateConfig,
    train="dynagen.models.template.train:train",
    evaluate="dynagen.models.template.evaluate:evaluate",
    evaluate_options=TemplateEvaluateOptions,
    presets={"cpu": {"steps": 60, "log_every": 10}},
    backend="torch",
    description="template: a small MLP fitting y = sin(x) (copy this folder to add a model)",
    metrics=("loss",),  # every name train() reports: a sweep's metric must be one of them
    checkpoint_keys=("model",),  # what evaluate reads from a checkpoint
)
