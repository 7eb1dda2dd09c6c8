"""Building an experiment's config from defaults < preset < YAML file < ``--set key=value``, and
turning pydantic's validation errors into one line naming the field and what is allowed.

Imports only pydantic and yaml, so the CLI stays fast.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Mapping

from dynagen.platform.registry import Experiment, ExperimentConfig


class UsageError(ValueError):
    """Bad user input; the CLI prints ``dynagen: error: <message>`` and exits with code 2."""


def load_yaml_file(path: str | Path, what: str = "config") -> Any:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what}: no such file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"{what}: {path} is not UTF-8 text (byte {error.start}); allowed: a YAML file") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1}: {getattr(error, 'problem', '')})" if mark else ""
        raise UsageError(f"{what}: malformed YAML in {path}{where}") from None


def parse_assignment(text: str, option: str = "--set") -> tuple[str, Any]:
    """``key=value`` with the value read as a YAML scalar (``1e-3`` -> float, ``true`` -> bool)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"{option}: expected key=value, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        return key.strip(), value


def set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            node = target[part] = {}
        target = node
    target[leaf] = value


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def preset_values(experiment: Experiment, preset: str | None) -> dict[str, Any]:
    if not preset:
        return {}
    if preset not in experiment.presets:
        allowed = ", ".join(experiment.presets) or "(none)"
        raise UsageError(f"preset: unknown {preset!r} for {experiment.name}; allowed: {allowed}")
    return dict(experiment.presets[preset])


def build_config(
    experiment: Experiment,
    preset: str | None = None,
    config_file: str | None = None,
    assignments: list[str] | tuple[str, ...] = (),
    base: Mapping[str, Any] | None = None,
) -> ExperimentConfig:
    """Defaults < ``base`` (e.g. a saved run's config) < preset < file < ``--set``; validated."""
    values = deep_merge(dict(base or {}), preset_values(experiment, preset))
    if config_file:
        loaded = load_yaml_file(config_file)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UsageError(f"config: {config_file} must hold a mapping of config keys, got {type(loaded).__name__}")
        named = loaded.pop("experiment", experiment.name)
        if named != experiment.name:
            raise UsageError(f"config: {config_file} is for experiment {named!r}, not {experiment.name!r}")
        values = deep_merge(values, loaded)
    for text in assignments:
        key, value = parse_assignment(text)
        set_dotted(values, key, value)
    return validate(experiment.config, values)


def validate(model: type[ExperimentConfig], values: Mapping[str, Any]) -> ExperimentConfig:
    from pydantic import ValidationError

    try:
        return model.model_validate(dict(values))
    except ValidationError as error:
        raise UsageError(describe_validation_error(error, model)) from None
    except (TypeError, KeyError, AttributeError) as error:  # a model's own validator tripping over a value's type
        raise UsageError(f"config: values of the wrong type for {model.__name__} ({type(error).__name__}: {error}); "
                         f"allowed: the types `dynagen list` shows") from None


def _unwrap(annotation: Any) -> Any:
    """``Optional[X]`` -> ``X``; other annotations unchanged."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def field_at(model: Any, location: tuple) -> tuple[Any, Any]:
    """``(FieldInfo or None, annotation)`` at a location through models and ``dict[str, X]`` values."""
    from pydantic import BaseModel

    field, annotation = None, model
    for part in location:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and part in annotation.model_fields:
            field = annotation.model_fields[part]
            annotation = field.annotation
        elif typing.get_origin(annotation) is dict:
            field, annotation = None, typing.get_args(annotation)[1]
        else:
            return None, None
    return field, _unwrap(annotation)


def _literal_values(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    values: list[Any] = []
    for arg in typing.get_args(annotation):  # Optional[Literal[...]], unions
        values.extend(_literal_values(arg))
    return values


def _bounds(field: Any) -> str:
    parts = []
    for item in getattr(field, "metadata", []):
        for attribute, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(item, attribute, None)
            if bound is not None:
                parts.append(f"{symbol} {bound}")
    return " and ".join(parts)


def describe_validation_error(error: Any, model: type[ExperimentConfig]) -> str:
    """The first pydantic error as ``<field>: <what is wrong>; allowed: <values>``."""
    first = error.errors()[0]
    location = tuple(part for part in first["loc"] if not isinstance(part, int))
    name = ".".join(str(part) for part in first["loc"]) or "config"
    kind, given = first["type"], first.get("input")
    if kind == "extra_forbidden":
        _, parent = field_at(model, location[:-1])
        allowed = ", ".join(getattr(parent, "model_fields", {})) or "(none)"
        return f"{name}: unknown key; allowed: {allowed}"
    field, _ = field_at(model, location)
    if kind == "literal_error":
        allowed = _literal_values(field.annotation) if field is not None else []
        shown = ", ".join(str(v) for v in allowed) or first.get("ctx", {}).get("expected", "?")
        return f"{name}: got {given!r}; allowed: {shown}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}  # a list item's bound is only in the error itself
        bounds = (_bounds(field) if field is not None else "") or " and ".join(
            f"{symbols[key]} {value}" for key, value in first.get("ctx", {}).items() if key in symbols)
        return f"{name}: got {given!r}; allowed: {bounds or first['msg']}"
    if kind == "value_error":  # a model validator's own message already says what is allowed
        return f"{name}: {first['msg'].removeprefix('Value error, ')}"
    annotation = getattr(field, "annotation", None)
    expected = getattr(annotation, "__name__", None) or str(annotation or "").replace("typing.", "")
    return f"{name}: {first['msg'].lower()} (got {given!r})" + (f"; allowed: {expected}" if expected else "")


def describe_fields(model: type[ExperimentConfig], prefix: str = "") -> list[tuple[str, str, str]]:
    """``(name, type and constraints, default)`` for every config field, nested ones as ``a.b``."""
    from pydantic import BaseModel

    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(describe_fields(annotation, f"{prefix}{name}."))
            continue
        literal = _literal_values(annotation)
        kind = " | ".join(map(str, literal)) if literal else getattr(annotation, "__name__", str(annotation).replace("typing.", ""))
        bounds = _bounds(field)
        rows.append((f"{prefix}{name}", f"{kind} ({bounds})" if bounds else kind, repr(field.default)))
    return rows


def format_table(rows: list[Mapping[str, Any]], columns: list[str] | None = None) -> str:
    """An aligned plain-text table; floats with 4 significant digits."""
    if not rows:
        return "(no rows)"
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    cells = [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(value.ljust(width) for value, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)
