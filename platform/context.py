"""What a training function sees of the platform: one small object, ``ctx`` (contract: docs/platform.md).

A model's ``train(config, ctx)`` reads like a plain training loop::

    restored = ctx.restore()                      # (state, step) or None
    model = ctx.prepare_model(model)              # device placement, DDP when world_size > 1
    loader = ctx.prepare_data_loader(loader)      # distributed sampler, device transfer
    for step in range(start, config.steps):
        ...
        ctx.report(step, {"loss": loss}, state=lambda: {"model": ..., "optim": ...})
    return final_metrics

``report`` logs every call (TensorBoard from rank 0, the results store, Ray Train / Tune) and
checkpoints when the platform's checkpoint interval says so; ``state`` is a callable so
serialisation only happens when a checkpoint is due. Batch sizes in configs are global:
``ctx.local_batch_size(batch_size)`` is a worker's share.

Three contexts share :class:`BaseContext` (the logging, checkpoint and progress rules) and differ only
in where a due checkpoint goes and where a restore reads from:

* :class:`LocalContext`: this process, no Ray (model tests, ``dynagen train --local``): ``run_dir/checkpoint``;
* :class:`TrainContext`: a Ray Train worker (torch DDP rank): ``ray.train.report`` with a checkpoint;
* :class:`TuneContext`: a Tune function trial (JAX, single-worker torch sweep trials): ``ray.tune.report``.

A sweep with ``vectorize_seeds`` trains the seeds of one configuration in one Tune trial, as one program
(docs/platform.md, "Vectorised seeds"): each seed has a :class:`SeedContext` (its own run folder, rows,
TensorBoard, metrics.json, summary row) and their :class:`SeedGroup` reports to Tune once per step.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from dynagen.platform.checkpoints import CHECKPOINT_FILE, checkpoint_state, load_state, save_state_atomically
from dynagen.platform.run import COMPLETED_KEY

if TYPE_CHECKING:
    from dynagen.platform.run import Run

StateFn = Callable[[], Mapping[str, Any]]

__all__ = ["CHECKPOINT_FILE", "BaseContext", "LocalContext", "RunContext", "SeedContext", "SeedGroup", "StateFn", "TrainContext",
           "TuneContext", "load_state", "save_state_atomically", "tensorboard_without_tensorflow", "tensorboard_writer"]


class Diverged(FloatingPointError):
    """Raised by a training function whose state became non-finite, at the logging step that found it and
    before any metric is computed on that state: the run ends with status ``diverged``, the message as its
    one-line reason, and no metric values (those from before the divergence are not its result)."""

    def __init__(self, reason: str, step: int):
        super().__init__(reason)
        self.step = step


class RunContext(Protocol):
    rank: int
    world_size: int
    run_dir: Path  # artifacts (PNG, GIF, ...) written by rank 0 land here

    @property
    def is_main(self) -> bool: ...

    @property
    def device(self) -> Any: ...  # torch.device for torch experiments, None for jax ones

    def local_batch_size(self, global_batch_size: int) -> int: ...

    def prepare_model(self, model: Any) -> Any: ...

    def prepare_data_loader(self, loader: Any) -> Any: ...

    def restore(self) -> tuple[Mapping[str, Any], int] | None: ...  # state saved at `step`; resume at step + 1

    def report(self, step: int, metrics: Mapping[str, float], state: StateFn | None = None, *, final: bool = False) -> None: ...

    def log_images(self, step: int, tag: str, images: Any) -> None: ...

    def set_total_steps(self, total: int) -> None: ...  # when the loop's length is not the config's `steps`

    def progress(self, phase: str, done: int, total: int, step: int | None = None) -> None:
        """A validation/evaluation phase's progress; ``step``: the training step it belongs to, if it runs before
        that step's report."""

    def diverge(self, error: Diverged) -> None: ...  # this run ends as diverged (raises it, except in a seed group)


def tensorboard_without_tensorflow() -> None:
    """Make TensorBoard use its TF stub (its documented ``tensorboard.compat.notf`` switch) unless
    TensorFlow is already loaded: writing event files needs no TensorFlow, and importing it costs
    ~10 s in every worker process."""
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


def tensorboard_writer(log_dir: Path) -> Any:
    """A SummaryWriter whose queue does not fill: with TensorBoard's default of 10 pending events,
    every scalar past the tenth waits for the writer thread to get the GIL (milliseconds in a busy
    worker). Event files are flushed every 10 s and on close."""
    tensorboard_without_tensorflow()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir), max_queue=1000, flush_secs=10)


class Progress:
    """A run's progress: step out of the total, key metrics, steps/s, ETA, and the phase running (validation,
    evaluation) with its own count and ETA.

    It shows ``step`` (docs/platform.md, "Steps") out of the total, and the total itself on the final
    report, so it never runs past the total. Where it goes (platform/console.py): ``display`` shows it in this
    process (``--local``, and Ray workers under ``-v``), ``run_dir`` gets ``progress.json`` (at most once a
    second, and on the final report) for the driver's monitor."""

    def __init__(self, label: str, total_steps: int | None, every_s: float, *, display: Any = None, run_dir: Path | None = None):
        self.label, self.total, self.every_s = label, total_steps, every_s
        self.display, self.run_dir = display, run_dir
        self._start_time = self._last_write = time.monotonic()
        self._start_step: int | None = None
        self._state: dict[str, Any] | None = None
        self._phase_start = 0.0

    def update(self, step: int, metrics: Mapping[str, float], final: bool) -> None:
        now = time.monotonic()
        if self._start_step is None:
            self._start_step, self._start_time = step, now
        rate = (step - self._start_step) / max(now - self._start_time, 1e-9)
        position = self.total if final and self.total else self._shown(step)
        eta = max(self.total - step, 0) / rate if self.total and rate > 0 and not final else None
        self._state = {"step": position, "total": self.total, "metrics": dict(list(metrics.items())[:4]),
                       "steps_per_s": rate if rate > 0 else None, "eta_s": eta, "final": final, "phase": None}
        self._emit(final)

    def phase(self, name: str, done: int, total: int, step: int | None = None) -> None:
        """``done`` of ``total`` items (batches, samples) of a phase that is not a training step; its ETA from
        the phase's own rate (the clock starts at ``done == 0``). ``step``: the training step the phase belongs to
        when it runs before that step's report (a validation at step s): shown instead of the last reported step,
        whose metrics it drops."""
        now = time.monotonic()
        if done == 0:
            self._phase_start = now
        rate = done / max(now - self._phase_start, 1e-9)
        # before any report (an evaluation, a validation ahead of the first step) there is no step to show
        state = dict(self._state or {"step": None, "total": self.total, "metrics": {}, "steps_per_s": None, "eta_s": None, "final": False})
        if step is not None and step != state["step"]:
            state.update(step=self._shown(step), metrics={})
        state["phase"] = {"name": name, "done": done, "total": total, "eta_s": (total - done) / rate if rate > 0 and done < total else None}
        self._state = state
        self._emit(done >= total)

    def _shown(self, step: int) -> int:
        """``step`` as the line shows it: never past the total."""
        return min(step, self.total) if self.total else step

    def _emit(self, force: bool) -> None:
        if self.display is not None:
            self.display.show(self._state)
        now = time.monotonic()
        if self.run_dir is not None and (force or now - self._last_write >= 1.0):
            self._last_write = now
            from dynagen.platform.console import write_progress

            write_progress(self.run_dir, self._state)

    def close(self) -> None:
        if self.display is not None:
            self.display.close()


class BaseContext:
    """``report``, ``log_images`` and the checkpoint rule, shared by every context.

    A checkpoint is due on the final report and on every report whose step is a positive multiple
    of ``checkpoint_every`` (0: final only). Rows and event files up to a checkpoint are flushed
    before it is saved, so they are durable whenever it is."""

    report_every_step = True  # pass every logged step to Ray (else only checkpoints)
    backend: Any = None  # turns a loaded checkpoint into the experiment's types (platform/backends.py); None: as loaded

    def _loaded(self, directory: Path) -> tuple[Mapping[str, Any], int]:
        """The checkpoint in ``directory`` through the one safe loader (never unpickles code)."""
        state = load_state(Path(directory) / CHECKPOINT_FILE)
        if self.backend is not None:
            state = self.backend.loaded(state)
        return state, int(state["_step"])

    def __init__(self, run_dir: str | Path, *, rank: int = 0, world_size: int = 1, checkpoint_every: int = 0,
                 run: "Run | None" = None, tensorboard: bool = True, progress: Progress | None = None):
        self.rank, self.world_size = rank, world_size
        self.run_dir = Path(run_dir)
        self.run = run
        self.checkpoint_every = checkpoint_every
        self.last_step = -1
        self._writer = None
        self._progress = progress
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                self._writer = tensorboard_writer(self.run_dir / "tensorboard")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_batch_size(self, global_batch_size: int) -> int:
        return max(1, global_batch_size // self.world_size)

    def prepare_data_loader(self, loader: Any) -> Any:
        return loader

    def set_total_steps(self, total: int) -> None:
        if self._progress is not None:
            self._progress.total = total

    def progress(self, phase: str, done: int, total: int, step: int | None = None) -> None:
        """A phase that is not training (validation, evaluation): ``done`` of ``total`` items, at training step
        ``step`` if given (:meth:`Progress.phase`); rank 0 shows it."""
        if self.is_main and self._progress is not None:
            self._progress.phase(phase, done, total, step)

    def diverge(self, error: Diverged) -> None:
        """The run ends as diverged at ``error.step``: for a run of its own, ``raise error``. A seed of a vectorised
        group (:class:`SeedContext`) ends alone and the others go on, so a model that trains several seeds at once
        calls this instead of raising."""
        raise error

    def _checkpoint_due(self, step: int, final: bool) -> bool:
        every = self.checkpoint_every
        return final or (every > 0 and step > 0 and step % every == 0)

    def report(self, step: int, metrics: Mapping[str, float], state: StateFn | None = None, *, final: bool = False) -> None:
        values = {key: float(value) for key, value in metrics.items()}
        self.last_step = step
        self._record(step, values)
        if self.is_main:
            if self._writer is not None:
                for key, value in values.items():
                    self._writer.add_scalar(key, value, step)
            if self.run is not None:
                self.run.log_step(step, values)
            if self._progress is not None:
                self._progress.update(step, values, final)
        due = state is not None and self._checkpoint_due(step, final)
        # Marked complete on the final report itself: a scheduler may stop the trial right there (ASHA at max_t).
        payload = {**values, "step": step, **({COMPLETED_KEY: 1.0} if final else {})}
        if due and self.is_main:
            if self.run is not None:
                self.run.flush()
            if self._writer is not None:
                self._writer.flush()
            config = self.run.config_dict if self.run is not None else None
            self._save_checkpoint(checkpoint_state(state(), step, config), payload, step)
        elif due or self.report_every_step:
            self._publish(payload, None, step)

    def log_images(self, step: int, tag: str, images: Any) -> None:
        """``images``: array [N, H, W, C] or [H, W, C] in [0, 1]; rank 0 only."""
        if not self.is_main or self._writer is None:
            return
        import numpy as np

        array = np.asarray(images, dtype=np.float32)
        self._writer.add_images(tag, array[None] if array.ndim == 3 else array, step, dataformats="NHWC")

    def close(self) -> None:
        if not self.is_main:
            return
        if self._progress is not None:
            self._progress.close()
        if self._writer is not None:
            self._writer.close()
        if self.run is not None:
            self.run.close()

    def finish(self, report: Mapping[str, Any]) -> Mapping[str, Any]:
        """After ``train()`` returned or diverged: ``metrics.json`` (rank 0) from the run's last report."""
        return self.run.finish(report) if self.run is not None else report

    # --- where checkpoints go: one pair per context
    def _record(self, step: int, values: Mapping[str, float]) -> None:
        pass

    def _save_checkpoint(self, state: Mapping[str, Any], metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def _publish(self, metrics: dict[str, float], checkpoint_dir: str | None, step: int) -> None:
        pass


class LocalContext(BaseContext):
    """A single-process run: no Ray, same checkpoints and TensorBoard logs; ``history`` keeps every report.
    With a :class:`~dynagen.platform.run.Run` (``dynagen train --local``) rows also go to the results store."""

    def __init__(self, run_dir: str | Path, checkpoint_every: int = 0, tensorboard: bool = True, device: Any = "cpu",
                 *, run: "Run | None" = None, progress: Progress | None = None, backend: Any = None):
        super().__init__(run_dir, checkpoint_every=checkpoint_every, run=run, tensorboard=tensorboard, progress=progress)
        self.history: list[dict[str, float]] = []
        self._device = device
        self.backend = backend

    @property
    def device(self) -> Any:
        import torch

        return torch.device(self._device)

    def local_batch_size(self, global_batch_size: int) -> int:
        return global_batch_size

    def prepare_model(self, model: Any) -> Any:
        return model.to(self.device)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoint"

    def restore(self) -> tuple[Mapping[str, Any], int] | None:
        if not (self.checkpoint_dir / CHECKPOINT_FILE).exists():
            return None
        return self._loaded(self.checkpoint_dir)

    def _record(self, step: int, values: Mapping[str, float]) -> None:
        self.history.append({"step": step, **values})

    def _save_checkpoint(self, state: Mapping[str, Any], metrics: dict[str, float], step: int) -> None:
        save_state_atomically(state, self.checkpoint_dir)


class _RayContext(BaseContext):
    """A context inside Ray: checkpoints are saved to a temporary folder and handed to Ray, which keeps
    the last ``keep_checkpoints`` under the run (``checkpoint_*``)."""

    def _save_checkpoint(self, state: Mapping[str, Any], metrics: dict[str, float], step: int) -> None:
        with tempfile.TemporaryDirectory(prefix="dynagen-ckpt-") as directory:
            save_state_atomically(state, Path(directory))
            self._publish(metrics, directory, step)

    def _read_checkpoint(self, checkpoint) -> tuple[Mapping[str, Any], int] | None:
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return self._loaded(Path(directory))


class TrainContext(_RayContext):
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


class TuneContext(_RayContext):
    """``ctx`` inside a Tune function trial: JAX experiments and single-worker torch trials of a sweep;
    ``device`` and ``prepare_model`` come from the experiment's backend."""

    def __init__(self, run_dir: str | Path, *, backend: Any, use_gpu: bool, **kwargs: Any):
        super().__init__(run_dir, **kwargs)
        self.backend = backend
        self._device = backend.device(use_gpu)

    @property
    def device(self) -> Any:
        return self._device

    def prepare_model(self, model: Any) -> Any:
        return self.backend.prepare_model(model, self.device)

    def restore(self) -> tuple[Mapping[str, Any], int] | None:
        import ray.tune

        return self._read_checkpoint(ray.tune.get_checkpoint())

    def _publish(self, metrics: dict[str, float], checkpoint_dir: str | None, step: int) -> None:
        import ray.tune

        checkpoint = ray.tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.tune.report(metrics, checkpoint=checkpoint)


SEED_KEY_PREFIX = "seeds/"  # a seed group's reports: `seeds/<seed>/<key>` per seed beside the mean over its seeds


def seed_key(seed: int, key: str) -> str:
    return f"{SEED_KEY_PREFIX}{seed}/{key}"


def seed_values(report: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """One seed's values from a seed group's report (:func:`seed_key`)."""
    prefix = seed_key(seed, "")
    return {key[len(prefix):]: value for key, value in report.items() if key.startswith(prefix)}


class SeedGroup:
    """The seeds of one Tune trial trained as one program: Tune hears of them once per step.

    When every seed still running has reported a step, one ``ray.tune.report`` carries each seed's values as
    ``seeds/<seed>/<key>`` and, for the scheduler and the searcher, the mean over those seeds of every value they
    all reported (Tune's ``Repeater`` gives Optuna the same mean). A due checkpoint holds every reporting seed's
    state under ``seeds`` (``{seed: state}``) and is restored seed by seed; a seed that diverged stops reporting,
    the others go on."""

    def __init__(self, seeds: list[int]):
        self.seeds = list(seeds)
        self.ended: dict[int, Diverged] = {}
        self._step: int | None = None
        self._pending: dict[int, tuple[dict[str, float], Mapping[str, Any] | None]] = {}
        self._restored: dict[str, Any] | None = None

    def restored(self, seed: int, loaded) -> tuple[Mapping[str, Any], int] | None:
        """``seed``'s state in the trial's latest checkpoint; ``loaded(directory)`` reads a checkpoint folder. A seed
        that had diverged before it is ended again, with its reason."""
        if self._restored is None:
            import ray.tune

            checkpoint = ray.tune.get_checkpoint()
            self._restored = {}
            if checkpoint is not None:
                with checkpoint.as_directory() as directory:
                    self._restored = dict(loaded(Path(directory))[0])
                for key, (step, reason) in self._restored.get("ended", {}).items():
                    self.ended[int(key)] = Diverged(reason, int(step))
        state = self._restored.get("seeds", {}).get(str(seed))
        return None if state is None else (state, int(state["_step"]))

    def offer(self, seed: int, step: int, values: dict[str, float], state: Mapping[str, Any] | None) -> None:
        if self._step is not None and step != self._step:
            self.publish()  # a seed that reported the previous step did not report it again: it ended
        self._step = step
        self._pending[seed] = (values, state)
        self._publish_when_complete()

    def end(self, seed: int, error: Diverged) -> None:
        self.ended[seed] = error
        self._publish_when_complete()

    def _publish_when_complete(self) -> None:
        if self._pending and all(seed in self._pending for seed in self.seeds if seed not in self.ended):
            self.publish()

    def publish(self) -> None:
        """Report the pending step to Tune, with its checkpoint if one is due."""
        import ray.tune

        if not self._pending:
            return
        report = group_report({seed: values for seed, (values, _) in self._pending.items()})
        states = {str(seed): state for seed, (_, state) in self._pending.items() if state is not None}
        self._pending, self._step = {}, None
        if not states:
            ray.tune.report(report)
            return
        with tempfile.TemporaryDirectory(prefix="dynagen-ckpt-") as directory:
            ended = {str(seed): [error.step, str(error)] for seed, error in self.ended.items()}
            state = checkpoint_state({"seeds": states, "ended": ended}, int(report["step"]), None)
            save_state_atomically(state, Path(directory))
            ray.tune.report(report, checkpoint=ray.tune.Checkpoint.from_directory(directory))


def group_report(reports: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Each seed's values under ``seeds/<seed>/`` and the mean over the seeds of each number they all have (NaN if
    one is NaN: a sweep's metric of a diverged seed)."""
    report: dict[str, Any] = {seed_key(seed, key): value for seed, values in reports.items() for key, value in values.items()}
    shared = set.intersection(*(set(values) for values in reports.values()))
    for key in sorted(shared):
        numbers = [values[key] for values in reports.values()]
        if all(isinstance(number, (int, float)) and not isinstance(number, bool) for number in numbers):
            report[key] = math.fsum(numbers) / len(numbers)
    return report


class SeedContext(TuneContext):
    """``ctx`` of one seed of a vectorised group: a :class:`TuneContext` whose reports and checkpoints go through
    its :class:`SeedGroup`. Its final checkpoint is also written into its own run folder (``checkpoint/``), so
    that every seed can be evaluated and shared like a run of its own."""

    def __init__(self, run_dir: str | Path, *, group: SeedGroup, seed: int, **kwargs: Any):
        super().__init__(run_dir, **kwargs)
        self.group, self.seed = group, seed
        self.diverged: Diverged | None = None

    def restore(self) -> tuple[Mapping[str, Any], int] | None:
        restored = self.group.restored(self.seed, self._loaded)
        self.diverged = self.group.ended.get(self.seed)
        return restored

    def diverge(self, error: Diverged) -> None:
        self.diverged = error
        self.group.end(self.seed, error)

    def _save_checkpoint(self, state: Mapping[str, Any], metrics: dict[str, float], step: int) -> None:
        if metrics.get(COMPLETED_KEY):
            save_state_atomically(state, self.run_dir / "checkpoint")
        self.group.offer(self.seed, step, metrics, state)

    def _publish(self, metrics: dict[str, float], checkpoint_dir: str | None, step: int) -> None:
        self.group.offer(self.seed, step, metrics, None)
