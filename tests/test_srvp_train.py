"""SRVP end to end: training whose loss decreases (LocalContext), resume, evaluation against closed-form
baselines, no leakage of future frames at test (docs/srvp.md §7.6), config validation, and a 2-worker Ray Train run.

Data: stochastic Moving MNIST from scikit-learn's bundled digits upscaled (a stand-in for MNIST, no downloads).
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from dynagen.models.srvp.experiment import EXPERIMENT, PRESETS, SRVPConfig
from dynagen.platform.context import LocalContext, load_state

TINY = dict(nx=32, digit_size=14, max_speed=2, ndigits=1, nf=4, nhx=16, ny=4, nz=4, nh_inf=16, nh_res=16,
            nlayers_res=3, nt_inf=2, nt_cond=2, seq_len=5, seq_len_test=6, nt_gen=6, batch_size=8, lr=2e-3,
            steps=60, lr_scheduling_burnin=60, lr_scheduling_n_iter=10, log_every=10, val_interval=60, n_iter_test=1,
            batch_size_test=4, n_samples_test=2, n_samples=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("srvp-run")
    config = SRVPConfig(**TINY)
    ctx = LocalContext(run_dir, tensorboard=False)
    final = EXPERIMENT.train(config, ctx)
    return config, run_dir, ctx.history, final


def test_training_loss_decreases_and_checkpoints(trained):
    config, run_dir, history, final = trained
    assert [row["step"] for row in history] == [10, 20, 30, 40, 50, 60]
    # the Gaussian NLL carries a constant 0.9189 per pixel (sigma = 1): compare what training can reduce
    constant = 0.5 * np.log(2 * np.pi) * config.seq_len * config.nx**2
    first, last = history[0]["train/loss"] - constant, history[-1]["train/loss"] - constant
    assert last < 0.5 * first, (first, last)
    assert np.isfinite(final["val/psnr"]) and final["train/kl_z"] >= 0
    state = load_state(run_dir / "checkpoint")
    assert state["_step"] == 60 and set(state) >= {"model", "optimizer", "scheduler", "config"}
    assert (run_dir / "best" / "state.pt").exists()  # docs/srvp.md §3 model_best: the best validation score
    assert (run_dir / "samples" / "step_00000060.png").stat().st_size > 0  # truth vs best sample grid
    assert (run_dir / "samples" / "step_00000060.gif").stat().st_size > 0


def test_resume_continues_after_the_checkpoint(trained, tmp_path):
    config, run_dir, _, _ = trained
    ctx = LocalContext(tmp_path, tensorboard=False)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.pt").write_bytes((run_dir / "checkpoint" / "state.pt").read_bytes())
    EXPERIMENT.train(config.model_copy(update={"steps": 70}), ctx)
    assert [row["step"] for row in ctx.history] == [70]


def test_a_resume_keeps_the_best_validation_score(trained, tmp_path):
    # The best score is part of the checkpointed state, so after a resume a first validation worse than the best
    # before the interruption leaves best/ alone. Validation PSNR is clamped at 100 dB, so a stored best of 100
    # cannot be beaten; without a stored score (as before the fix) the same resumed run overwrites best/.
    config, run_dir, _, _ = trained
    state = load_state(run_dir / "checkpoint")
    assert state["best_score"] == load_state(run_dir / "best")["best_score"]  # the one validation so far (step 60)
    for stored, best_step in ((100.0, 60), (None, 70)):
        folder = tmp_path / str(stored)
        for name in ("checkpoint", "best"):
            (folder / name).mkdir(parents=True)
            (folder / name / "state.pt").write_bytes((run_dir / name / "state.pt").read_bytes())
        saved = load_state(folder / "checkpoint")
        if stored is None:
            del saved["best_score"]
        else:
            saved["best_score"] = stored
        torch.save(saved, folder / "checkpoint" / "state.pt")
        EXPERIMENT.train(config.model_copy(update={"steps": 70}), LocalContext(folder, tensorboard=False))
        assert load_state(folder / "best")["_step"] == best_step
    assert load_state(tmp_path / "100.0" / "checkpoint")["best_score"] == 100.0


def test_a_diverged_run_stops_without_checkpointing_it(trained, tmp_path):
    config, run_dir, _, _ = trained
    state = load_state(run_dir / "checkpoint")
    name = next(k for k in state["model"] if k.endswith("weight"))
    state["model"][name].fill_(float("nan"))
    torch.save(state, tmp_path / "state.pt")
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "state.pt").rename(tmp_path / "checkpoint" / "state.pt")
    with pytest.raises(FloatingPointError, match="non-finite weights at step 70"):
        EXPERIMENT.train(config.model_copy(update={"steps": 70}), LocalContext(tmp_path, tensorboard=False))
    assert load_state(tmp_path / "checkpoint")["_step"] == 60  # the diverged state was not saved


def test_evaluate_reports_model_and_closed_form_baselines(trained, tmp_path):
    config, run_dir, _, _ = trained
    metrics = EXPERIMENT.evaluate(config, load_state(run_dir / "checkpoint"), tmp_path, samples=3, n_test=10)
    assert metrics["n_test"] == 10 and metrics["samples"] == 3
    for name in ("model", "copy_last", "mean_frame", "all_black"):
        assert 0 <= metrics[f"ssim/{name}"] <= 1 and metrics[f"psnr/{name}"] > 0
    # all-black baseline from the saved test set, by hand: mean over clips of mean over frames of 10 log10(1/E[x^2])
    test_set = np.load(tmp_path / "smmnist_test_1digits_32.npz")["sequences"][config.nt_cond : config.nt_gen, :10] / 255.0
    expected = np.mean(10 * np.log10(1 / (test_set**2).mean((2, 3))), axis=0).mean()
    assert metrics["psnr/all_black"] == pytest.approx(expected, abs=1e-3)
    rows = list(csv.DictReader(open(tmp_path / "per_frame.csv")))
    assert len(rows) == config.nt_gen - config.nt_cond and float(rows[0]["frame"]) == config.nt_cond + 1
    for name in ("per_frame_psnr.png", "per_frame_ssim.png", "samples_0.png", "samples_0.gif"):
        assert (tmp_path / name).stat().st_size > 0


def test_no_leakage_of_future_frames(trained):  # docs/srvp.md §7.6
    from dynagen.models.srvp.evaluate import sample_predictions
    from dynagen.models.srvp.model import SRVP

    config, run_dir, _, _ = trained
    model = SRVP.from_config(config)
    model.load_state_dict(load_state(run_dir / "checkpoint")["model"])
    model.eval()
    x = torch.rand(8, 3, 1, 32, 32)

    def predictions(video):
        torch.manual_seed(0)
        return sample_predictions(model, video, config.nt_cond, 2, 1, 1)

    reference = predictions(x)
    future_changed = x.clone()
    future_changed[config.nt_cond :] = torch.rand_like(future_changed[config.nt_cond :])
    torch.testing.assert_close(predictions(future_changed), reference, rtol=0, atol=0)
    last_cond_changed = x.clone()
    last_cond_changed[config.nt_cond - 1] = 0
    assert not torch.allclose(predictions(last_cond_changed), reference)


def test_config_validation_names_fields_and_allowed_values():
    with pytest.raises(ValidationError, match="dataset") as error:
        SRVPConfig(dataset="cifar")
    assert "smmnist" in str(error.value) and "bair" in str(error.value)
    with pytest.raises(ValidationError, match="ablation"):
        SRVPConfig(ablation="lstm")
    with pytest.raises(ValidationError, match="nt_inf"):
        SRVPConfig(nt_inf=6, nt_cond=5)
    with pytest.raises(ValidationError, match="data_dir"):
        SRVPConfig(**PRESETS["kth"])
    with pytest.raises(ValidationError, match="n_euler_steps"):
        SRVPConfig(ablation="gru", n_euler_steps=2)
    with pytest.raises(ValidationError, match="unknown|extra"):
        SRVPConfig(not_a_field=1)
    for name, preset in PRESETS.items():
        SRVPConfig(**{**preset, "data_dir": "/data"} if preset.get("dataset") in ("kth", "human", "bair") else preset)


def test_two_worker_ray_train_run(ray_cluster, tmp_path):
    from dynagen.platform.launch import run_training

    config = SRVPConfig(**{**TINY, "steps": 20, "val_interval": 20, "lr_scheduling_burnin": 20})
    result = run_training("srvp", config, workers=2, storage=str(tmp_path), name="srvp-ddp", checkpoint_every=10)
    assert np.isfinite(result.metrics["train/loss"]) and np.isfinite(result.metrics["val/psnr"])
    state = load_state(result.checkpoint_path)
    assert state["_step"] == 20
    model_state = {k.removeprefix("module."): v for k, v in state["model"].items()}
    assert model_state["encoder.blocks.1.1.running_mean"].abs().sum() > 0  # BatchNorm statistics were trained
    metrics = EXPERIMENT.evaluate(config, state, tmp_path / "eval", samples=2, n_test=4)
    assert np.isfinite(metrics["psnr/model"])
