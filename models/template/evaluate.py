"""Evaluation of a checkpoint: test MSE of the model and of predicting zero."""

from __future__ import annotations

import torch

from dynagen.models.template.data import NOISE, make_dataset
from dynagen.models.template.model import build_model


def evaluate(config, state, out_dir, samples: int | None = None, noise: float | None = None, progress=None) -> dict[str, float]:
    """``progress(phase, done, total)``, if given: the test samples scored so far (docs/platform.md, "Registering an
    experiment"; ``dynagen evaluate`` shows it). A longer evaluation reports after each batch."""
    model = build_model(config)
    model.load_state_dict(state["model"])
    x, y = make_dataset(samples or 512, config.seed + 1, NOISE if noise is None else noise).tensors
    if progress is not None:
        progress("test samples", 0, len(x))
    with torch.no_grad():
        result = {"mse/model": torch.nn.functional.mse_loss(model(x), y).item(), "mse/zero": y.pow(2).mean().item()}
    if progress is not None:
        progress("test samples", len(x), len(x))
    return result
