"""``dynagen results SWEEP --analysis paper`` for the torch systems: a sweep's trials beside the paper's figures.

One comparison per experiment (``models/<pkg>/published.py``: ``compare(config, metrics, manifest)``, the function
``dynagen evaluate`` prints) is applied to every trial, twice where it can be:

* to the metrics the trial's summary row holds (its training / validation reports) that estimate a published figure,
  with a manifest the experiment writes for the protocol they were measured with (e.g. SRVP's ``val/psnr``: fewer
  clips and samples than the test, clips from the training digits): they are printed, and marked not comparable
  with the reasons;
* to the evaluation ``dynagen evaluate --checkpoint <trial folder>`` wrote into the trial's ``eval/metrics.json``, with
  its own manifest.

Per group (the trial's configuration without the seed) and published figure: the number of trials, the mean of
the measured values over them and the 95 % confidence half-width (``platform/analysis.py``, ``mean_and_ci95``), the
published value, comparable (every trial's protocol is the paper's) and why. A sweep with no metric that maps to a
published figure gets one line saying so.
"""

from __future__ import annotations

import json
import math
import typing
from typing import Any, Callable, Iterable, Mapping

from dynagen.platform.analysis import AGGREGATED_STATUSES, mean_and_ci95
from dynagen.platform.registry import MANIFEST_KEY

# (row metric, published metric, manifest of the protocol the row metric was measured with)
RowProtocol = tuple[str, str, Mapping[str, Any]]

PREFIX = "config."


def config_of(row: Mapping[str, Any], config_class) -> Any:
    """The trial's config from its ``config.*`` columns (lists were stored as JSON strings: platform/results.py ``flatten``)."""
    values: dict[str, Any] = {}
    for column, value in row.items():
        name = column[len(PREFIX):] if column.startswith(PREFIX) else None
        if name not in config_class.model_fields:
            continue
        if hasattr(value, "item"):  # numpy scalars
            value = value.item()
        if isinstance(value, float) and math.isnan(value):  # a null column (an unset Optional field)
            value = None
        origin = typing.get_origin(config_class.model_fields[name].annotation)
        if isinstance(value, str) and origin in (list, dict):
            value = json.loads(value)
        values[name] = value
    return config_class.model_validate(values)


def _trial_comparisons(compare: Callable, config, row: Mapping[str, Any], evaluation: Mapping[str, Any] | None,
                       row_protocols: Iterable[RowProtocol]) -> list[dict[str, Any]]:
    """``compare`` on one trial: its row metrics (each with the manifest of its protocol) and its evaluation."""
    found = []
    for row_metric, metric, manifest in row_protocols:
        value = row.get(row_metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        for result in compare(config, {metric: float(value)}, manifest):
            if result["metric"] == metric:
                found.append({**result, "from": f"{row_metric} (training)"})
    if evaluation:
        metrics = {k: float(v) for k, v in evaluation.items() if k != MANIFEST_KEY and isinstance(v, (int, float))}
        for result in compare(config, metrics, evaluation.get(MANIFEST_KEY)):
            if result["measured"] is not None:
                found.append({**result, "from": "dynagen evaluate"})
    return found


def _reasons(whys: list[str]) -> str:
    """The trials' reasons: one if they agree, else each with the number of trials that gave it."""
    distinct = list(dict.fromkeys(whys))
    if len(distinct) == 1:
        return distinct[0]
    return "; ".join(f"{why} ({whys.count(why)} trials)" for why in distinct)


def sweep_comparison(table, evaluations: Mapping[str, Mapping[str, Any]] | None, *, config_class, compare: Callable,
                     row_protocols: Callable[[Any], Iterable[RowProtocol]], experiment: str) -> "list[dict[str, Any]] | str":
    """The rows ``dynagen results SWEEP --analysis paper`` prints (module docstring), or one line when none apply."""
    frame = table.to_pandas() if hasattr(table, "to_pandas") else table
    frame = frame[(frame["kind"] == "summary") & frame["status"].isin(AGGREGATED_STATUSES)]
    evaluations = evaluations or {}
    config_columns = [c for c in frame.columns if c.startswith(PREFIX) and c != f"{PREFIX}seed"]
    varying = [c for c in config_columns if frame[c].astype(str).nunique() > 1]
    groups: dict[tuple, dict[str, Any]] = {}
    for _, trial in frame.iterrows():
        row = trial.to_dict()
        config = config_of(row, config_class)
        for result in _trial_comparisons(compare, config, row, evaluations.get(row["trial_id"]), row_protocols(config)):
            key = (tuple(str(row[c]) for c in config_columns), result["metric"], result["from"])
            entry = groups.setdefault(key, {"labels": {c[len(PREFIX):]: row[c] for c in varying}, "result": result,
                                            "measured": [], "comparable": [], "why": []})
            entry["measured"].append(result["measured"])
            entry["comparable"].append(bool(result["comparable"]))
            entry["why"].append(result["why"])
    if not groups:
        reported = sorted(c for c in frame.columns if not c.startswith(PREFIX) and frame[c].dtype.kind == "f"
                          and frame[c].notna().any() and c not in ("wall_time",))
        return (f"no metric of this sweep maps to a published figure (its rows hold: {', '.join(reported) or 'none'}), "
                f"and no trial has an evaluation; run `dynagen evaluate {experiment} --checkpoint CHECKPOINT` on its trials' "
                f"checkpoints (README, \"Reproducing the papers\"), then this analysis again")
    rows = []
    for (_, metric, source), entry in sorted(groups.items(), key=lambda item: item[0]):
        mean, half_width, n = mean_and_ci95(entry["measured"])
        rows.append({**entry["labels"], "metric": metric, "from": source, "trials": n, "measured mean": mean,
                     "ci95": half_width, "published": entry["result"]["published"],
                     "comparable": "yes" if all(entry["comparable"]) else "no", "why": _reasons(entry["why"])})
    return rows
