"""The registry: the only thing the platform knows about models.

An experiment is a validated config, a training function and an evaluation function.
Models register in ``pyproject.toml`` under the ``dynagen.experiments`` entry-point group
(one line: ``name = "dynagen.models.pkg.experiment:EXPERIMENT"``); tests and plugins may
also call :func:`register`. Entry points are resolved lazily, so listing experiment names
imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from dynagen.platform.context import RunContext

ENTRY_POINT_GROUP = "dynagen.experiments"


class ExperimentConfig(BaseModel):
    """Base of every experiment's config: typed, validated, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seed: int = 0


TrainFn = Callable[[Any, "RunContext"], Mapping[str, float]]
"""``train(config, ctx) -> final metrics``. Runs in a Ray Train worker (torch) or a Tune trial (jax)."""

EvaluateFn = Callable[..., Mapping[str, float]]
"""``evaluate(config, state, out_dir, **options) -> metrics``; ``state`` is a checkpoint's dict. The metrics may
hold one non-float entry, ``MANIFEST_KEY``: a JSON-serialisable description of what was scored and how."""

MANIFEST_KEY = "manifest"

PublishedFn = Callable[[Any, Mapping[str, float], "Mapping[str, Any] | None"], "list[Mapping[str, Any]]"]
"""``published(config, metrics, manifest) -> rows`` of ``metric, measured, published, comparable, why``: the paper's
figures beside an evaluation's, comparability decided from the manifest's protocol."""

ImportFn = Callable[..., "tuple[ExperimentConfig, Mapping[str, Any]]"]
"""``importer(source_dir, weights=None) -> (config, checkpoint state)`` for ``dynagen import``: a model trained
elsewhere (e.g. the authors' released weights) as the config and checkpoint dict a training run would write."""


@dataclass(frozen=True)
class Experiment:
    name: str
    config: type[ExperimentConfig]
    train: TrainFn
    evaluate: EvaluateFn | None = None
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    backend: Literal["torch", "jax"] = "torch"
    description: str = ""
    # Extra comparisons ``dynagen results SWEEP --analysis NAME`` can print: each takes the
    # sweep's results table (pyarrow.Table, step and summary rows) and returns a table to print.
    analyses: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    # The paper's published figures beside measured ones (``dynagen evaluate`` prints them).
    published: PublishedFn | None = None
    # Sources ``dynagen import EXPERIMENT DIR --format NAME`` reads (the first is the default).
    importers: Mapping[str, ImportFn] = field(default_factory=dict)


_registered: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Register an experiment in this process (entry points need no call)."""
    _registered[experiment.name] = experiment
    return experiment


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """All experiment names, without importing any model."""
    return sorted(set(_registered) | set(_entry_points()))


class UnknownExperiment(KeyError):
    pass


def get(name: str) -> Experiment:
    if name in _registered:
        return _registered[name]
    eps = _entry_points()
    if name not in eps:
        raise UnknownExperiment(f"experiment: unknown {name!r}; allowed: {', '.join(names()) or '(none registered)'}")
    experiment = eps[name].load()
    if not isinstance(experiment, Experiment):
        raise TypeError(f"entry point {name!r} must point to a dynagen.platform.registry.Experiment")
    return register(experiment)

