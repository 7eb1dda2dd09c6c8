"""Tiny experiments for the platform tests (registered from the tests, never shipped in the product).

``toy``: linear regression ``y = X w* + noise`` with a 4-parameter ``nn.Linear``, trained by SGD.
The data are generated on the fly from the seed (no files), so a run takes a second or two. A
chosen worker can be made to fail ONCE at a chosen step (the marker file records that it already
failed), which is how the failure/resume test exercises ``FailureConfig`` + checkpoints.

``toy-jax``: the same problem solved with numpy only, declared ``backend="jax"`` so that the
platform runs it the way it runs JAX experiments (a Tune function trial, identity ``prepare_*``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from dynagen.platform.registry import Experiment, ExperimentConfig

TRUE_WEIGHTS = (1.5, -2.0, 0.5, 3.0)
NOISE_STD = 0.1


class ToyConfig(ExperimentConfig):
    steps: int = Field(40, ge=1)
    log_every: int = Field(5, ge=1)
    lr: float = Field(0.05, gt=0.0, le=1.0)
    batch_size: int = Field(32, ge=1)  # global: split across workers
    optimizer: Literal["sgd", "adam"] = "sgd"
    dataset_size: int = Field(256, ge=8)
    step_seconds: float = Field(0.0, ge=0.0)  # sleep per step: fixed-duration trials for benchmarks/ASHA
    fail_at_step: int = -1  # -1: never fail
    fail_rank: int = 0
    fail_mode: Literal["raise", "exit"] = "raise"
    fail_marker: str = ""  # a worker fails only while this file does not exist (then creates it)
    report_gpu_share: bool = False  # the final metrics say what the process was given of a GPU (gpu_share_given)
    val_every: int = Field(0, ge=0)  # > 0: `val_error` reported every val_every steps only, as a validation metric is
    diverge_seed: int = -1  # toy-jax: the seed whose run diverges at diverge_at_step (the others go on)
    diverge_at_step: int = -1


def _maybe_fail(config: ToyConfig, rank: int, step: int) -> None:
    if step != config.fail_at_step or rank != config.fail_rank or not config.fail_marker:
        return
    marker = Path(config.fail_marker)
    if marker.exists():
        return
    marker.write_text(f"failed at step {step} on rank {rank}\n")
    if config.fail_mode == "exit":
        os._exit(1)  # the worker process dies, as on a lost node
    raise RuntimeError(f"injected failure at step {step} on rank {rank}")


def gpu_share_given() -> dict[str, float]:
    """What this process was given of a GPU: Ray's share (nan outside Ray), the JAX memory fraction in its environment
    and torch's per-process fraction (nan without CUDA)."""
    import sys

    import torch

    share = float("nan")
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            share = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
        except AssertionError:  # Ray answers in its worker processes only: this is a driver (a --local run)
            pass
    cuda_fraction = torch.cuda.get_per_process_memory_fraction() if torch.cuda.is_available() else float("nan")
    return {"ray_gpu": float(share), "xla_mem_fraction": float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "nan")),
            "xla_preallocate": float(os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE") == "true"),
            "cuda_memory_fraction": float(cuda_fraction)}


def make_dataset(size: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, len(TRUE_WEIGHTS), generator=generator)
    targets = inputs @ torch.tensor(TRUE_WEIGHTS) + NOISE_STD * torch.randn(size, generator=generator)
    return torch.utils.data.TensorDataset(inputs, targets[:, None])


def train(config: ToyConfig, ctx) -> dict[str, float]:
    import torch

    torch.manual_seed(config.seed)
    model = torch.nn.Linear(len(TRUE_WEIGHTS), 1)
    optimizer_cls = torch.optim.SGD if config.optimizer == "sgd" else torch.optim.Adam
    optimizer = optimizer_cls(model.parameters(), lr=config.lr)
    start = 0
    restored = ctx.restore()
    if restored is not None:
        state, step = restored
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = step + 1
    ddp_model = ctx.prepare_model(model)
    loader = torch.utils.data.DataLoader(
        make_dataset(config.dataset_size, config.seed), batch_size=ctx.local_batch_size(config.batch_size), shuffle=True
    )
    loader = ctx.prepare_data_loader(loader)
    batches = iter(())
    loss = torch.tensor(float("nan"))
    for step in range(start, config.steps):
        _maybe_fail(config, ctx.rank, step)
        try:
            inputs, targets = next(batches)
        except StopIteration:
            batches = iter(loader)
            inputs, targets = next(batches)
        loss = torch.nn.functional.mse_loss(ddp_model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if config.step_seconds:
            time.sleep(config.step_seconds)
        last = step == config.steps - 1
        if step % config.log_every == 0 or last:
            weight_error = (model.weight.detach()[0] - torch.tensor(TRUE_WEIGHTS)).norm().item()
            validated = config.val_every and (step % config.val_every == 0 or last)
            ctx.report(
                step,
                {"loss": loss.item(), "weight_error": weight_error, "start_step": float(start),
                 **({"val_error": weight_error} if validated else {})},
                state=lambda: {"model": model.state_dict(), "optimizer": optimizer.state_dict()},
                final=last,
            )
    weight_error = (model.weight.detach()[0] - torch.tensor(TRUE_WEIGHTS)).norm().item()
    return {"loss": loss.item(), "weight_error": weight_error, "torch_threads": float(torch.get_num_threads()),
            "niceness": float(os.nice(0)), **({"val_error": weight_error} if config.val_every else {}),
            **(gpu_share_given() if config.report_gpu_share else {})}


def evaluate(config: ToyConfig, state, out_dir, samples: int | None = None, progress=None) -> dict[str, float]:
    import torch

    model = torch.nn.Linear(len(TRUE_WEIGHTS), 1)
    model.load_state_dict(state["model"])
    data = make_dataset(samples or 128, config.seed + 1)
    with torch.no_grad():
        mse = torch.nn.functional.mse_loss(model(data.tensors[0]), data.tensors[1]).item()
    return {"mse/model": mse, "mse/zero": data.tensors[1].pow(2).mean().item()}


def train_numpy(config: ToyConfig, ctx) -> dict[str, float]:
    """Full-batch gradient descent in numpy; checkpoints carry plain arrays (:func:`train_numpy_seeds` of one)."""
    return train_numpy_seeds([config], [ctx])[0]


def train_numpy_seeds(configs: list[ToyConfig], ctxs: list) -> list[dict[str, float] | None]:
    """The seeds of one configuration in one loop, as a vectorised group trains them: the seed ``diverge_seed`` ends
    as diverged at ``diverge_at_step`` (``ctx.diverge``), the others go on."""
    import numpy as np

    from dynagen.platform.context import Diverged

    config = configs[0]
    data = [make_dataset(c.dataset_size, c.seed).tensors for c in configs]
    inputs, targets = [x.numpy() for x, _ in data], [y.numpy()[:, 0] for _, y in data]
    weights = [np.zeros(len(TRUE_WEIGHTS)) for _ in configs]
    start, restored = 0, [ctx.restore() for ctx in ctxs]
    for index, saved in enumerate(restored):
        if saved is not None:
            weights[index], start = np.asarray(saved[0]["weights"]), saved[1] + 1
    running = [i for i, saved in enumerate(restored) if saved is not None or not any(restored)]
    losses = [float("nan")] * len(configs)
    for step in range(start, config.steps):
        _maybe_fail(config, ctxs[0].rank, step)
        for index in list(running):
            if configs[index].seed == config.diverge_seed and step == config.diverge_at_step:
                running.remove(index)
                ctxs[index].diverge(Diverged(f"injected divergence at step {step}", step))
                continue
            residual = inputs[index] @ weights[index] - targets[index]
            losses[index] = float(np.mean(residual**2))
            weights[index] = weights[index] - config.lr * 2 * inputs[index].T @ residual / len(residual)
        if config.step_seconds:
            time.sleep(config.step_seconds)
        last = step == config.steps - 1
        if step % config.log_every == 0 or last:
            for index in running:
                ctxs[index].report(step, {"loss": losses[index]}, state=lambda w=weights[index]: {"weights": w.copy()}, final=last)
    return [{"loss": losses[i], "weight_error": float(np.linalg.norm(weights[i] - np.asarray(TRUE_WEIGHTS))),
             **(gpu_share_given() if config.report_gpu_share else {})} if i in running else None for i in range(len(configs))]


TOY = Experiment(
    name="toy",
    config=ToyConfig,
    train=train,
    evaluate=evaluate,
    presets={"fast": {"steps": 10, "log_every": 2}, "adam": {"optimizer": "adam", "lr": 0.1}},
    backend="torch",
    description="4-parameter linear regression (test experiment)",
    metrics=("loss", "weight_error", "start_step", "val_error", "torch_threads", "niceness"),
    checkpoint_keys=("model",),
)

TOY_JAX = Experiment(
    name="toy-jax",
    config=ToyConfig,
    train=train_numpy,
    train_seeds=train_numpy_seeds,
    evaluate=None,
    presets={},
    backend="jax",
    description="numpy regression run the way JAX experiments are run (test experiment)",
    metrics=("loss", "weight_error"),
)


if __name__ == "__main__":
    # `python -m tests.experiments ARGS...` is `dynagen ARGS...` with the test experiments registered
    # (imported from `tests.experiments`, so Ray workers can import them by name).
    import sys

    from dynagen.platform import cli, registry
    from tests.experiments import TOY as _TOY, TOY_JAX as _TOY_JAX

    registry.register(_TOY)
    registry.register(_TOY_JAX)
    sys.exit(cli.main())
