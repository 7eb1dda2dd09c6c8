"""The training loop on the platform's ``ctx`` (docs/platform.md: steps, checkpoints, what to import)."""

from __future__ import annotations

import math

import torch

from dynagen.models import training_data
from dynagen.models.template.data import make_dataset
from dynagen.models.template.model import build_model
from dynagen.models.torch_training import load_training_state, stop_if_diverged, sync_batchnorm


def train(config, ctx) -> dict[str, float]:
    torch.manual_seed(config.seed)
    model = sync_batchnorm(build_model(config), ctx).to(ctx.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    start = 1  # `step` counts updates: the first is step 1 (docs/platform.md, Steps)
    restored = ctx.restore()
    if restored is not None:
        state, step = restored
        load_training_state(state, model=model, optimiser=optimiser)
        start = step + 1
    core, model = model, ctx.prepare_model(model)
    loader = training_data.train_loader(make_dataset(1024, config.seed), ctx, ctx.local_batch_size(config.batch_size),
                                        config.seed, drop_last=True, num_workers=0)
    metrics: dict[str, float] = {}
    for step, (_, (x, y)) in zip(range(start, config.steps + 1), training_data.epochs(loader, done=start - 1)):
        loss = torch.nn.functional.mse_loss(model(x.to(ctx.device)), y.to(ctx.device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        last = step == config.steps
        if step % config.log_every == 0 or last:
            metrics = {"loss": loss.item()}
            stop_if_diverged(math.isfinite(metrics["loss"]), "template", f"loss {metrics['loss']}", step)
            ctx.report(step, metrics, state=lambda: {"model": core.state_dict(), "optimiser": optimiser.state_dict()},
                       final=last)
    return metrics
