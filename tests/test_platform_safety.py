"""Safe and robust by default (issue 10): no code from data, no escape from the storage root, no silent reuse,
one line for every bad input, failures in the exit code, rows that survive a kill.

Bad inputs go through ``dynagen`` itself (``cli.main`` in this process, the test experiments registered):
exit code 2, one line ``dynagen: error: <field>: ...``, no traceback, and no file written anywhere.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from dynagen.platform import cli, registry
from tests.experiments import TOY, TOY_JAX, ToyConfig

ROOT = Path(__file__).resolve().parents[1]
registry.register(TOY)
registry.register(TOY_JAX)


class CreatesAFile:
    """A pickle payload: unpickling it calls ``open(path, "w")``, which creates the file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _save(state, path: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    return _save({"model": CreatesAFile(marker), "_step": 3, "_config": {}}, path)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _dynagen(capsys, *args: str) -> tuple[int, list[str]]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err.strip().splitlines()


def _parquet(path: Path, columns: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def _inputs(tmp: Path) -> None:
    """Every damaged or hostile file the table below points at."""
    import numpy as np

    runs = tmp / "runs"
    for name, text in {"listcfg": "- a\n- b\n", "emptycfg": "", "badcfg": "steps: [1\n", "existing": "experiment: toy\n"}.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "config.yaml").write_text(text)
    (tmp / "binary.yaml").write_bytes(bytes(range(256)) * 8)
    (tmp / "ckpt" / "empty").mkdir(parents=True)
    (tmp / "ckpt" / "empty" / "state.pt").write_bytes(b"")
    (tmp / "ckpt" / "random").mkdir()
    (tmp / "ckpt" / "random" / "state.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp / "ckpt" / "zip").mkdir()
    with zipfile.ZipFile(tmp / "ckpt" / "zip" / "state.pt", "w") as archive:
        archive.writestr("notes.txt", "no checkpoint in here")
    _save({"_step": 1, "_config": {"arch": "relu", "width": 8}, "model": {}}, tmp / "ckpt" / "other" / "state.pt")
    _save({"_step": 1, "_config": {}}, tmp / "ckpt" / "nokeys" / "state.pt")
    _save({"model": {}}, tmp / "ckpt" / "noschema" / "state.pt")
    _evil_checkpoint(tmp / "ckpt" / "evil" / "state.pt", tmp / "pwned")
    results = lambda sweep: runs / sweep / "results" / "experiment=toy"  # noqa: E731
    good = {"trial_id": ["t"], "kind": ["summary"], "step": [1], "status": ["completed"], "loss": [0.5]}
    whole = _parquet(results("truncated") / "t-summary.parquet", good).read_bytes()
    (results("truncated") / "t-summary.parquet").write_bytes(whole[: len(whole) // 2])
    results("garbage").mkdir(parents=True)
    (results("garbage") / "t-summary.parquet").write_bytes(b"PAR1" + bytes(100))
    _parquet(results("nokind") / "t-summary.parquet", {k: v for k, v in good.items() if k != "kind"})
    _parquet(results("clash") / "a-summary.parquet", good)
    _parquet(results("clash") / "b-summary.parquet", {**good, "trial_id": ["u"], "loss": ["low"]})

    def space(file: str, **spec) -> None:
        (tmp / f"{file}.yaml").write_text(yaml.safe_dump({"experiment": "toy", "metric": "loss", **spec}))

    space("grid_type", space={"steps": {"grid": [[1, 2]]}})
    space("never_reported", metric="accuracy")
    space("uniform_int", space={"steps": {"uniform": [1, 10]}})
    space("dup_seeds", seeds=[1, 1])
    space("neg_seed", seeds=[-1])
    space("asha", scheduler={"type": "asha", "max_t": 5, "grace_period": 10})
    space("cpu0", resources={"cpu": 0})
    space("gpu_1_5", resources={"gpu": 1.5})
    space("escape", name="../outside")
    space("long_name", name="n" * 300)
    space("inf_bound", space={"lr": {"uniform": [0.01, float("inf")]}})
    (tmp / "src").mkdir()


LONG = "a" * 300
BAD = [
    # names that would escape the storage root, or are too long to be a folder name
    (["train", "toy", "--local", "--name", "../outside"], "name: got '../outside'; allowed: letters, digits"),
    (["train", "toy", "--local", "--resume", "../outside"], "resume: got '../outside'; allowed:"),
    (["train", "toy", "--name", LONG], "name: 300 characters"),
    (["sweep", "{tmp}/escape.yaml"], "name: got '../outside'; allowed:"),
    (["sweep", "{tmp}/long_name.yaml"], "name: 300 characters"),
    (["sweep", "../../../outside"], "search_space: got '../../../outside'; allowed:"),
    (["results", "../outside"], "sweep: got '../outside'; allowed:"),
    (["report", "../outside"], "sweep: got '../outside'; allowed:"),
    (["results", LONG], "sweep: 300 characters"),
    (["import", "srvp", "{tmp}/src", "--name", "../outside"], "name: got '../outside'; allowed:"),
    (["train", "toy", "--local", "--name", "existing"], "name: run 'existing' already exists under {tmp}/runs; allowed: a new name, or --resume existing"),
    # a run's damaged config.yaml
    (["train", "toy", "--resume", "listcfg"], "resume: config.yaml of run 'listcfg' holds list"),
    (["train", "toy", "--resume", "emptycfg"], "resume: config.yaml of run 'emptycfg' holds NoneType"),
    (["train", "toy", "--resume", "badcfg"], "resume: config.yaml of run 'badcfg' is not YAML text"),
    # binary files where YAML is expected
    (["train", "toy", "--config", "{tmp}/binary.yaml"], "config: {tmp}/binary.yaml is not UTF-8 text"),
    (["sweep", "{tmp}/binary.yaml"], "search_space: {tmp}/binary.yaml is not UTF-8 text"),
    # checkpoints that are none, or another experiment's, or need unpickling
    (["evaluate", "toy", "--checkpoint", "{tmp}/ckpt/empty"], "checkpoint: {tmp}/ckpt/empty/state.pt cannot be loaded without running code"),
    (["evaluate", "toy", "--checkpoint", "{tmp}/ckpt/random"], "checkpoint: {tmp}/ckpt/random/state.pt cannot be loaded"),
    (["evaluate", "toy", "--checkpoint", "{tmp}/ckpt/zip"], "checkpoint: {tmp}/ckpt/zip/state.pt cannot be loaded"),
    (["evaluate", "toy", "--checkpoint", "{tmp}/ckpt/evil"], "checkpoint: {tmp}/ckpt/evil/state.pt cannot be loaded without running code"),
    (["evaluate", "toy", "--checkpoint", "{tmp}/ckpt/other"], "checkpoint: {tmp}/ckpt/other/state.pt is not a toy checkpoint"),
    (["evaluate", "toy", "--checkpoint", "{tmp}/ckpt/nokeys"], "checkpoint: {tmp}/ckpt/nokeys/state.pt has no 'model'"),
    (["evaluate", "toy", "--checkpoint", "{tmp}/ckpt/noschema"], "checkpoint: {tmp}/ckpt/noschema/state.pt is no dynagen checkpoint"),
    (["evaluate", "toy", "--checkpoint", "{tmp}/nothing", "--option", "samples=-5"], "samples: got -5; allowed: >= 1"),
    # results files that are damaged or foreign
    (["results", "truncated"], "results: {tmp}/runs/truncated/results/experiment=toy/t-summary.parquet is not a readable Parquet file"),
    (["results", "garbage"], "results: {tmp}/runs/garbage/results/experiment=toy/t-summary.parquet is not a readable Parquet file"),
    (["report", "nokind"], "results: {tmp}/runs/nokind/results/experiment=toy/t-summary.parquet has no kind column"),
    (["results", "clash"], "results: files under {tmp}/runs/clash/results have clashing column types"),
    (["results", "missing", "--analysis", "agreement"], "sweep: no results for 'missing'"),
    # values that are the wrong type, out of range, or no value at all
    (["train", "gan-ntk", "--set", "arch.x=1"], "arch: "),
    (["train", "gan-ntk", "--set", "arch=[relu]"], "arch: "),
    (["train", "toy", "--set", "lr=nan"], "lr: input should be a finite number"),
    (["train", "toy", "--set", "step_seconds=inf"], "step_seconds: input should be a finite number"),
    (["train", "gan-ntk", "--set", "sinkhorn_blur=.inf"], "sinkhorn_blur: input should be a finite number"),
    (["train", "gan-ntk", "--set", "t=nan"], "t: input should be a finite number"),
    (["train", "toy", "--set", "seed=-1"], "seed: got -1; allowed: >= 0 and <= 4294967295"),
    (["train", "toy", "--set", f"seed={2**70}"], "seed: got 1180591620717411303424; allowed: >= 0 and <= 4294967295"),
    (["train", "pde", "--set", "data_dir="], "data_dir: string should have at least 1 character"),
    (["train", "gan-ntk", "--set", "data_path=' '"], "data_path: string should have at least 1 character"),
    (["sweep", "{tmp}/grid_type.yaml"], "steps: input should be a valid integer"),
    (["sweep", "{tmp}/never_reported.yaml"], "metric: toy never reports 'accuracy'; allowed: loss, weight_error"),
    (["sweep", "{tmp}/uniform_int.yaml"], "space.steps: uniform samples floats but steps is an integer; allowed: int: [low, high]"),
    (["sweep", "{tmp}/dup_seeds.yaml"], "seeds: seed(s) [1] repeated"),
    (["sweep", "{tmp}/neg_seed.yaml"], "seeds.0: got -1; allowed: >= 0"),
    (["sweep", "{tmp}/asha.yaml"], "scheduler: grace_period 10 is past max_t 5; allowed: grace_period <= max_t"),
    (["sweep", "{tmp}/cpu0.yaml"], "resources.cpu: got 0; allowed: > 0"),
    (["sweep", "{tmp}/gpu_1_5.yaml"], "resources.gpu: got 1.5; allowed: 0 (no GPU), a share of one GPU (0 < gpu < 1), or a whole number"),
    (["sweep", "{tmp}/inf_bound.yaml"], "space.lr.uniform.1: input should be a finite number"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a)[:50] for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch, args, message):
    _inputs(tmp_path)
    (tmp_path / "runs" / "ok").mkdir()
    monkeypatch.chdir(tmp_path / "runs" / "ok")  # a relative path that escaped would land in tmp_path/runs
    monkeypatch.setenv("DYNAGEN_STORAGE", str(tmp_path / "runs"))
    before = _files(tmp_path)
    code, lines = _dynagen(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("dynagen: error: " + message.format(tmp=tmp_path)), lines[0]
    assert _files(tmp_path) == before  # nothing written, inside or outside the storage root
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "outside").exists()


def test_checkpoints_of_every_backend_load_with_weights_only(tmp_path):
    import numpy as np
    import torch

    from dynagen.platform.backends import BACKENDS
    from dynagen.platform.checkpoints import checkpoint_state, load_state, save_state_atomically

    state = {"particles": np.arange(6, dtype=np.float32).reshape(3, 2), "key": np.array([1, 2**32 - 1], np.uint32),
             "leaves": [np.ones(2), np.zeros((1, 1), np.float64)], "count": np.int32(4), "model": {"w": torch.ones(2)}}
    path = save_state_atomically(checkpoint_state(state, 7, {"seed": 0}), tmp_path)
    torch.load(path, weights_only=True)  # no numpy global needed
    restored = BACKENDS["jax"].loaded(load_state(path))
    assert restored["_step"] == 7 and restored["count"] == 4
    assert restored["particles"].dtype == np.float32 and np.array_equal(restored["particles"], state["particles"])
    assert restored["key"].dtype == np.uint32 and restored["key"][1] == 2**32 - 1
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(restored["leaves"], state["leaves"]))
    assert isinstance(BACKENDS["torch"].loaded(load_state(path))["model"]["w"], torch.Tensor)
    assert not list(tmp_path.glob(".*"))  # no temp file left behind


def test_a_payload_never_runs_on_local_resume(tmp_path, capsys):
    storage = tmp_path / "runs"
    code, _ = _dynagen(capsys, "train", "toy", "--local", "--storage", str(storage), "--name", "r", "--set", "steps=6",
                       "--set", "log_every=2", "--checkpoint-every", "2")
    assert code == 0
    _evil_checkpoint(storage / "r" / "checkpoint" / "state.pt", tmp_path / "pwned")
    code, lines = _dynagen(capsys, "train", "toy", "--local", "--storage", str(storage), "--resume", "r", "--set", "steps=8")
    assert code == 2 and len(lines) == 1 and "cannot be loaded without running code" in lines[0], lines
    assert not (tmp_path / "pwned").exists()


def test_a_payload_never_runs_on_a_ray_restore(ray_cluster, tmp_path):
    from dynagen.platform.launch import run_training

    storage = str(tmp_path / "runs")
    run_training(TOY, ToyConfig(steps=6, log_every=2), storage=storage, name="r", checkpoint_every=2)
    checkpoints = sorted((tmp_path / "runs" / "r").glob("checkpoint_*/state.pt"))
    assert checkpoints
    for path in checkpoints:
        _evil_checkpoint(path, tmp_path / "pwned")
    with pytest.raises(Exception, match="cannot be loaded without running code"):
        run_training(TOY, ToyConfig(steps=10, log_every=2), storage=storage, resume="r", checkpoint_every=2)
    assert not (tmp_path / "pwned").exists()


def test_staging_folders_are_private_and_unpredictable():
    from dynagen.platform.run import run_dir_for

    first, uri = run_dir_for("mock:///bucket/runs", "a")
    second, _ = run_dir_for("mock:///bucket/runs", "a")
    try:
        assert uri == "mock:///bucket/runs/a" and first != second
        assert (first.stat().st_mode & 0o777) == 0o700
    finally:
        first.rmdir()
        second.rmdir()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _subprocess(*args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "tests.experiments", *args], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_an_unreachable_ray_address_ends_in_one_line_naming_it(tmp_path):
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there: the connection is refused at once
    started = time.monotonic()
    process = _subprocess("train", "toy", "--storage", str(tmp_path / "runs"), env={"RAY_ADDRESS": address})
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"dynagen: error: RAY_ADDRESS: cannot reach {address} within 10 s"), lines
    assert time.monotonic() - started < 60 and not list((tmp_path / "runs").rglob("config.yaml"))


def test_a_failed_local_run_exits_1_in_one_line(tmp_path, capsys):
    storage = tmp_path / "runs"
    code, lines = _dynagen(capsys, "train", "toy", "--local", "--storage", str(storage), "--name", "f", "--set", "steps=10",
                           "--set", "fail_at_step=3", "--set", f"fail_marker={tmp_path / 'failed'}")
    assert code == 1 and len(lines) == 1, lines
    assert lines[0] == "dynagen: toy run failed: RuntimeError: injected failure at step 3 on rank 0 (traceback: error.txt in its run folder)"
    assert "injected failure" in (storage / "f" / "error.txt").read_text()


def test_a_sweep_with_a_failed_trial_exits_1_naming_where_its_error_is(ray_cluster, tmp_path, capsys):
    space = tmp_path / "fails.yaml"
    # the first trial to reach step 2 fails (and leaves the marker), the other one completes
    space.write_text(yaml.safe_dump({"experiment": "toy", "metric": "loss", "seeds": [0, 1], "max_concurrent": 1,
                                     "fixed": {"steps": 4, "log_every": 1, "fail_at_step": 2, "fail_marker": str(tmp_path / "m")}}))
    code = cli.main(["sweep", str(space), "--storage", str(tmp_path / "runs")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("dynagen: sweep fails: 1 of 2 trials failed; errors in "), last
    error_file = Path(last.split("errors in ", 1)[1].split(" ")[0])
    assert "injected failure at step 2" in error_file.read_text()


def test_local_run_ids_are_unique():
    from dynagen.platform.launch import new_run_name

    names = {new_run_name(TOY, "local") for _ in range(50)}
    assert len(names) == 50


def test_a_killed_local_run_keeps_its_flushed_rows(tmp_path):
    from dynagen.platform.results import read_results

    storage = tmp_path / "runs"
    process = _subprocess("train", "toy", "--local", "--storage", str(storage), "--name", "k", "--cpus-per-worker", "1",
                          "--set", "steps=100000", "--set", "log_every=1", "--set", "step_seconds=0.002")
    rows = storage / "k" / "results" / "experiment=toy"
    deadline = time.monotonic() + 120
    while not list(rows.glob("k-steps-*.parquet")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    steps = read_results(str(storage), "k", kind="step").to_pandas()
    assert len(steps) >= 100 and steps["step"].tolist() == list(range(len(steps)))  # flushed at the step-100 checkpoint at least
