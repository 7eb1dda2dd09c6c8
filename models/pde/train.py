"""The training loop (docs/pde.md §3): Adam, one t′ per batch, MultiStepLR stepped per epoch, no clipping.

Runs unchanged in-process (``LocalContext``) and in Ray Train workers (DDP through ``ctx``). Every rank
reports on the same steps; rank 0 writes the prediction images. Loss terms are summed on the device and read
back only at logging steps, so a GPU step does not wait for the host.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from dynagen.models import training_data
from dynagen.models.pde.data import make_dataset
from dynagen.models.pde.experiment import PDEConfig, steps_for
from dynagen.models.pde.loss import draw_ae_time, separable_losses, total_loss
from dynagen.models.pde.model import SeparableNetwork, build_model
from dynagen.models.pde import visualize
from dynagen.models.torch_training import load_training_state, stop_if_diverged, sync_batchnorm


def unwrap(model) -> SeparableNetwork:
    return getattr(model, "module", model)


def loss_weights(config: PDEConfig) -> dict[str, float]:
    return {
        "ae": config.lambda_ae,
        "s": config.lambda_s,
        "pred": config.lambda_pred,
        "t": 0.0 if config.no_s else config.lambda_t,  # docs/pde.md §1.5: the no-S ablation drops L_T
    }


def lr_at(config: PDEConfig, epoch: int) -> float:
    """MultiStepLR(milestones, gamma) after ``epoch`` scheduler steps."""
    return config.lr * config.lr_decay ** sum(epoch >= m for m in config.lr_milestones)


def log_predictions(model: SeparableNetwork, config: PDEConfig, batch, ctx, step: int) -> None:
    """Rank 0: a PNG grid (and TensorBoard image) of forecasts on fixed training windows, and in TensorBoard the
    truth against the prediction as an image sequence (one image per time step)."""
    cond, target = (t.to(ctx.device) for t in batch)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = model.predict(cond, target.shape[1])
    model.train(was_training)
    grid = visualize.prediction_grid(cond, target, pred)
    ctx.log_images(step, "predictions/train", grid)
    ctx.log_images(step, "predictions/train_sequence", visualize.sequence_frames(cond, target, pred))
    visualize.save_png(ctx.run_dir / f"predictions_step{step:07d}.png", grid)


def train(config: PDEConfig, ctx) -> dict[str, float]:
    torch.manual_seed(config.seed + ctx.rank)
    rng = np.random.default_rng([config.seed, ctx.rank])
    tau, offset = config.nt_cond, config.resolved_offset

    model = sync_batchnorm(build_model(config), ctx)  # BatchNorm statistics over the global batch, as SRVP
    model.to(ctx.device)  # before the optimiser: a restored optimiser state then lands on the device too
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    dataset = make_dataset(config, train=True)
    total_steps = steps_for(config, len(dataset))
    ctx.set_total_steps(total_steps)  # `epochs` may set a length other than config.steps
    start = 1  # `step` counts updates: the first is step 1, as in every model (docs/platform.md, Steps)
    restored = ctx.restore()
    if restored is not None:
        state, step = restored
        load_training_state(state, model=model, optimiser=optimiser)
        rng.bit_generator.state = state["rng"]
        start = step + 1

    model = ctx.prepare_model(model)
    spread = [round(i * (len(dataset) - 1) / 3) for i in range(4)]  # four windows from different sequences
    image_batch = next(iter(DataLoader(Subset(dataset, spread), batch_size=4))) if ctx.is_main else None  # epoch 0
    # docs/pde.md §3: shuffled, drop_last False; on-the-fly Moving MNIST draws new sequences every epoch.
    loader = training_data.train_loader(dataset, ctx, ctx.local_batch_size(config.batch_size), config.seed,
                                        drop_last=False, num_workers=config.num_workers)
    weights = loss_weights(config)

    def state() -> dict:
        return {"model": unwrap(model).state_dict(), "optimiser": optimiser.state_dict(), "rng": rng.bit_generator.state, "config": config.model_dump()}

    model.train()
    running: dict[str, torch.Tensor] = {}
    count, tic = 0, time.perf_counter()
    final: dict[str, float] = {}
    for step, (epoch, (cond, target)) in zip(range(start, total_steps + 1), training_data.epochs(loader, done=start - 1)):
        for group in optimiser.param_groups:
            group["lr"] = lr_at(config, epoch)
        window = torch.cat([cond, target], 1).to(ctx.device, non_blocking=True)
        ae_time = draw_ae_time(rng, tau, window.shape[1] - tau, offset)
        losses = separable_losses(model(window, ae_time), window, ae_time, tau, offset, config.encoder == "encoderSST")
        loss = total_loss(losses, weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

        for name, value in {"loss": loss, **{f"loss/{k}": v for k, v in losses.items()}}.items():
            running[name] = running.get(name, 0.0) + value.detach()  # summed on the device: no host sync per step
        count += 1
        last = step == total_steps
        if step % config.log_every == 0 or last:
            final = {name: float(total) / count for name, total in running.items()}  # waits for the queued steps
            stop_if_diverged(math.isfinite(final["loss"]), "pde", f"loss {final['loss']}", step)
            elapsed = time.perf_counter() - tic
            final.update({"lr": lr_at(config, epoch), "epoch": float(epoch), "steps_per_s": count / max(elapsed, 1e-9)})
            ctx.report(step, final, state=state, final=last)
            running, count, tic = {}, 0, time.perf_counter()
        if ctx.is_main and (last or (config.image_every and step % config.image_every == 0)):
            log_predictions(unwrap(model), config, image_batch, ctx, step)
    return final
