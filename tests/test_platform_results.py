"""Results store and aggregation without Ray: real Parquet files written, read back by pandas,
DuckDB and polars, aggregated, and plotted through the `dynagen results` / `report` commands."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dynagen.platform import cli
from dynagen.platform.analysis import mean_and_ci95
from dynagen.platform.results import ResultsWriter, read_results, results_dir


def _fake_sweep(storage: str, sweep: str = "demo") -> dict[tuple[str, int], float]:
    """Two activations x three seeds; the loss curve of each trial decays to a known final value."""
    finals = {}
    for activation, offset in (("relu", 0.5), ("erf", 1.0)):
        for seed in range(3):
            trial = f"{activation}-{seed}"
            writer = ResultsWriter(storage, sweep, "toy", trial, {"activation": activation, "lr": 0.1, "model": {"width": 8}, "seed": seed},
                                   seed=seed, flush_rows=4)
            for step in range(10):
                metrics = {"loss": offset + 0.1 * seed + 1.0 / (step + 1)}
                if step % 3 == 0:
                    metrics["sinkhorn"] = 2.0 * metrics["loss"]  # logged less often: null elsewhere
                writer.log_step(step, metrics)
            finals[activation, seed] = offset + 0.1 * seed + 0.1
            writer.write_summary("completed" if seed < 2 else "stopped", 9, {"loss": finals[activation, seed], "psnr": 20.0 + seed})
    return finals


def test_rows_are_written_atomically_and_read_back_everywhere(tmp_path):
    import duckdb
    import pandas as pd
    import polars as pl

    storage = str(tmp_path)
    _fake_sweep(storage)
    _, root = results_dir(storage, "demo")
    files = sorted(p.name for p in (tmp_path / "demo" / "results" / "experiment=toy").iterdir())
    assert not [name for name in files if name.startswith(".")]  # no temp files left behind
    assert "relu-0-steps-000000000-000000003.parquet" in files and "relu-0-summary.parquet" in files  # flush every 4 rows

    table = read_results(storage, "demo")
    assert table.num_rows == 6 * 11
    columns = set(table.column_names)
    assert {"sweep_id", "trial_id", "status", "kind", "seed", "step", "wall_time", "experiment"} <= columns
    assert {"config.activation", "config.lr", "config.model.width", "loss", "sinkhorn", "psnr"} <= columns
    steps = read_results(storage, "demo", kind="step").to_pandas()
    assert steps["sinkhorn"].isna().sum() == 6 * 6 and steps["psnr"].isna().all()

    assert len(pd.read_parquet(root)) == 66
    count = duckdb.sql(f"select count(*) from read_parquet('{root}/**/*.parquet', hive_partitioning=true, union_by_name=true) "
                       "where kind = 'summary' and status = 'stopped'").fetchall()[0][0]
    assert count == 2
    files = sorted(str(path) for path in (tmp_path / "demo" / "results").rglob("*.parquet"))
    frame = pl.concat([pl.read_parquet(path, hive_partitioning=True) for path in files], how="diagonal_relaxed")
    assert frame.height == 66 and set(frame["experiment"].unique()) == {"toy"}


def test_restart_duplicates_are_dropped_keeping_the_latest(tmp_path):
    storage = str(tmp_path)
    first = ResultsWriter(storage, "s", "toy", "t", {"seed": 0}, seed=0)
    for step in range(6):
        first.log_step(step, {"loss": 1.0})
    first.flush()
    second = ResultsWriter(storage, "s", "toy", "t", {"seed": 0}, seed=0)  # resumed after step 3
    for step in range(4, 8):
        second.log_step(step, {"loss": 2.0})
    second.write_summary("completed", 7, {"loss": 2.0})
    steps = read_results(storage, "s", kind="step").to_pandas()
    assert steps["step"].tolist() == list(range(8))
    assert steps["loss"].tolist() == [1.0] * 4 + [2.0] * 4
    assert read_results(storage, "s", kind="step", dedupe=False).num_rows == 10


def test_mean_and_ci95_match_the_student_t_closed_form():
    from scipy import stats

    values = [1.0, 2.0, 4.0, 7.0]
    mean, half_width, n = mean_and_ci95(values)
    assert n == 4 and mean == pytest.approx(3.5)
    assert half_width == pytest.approx(stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2)
    assert math.isnan(mean_and_ci95([3.0])[1])


def test_results_and_report_commands(tmp_path, capsys):
    from PIL import Image
    import pandas as pd

    storage = str(tmp_path)
    finals = _fake_sweep(storage)
    assert cli.main(["results", "demo", "--storage", storage, "--metric", "loss"]) == 0
    printed = capsys.readouterr().out
    assert "activation" in printed and "loss mean" in printed and "loss ci95" in printed
    summary = pd.read_parquet(tmp_path / "demo" / "summary.parquet")
    csv = pd.read_csv(tmp_path / "demo" / "summary.csv")
    assert csv.columns.tolist() == summary.columns.tolist() and len(csv) == len(summary) == 2
    assert np.allclose(csv["loss mean"], summary["loss mean"])
    for _, row in summary.iterrows():  # default grouping: the varied key (activation), not seed
        expected = [finals[row["activation"], seed] for seed in range(3)]
        assert row["trials"] == 3 and row["completed"] == 2
        assert row["loss mean"] == pytest.approx(np.mean(expected))

    assert cli.main(["report", "demo", "--storage", storage, "--metric", "loss", "sinkhorn"]) == 0
    for name in ("loss", "sinkhorn"):
        with Image.open(tmp_path / "demo" / "plots" / f"{name}.png") as image:
            assert image.format == "PNG" and image.size[0] > 300

    assert cli.main(["results", "demo", "--storage", storage, "--group-by", "nope"]) == 2
    assert "group-by: unknown config key 'nope'; allowed: activation, lr, model.width, seed" in capsys.readouterr().err
    assert cli.main(["results", "missing", "--storage", storage]) == 2
    assert "sweep: no results for 'missing'" in capsys.readouterr().err
