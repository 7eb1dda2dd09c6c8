"""Sweep throughput: where the time of ``make demo``'s GAN(TK)² sweep (search_spaces/activations_demo.yaml,
16 trials) goes, and its efficiency = pure step time on one core / (sweep wall time x concurrency).

Side by side in one process, so that the load of a shared machine weighs on both:

1. pure step time: every trial's jitted generator steps (the run's own chunks, 300 steps), compiled
   first and then timed alone on one core (and, for comparison, with XLA's own threads on every core);
2. the sweep through ``run_sweep`` on an embedded local Ray with 2 CPUs (Ray's start-up timed apart): as packaged
   (``groups``: ``vectorize_seeds``, one trial per configuration training both seeds, docs/platform.md
   "Vectorised seeds"), then with one trial per seed (``seeds``).

JAX's persistent compilation cache is not used: on jax 0.5.3's CPU backend a step program loaded from it does not
move the particles (``benchmarks/jax_cache_check.py`` shows why on small loops).

Per sweep: wall seconds, efficiency, its ceilings (what the efficiency would be if the trials did nothing but
their steps, metrics and plots; with their tracing and lowering too, which every process redoes even with a
compilation cache; and with XLA's compilation as well), the trial processes used (trials with a
``time/process_start``: the others ran in a reused process) and the sum over trials of every ``time/<phase>``
column of the summary rows. Run from the repository root: ``.venv/bin/python -m benchmarks.sweep``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from dynagen.platform.runtime import thread_env  # noqa: E402

os.environ.update(thread_env(1))  # this process's JAX on one thread, before jax is imported
CONCURRENCY = 2
SWEEP = "activations_demo"
# The work the issue keeps (the same steps, logged metrics and plots): however fast everything else became, two cores
# need at least these trial-seconds / 2 of wall time, which bounds the efficiency (the ``ceiling`` column).
REQUIRED_PHASES = ("steps", "metrics", "plots")


def pure_step_seconds(spec, one_core: bool) -> float:
    """Sum over the sweep's trials of their generator steps alone (compiled beforehand). ``one_core``: on one CPU.
    With Eigen's threads off (``thread_env(1)``) an XLA:CPU process still runs its work on more than one thread
    (measured here: 19 s of CPU time in 13 s of wall time), which two trials on two cores cannot have; one thread's
    step time, the efficiency's numerator, is therefore taken with this process pinned to one CPU."""
    cpus = os.sched_getaffinity(0)
    if one_core:
        _pin_threads({min(cpus)})
    try:
        return _step_seconds(spec)
    finally:
        _pin_threads(cpus)


def _pin_threads(cpus: set[int]) -> None:
    """Every thread of this process (XLA's pool included) on ``cpus`` (Linux)."""
    for thread in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(thread), cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


def _step_seconds(spec) -> float:
    import jax

    from dynagen.models.gantk.experiment import GanNtkConfig
    from dynagen.models.gantk.flow import ParticleFlow
    from dynagen.models.gantk.targets import make_problem
    from dynagen.platform.configs import deep_merge

    total = 0.0
    for point in spec.grid_points():
        for seed in spec.seeds:
            config = GanNtkConfig.model_validate(deep_merge(spec.fixed, {**point, "seed": seed}))
            source, targets = make_problem(config)
            flow = ParticleFlow(config, jax.numpy.asarray(targets))
            state = flow.init(source, jax.random.PRNGKey(seed))
            jax.block_until_ready(flow.advance(state, 1))  # compiles
            chunks = []  # the run's chunks: one step after each log, then the rest up to the next log
            for step in range(0, config.steps, config.log_every):
                chunks += [1, min(config.log_every, config.steps - step) - 1]
            start = time.perf_counter()
            for n in chunks:
                state = flow.advance(state, n) if n else state
            jax.block_until_ready(state)
            total += time.perf_counter() - start
    return total


def run_sweep_timed(spec, storage: str) -> tuple[float, "object"]:
    from dynagen.platform.results import read_results
    from dynagen.platform.sweep import run_sweep

    start = time.perf_counter()
    run_sweep(spec, storage=storage)
    wall = time.perf_counter() - start
    summary = read_results(storage, spec.name, kind="summary").to_pandas()
    return wall, summary


def main() -> None:
    import ray

    from dynagen.platform.sweep import load_sweep_spec

    spec = load_sweep_spec(SWEEP)
    threaded = pure_step_seconds(spec, one_core=False)
    steps = pure_step_seconds(spec, one_core=True)  # the same programs, compiled by the first call
    start = time.perf_counter()
    ray.init(num_cpus=CONCURRENCY, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="dynagen-bench-") as storage:  # the packaged sweep, then its trials one per seed
        separate = spec.model_copy(update={"name": f"{spec.name}_separate", "vectorize_seeds": False})
        rows = {"groups": run_sweep_timed(spec, storage), "seeds": run_sweep_timed(separate, storage)}
    ray.shutdown()

    phases = sorted({c for _, s in rows.values() for c in s.columns if c.startswith("time/")})
    print(f"{SWEEP}: {spec.num_trials()} trials, {CONCURRENCY} at once on {CONCURRENCY} CPUs; Ray start-up {ray_start:.1f} s")
    print(f"pure step time (all trials, compiled beforehand): {steps:.1f} s on one core ({threaded:.1f} s with XLA's "
          f"threads on {len(os.sched_getaffinity(0))} cores)")
    print(f"{'':<6} {'wall s':>7} {'efficiency':>10} {'(threaded)':>10} {'ceiling':>7} {'(traced)':>8} {'(compiled)':>10} "
          f"{'processes':>9} {'completed':>9}  " + " ".join(f"{p[5:]:>13}" for p in phases))
    for label, (wall, summary) in rows.items():
        started = summary[summary["time/process_start"] > 0]["trial_id"]  # a group's seeds share its process
        processes = started.str.replace(r"-s\d+$", "", regex=True).nunique()
        completed = int((summary["status"] == "completed").sum())
        sums = " ".join(f"{summary[p].sum() if p in summary else float('nan'):>13.1f}" for p in phases)
        required = sum(summary[f"time/{phase}"].sum() for phase in REQUIRED_PHASES)
        traced = required + summary["time/trace"].sum()
        print(f"{label:<6} {wall:>7.1f} {steps / (wall * CONCURRENCY):>10.2f} {threaded / (wall * CONCURRENCY):>10.2f} "
              f"{steps / required:>7.2f} {steps / traced:>8.2f} {steps / (traced + summary['time/compile'].sum()):>10.2f} "
              f"{processes:>9} {completed:>9}  {sums}")
    print("(efficiency: one-core step time / (wall x concurrency); (threaded): the same with the step time of XLA's "
          "threads on every core; ceiling: the efficiency if the trials did nothing but their steps, metrics and plots, "
          "the work the sweep must do, with no idle core; (traced): the same plus its tracing and lowering, which a "
          "compilation cache would leave; (compiled): plus XLA's compilation too; time/<phase>: "
          "seconds summed over the trials' summary rows)")
    summary = rows["groups"][1].sort_values("wall_time")
    print(f"\nper trial, in finishing order: {'arch':<12} {'width':>5} {'seed':>4} {'new process':>11} {'trace s':>7} {'compile s':>9} {'steps s':>8}")
    for _, row in summary.iterrows():
        print(f"{'':<30} {row['config.arch']:<12} {row['config.width']:>5} {row['seed']:>4} {'yes' if row['time/process_start'] > 0 else 'no':>11}"
              f" {row['time/trace']:>7.1f} {row['time/compile']:>9.1f} {row['time/steps']:>8.1f}")


if __name__ == "__main__":
    main()
