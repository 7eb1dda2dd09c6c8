"""Training and evaluation end to end with LocalContext (no Ray), on simulated WaveEq data."""

import json

import numpy as np
import pytest
import yaml
import torch
from PIL import Image

from dynagen.models.pde.data import make_dataset
from dynagen.models.pde.experiment import EXPERIMENT, PDEConfig
from dynagen.models.pde.model import build_model
from dynagen.platform import cli
from dynagen.platform.context import LocalContext, load_state

TINY = dict(
    n_sequences=10, resolution=32, nt_pred=10, test_horizon=12, enc_hidden_size=64, dec_hidden_size=64,
    res_hidden_size=32, code_size_s=16, code_size_t=16, batch_size=32, log_every=10, lr=1e-3,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pde_run")
    config = PDEConfig(**TINY, steps=120)
    ctx = LocalContext(run_dir)
    final = EXPERIMENT.train(config, ctx)
    ctx.close()
    return config, ctx, final


def test_loss_decreases_and_checkpoint_is_written(trained):
    config, ctx, final = trained
    losses = [row["loss"] for row in ctx.history]
    assert [row["step"] for row in ctx.history] == [*range(10, 121, 10)]  # updates counted from 1 (docs/platform.md)
    # The first ~60 steps sit at the "mean frame" plateau (45 · 0.018); learning the dynamics breaks it.
    assert np.mean(losses[-2:]) < 0.6 * losses[0]
    assert final["loss"] == ctx.history[-1]["loss"] and set(final) >= {"loss/ae", "loss/s", "loss/pred", "loss/t", "lr"}
    state = load_state(ctx.checkpoint_dir)
    assert state["_step"] == 120 and set(state["model"]) and state["config"]["steps"] == 120
    image = np.asarray(Image.open(ctx.run_dir / "predictions_step0000120.png"))
    assert image.shape == (4 * 2 * 34, 15 * 34, 3)  # 4 sequences × (truth, prediction) × (5 + 10) frames, 1-px pad


def test_evaluate_reports_model_baselines_swap_and_writes_files(trained, tmp_path):
    config, ctx, _ = trained
    results = EXPERIMENT.evaluate(config, load_state(ctx.checkpoint_dir), tmp_path, batch_size=100)
    test = make_dataset(config, train=False, horizon=12)
    assert results["samples"] == len(test) == 2 * (150 - 17 + 1)
    for method in ("model", "copy_last", "mean_frame"):
        assert results[f"mse/{method}"] > 0
        assert f"mse/{method}/t+10" in results and f"mse/{method}/1-10" in results
    copy_last = np.mean([((target - cond[-1:]) ** 2).mean().item() for cond, target in (test[i] for i in range(len(test)))])
    assert results["mse/copy_last"] == pytest.approx(copy_last, rel=1e-5)
    assert results["mse/model/t+1"] < results["mse/model/t+10"]  # errors grow with the horizon
    assert results["swap/mse"] > 0
    curves = np.genfromtxt(tmp_path / "mse_per_horizon.csv", delimiter=",", names=True)
    assert len(curves) == 12 and curves["model"].mean() == pytest.approx(results["mse/model"], rel=1e-5)
    gif = Image.open(tmp_path / "predictions.gif")
    assert gif.n_frames == 5 + 12
    assert Image.open(tmp_path / "predictions.png").size[0] == 17 * 34


def test_dynagen_evaluate_passes_samples_and_options(trained, tmp_path):
    config, ctx, _ = trained
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    code = cli.main(["evaluate", "pde", "--checkpoint", str(ctx.checkpoint_dir), "--config", str(tmp_path / "config.yaml"),
                     "--samples", "20", "--option", "batch_size=8", "--option", "horizon=6", "--out", str(tmp_path / "eval")])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert code == 0 and metrics["samples"] == 20 and "mse/model/t+5" in metrics and "mse/model/t+10" not in metrics
    manifest = metrics["manifest"]
    assert manifest["frames"]["predicted"] == 6 and manifest["test_set"]["windows"] == 20
    assert not manifest["test_set"]["all_windows"] and len(manifest["checkpoint"]["sha256"]) == 64


def test_resume_continues_after_the_checkpointed_step(trained, tmp_path):
    config, ctx, _ = trained
    import shutil

    shutil.copytree(ctx.checkpoint_dir, tmp_path / "checkpoint")
    resumed = LocalContext(tmp_path, tensorboard=False)
    EXPERIMENT.train(config.model_copy(update={"steps": 131}), resumed)
    assert [row["step"] for row in resumed.history] == [130, 131]
    # Epochs (the learning-rate clock, docs/pde.md §3) go on from the step: update s (counted from 1) falls in epoch
    # (s - 1) // batches per epoch, as in the uninterrupted run, not in epoch 0 again.
    per_epoch = -(-len(make_dataset(config, train=True)) // config.batch_size)
    assert per_epoch < 120  # the resumed run starts beyond the first epoch
    for row in [*ctx.history, *resumed.history]:
        assert row["epoch"] == (row["step"] - 1) // per_epoch


def test_a_diverged_run_stops_without_checkpointing_it(trained, tmp_path):
    config, ctx, _ = trained
    state = load_state(ctx.checkpoint_dir)
    name = next(k for k in state["model"] if k.endswith("weight"))
    state["model"][name].fill_(float("nan"))
    (tmp_path / "checkpoint").mkdir()
    torch.save(state, tmp_path / "checkpoint" / "state.pt")
    with pytest.raises(FloatingPointError, match="loss nan at step 121: training diverged"):
        EXPERIMENT.train(config.model_copy(update={"steps": 121}), LocalContext(tmp_path, tensorboard=False))
    assert load_state(tmp_path / "checkpoint")["_step"] == 120


def test_odeint_temporal_model_trains_its_vector_field_through_the_adjoint(tmp_path):
    config = PDEConfig(**TINY, steps=6, temporal_model="odeint", ode_method="rk4", adjoint=True)
    ctx = LocalContext(tmp_path, tensorboard=False)
    final = EXPERIMENT.train(config, ctx)
    assert np.isfinite(final["loss"])
    torch.manual_seed(config.seed)  # train() seeds with seed + rank before building the model
    initial = build_model(config).temporal.state_dict()
    trained = load_state(ctx.checkpoint_dir)["model"]
    for name, value in initial.items():
        assert not torch.equal(trained[f"temporal.{name}"], value), name
