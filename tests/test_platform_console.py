"""What a researcher sees and what a run records, through the real command line (subprocesses, output piped):
a short console (header, progress, final table; Ray's, Tune's and the libraries' output in the run's logs/,
`-v` shows it again), one line per ended sweep trial (a failed one with the path of its full log), and
provenance.json in every run and trial folder, with summary rows naming the code that produced them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from dynagen.platform.provenance import PACKAGES
from dynagen.platform.results import read_results

ROOT = Path(__file__).resolve().parents[1]
PROVENANCE_FIELDS = {"dynagen", "git_commit", "git_dirty", "python", "packages", "os", "host", "cpu_count", "gpus", "command",
                     "config_sha256", "data_source", "start_time", "end_time", "status"}


def _run(*args: str, timeout: float = 300) -> tuple[int, list[str]]:
    """``dynagen ARGS`` (test experiments registered) with stdout and stderr piped together: (exit code, lines)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "tests.experiments", *args], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env)
    return done.returncode, done.stdout.splitlines()


def _provenance(run_dir: Path) -> dict:
    document = json.loads((run_dir / "provenance.json").read_text())
    assert PROVENANCE_FIELDS <= set(document), PROVENANCE_FIELDS - set(document)
    assert set(document["packages"]) == set(PACKAGES) and document["packages"]["ray"] == "2.60.0"
    assert len(document["config_sha256"]) == 64 and document["start_time"] <= document["end_time"]
    return document


def test_local_run_shows_progress_and_records_its_provenance(tmp_path):
    storage = tmp_path / "runs"
    code, lines = _run("train", "toy", "--set", "steps=60", "--set", "log_every=5", "--set", "step_seconds=0.1",
                       "--local", "--storage", str(storage), "--name", "local1", "--cpus-per-worker", "1")
    assert code == 0, "\n".join(lines)
    progress = [line for line in lines if line.startswith("[toy local1] step ")]
    # 6 s of training: its first report, at least one line on the way (every 10 s at most on a pipe), the last
    assert len(progress) >= 2 and progress[-1].startswith("[toy local1] step 60/60 |") and "steps/s" in progress[-1], lines
    assert lines[0].startswith("toy run local1 | on this process (--local) | device cpu | data generated"), lines
    assert len(lines) <= 15, "\n".join(lines)
    run_dir = storage / "local1"
    document = _provenance(run_dir)
    assert document["status"] == "completed" and document["data_source"] == "generated"
    assert document["command"][1:4] == ["train", "toy", "--set"]
    assert (run_dir / "logs" / "local.log").is_file()
    summary = read_results(str(storage), "local1", kind="summary").to_pylist()[0]
    assert summary["dynagen_version"] == document["dynagen"] and summary["git_commit"] == document["git_commit"]


def test_ray_run_console_is_short_its_logs_are_in_the_run_folder_and_verbose_restores_them(tmp_path):
    storage = tmp_path / "runs"
    code, quiet = _run("train", "toy", "--set", "steps=20", "--storage", str(storage), "--name", "quiet")
    assert code == 0, "\n".join(quiet)
    # no Ray log records ("INFO worker.py:2038 -- ...") nor workers' forwarded output ("(pid=...)")
    assert len(quiet) <= 15 and not any(" -- " in line or "pid=" in line for line in quiet), "\n".join(quiet)
    assert quiet[-1].split()[0] == "weight_error"  # the final table ends the output
    run_dir = storage / "quiet"
    assert "Started a local Ray instance" in (run_dir / "logs" / "driver.log").read_text()
    assert (run_dir / "logs" / "rank-0.log").is_file()
    assert _provenance(run_dir)["status"] == "completed"

    code, verbose = _run("train", "toy", "--set", "steps=20", "--storage", str(storage), "--name", "loud", "-v")
    assert code == 0, "\n".join(verbose)
    assert any("Started a local Ray instance" in line for line in verbose), "\n".join(verbose)
    assert any(line.startswith("[toy loud] step 19/20") or "step 20/20" in line for line in verbose)
    assert not (storage / "loud" / "logs").exists()
    # Ray Train's placement-group cleaner polls the state API, which the embedded Ray does not serve (docs/platform.md,
    # "Ray Train's placement-group cleaner"): it is left out there, so none of its failures reach -v's output
    assert not any("PlacementGroupCleaner" in line or "Failed to query Ray Train Controller" in line for line in verbose), \
        "\n".join(verbose)


def test_sweep_prints_one_line_per_trial_and_a_failed_trial_names_its_full_log(tmp_path):
    marker = tmp_path / "failed-once"
    spec = tmp_path / "toy_console.yaml"
    spec.write_text(yaml.safe_dump({
        "experiment": "toy", "fixed": {"steps": 12, "log_every": 4, "fail_marker": str(marker)},
        "space": {"fail_at_step": {"grid": [-1, 5]}}, "seeds": [0], "metric": "loss", "mode": "min",
        "resources": {"cpu": 1, "workers": 1}, "max_concurrent": 1, "checkpoint_every": 0,
    }))
    storage = tmp_path / "runs"
    code, lines = _run("sweep", str(spec), "--storage", str(storage))
    assert code == 1, "\n".join(lines)  # a sweep with a failed trial ran, and says so in its exit code
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert len(trial_lines) == 2, "\n".join(lines)
    completed = next(line for line in trial_lines if " completed at step 11 | loss " in line)
    failed = next(line for line in trial_lines if " error: " in line)
    assert "fail_at_step=-1" in completed and "injected failure at step 5" in failed
    log = Path(failed.split("full log: ")[1].rstrip(")"))
    assert log.is_file() and "RuntimeError: injected failure" in log.read_text()  # the traceback is in the trial's log
    assert len(lines) <= 12, "\n".join(lines)
    sweep_dir = storage / "toy_console"
    assert (sweep_dir / "logs" / "driver.log").is_file()
    for trial in (sweep_dir / "trials").iterdir():
        assert _provenance(trial)["status"] in ("completed", "error")
    # through the reader: the sweep compacted its finished trials' files (platform/results.py, compact_results)
    summaries = read_results(str(storage), "toy_console", kind="summary").to_pylist()
    assert len(summaries) == 2 and all(row["dynagen_version"] for row in summaries)


def test_a_300_step_gan_ntk_run_through_the_embedded_ray_prints_at_most_15_lines(tmp_path):
    storage = tmp_path / "runs"
    code, lines = _run("train", "gan-ntk", "--preset", "eight_gaussians-cpu", "--set", "steps=300", "--storage", str(storage),
                       "--name", "gan")
    assert code == 0, "\n".join(lines)
    assert len(lines) <= 15, "\n".join(lines)  # issue 12's bound on a pipe
    assert any(line.startswith("[gan-ntk gan] step 300/300 | sinkhorn ") for line in lines), "\n".join(lines)
    # the run's timings fold into one line under the final table; metrics.json keeps every one of them
    assert lines[-1].startswith("time/* (s): compile ") and "| steps " in lines[-1], "\n".join(lines)
    final = json.loads((storage / "gan" / "metrics.json").read_text())
    assert {"time/compile", "time/steps"} <= set(final) and "sinkhorn" in final


SRVP_TINY = dict(nx=32, digit_size=14, max_speed=2, ndigits=1, nf=4, nhx=16, ny=4, nz=4, nh_inf=16, nh_res=16, nlayers_res=3,
                 nt_inf=2, nt_cond=2, seq_len=5, seq_len_test=6, nt_gen=6, batch_size=8, steps=10, lr_scheduling_burnin=10,
                 lr_scheduling_n_iter=10, log_every=5, val_interval=10, n_iter_test=1, batch_size_test=4, n_samples_test=2)
PDE_TINY = dict(n_sequences=10, resolution=32, nt_pred=10, test_horizon=12, enc_hidden_size=16, dec_hidden_size=16,
                res_hidden_size=8, code_size_s=4, code_size_t=4, batch_size=32, log_every=5, steps=10)
EVALUATIONS = {  # experiment: (train config, evaluate flags, the phase and its total)
    "srvp": (SRVP_TINY, ["--samples", "2", "--option", "n_test=24", "--option", "batch_size=4"], "test clips", 24),
    "pde": (PDE_TINY, ["--samples", "48", "--option", "batch_size=16"], "test windows", 48),
    "gan-ntk": ({"steps": 20}, ["--samples", "200"], "evaluation", 4),  # particles, initial particles, fresh targets, figure
}


@pytest.mark.parametrize("experiment", list(EVALUATIONS))
def test_evaluate_shows_its_progress_up_to_the_total_on_a_pipe(tmp_path, experiment):
    train_config, flags, phase, total = EVALUATIONS[experiment]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(train_config))
    preset = ["--preset", "eight_gaussians-cpu"] if experiment == "gan-ntk" else []
    code, lines = _run("train", experiment, *preset, "--config", str(tmp_path / "config.yaml"), "--local", "--storage",
                       str(tmp_path / "runs"), "--name", "tiny", "--cpus-per-worker", "1")
    assert code == 0, "\n".join(lines)
    code, lines = _run("evaluate", experiment, "--checkpoint", str(tmp_path / "runs" / "tiny"), *flags, "--out", str(tmp_path / "eval"))
    assert code == 0, "\n".join(lines)
    progress = [line for line in lines if line.startswith(f"[{experiment} evaluate] ")]
    counts = [tuple(map(int, line.split(f"{phase} ")[1].split(",")[0].split("/"))) for line in progress]
    # the phase's start, at most a line every 10 s on the way, and its end: counts that grow up to the total
    assert counts[0] == (0, total) and counts[-1] == (total, total), "\n".join(lines)
    assert [done for done, _ in counts] == sorted({done for done, _ in counts}), "\n".join(lines)
    assert lines.index(progress[-1]) < next(i for i, line in enumerate(lines) if line.startswith("evaluation of "))
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_a_validation_before_its_steps_report_shows_that_step_not_the_last_reported_one():
    """SRVP validates at step s before reporting s: its progress line says step s, without step s - log_every's
    metrics; a phase given no step (an evaluation after training) keeps the last reported step."""
    import io

    from dynagen.platform.console import ProgressDisplay
    from dynagen.platform.context import Progress

    stream = io.StringIO()
    progress = Progress("srvp tiny", 10, 0.0, display=ProgressDisplay("srvp tiny", every_s=0.0, terminal=False, stream=stream))
    progress.update(5, {"train/nll": 2.5}, final=False)
    for done in range(3):
        progress.phase("validation batches", done, 2, step=10)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[srvp tiny] step 5/10 | train/nll 2.5"), lines
    assert lines[-1].startswith("[srvp tiny] step 10/10 | ") and lines[-1].endswith("validation batches 2/2"), lines
    assert all("train/nll" not in line for line in lines[1:]), lines
    progress.update(10, {"train/nll": 1.5}, final=True)
    progress.phase("evaluation", 0, 4)
    assert stream.getvalue().splitlines()[-1].startswith("[srvp tiny] step 10/10 | train/nll 1.5 | "), stream.getvalue()


def test_an_evaluate_option_cannot_take_the_progress_callbacks_name():
    from dynagen.platform.registry import EvaluateOptions, Experiment, ExperimentConfig

    class Options(EvaluateOptions):
        progress: bool = False

    with pytest.raises(TypeError, match="'progress' is the platform's progress callback"):
        Experiment(name="clash", config=ExperimentConfig, train="tests.experiments:train", evaluate="tests.experiments:evaluate",
                   evaluate_options=Options)


def test_results_say_when_a_table_mixes_versions_of_the_code(tmp_path, capsys):
    from dynagen.platform.analysis import print_summary
    from dynagen.platform.results import ResultsWriter

    storage = str(tmp_path / "runs")
    for index, commit in enumerate(["a" * 40, "b" * 40]):
        writer = ResultsWriter(storage, "mixed", "toy", f"t{index}", {"lr": 0.1}, seed=index)
        writer.write_summary("completed", 10, {"loss": 0.5 + index})
        # rewrite the row as an older checkout would have: another commit
        path = next(Path(writer.directory).glob(f"t{index}-summary.parquet"))
        table = pq.read_table(path)
        pq.write_table(table.set_column(table.schema.get_field_index("git_commit"), "git_commit",
                                        pa.array([commit])), path)
    print_summary(storage, "mixed")
    out = capsys.readouterr().out
    assert "note: these rows come from 2 versions of the code" in out and "@aaaaaaaaaaaa (1 trials)" in out
