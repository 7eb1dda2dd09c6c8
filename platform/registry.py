"""The registry: the only thing the platform knows about models.

An experiment is a declaration (docs/platform.md, "Registering an experiment"): a validated config,
a training function, an evaluation function with its typed options, presets and a backend.
Functions are named as ``"module:function"`` and imported on first call, so ``experiment.py``
imports only pydantic. Models register in ``pyproject.toml`` under the ``dynagen.experiments``
entry-point group (one line: ``name = "dynagen.models.pkg.experiment:EXPERIMENT"``); tests and
plugins may also call :func:`register`. Entry points are resolved lazily, so listing experiment
names imports nothing heavy.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

if TYPE_CHECKING:
    from dynagen.platform.context import RunContext

ENTRY_POINT_GROUP = "dynagen.experiments"
MAX_SEED = 2**32 - 1  # numpy's and torch's generators take seeds in [0, 2**32)

PathText = Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]
"""A config field naming a file or folder: an empty string would silently mean the current directory."""


class ExperimentConfig(BaseModel):
    """Base of every experiment's config: typed, validated, unknown keys rejected, no NaN or infinite floats
    (a config value is a choice, never a missing one)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    seed: int = Field(0, ge=0, le=MAX_SEED)

    def data_source(self) -> str:
        """Where the training data comes from, for provenance.json: a real data path, or the generated stand-in
        the experiment uses without one."""
        return "generated"


class EvaluateOptions(BaseModel):
    """Options of ``dynagen evaluate`` (``--samples``, ``--option key=value``); an experiment subclasses it with
    its own. None means the evaluate function's default."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    samples: Optional[int] = Field(None, ge=1, description="samples per test item (best-of-N where the experiment samples)")


TrainFn = Callable[[Any, "RunContext"], Mapping[str, float]]
"""``train(config, ctx) -> final metrics``. Runs in a Ray Train worker (torch), a Tune trial (jax) or locally."""

TrainSeedsFn = Callable[[list, list], list]
"""``train_seeds(configs, ctxs) -> final metrics per seed``: the configs of one configuration at several seeds (they
differ in ``seed`` only) trained as one program, one context per seed; a seed that diverges is ended with
``ctxs[i].diverge(error)`` (its entry in the result is then ignored) while the others go on. A sweep with
``vectorize_seeds: true`` runs it (docs/platform.md, "Vectorised seeds")."""

EvaluateFn = Callable[..., Mapping[str, float]]
"""``evaluate(config, state, out_dir, progress=None, **options) -> metrics``; ``state`` is a checkpoint's dict, the
options the fields of the experiment's :class:`EvaluateOptions`, ``progress`` a :data:`ProgressFn` or None (every
evaluate function takes it; it may ignore it). The metrics may hold one non-float entry, ``MANIFEST_KEY``: a
JSON-serialisable description of what was scored and how."""

ProgressFn = Callable[[str, int, int], None]
"""``progress(phase, done, total)``: ``done`` of ``total`` items (batches, clips, windows) of a named phase, called with
``done == 0`` when the phase starts (its ETA counts from there) and with ``done == total`` when it ends; the same
signature as ``ctx.progress`` (docs/platform.md, "The run context"). ``dynagen evaluate`` shows it on the console."""

PROGRESS_PARAMETER = "progress"

MANIFEST_KEY = "manifest"

PublishedFn = Callable[[Any, Mapping[str, float], "Mapping[str, Any] | None"], "list[Mapping[str, Any]]"]
"""``published(config, metrics, manifest) -> rows`` of ``metric, measured, published, comparable, why``: the paper's
figures beside an evaluation's, comparability decided from the manifest's protocol."""

ImportFn = Callable[..., "tuple[ExperimentConfig, Mapping[str, Any]]"]
"""``importer(source_dir, weights=None) -> (config, checkpoint state)`` for ``dynagen import``: a model trained
elsewhere (e.g. the authors' released weights) as the config and checkpoint dict a training run would write."""


class Function:
    """A function named ``"package.module:name"``, imported on its first call (picklable by its name)."""

    def __init__(self, target: Union[str, Callable]):
        self.target = target
        self._function = None if isinstance(target, str) else target

    def load(self) -> Callable:
        """The function, its module imported now if not yet."""
        if self._function is None:
            module, _, name = self.target.partition(":")
            self._function = getattr(importlib.import_module(module), name)
        return self._function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.load()(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {"target": self.target, "_function": None if isinstance(self.target, str) else self._function}

    def __repr__(self) -> str:
        return f"Function({self.target!r})"


class Evaluation(Function):
    """An evaluate function and its typed options: calls validate the options first."""

    def __init__(self, target: Union[str, Callable], options: type[EvaluateOptions]):
        super().__init__(target)
        self.options = options

    def __call__(self, config: Any, state: Mapping[str, Any], out_dir: Any, *, progress: ProgressFn | None = None,
                 **options: Any) -> Mapping[str, float]:
        values = self.options.model_validate(options).model_dump()
        return super().__call__(config, state, out_dir, progress=progress, **values)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "options": self.options}


@dataclass(frozen=True)
class Experiment:
    name: str
    config: type[ExperimentConfig]
    train: Union[str, TrainFn]
    # Several seeds of one configuration as one program (optional; a sweep's `vectorize_seeds` needs it).
    train_seeds: Union[str, TrainSeedsFn, None] = None
    evaluate: Union[str, EvaluateFn, None] = None
    evaluate_options: type[EvaluateOptions] = EvaluateOptions
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    backend: Literal["torch", "jax"] = "torch"
    description: str = ""
    # Extra comparisons ``dynagen results SWEEP --analysis NAME`` can print: each takes the
    # sweep's results table (pyarrow.Table, step and summary rows) and its trials' evaluations (trial id ->
    # the metrics.json `dynagen evaluate` wrote into the trial folder's eval/, manifest included) and returns
    # a table to print, or one line saying why it has none.
    analyses: Mapping[str, Union[str, Callable[[Any], Any]]] = field(default_factory=dict)
    # The paper's published figures beside measured ones (``dynagen evaluate`` prints them).
    published: Union[str, PublishedFn, None] = None
    # Sources ``dynagen import EXPERIMENT DIR --format NAME`` reads (the first is the default).
    importers: Mapping[str, Union[str, ImportFn]] = field(default_factory=dict)
    # The metric names train() reports (ctx.report rows and its returned dict): a sweep's `metric` is one of them.
    metrics: tuple[str, ...] = ()
    # The keys evaluate reads from a checkpoint's state, checked before any work.
    checkpoint_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        as_function = lambda f: f if isinstance(f, Function) else Function(f)  # noqa: E731
        object.__setattr__(self, "train", as_function(self.train))
        if self.train_seeds is not None:
            object.__setattr__(self, "train_seeds", as_function(self.train_seeds))
        if PROGRESS_PARAMETER in self.evaluate_options.model_fields:
            raise TypeError(f"{self.name}: evaluate option {PROGRESS_PARAMETER!r} is the platform's progress callback; rename it")
        if self.evaluate is not None and not isinstance(self.evaluate, Evaluation):
            object.__setattr__(self, "evaluate", Evaluation(self.evaluate, self.evaluate_options))
        object.__setattr__(self, "analyses", {name: as_function(f) for name, f in self.analyses.items()})
        if self.published is not None:
            object.__setattr__(self, "published", as_function(self.published))
        object.__setattr__(self, "importers", {name: as_function(f) for name, f in self.importers.items()})


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
