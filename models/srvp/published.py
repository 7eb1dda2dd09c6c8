"""The SRVP paper's published test figures (the thesis slides' tables, docs/srvp.md §4) and when a measurement compares.

``PUBLISHED[(dataset, ablation)]`` holds the numbers of the row "Ours" (and its ablations on Moving MNIST);
``PROTOCOL[dataset]`` the test protocol they were obtained with (docs/srvp.md §4 table). A measured figure is comparable
only when the evaluation manifest shows the same protocol: the real data set (never the generated stand-in digits),
the whole fixed test set, the same conditioning / predicted frames, samples, K and metric convention, and for LPIPS
and FVD a network file (whose hash is recorded; dynagen cannot check that it is AlexNet-lin v0.1 / I3D).
"""

from __future__ import annotations

from typing import Any, Mapping

PUBLISHED: dict[tuple[str, str], dict[str, float]] = {
    # Moving MNIST table: stochastic (smmnist) and deterministic (mmnist), PSNR and SSIM.
    ("smmnist", "residual"): {"psnr/model": 16.93, "ssim/model": 0.7799},
    ("mmnist", "residual"): {"psnr/model": 18.25, "ssim/model": 0.8300},
    ("smmnist", "gru"): {"psnr/model": 15.80, "ssim/model": 0.7464},
    ("mmnist", "gru"): {"psnr/model": 13.17, "ssim/model": 0.6237},
    ("smmnist", "mlp"): {"psnr/model": 16.55, "ssim/model": 0.7694},
    ("mmnist", "mlp"): {"psnr/model": 16.70, "ssim/model": 0.7876},
    ("mmnist", "no_z"): {"psnr/model": 14.99, "ssim/model": 0.4757},  # "w/o z": deterministic only
    # KTH / Human3.6M / BAIR table: FVD, LPIPS, PSNR.
    ("kth", "residual"): {"fvd/model": 222.0, "lpips/model": 0.0736, "psnr/model": 29.69},
    ("human", "residual"): {"fvd/model": 416.0, "lpips/model": 0.0509, "psnr/model": 25.30},
    ("bair", "residual"): {"fvd/model": 163.0, "lpips/model": 0.0574, "psnr/model": 19.59},
}
PROTOCOL = {  # conditioning frames, predicted frames, samples per sequence, K (training = test)
    "smmnist": dict(conditioning=5, predicted=20, samples=100, k=1),
    "mmnist": dict(conditioning=5, predicted=95, samples=1, k=1),
    "kth": dict(conditioning=10, predicted=30, samples=100, k=2),
    "human": dict(conditioning=8, predicted=45, samples=100, k=2),
    "bair": dict(conditioning=2, predicted=28, samples=100, k=2),
}


def protocol_differences(config, manifest: Mapping[str, Any] | None) -> list[str]:
    """Why a measurement on ``config`` with ``manifest`` is not the paper's protocol (empty: it is)."""
    if not manifest:
        return ["no evaluation manifest (not a `dynagen evaluate` result)"]
    paper, why = PROTOCOL[config.dataset], []
    test_set, frames, samples = manifest["test_set"], manifest["frames"], manifest["samples"]
    if test_set["stand_in"]:
        why.append("stand-in digits, not MNIST")
    if test_set.get("validation"):
        why.append(test_set["validation"])
    elif test_set["n_test_requested"] is not None:
        why.append(f"a subset of the test set (n_test={test_set['n_test_requested']})")
    if config.dataset in ("smmnist", "mmnist") and not test_set.get("validation") and not test_set["source"].startswith("fixed test set"):
        why.append("test set built here, not the original's fixed file")
    measured = dict(conditioning=frames["conditioning"], predicted=frames["predicted"], samples=samples["n"],
                    k=manifest["euler_steps"]["test"])
    why += [f"{key} {measured[key]} (paper {value})" for key, value in paper.items() if measured[key] != value]
    ssim = manifest["metrics"].get("ssim")
    if ssim and ssim["convention"] != "srvp":
        why.append("SSIM convention")
    if config.nx != 64:
        why.append(f"{config.nx}x{config.nx} frames (paper 64x64)")
    return why


def compare(config, metrics: Mapping[str, float], manifest: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Rows ``metric, measured, published, comparable, why`` for every figure the paper gives for this config."""
    figures = PUBLISHED.get((config.dataset, config.ablation), {})
    if not figures:
        return [{"metric": "(all)", "measured": None, "published": None, "comparable": False,
                 "why": f"the paper publishes no figure for dataset {config.dataset!r}, ablation {config.ablation!r}"}]
    differences = protocol_differences(config, manifest)
    rows = []
    for metric, value in figures.items():
        why = list(differences)
        name = metric.split("/")[0]
        if metric not in metrics:
            why.append(f"not measured (pass --option {name}=FILE)" if name in ("lpips", "fvd") else "not measured")
        rows.append({"metric": metric, "measured": metrics.get(metric), "published": value, "comparable": not why,
                     "why": "; ".join(why) or "same protocol"})
    return rows


def validation_manifest(config) -> dict[str, Any]:
    """The protocol of the ``val/psnr`` that training reports (models/srvp/train.py ``validate``, docs/srvp.md §3), in
    the shape of an evaluation manifest (models/srvp/evaluate.py ``manifest``), for :func:`protocol_differences`."""
    clips = config.n_iter_test * config.batch_size_test
    moving_mnist = config.dataset in ("smmnist", "mmnist")
    return {
        # models/moving_mnist.py digits_for: without data_dir, Moving MNIST is drawn from the stand-in digits
        "test_set": {"dataset": config.dataset, "stand_in": moving_mnist and not config.data_dir, "n_test_requested": clips,
                     "source": "validation fold of the training data",
                     "validation": f"validation during training: {clips} clips of the training data's validation fold, "
                                   "not the test set, best sample chosen on the PSNR of all frames"},
        "frames": {"conditioning": config.nt_cond, "predicted": config.seq_len_test - config.nt_cond},
        "samples": {"n": config.n_samples_test},
        "euler_steps": {"test": config.n_euler_steps},
        "metrics": {"psnr": "10 log10(1 / MSE) per frame, clamped at 100 dB, mean over the predicted frames"},
    }


def row_protocols(config):
    """The summary-row metrics that estimate a published figure: training's ``val/psnr`` is a ``psnr/model``."""
    return [("val/psnr", "psnr/model", validation_manifest(config))]


def paper(table, evaluations=None):
    """``dynagen results SWEEP --analysis paper`` (models/paper.py): each group's measured figures beside the paper's."""
    from dynagen.models.paper import sweep_comparison
    from dynagen.models.srvp.experiment import SRVPConfig

    return sweep_comparison(table, evaluations, config_class=SRVPConfig, compare=compare, row_protocols=row_protocols,
                            experiment="srvp")
