"""One run's lifecycle, the same for every launch path (``--local``, Ray Train, a Tune trial of a
single JAX run, a sweep trial).

A run owns one folder, ``<storage>/<run name>/``::

    config.yaml        the resolved config (written by the driver before training; ``--resume`` reads it)
    tensorboard/       scalars and images from rank 0
    checkpoint*/       state.pt: the model's state + ``_step`` + ``_config`` (one schema, docs/platform.md)
    metrics.json       the final report: what ``train()`` returned and the last step
    provenance.json    what produced the run: code, libraries, machine, command, config hash, data, times
                       (platform/provenance.py; written by rank 0 when the run starts and when it ends)
    <model artifacts>  PNG, GIF, npz ... written by rank 0 into ``ctx.run_dir``

and its rows in the results store (``<storage>/<sweep or run>/results``): per-step rows flushed
every few seconds and at every checkpoint, then ONE summary row with the run's status. The summary
is written by whoever sees the run end: the driver of a single run, or Tune's driver-side
:class:`SummaryCallback` for trials (which may also be stopped early by the scheduler).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from dynagen.platform import provenance
from dynagen.platform.configs import UsageError, deep_merge
from dynagen.platform.names import inside
from dynagen.platform.results import (
    ResultsWriter, copy_file_atomically, is_uri, join, numeric_metrics, read_summary, resolve_storage, write_bytes_atomically,
)

if TYPE_CHECKING:
    from dynagen.platform.context import Diverged
    from dynagen.platform.registry import Experiment, ExperimentConfig

DEFAULT_CHECKPOINT_EVERY = 100
DEFAULT_KEEP_CHECKPOINTS = 3
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
COMPLETED_KEY = "completed"  # present (=1) in a trial's final report (ctx.report(final=True), and once train() returned)
DIVERGED_KEY = "diverged"  # present (=1) in the last report of a trial whose train() raised Diverged
REASON_KEY = "reason"  # with DIVERGED_KEY: its one-line reason
SEED_INDEX_KEY = "__trial_index__"  # set by ray.tune.search.Repeater: which of the sweep's seeds


@dataclass(frozen=True)
class RunSettings:
    """Everything a worker needs besides the experiment and its config (picklable, never mutated:
    a trial derives its own with ``dataclasses.replace``)."""

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
    command: list[str] = field(default_factory=lambda: list(sys.argv))  # the driver's command line (made there)
    verbose: bool = False  # `-v`: Ray's and the libraries' output on the console, progress lines from the workers
    tracker: str | None = None  # "mlflow" | "wandb": one tracker run per run or trial (platform/trackers.py)
    vectorize_seeds: bool = False  # a sweep trial trains all `seeds` as one program (experiment.train_seeds)
    state_api: bool = True  # the Ray serves its state API (runtime.serves_state_api): Ray Train's placement-group cleaner can work


def run_path(storage: str, *parts: str, field: str = "name") -> str:
    """``<storage>/<part>/...`` (a local path or a URI), each part a validated name, inside the storage root."""
    _, base, canonical = resolve_storage(storage)
    inside(canonical, *parts, field=field)
    return join(canonical, *parts)


def run_dir_for(storage: str, *parts: str) -> tuple[Path, str | None]:
    """``(local run dir, remote URI to upload it to at the end or None)``. A remote run is written in a private
    staging folder of this machine (``mkdtemp``: unpredictable, readable by this user only) and uploaded."""
    path = run_path(storage, *parts)
    if not is_uri(path):
        return Path(path), None
    return Path(tempfile.mkdtemp(prefix="dynagen-staging-")), path


# --------------------------------------------------------------------------------------------
# Run files
# --------------------------------------------------------------------------------------------


class RunNotFound(FileNotFoundError):
    pass


def read_run_file(storage: str | None, name: str, filename: str, parse) -> Any:
    """``parse(text)`` of ``<storage>/<name>/<filename>`` (raises :class:`RunNotFound`)."""
    filesystem, base, canonical = resolve_storage(storage)
    inside(canonical, name, field="run")
    try:
        with filesystem.open_input_stream(join(base, name, filename)) as handle:
            return parse(handle.read().decode())
    except FileNotFoundError:
        raise RunNotFound(f"run: no {filename} for run {name!r} under {canonical}") from None


def write_run_config(storage: str, name: str, experiment: "Experiment", config_dict: Mapping[str, Any]) -> None:
    """``<storage>/<name>/config.yaml``: the resolved config that ``evaluate`` and ``--resume`` read back."""
    import yaml

    document = yaml.safe_dump({"experiment": experiment.name, **config_dict}, sort_keys=False)
    write_bytes_atomically(storage, join(name, CONFIG_FILE), document.encode())


def read_run_config(storage: str | None, name: str) -> dict[str, Any]:
    """The resolved config saved with run ``name``, with its ``experiment`` key (a damaged file is a usage error)."""
    import yaml

    allowed = "allowed: the YAML mapping dynagen wrote there (fix or remove the run)"
    try:
        document = read_run_file(storage, name, CONFIG_FILE, yaml.safe_load)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UsageError(f"resume: {CONFIG_FILE} of run {name!r} is not YAML text ({type(error).__name__}); {allowed}") from None
    if not isinstance(document, dict) or not isinstance(document.get("experiment"), str):
        raise UsageError(f"resume: {CONFIG_FILE} of run {name!r} holds {type(document).__name__}, not a config with its "
                         f"experiment; {allowed}")
    return document


def run_exists(storage: str, name: str) -> bool:
    """Whether run ``name`` has a folder under ``storage`` (a new run must not reuse it)."""
    filesystem, base, canonical = resolve_storage(storage)
    inside(canonical, name, field="name")
    return filesystem.get_file_info(join(base, name)).type.name != "NotFound"


def final_report(final: Mapping[str, Any] | None, last_step: int) -> dict[str, float]:
    """The last report of a run whose ``train()`` returned: its numeric metrics, the step, completed."""
    return {**numeric_metrics(final or {}), "step": last_step, COMPLETED_KEY: 1.0}


def diverged_report(error: "Diverged", metric: str | None) -> dict[str, Any]:
    """The last report of a run whose ``train()`` raised :class:`Diverged`: its step and reason and no metric
    values (a sweep's metric as NaN, which Tune requires and Optuna records as a failed trial)."""
    return {"step": error.step, DIVERGED_KEY: 1.0, REASON_KEY: str(error), **({metric: math.nan} if metric else {})}


def without_protocol_keys(report: Mapping[str, Any]) -> dict[str, float]:
    """A report's metrics as a user sees them (no completion or divergence markers)."""
    return {k: v for k, v in numeric_metrics(report).items() if k not in (COMPLETED_KEY, DIVERGED_KEY)}


def final_status(report: Mapping[str, Any]) -> tuple[str, str | None, dict[str, float]]:
    """``(status, reason, metrics)`` of a run from its last report: a diverged run has no metrics."""
    if report.get(DIVERGED_KEY):
        return "diverged", str(report.get(REASON_KEY, "")), {}
    return "completed", None, without_protocol_keys(report)


# --------------------------------------------------------------------------------------------
# Trials' configs
# --------------------------------------------------------------------------------------------


def trial_params(params: Mapping[str, Any], seeds: list[int]) -> dict[str, Any]:
    """A trial's config values from Tune's params: Repeater's seed index becomes ``seed``."""
    params = dict(params)
    index = params.pop(SEED_INDEX_KEY, None)
    if index is not None:
        params["seed"] = seeds[int(index)]
    return params


def seed_trial_id(trial_id: str, seed: int) -> str:
    """The trial id of one seed's run in the vectorised group trial ``trial_id``."""
    return f"{trial_id}-s{seed}"


def seed_run_settings(settings: RunSettings, seed: int) -> RunSettings:
    """The settings of one seed's run in a vectorised group trial (``settings.trial_id``: the Tune trial's): its own
    trial id (:func:`seed_trial_id`) and folder ``<sweep>/trials/<that id>``, as a trial of its own has."""
    trial_id = seed_trial_id(settings.trial_id, seed)
    return replace(settings, trial_id=trial_id, run_name=f"{settings.sweep_id}/trials/{trial_id}")


def trial_config(experiment: "Experiment", settings: RunSettings, params: Mapping[str, Any]) -> "ExperimentConfig":
    """The validated config of a Tune trial: the settings' fixed values under the trial's params."""
    return experiment.config.model_validate(deep_merge(settings.fixed, trial_params(params, settings.seeds)))


# --------------------------------------------------------------------------------------------
# The run: its folder and its rows
# --------------------------------------------------------------------------------------------


class Run:
    """One run's folder and results rows, as seen from the process that trains (rank 0 writes)."""

    def __init__(self, settings: RunSettings, experiment_name: str, trial_id: str, config: "ExperimentConfig", *,
                 writes: bool = True, flush_seconds: float = 10.0):
        self.settings, self.experiment_name, self.trial_id = settings, experiment_name, trial_id
        self.config_dict = config.model_dump(mode="json")
        self.seed = config.seed
        self.total_steps: int | None = getattr(config, "steps", None)
        self.run_dir, self._upload_to = run_dir_for(settings.storage, *settings.run_name.split("/"))
        self.results: ResultsWriter | None = None
        self._provenance: dict[str, Any] = {}
        self.tracker = None
        if writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.results = ResultsWriter(settings.storage, settings.sweep_id, experiment_name, trial_id, self.config_dict,
                                         self.seed, flush_seconds=flush_seconds)
            earlier = self.run_dir / provenance.PROVENANCE_FILE  # a resumed run's, or a restarted worker group's
            previous = json.loads(earlier.read_text()) if earlier.is_file() else None
            self._provenance = provenance.started(settings.command, self.config_dict, config.data_source(), previous)
            self._write_provenance()
            if settings.tracker:
                from dynagen.platform.results import flatten
                from dynagen.platform.trackers import open_tracker

                in_sweep = settings.run_name != settings.sweep_id
                self.tracker = open_tracker(settings.tracker, storage=resolve_storage(settings.storage)[1],
                                            group=settings.sweep_id if in_sweep else experiment_name, name=trial_id,
                                            params=flatten(self.config_dict), run_dir=self.run_dir)

    def _write_provenance(self) -> None:
        write_bytes_atomically(self.settings.storage, join(self.settings.run_name, provenance.PROVENANCE_FILE),
                               json.dumps(self._provenance, indent=2).encode())

    def failed(self) -> None:
        """``train()`` raised: provenance.json records the end (rank 0)."""
        if self.results is not None:
            self._provenance = provenance.ended(self._provenance, "error")
            self._write_provenance()
        if self.tracker is not None:
            self.tracker.finish("error", self.run_dir)

    def log_step(self, step: int, values: Mapping[str, float]) -> None:
        if self.results is not None:
            self.results.log_step(step, values)
        if self.tracker is not None:
            self.tracker.log(step, values)

    def flush(self) -> None:
        if self.results is not None:
            self.results.flush()

    def close(self) -> None:
        """Rows flushed; a remote run folder uploaded from its local staging copy."""
        if self.results is None:
            return
        self.results.flush()
        if self._upload_to:  # each file atomically: a reader of the bucket never sees half of one
            for path in sorted(p for p in self.run_dir.rglob("*") if p.is_file()):
                copy_file_atomically(path, join(self._upload_to, path.relative_to(self.run_dir).as_posix()))

    def finish(self, report: Mapping[str, Any]) -> Mapping[str, Any]:
        """``metrics.json`` (rank 0) from the run's last report (:func:`final_report` or :func:`diverged_report`)."""
        if self.results is not None:
            status, reason, metrics = final_status(report)
            document = metrics | {"step": int(report["step"])} | ({"status": status, REASON_KEY: reason} if reason else {})
            write_bytes_atomically(self.settings.storage, join(self.settings.run_name, METRICS_FILE), json.dumps(document, indent=2).encode())
            self._provenance = provenance.ended(self._provenance, status)
            self._write_provenance()
            if self.tracker is not None:
                self.tracker.finish(status, self.run_dir)
        return report

    def write_summary(self, status: str, step: int, metrics: Mapping[str, Any], reason: str | None = None) -> None:
        summary_writer(self.settings, self.experiment_name, self.trial_id, self.config_dict, self.seed).write_summary(
            status, step, without_protocol_keys(metrics), reason=reason)


def summary_writer(settings: RunSettings, experiment_name: str, trial_id: str, config_dict: Mapping[str, Any], seed: int) -> ResultsWriter:
    return ResultsWriter(settings.storage, settings.sweep_id, experiment_name, trial_id, config_dict, seed)


def read_final_report(storage: str, name: str) -> dict[str, Any]:
    """A run's last report as its ``metrics.json`` holds it (a diverged run's with its markers)."""
    document = read_run_file(storage, name, METRICS_FILE, json.loads)
    if document.get("status") == "diverged":
        return {"step": document["step"], DIVERGED_KEY: 1.0, REASON_KEY: document.get(REASON_KEY, "")}
    return document


# --------------------------------------------------------------------------------------------
# Trials' summary rows, written on Tune's driver
# --------------------------------------------------------------------------------------------


def _summary_callback_class():
    import ray.tune
    from ray.tune.result import AUTO_RESULT_KEYS

    class SummaryCallback(ray.tune.Callback):
        """Writes each trial's summary row from the driver (statuses: :mod:`dynagen.platform.results`) and
        prints one line for a trial that diverged or failed (with the path of its full log); without ``-v``,
        one line for every trial that ended. ``outcomes``: trial id -> status (a vectorised group's: one per seed),
        for the sweep's live status."""

        def __init__(self, experiment, settings, max_t: int | None):
            self.experiment, self.settings, self.max_t = experiment, settings, max_t
            self.outcomes: dict[str, str | tuple[str, ...]] = {}

        def _outcome(self, trial, result: Mapping[str, Any], ended: str) -> tuple[str, str | None]:
            """``(status, reason)`` of a run from its last ``result``: ``ended`` is what Tune saw, ``completed``
            (returned or stopped) or ``error``."""
            if result.get(DIVERGED_KEY):
                return "diverged", result.get(REASON_KEY)
            if ended == "error":
                # Tune's error file, else the trial's own log (its traceback is printed there, platform/launch.py)
                error = str(trial.get_error() or "").strip().splitlines() or self._log_tail(trial)
                return "error", error[-1] if error else None
            reached_max_t = self.max_t is not None and result.get("step", -1) >= self.max_t  # ASHA's own stop rule
            return ("completed" if result.get(COMPLETED_KEY) or reached_max_t else "stopped"), None

        def _write(self, trial, ended: str) -> None:
            trial_id = self.settings.trial_id or trial.trial_id
            result = trial.last_result or {}
            if not self.settings.vectorize_seeds:
                self.outcomes[trial.trial_id] = self._write_run(trial, trial_id, result, trial.config, ended)
                return
            from dynagen.platform.context import seed_values

            # a vectorised group: one summary row per seed, from its values in the group's report
            statuses = [self._write_run(trial, seed_trial_id(trial_id, seed), seed_values(result, seed),
                                        {**trial.config, "seed": seed}, ended) for seed in self.settings.seeds]
            self.outcomes[trial.trial_id] = tuple(statuses)

        def _write_run(self, trial, trial_id: str, result: Mapping[str, Any], params: Mapping[str, Any], ended: str) -> str:
            previous = read_summary(self.settings.storage, self.settings.sweep_id, self.experiment.name, trial_id)
            if previous is not None and previous["status"] == "completed":
                return "completed"  # finished before an interruption; its row stands
            status, reason = self._outcome(trial, result, ended)
            config = trial_config(self.experiment, self.settings, params)
            writer = summary_writer(self.settings, self.experiment.name, trial_id, config.model_dump(mode="json"), config.seed)
            # Only a trial that ran (to its end, or until the scheduler stopped it) has results; the last values
            # before a divergence or an error are not.
            metrics = {} if status in ("diverged", "error") else {
                k: v for k, v in result.items() if k not in (COMPLETED_KEY, REASON_KEY) and k not in AUTO_RESULT_KEYS}
            writer.write_summary(status, int(result.get("step", -1)), metrics, reason=reason)
            if reason or not (self.settings.verbose or self.settings.trial_id):  # trial_id "": a sweep's trials
                self._print(trial_id, status, reason, int(result.get("step", -1)), metrics, trial_params(params, self.settings.seeds),
                            self._log(self.settings.trial_id or trial.trial_id))  # a group's seeds share its log
            return status

        def _log(self, trial_id: str) -> Path:
            from dynagen.platform.console import TRIAL_LOG, log_path

            name = self.settings.run_name or f"{self.settings.sweep_id}/trials/{trial_id}"
            run_dir, _ = run_dir_for(self.settings.storage, *name.split("/"))
            return log_path(run_dir, TRIAL_LOG)

        def _log_tail(self, trial) -> list[str]:
            try:
                return self._log(self.settings.trial_id or trial.trial_id).read_text(errors="replace").strip().splitlines()
            except FileNotFoundError:
                return []

        def _print(self, trial_id: str, status: str, reason: str | None, step: int, metrics: Mapping[str, Any],
                   params: Mapping[str, Any], log_file: Path) -> None:
            from dynagen.platform.console import say

            metric = self.settings.metric
            value = f" | {metric} {metrics[metric]:.4g}" if metric in metrics and isinstance(metrics[metric], (int, float)) else ""
            why = f": {reason}" if reason else f" at step {step}"  # a reason names where it happened
            log = f" (full log: {log_file})" if status in ("error", "diverged") else ""
            shown = " ".join(f"{key}={v}" for key, v in params.items())
            say(f"trial {trial_id} {status}{why}{value}{f' ({shown})' if shown else ''}{log}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._write(trial, "completed")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._write(trial, "error")

    return SummaryCallback


def summary_callback(experiment, settings, max_t: int | None = None):
    """The callback writing trials' summary rows; ``max_t``: the scheduler's, a trial reaching it is complete."""
    return _summary_callback_class()(experiment, settings, max_t)
