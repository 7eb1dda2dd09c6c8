"""`dynagen slurm` against a real SLURM: a cluster of two nodes on this machine (munged, slurmctld
and two slurmd, started by the tests: tests/slurm_cluster.py), jobs submitted exactly as the README's
SLURM section says, each bringing up its own Ray on both nodes (head and worker; token
authentication, per-job temp dirs, free ports) beside the test session's local Ray.

Without SLURM installed these tests skip, saying so; with CI=true they fail instead.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dynagen.platform.results import read_results
from tests.slurm_cluster import LocalSlurm, missing_programs

DYNAGEN = str(Path(sys.executable).parent / "dynagen")
SUBMIT_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = missing_programs()
    if missing:
        reason = f"SLURM not installed (no {', '.join(missing)}); .ci/run installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"), nodes=2).start()
    yield cluster
    cluster.stop()


def _spec(path: Path, name: str, archs: list[str], steps: int) -> Path:
    """A tiny gan-ntk grid, one trial per arch, one CPU per trial, two at a time."""
    path.write_text(yaml.safe_dump({
        "name": name, "experiment": "gan-ntk", "preset": "eight_gaussians-cpu",
        "fixed": {"n_particles": 32, "n_targets": 32, "steps": steps, "log_every": 10, "save_every": 0},
        "space": {"arch": {"grid": archs}}, "seeds": [0], "metric": "sinkhorn", "mode": "min",
        "resources": {"cpu": 1}, "max_concurrent": 2, "checkpoint_every": 0,
    }))
    return path


def _submit(slurm: LocalSlurm, workdir: Path, spec: Path, storage: Path) -> tuple[str, Path]:
    """The README's command; returns the job id and its log file."""
    result = subprocess.run(
        [DYNAGEN, "slurm", "submit", "--nodes=2", f"--cpus-per-task={slurm.cpus_per_node}", "--time=10", "--", "dynagen", "sweep", spec.name, "--storage", str(storage)],
        cwd=workdir, env=slurm.env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    job_id = first.split()[2].rstrip(":")
    log = Path(second.removeprefix("log: "))
    assert log.parent == workdir / "slurm-logs"
    return job_id, log


def _job_processes(job_id: str) -> list[str]:
    """Command lines of live processes that belong to the job's Ray (they name its temp dir)."""
    marker = f"/tmp/dynagen-{job_id}-".encode()
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes()
        except OSError:
            continue
        if marker in text:
            found.append(text.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _assert_ray_gone(job_id: str) -> None:
    deadline = time.monotonic() + 30
    while (left := _job_processes(job_id)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, left
    assert not list(Path("/tmp").glob(f"dynagen-{job_id}-*"))


def _finished(slurm, job_id: str, log: Path) -> dict[str, str]:
    fields = slurm.wait_for_job(job_id, SUBMIT_TIMEOUT_S)
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", log.read_text()[-5000:]
    return fields


def test_submitted_sweep_runs_on_the_jobs_own_ray_and_leaves_nothing_behind(slurm, tmp_path):
    spec = _spec(tmp_path / "tiny.yaml", "tiny", ["relu", "rbf"], steps=20)
    storage = tmp_path / "runs"
    job_id, log = _submit(slurm, tmp_path, spec, storage)
    _finished(slurm, job_id, log)
    text = log.read_text()
    assert "dynagen-slurm: all 2 Ray node(s) joined" in text and "resuming" not in text
    cpus = f"with {slurm.cpus_per_node} CPUs, 0 GPUs"
    assert f"dynagen-slurm: Ray head on node1 {cpus}" in text and f"dynagen-slurm: Ray worker on node2 {cpus}" in text

    summary = read_results(str(storage), "tiny", kind="summary").to_pandas()
    assert sorted(summary["config.arch"]) == ["rbf", "relu"] and (summary["status"] == "completed").all()
    assert (summary["step"] == 20).all() and all(math.isfinite(value) and value >= 0 for value in summary["sinkhorn"])
    _assert_ray_gone(job_id)


def _unauthenticated_connect(address: str) -> subprocess.CompletedProcess:
    """A driver with a token that is not the job's trying to join the job's Ray."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_AUTH")}
    code = f"import ray; ray.init(address={address!r}); print('CONNECTED')"
    # Two connection attempts (Ray makes 20, one a second), each refused with the reason.
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="not-the-job-token", RAY_NUM_REDIS_GET_RETRIES="2")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_cancelled_sweep_resumes_in_the_next_job_without_rerunning_finished_trials(slurm, tmp_path):
    archs = ["relu", "rbf", "sigmoid", "relu_nobias"]
    spec = _spec(tmp_path / "resumed.yaml", "resumed", archs, steps=300)
    storage = tmp_path / "runs"
    summaries = storage / "resumed" / "results" / "experiment=gan-ntk"
    job_id, log = _submit(slurm, tmp_path, spec, storage)
    deadline = time.monotonic() + SUBMIT_TIMEOUT_S
    while len(list(summaries.glob("*-summary.parquet"))) < 1:
        assert slurm.job(job_id).get("JobState") in ("PENDING", "RUNNING"), log.read_text()[-5000:]
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.5)

    # While it runs: the job's Ray takes only its own token (a 0600 file in the job's temp dir).
    token = Path(f"/tmp/dynagen-{job_id}-0-node1/auth_token")
    assert token.stat().st_mode & 0o777 == 0o600
    address = next(line.split()[-1] for line in log.read_text().splitlines() if line.startswith("dynagen-slurm: Ray head at"))
    refused = _unauthenticated_connect(address)
    assert "CONNECTED" not in refused.stdout and "Unauthenticated" in refused.stderr, refused.stderr[-3000:]

    subprocess.run(["scancel", job_id], env=slurm.env, check=True)
    cancelled_at = time.time()
    assert slurm.wait_for_job(job_id, 120)["JobState"] == "CANCELLED"
    _assert_ray_gone(job_id)
    assert "dynagen-slurm: job " + job_id + " cancelled" in log.read_text()
    ended_before = read_results(str(storage), "resumed", kind="summary").to_pandas()
    # A trial whose worker the cancellation killed before the driver may have its `error` row (that trial is rerun);
    # the completed ones must not be.
    finished_before = ended_before[ended_before["status"] == "completed"]
    assert 1 <= len(finished_before) < len(archs) and ended_before["status"].isin(["completed", "error"]).all()

    # The same command again: the job finds the sweep's state and resumes it.
    job_id, log = _submit(slurm, tmp_path, spec, storage)
    _finished(slurm, job_id, log)
    assert f"sweep state found in {storage / 'resumed'}: resuming it" in log.read_text()
    rows = read_results(str(storage), "resumed", dedupe=False).to_pandas()
    summary = rows[rows["kind"] == "summary"]
    assert len(summary) == len(archs) and summary["trial_id"].is_unique and (summary["status"] == "completed").all()
    assert sorted(summary["config.arch"]) == sorted(archs)
    again = rows[rows["trial_id"].isin(finished_before["trial_id"]) & (rows["wall_time"] > cancelled_at)]
    assert again.empty, again
    _assert_ray_gone(job_id)


# --------------------------------------------------------------------------------------------
# Without SLURM: the command is checked before anything is submitted
# --------------------------------------------------------------------------------------------


def _dynagen(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([DYNAGEN, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_submit_checks_the_command_and_passes_sbatch_options_through(tmp_path):
    spec = _spec(tmp_path / "tiny.yaml", "tiny", ["relu"], steps=20)
    dry = _dynagen("slurm", "submit", "--dry-run", "--nodes=2", "-t", "30", "--", "dynagen", "sweep", spec.name, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    template = _dynagen("slurm", "template", cwd=tmp_path).stdout.strip()
    assert dry.stdout.split() == ["sbatch", "--parsable", "--job-name=dynagen-tiny", f"--output={tmp_path}/slurm-logs/%x-%j.out",
                                  "--nodes=2", "-t", "30", template, "dynagen", "sweep", "tiny.yaml"]
    assert subprocess.run(["bash", "-n", template]).returncode == 0

    spec.write_text(spec.read_text().replace("n_particles: 32", "n_particles: 0"))
    for command, message in [
        ((), "command: expected `-- dynagen COMMAND ...`"),
        (("python", "train.py"), "command: expected `-- dynagen COMMAND ...`"),
        (("dynagen", "results", "tiny"), "command: dynagen results does not need a cluster; allowed: dynagen sweep, dynagen train"),
        (("dynagen", "sweep", "tiny.yaml"), "dynagen: error: n_particles:"),
        (("dynagen", "sweep", "nope.yaml"), "search_space: no such file or packaged search space 'nope.yaml'"),
    ]:
        result = _dynagen("slurm", "submit", "--dry-run", "--", *command, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_slurm_help_answers_without_heavy_imports(tmp_path):
    for args in (["slurm", "--help"], ["slurm", "submit", "--help"]):
        result = _dynagen(*args, cwd=tmp_path)
        assert result.returncode == 0 and "usage: dynagen slurm" in result.stdout, result.stderr
    probe = subprocess.run([sys.executable, "-c", "import sys; from dynagen.platform.cli import build_parser; build_parser(); "
                            "print([m for m in ('torch', 'ray', 'pyarrow', 'jax', 'tensorflow') if m in sys.modules])"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"
