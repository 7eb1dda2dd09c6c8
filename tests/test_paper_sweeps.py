"""`dynagen results SWEEP --analysis paper` for SRVP and PDE sweeps: per group (the config without the seed), each
measured figure with a published one, the mean ± 95 % CI over seeds, the published value and comparable yes/no with
the protocol's reasons (models/paper.py, models/*/published.py), read from the printed output."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from dynagen.models.pde.experiment import PDEConfig
from dynagen.models.pde.published import COPY_LAST_40
from dynagen.models.srvp.published import PUBLISHED
from dynagen.platform import cli
from dynagen.platform.analysis import mean_and_ci95
from dynagen.platform.results import ResultsWriter, read_results

# A few SRVP steps on a tiny model: validation (val/psnr) at the last step on 2 clips with 2 samples.
SRVP_FIXED = {"steps": 2, "log_every": 1, "val_interval": 2, "n_iter_test": 1, "batch_size_test": 2, "n_samples_test": 2,
              "batch_size": 4, "seq_len": 6, "seq_len_test": 8, "nt_gen": 8, "n_samples": 2, "nf": 8, "nhx": 16,
              "ny": 4, "nh_inf": 16, "nh_res": 16}


def paper_rows(printed: str) -> list[dict[str, str]]:
    """The rows of the printed `paper:` table (columns are separated by two or more spaces)."""
    lines = printed.split("paper:\n", 1)[1].splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    rows = []
    for line in lines[2:]:
        if not line.strip() or line.startswith(("wrote", "means")):
            break
        rows.append(dict(zip(header, re.split(r"\s{2,}", line.strip()))))
    return rows


@pytest.fixture(scope="module")
def srvp_sweep(ray_cluster, tmp_path_factory):
    """A real 4-trial SRVP sweep (2 values of nz x 2 seeds) on the generated stand-in digits."""
    folder = tmp_path_factory.mktemp("srvp_paper")
    spec = folder / "srvp_paper.yaml"
    spec.write_text(yaml.safe_dump({
        "experiment": "srvp", "preset": "smmnist-cpu", "fixed": SRVP_FIXED, "space": {"nz": {"grid": [4, 6]}},
        "seeds": [0, 1], "metric": "train/loss", "mode": "min", "resources": {"cpu": 1, "workers": 1},
        "max_concurrent": 2, "checkpoint_every": 0,
    }))
    storage = str(folder / "runs")
    assert cli.main(["sweep", str(spec), "--storage", storage]) == 0
    return storage, read_results(storage, "srvp_paper", kind="summary").to_pandas()


def test_srvp_sweep_validation_psnr_beside_the_published_figure_not_comparable(srvp_sweep, capsys):
    storage, summary = srvp_sweep
    assert (summary["status"] == "completed").all() and summary["val/psnr"].notna().all()
    capsys.readouterr()
    assert cli.main(["results", "srvp_paper", "--storage", storage, "--analysis", "paper"]) == 0
    rows = paper_rows(capsys.readouterr().out)
    assert {(r["nz"], r["metric"], r["from"]) for r in rows} == {("4", "psnr/model", "val/psnr (training)"),
                                                                 ("6", "psnr/model", "val/psnr (training)")}
    for row in rows:
        mean, half_width, n = mean_and_ci95(summary.loc[summary["config.nz"] == int(row["nz"]), "val/psnr"])
        assert row["trials"] == str(n) == "2"
        assert row["measured mean"] == f"{mean:.4g}" and row["ci95"] == f"{half_width:.4g}"
        assert float(row["published"]) == PUBLISHED[("smmnist", "residual")]["psnr/model"]
        assert row["comparable"] == "no"
        assert "stand-in digits, not MNIST" in row["why"] and "validation during training: 2 clips" in row["why"]
        assert "samples 2 (paper 100)" in row["why"] and "predicted 3 (paper 20)" in row["why"]


def test_srvp_sweep_trial_evaluations_join_the_comparison(srvp_sweep, capsys):
    storage, summary = srvp_sweep
    trial = summary[summary["config.nz"] == 4].iloc[0]
    folder = f"{storage}/srvp_paper/trials/{trial['trial_id']}"
    assert cli.main(["evaluate", "srvp", "--checkpoint", f"{folder}/best", "--samples", "2", "--option", "n_test=4",
                     "--out", f"{folder}/eval"]) == 0
    evaluation = json.loads(open(f"{folder}/eval/metrics.json").read())
    capsys.readouterr()
    assert cli.main(["results", "srvp_paper", "--storage", storage, "--analysis", "paper"]) == 0
    rows = {(r["nz"], r["metric"], r["from"]): r for r in paper_rows(capsys.readouterr().out)}
    assert ("6", "psnr/model", "dynagen evaluate") not in rows  # nobody evaluated a trial of nz=6
    for metric in ("psnr/model", "ssim/model"):
        row = rows[("4", metric, "dynagen evaluate")]
        assert row["trials"] == "1" and row["measured mean"] == f"{evaluation[metric]:.4g}" and row["ci95"] == "-"
        assert float(row["published"]) == PUBLISHED[("smmnist", "residual")][metric] and row["comparable"] == "no"
        assert "stand-in digits, not MNIST" in row["why"] and "a subset of the test set (n_test=4)" in row["why"]
    assert rows[("4", "psnr/model", "val/psnr (training)")]["trials"] == "2"  # the training rows are still there


def test_pde_sweep_without_evaluations_says_so_in_one_line_then_compares_them(tmp_path, capsys):
    """Rows written through the real results writer as a trial writes them (platform/results.py ResultsWriter), and
    trial evaluations as `dynagen evaluate pde` writes them (metrics.json with its manifest): a real PDE sweep and its
    evaluation simulate WaveEq first, ~45 s each on 2 busy cores (models/pde/wave.py), too slow for the suite.
    PDE's training reports only losses (models/pde/train.py), so nothing maps before an evaluation."""
    storage, sweep = str(tmp_path / "runs"), "pde_paper"
    copy_last = {}
    for lambda_s in (1.0, 45.0):
        for seed in (0, 1):
            config = PDEConfig(n_sequences=10, resolution=32, nt_pred=10, test_horizon=12, lambda_s=lambda_s, seed=seed,
                               lr_milestones=[2, 3])
            trial_id = f"t{int(lambda_s)}_{seed}"
            writer = ResultsWriter(storage, sweep, "pde", trial_id, config.model_dump(), seed)
            writer.log_step(0, {"loss": 1.0, "loss/ae": 0.5})
            writer.write_summary("completed", 3, {"loss": 0.9 - 0.01 * seed, "loss/ae": 0.4, "lr": 4e-4})
            copy_last[trial_id] = 0.004 + 0.001 * seed + 1e-4 * lambda_s
    assert cli.main(["results", sweep, "--storage", storage, "--analysis", "paper"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("paper: no metric of this sweep maps to a published figure")
    assert "loss, loss/ae, lr" in printed[0] and "dynagen evaluate pde --checkpoint CHECKPOINT" in printed[0]

    for trial_id, value in copy_last.items():
        if trial_id == "t45_1":
            continue  # one trial not evaluated: its group's figure is over one trial
        document = {"mse/copy_last": value, "mse/mean_frame": 2 * value, "mse/model": value / 20,
                    "manifest": {"test_set": {"dataset": "wave", "stand_in": False, "windows": 268, "all_windows": True},
                                 "frames": {"conditioning": 5, "predicted": 12, "trained_horizon": 10}}}
        (tmp_path / "runs" / sweep / "trials" / trial_id / "eval").mkdir(parents=True)
        (tmp_path / "runs" / sweep / "trials" / trial_id / "eval" / "metrics.json").write_text(json.dumps(document))
    assert cli.main(["results", sweep, "--storage", storage, "--analysis", "paper"]) == 0
    rows = {(r["lambda_s"], r["metric"]): r for r in paper_rows(capsys.readouterr().out)}
    assert {metric for _, metric in rows} == {"mse/copy_last", "mse/mean_frame"}  # the 1-20 ratio was not scored
    one = rows[("1", "mse/copy_last")]
    mean, half_width, n = mean_and_ci95([copy_last["t1_0"], copy_last["t1_1"]])
    assert one["trials"] == "2" and one["measured mean"] == f"{mean:.4g}" and one["ci95"] == f"{half_width:.4g}"
    assert float(one["published"]) == COPY_LAST_40 and one["comparable"] == "no" and one["from"] == "dynagen evaluate"
    assert "n_sequences 10 (reference 300)" in one["why"] and "12 predicted frames (reference 40)" in one["why"]
    assert rows[("45", "mse/copy_last")]["trials"] == "1"
    assert rows[("45", "mse/copy_last")]["measured mean"] == f"{copy_last['t45_0']:.4g}"
    assert "undefined" in rows[("1", "mse/mean_frame")]["why"] and rows[("1", "mse/mean_frame")]["comparable"] == "no"
