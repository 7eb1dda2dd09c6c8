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


def _rows(table) -> list[tuple]:
    frame = table.to_pandas()
    return sorted(tuple(map(str, row)) for row in frame[sorted(frame.columns)].to_numpy())  # column order may differ


def test_a_damaged_summary_is_refused_in_one_line_where_a_resume_reads_it(tmp_path):
    from dynagen.platform.results import ResultsError, read_summary

    writer = ResultsWriter(str(tmp_path), "demo", "toy", "t", {"seed": 0}, seed=0)
    writer.write_summary("completed", 3, {"loss": 0.5})
    assert read_summary(str(tmp_path), "demo", "toy", "t")["status"] == "completed"
    path = tmp_path / "demo" / "results" / "experiment=toy" / "t-summary.parquet"
    path.write_bytes(path.read_bytes()[:-40])  # cut short: its footer is gone
    with pytest.raises(ResultsError) as refused:
        read_summary(str(tmp_path), "demo", "toy", "t")
    message = str(refused.value)
    assert message.startswith(f"results: {path} is not a readable Parquet file") and "\n" not in message


def test_compaction_keeps_every_row_once_and_is_idempotent(tmp_path):
    from dynagen.platform.results import compact_results, read_summary

    storage = str(tmp_path)
    _fake_sweep(storage)  # six finished trials (completed and stopped), 4 files each
    errored = ResultsWriter(storage, "demo", "toy", "errored", {"seed": 0}, seed=0)
    errored.log_step(0, {"loss": 3.0})
    errored.write_summary("error", 0, {})
    running = ResultsWriter(storage, "demo", "toy", "running", {"seed": 0}, seed=0)
    running.log_step(0, {"loss": 4.0})
    running.flush()
    before, before_all = _rows(read_results(storage, "demo")), _rows(read_results(storage, "demo", dedupe=False))

    assert compact_results(storage, "demo") == 6 * 4
    folder = tmp_path / "demo" / "results" / "experiment=toy"
    names = sorted(p.name for p in folder.iterdir())
    assert len([n for n in names if n.startswith("part-")]) == 1
    # an errored trial is rerun by --resume and a running one is not finished: their files stay
    assert [n for n in names if not n.startswith("part-")] == ["errored-steps-000000000-000000000.parquet", "errored-summary.parquet",
                                                               "running-steps-000000000-000000000.parquet"]
    assert _rows(read_results(storage, "demo")) == before and _rows(read_results(storage, "demo", dedupe=False)) == before_all
    assert read_summary(storage, "demo", "toy", "relu-1")["status"] == "completed"  # found in the part
    assert compact_results(storage, "demo") == 0  # nothing new: nothing rewritten

    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "demo" / "results")) == len(before_all)  # other readers see each row once

    running.write_summary("completed", 0, {"loss": 4.0})  # finishes later (a resumed sweep): the next compaction takes it
    assert compact_results(storage, "demo") == 2
    assert len(read_results(storage, "demo", dedupe=False)) == len(before_all) + 1
    assert len(list((tmp_path / "demo" / "results").glob("_manifest-*.json"))) == 1


def test_readers_during_compactions_never_see_a_row_twice_nor_miss_one(tmp_path):
    """A reader thread reads the whole dataset again and again while compactions run (trials are added between
    them, under a lock that the reader holds while it reads: additions never overlap a read, compactions do)."""
    import threading

    from dynagen.platform.results import compact_results

    storage, lock, done = str(tmp_path), threading.Lock(), threading.Event()
    expected, reads, errors = [0], [], []

    def add_trials(first: int, n: int) -> None:
        with lock:
            for index in range(first, first + n):
                writer = ResultsWriter(storage, "live", "toy", f"t{index}", {"seed": 0}, seed=0, flush_rows=2)
                for step in range(4):
                    writer.log_step(step, {"loss": float(step)})
                writer.write_summary("completed", 3, {"loss": 3.0})
            expected[0] += 5 * n  # 4 step rows (2 files) and a summary row per trial

    def read_repeatedly() -> None:
        while not done.is_set():
            with lock:
                try:
                    reads.append((len(read_results(storage, "live", dedupe=False)), expected[0]))
                except Exception as error:  # noqa: BLE001 - asserted below
                    errors.append(error)

    add_trials(0, 8)
    reader = threading.Thread(target=read_repeatedly)
    reader.start()
    try:
        for round_ in range(5):
            compact_results(storage, "live")
            add_trials(8 + 3 * round_, 3)
    finally:
        done.set()
        reader.join()
    assert not errors, errors[0]
    assert len(reads) >= 3  # the reader really ran alongside the compactions
    assert all(count == present for count, present in reads)
    assert len(read_results(storage, "live", dedupe=False)) == expected[0] == 23 * 5
