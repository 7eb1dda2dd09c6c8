"""Running an experiment on Ray: Ray Train for torch, a Tune function trial for JAX.

:func:`run_training` is what ``dynagen train`` calls. Torch experiments run in a Ray Train V2
``TorchTrainer``: one worker per process, DDP through ``ray.train.torch.prepare_model`` /
``prepare_data_loader`` behind ``ctx``, checkpoints reported with ``ray.train.report`` every
``checkpoint_every`` steps (the last ``keep_checkpoints`` kept), ``FailureConfig(max_failures)`` so
a failed worker group restarts from the latest checkpoint, and the run resumable by name (Train V2
restores a run that has the same storage path and name). JAX experiments run as one Tune function
trial with the same context semantics (``prepare_*`` are the identity, ``device`` is None).

Inside every worker the training function sees a :class:`TrainContext` or :class:`TuneContext`;
rank 0 writes TensorBoard scalars/images into ``<run_dir>/tensorboard``, per-step rows into the
results store and a progress line (step, metrics, steps/s, ETA) at most every few seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from dynagen.platform.configs import UsageError
from dynagen.platform.context import CHECKPOINT_FILE, Diverged, StateFn, load_state, save_state_atomically, tensorboard_writer
from dynagen.platform.registry import Experiment, ExperimentConfig, get
from dynagen.platform.results import ResultsWriter, join, numeric_metrics, resolve_storage, write_bytes_atomically

DEFAULT_CHECKPOINT_EVERY = 100
DEFAULT_KEEP_CHECKPOINTS = 3
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
COMPLETED_KEY = "completed"  # present (=1) in a trial's final report (ctx.report(final=True), and once train() returned)
DIVERGED_KEY = "diverged"  # present (=1) in the last report of a trial whose train() raised Diverged
REASON_KEY = "reason"  # with DIVERGED_KEY: its one-line reason


# --------------------------------------------------------------------------------------------
# Threads and Ray start-up
# --------------------------------------------------------------------------------------------


def thread_env(cpus: int) -> dict[str, str]:
    """Environment that keeps one process on ``cpus`` cores (torch/OpenMP/MKL and XLA's CPU
    backend); it must be in place before torch or jax are first imported in that process."""
    cpus = str(max(1, int(cpus)))
    return {
        "OMP_NUM_THREADS": cpus,
        "MKL_NUM_THREADS": cpus,
        "OPENBLAS_NUM_THREADS": cpus,
        "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={cpus}",
    }


def train_worker_env(cpus: int) -> dict[str, str]:
    """Environment of a Ray Train worker process: ``cpus`` threads, and normal CPU priority. Ray starts its
    workers at niceness 15 (to favour its own daemons), so any ordinary process on the node (the driver, Ray's
    actors importing at start-up, another job) preempts training and the GPU waits; the trainer's workers are
    the node's main work."""
    return {**thread_env(cpus), "RAY_worker_niceness": "0"}


def limit_threads(cpus: int) -> None:
    os.environ.update(thread_env(cpus))
    import torch

    torch.set_num_threads(max(1, int(cpus)))


def ensure_ray(needs: Mapping[str, tuple[float, str]] | None = None) -> None:
    """Connect to the cluster named by ``RAY_ADDRESS`` (``ray job submit`` sets it), else start an
    embedded local Ray without the dashboard. Never attaches to some other local Ray by accident.

    ``needs``: resource ("CPU", "GPU") -> (amount one run or trial needs at once, the option that sets
    it). An embedded Ray has no autoscaler, so a request larger than this machine would wait forever:
    that is a usage error naming the option.
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
        return
    ray.init(include_dashboard=False)
    available = ray.cluster_resources()
    for resource, (needed, option) in (needs or {}).items():
        if needed > available.get(resource, 0):
            ray.shutdown()
            raise UsageError(f"{option}: needs {needed:g} {resource} at once but this machine has {available.get(resource, 0):g}; "
                             f"allowed: at most that, or a cluster through RAY_ADDRESS")


# --------------------------------------------------------------------------------------------
# What a training function sees
# --------------------------------------------------------------------------------------------


@dataclass
class RunSettings:
    """Everything a worker needs besides the experiment and its config (picklable)."""

    storage: str  # canonical storage string (absolute path or URI)
    sweep_id: str  # results dataset name: the sweep, or the run name for a single run
    trial_id: str  # row key in the results store; "" = take the Tune trial id
    run_name: str  # folder under <storage>/<sweep_id>... holding this run's artifacts
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    keep_checkpoints: int = DEFAULT_KEEP_CHECKPOINTS
    max_failures: int = 0
    workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool = False
    gpus_per_worker: float = 0.0
    progress_every_s: float = 5.0
    metric: str | None = None  # a sweep's metric: Tune requires it in every report, a diverged one included
    fixed: dict[str, Any] = field(default_factory=dict)  # config values under a trial's sampled ones
    seeds: list[int] = field(default_factory=lambda: [0])  # a sweep's seeds (Repeater's index picks one)


def run_dir_for(storage: str, *parts: str) -> tuple[Path, str | None]:
    """``(local run dir, remote URI to upload it to at the end or None)``."""
    _, base, canonical = resolve_storage(storage)
    if canonical.startswith("/"):
        return Path(join(base, *parts)), None
    staging = Path(tempfile.gettempdir()) / "dynagen-staging" / "/".join(parts)
    return staging, join(canonical, *parts)


class _Progress:
    """A progress line at most every ``every_s`` seconds: step, metrics, steps/s, ETA."""

    def __init__(self, label: str, total_steps: int | None, every_s: float):
        self.label, self.total, self.every_s = label, total_steps, every_s
        self._start_time = self._last_print = time.monotonic()
        self._start_step: int | None = None

    def update(self, step: int, metrics: Mapping[str, float], final: bool) -> None:
        now = time.monotonic()
        if self._start_step is None:
            self._start_step, self._start_time = step, now
            return
        if not final and now - self._last_print < self.every_s:
            return
        self._last_print = now
        rate = (step - self._start_step) / max(now - self._start_time, 1e-9)
        shown = " | ".join(f"{k} {v:.4g}" for k, v in list(metrics.items())[:4])
        total = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and rate > 0 and not final:
            seconds = int((self.total - 1 - step) / rate)
            eta = f" | ETA {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        # sys.stdout directly: Ray Train's patched print() would echo the line twice on the driver
        sys.stdout.write(f"[{self.label}] step {step + 1}{total} | {shown} | {rate:.2f} steps/s{eta}\n")
        sys.stdout.flush()


class _PlatformContext:
    """The parts of ``ctx`` shared by Ray Train workers and Tune trials."""

    report_every_step = True  # pass every logged step to Ray (else only checkpoints)

    def __init__(self, *, experiment: Experiment, config: ExperimentConfig, settings: RunSettings, trial_id: str, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size
        self.settings = settings
        self.config_dict = config.model_dump(mode="json")
        self.run_dir, self._upload_to = run_dir_for(settings.storage, *settings.run_name.split("/"))
        self.last_step = -1
        self._writer = self._results = self._progress = None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._writer = tensorboard_writer(self.run_dir / "tensorboard")
            self._results = ResultsWriter(settings.storage, settings.sweep_id, experiment.name, trial_id, self.config_dict, config.seed, flush_seconds=10.0)
            self._progress = _Progress(f"{experiment.name} {trial_id}", getattr(config, "steps", None), settings.progress_every_s)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_batch_size(self, global_batch_size: int) -> int:
        return max(1, global_batch_size // self.world_size)

    def report(self, step: int, metrics: Mapping[str, float], state: StateFn | None = None, *, final: bool = False) -> None:
        values = {key: float(value) for key, value in metrics.items()}
        self.last_step = step
        if self.is_main:
            for key, value in values.items():
                self._writer.add_scalar(key, value, step)
            self._results.log_step(step, values)
            self._progress.update(step, values, final)
        every = self.settings.checkpoint_every
        due = state is not None and (final or (every > 0 and step > 0 and step % every == 0))
        # Marked complete on the final report itself: a scheduler may stop the trial right there (ASHA at max_t).
        payload = {**values, "step": step, **({COMPLETED_KEY: 1.0} if final else {})}
        if due and self.is_main:
            self._results.flush()  # rows and event files up to a checkpoint are durable before it is
            self._writer.flush()
            with tempfile.TemporaryDirectory(prefix="dynagen-ckpt-") as directory:
                save_state_atomically({**state(), "_step": step, "_config": self.config_dict}, Path(directory))
                self._publish(payload, directory, step)
        elif due or self.report_every_step:
            self._publish(payload, None, step)

    def log_images(self, step: int, tag: str, images: Any) -> None:
        """``images``: array [N, H, W, C] or [H, W, C] in [0, 1]; rank 0 only."""
        if not self.is_main:
            return
        import numpy as np

        array = np.asarray(images, dtype=np.float32)
        self._writer.add_images(tag, array[None] if array.ndim == 3 else array, step, dataformats="NHWC")

    def _read_checkpoint(self, checkpoint) -> tuple[Mapping[str, Any], int] | None:
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            state = load_state(Path(directory) / CHECKPOINT_FILE)
        return state, int(state["_step"])

    def close(self) -> None:
        if not self.is_main:
            return
        self._results.flush()
        self._writer.close()
        if self._upload_to:
            import pyarrow.fs as pafs

            pafs.copy_files(str(self.run_dir), self._upload_to, source_filesystem=pafs.LocalFileSystem())

    def _publish(self, metrics: dict[str, float], checkpoint_dir: str | None, step: int) -> None:
        raise NotImplementedError


class TrainContext(_PlatformContext):
    """``ctx`` inside a Ray Train worker (torch).

    Ray Train V2's controller drains each worker's one-slot report queue once per health check
    (2 s), so every ``ray.train.report`` can stall a worker that long: Ray hears only of
    checkpoints (and the final metrics), while every logged step goes from rank 0 straight to
    TensorBoard and the results store. In a sweep, Tune (and ASHA) therefore see a multi-worker
    trial's metrics at its checkpoint steps.
    """

    report_every_step = False

    @property
    def device(self) -> Any:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model: Any) -> Any:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def prepare_data_loader(self, loader: Any) -> Any:
        import ray.train.torch

        return ray.train.torch.prepare_data_loader(loader)

    def restore(self) -> tuple[Mapping[str, Any], int] | None:
        import ray.train

        return self._read_checkpoint(ray.train.get_checkpoint())

    def _publish(self, metrics: dict[str, float], checkpoint_dir: str | None, step: int) -> None:
        import ray.train

        # Every rank reports (Train V2 synchronises on it); only rank 0 carries the checkpoint.
        if checkpoint_dir is None:
            ray.train.report(metrics)
        else:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(checkpoint_dir), checkpoint_dir_name=f"checkpoint_{step:09d}")


class TuneContext(_PlatformContext):
    """``ctx`` inside a Tune function trial: JAX experiments (device None, identity ``prepare_*``)
    and single-worker torch trials of a sweep (model moved to the trial's device)."""

    def __init__(self, *, backend: str, **kwargs: Any):
        super().__init__(rank=0, world_size=1, **kwargs)
        self.backend = backend

    @property
    def device(self) -> Any:
        if self.backend == "jax":
            return None
        import torch

        return torch.device("cuda" if self.settings.use_gpu and torch.cuda.is_available() else "cpu")

    def prepare_model(self, model: Any) -> Any:
        return model if self.backend == "jax" else model.to(self.device)

    def prepare_data_loader(self, loader: Any) -> Any:
        return loader

    def restore(self) -> tuple[Mapping[str, Any], int] | None:
        import ray.tune

        return self._read_checkpoint(ray.tune.get_checkpoint())

    def _publish(self, metrics: dict[str, float], checkpoint_dir: str | None, step: int) -> None:
        import ray.tune

        checkpoint = ray.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.tune.report(metrics, checkpoint=checkpoint)


# --------------------------------------------------------------------------------------------
# Worker and trial entry points
# --------------------------------------------------------------------------------------------


SEED_INDEX_KEY = "__trial_index__"  # set by ray.tune.search.Repeater: which of the sweep's seeds


def trial_params(params: Mapping[str, Any], seeds: list[int]) -> dict[str, Any]:
    """A trial's config values from Tune's params: Repeater's seed index becomes ``seed``."""
    params = dict(params)
    index = params.pop(SEED_INDEX_KEY, None)
    if index is not None:
        params["seed"] = seeds[int(index)]
    return params


def _final_report(final: Mapping[str, Any] | None, last_step: int) -> dict[str, float]:
    return {**numeric_metrics(final or {}), "step": last_step, COMPLETED_KEY: 1.0}


def _diverged_report(error: Diverged, metric: str | None) -> dict[str, Any]:
    """The last report of a diverged trial: its step and reason, no metric values (a sweep's metric as NaN,
    which Tune requires and Optuna records as a failed trial)."""
    return {"step": error.step, DIVERGED_KEY: 1.0, REASON_KEY: str(error), **({metric: math.nan} if metric else {})}


def train_worker(loop_config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` of the TorchTrainer: one DDP rank."""
    settings: RunSettings = loop_config["settings"]
    limit_threads(settings.cpus_per_worker)  # before the model's heavy imports
    import ray.train

    experiment: Experiment = loop_config["experiment"]
    config = experiment.config.model_validate(loop_config["config"])
    context = ray.train.get_context()
    ctx = TrainContext(experiment=experiment, config=config, settings=settings, trial_id=loop_config["trial_id"],
                       rank=context.get_world_rank(), world_size=context.get_world_size())
    try:
        report = _final_report(experiment.train(config, ctx), ctx.last_step)
    except Diverged as error:  # every rank finds it: the weights it checks are the same on all of them
        report = _diverged_report(error, settings.metric)
    finally:
        ctx.close()
    if ctx.is_main:  # Train's result carries the last *checkpoint's* metrics: keep train()'s return too
        write_bytes_atomically(settings.storage, join(settings.run_name, METRICS_FILE), json.dumps(report, indent=2).encode())
    ray.train.report(report)


def tune_trial(params: dict[str, Any], *, experiment: Experiment, settings: RunSettings) -> None:
    """A Tune function trial: the experiment in-process (JAX, or torch on one worker), or a
    TorchTrainer of ``settings.workers`` ranks whose reports reach Tune through TuneReportCallback."""
    limit_threads(settings.cpus_per_worker)
    import ray.tune

    from dynagen.platform.configs import deep_merge
    from dynagen.platform.results import read_summary

    trial_id = settings.trial_id or ray.tune.get_context().get_trial_id()
    if not settings.trial_id:  # a sweep trial: artifacts under <sweep>/trials/<trial id>
        settings = dataclasses.replace(settings, trial_id=trial_id, run_name=f"{settings.sweep_id}/trials/{trial_id}")
    summary = read_summary(settings.storage, settings.sweep_id, experiment.name, trial_id)
    if summary is not None and summary["status"] == "completed":  # finished before an interruption
        ray.tune.report(_final_report(summary, int(summary["step"])))
        return
    config = experiment.config.model_validate(deep_merge(settings.fixed, trial_params(params, settings.seeds)))
    if experiment.backend == "torch" and settings.workers > 1:
        import ray.train
        from ray.train.torch import TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        parent, _, name = settings.run_name.rpartition("/")
        trainer = TorchTrainer(
            train_worker,
            train_loop_config={"experiment": experiment, "config": config.model_dump(mode="json"), "settings": settings, "trial_id": trial_id},
            scaling_config=_scaling_config(settings),
            run_config=ray.train.RunConfig(
                name=name,
                storage_path=join(settings.storage, parent) if parent else settings.storage,
                failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=settings.keep_checkpoints),
                worker_runtime_env={"env_vars": train_worker_env(settings.cpus_per_worker)},
                callbacks=[TuneReportCallback()],
            ),
        )
        trainer.fit()
        return
    ctx = TuneContext(backend=experiment.backend, experiment=experiment, config=config, settings=settings, trial_id=trial_id)
    try:
        report = _final_report(experiment.train(config, ctx), ctx.last_step)
    except Diverged as error:
        report = _diverged_report(error, settings.metric)
    finally:
        ctx.close()
    ray.tune.report(report)


def _scaling_config(settings: RunSettings):
    import ray.train

    resources = {"CPU": settings.cpus_per_worker, **({"GPU": 1} if settings.use_gpu else {})}
    return ray.train.ScalingConfig(num_workers=settings.workers, use_gpu=settings.use_gpu, resources_per_worker=resources)


# --------------------------------------------------------------------------------------------
# The single-run launcher
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    metrics: dict[str, float]
    checkpoint_path: str | None
    run_dir: Path
    name: str
    storage: str
    status: str = "completed"  # or "diverged"
    reason: str | None = None


class RunNotFound(FileNotFoundError):
    pass


def read_run_file(storage: str | None, name: str, filename: str, parse) -> Any:
    """``parse(text)`` of ``<storage>/<name>/<filename>`` (raises :class:`RunNotFound`)."""
    filesystem, base, canonical = resolve_storage(storage)
    try:
        with filesystem.open_input_stream(join(base, name, filename)) as handle:
            return parse(handle.read().decode())
    except FileNotFoundError:
        raise RunNotFound(f"run: no {filename} for run {name!r} under {canonical}") from None


def write_run_config(storage: str, name: str, experiment: Experiment, config_dict: Mapping[str, Any]) -> None:
    """``<storage>/<name>/config.yaml``: the resolved config that ``evaluate`` and ``--resume`` read back."""
    import yaml

    document = yaml.safe_dump({"experiment": experiment.name, **config_dict}, sort_keys=False)
    write_bytes_atomically(storage, join(name, CONFIG_FILE), document.encode())


def read_run_config(storage: str | None, name: str) -> dict[str, Any]:
    """The resolved config saved with run ``name``, with its ``experiment`` key."""
    import yaml

    return read_run_file(storage, name, CONFIG_FILE, yaml.safe_load)


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
) -> RunResult:
    """Train ``experiment`` on Ray (starting an embedded local Ray if none is connected).

    ``resume=NAME`` continues run NAME from its latest checkpoint. Returns the final metrics (what
    ``train`` returned), the latest checkpoint's path and the run directory
    (``<storage>/<name>``: ``config.yaml``, ``tensorboard/``, the model's artifacts and, for torch,
    Ray Train's ``checkpoint_*`` folders). Per-step and summary rows go to the results store
    under the run name.
    """
    experiment = get(experiment) if isinstance(experiment, str) else experiment
    if not isinstance(config, ExperimentConfig):
        config = experiment.config.model_validate(dict(config))
    _, _, canonical = resolve_storage(storage)
    if resume:
        read_run_config(canonical, resume)  # the run must exist
        name = resume
    name = name or f"{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    ensure_ray({"CPU": (workers * cpus_per_worker, "--workers x --cpus-per-worker"), "GPU": (workers * use_gpu, "--gpu x --workers")})
    config_dict = config.model_dump(mode="json")
    write_run_config(canonical, name, experiment, config_dict)
    settings = RunSettings(
        storage=canonical, sweep_id=name, trial_id=name, run_name=name, checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints, max_failures=max_failures, workers=workers,
        cpus_per_worker=cpus_per_worker, use_gpu=use_gpu, progress_every_s=progress_every_s,
    )
    run_dir, _ = run_dir_for(canonical, name)
    if experiment.backend == "jax":
        (status, reason, metrics), checkpoint_path = _run_as_tune_trial(experiment, config, settings)
        return RunResult(metrics, checkpoint_path, run_dir, name, canonical, status, reason)

    import ray.train
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"experiment": experiment, "config": config_dict, "settings": settings, "trial_id": name},
        scaling_config=_scaling_config(settings),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=canonical,
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=keep_checkpoints),
            worker_runtime_env={"env_vars": train_worker_env(cpus_per_worker)},
        ),
    )
    summary = ResultsWriter(canonical, name, experiment.name, name, config_dict, config.seed)
    try:
        result = trainer.fit()
    except BaseException:
        summary.write_summary("error", -1, {})
        raise
    final = read_run_file(canonical, name, METRICS_FILE, json.loads)
    status, reason, metrics = final_status(final)
    summary.write_summary(status, int(final.get("step", -1)), metrics, reason=reason)
    checkpoint = result.checkpoint
    return RunResult(metrics, checkpoint.path if checkpoint else None, run_dir, name, canonical, status, reason)


def final_status(final: Mapping[str, Any]) -> tuple[str, str | None, dict[str, float]]:
    """``(status, reason, metrics)`` of a run from its final report: a diverged run has no metrics."""
    if final.get(DIVERGED_KEY):
        return "diverged", str(final.get(REASON_KEY, "")), {}
    return "completed", None, {k: v for k, v in numeric_metrics(final).items() if k != COMPLETED_KEY}


def _run_as_tune_trial(experiment: Experiment, config: ExperimentConfig, settings: RunSettings) -> tuple[tuple[str, str | None, dict[str, float]], str | None]:
    import ray.tune

    from dynagen.platform.sweep import summary_callback

    settings.fixed = config.model_dump(mode="json")
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(tune_trial, experiment=experiment, settings=settings),
        {"cpu": settings.cpus_per_worker, "gpu": 1 if settings.use_gpu else 0},
    )
    _, _, canonical = resolve_storage(settings.storage)
    run_config = ray.tune.RunConfig(
        name=f"{settings.run_name}/tune",
        storage_path=canonical,
        failure_config=ray.tune.FailureConfig(max_failures=settings.max_failures),
        checkpoint_config=ray.tune.CheckpointConfig(num_to_keep=settings.keep_checkpoints),
        callbacks=[summary_callback(experiment, settings)],
        verbose=0,
    )
    experiment_path = join(canonical, settings.run_name, "tune")
    if ray.tune.Tuner.can_restore(experiment_path):
        tuner = ray.tune.Tuner.restore(experiment_path, trainable, resume_errored=True)
    else:
        tuner = ray.tune.Tuner(trainable, param_space={}, run_config=run_config)
    result = tuner.fit()[0]
    if result.error:
        raise result.error
    return final_status(result.metrics or {}), result.checkpoint.path if result.checkpoint else None
