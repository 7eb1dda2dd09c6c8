"""Vectorised seeds (``vectorize_seeds: true``, docs/platform.md "Vectorised seeds") on a real local Ray: a sweep's
seeds of one configuration trained as one program in one Tune trial still give one run per seed (folder, step
rows, summary row) with the numbers of separate trials; a seed that diverges ends alone; a group that crashes
resumes every seed from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from dynagen.platform import registry
from dynagen.platform.checkpoints import load_state
from dynagen.platform.configs import UsageError
from dynagen.platform.results import read_results
from dynagen.platform.sweep import load_sweep_spec, run_sweep
from tests.experiments import TOY, TOY_JAX

registry.register(TOY)
registry.register(TOY_JAX)

GANTK_METRICS = ["sinkhorn", "energy", "mmd2", "gen_loss"]


def _spec(path: Path, **spec):
    path.write_text(yaml.safe_dump(spec))
    return load_sweep_spec(str(path))


def _gantk_demo(tmp_path: Path, name: str, vectorize: bool):
    # make demo's sweep reduced to one arch (infinite width and width 128) and 60 steps, at two seeds
    spec = load_sweep_spec("activations_demo", overrides=["arch=relu", "steps=60", "log_every=20", "save_every=60"])
    return spec.model_copy(update={"name": name, "vectorize_seeds": vectorize})


def test_vectorised_gantk_seeds_give_the_runs_of_separate_trials(ray_cluster, tmp_path):
    storage = str(tmp_path / "runs")
    for name, vectorize in (("separate", False), ("vectorised", True)):
        run_sweep(_gantk_demo(tmp_path, name, vectorize), storage=storage, verbose=False)
    tables = {name: read_results(storage, name).to_pandas() for name in ("separate", "vectorised")}
    key = ["config.width", "seed"]
    summaries = {name: t[t["kind"] == "summary"].set_index(key).sort_index() for name, t in tables.items()}
    steps = {name: t[t["kind"] == "step"].set_index([*key, "step"]).sort_index() for name, t in tables.items()}

    # one run per configuration and seed either way: 4 summary rows, 4 x (steps 0, 20, 40, 60) step rows
    assert len(summaries["vectorised"]) == 4 and (summaries["vectorised"]["status"] == "completed").all()
    assert steps["vectorised"].index.equals(steps["separate"].index) and len(steps["vectorised"]) == 16
    # two Tune trials of two seeds each: <Tune trial id>-s<seed>
    groups = summaries["vectorised"]["trial_id"].str.rsplit("-s", n=1).str[0]
    assert groups.nunique() == 2 and set(summaries["vectorised"]["trial_id"].str.rsplit("-s", n=1).str[1]) == {"0", "1"}
    # The same numbers: on a CPU a group of 2 seeds x 60 steps advances seed by seed through the per-seed program
    # (models/gantk/flow.py, vectorise_seeds), the computation a separate trial does, so the rows are equal bit for bit
    # (measured); the margin (1e-5 relative) is far below the seed-to-seed spread (~10 %).
    for table in (summaries, steps):
        np.testing.assert_allclose(table["vectorised"][GANTK_METRICS].to_numpy(float), table["separate"][GANTK_METRICS].to_numpy(float),
                                   rtol=1e-5, atol=1e-7)
    spread = summaries["separate"]["sinkhorn"].groupby(level=0).agg(lambda v: abs(v.iloc[0] - v.iloc[1]) / v.mean())
    assert (spread > 1e-3).all()  # the seeds really differ: a group that ran one seed twice would fail above
    # every seed's run folder is a run of its own: snapshots, metrics.json and a final checkpoint to evaluate
    for trial_id, row in summaries["vectorised"].reset_index().set_index("trial_id").iterrows():
        folder = Path(storage) / "vectorised" / "trials" / trial_id
        snapshot = np.load(folder / "particles" / "x_00000060.npz")["x"]
        state = load_state(folder / "checkpoint")
        assert state["_step"] == 60 and state["_config"]["seed"] == row["seed"]
        np.testing.assert_array_equal(state["particles"].numpy(), snapshot)
        assert (folder / "metrics.json").is_file() and list((folder / "tensorboard").iterdir())


def test_a_diverged_seed_ends_alone_and_a_crashed_group_resumes_every_seed(ray_cluster, tmp_path):
    # Seed 1 diverges at step 7; the group's process fails once at step 12 and restarts from its checkpoint at
    # step 10, which holds seeds 0 and 2 and remembers that seed 1 had diverged.
    fixed = {"steps": 20, "log_every": 1, "diverge_seed": 1, "diverge_at_step": 7}
    crashing = _spec(tmp_path / "group.yaml", experiment="toy-jax", seeds=[0, 1, 2], vectorize_seeds=True, metric="loss",
                     fixed={**fixed, "fail_at_step": 12, "fail_marker": str(tmp_path / "failed")},
                     max_failures=1, checkpoint_every=5, max_concurrent=1)
    plain = _spec(tmp_path / "plain.yaml", experiment="toy-jax", seeds=[0, 1, 2], metric="loss", fixed=fixed, max_concurrent=2)
    storage = str(tmp_path / "runs")
    run_sweep(crashing, storage=storage, verbose=False)
    run_sweep(plain, storage=storage, verbose=False)
    assert (tmp_path / "failed").is_file()  # it did fail once

    group = read_results(storage, "group", kind="summary").to_pandas().set_index("seed").sort_index()
    separate = read_results(storage, "plain", kind="summary").to_pandas().set_index("seed").sort_index()
    assert list(group["status"]) == ["completed", "diverged", "completed"] == list(separate["status"])
    assert group.loc[1, "reason"] == separate.loc[1, "reason"] == "injected divergence at step 7"
    assert group.loc[1, "step"] == 7 and np.isnan(group.loc[1, "loss"])
    np.testing.assert_array_equal(group.loc[[0, 2], "loss"].to_numpy(), separate.loc[[0, 2], "loss"].to_numpy())
    steps = read_results(storage, "group", kind="step").to_pandas()
    per_seed = steps.groupby("seed")["step"].agg(list)
    assert per_seed[0] == per_seed[2] == list(range(20)) and per_seed[1] == list(range(7))


def test_vectorize_seeds_needs_an_experiment_that_trains_seeds_together(tmp_path):
    with pytest.raises(UsageError, match=r"^vectorize_seeds: toy trains one seed at a time \(no train_seeds\); allowed: false$"):
        _spec(tmp_path / "s.yaml", experiment="toy", seeds=[0, 1], vectorize_seeds=True, metric="loss")
    with pytest.raises(UsageError, match=r"^vectorize_seeds: a group runs in one process, not 2 workers"):
        _spec(tmp_path / "s.yaml", experiment="toy-jax", seeds=[0, 1], vectorize_seeds=True, metric="loss", resources={"workers": 2})


def test_asha_stops_a_group_on_the_mean_of_its_seeds(ray_cluster, tmp_path):
    # As the ASHA test of separate trials (tests/test_platform_sweep.py): one group at a time in grid order; the
    # second (lr 1e-4) has barely moved at step 8, so ASHA stops it, and both its seeds are `stopped` there with
    # their own last values.
    spec = _spec(tmp_path / "asha.yaml", experiment="toy-jax", fixed={"steps": 24, "log_every": 4},
                 space={"lr": {"grid": [0.3, 0.0001]}}, seeds=[0, 1], vectorize_seeds=True, metric="loss", mode="min",
                 scheduler={"type": "asha", "max_t": 24, "grace_period": 8, "reduction_factor": 2},
                 max_concurrent=1, checkpoint_every=0)
    storage = str(tmp_path / "runs")
    run_sweep(spec, storage=storage, verbose=False)
    summary = read_results(storage, "asha", kind="summary").to_pandas().set_index(["config.lr", "seed"]).sort_index()
    assert list(summary.loc[0.3, "status"]) == ["completed"] * 2 and list(summary.loc[0.3, "step"]) == [23, 23]
    stopped = summary.loc[0.0001]
    assert list(stopped["status"]) == ["stopped"] * 2 and ((8 <= stopped["step"]) & (stopped["step"] < 16)).all()
    steps = read_results(storage, "asha", kind="step").to_pandas().set_index(["config.lr", "seed", "step"])
    for seed in (0, 1):  # each seed's summary holds its own last reported loss
        last = int(stopped.loc[seed, "step"])
        assert stopped.loc[seed, "loss"] == steps.loc[(0.0001, seed, last), "loss"]
    assert stopped.loc[0, "loss"] != stopped.loc[1, "loss"]
