"""Ray Train launcher on a real local Ray (2 CPUs): DDP over 2 workers, checkpoints, a worker
failure recovered from the latest checkpoint, resuming a stopped run, the JAX-style Tune trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynagen.platform import registry
from dynagen.platform.context import load_state
from dynagen.platform.context import tensorboard_without_tensorflow
from dynagen.platform.launch import run_training
from dynagen.platform.results import read_results
from tests.experiments import TOY, TOY_JAX, ToyConfig

registry.register(TOY)
registry.register(TOY_JAX)


def _scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    tensorboard_without_tensorflow()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_two_workers_fail_once_and_resume_from_latest_checkpoint(ray_cluster, tmp_path):
    marker = tmp_path / "failed-once"
    config = ToyConfig(steps=40, log_every=5, batch_size=32, fail_at_step=27, fail_rank=1, fail_marker=str(marker))
    result = run_training(TOY, config, workers=2, storage=str(tmp_path / "runs"), name="ddp",
                          checkpoint_every=10, keep_checkpoints=2, max_failures=1, progress_every_s=0.5)

    assert marker.exists(), "the injected failure did not happen"
    rows = read_results(str(tmp_path / "runs"), "ddp").to_pandas()
    steps = rows[rows["kind"] == "step"].set_index("step")
    # The second attempt began right after the latest checkpoint (step 20), not at step 0.
    assert steps.loc[25, "start_step"] == 21 and steps.loc[39, "start_step"] == 21
    summary = rows[rows["kind"] == "summary"]
    assert summary["status"].tolist() == ["completed"] and summary["step"].tolist() == [39]
    assert summary["config.batch_size"].tolist() == [32] and summary["seed"].tolist() == [0]
    # Training really trained: the loss fell by far from its first value, on both attempts' rows.
    assert steps.loc[39, "loss"] < 0.2 * steps.loc[0, "loss"]
    assert result.metrics["weight_error"] == pytest.approx(json.loads((result.run_dir / "metrics.json").read_text())["weight_error"])
    assert result.metrics["torch_threads"] == 1  # each worker runs on the threads of its 1 reserved CPU
    assert result.metrics["niceness"] == 0  # not Ray's default 15 for workers

    state = load_state(result.checkpoint_path)
    assert state["_step"] == 39 and state["_config"]["fail_at_step"] == 27
    kept = sorted(p.name for p in result.run_dir.glob("checkpoint_0*"))
    assert kept == ["checkpoint_000000030", "checkpoint_000000039"]  # keep_checkpoints=2
    # TensorBoard from rank 0 only, readable back, covering both attempts.
    logged = dict(_scalars(result.run_dir, "loss"))
    assert {0, 20, 25, 39} <= set(logged) and logged[39] == pytest.approx(steps.loc[39, "loss"], rel=1e-5)


def test_resume_continues_a_failed_run_from_its_checkpoint(ray_cluster, tmp_path):
    import ray.train

    storage = str(tmp_path / "runs")
    config = ToyConfig(steps=20, log_every=2, fail_at_step=13, fail_marker=str(tmp_path / "marker"))
    with pytest.raises(ray.train.TrainingFailedError):
        run_training(TOY, config, storage=storage, name="stopped", checkpoint_every=4, max_failures=0)
    assert read_results(storage, "stopped", kind="summary")["status"].to_pylist() == ["error"]

    result = run_training(TOY, config, storage=storage, resume="stopped", checkpoint_every=4)
    rows = read_results(storage, "stopped", kind="step").to_pandas().set_index("step")
    assert rows.loc[19, "start_step"] == 13  # latest checkpoint was step 12
    assert rows.loc[2, "start_step"] == 0
    assert load_state(result.checkpoint_path)["_step"] == 19


def test_jax_backend_runs_as_a_tune_trial(ray_cluster, tmp_path):
    storage = str(tmp_path / "runs")
    result = run_training(TOY_JAX, ToyConfig(steps=60, log_every=10, lr=0.1), storage=storage, name="jaxrun", checkpoint_every=20)
    assert result.metrics["weight_error"] < 0.1  # gradient descent on a well-conditioned least squares
    summary = read_results(storage, "jaxrun", kind="summary").to_pylist()
    assert [row["status"] for row in summary] == ["completed"] and summary[0]["trial_id"] == "jaxrun"
    assert load_state(result.checkpoint_path)["_step"] == 59
    assert [step for step, _ in _scalars(result.run_dir, "loss")] == [0, 10, 20, 30, 40, 50, 59]
