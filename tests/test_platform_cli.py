"""The `dynagen` command line, run as real subprocesses: help, bad input (exit code 2, one line on
stderr naming the field and what is allowed, no traceback), and a local train -> evaluate round trip.

`python -m tests.experiments ARGS` is `dynagen ARGS` with the test experiments registered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dynagen.platform.configs import UsageError

ROOT = Path(__file__).resolve().parents[1]
DYNAGEN = shutil.which("dynagen", path=str(Path(sys.executable).parent)) or "dynagen"


def _run(*args: str, script: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [DYNAGEN, *args] if script else [sys.executable, "-m", "tests.experiments", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}  # CPU-only, also on a GPU machine
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_help_answers_without_heavy_imports():
    for args in (["--help"], ["train", "--help"], ["sweep", "--help"], ["results", "--help"]):
        result = _run(*args, script=True)
        assert result.returncode == 0 and "usage: dynagen" in result.stdout, result.stderr
    probe = subprocess.run([sys.executable, "-c", "import sys, dynagen.platform.cli; "
                            "print([m for m in ('torch', 'ray', 'pyarrow', 'jax', 'tensorflow') if m in sys.modules])"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"


def test_list_shows_presets_and_typed_fields():
    result = _run("list", "toy")
    assert result.returncode == 0, result.stderr
    assert "preset fast: steps=10, log_every=2" in result.stdout
    assert "optimizer" in result.stdout and "sgd | adam" in result.stdout and "float (> 0.0 and <= 1.0)" in result.stdout


def _bad_files(tmp: Path) -> dict[str, Path]:
    (tmp / "malformed.yaml").write_text("lr: [0.1, 0.2\nsteps: 3\n")
    (tmp / "ok_space.yaml").write_text(yaml.safe_dump({"experiment": "toy", "space": {"lr": {"uniform": [0.01, 0.1]}}, "metric": "loss"}))
    (tmp / "bad_distribution.yaml").write_text(yaml.safe_dump({"experiment": "toy", "space": {"lr": {"normal": [0, 1]}}, "metric": "loss"}))
    (tmp / "bad_grid_value.yaml").write_text(yaml.safe_dump({"experiment": "toy", "space": {"optimizer": {"grid": ["sgd", "lbfgs"]}}, "metric": "loss"}))
    (tmp / "bad_sweep_experiment.yaml").write_text(yaml.safe_dump({"experiment": "nope", "metric": "loss"}))
    (tmp / "bad_fixed.yaml").write_text(yaml.safe_dump({"experiment": "toy", "fixed": {"steps": 0}, "metric": "loss"}))
    (tmp / "not_a_file").mkdir()
    return {}


BAD_INPUTS = [
    (["train", "nope"], "experiment: unknown 'nope'; allowed:"),
    (["train", "toy", "--preset", "huge"], "preset: unknown 'huge' for toy; allowed: fast, adam"),
    (["train", "toy", "--set", "widht=3"], "widht: unknown key; allowed: seed, steps,"),
    (["train", "toy", "--set", "steps=many"], "steps: input should be a valid integer"),
    (["train", "toy", "--set", "lr=2.0"], "lr: got 2.0; allowed: > 0.0 and <= 1.0"),
    (["train", "toy", "--set", "optimizer=lbfgs"], "optimizer: got 'lbfgs'; allowed: sgd, adam"),
    (["train", "toy", "--set", "lr"], "--set: expected key=value"),
    (["train", "toy", "--workers", "0"], "--workers: got 0; allowed: >= 1"),
    (["train", "toy", "--cpus-per-worker", "two"], "--cpus-per-worker: got 'two'; allowed: an integer >= 1"),
    (["train", "toy", "--colour"], "unrecognized arguments: --colour"),
    (["train", "toy", "--local", "--gpu", "--storage", "{tmp}/runs"], "--gpu: torch sees no CUDA device here"),
    (["train", "toy", "--config", "{tmp}/malformed.yaml"], "config: malformed YAML in {tmp}/malformed.yaml (line 2"),
    (["train", "toy", "--config", "{tmp}/missing.yaml"], "config: no such file: {tmp}/missing.yaml"),
    (["train", "toy", "--local", "--storage", "{tmp}/malformed.yaml/runs"], "storage: cannot write to '{tmp}/malformed.yaml/runs'"),
    (["train", "toy", "--storage", "nosuchfs://bucket/x"], "storage: cannot open 'nosuchfs://bucket/x'"),
    (["train", "toy", "--resume", "never-ran", "--storage", "{tmp}/runs"], "resume: no run 'never-ran' under {tmp}/runs"),
    (["sweep", "{tmp}/bad_distribution.yaml"], "space.lr.normal: unknown key; allowed: grid, uniform, loguniform, int, choice, log"),
    (["sweep", "{tmp}/bad_grid_value.yaml"], "optimizer: got 'lbfgs'; allowed: sgd, adam"),
    (["sweep", "{tmp}/bad_fixed.yaml"], "steps: got 0; allowed: >= 1"),
    (["sweep", "{tmp}/bad_sweep_experiment.yaml"], "experiment: unknown 'nope'; allowed:"),
    (["sweep", "{tmp}/malformed.yaml"], "search_space: malformed YAML in {tmp}/malformed.yaml"),
    (["sweep", "no_such_space"], "search_space: no such file or packaged search space 'no_such_space'"),
    (["sweep", "{tmp}/ok_space.yaml", "--storage", "{tmp}/malformed.yaml/x"], "storage: cannot write to"),
    (["sweep", "{tmp}/ok_space.yaml", "--resume", "--storage", "{tmp}/runs"], "resume: no sweep state for 'ok_space' under {tmp}/runs"),
    (["results", "no_sweep", "--storage", "{tmp}/runs"], "sweep: no results for 'no_sweep'"),
    (["evaluate", "toy", "--checkpoint", "{tmp}/not_a_file"], "checkpoint: no state.pt in {tmp}/not_a_file"),
    (["evaluate", "toy", "--checkpoint", "{tmp}/runs", "--option", "n_tset=5"], "option: unknown 'n_tset'; allowed: samples"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[" ".join(a)[:40] for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, message):
    _bad_files(tmp_path)
    result = _run(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("dynagen: error: " + message.format(tmp=tmp_path)), lines[0]


def test_a_run_larger_than_this_machine_is_refused_before_anything_is_written(tmp_path):
    # An embedded Ray has no autoscaler: without the check, the run would wait for 4096 CPUs forever.
    result = _run("train", "toy", "--cpus-per-worker", "4096", "--storage", str(tmp_path / "runs"))
    assert result.returncode == 2, (result.stdout, result.stderr)
    last = result.stderr.strip().splitlines()[-1]  # Ray's own start-up lines come before it
    assert last.startswith("dynagen: error: --workers x --cpus-per-worker: needs 4096 CPU at once but this machine has "), last
    assert "Traceback" not in result.stderr and not any((tmp_path / "runs").glob("*/config.yaml"))


@pytest.mark.parametrize("name", ["srvp", "pde", "gan-ntk"])
def test_every_experiment_takes_samples_and_names_its_evaluate_options(name):
    # `dynagen evaluate` rejects option names the evaluate function does not declare: an experiment whose
    # evaluate takes only **options would reject even --samples.
    from dynagen.platform.cli import _check_evaluate_options
    from dynagen.platform.registry import get

    _check_evaluate_options(get(name).evaluate, {"samples": 2})
    with pytest.raises(UsageError, match="option: unknown 'n_smaples'; allowed: samples"):
        _check_evaluate_options(get(name).evaluate, {"n_smaples": 2})


def test_unknown_experiment_through_the_console_script():
    result = _run("train", "nope", script=True)
    assert result.returncode == 2 and result.stderr.startswith("dynagen: error: experiment: unknown 'nope'; allowed: ")
    assert "gan-ntk" in result.stderr and "srvp" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_local_train_then_evaluate(tmp_path):
    storage = tmp_path / "runs"
    (tmp_path / "cfg.yaml").write_text("steps: 30\nlog_every: 5\n")
    result = _run("train", "toy", "--preset", "adam", "--config", str(tmp_path / "cfg.yaml"), "--set", "lr=0.2",
                  "--local", "--storage", str(storage), "--name", "local1", "--checkpoint-every", "10", "--cpus-per-worker", "1")
    assert result.returncode == 0, result.stderr
    run_dir = storage / "local1"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    # defaults < preset < file < --set
    assert saved["experiment"] == "toy" and saved["optimizer"] == "adam" and saved["steps"] == 30 and saved["lr"] == 0.2
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["step"] == 29 and "weight_error" in result.stdout
    assert final["torch_threads"] == 1  # --cpus-per-worker pins the in-process run's threads

    evaluation = _run("evaluate", "toy", "--checkpoint", str(run_dir), "--samples", "64", "--out", str(tmp_path / "eval"))
    assert evaluation.returncode == 0, evaluation.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["mse/model"] < 0.5 * metrics["mse/zero"]  # the trained model beats predicting zero


def test_a_reader_that_goes_away_ends_dynagen_quietly():
    # `dynagen list --fields | head -1`: the pipe is closed before dynagen writes; no traceback, the shell's SIGPIPE code
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    listing = subprocess.Popen([sys.executable, "-m", "dynagen.platform.cli", "list", "--fields"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    listing.stdout.close()
    stderr = listing.stderr.read().decode()
    assert listing.wait(timeout=60) == 141 and "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
