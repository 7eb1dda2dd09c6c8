"""Launching a run: ``--local`` in this process, Ray Train for torch, a Tune function trial for JAX.

:func:`run_training` is what ``dynagen train`` calls, :func:`train_locally` what ``dynagen train --local``
calls; sweeps (``platform/sweep.py``) run :func:`tune_trial` for each trial. Every path builds the same
:class:`~dynagen.platform.run.Run` (folder, checkpoints, rows, metrics.json, summary row) and a context
(``platform/context.py``); the experiment's backend (``platform/backends.py``) says whether a run goes
through a Ray Train ``TorchTrainer``.

Torch experiments run in a Ray Train V2 ``TorchTrainer``: one worker per process, DDP through
``ray.train.torch.prepare_model`` / ``prepare_data_loader`` behind ``ctx``, checkpoints reported with
``ray.train.report`` every ``checkpoint_every`` steps (the last ``keep_checkpoints`` kept),
``FailureConfig(max_failures)`` so a failed worker group restarts from the latest checkpoint, and the run
resumable by name (Train V2 restores a run that has the same storage path and name). JAX experiments run
as one Tune function trial with the same context semantics (``prepare_*`` are the identity, ``device`` is None).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dynagen.platform import console
from dynagen.platform.backends import backend_of
from dynagen.platform.configs import UsageError
from dynagen.platform.context import (
    Diverged, LocalContext, Progress, SeedContext, SeedGroup, TrainContext, TuneContext, group_report,
)
from dynagen.platform.registry import Experiment, ExperimentConfig, get
from dynagen.platform.results import is_uri, join, read_summary, resolve_storage, write_bytes_atomically
from dynagen.platform.run import (
    COMPLETED_KEY, DEFAULT_CHECKPOINT_EVERY, DEFAULT_KEEP_CHECKPOINTS, Run, RunNotFound, RunSettings, diverged_report,
    final_report, final_status, read_final_report, read_run_config, run_dir_for, run_exists, run_path, seed_run_settings,
    summary_callback, trial_config, write_run_config,
)
from dynagen.platform.names import check_name
from dynagen.platform.runtime import ensure_ray, limit_threads, serves_state_api, train_worker_env

ERROR_FILE = "error.txt"  # a --local run's traceback, in its run folder (Ray keeps its own)

__all__ = ["COMPLETED_KEY", "RunNotFound", "RunResult", "RunSettings", "read_run_config", "run_training", "train_locally",
           "train_worker", "tune_trial"]


def _train(experiment: Experiment, config: ExperimentConfig, ctx, metric: str | None = None) -> Mapping[str, Any]:
    """``experiment.train`` inside a context; returns the last report, of a run that returned or diverged
    (metrics.json written by rank 0). Every rank of a diverged Ray Train run finds it at the same step: the
    models check state that DDP keeps equal across ranks."""
    return _train_seeds(lambda configs, ctxs: [experiment.train(configs[0], ctxs[0])], [config], [ctx], metric)[0]


def _train_seeds(train, configs: list[ExperimentConfig], ctxs: list, metric: str | None = None) -> list[Mapping[str, Any]]:
    """``train(configs, ctxs)`` (one run's ``train``, or ``experiment.train_seeds`` for a vectorised seed group, one
    context per seed); returns each run's last report. A raised :class:`Diverged` ends every run of the call; a seed
    of a group may have ended alone (``ctx.diverge``, platform/context.py)."""
    try:
        try:
            results = train(configs, ctxs)
        finally:
            for ctx in ctxs:
                ctx.close()
    except Diverged as error:
        results = [error] * len(ctxs)
    except BaseException:
        for ctx in ctxs:
            if ctx.run is not None:
                ctx.run.failed()
        raise
    reports = []
    for ctx, result in zip(ctxs, results):
        diverged = getattr(ctx, "diverged", None) or (result if isinstance(result, Diverged) else None)
        reports.append(diverged_report(diverged, metric) if diverged else final_report(result, ctx.last_step))
    return [ctx.finish(report) for ctx, report in zip(ctxs, reports)]


def _progress(experiment: Experiment, trial_id: str, run: Run, settings: RunSettings) -> Progress:
    """A Ray worker's progress: ``progress.json`` for the driver's monitor, or under ``-v`` a line in its output
    every ``progress_every_s`` as before."""
    label = f"{experiment.name} {trial_id}"
    if settings.verbose:
        return Progress(label, run.total_steps, settings.progress_every_s,
                        display=console.ProgressDisplay(label, settings.progress_every_s, terminal=False))
    return Progress(label, run.total_steps, settings.progress_every_s, run_dir=run.run_dir)


def _worker_log(settings: RunSettings, name: str):
    """Where a worker's stdout and stderr go: ``<run folder>/logs/<name>`` (None under ``-v``: Ray's own)."""
    run_dir, _ = run_dir_for(settings.storage, *settings.run_name.split("/"))
    return None if settings.verbose else console.log_path(run_dir, name)


def _with_traceback(function, *args, **kwargs):
    """``function(...)``; an error's traceback is printed first, into the worker's log."""
    try:
        return function(*args, **kwargs)
    except BaseException:
        traceback.print_exc()
        raise


# --------------------------------------------------------------------------------------------
# Worker and trial entry points
# --------------------------------------------------------------------------------------------


def train_worker(loop_config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` of the TorchTrainer: one DDP rank (its output in ``logs/rank-<r>.log``)."""
    settings: RunSettings = loop_config["settings"]
    limit_threads(settings.cpus_per_worker)  # before the model's heavy imports
    import ray.train
    import ray.train.torch

    # the rank's own device: Ray Train may make every GPU of a trial's ranks on this node visible to each of them
    backend_of(loop_config["experiment"]).limit_gpu_memory(settings.gpus_per_worker, ray.train.torch.get_device())

    rank = ray.train.get_context().get_world_rank()
    with console.output_to(_worker_log(settings, f"rank-{rank}.log")):
        _with_traceback(_train_worker, loop_config, settings)


def _train_worker(loop_config: dict[str, Any], settings: RunSettings) -> None:
    import ray.train

    experiment: Experiment = loop_config["experiment"]
    config = experiment.config.model_validate(loop_config["config"])
    trial_id = loop_config["trial_id"]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    run = Run(settings, experiment.name, trial_id, config, writes=rank == 0)
    ctx = TrainContext(run.run_dir, rank=rank, world_size=context.get_world_size(), checkpoint_every=settings.checkpoint_every,
                       run=run, progress=_progress(experiment, trial_id, run, settings))
    # Train's result carries the last *checkpoint's* metrics: metrics.json keeps train()'s return too
    ray.train.report(_train(experiment, config, ctx, settings.metric))


def _torch_trainer(experiment: Experiment, config_dict: Mapping[str, Any], settings: RunSettings, trial_id: str,
                   storage_path: str, name: str, callbacks: list | None = None):
    """The one ``TorchTrainer`` of a run: ``settings.workers`` ranks, its failures and checkpoints."""
    import ray.train

    # a sweep's fractional resources.gpu per worker; a single run's --gpu: one whole GPU per worker
    resources = {"CPU": settings.cpus_per_worker, **({"GPU": settings.gpus_per_worker or 1} if settings.use_gpu else {})}
    return _trainer_class(settings.state_api)(
        train_worker,
        train_loop_config={"experiment": experiment, "config": dict(config_dict), "settings": settings, "trial_id": trial_id},
        scaling_config=ray.train.ScalingConfig(num_workers=settings.workers, use_gpu=settings.use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=settings.keep_checkpoints),
            worker_runtime_env={"env_vars": train_worker_env(settings.cpus_per_worker)},
            callbacks=callbacks or [],
        ),
    )


def _trainer_class(state_api: bool):
    """``TorchTrainer``, or on a Ray without the state API (the embedded one) a ``TorchTrainer`` without Ray Train V2's
    ``PlacementGroupCleanerCallback`` (docs/platform.md, "Ray Train's placement-group cleaner"). That callback starts a
    detached actor which asks the state API every second whether the controller is alive, to remove the run's
    placement group if it died ungracefully; the state API is served by the dashboard, so on the embedded Ray every
    query fails, the actor logs "Failed to query Ray Train Controller actor state" and, never learning of a death,
    could never clean anything up. Train V2 adds it unconditionally in ``_create_default_callbacks`` (ray==2.60.0,
    pinned in pyproject.toml): the one place to leave it out."""
    from ray.train.torch import TorchTrainer

    if state_api:
        return TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class TrainerWithoutStateApi(TorchTrainer):
        def _create_default_callbacks(self):
            return [callback for callback in super()._create_default_callbacks()
                    if not isinstance(callback, PlacementGroupCleanerCallback)]

    return TrainerWithoutStateApi


def tune_trial(params: dict[str, Any], *, experiment: Experiment, settings: RunSettings) -> None:
    """A Tune function trial: the experiment in-process (JAX, or torch on one worker), or a
    TorchTrainer of ``settings.workers`` ranks whose reports reach Tune through TuneReportCallback.
    Its output goes to ``<run folder>/logs/trial.log``."""
    entered = time.perf_counter()
    global _trials_in_this_process
    _trials_in_this_process += 1
    limit_threads(settings.cpus_per_worker)
    if not backend_of(experiment).in_trainer(settings.workers, single_run=False):  # else its Ray Train workers hold the GPU
        backend_of(experiment).limit_gpu_memory(settings.gpus_per_worker)
    import ray.tune

    trial_id = settings.trial_id or ray.tune.get_context().get_trial_id()
    if not settings.trial_id:  # a sweep trial: artifacts under <sweep>/trials/<trial id>
        settings = dataclasses.replace(settings, trial_id=trial_id, run_name=f"{settings.sweep_id}/trials/{trial_id}")
    with console.output_to(_worker_log(settings, console.TRIAL_LOG)):
        _with_traceback(_tune_trial, params, experiment, settings, trial_id, entered)


def _tune_trial(params: dict[str, Any], experiment: Experiment, settings: RunSettings, trial_id: str, entered: float) -> None:
    """``entered``: when :func:`tune_trial` began (perf_counter), the start of the trial's start-up time."""
    import ray.tune

    if settings.vectorize_seeds:
        _tune_seed_group(params, experiment, settings, entered)
        return
    summary = read_summary(settings.storage, settings.sweep_id, experiment.name, trial_id)
    if summary is not None and summary["status"] == "completed":  # finished before an interruption
        ray.tune.report(final_report(summary, int(summary["step"])))
        return
    config = trial_config(experiment, settings, params)
    backend = backend_of(experiment)
    if backend.in_trainer(settings.workers, single_run=False):
        from ray.tune.integration.ray_train import TuneReportCallback

        parent, _, name = settings.run_name.rpartition("/")
        _torch_trainer(experiment, config.model_dump(mode="json"), settings, trial_id,
                       join(settings.storage, parent) if parent else settings.storage, name, [TuneReportCallback()]).fit()
        return
    run = Run(settings, experiment.name, trial_id, config)
    ctx = TuneContext(run.run_dir, backend=backend, use_gpu=settings.use_gpu, checkpoint_every=settings.checkpoint_every,
                      run=run, progress=_progress(experiment, trial_id, run, settings))
    experiment.train.load()  # its module's imports (JAX...) belong to the start-up: once per process
    started = time.perf_counter()
    ray.tune.report({**_train(experiment, config, ctx, settings.metric), **startup_times(entered, started)})


def _tune_seed_group(params: dict[str, Any], experiment: Experiment, settings: RunSettings, entered: float) -> None:
    """A trial of a sweep with ``vectorize_seeds``: the sweep's seeds of one configuration trained as one program by
    ``experiment.train_seeds`` (docs/platform.md, "Vectorised seeds"). Each seed is a run of its own
    (:func:`~dynagen.platform.run.seed_run_settings`: folder, rows, metrics.json, summary row); Tune sees the group."""
    import ray.tune

    backend = backend_of(experiment)
    members = [seed_run_settings(settings, seed) for seed in settings.seeds]
    summaries = [read_summary(settings.storage, settings.sweep_id, experiment.name, member.trial_id) for member in members]
    if all(summary is not None and summary["status"] == "completed" for summary in summaries):  # before an interruption
        ray.tune.report(group_report({seed: final_report(summary, int(summary["step"]))
                                      for seed, summary in zip(settings.seeds, summaries)}))
        return
    group = SeedGroup(settings.seeds)
    configs, ctxs = [], []
    for seed, member in zip(settings.seeds, members):
        config = trial_config(experiment, member, {**params, "seed": seed})
        run = Run(member, experiment.name, member.trial_id, config)
        ctxs.append(SeedContext(run.run_dir, group=group, seed=seed, backend=backend, use_gpu=settings.use_gpu,
                                checkpoint_every=settings.checkpoint_every, run=run,
                                progress=_progress(experiment, member.trial_id, run, member)))
        configs.append(config)
    experiment.train_seeds.load()  # its module's imports belong to the start-up
    started = time.perf_counter()
    reports = _train_seeds(experiment.train_seeds, configs, ctxs, settings.metric)
    group.publish()
    share = {key: seconds / len(configs) for key, seconds in startup_times(entered, started).items()}  # each seed's part
    ray.tune.report(group_report({seed: {**report, **share} for seed, report in zip(settings.seeds, reports)}))


_trials_in_this_process = 0  # Tune reuses a trial's process for the next trial (reuse_actors)


def startup_times(entered: float, started: float) -> dict[str, float]:
    """A trial's start-up seconds for its summary row: ``time/process_start`` (the process's age when this
    trial came in: Ray starting it; 0 for a trial in a reused process) and ``time/trial_setup`` (from then to
    ``train()``: the experiment's imports in a new process, reading the config, the run folder)."""
    process_start = 0.0
    if _trials_in_this_process == 1:
        import psutil  # a Ray dependency

        process_start = max(0.0, time.time() - psutil.Process().create_time() - (time.perf_counter() - entered))
    return {"time/process_start": process_start, "time/trial_setup": started - entered}


# --------------------------------------------------------------------------------------------
# The single-run launchers
# --------------------------------------------------------------------------------------------


def new_run_name(experiment: Experiment, kind: str) -> str:
    """A fresh run id: the time to the second for people, a random part so that two runs never share one."""
    return f"{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:6]}"


def run_name(experiment: Experiment, storage: str, name: str | None, resume: str | None, kind: str) -> str:
    """The run's validated name: ``resume`` (which must exist), else ``name`` (which must not: Ray Train would restore
    an existing run by its name and continue it under a new config), else a fresh id."""
    if resume:
        check_name(resume, "resume")
        if name and name != resume:
            raise UsageError(f"name: {name!r} with --resume {resume!r}; allowed: --resume alone (the run keeps its name)")
        read_run_config(storage, resume)  # the run must exist
        return resume
    if name is None:
        return new_run_name(experiment, kind)
    check_name(name, "name")
    if run_exists(storage, name):
        raise UsageError(f"name: run {name!r} already exists under {storage}; allowed: a new name, or --resume {name}")
    return name


@dataclass
class RunResult:
    metrics: dict[str, float]
    checkpoint_path: str | None
    run_dir: Path
    name: str
    storage: str
    status: str = "completed"  # or "diverged" (metrics empty, reason says where)
    reason: str | None = None


def _header(experiment: Experiment, config: ExperimentConfig, name: str, run_dir: Path, where: str, device: Any,
            resumed: bool) -> None:
    """Two lines: what runs where, on which data (and from which checkpoint), and where its files go."""
    latest = max(run_dir.rglob("checkpoint*/state.pt"), key=lambda p: p.stat().st_mtime, default=None) if resumed else None
    console.header({experiment.name: f"run {name}", "on": where, "device": device, "data": config.data_source(),
                    "resumed from": latest})
    console.header({"run folder": run_dir, "logs": f"{console.LOG_DIR}/ (-v to show them here)"})


def _validated(experiment: Experiment | str, config: ExperimentConfig | Mapping[str, Any]) -> tuple[Experiment, ExperimentConfig]:
    experiment = get(experiment) if isinstance(experiment, str) else experiment
    if not isinstance(config, ExperimentConfig):
        config = experiment.config.model_validate(dict(config))
    return experiment, config


def train_locally(
    experiment: Experiment | str,
    config: ExperimentConfig | Mapping[str, Any],
    *,
    storage: str | None = None,
    name: str | None = None,
    resume: str | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    use_gpu: bool = False,
    cpus: int | None = None,
    progress_every_s: float = 5.0,
    verbose: bool = False,
    show_progress: bool = False,
    tracker: str | None = None,
) -> RunResult:
    """The run in this process with :class:`LocalContext` (no Ray): the same files and rows as on Ray.
    ``show_progress`` (``dynagen train --local``): a header and the progress on the console; the libraries'
    output then goes to ``logs/local.log`` unless ``verbose``."""
    experiment, config = _validated(experiment, config)
    _, _, canonical = resolve_storage(storage)
    if is_uri(canonical):
        raise UsageError(f"storage: --local runs need a local storage path, got {canonical}; allowed: a folder of this machine")
    name = run_name(experiment, canonical, name, resume, "local")
    run_dir, _ = run_dir_for(canonical, name)
    if cpus:
        limit_threads(cpus)  # before train() imports the model's heavy libraries
    backend = backend_of(experiment)
    device = backend.local_device(use_gpu)
    write_run_config(canonical, name, experiment, config.model_dump(mode="json"))
    settings = RunSettings(storage=canonical, sweep_id=name, trial_id=name, run_name=name, checkpoint_every=checkpoint_every,
                           progress_every_s=progress_every_s, verbose=verbose, tracker=tracker)
    run = Run(settings, experiment.name, name, config)
    if show_progress:
        _header(experiment, config, name, run_dir, "this process (--local)", device, bool(resume))
    with console.output_to(None if verbose or not show_progress else console.log_path(run_dir, "local.log")) as terminal:
        display = console.ProgressDisplay(f"{experiment.name} {name}", stream=terminal) if show_progress else None
        progress = Progress(f"{experiment.name} {name}", run.total_steps, progress_every_s, display=display)
        ctx = LocalContext(run.run_dir, checkpoint_every=checkpoint_every, device=device, run=run, backend=backend,
                           progress=progress)
        try:
            report = _train(experiment, config, ctx)
        except BaseException:
            run.write_summary("error", ctx.last_step, {})  # the steps logged so far are in the results store
            write_bytes_atomically(canonical, join(name, ERROR_FILE), traceback.format_exc().encode())
            raise
    status, reason, metrics = final_status(report)
    run.write_summary(status, int(report["step"]), metrics, reason=reason)
    checkpoint = ctx.checkpoint_dir / "state.pt"
    return RunResult(metrics, str(checkpoint) if checkpoint.is_file() else None, run_dir, name, canonical, status, reason)


def run_training(
    experiment: Experiment | str,
    config: ExperimentConfig | Mapping[str, Any],
    *,
    workers: int = 1,
    use_gpu: bool = False,
    storage: str | None = None,
    name: str | None = None,
    resume: str | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    keep_checkpoints: int = DEFAULT_KEEP_CHECKPOINTS,
    max_failures: int = 0,
    cpus_per_worker: int = 1,
    progress_every_s: float = 5.0,
    verbose: bool = True,
    tracker: str | None = None,
) -> RunResult:
    """Train ``experiment`` on Ray (starting an embedded local Ray if none is connected).

    ``resume=NAME`` continues run NAME from its latest checkpoint. Returns the final metrics (what
    ``train`` returned), the latest checkpoint's path and the run directory
    (``<storage>/<name>``: ``config.yaml``, ``tensorboard/``, the model's artifacts and, for torch,
    Ray Train's ``checkpoint_*`` folders). Per-step and summary rows go to the results store
    under the run name. Unless ``verbose``, Ray's and the workers' output goes to the run folder's ``logs/``
    and the console shows a header and the progress (platform/console.py).
    """
    experiment, config = _validated(experiment, config)
    _, _, canonical = resolve_storage(storage)
    name = run_name(experiment, canonical, name, resume, "ray")
    log_dir, _ = run_dir_for(canonical, name)  # this machine's copy of the run folder (a staging folder for a URI)
    # Ray's and Tune's logging into the run's log while the run goes (from before Ray starts: its start-up lines too)
    with contextlib.nullcontext() if verbose else console.quiet_driver(log_dir):
        ensure_ray({"CPU": (workers * cpus_per_worker, "--workers x --cpus-per-worker"), "GPU": (workers * use_gpu, "--gpu x --workers")},
                   quiet=not verbose)
        config_dict = config.model_dump(mode="json")
        write_run_config(canonical, name, experiment, config_dict)
        settings = RunSettings(
            storage=canonical, sweep_id=name, trial_id=name, run_name=name, checkpoint_every=checkpoint_every,
            keep_checkpoints=keep_checkpoints, max_failures=max_failures, workers=workers,
            cpus_per_worker=cpus_per_worker, use_gpu=use_gpu, progress_every_s=progress_every_s, fixed=config_dict, verbose=verbose,
            tracker=tracker, state_api=serves_state_api(),
        )
        run_dir = Path(run_path(canonical, name))
        if not verbose:
            _header(experiment, config, name, run_dir, f"Ray, {workers} worker{'s' if workers > 1 else ''}",
                    f"{workers} GPU" if use_gpu else "cpu", bool(resume))
        monitor = contextlib.nullcontext() if verbose else console.RunMonitor(log_dir, f"{experiment.name} {name}")
        if not backend_of(experiment).in_trainer(workers, single_run=True):
            with monitor:
                (status, reason, metrics), checkpoint_path = _run_as_tune_trial(experiment, settings)
            return RunResult(metrics, checkpoint_path, run_dir, name, canonical, status, reason)

        run = Run(settings, experiment.name, name, config, writes=False)  # the driver: the summary row only
        try:
            with monitor:
                result = _torch_trainer(experiment, config_dict, settings, name, canonical, name).fit()
        except BaseException:
            run.write_summary("error", -1, {})
            raise
        final = read_final_report(canonical, name)
        status, reason, metrics = final_status(final)
        run.write_summary(status, int(final.get("step", -1)), metrics, reason=reason)
        checkpoint = result.checkpoint
        return RunResult(metrics, checkpoint.path if checkpoint else None, run_dir, name, canonical, status, reason)


def _run_as_tune_trial(experiment: Experiment, settings: RunSettings) -> tuple[tuple[str, str | None, dict[str, float]], str | None]:
    """A single run as one Tune trial whose params are empty: its config is ``settings.fixed``."""
    import ray.tune

    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(tune_trial, experiment=experiment, settings=settings),
        {"cpu": settings.cpus_per_worker, "gpu": 1 if settings.use_gpu else 0},
    )
    run_config = ray.tune.RunConfig(
        name=f"{settings.run_name}/tune",
        storage_path=settings.storage,
        failure_config=ray.tune.FailureConfig(max_failures=settings.max_failures),
        checkpoint_config=ray.tune.CheckpointConfig(num_to_keep=settings.keep_checkpoints),
        callbacks=[summary_callback(experiment, settings), *console.tune_loggers()],
        verbose=0,
    )
    experiment_path = join(settings.storage, settings.run_name, "tune")
    if ray.tune.Tuner.can_restore(experiment_path):
        tuner = ray.tune.Tuner.restore(experiment_path, trainable, resume_errored=True)
    else:
        tuner = ray.tune.Tuner(trainable, param_space={}, run_config=run_config)
    result = tuner.fit()[0]
    if result.error:
        raise result.error
    from ray.tune.result import AUTO_RESULT_KEYS

    metrics = {k: v for k, v in (result.metrics or {}).items() if k not in AUTO_RESULT_KEYS}  # Tune's pid, timestamps...
    return final_status(metrics), result.checkpoint.path if result.checkpoint else None
