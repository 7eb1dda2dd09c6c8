"""Benchmark of the PDE-disentanglement experiment: training iterations/s for the `wave` and `wave-cpu`
presets, WaveEq simulator sequences/s, and peak memory; on the GPU too when one is there.

Each case runs in a fresh subprocess so its peak resident memory (CPU) is its own. Training steps use
batches of the preset's shape (values drawn uniformly in [0, 1]: the cost does not depend on them)
with the real model, losses and Adam. Usage, from the repository root: `python -m benchmarks.pde [--steps N] [--threads T]`.
"""

from __future__ import annotations

import sys

import argparse
import json
import resource
import subprocess
import time


def train_case(preset: str, device: str, steps: int) -> dict:
    import numpy as np
    import torch

    from dynagen.models.pde.data import frame_shape
    from dynagen.models.pde.experiment import EXPERIMENT
    from dynagen.models.pde.loss import draw_ae_time, separable_losses, total_loss
    from dynagen.models.pde.model import build_model
    from dynagen.models.pde.train import loss_weights

    config = EXPERIMENT.config(**EXPERIMENT.presets[preset])
    model = build_model(config).to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    window = torch.rand(config.batch_size, config.nt_cond + config.nt_pred, *frame_shape(config), device=device)
    rng, weights, tau = np.random.default_rng(0), loss_weights(config), config.nt_cond

    def step():
        t = draw_ae_time(rng, tau, config.nt_pred, config.resolved_offset)
        loss = total_loss(separable_losses(model(window, t), window, t, tau, config.resolved_offset, False), weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    step()  # warm-up (allocations, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(p.numel() for p in model.parameters())
    return {"case": f"train {preset}", "device": device, "batch": config.batch_size, "params": params, "rate": steps / elapsed, "unit": "it/s", "peak_mib": peak}


def simulator_case(device: str, sequences: int) -> dict:
    import torch

    from dynagen.models.pde import wave

    amplitudes, speeds = wave.draw_parameters(sequences)
    torch.set_default_device(device)
    wave.simulate(speeds[:2], amplitudes[:2], n_frames=10)  # warm-up
    start = time.perf_counter()
    raw = wave.simulate(speeds, amplitudes)
    wave.preprocess(raw)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": f"simulate {sequences} × 300 frames 64²", "device": device, "batch": sequences, "params": 0, "rate": sequences / elapsed, "unit": "seq/s", "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        import torch

        torch.set_num_threads(args.threads)
        kind, name, device = args.case.split(":")
        result = train_case(name, device, args.steps) if kind == "train" else simulator_case(device, int(name))
        print(json.dumps(result))
        return

    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cases = [f"{kind}:{name}:{d}" for d in devices for kind, name in (("sim", "20" if d == "cpu" else "300"), ("train", "wave-cpu"), ("train", "wave"))]
    print(f"torch {torch.__version__}, {args.threads} CPU threads, {args.steps} timed steps per training case")
    print(f"{'case':<34} {'device':<6} {'batch':>5} {'params':>11} {'rate':>10} {'unit':<5} {'peak MiB':>9}")
    for case in cases:
        out = subprocess.run([sys.executable, "-m", __spec__.name, "--case", case, "--steps", str(args.steps), "--threads", str(args.threads)], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{case:<34} failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['case']:<34} {r['device']:<6} {r['batch']:>5} {r['params']:>11,} {r['rate']:>10.3f} {r['unit']:<5} {r['peak_mib']:>9.0f}")


if __name__ == "__main__":
    main()
