"""Published figures beside measured ones: comparability follows the evaluation manifest's protocol."""

from __future__ import annotations

import copy

import pyarrow as pa
import pytest

from dynagen.models.gantk.published import ENERGY, paper
from dynagen.models.pde.experiment import PDEConfig
from dynagen.models.pde.published import compare as pde_compare
from dynagen.models.srvp.experiment import PRESETS, SRVPConfig
from dynagen.models.srvp.published import compare as srvp_compare

PAPER_MANIFEST = {  # what `dynagen evaluate srvp` writes for the paper's stochastic Moving MNIST protocol
    "test_set": {"source": "fixed test set /data/mnist/smmnist_test_2digits_64.npz", "stand_in": False,
                 "n_test_requested": None},
    "frames": {"conditioning": 5, "predicted": 20}, "samples": {"n": 100}, "euler_steps": {"test": 1},
    "metrics": {"ssim": {"convention": "srvp"}},
}


def test_srvp_paper_protocol_is_comparable_and_each_deviation_is_named():
    config = SRVPConfig(**PRESETS["smmnist"])
    rows = {r["metric"]: r for r in srvp_compare(config, {"psnr/model": 17.0, "ssim/model": 0.78}, PAPER_MANIFEST)}
    assert rows["psnr/model"]["published"] == 16.93 and rows["ssim/model"]["published"] == 0.7799
    assert all(r["comparable"] for r in rows.values())
    stand_in = copy.deepcopy(PAPER_MANIFEST)
    stand_in["test_set"].update(stand_in=True, source="test set built from sklearn digits (a stand-in, NOT MNIST)")
    stand_in["samples"]["n"] = 20
    row = srvp_compare(config, {"psnr/model": 17.0, "ssim/model": 0.78}, stand_in)[0]
    assert not row["comparable"] and "stand-in" in row["why"] and "samples 20 (paper 100)" in row["why"]
    gru = SRVPConfig(**PRESETS["mmnist-deterministic"], ablation="gru")
    assert {r["metric"]: r["published"] for r in srvp_compare(gru, {}, None)} == {"psnr/model": 13.17, "ssim/model": 0.6237}


def test_srvp_kth_figures_need_the_network_files():
    config = SRVPConfig(**PRESETS["kth"], data_dir="/data/kth")
    manifest = copy.deepcopy(PAPER_MANIFEST)
    manifest.update(frames={"conditioning": 10, "predicted": 30}, euler_steps={"test": 2})
    rows = {r["metric"]: r for r in srvp_compare(config, {"psnr/model": 29.0}, manifest)}
    assert rows["psnr/model"]["comparable"] and rows["fvd/model"]["published"] == 222.0
    assert not rows["fvd/model"]["comparable"] and "--option fvd=FILE" in rows["fvd/model"]["why"]


def test_pde_wave_reference_needs_the_40_frame_protocol():
    manifest = {"test_set": {"all_windows": True, "windows": 2700}, "frames": {"predicted": 40}}
    metrics = {"mse/copy_last": 0.02, "mse/model/1-20": 0.001, "mse/copy_last/1-20": 0.012}
    rows = pde_compare(PDEConfig(), metrics, manifest)
    assert rows[0]["comparable"] and rows[0]["published"] == 2.0e-2
    assert not rows[1]["comparable"]  # the undefined temporal-mean baseline
    assert rows[2]["comparable"] and rows[2]["measured"] == pytest.approx(0.001 / 0.012) and rows[2]["why"] == "held"
    cpu = pde_compare(PDEConfig(n_sequences=100, resolution=32), metrics, {**manifest, "frames": {"predicted": 20}})
    assert not cpu[0]["comparable"] and "n_sequences 100" in cpu[0]["why"] and "20 predicted frames" in cpu[0]["why"]


def test_gantk_paper_analysis_marks_each_published_ordering_held_or_not():
    protocol = {"config.target": "eight_gaussians", "config.n_particles": 500, "config.n_targets": 500,
                "config.lr": 1000.0, "config.t": 1.0}
    energies = {"relu_highbias": 4e-5, "relu": 2e-4, "rbf": 1e-4, "sigmoid": 1.05}  # rbf below relu: not as published
    rows = [{"kind": "step", "status": "running", "step": step, "config.arch": arch, "config.width": 0,
             "config.loss": "ipm", "energy": value * (1 + 0.1 * seed), "seed": seed, **protocol}
            for arch, value in energies.items() for seed in (0, 1) for step in (100, 1000)]
    table = paper(pa.Table.from_pylist(rows)).to_pandas().set_index("ordering")
    held = table["held"].to_dict()
    assert held["energy arch=relu_highbias < arch=relu at step 1000 (width 0)"] == "yes"
    assert held["energy arch=relu < arch=rbf at step 1000 (width 0)"] == "NO"
    assert held["energy arch=rbf < arch=relu_nobias at step 1000 (width 0)"] == "not in sweep"
    assert held["energy loss=ipm < loss=lsgan at step 100 (width 0)"] == "not in sweep"
    assert (table.loc[table["held"] != "not in sweep", "comparable"] == "yes").all()
    assert str(ENERGY["relu"][1000]) in table.loc["energy arch=relu < arch=rbf at step 1000 (width 0)", "published"]
