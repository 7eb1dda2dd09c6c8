"""Sweeps: a search-space YAML -> a Ray Tune ``Tuner`` with Optuna, grid axes and seeds exhaustive.

The YAML (validated by :class:`SweepSpec`, unknown keys rejected)::

    name: activations                 # sweep id (default: the file's stem)
    experiment: gan-ntk
    preset: null                      # applied under `fixed`
    fixed: {steps: 2000}              # config values of every trial
    space:                            # one distribution per searched axis
      activation: {grid: [relu, gelu, erf]}    # exhaustive
      lr: {loguniform: [1.0e-4, 1.0e-1]}
      x: {uniform: [0.0, 1.0]}
      depth: {int: [1, 5]}                       # inclusive; `log: true` for a log scale
      loss: {choice: [ipm, lsgan]}               # sampled categorical
    seeds: [0, 1, 2]                  # every sampled configuration runs once per seed
    vectorize_seeds: false            # true: a configuration's seeds run as one program in one trial
    num_samples: 8                    # Optuna samples per grid point
    metric: sinkhorn
    mode: min
    scheduler: {type: asha, max_t: 1000, grace_period: 100, reduction_factor: 3}   # time_attr: step
    resources: {cpu: 1, gpu: 0, workers: 1}    # per trial; workers > 1: a Ray Train TorchTrainer
    max_concurrent: 2

How the axes become trials (what Ray 2.60 supports: ``OptunaSearch`` rejects ``grid_search``):

* only grid axes: Tune's own ``grid_search`` over grid axes x seeds (BasicVariantGenerator);
* with distribution axes: an Optuna *define-by-run* space. Optuna trial ``k`` takes grid point
  ``k mod G`` (G = number of grid points) as constants and samples the distribution axes, so
  ``num_samples * G`` Optuna trials cover every grid point ``num_samples`` times. With several
  seeds, Tune's ``Repeater`` runs each Optuna configuration once per seed (``__trial_index__``
  picks the seed) and gives Optuna the mean over seeds.

With ``vectorize_seeds`` (an experiment that declares ``train_seeds``), one Tune trial per configuration trains all
its seeds as one program: one compilation, vectorised steps, and still one run per seed (its folder, rows and
summary row, trial id ``<Tune trial id>-s<seed>``); Tune, ASHA and Optuna see the mean over the seeds
(docs/platform.md, "Vectorised seeds").

``max_concurrent`` wraps the searcher in a ``ConcurrencyLimiter`` (``TuneConfig.max_concurrent_trials``).
A crashed trial is recorded with status ``error`` (after ``max_failures`` retries from its latest
checkpoint) and the sweep goes on. ``--resume`` calls ``Tuner.restore(..., resume_errored=True)``:
finished trials are not rerun (and a trial whose completed summary is already in the results
store returns at once, should Tune's own snapshot predate its completion).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import itertools
import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dynagen.platform.configs import UsageError, deep_merge, field_at, load_yaml_file, parse_assignment, preset_values, set_dotted, validate
from dynagen.platform.names import check_name, name_problem
from dynagen.platform.registry import MAX_SEED
from dynagen.platform.runtime import gpu_share_problem

DISTRIBUTIONS = ("grid", "uniform", "loguniform", "int", "choice")


class Axis(BaseModel):
    """One searched config key: exactly one distribution."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # `builtins.int`: inside this class body the field named `int` shadows the type (its default, None,
    # would become the annotation and reject every bound).
    grid: Optional[list[Any]] = None
    uniform: Optional[tuple[float, float]] = None
    loguniform: Optional[tuple[float, float]] = None
    int: Optional[tuple[builtins.int, builtins.int]] = None
    choice: Optional[list[Any]] = None
    log: bool = False  # for `int`

    @model_validator(mode="after")
    def _exactly_one(self) -> "Axis":
        given = [name for name in DISTRIBUTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one distribution, got {given or 'none'}; allowed: {', '.join(DISTRIBUTIONS)}")
        low_high = self.uniform or self.loguniform or self.int
        if low_high is not None and not low_high[0] < low_high[1]:
            raise ValueError(f"{self.kind} bounds must be [low, high] with low < high, got {list(low_high)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform bounds must be > 0")
        if self.log and (self.int is None or self.int[0] < 1):
            raise ValueError("log: applies to an `int` axis with low >= 1 only; allowed: loguniform for floats")
        if (self.grid is not None and not self.grid) or (self.choice is not None and not self.choice):
            raise ValueError(f"{self.kind} needs at least one value")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in DISTRIBUTIONS if getattr(self, name) is not None)

    def candidates(self) -> list[Any]:
        """Values to validate against the config before any trial runs."""
        if self.grid is not None or self.choice is not None:
            return list(self.grid if self.grid is not None else self.choice)
        return list(self.uniform or self.loguniform or self.int)


class Scheduler(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: Literal["asha"] = "asha"
    max_t: int = Field(ge=1)
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(3.0, gt=1.0)

    @model_validator(mode="after")
    def _grace_within_max_t(self) -> "Scheduler":
        if self.grace_period > self.max_t:
            raise ValueError(f"grace_period {self.grace_period} is past max_t {self.max_t}; allowed: grace_period <= max_t")
        return self


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)
    workers: int = Field(1, ge=1)

    @field_validator("gpu")
    @classmethod
    def _gpu_is_a_share_or_whole_gpus(cls, gpu: float) -> float:
        problem = gpu_share_problem(gpu)
        if problem is not None:
            raise ValueError(problem)
        return gpu


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Optional[str] = None
    experiment: str
    preset: Optional[str] = None
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Axis] = Field(default_factory=dict)
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(default_factory=lambda: [0], min_length=1)
    vectorize_seeds: bool = False
    num_samples: int = Field(1, ge=1)
    metric: str
    mode: Literal["min", "max"] = "min"
    scheduler: Optional[Scheduler] = None
    resources: Resources = Field(default_factory=Resources)
    max_concurrent: int = Field(2, ge=1)
    max_failures: int = Field(0, ge=0)  # retries per trial, from its latest checkpoint
    checkpoint_every: int = Field(100, ge=0)
    keep_checkpoints: int = Field(2, ge=1)
    search_seed: int = 0  # Optuna sampler seed

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, name: Optional[str]) -> Optional[str]:
        problem = None if name is None else name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        return name

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if repeated:
            raise ValueError(f"seed(s) {repeated} repeated (a repeat would rerun the same trial); allowed: distinct seeds")
        return seeds

    @property
    def grid_axes(self) -> dict[str, list[Any]]:
        return {key: axis.grid for key, axis in self.space.items() if axis.grid is not None}

    @property
    def sampled_axes(self) -> dict[str, Axis]:
        return {key: axis for key, axis in self.space.items() if axis.grid is None}

    def grid_points(self) -> list[dict[str, Any]]:
        grid = self.grid_axes
        return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]

    def num_trials(self) -> int:
        """Runs: one per configuration and seed (a vectorised group holds several)."""
        samples = self.num_samples if self.sampled_axes else 1
        return samples * len(self.grid_points()) * len(self.seeds)

    def num_tune_trials(self) -> int:
        return self.num_trials() // len(self.seeds) if self.vectorize_seeds else self.num_trials()


def packaged_search_spaces() -> list[str]:
    folder = resources.files("dynagen.search_spaces")
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_sweep_spec(path_or_name: str, overrides: Sequence[str] = (), num_samples: int | None = None,
                    seeds: Sequence[int] | None = None) -> SweepSpec:
    """Read and validate a sweep YAML: a file, or ``NAME`` of ``dynagen/search_spaces/NAME.yaml``.
    Every fixed value and every candidate value of every axis is validated against the
    experiment's config before anything runs.

    ``overrides`` (``key=value``, as ``dynagen sweep --set``) replace fixed values, or pin a searched axis to
    one value; ``num_samples`` and ``seeds`` replace the spec's. Together they run a packaged sweep at a
    reduced size (fewer steps, particles, samples) without copying its file."""
    path = Path(path_or_name)
    if not path.is_file():
        check_name(path_or_name, "search_space")
        packaged = resources.files("dynagen.search_spaces") / f"{path_or_name}.yaml"
        if not packaged.is_file():
            allowed = ", ".join(packaged_search_spaces()) or "(none packaged)"
            raise UsageError(f"search_space: no such file or packaged search space {path_or_name!r}; packaged: {allowed}")
        path = Path(str(packaged))
    raw = load_yaml_file(path, what="search_space")
    if not isinstance(raw, dict):
        raise UsageError(f"search_space: {path} must hold a mapping, got {type(raw).__name__}")
    for text in overrides:
        key, value = parse_assignment(text)
        if isinstance(raw.get("space"), dict):
            raw["space"].pop(key, None)
        if not isinstance(raw.get("fixed", {}), dict):
            break  # validation below names the malformed `fixed`
        set_dotted(raw.setdefault("fixed", {}), key, value)
    if num_samples is not None:
        raw["num_samples"] = num_samples
    if seeds is not None:
        raw["seeds"] = list(seeds)
    spec = validate(SweepSpec, raw)
    if spec.name is None:
        spec.name = check_name(path.stem, "name")
    check_against_experiment(spec)
    return spec


def check_against_experiment(spec: SweepSpec) -> None:
    from dynagen.platform.registry import UnknownExperiment, get

    try:
        experiment = get(spec.experiment)
    except UnknownExperiment as error:
        raise UsageError(error.args[0]) from None
    fixed = deep_merge(preset_values(experiment, spec.preset), spec.fixed)
    if "seed" in spec.space or "seed" in spec.fixed:
        raise UsageError("space: seed is set by `seeds`, not by fixed/space")
    if experiment.metrics and spec.metric not in experiment.metrics:
        raise UsageError(f"metric: {experiment.name} never reports {spec.metric!r}; allowed: {', '.join(experiment.metrics)}")
    if spec.vectorize_seeds and experiment.train_seeds is None:
        raise UsageError(f"vectorize_seeds: {experiment.name} trains one seed at a time (no train_seeds); allowed: false")
    if spec.vectorize_seeds and spec.resources.workers > 1:
        raise UsageError(f"vectorize_seeds: a group runs in one process, not {spec.resources.workers} workers; allowed: "
                         f"resources.workers: 1, or vectorize_seeds: false")
    validate(experiment.config, fixed)
    for key, axis in spec.space.items():
        _, annotation = field_at(experiment.config, tuple(key.split(".")))
        if axis.kind in ("uniform", "loguniform") and annotation is builtins.int:
            raise UsageError(f"space.{key}: {axis.kind} samples floats but {key} is an integer; allowed: int: [low, high] "
                             f"(log: true for a log scale), grid or choice")
        for value in axis.candidates():
            values = deep_merge(fixed, {})  # a copy
            set_dotted(values, key, value)
            validate(experiment.config, values)


class DefineByRun:
    """Optuna define-by-run space: grid point ``trial.number mod G`` as constants, sampled axes
    through ``trial.suggest_*``. A module-level class so that Tune can pickle the searcher."""

    def __init__(self, grid_points: list[dict[str, Any]], sampled: dict[str, Axis]):
        self.grid_points = grid_points
        self.sampled = {key: axis.model_dump() for key, axis in sampled.items()}

    def __call__(self, trial) -> dict[str, Any]:
        for key, axis in self.sampled.items():
            if axis["uniform"] is not None:
                trial.suggest_float(key, *axis["uniform"])
            elif axis["loguniform"] is not None:
                trial.suggest_float(key, *axis["loguniform"], log=True)
            elif axis["int"] is not None:
                trial.suggest_int(key, *axis["int"], log=axis["log"])
            else:
                trial.suggest_categorical(key, axis["choice"])
        return dict(self.grid_points[trial.number % len(self.grid_points)])


def _search(spec: SweepSpec) -> tuple[dict[str, Any], Any, int]:
    """``(param_space, search_alg or None, num_samples)`` for the Tuner."""
    from ray import tune

    if not spec.sampled_axes:
        space = {key: tune.grid_search(values) for key, values in spec.grid_axes.items()}
        if not spec.vectorize_seeds:  # else every trial trains all seeds
            space["seed"] = tune.grid_search(spec.seeds)
        return space, None, 1
    from ray.tune.search import Repeater

    from dynagen.platform.optuna_search import OptunaOnMeasuredReports

    searcher = OptunaOnMeasuredReports(space=DefineByRun(spec.grid_points(), spec.sampled_axes), metric=spec.metric, mode=spec.mode, seed=spec.search_seed)
    if len(spec.seeds) > 1 and not spec.vectorize_seeds:
        searcher = Repeater(searcher, repeat=len(spec.seeds), set_index=True)
    return {}, searcher, spec.num_tune_trials()


def run_sweep(spec: SweepSpec, *, storage: str, resume: bool = False, max_concurrent: int | None = None, verbose: bool = True,
              tracker: str | None = None):
    """Run (or with ``resume``, restore) the sweep; returns Tune's ResultGrid. Rows go to
    ``<storage>/<name>/results``; Tune's own state and trial checkpoints to ``<storage>/<name>``.
    Unless ``verbose``, Ray's, Tune's and the trials' output goes to log files (``<sweep>/logs/driver.log``,
    ``<sweep>/trials/<id>/logs/trial.log``) and the console shows a live status, one line per ended trial and
    the summary table (platform/console.py)."""
    from ray import tune

    from dynagen.platform import console

    from dynagen.platform.backends import backend_of
    from dynagen.platform.launch import tune_trial
    from dynagen.platform.registry import get
    from dynagen.platform.results import compact_results, join, resolve_storage
    from dynagen.platform.run import RunSettings, run_dir_for, summary_callback
    from dynagen.platform.runtime import ensure_ray, serves_state_api

    experiment = get(spec.experiment)
    backend = backend_of(experiment)
    filesystem, base, canonical = resolve_storage(storage)
    settings = RunSettings(
        storage=canonical, sweep_id=spec.name, trial_id="", run_name="", checkpoint_every=spec.checkpoint_every,
        keep_checkpoints=spec.keep_checkpoints, max_failures=0, workers=spec.resources.workers,
        cpus_per_worker=max(1, round(spec.resources.cpu)), gpus_per_worker=spec.resources.gpu,
        use_gpu=spec.resources.gpu > 0,
        fixed=deep_merge(preset_values(experiment, spec.preset), {**spec.fixed, "seed": spec.seeds[0]}),
        seeds=list(spec.seeds), metric=spec.metric, verbose=verbose, tracker=tracker, vectorize_seeds=spec.vectorize_seeds,
    )
    path = join(canonical, spec.name)
    if resume and not tune.Tuner.can_restore(path):
        raise UsageError(f"resume: no sweep state for {spec.name!r} under {canonical}")
    if not resume and filesystem.get_file_info(join(base, spec.name, "results")).type.name != "NotFound":
        raise UsageError(f"name: sweep {spec.name!r} already has results under {canonical}; use --resume or another name")
    # Persist Tune's experiment state often, so that an interrupted sweep loses little.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # A metric measured at some reports only (validation every few steps) is legitimate: Tune's check that every
    # report carries it is off, the metric's name was checked against the experiment's metrics when the spec was loaded;
    # ASHA and the searcher (platform/optuna_search.py) act on the reports that carry it.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    workers = spec.resources.workers
    # Ray's and Tune's logging into the sweep's log while it runs (from before Ray starts: its start-up lines too)
    with contextlib.nullcontext() if verbose else console.quiet_driver(run_dir_for(canonical, spec.name)[0]):
        ensure_ray({"CPU": (workers * settings.cpus_per_worker, "resources.cpu x resources.workers"),
                    "GPU": (workers * spec.resources.gpu, "resources.gpu x resources.workers")}, quiet=not verbose)
        settings = dataclasses.replace(settings, state_api=serves_state_api())  # known once Ray is up
        summaries = summary_callback(experiment, settings, spec.scheduler.max_t if spec.scheduler else None)
        callbacks = [summaries, *console.tune_loggers()]
        if not verbose:
            callbacks.append(console.sweep_status(spec.num_trials(), spec.metric, spec.mode, summaries.outcomes,
                                                  runs_per_trial=spec.num_trials() // spec.num_tune_trials()))
        trainable = tune.with_resources(tune.with_parameters(tune_trial, experiment=experiment, settings=settings),
                                        backend.trial_resources(settings.cpus_per_worker, settings.gpus_per_worker, workers))
        if resume:
            tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
        else:
            space, searcher, num_samples = _search(spec)
            scheduler = None
            if spec.scheduler is not None:
                scheduler = tune.schedulers.ASHAScheduler(time_attr="step", max_t=spec.scheduler.max_t,
                                                          grace_period=spec.scheduler.grace_period,
                                                          reduction_factor=spec.scheduler.reduction_factor)
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, search_alg=searcher, scheduler=scheduler,
                                            num_samples=num_samples, max_concurrent_trials=max_concurrent or spec.max_concurrent,
                                            # in-process trials reuse their worker process (imports paid once)
                                            reuse_actors=not backend.in_trainer(workers, single_run=False)),
                run_config=tune.RunConfig(
                    name=spec.name, storage_path=canonical,
                    failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.keep_checkpoints),
                    callbacks=callbacks,
                    verbose=1 if verbose else 0,
                ),
            )
        groups = f" ({spec.num_tune_trials()} Tune trials of {len(spec.seeds)} seeds each)" if spec.vectorize_seeds else ""
        print(f"sweep {spec.name}: {spec.num_trials()} trials of {experiment.name}{groups}, results in "
              f"{join(canonical, spec.name, 'results')}", flush=True)
        if not verbose:
            print(f"logs: {join(canonical, spec.name, console.LOG_DIR)}/ and each trial's logs/ (-v to show them here)", flush=True)
        grid = tuner.fit()
        compact_results(canonical, spec.name)  # the finished trials' files -> a few parts (results.py)
        if not verbose:
            _print_table(canonical, spec)
        return grid


def _print_table(storage: str, spec: SweepSpec) -> None:
    """The sweep's summary table for its metric: mean and 95 % CI per group (``dynagen results`` for more)."""
    from dynagen.platform.analysis import summarize
    from dynagen.platform.configs import format_table

    try:
        rows = summarize(storage, spec.name, metrics=[spec.metric])
    except UsageError as error:  # no trial wrote a row with the metric
        print(f"no summary table: {error}")
        return
    print(format_table(rows), flush=True)
