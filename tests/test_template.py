"""A copy of models/template/, registered under a new name, trains, checkpoints, resumes and evaluates through
`dynagen` as a newcomer's model would (in-process: --local)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from dynagen.platform import cli, registry
from dynagen.platform.checkpoints import load_state
from dynagen.platform.results import read_results

TEMPLATE = Path(__file__).resolve().parents[1] / "models" / "template"


@pytest.fixture
def copied(tmp_path, monkeypatch):
    """models/template copied to a package `newcomer`, with its module paths and name replaced."""
    package = tmp_path / "src" / "newcomer"
    shutil.copytree(TEMPLATE, package, ignore=shutil.ignore_patterns("__pycache__"))
    for path in package.glob("*.py"):
        path.write_text(path.read_text().replace("dynagen.models.template", "newcomer").replace('name="template"', 'name="newcomer"'))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    from newcomer.experiment import EXPERIMENT

    registry.register(EXPERIMENT)
    yield EXPERIMENT
    registry._registered.pop("newcomer", None)
    for name in [m for m in sys.modules if m == "newcomer" or m.startswith("newcomer.")]:
        del sys.modules[name]


def test_a_copy_of_the_template_trains_resumes_and_evaluates(copied, tmp_path, capsys):
    storage = str(tmp_path / "runs")
    run = ["--local", "--storage", storage, "--checkpoint-every", "20"]
    assert cli.main(["train", "newcomer", "--preset", "cpu", "--set", "steps=40", "--name", "first", *run]) == 0
    state = load_state(tmp_path / "runs" / "first" / "checkpoint")
    assert state["_step"] == 40 and state["_config"]["steps"] == 40 and set(state) >= {"model", "optimiser"}

    assert cli.main(["train", "newcomer", "--resume", "first", "--set", "steps=60", *run]) == 0
    steps = read_results(storage, "first", kind="step").to_pandas()["step"].tolist()
    assert steps == [10, 20, 30, 40, 50, 60]  # the resumed run went on after the step-40 checkpoint
    summary = read_results(storage, "first", kind="summary").to_pandas()
    assert summary["status"].tolist() == ["completed"] and summary["step"].tolist() == [60]
    metrics = json.loads((tmp_path / "runs" / "first" / "metrics.json").read_text())
    assert metrics["step"] == 60

    out = tmp_path / "eval"
    assert cli.main(["evaluate", "newcomer", "--checkpoint", str(tmp_path / "runs" / "first"), "--option", "noise=0",
                     "--out", str(out)]) == 0
    scores = json.loads((out / "metrics.json").read_text())
    assert scores["mse/model"] < 0.5 * scores["mse/zero"]  # sin(x) on [-3, 3] has mean square ~0.5; 60 Adam steps fit it
    capsys.readouterr()
    assert cli.main(["evaluate", "newcomer", "--checkpoint", str(out.parent / "runs" / "first"), "--option", "noise=-1"]) == 2
    assert capsys.readouterr().err.startswith("dynagen: error: noise: got -1; allowed: >= 0")
