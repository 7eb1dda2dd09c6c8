"""``dynagen evaluate pde``: the test protocol of docs/pde.md §4 on a checkpoint.

Metrics (flat): ``mse/<method>`` over the test horizon for the model and the copy-last and mean-frame
baselines; ``mse/<method>/t+k`` at a few horizons and, when the test horizon exceeds the training
horizon K, ``mse/<method>/1-K`` over the trained horizon; ``psnr/…`` and ``ssim/…`` for Moving MNIST
and 3D Chairs (the data sets the spec scores with them); and the content-swap test ``swap/…``:

- mnist: the spec's measure (docs/pde.md §4) on the fixed §5.2 test set (``data.mnist_test_set``): new digits
  (``MovingMNISTTestSet.new_digits``) are rendered on the trajectory of test video N−1−i and E_S of that
  supplies the content; the dynamics come from video i; the prediction is scored against the new digits
  rendered on trajectory i under both digit assignments, keeping the best.
- chairs: content from a random other test chair; the target is that chair seen from video i's views.
- others (WaveEq, TaxiBJ, SST): content from another test window (i ↔ N−1−i), scored against window
  i's own future. On WaveEq the content is shared by all sequences (only the speed c varies), so a
  disentangled model keeps ``swap/mse`` close to ``mse/model``.

SST adds the spec's measures in temperature space (docs/pde.md §4 "SST"): forecasts and targets are de-normalised
with the target days' own spatial mean/std and then the daily climatology (``SST.to_temperature``); per
method and span S ∈ {1-10, 1-6} (horizons 1…S, the original's "at t+10" / "at t+6"):

- ``mse_temperature/<method>/1-S``: MSE over pixels in thetao units, averaged over windows and horizons;
- ``ssim_temperature/<method>/1-S``: SSIM as the original computes it, *with its quirk*: the
  de-normalised values are min-max scaled with the zone's min/max of the *normalised* array
  (climatology + per-frame standardisation, all days), so they do not lie in [0, 1];
- ``ssim_temperature_clean/<method>/1-S``: SSIM after min-max scaling with the zone's thetao min/max.

The baselines are de-normalised the same way as the model (with the target days' statistics).

The full per-horizon curves go to ``out_dir/mse_per_horizon.csv``; ``predictions.png`` and
``predictions.gif`` show the first test windows.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from dynagen.models.artifacts import save_csv
from dynagen.models import moving_mnist
from dynagen.models.manifest import library_versions
from dynagen.models.ssim import CONVENTIONS
from dynagen.models.pde import metrics, visualize
from dynagen.models.pde.data import SST, Chairs, MovingMNISTTestSet, make_dataset, render_frames
from dynagen.models.pde.experiment import PDEConfig
from dynagen.models.pde.model import build_model

log = logging.getLogger(__name__)
IMAGE_METRIC_DATASETS = ("mnist", "chairs")
REPORTED_HORIZONS = (1, 5, 10, 20, 40, 95)
SST_SPANS = (10, 6)  # docs/pde.md §4: the original prints MSE and SSIM averaged over horizons 1–10 and 1–6


def swap_batch(dataset, indices: list[int], rng: np.random.Generator):
    """(content-source cond, [candidate ground truths]) for the swap test of a batch of test indices."""
    n = len(dataset)
    if isinstance(dataset, MovingMNISTTestSet):
        sources, targets = [], ([], [])
        for i in indices:
            digits, own_paths = dataset.new_digits(i), dataset.latents(i)
            sources.append(render_frames(digits, dataset.latents(n - 1 - i), dataset.nx)[: dataset.nt_cond])
            targets[0].append(render_frames(digits, own_paths, dataset.nx)[dataset.nt_cond :])
            targets[1].append(render_frames(digits[::-1], own_paths, dataset.nx)[dataset.nt_cond :])  # other assignment
        return torch.stack(sources), [torch.stack(t) for t in targets]
    if isinstance(dataset, Chairs):
        n_chairs = len(dataset.views)
        sources, targets = [], []
        for i in indices:
            start_view = i // n_chairs
            other = int(rng.integers(n_chairs))
            sources.append(dataset.render(other, int(rng.integers(0, 62 - dataset.length)))[: dataset.nt_cond])
            targets.append(dataset.render(other, start_view)[dataset.nt_cond :])
        return torch.stack(sources), [torch.stack(targets)]
    sources = torch.stack([dataset[n - 1 - i][0] for i in indices])
    return sources, [torch.stack([dataset[i][1] for i in indices])]


def temperature_scores(test: SST, indices: list[int], pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per window and horizon (B, K): the docs/pde.md §4 SST scores in temperature space (names in the module docstring)."""
    pred, target = test.to_temperature(indices, pred), test.to_temperature(indices, target)
    scores = {"mse_temperature": metrics.mse_per_frame(pred, target)}
    for name, kind in (("ssim_temperature", "normalised"), ("ssim_temperature_clean", "temperature")):
        low, high = (v.to(pred.device) for v in test.zone_range(indices, kind))
        # float64 on purpose: the quirk's values sit around 2–3, where float32 variances (E[x²] − E[x]²) cancel
        # (in tests/test_pde_sst.py float32 moved this SSIM by 4e-4; the original's float32 numbers carry such errors).
        scores[name] = metrics.ssim_per_frame(pred, target, value_range=(low, high))
    return scores


def _write_csv(path: Path, curves: dict[str, np.ndarray]) -> None:
    rows = [[k + 1, *(f"{c[k]:.6e}" for c in curves.values())] for k in range(len(next(iter(curves.values()))))]
    save_csv(path, ["horizon", *curves], rows)


@torch.no_grad()
def evaluate(config: PDEConfig, state, out_dir, samples: int | None = None, batch_size: int | None = None,
                        horizon: int | None = None, device: str | None = None, progress=None) -> dict[str, float]:
    """Scores ``samples`` random test windows (all by default) in batches of ``batch_size`` (256, the original's)
    over ``horizon`` steps (the config's test_horizon by default). ``progress(phase, done, total)``: the windows scored
    so far (docs/platform.md, "Registering an experiment"; ``dynagen evaluate`` shows it)."""
    batch_size = batch_size or 256
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    horizon = horizon or config.test_horizon
    model = build_model(config, initialise=False)
    model.load_state_dict(state["model"])
    model.to(device).eval()  # BatchNorm uses running statistics, as the original's test scripts

    test = make_dataset(config, train=False, horizon=horizon)
    if isinstance(test, MovingMNISTTestSet):
        (log.warning if moving_mnist.STAND_IN in test.source else log.info)("pde evaluate: %s", test.source)
    indices = list(range(len(test)))
    if samples is not None and samples < len(indices):
        indices = np.random.default_rng(config.seed).choice(len(indices), samples, replace=False).tolist()
    image_metrics = config.dataset in IMAGE_METRIC_DATASETS
    rng = np.random.default_rng(1)

    methods = ("model", "copy_last", "mean_frame")
    sq_error = {m: torch.zeros(horizon, dtype=torch.float64) for m in methods}
    psnr = {m: 0.0 for m in methods}
    ssim = {m: 0.0 for m in methods}
    temperature: dict[str, dict[str, torch.Tensor]] = {}  # SST: score → method → per-horizon sums
    swap: dict[str, float] = {}
    first_batch, content = None, hashlib.sha256()
    report, scored = progress or (lambda phase, done, total: None), 0
    report("test windows", 0, len(indices))
    for chunk in (indices[i : i + batch_size] for i in range(0, len(indices), batch_size)):
        cond, target = next(iter(DataLoader(Subset(test, chunk), batch_size=len(chunk))))
        for window in (cond, target):  # the identity of exactly what was scored, in order
            content.update(window.numpy().astype(np.float32, copy=False).tobytes())
        cond, target = cond.to(device), target.to(device)
        predictions = {
            "model": model.predict(cond, horizon),
            "copy_last": metrics.copy_last(cond, horizon),
            "mean_frame": metrics.mean_frame(cond, horizon),
        }
        if first_batch is None:
            first_batch = (cond[:4].cpu(), target[:4].cpu(), predictions["model"][:4].cpu())
        for m, pred in predictions.items():
            sq_error[m] += metrics.mse_per_frame(pred, target).sum(0).double().cpu()
            if image_metrics:
                psnr[m] += float(metrics.psnr_per_frame(pred, target).mean(1).sum())
                ssim[m] += float(metrics.ssim_per_frame(pred, target).mean(1).sum())
            if isinstance(test, SST):
                for name, values in temperature_scores(test, chunk, pred, target).items():
                    sums = temperature.setdefault(name, {}).setdefault(m, torch.zeros(horizon, dtype=torch.float64))
                    sums += values.sum(0).double().cpu()
        sources, candidates = swap_batch(test, chunk, rng)
        swapped = model.predict(cond, horizon, init_s_code=model.Es(sources.to(device)))
        for name, values in metrics.best_of_permutations(swapped, [c.to(device) for c in candidates], image_metrics).items():
            swap[f"swap/{name}"] = swap.get(f"swap/{name}", 0.0) + float(values.sum())
        scored += len(chunk)
        report("test windows", scored, len(indices))

    n = len(indices)
    curves = {m: (sq_error[m] / n).numpy() for m in methods}
    results: dict[str, float] = {"samples": float(n)}
    for m in methods:
        results[f"mse/{m}"] = float(curves[m].mean())
        if horizon > config.nt_pred:
            results[f"mse/{m}/1-{config.nt_pred}"] = float(curves[m][: config.nt_pred].mean())
        for k in REPORTED_HORIZONS:
            if k <= horizon:
                results[f"mse/{m}/t+{k}"] = float(curves[m][k - 1])
        if image_metrics:
            results[f"psnr/{m}"] = psnr[m] / n
            results[f"ssim/{m}"] = ssim[m] / n
    for name, per_method in temperature.items():
        for m, sums in per_method.items():
            for span in (k for k in SST_SPANS if k <= horizon):
                results[f"{name}/{m}/1-{span}"] = float(sums[:span].mean()) / n
    results.update({k: v / n for k, v in swap.items()})

    _write_csv(out_dir / "mse_per_horizon.csv", curves)
    cond, target, pred = first_batch
    visualize.save_png(out_dir / "predictions.png", visualize.prediction_grid(cond, target, pred))
    visualize.save_gif(out_dir / "predictions.gif", cond, target, pred)
    source = getattr(test, "source", None) or (f"data_dir {config.data_dir}" if config.data_dir else
                                                 f"simulated: {config.n_sequences} sequences, data_seed {config.data_seed}")
    results["manifest"] = {
        "test_set": {"dataset": config.dataset, "source": source, "stand_in": moving_mnist.STAND_IN in source,
                     "windows": n, "all_windows": n == len(test), "subset_seed": config.seed,
                     "sha256_float32": content.hexdigest(), "resolution": config.resolution,
                     "original_window_indexing": config.original_window_indexing},
        "frames": {"conditioning": config.nt_cond, "predicted": horizon, "trained_horizon": config.nt_pred},
        "samples": {"n": 1, "best_of_n": "deterministic model: one forecast per window; swap: best of the digit permutations"},
        "metrics": {"mse": "mean over (C, H, W) (points for wave_partial) per frame, mean over windows and horizons",
                    "psnr": "10 log10(1 / MSE) per frame and channel, mean over channels" if image_metrics else None,
                    "ssim": {"convention": "pde", **vars(CONVENTIONS["pde"])} if image_metrics or isinstance(test, SST) else None,
                    "sst_ssim_scaling": "normalised-array zone range (the original's quirk) and thetao range ('clean')"
                    if isinstance(test, SST) else None},
        "versions": library_versions("torch", "torchmetrics", "numpy"),
    }
    return results
