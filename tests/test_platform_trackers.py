"""`--tracker mlflow` and `--tracker wandb`: a real GAN(TK)² run (it writes flow plots) sent to MLflow's local file
store and to an offline W&B run, both read back: parameters, the metrics of every report, the plots. Nothing
reaches the network (MLflow: a file store under the storage root; W&B: offline mode)."""

from __future__ import annotations

import pytest

from dynagen.platform.launch import train_locally

CONFIG = {"target": "eight_gaussians", "arch": "relu", "loss": "ipm", "width": 0, "n_particles": 32, "n_targets": 32,
          "lr": 64.0, "t": 1.0, "steps": 20, "log_every": 10}


def test_mlflow_store_holds_params_metrics_at_every_report_and_plots(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    storage = tmp_path / "runs"
    result = train_locally("gan-ntk", CONFIG, storage=str(storage), name="tracked", tracker="mlflow")
    client = MlflowClient(tracking_uri=(storage / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("gan-ntk")  # a single run: grouped by its experiment
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["lr"] == "64.0" and run.data.params["arch"] == "relu"
    history = client.get_metric_history(run.info.run_id, "sinkhorn")
    assert [m.step for m in history] == [0, 10, 20]  # every report, at its step
    assert history[-1].value == pytest.approx(result.metrics["sinkhorn"])
    plots = [a.path for a in client.list_artifacts(run.info.run_id, "plots")]
    assert "plots/flow_00000020.png" in plots, plots


def test_wandb_offline_run_files_hold_the_config_metrics_and_images(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline unless the user says otherwise
    monkeypatch.setenv("WANDB_API_KEY", "")  # no credentials: an attempt to reach the service would fail
    storage = tmp_path / "runs"
    result = train_locally("gan-ntk", CONFIG, storage=str(storage), name="wandbed", tracker="wandb")
    (offline,) = (result.run_dir / "wandb").glob("offline-run-*")
    (records,) = offline.glob("run-*.wandb")
    data = records.read_bytes()  # protobuf records: strings are stored as they are
    for text in (b"wandbed", b"gan-ntk", b"sinkhorn", b'"relu"', b"plots/flow_00000020"):
        assert text in data, text
    images = list((offline / "files" / "media" / "images").rglob("*.png"))
    assert len(images) >= 2, images  # the flow plots at steps 0 and 20
