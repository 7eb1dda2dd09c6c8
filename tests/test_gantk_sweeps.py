"""GAN(TK)² sweeps and presets end to end on the real local Ray: every packaged search space at a reduced
size through `dynagen sweep` (rows read back), `int` axes, the trial statuses (completed at the last
step or at ASHA's max_t, stopped early, diverged) and every preset for a few steps. Data: generated
here (the fixed toy sets, scikit-learn's bundled digits written as an idx file, drawn PNGs)."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import yaml

from dynagen.models.gantk.experiment import EXPERIMENT, PRESETS, GanNtkConfig
from dynagen.platform import cli, registry
from dynagen.platform.analysis import summarize
from dynagen.platform.context import LocalContext
from dynagen.platform.results import read_results
from dynagen.platform.sweep import load_sweep_spec, packaged_search_spaces
from tests.experiments import TOY_JAX

registry.register(TOY_JAX)

# A reduced size for any packaged GAN(TK)² sweep: a few steps of 16 particles, η scaled with N so that
# ηt/N = 2 as in the packaged sweeps, one seed, two Optuna samples per grid point.
REDUCED = ["steps=4", "log_every=2", "n_particles=16", "n_targets=16", "lr=32.0", "plot_every=0", "save_every=0"]
# The full activation grid is 7 archs x 4 widths x 2 losses: the test pins a finite width and the loss, which
# keeps every arch (seven trials); activations_demo runs infinite and finite widths.
PINNED = {"activations": ["loss=ipm", "width=128"]}


def sweep_arguments(overrides: list[str], num_samples: int = 2) -> list[str]:
    return [*(word for text in overrides for word in ("--set", text)), "--num-samples", str(num_samples), "--seeds", "0"]


def _summary(storage: str, sweep: str):
    return read_results(storage, sweep, kind="summary").to_pandas()


@pytest.mark.parametrize("name", packaged_search_spaces())
def test_every_packaged_sweep_runs_at_reduced_size(ray_cluster, tmp_path, capsys, name):
    storage = str(tmp_path / "runs")
    overrides = REDUCED + PINNED.get(name, [])
    expected = load_sweep_spec(name, overrides=overrides, num_samples=2, seeds=[0]).num_trials()
    assert cli.main(["sweep", name, "--storage", storage, *sweep_arguments(overrides)]) == 0
    summary = _summary(storage, name)
    assert len(summary) == expected and summary["trial_id"].is_unique
    assert (summary["config.steps"] == 4).all() and (summary["config.n_particles"] == 16).all()
    assert set(summary["status"]) <= {"completed", "diverged"} and (summary["status"] == "completed").mean() > 0.5
    completed = summary[summary["status"] == "completed"]
    assert (completed["step"] == 4).all() and completed["sinkhorn"].notna().all()
    steps = read_results(storage, name, kind="step").to_pandas()
    assert set(steps["trial_id"]) == set(summary["trial_id"])  # every trial's step rows were read back
    assert cli.main(["results", name, "--storage", storage, "--metric", "sinkhorn"]) == 0
    printed = capsys.readouterr().out
    assert "completed" in printed and "diverged" in printed and "over completed and stopped trials" in printed
    pinned = {text.partition("=")[0] for text in overrides}
    for key, axis in load_sweep_spec(name).space.items():  # the architecture search's `int` depth among them
        values = summary[f"config.{key}"]
        if key in pinned:
            continue
        if axis.kind in ("grid", "choice"):
            assert set(values) <= set(axis.candidates())
        else:
            assert values.between(*axis.candidates()).all()
        assert axis.int is None or values.dtype.kind == "i"


def test_int_axes_linear_and_log_through_the_cli(ray_cluster, tmp_path, capsys):
    path = tmp_path / "ints.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": "toy-jax", "fixed": {"steps": 6, "log_every": 3},
        "space": {"batch_size": {"int": [8, 64], "log": True}, "log_every": {"int": [1, 3]}},
        "num_samples": 3, "metric": "loss", "mode": "min", "max_concurrent": 2,
    }))
    storage = str(tmp_path / "runs")
    assert cli.main(["sweep", str(path), "--storage", storage]) == 0
    summary = _summary(storage, "ints")
    assert len(summary) == 3 and (summary["status"] == "completed").all()
    assert summary["config.batch_size"].between(8, 64).all() and summary["config.log_every"].between(1, 3).all()
    assert summary["config.batch_size"].dtype.kind == "i"
    capsys.readouterr()
    # Bounds that no integer field can take, and `log` where it has no meaning, are one-line errors.
    for space, message in (({"batch_size": {"int": [8, 2]}}, "low < high"),
                           ({"batch_size": {"int": [0, 8], "log": True}}, "low >= 1"),
                           ({"lr": {"uniform": [0.1, 0.2], "log": True}}, "int")):
        path.write_text(yaml.safe_dump({"experiment": "toy-jax", "space": space, "metric": "loss"}))
        assert cli.main(["sweep", str(path), "--storage", storage]) == 2
        # Ray forwards its reused trial workers' shutdown lines ("(tune_trial pid=...)") to this process's stderr.
        lines = [line for line in capsys.readouterr().err.splitlines() if "pid=" not in line]
        assert len(lines) == 1 and lines[0].startswith("dynagen: error: space.") and message in lines[0]


def test_statuses_say_what_happened(ray_cluster, tmp_path, capsys):
    """One trial at a time in grid order on the one-point toy set: η = 1e6 diverges (found at the step-4 log, so
    ASHA's only rung records nothing for it), η = 0.5 reaches the last step, which is ASHA's max_t (ASHA stops
    it on that final report), and η = 1e-4 barely moves and is stopped at the step-4 rung."""
    path = tmp_path / "statuses.yaml"
    path.write_text(yaml.safe_dump({
        "experiment": "gan-ntk", "fixed": {"target": "two_singles_1d", "width": 0, "steps": 6, "log_every": 2, "save_every": 0},
        "space": {"lr": {"grid": [1.0e6, 0.5, 1.0e-4]}}, "metric": "sinkhorn", "mode": "min",
        "scheduler": {"type": "asha", "max_t": 6, "grace_period": 4, "reduction_factor": 2}, "max_concurrent": 1,
        "checkpoint_every": 0,
    }))
    storage = str(tmp_path / "runs")
    assert cli.main(["sweep", str(path), "--storage", storage]) == 0
    assert "diverged: particles non-finite at step 4" in capsys.readouterr().out
    summary = _summary(storage, "statuses").set_index("config.lr")
    assert summary["status"].to_dict() == {1.0e6: "diverged", 0.5: "completed", 1.0e-4: "stopped"}
    diverged = summary.loc[1.0e6]
    assert diverged["reason"] == "particles non-finite at step 4" and diverged["step"] == 4
    assert math.isnan(diverged["sinkhorn"]) and math.isnan(diverged["energy"])  # nothing from before the divergence
    assert summary.loc[0.5, "step"] == 6 and summary.loc[1.0e-4, "step"] == 4
    assert summary.loc[[0.5, 1.0e-4], "reason"].isna().all()

    [row] = summarize(storage, "statuses", group_by=["width"], metrics=["sinkhorn"])
    assert (row["trials"], row["completed"], row["stopped"], row["diverged"], row["failed"], row["sinkhorn n"]) == (3, 1, 1, 1, 0, 2)
    assert row["sinkhorn mean"] == pytest.approx(summary.loc[[0.5, 1.0e-4], "sinkhorn"].mean())


def test_a_toy_target_at_its_old_default_diverges_in_one_line(tmp_path, capsys):
    """η = 1000 (the 8-Gaussian default) on five points: non-finite before the step-100 log; the run ends with
    status diverged, exit code 1, one line, and a summary row without metric values."""
    storage = str(tmp_path / "runs")
    code = cli.main(["train", "gan-ntk", "--local", "--set", "target=modes_1d", "--set", "steps=150", "--storage", storage, "--name", "old"])
    error = capsys.readouterr().err
    assert code == 1 and error.count("\n") == 1 and "diverged: particles non-finite at step 100" in error
    summary = read_results(storage, "old", kind="summary").to_pylist()[0]
    assert summary["status"] == "diverged" and summary["reason"] == "particles non-finite at step 100"
    assert summary["sinkhorn"] is None or math.isnan(summary["sinkhorn"])
    assert read_results(storage, "old", kind="step")["step"].to_pylist() == [0]


def _image_data(tmp_path) -> dict[str, str]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = (load_digits().images * 255 / 16).astype(np.uint8)[:32]  # stand-in MNIST written as idx
    (tmp_path / "mnist").mkdir()
    with gzip.open(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(b"".join(v.to_bytes(4, "big") for v in (0x803, len(digits), 8, 8)) + digits.tobytes())
    (tmp_path / "faces").mkdir()
    for i in range(8):
        Image.fromarray(np.full((40, 36, 3), 30 * i, np.uint8)).save(tmp_path / "faces" / f"{i}.png")
    return {"mnist": str(tmp_path / "mnist"), "celeba": str(tmp_path / "faces")}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_a_few_steps(tmp_path, preset):
    values = {**PRESETS[preset], "steps": 3, "log_every": 1, "save_every": 0, "plot_every": 0}
    if values.get("n_particles", 500) > 64:  # the image presets' 1024 points: the same flow on fewer
        values.update(n_particles=16, n_targets=16)
    if values.get("target") in ("mnist", "celeba"):
        values["data_path"] = _image_data(tmp_path)[values["target"]]
    ctx = LocalContext(tmp_path / "run", tensorboard=False)
    final = EXPERIMENT.train(GanNtkConfig(**values), ctx)
    assert [row["step"] for row in ctx.history] == [0, 1, 2, 3]
    assert all(math.isfinite(row["sinkhorn"]) for row in ctx.history) and math.isfinite(final["energy"])


@pytest.mark.parametrize("preset", ["modes_1d_overlap-inf_ipm", "two_couples_2d-inf_ipm"])
def test_toy_presets_move_the_particles_onto_the_targets(tmp_path, preset):
    """The toy presets' η converges where the old default diverged: the Sinkhorn divergence after 200 steps is a
    small fraction of its initial value (measured at step 400: 1.69 -> 0.061 with 5 points on 7 targets, where
    the counts differ and it cannot reach 0; 2.0 -> 2e-4)."""
    ctx = LocalContext(tmp_path, tensorboard=False)
    EXPERIMENT.train(GanNtkConfig(**{**PRESETS[preset], "steps": 400, "log_every": 200, "plot_every": 0}), ctx)
    assert ctx.history[-1]["sinkhorn"] < 0.1 * ctx.history[0]["sinkhorn"]
