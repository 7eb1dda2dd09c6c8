"""Sweeps on a real local Ray: Optuna + ASHA over grid axes and seeds, rows read back and
aggregated; an interrupted sweep (its process killed) resumed with no trial run twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dynagen.platform import registry
from dynagen.platform.analysis import summarize
from dynagen.platform.results import read_results, results_dir
from dynagen.platform.sweep import load_sweep_spec, run_sweep
from tests.experiments import TOY, TOY_JAX

registry.register(TOY)
registry.register(TOY_JAX)
ROOT = Path(__file__).resolve().parents[1]


def _write_spec(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def test_asha_stops_a_trial_that_falls_behind_at_a_rung(ray_cluster, tmp_path):
    # One trial at a time, in grid order: the first (lr 0.3) sets the rung values; the second
    # (lr 1e-4) has barely moved from its initial loss at step 8, below ASHA's cutoff, so it must stop.
    spec = load_sweep_spec(str(_write_spec(
        tmp_path / "toy_asha.yaml", experiment="toy", fixed={"steps": 24, "log_every": 4},
        space={"lr": {"grid": [0.3, 0.0001]}}, seeds=[0], metric="loss", mode="min",
        scheduler={"type": "asha", "max_t": 24, "grace_period": 8, "reduction_factor": 2},
        resources={"cpu": 1, "workers": 1}, max_concurrent=1, checkpoint_every=0,
    )))
    storage = str(tmp_path / "runs")
    run_sweep(spec, storage=storage)
    summary = read_results(storage, "toy_asha", kind="summary").to_pandas().set_index("config.lr")
    assert summary.loc[0.3, "status"] == "completed" and summary.loc[0.3, "step"] == 23
    assert summary.loc[0.0001, "status"] == "stopped" and 8 <= summary.loc[0.0001, "step"] < 16


def test_optuna_asha_sweep_rows_are_read_back_and_aggregated(ray_cluster, tmp_path):
    from scipy import stats

    spec = load_sweep_spec(str(_write_spec(
        tmp_path / "toy_optuna.yaml", experiment="toy", fixed={"steps": 24, "log_every": 4},
        space={"lr": {"loguniform": [0.01, 0.3]}, "optimizer": {"grid": ["sgd", "adam"]}},
        seeds=[0, 1, 2], num_samples=1, metric="loss", mode="min",
        scheduler={"type": "asha", "max_t": 24, "grace_period": 8, "reduction_factor": 2},
        resources={"cpu": 1, "workers": 1}, max_concurrent=2, checkpoint_every=8,
    )))
    assert spec.name == "toy_optuna" and spec.num_trials() == 6
    storage = str(tmp_path / "runs")
    run_sweep(spec, storage=storage)

    summary = read_results(storage, "toy_optuna", kind="summary").to_pandas()
    assert len(summary) == 6 and summary["trial_id"].is_unique
    assert set(summary["status"]) <= {"completed", "stopped"} and (summary["status"] == "completed").any()
    assert (summary.loc[summary["status"] == "completed", "step"] == 23).all()
    assert (summary.loc[summary["status"] == "stopped", "step"] < 23).all()
    # Grid axis exhaustive, every sampled configuration once per seed, sampled lr inside its bounds.
    for optimizer, group in summary.groupby("config.optimizer"):
        assert sorted(group["seed"]) == [0, 1, 2] and group["config.lr"].nunique() == 1
    assert set(summary["config.optimizer"]) == {"sgd", "adam"}
    assert summary["config.lr"].between(0.01, 0.3).all()

    # Per-step rows: every trial logged steps 0, 4, ... up to where it ended.
    steps = read_results(storage, "toy_optuna", kind="step").to_pandas()
    for trial_id, rows in steps.groupby("trial_id"):
        last = summary.set_index("trial_id").loc[trial_id, "step"]
        assert rows["step"].max() == last and rows["step"].min() == 0

    # Aggregation: mean and Student-t 95 % CI over the three seeds of each group, checked
    # against scipy's interval on the same rows.
    table = summarize(storage, "toy_optuna", metrics=["loss"])
    assert len(table) == 2 and all(row["trials"] == 3 for row in table)
    for row in table:
        losses = summary.loc[summary["config.optimizer"] == row["optimizer"], "loss"]
        low, high = stats.t.interval(0.95, len(losses) - 1, loc=losses.mean(), scale=stats.sem(losses))
        assert row["loss mean"] == pytest.approx(losses.mean())
        assert row["loss ci95"] == pytest.approx((high - low) / 2)


def test_a_metric_measured_at_some_reports_only_drives_optuna_and_asha(ray_cluster, tmp_path):
    # As SRVP's val/psnr: the metric comes every val_every steps, training losses at every report. Tune's strict
    # metric check and Ray's OptunaSearch would fail the trials on the first report without it.
    spec = load_sweep_spec(str(_write_spec(
        tmp_path / "toy_sparse.yaml", experiment="toy", fixed={"steps": 24, "log_every": 4, "val_every": 8},
        space={"lr": {"loguniform": [0.01, 0.3]}}, seeds=[0], num_samples=2, metric="val_error", mode="min",
        scheduler={"type": "asha", "max_t": 24, "grace_period": 8, "reduction_factor": 2},
        resources={"cpu": 1, "workers": 1}, max_concurrent=1, checkpoint_every=0,
    )))
    storage = str(tmp_path / "runs")
    run_sweep(spec, storage=storage)
    summary = read_results(storage, "toy_sparse", kind="summary").to_pandas()
    assert len(summary) == 2 and set(summary["status"]) <= {"completed", "stopped"}, summary[["status", "reason"]]
    assert summary["val_error"].notna().all() and summary["config.lr"].nunique() == 2
    steps = read_results(storage, "toy_sparse", kind="step").to_pandas()
    measured = steps.dropna(subset=["val_error"])
    assert set(measured["step"]) <= {0, 8, 16, 23} and len(measured) < len(steps)


def test_results_dataset_reads_in_pandas_duckdb_and_polars(ray_cluster, tmp_path):
    import duckdb
    import pandas as pd
    import polars as pl

    spec = load_sweep_spec(str(_write_spec(
        tmp_path / "grid.yaml", experiment="toy-jax", fixed={"steps": 12, "log_every": 3},
        space={"lr": {"grid": [0.05, 0.1]}}, seeds=[0, 1], metric="loss", mode="min", max_concurrent=2,
    )))
    storage = str(tmp_path / "runs")
    run_sweep(spec, storage=storage)
    _, root = results_dir(storage, "grid")
    expected = read_results(storage, "grid", dedupe=False).num_rows
    assert expected == 4 * (5 + 1)  # per trial: step rows at 0, 3, 6, 9, 11 and one summary row
    frame = pd.read_parquet(root)
    assert len(frame) == expected and set(frame["experiment"]) == {"toy-jax"}
    pattern = f"{root}/**/*.parquet"
    duck = duckdb.sql(f"select kind, count(*) as n, count(distinct trial_id) as trials from read_parquet('{pattern}', "
                      "hive_partitioning=true, union_by_name=true) group by kind order by kind").fetchall()
    assert duck == [("step", 20, 4), ("summary", 4, 4)]
    files = sorted(str(path) for path in Path(root).rglob("*.parquet"))
    polars = pl.concat([pl.read_parquet(path, hive_partitioning=True) for path in files], how="diagonal_relaxed")
    summary = polars.filter(pl.col("kind") == "summary").sort(["config.lr", "seed"])
    assert summary["config.lr"].to_list() == [0.05, 0.05, 0.1, 0.1] and summary["seed"].to_list() == [0, 1, 0, 1]
    assert (summary["status"] == "completed").all()


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(ray_cluster, tmp_path):
    storage = tmp_path / "runs"
    spec_path = _write_spec(
        tmp_path / "interrupted.yaml", experiment="toy-jax",
        fixed={"steps": 30, "log_every": 5, "step_seconds": 0.1},
        space={"lr": {"grid": [0.02, 0.05, 0.1]}}, seeds=[0, 1], metric="loss", mode="min",
        max_concurrent=1, checkpoint_every=10,
    )
    _, root = results_dir(str(storage), "interrupted")
    summaries = Path(root) / "experiment=toy-jax"
    process = subprocess.Popen([sys.executable, "-m", "tests.experiments", "sweep", str(spec_path), "--storage", str(storage)],
                               cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while len(list(summaries.glob("*-summary.parquet"))) < 2:
            assert process.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "no trial finished in time"
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the driver, its Ray and every trial: a hard stop
        process.wait()
    killed_at = time.time()
    finished_before = read_results(str(storage), "interrupted", kind="summary").to_pandas()
    assert 2 <= len(finished_before) < 6

    run_sweep(load_sweep_spec(str(spec_path)), storage=str(storage), resume=True)
    rows = read_results(str(storage), "interrupted", dedupe=False).to_pandas()
    summary = rows[rows["kind"] == "summary"]
    assert len(summary) == 6 and summary["trial_id"].is_unique and (summary["status"] == "completed").all()
    assert sorted(zip(summary["config.lr"], summary["seed"])) == [(lr, s) for lr in (0.02, 0.05, 0.1) for s in (0, 1)]
    # Trials finished before the kill were not run again: no row of theirs was written after it.
    again = rows[rows["trial_id"].isin(finished_before["trial_id"]) & (rows["wall_time"] > killed_at)]
    assert again.empty, again


def test_torch_trials_with_two_workers_run_as_ray_train_inside_tune(ray_cluster, tmp_path):
    spec = load_sweep_spec(str(_write_spec(
        tmp_path / "ddp.yaml", experiment="toy", fixed={"steps": 12, "log_every": 3},
        space={"lr": {"grid": [0.1]}}, seeds=[0], metric="loss", mode="min",
        resources={"cpu": 1, "workers": 2}, max_concurrent=1, checkpoint_every=6,
    )))
    storage = tmp_path / "runs"
    grid = run_sweep(spec, storage=str(storage))
    summary = read_results(str(storage), "ddp", kind="summary").to_pylist()
    assert [row["status"] for row in summary] == ["completed"] and summary[0]["step"] == 11
    trial_dir = storage / "ddp" / "trials" / summary[0]["trial_id"]
    assert sorted(p.name for p in trial_dir.glob("checkpoint_0*")) == ["checkpoint_000000006", "checkpoint_000000011"]
    # Tune saw the TorchTrainer's reports (rank 0's) through TuneReportCallback.
    assert grid[0].metrics["step"] == 11 and grid[0].metrics["loss"] == pytest.approx(summary[0]["loss"])
