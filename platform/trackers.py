"""Experiment trackers: ``--tracker mlflow`` / ``--tracker wandb`` on ``dynagen train`` and ``dynagen sweep``.

One tracker run per dynagen run or sweep trial, written by rank 0 only (the run's :class:`~dynagen.platform.run.Run`
owns it): the resolved config as parameters, every report's metrics at its step, and at the end the run's plots,
sample images and GIFs. Runs of one sweep are grouped (MLflow: one experiment named after the sweep; W&B: the
sweep as the run group). Nothing reaches the network unless the user says so:

* MLflow writes a local file store, ``<storage>/mlruns``, unless ``MLFLOW_TRACKING_URI`` names another;
* W&B runs offline (files under ``<run folder>/wandb``, ``wandb sync`` uploads them later) unless ``WANDB_MODE``
  says otherwise.

Both are optional extras (``pip install 'dynagen[trackers]'``) imported only when chosen.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

ARTIFACT_TYPES = (".png", ".gif")
SKIPPED_FOLDERS = ("tensorboard", "wandb", "logs", "results")
WANDB_PROJECT = "dynagen"


def artifacts(run_dir: Path) -> list[Path]:
    """The run's plots, sample images and GIFs (not TensorBoard's, nor the trackers' own files)."""
    return sorted(p for p in Path(run_dir).rglob("*") if p.suffix in ARTIFACT_TYPES
                  and not set(p.relative_to(run_dir).parts[:-1]) & set(SKIPPED_FOLDERS))


class MlflowTracker:
    def __init__(self, *, storage: str, group: str, name: str, params: Mapping[str, Any], run_dir: Path):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or Path(storage, "mlruns").as_uri()
        # MLflow >= 3.x refuses the file store unless asked (its documented opt-out): it needs no database server
        # nor SQLAlchemy, and a folder under the storage root is what a researcher can copy or `mlflow ui` over.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(group)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(group)
            except Exception:  # another trial of the sweep created it first
                experiment_id = self.client.get_experiment_by_name(group).experiment_id
        else:
            experiment_id = experiment.experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=name, tags={"dynagen.group": group}).info.run_id
        self.client.log_batch(self.run_id, params=[Param(key, str(value)[:6000]) for key, value in params.items()])

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, float(value), now, step) for key, value in metrics.items()])

    def finish(self, status: str, run_dir: Path) -> None:
        for path in artifacts(run_dir):
            self.client.log_artifact(self.run_id, str(path), artifact_path=str(path.parent.relative_to(run_dir)) or None)
        self.client.set_terminated(self.run_id, status="FINISHED" if status == "completed" else "FAILED")


class WandbTracker:
    def __init__(self, *, storage: str, group: str, name: str, params: Mapping[str, Any], run_dir: Path):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=WANDB_PROJECT, group=group, name=name, config=dict(params), dir=str(run_dir),
                              mode=os.environ.get("WANDB_MODE", "offline"),
                              settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def finish(self, status: str, run_dir: Path) -> None:
        images = {str(path.relative_to(run_dir).with_suffix("")): self.wandb.Image(str(path)) for path in artifacts(run_dir)}
        if images:
            self.run.log(images)
        self.run.finish(exit_code=0 if status == "completed" else 1)


TRACKERS = {"mlflow": MlflowTracker, "wandb": WandbTracker}


def open_tracker(kind: str, **run: Any):
    return TRACKERS[kind](**run)
