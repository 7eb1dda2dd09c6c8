"""SRVP training loop (docs/srvp.md §3) on the platform's ``ctx``: DDP with SyncBatchNorm, global batch split, AMP on CUDA."""

from __future__ import annotations

import logging

import numpy as np
import torch

from dynagen.models import moving_mnist, training_data
from dynagen.models.srvp import data as srvp_data
from dynagen.models.srvp import visualize
from dynagen.models.srvp.data import make_dataset
from dynagen.models.srvp.loss import make_optimizer, optimizer_step, srvp_loss
from dynagen.models.srvp.metrics import best_of_n, frame_psnr
from dynagen.models.srvp.model import SRVP
from dynagen.models.torch_training import BestCheckpoint, all_finite, load_training_state, stop_if_diverged, sync_batchnorm

log = logging.getLogger(__name__)


def validation_batches(config, n_batches: int) -> list[torch.Tensor]:
    """Fixed held-out clips (seq_len_test frames) for the validation score."""
    dataset, _ = make_dataset(config, "val", config.seq_len_test)
    ids = np.random.RandomState(42).choice(len(dataset), n_batches * config.batch_size_test, replace=False)
    clips = [dataset[int(i)] for i in ids]
    return [srvp_data.collate(clips[i : i + config.batch_size_test]) for i in range(0, len(clips), config.batch_size_test)]


@torch.no_grad()
def validate(model: SRVP, batches: list[torch.Tensor], config, device, progress=None) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
    """docs/srvp.md §3 validation: n_samples_test samples per clip, the best chosen on the PSNR over all frames (conditioning
    reconstructions included); the score is the mean PSNR of that sample over the predicted frames.
    ``progress(done, total)`` after each batch (the run's console shows it: validation can dominate a short run)."""
    model.eval()
    scores, shown = [], None
    for done, x in enumerate(batches):
        if progress is not None:
            progress(done, len(batches))
        x = x.to(device)
        samples = torch.stack([
            model.predict(x[: config.nt_cond], len(x) - config.nt_cond, config.n_euler_steps)
            for _ in range(config.n_samples_test)
        ])  # (N, T, B, C, H, W)
        psnr = torch.stack([frame_psnr(s, x) for s in samples]).clamp(max=100)  # clamp: static digits give +inf
        _, _, best = best_of_n(psnr)
        chosen = samples[best, :, torch.arange(x.shape[1], device=device)].transpose(0, 1)  # (T, B, ...)
        scores.append(frame_psnr(chosen[config.nt_cond :], x[config.nt_cond :]).clamp(max=100).mean(0))
        if shown is None:
            shown = (x[:, :4].cpu(), chosen[:, :4].cpu())
    if progress is not None:
        progress(len(batches), len(batches))
    model.train()
    return float(torch.cat(scores).mean()), shown


def save_samples(ctx, step: int, truth: torch.Tensor, best: torch.Tensor, nt_cond: int) -> None:
    """Truth and best sample of a few validation clips: a PNG grid and a GIF in run_dir/samples; in TensorBoard the
    grid and the GIF's frames as an image sequence (one image per time step)."""
    panels = []
    for i in range(truth.shape[1]):
        panels += [(f"truth{i}", truth[:, i].numpy()), (f"best{i}", best[:, i].numpy())]
    image = visualize.grid(panels, nt_cond)
    visualize.save_png(ctx.run_dir / "samples" / f"step_{step:08d}.png", image)
    frames = visualize.gif_frames(panels, nt_cond)
    visualize.save_gif(ctx.run_dir / "samples" / f"step_{step:08d}.gif", frames)
    ctx.log_images(step, "val/truth_and_best", image.astype(np.float32) / 255)
    ctx.log_images(step, "val/truth_and_best_sequence", np.stack(frames).astype(np.float32) / 255)


def train(config, ctx) -> dict[str, float]:
    torch.manual_seed(config.seed)  # docs/srvp.md §3: the same torch seed on every rank; data differ through the sampler
    np.random.seed((config.seed + ctx.rank) % 2**32)
    device = ctx.device
    on_gpu = torch.device(device).type == "cuda"
    use_amp = bool(config.amp) and on_gpu
    if on_gpu:
        torch.backends.cudnn.benchmark = True  # docs/srvp.md §3: input shapes are fixed, so the fastest conv kernels are kept
        torch.backends.cudnn.deterministic = ctx.world_size > 1  # docs/srvp.md §3: as the original, in distributed mode only

    model = sync_batchnorm(SRVP.from_config(config), ctx)  # docs/srvp.md §3: BatchNorm statistics over the global batch
    model.to(device)
    optimizer, scheduler = make_optimizer(model.parameters(), config.lr, config.lr_scheduling_n_iter)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    best = BestCheckpoint(ctx.run_dir / "best")  # docs/srvp.md §3 model_best.pt: best validation score so far
    start = 1
    restored = ctx.restore()
    if restored is not None:
        state, step = restored
        # the scaler's state is empty when saved without AMP (or on CPU): a resume with AMP starts a fresh scale
        load_training_state(state, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        best.load(state)
        start = step + 1
    core = model
    model = ctx.prepare_model(model)

    dataset, description = make_dataset(config, "train", config.seq_len)
    local_batch = ctx.local_batch_size(config.batch_size)
    loader = training_data.train_loader(dataset, ctx, local_batch, config.seed, drop_last=True,  # docs/srvp.md §3: drop_last
                                        num_workers=config.num_workers, collate_fn=srvp_data.collate)
    batches = training_data.epochs(loader, done=start - 1)  # fresh clips every epoch; a resume goes on where it was
    if ctx.is_main:
        say = log.warning if moving_mnist.STAND_IN in description else log.info  # the stand-in is always shown
        say("srvp: training on %s; %d parameters; local batch %d x %d workers", description,
                 sum(p.numel() for p in core.parameters()), local_batch, ctx.world_size)
    val_batches = validation_batches(config, config.n_iter_test) if ctx.is_main else []

    def state():
        return {"model": core.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "config": config.model_dump(), "data": description, **best.state()}

    metrics: dict[str, float] = {}
    sums: dict[str, float] = {}
    for step in range(start, config.steps + 1):
        _, x = next(batches)
        x = x.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            out = model(x, n_euler_steps=config.n_euler_steps)
        terms = srvp_loss(x, out, config.obs_scale, config.beta_y, config.beta_z, config.l2_res)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms["loss"]).backward()
        optimizer_step(optimizer, scheduler, step, config.lr_scheduling_burnin, scaler if use_amp else None)
        for k, v in terms.items():  # summed on the device: no host sync per step
            sums[k] = sums.get(k, 0.0) + v.detach()
        last = step == config.steps
        if step % config.log_every == 0 or last:
            n = step % config.log_every or config.log_every
            metrics = {f"train/{k}": float(v) / n for k, v in sums.items()}
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            sums = {}
            # Parameters, not the loss: under AMP a non-finite loss is an fp16 overflow whose step GradScaler skips;
            # non-finite weights mean the run diverged, and it stops before a checkpoint could keep them.
            stop_if_diverged(all_finite(core), "srvp", "non-finite weights", step, f" (train/loss {metrics['train/loss']})")
            if ctx.is_main and (step % config.val_interval == 0 or last):
                metrics["val/psnr"], (truth, chosen) = validate(core, val_batches, config, device,
                                                                 progress=lambda done, total: ctx.progress("validation batches", done, total, step))
                save_samples(ctx, step, truth, chosen, config.nt_cond)
                best.offer(metrics["val/psnr"], step, state, config)
            ctx.report(step, metrics, state=state, final=last)
    return metrics
