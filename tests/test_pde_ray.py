"""A real 2-worker Ray Train (DDP) run of experiment ``pde`` on simulated WaveEq data."""

import numpy as np

from dynagen.models.pde.experiment import EXPERIMENT, PDEConfig
from dynagen.platform.context import load_state

TINY = dict(
    n_sequences=10, resolution=32, nt_pred=10, test_horizon=12, enc_hidden_size=32, dec_hidden_size=32,
    res_hidden_size=16, code_size_s=8, code_size_t=8, batch_size=32, steps=12, log_every=4,
)


def test_two_worker_ray_train_run_checkpoints_and_evaluates(ray_cluster, tmp_path):
    from dynagen.platform.launch import run_training

    result = run_training("pde", TINY, workers=2, storage=str(tmp_path / "runs"), name="pde-ddp", checkpoint_every=8)
    assert np.isfinite(result.metrics["loss"]) and result.metrics["loss/pred"] > 0
    state = load_state(result.checkpoint_path)
    assert state["_step"] == 12
    # DDP keeps both replicas identical; the checkpoint is the plain (unwrapped) model's state dict.
    assert all(not key.startswith("module.") for key in state["model"])
    assert list(result.run_dir.glob("predictions_step*.png"))  # rank 0's images
    config = PDEConfig(**TINY)
    metrics = EXPERIMENT.evaluate(config, state, tmp_path / "eval", samples=16)
    assert np.isfinite(metrics["mse/model"]) and metrics["samples"] == 16
