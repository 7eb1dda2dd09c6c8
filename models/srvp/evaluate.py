"""SRVP test protocol (docs/srvp.md §4): best-of-N PSNR / SSIM on held-out videos, beside trivial baselines.

For each test clip (nt_gen frames: nt_cond conditioning + predicted), the model draws N samples in eval mode;
per metric, each clip keeps its best sample (max PSNR / SSIM, min LPIPS) over the predicted frames. Baselines
predict every future frame as the last conditioning frame (copy-last), the mean conditioning frame
(mean-frame) or zeros (all-black). Static clips make copy-last exact (PSNR = +inf): its PSNR averages the finite
clips only and the number of infinite ones is reported.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from dynagen.models.artifacts import save_csv, save_figure
from dynagen.models import moving_mnist
from dynagen.models.manifest import arrays_sha256, file_sha256, library_versions
from dynagen.models.ssim import CONVENTIONS
from dynagen.models.srvp import data as srvp_data
from dynagen.models.srvp import metrics as M
from dynagen.models.srvp import visualize
from dynagen.models.srvp.model import SRVP
from dynagen.models.srvp.data import make_dataset

log = logging.getLogger(__name__)
TEST_SEED, TEST_BATCH_SIZE = 1, 16  # docs/srvp.md §4
N_RANDOM_SHOWN = 3


def test_videos(config, out_dir: Path, n_test: int | None) -> tuple[torch.utils.data.Dataset | np.ndarray, str]:
    """The fixed test clips as a sequence of uint8 videos (T, H, W[, C]) of nt_gen frames, and a description.

    Moving MNIST: ``data_dir/<s>mmnist_test_<n>digits_<nx>.npz`` when present, else built with the docs/srvp.md §5 builder
    from the test digits (MNIST t10k files, or the scikit-learn stand-in) and saved to ``out_dir``.
    """
    if config.dataset in ("smmnist", "mmnist"):
        arrays, _, source = moving_mnist.find_or_build_test_set(
            config.data_dir, config.nt_gen, deterministic=config.deterministic, ndigits=config.ndigits, nx=config.nx,
            max_speed=config.max_speed, digit_size=config.digit_size, save_dir=out_dir)
        sequences = arrays["sequences"]
        if len(sequences) < config.nt_gen:
            raise ValueError(f"test set has {len(sequences)} frames, nt_gen is {config.nt_gen}")
        videos = sequences[: config.nt_gen].swapaxes(0, 1)
    else:
        videos, source = make_dataset(config, "test", config.nt_gen)
    count = len(videos) if n_test is None else min(n_test, len(videos))
    return [videos[i] for i in range(count)], source


def baselines(cond: torch.Tensor, n_pred: int) -> dict[str, torch.Tensor]:
    """Trivial predictions of the n_pred future frames from the conditioning frames (T, B, C, H, W).

    The mean frame is averaged on the 8-bit integer values, so that identical frames give back exactly the same
    floats as the data (a float32 mean is off by an ulp, turning PSNR = inf into ~160 dB and skewing averages).
    """
    repeat = lambda frame: frame[None].expand(n_pred, *frame.shape)  # noqa: E731
    mean_frame = (cond * 255).round().mean(0) / 255
    return {"copy_last": repeat(cond[-1]), "mean_frame": repeat(mean_frame), "all_black": torch.zeros_like(repeat(cond[-1]))}


def sample_predictions(model, x: torch.Tensor, nt_cond: int, n_samples: int, n_euler_steps: int,
                       n_euler_steps_test: int) -> torch.Tensor:
    """(N, T - nt_cond, B, C, H, W) predictions of the frames after nt_cond; only x[:nt_cond] reaches the model."""
    n_pred = len(x) - nt_cond
    return torch.stack([model.predict(x[:nt_cond], n_pred, n_euler_steps, n_euler_steps_test)[nt_cond:]
                        for _ in range(n_samples)])


def _plot_curves(path: Path, curves: dict[str, np.ndarray], metric: str, nt_cond: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, curve in curves.items():
        ax.plot(np.arange(nt_cond + 1, nt_cond + 1 + len(curve)), curve, label=name, marker="." if name == "model" else None)
    ax.set_xlabel("frame")
    ax.set_ylabel(metric)
    ax.legend()
    fig.tight_layout()
    save_figure(path, fig, dpi=120)


def _finite_mean(values: np.ndarray) -> tuple[float, int]:
    finite = np.isfinite(values)
    return (float(values[finite].mean()) if finite.any() else float("inf")), int((~finite).sum())


def evaluate(config, state: Mapping[str, Any], out_dir, samples: int | None = None, n_test: int | None = None,
             batch_size: int | None = None, device: str | None = None, n_euler_steps_test: int | None = None,
             lpips: str | None = None, fvd: str | None = None, progress=None) -> dict[str, float]:
    """Best-of-``samples`` metrics of the checkpoint ``state`` on ``n_test`` test clips (all by default), in
    batches of ``batch_size`` clips (default 16, docs/srvp.md §4).

    ``lpips`` / ``fvd``: TorchScript files of the LPIPS (AlexNet-lin) and I3D networks (models/srvp/README.md);
    those metrics are only computed when given. ``device``: the first GPU when there is one, else the CPU; the
    model, the sampling and the LPIPS / I3D networks all run there. Writes per-frame curves (CSV, PNG), sample
    grids (PNG, GIF) and the test set used. ``progress(phase, done, total)``: the clips scored so far (docs/platform.md,
    "Registering an experiment"; ``dynagen evaluate`` shows it).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch_size = int(batch_size or TEST_BATCH_SIZE)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_samples = int(samples or config.n_samples)
    k_test = n_euler_steps_test or config.n_euler_steps_test or config.n_euler_steps
    torch.manual_seed(TEST_SEED)
    np.random.seed(TEST_SEED)
    model = SRVP.from_config(config)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state["model"].items()})
    model.to(device).eval()
    # loaded before the test set is built and sampled, so that a bad file fails at once
    lpips_net = M.load_scripted(lpips, "lpips", device) if lpips else None
    fvd_net = M.load_scripted(fvd, "fvd", device) if fvd else None

    videos, source = test_videos(config, out_dir, None if n_test is None else int(n_test))
    say = log.warning if moving_mnist.STAND_IN in source else log.info  # the stand-in is always shown
    say("srvp evaluate: %d clips, %s; best of %d samples", len(videos), source, n_samples)
    nt_cond, n_pred = config.nt_cond, config.nt_gen - config.nt_cond
    names = ["model", "copy_last", "mean_frame", "all_black"]
    per_clip = {f"{m}/{n}": [] for m in ("psnr", "ssim") for n in names}
    curves = {key: [] for key in per_clip}
    lpips_best, fvd_embeddings, shown = [], ([], []), None
    report = progress or (lambda phase, done, total: None)
    report("test clips", 0, len(videos))
    for start in range(0, len(videos), batch_size):
        x = srvp_data.collate(videos[start : start + batch_size]).to(device)
        cond, future = x[:nt_cond], x[nt_cond:]
        preds = sample_predictions(model, x, nt_cond, n_samples, config.n_euler_steps, k_test)
        psnr = torch.stack([M.frame_psnr(p, future) for p in preds])  # (N, T_pred, B)
        ssim = torch.stack([M.frame_ssim(p, future) for p in preds])
        for metric, scores in (("psnr", psnr), ("ssim", ssim)):
            best, curve, _ = M.best_of_n(scores)
            per_clip[f"{metric}/model"].append(best.cpu())
            curves[f"{metric}/model"].append(curve.cpu())
        for name, pred in baselines(cond, n_pred).items():
            for metric, fn in (("psnr", M.frame_psnr), ("ssim", M.frame_ssim)):
                scores = fn(pred, future)
                per_clip[f"{metric}/{name}"].append(scores.mean(0).cpu())
                curves[f"{metric}/{name}"].append(scores.cpu())
        if lpips_net is not None:
            lp = torch.stack([M.frame_lpips(lpips_net, p, future) for p in preds])
            lpips_best.append(M.best_of_n(lp, higher_is_better=False)[0].cpu())
        if fvd_net is not None:  # embedded batch by batch: only (n_test, D) embeddings are kept
            fvd_embeddings[0].append(M.video_embeddings(fvd_net, x))
            fvd_embeddings[1].append(M.video_embeddings(fvd_net, torch.cat([cond, preds[0]])))  # docs/srvp.md §4: cond + random_1
        if shown is None:
            order, clips = psnr.mean(1).argsort(0), torch.arange(x.shape[1], device=device)  # order: (N, B) ascending
            shown = (x.cpu(), preds[order[-1], :, clips].transpose(0, 1).cpu(),
                     preds[order[0], :, clips].transpose(0, 1).cpu(), preds[:N_RANDOM_SHOWN].cpu())
        report("test clips", min(start + batch_size, len(videos)), len(videos))

    results: dict[str, float] = {"n_test": float(len(videos)), "samples": float(n_samples)}
    frame_rows: dict[str, np.ndarray] = {}
    for key, values in per_clip.items():
        values = torch.cat(values).numpy().astype(np.float64)
        curve = torch.cat(curves[key], 1).numpy().astype(np.float64)  # (T_pred, n_test)
        if key.startswith("psnr"):
            results[key], n_inf = _finite_mean(values)
            if n_inf:
                results[f"{key}_infinite_clips"] = float(n_inf)
            frame_rows[key] = np.array([_finite_mean(row)[0] for row in curve])
        else:
            results[key] = float(values.mean())
            frame_rows[key] = curve.mean(1)
        if key.endswith("/model"):
            results[f"{key}_ci95"] = M.mean_and_interval(values)[1]
    if lpips_best:
        results["lpips/model"], results["lpips/model_ci95"] = M.mean_and_interval(torch.cat(lpips_best).numpy())
    if fvd_net is not None:
        results["fvd/model"] = M.frechet_distance(*(np.concatenate(e) for e in fvd_embeddings))

    save_csv(out_dir / "per_frame.csv", ["frame"] + list(frame_rows),
               [[nt_cond + 1 + t] + [float(frame_rows[k][t]) for k in frame_rows] for t in range(n_pred)])
    for metric in ("psnr", "ssim"):
        _plot_curves(out_dir / f"per_frame_{metric}.png",
                     {k.split("/")[1]: v for k, v in frame_rows.items() if k.startswith(metric)}, metric.upper(), nt_cond)
    truth, best, worst, randoms = shown
    for i in range(min(4, truth.shape[1])):
        panels = [("truth", truth[:, i].numpy()), ("best", torch.cat([truth[:nt_cond, i], best[:, i]]).numpy()),
                  ("worst", torch.cat([truth[:nt_cond, i], worst[:, i]]).numpy())]
        panels += [(f"rand{j + 1}", torch.cat([truth[:nt_cond, i], randoms[j][:, i]]).numpy()) for j in range(len(randoms))]
        visualize.save_png(out_dir / f"samples_{i}.png", visualize.grid(panels, nt_cond))
        visualize.save_gif(out_dir / f"samples_{i}.gif", visualize.gif_frames(panels, nt_cond))
    log.info("srvp evaluate: wrote per-frame curves and sample grids to %s", out_dir)
    results["manifest"] = manifest(config, videos, source, n_test, n_samples, k_test, lpips, fvd)
    return results


BEST_OF_N = ("per metric and clip independently, the sample with the best mean over the predicted frames (max PSNR, "
             "max SSIM, min LPIPS); reported: the mean over clips of those best values, +- 1.96 std / sqrt(N)")


def manifest(config, videos, source: str, n_test: int | None, n_samples: int, k_test: int, lpips: str | None,
             fvd: str | None) -> dict[str, Any]:
    """What was scored and how (metrics.json's ``manifest``; models/srvp/published.py decides comparability on it)."""
    network = lambda path: None if not path else {"file": str(Path(path).resolve()), "sha256": file_sha256(path)}  # noqa: E731
    return {
        "test_set": {"dataset": config.dataset, "source": source, "stand_in": moving_mnist.STAND_IN in source,
                     "n_test_requested": n_test, "clips": len(videos), "sha256": arrays_sha256(videos), "nx": config.nx,
                     "seed": TEST_SEED},
        "frames": {"conditioning": config.nt_cond, "predicted": config.nt_gen - config.nt_cond, "nt_gen": config.nt_gen},
        "samples": {"n": n_samples, "best_of_n": BEST_OF_N},
        "euler_steps": {"train": config.n_euler_steps, "test": k_test},
        "metrics": {
            "psnr": "10 log10(1 / MSE) per frame and channel (torchmetrics, data range 1), mean over channels, frames",
            "ssim": {"convention": "srvp", **vars(CONVENTIONS["srvp"])},
            "lpips": network(lpips) and {**network(lpips), "expects": "AlexNet-lin v0.1, inputs in [-1, 1]"},
            "fvd": network(fvd) and {**network(fvd), "expects": "I3D Kinetics-400 logits, 224x224, [-1, 1]",
                                     "hypothesis": "conditioning truth + the first sample", "frechet": M.FRECHET_METHOD},
        },
        "versions": library_versions("torch", "torchmetrics", "numpy", "scipy"),
    }
