"""SRVP training throughput: iterations/s, frames/s and peak memory for the smmnist and smmnist-cpu presets.

One full training iteration (forward, docs/srvp.md §3 loss, backward, Adam step) on random clips of the preset's seq_len, at a
fixed batch on CPU (default 16) and, when CUDA is available, at the preset's own global batch on one GPU (with
AMP when ``--amp``). Each measurement runs in a fresh subprocess so the peak memory is its own.

    python -m benchmarks.srvp [--steps 10] [--cpu-batch 16] [--threads 2] [--amp]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PRESETS = ("smmnist", "smmnist-cpu")


def measure(preset: str, device: str, batch: int, steps: int, warmup: int, amp: bool) -> dict:
    import resource

    import torch

    from dynagen.models.srvp.experiment import PRESETS as ALL
    from dynagen.models.srvp.experiment import SRVPConfig
    from dynagen.models.srvp.loss import srvp_loss
    from dynagen.models.srvp.model import SRVP

    config = SRVPConfig(**ALL[preset])
    model = SRVP.from_config(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    use_amp = amp and device == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    x = torch.rand(config.seq_len, batch, config.nc, config.nx, config.nx, device=device)

    def iteration():
        with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
            out = model(x, n_euler_steps=config.n_euler_steps)
        loss = srvp_loss(x, out, config.obs_scale, config.beta_y, config.beta_z, config.l2_res)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        iteration()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        iteration()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"preset": preset, "device": device + (" amp" if use_amp else ""), "batch": batch, "seq_len": config.seq_len,
            "params": sum(p.numel() for p in model.parameters()), "s_per_it": seconds, "it_per_s": 1 / seconds,
            "frames_per_s": batch * config.seq_len / seconds, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cpu-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads on CPU")
    parser.add_argument("--amp", action="store_true", help="mixed precision on the GPU")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        preset, device, batch = args.worker.split(",")
        print(json.dumps(measure(preset, device, int(batch), args.steps, args.warmup, args.amp)))
        return

    import torch

    from dynagen.models.srvp.experiment import PRESETS as ALL

    runs = [(p, "cpu", args.cpu_batch) for p in PRESETS]
    if torch.cuda.is_available():
        runs += [(p, "cuda", ALL[p].get("batch_size", 128)) for p in PRESETS]
    rows = []
    for preset, device, batch in runs:
        command = [sys.executable, "-m", __spec__.name, "--worker", f"{preset},{device},{batch}", "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--threads", str(args.threads)] + (["--amp"] if args.amp else [])
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if done.returncode != 0:
            print(f"{preset} on {device} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"SRVP training iteration, {args.steps} timed steps after {args.warmup} warm-up, {args.threads} CPU threads")
    header = f"{'preset':<12} {'device':<9} {'batch':>5} {'T':>3} {'params':>11} {'s/it':>8} {'it/s':>8} {'frames/s':>9} {'peak MB':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['preset']:<12} {r['device']:<9} {r['batch']:>5} {r['seq_len']:>3} {r['params']:>11,} {r['s_per_it']:>8.3f} "
              f"{r['it_per_s']:>8.2f} {r['frames_per_s']:>9.1f} {r['peak_mb']:>8.0f}")


if __name__ == "__main__":
    main()
