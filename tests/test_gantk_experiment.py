"""The gan-ntk experiment end to end under LocalContext (no Ray): config validation, training with
checkpoints / snapshots / PNGs, resume, evaluate; targets (generated data only: scikit-learn's bundled
digits stand in for MNIST files, PNGs are drawn here), metrics and the agreement analysis."""

import gzip

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from dynagen.models.gantk.experiment import ARCHS, EXPERIMENT, PRESETS, GanNtkConfig
from dynagen.platform.context import LocalContext, load_state


def test_config_fills_named_archs_and_rejects_bad_values():
    rbf = GanNtkConfig(arch="rbf")
    assert (rbf.activation, rbf.depth, rbf.sigma_b, rbf.kernel, rbf.act_gamma) == ("rbf", 1, 0.0, "nngp", 0.5)
    assert GanNtkConfig(arch="relu_highbias", sigma_b=2.0).sigma_b == 2.0  # explicit fields win
    for name, preset in PRESETS.items():
        if "data_path" not in preset and preset.get("target") not in ("mnist", "celeba"):
            GanNtkConfig(**preset)
    with pytest.raises(ValidationError, match="relu.*gelu"):
        GanNtkConfig(activation="tanh")
    with pytest.raises(ValidationError, match="hinge"):
        GanNtkConfig(loss="hinge", width=0)
    with pytest.raises(ValidationError, match="data_path"):
        GanNtkConfig(target="mnist")
    with pytest.raises(ValidationError, match="extra"):
        GanNtkConfig(widht=3)
    assert set(ARCHS) < set(GanNtkConfig.model_fields["arch"].annotation.__args__)


def run(tmp_path, **overrides):
    config = GanNtkConfig(**{**PRESETS["eight_gaussians-cpu"], "steps": 40, "log_every": 20, **overrides})
    ctx = LocalContext(tmp_path, tensorboard=False)
    return config, ctx, EXPERIMENT.train(config, ctx)


def test_infinite_ipm_run_writes_results_resumes_and_evaluates(tmp_path):
    config, ctx, final = run(tmp_path / "a")
    steps = [row["step"] for row in ctx.history]
    assert steps == [0, 20, 40]
    assert ctx.history[-1]["sinkhorn"] < 0.2 * ctx.history[0]["sinkhorn"]
    assert ctx.history[-1]["energy"] < 0.2 * ctx.history[0]["energy"]
    assert final["mmd2"] < ctx.history[0]["mmd2"]
    for name in ("plots/flow_00000000.png", "plots/flow_00000040.png", "particles/x_00000040.npz"):
        assert (ctx.run_dir / name).is_file()
    state = load_state(ctx.checkpoint_dir)
    np.testing.assert_array_equal(np.load(ctx.run_dir / "particles/x_00000040.npz")["x"], state["particles"])

    # Resume: a run stopped after step 20's checkpoint continues at 21 and ends where the straight run did.
    partial = LocalContext(tmp_path / "b", checkpoint_every=20, tensorboard=False)
    EXPERIMENT.train(config.model_copy(update={"steps": 20}), partial)
    resumed = LocalContext(tmp_path / "b", checkpoint_every=20, tensorboard=False)
    EXPERIMENT.train(config, resumed)
    assert [row["step"] for row in resumed.history] == [20, 40]  # continues at x_20: nothing before was rerun
    np.testing.assert_allclose(load_state(resumed.checkpoint_dir)["particles"], state["particles"], rtol=1e-5, atol=1e-5)

    metrics = EXPERIMENT.evaluate(config, state, tmp_path / "eval", samples=256)
    assert metrics["sinkhorn/particles"] == pytest.approx(final["sinkhorn"])
    assert metrics["energy/particles"] < 0.2 * metrics["energy/source"]
    assert metrics["energy/fresh_targets"] > 0 and (tmp_path / "eval" / "particles.png").is_file()
    assert metrics["manifest"]["test_set"]["n_targets"] == config.n_targets
    assert metrics["manifest"]["test_set"]["fresh_targets"] == {"seed": config.seed + 1, "n": 256}


def test_finite_discriminator_run_reports_its_ntk_error(tmp_path):
    _, ctx, final = run(tmp_path, width=64, lr_d=0.25, nb_d_steps=4, reset_d=True)
    assert final["energy"] < 0.3 * ctx.history[0]["energy"]
    assert 0 < final["ntk_rel_error"] < 1 and ctx.history[0]["ntk_rel_error"] == final["ntk_rel_error"]


@pytest.mark.parametrize("overrides", [
    {"width": 32, "loss": "hinge", "d_optimizer": "adam", "lr_d": 0.01, "lr": 64.0},
    {"arch": "rbf", "width": 64},  # finite NNGP: only the read-out layer trains
    {"loss": "lsgan"},
    {"loss": "vanilla"},
    {"loss": "vanilla", "vanilla_solver": "ode", "n_particles": 32, "n_targets": 32, "lr": 64.0},
], ids=["hinge-adam", "rbf-readout", "inf-lsgan", "inf-vanilla", "inf-vanilla-ode"])
def test_other_discriminators_move_particles_towards_the_targets(overrides):
    import jax

    from dynagen.models.gantk.flow import ParticleFlow
    from dynagen.models.gantk.metrics import energy
    from dynagen.models.gantk.targets import make_problem

    config = GanNtkConfig(**{**PRESETS["eight_gaussians-cpu"], **overrides})
    source, targets = make_problem(config)
    flow = ParticleFlow(config, targets.astype(np.float32))
    state = flow.advance(flow.init(source.astype(np.float32), jax.random.PRNGKey(0)), 30)
    assert np.isfinite(np.asarray(state.x)).all()
    assert energy(np.asarray(state.x), targets) < 0.7 * energy(source, targets)


def test_targets_from_generated_files(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    from dynagen.models.gantk.targets import make_problem, ring

    ring_points = ring(4000, 8, 5.0, 0.5, np.random.default_rng(0))
    radius = np.linalg.norm(ring_points, axis=1)
    assert abs(radius.mean() - 5.0) < 0.05 and len(np.unique(np.round(np.arctan2(*ring_points.T[::-1]) / (np.pi / 4)) % 8)) == 8

    image = np.full((20, 30), 255, np.uint8)
    image[2:6, 20:28] = 0  # a dark block: top right
    Image.fromarray(image).save(tmp_path / "target.png")
    source, target = make_problem(GanNtkConfig(target="image_density", target_image=str(tmp_path / "target.png"),
                                               n_targets=300, n_particles=50))
    assert source.shape == (50, 2) and target.shape == (300, 2)
    assert (target[:, 0] > 0.2).all() and (target[:, 1] > 0.2).all()  # upright: block at x ∈ [0.38, 0.86], y ∈ [0.47, 0.79]

    digits = (load_digits().images * 255 / 16).astype(np.uint8)[:40]  # stand-in MNIST, 8×8 written as idx
    header = b"".join(v.to_bytes(4, "big") for v in (0x803, len(digits), 8, 8))
    (tmp_path / "mnist").mkdir()
    with gzip.open(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(header + digits.tobytes())
    source, target = make_problem(GanNtkConfig(target="mnist", data_path=str(tmp_path / "mnist"), n_targets=16,
                                               n_particles=4))
    assert target.shape == (16, 32, 32, 1) and source.shape == (4, 32, 32, 1)
    assert np.isclose(target[:, :12, :12].max(), -0.9995) and target.max() > 0.9  # zero padding, bright strokes

    (tmp_path / "faces").mkdir()
    for i in range(3):
        Image.fromarray(np.full((48, 40, 3), 60 * i, np.uint8)).save(tmp_path / "faces" / f"{i}.jpg")
    _, faces = make_problem(GanNtkConfig(target="celeba", data_path=str(tmp_path / "faces"), n_targets=3, n_particles=2))
    assert faces.shape == (3, 32, 32, 3)
    _, digit_targets = make_problem(GanNtkConfig(target="digits", n_targets=10))
    assert digit_targets.shape == (10, 8, 8, 1) and digit_targets.min() >= -1 and digit_targets.max() <= 1


def test_metrics_vanish_on_identical_sets_and_match_closed_forms():
    from dynagen.models.gantk import metrics

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(200, 2)), rng.normal(size=(150, 2))
    assert metrics.energy(x, x) == pytest.approx(0.0, abs=1e-12)
    assert metrics.sinkhorn(x, x) == pytest.approx(0.0, abs=1e-6)
    distances = lambda a, b: np.linalg.norm(a[:, None] - b[None], axis=-1).mean()  # noqa: E731
    assert metrics.energy(x, y) == pytest.approx(distances(x, y) - distances(x, x) / 2 - distances(y, y) / 2, rel=1e-4)
    shift = np.array([3.0, -1.0])  # ½W₂² of a translation is ½‖shift‖²
    assert metrics.sinkhorn(x, x + shift) == pytest.approx(0.5 * shift @ shift, rel=2e-2)


def test_agreement_analysis_matches_finite_and_infinite_runs():
    from dynagen.models.gantk.analyses import agreement

    rows = []
    for arch, level in (("relu", 1e-3), ("relu_nobias", 7e-3), ("sigmoid", 1.0), ("rbf", 3e-3)):
        for seed in (0, 1):
            for width, factor, ntk_error in ((0, 1.0, None), (128, 1.3, 0.14), (512, 1.1, 0.07)):
                rows.append({"kind": "summary", "status": "completed", "seed": seed, "config.seed": seed,
                             "config.arch": arch, "config.loss": "ipm", "config.width": width,
                             "sinkhorn": level * factor * (1 + 0.01 * seed), "energy": level * factor,
                             "ntk_rel_error": ntk_error})
    rows.append({**rows[0], "kind": "step"})  # step rows are ignored
    table = agreement(pa.Table.from_pylist(rows)).to_pandas()
    sinkhorn = table[table["metric"] == "sinkhorn"].set_index("width")
    assert list(sinkhorn.index) == [128, 512] and (sinkhorn["pairs"] == 8).all()
    assert sinkhorn.loc[128, "spearman"] == pytest.approx(1.0)
    assert sinkhorn.loc[512, "median_ratio_finite_to_infinite"] == pytest.approx(1.1)
    assert sinkhorn.loc[128, "ntk_rel_error"] == pytest.approx(0.14)


def test_a_run_imports_no_tensorflow():
    """neural_tangents' TensorFlow part (nt.experimental) stays unloaded through a whole run."""
    import subprocess
    import sys

    script = (
        "import sys, tempfile\n"
        "from dynagen.models.gantk.experiment import EXPERIMENT, PRESETS, GanNtkConfig\n"
        "from dynagen.platform.context import LocalContext\n"
        "config = GanNtkConfig(**{**PRESETS['eight_gaussians-cpu'], 'n_particles': 8, 'n_targets': 8, 'steps': 2, 'log_every': 1})\n"
        "EXPERIMENT.train(config, LocalContext(tempfile.mkdtemp()))\n"
        "import neural_tangents as nt\n"
        "print('tensorflow' in sys.modules, hasattr(nt.experimental, '__file__'))\n"
    )
    probe = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split()[-2:] == ["False", "False"]


def test_covered_seconds_is_the_length_of_the_union_inside_the_phase():
    from dynagen.models.gantk.train import covered_seconds

    # [1, 4] ∪ [2, 3] (nested) ∪ [3.5, 6] ∪ [7, 8], inside the phase [0, 7.5]: [1, 6] and [7, 7.5]
    assert covered_seconds([(3.5, 6.0), (1.0, 4.0), (2.0, 3.0), (7.0, 8.0)], 0.0, 7.5) == pytest.approx(5.5)
    assert covered_seconds([(-2.0, 1.0)], 0.0, 7.5) == pytest.approx(1.0)  # a span begun before the phase
    assert covered_seconds([], 0.0, 1.0) == 0.0


def test_timings_count_a_nested_trace_once_and_add_up_to_the_phase():
    """A jitted function that calls another one: the inner trace nests in the outer, and the phase's seconds split
    into trace + compile + the rest with nothing counted twice."""
    import time

    import jax
    import jax.numpy as jnp

    from dynagen.models.gantk import train

    inner = jax.jit(lambda x: jnp.tanh(x) @ x.T)
    outer = jax.jit(lambda x: inner(x).sum() + inner(2 * x).sum())  # new functions: traced and compiled here
    timings = train.Timings()
    start = time.perf_counter()
    with timings("steps"):
        jax.block_until_ready(outer(jnp.ones((64, 64))))
        spans = list(train._compile_spans)  # JAX's events of this phase, as the listener recorded them
    elapsed = time.perf_counter() - start
    traced, compiled, steps = (timings.seconds[phase] for phase in ("trace", "compile", "steps"))
    trace_spans = [end - begin for kind, begin, end in spans if kind == "trace"]
    assert len(trace_spans) >= 3 and compiled > 0 and steps >= 0  # outer, inner (nested in it), lowering
    assert max(trace_spans) <= traced < sum(trace_spans)  # the nested trace counted once
    assert traced + compiled + steps == pytest.approx(elapsed, rel=0.05)
    with timings("steps"):  # compiled now: neither tracing nor compilation
        jax.block_until_ready(outer(jnp.ones((64, 64))))
    assert (timings.seconds["trace"], timings.seconds["compile"]) == (traced, compiled)
