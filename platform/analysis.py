"""``dynagen results`` and ``dynagen report``: aggregate a sweep's rows over seeds.

A group is one setting of the grouping keys (default: every config key that varies across the
sweep's trials, except ``seed``); its statistics are over the trials in it (normally one per seed):
the mean and the 95 % confidence half-width of the mean from Student's t,
``t_{0.975, n-1} * s / sqrt(n)`` (null for n < 2).
"""

from __future__ import annotations

import io
import math
import tempfile
from typing import Any, Sequence

from dynagen.platform.configs import UsageError, format_table
from dynagen.platform.provenance import COMMIT_COLUMN, VERSION_COLUMN
from dynagen.platform.results import CONFIG_PREFIX, FIXED_COLUMNS, read_results, write_bytes_atomically

NON_METRIC_COLUMNS = (*FIXED_COLUMNS, "experiment")


def _load(storage: str, sweep: str, kind: str):
    try:
        return read_results(storage, sweep, kind=kind).to_pandas()
    except FileNotFoundError:
        from dynagen.platform.results import list_sweeps

        allowed = ", ".join(list_sweeps(storage)) or "(none)"
        raise UsageError(f"sweep: no results for {sweep!r} under {storage}; allowed: {allowed}") from None


def _config_column(frame, key: str) -> str:
    column = key if key.startswith(CONFIG_PREFIX) else f"{CONFIG_PREFIX}{key}"
    if column not in frame.columns:
        allowed = ", ".join(c[len(CONFIG_PREFIX):] for c in frame.columns if c.startswith(CONFIG_PREFIX))
        raise UsageError(f"group-by: unknown config key {key!r}; allowed: {allowed}")
    return column


def grouping_columns(frame, group_by: Sequence[str] | None) -> list[str]:
    if group_by:
        return [_config_column(frame, key) for key in group_by]
    config_columns = [c for c in frame.columns if c.startswith(CONFIG_PREFIX) and c != f"{CONFIG_PREFIX}seed"]
    return [c for c in config_columns if frame[c].astype(str).nunique() > 1]


def metric_columns(frame, metrics: Sequence[str] | None) -> list[str]:
    available = [c for c in frame.columns if c not in NON_METRIC_COLUMNS and not c.startswith(CONFIG_PREFIX)
                 and frame[c].dtype.kind == "f" and frame[c].notna().any()]
    if not metrics:
        return available
    unknown = [m for m in metrics if m not in available]
    if unknown:
        raise UsageError(f"metric: unknown {unknown[0]!r}; allowed: {', '.join(available) or '(none)'}")
    return list(metrics)


def mean_and_ci95(values) -> tuple[float, float, int]:
    """``(mean, 95 % CI half-width, n)`` over the non-null values (Student t, n - 1 dof)."""
    from scipy import stats

    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n), n


# Trial counts per group, by summary status (the column ``failed`` counts ``error`` rows).
STATUS_COUNTS = {"completed": "completed", "stopped": "stopped", "diverged": "diverged", "failed": "error"}
# Statuses whose rows carry results: diverged and failed trials have no metric values.
AGGREGATED_STATUSES = ("completed", "stopped")


def summarize(storage: str, sweep: str, group_by: Sequence[str] | None = None, metrics: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per group: the group's config values, its trials counted by status, and per metric the mean
    and CI over the group's trials of the :data:`AGGREGATED_STATUSES`."""
    frame = _load(storage, sweep, "summary")
    keys = grouping_columns(frame, group_by)
    names = metric_columns(frame, metrics)
    groups = frame.groupby(keys, dropna=False, sort=True) if keys else [((), frame)]
    rows = []
    for key_values, group in groups:
        key_values = key_values if isinstance(key_values, tuple) else (key_values,)
        row: dict[str, Any] = {column[len(CONFIG_PREFIX):]: value for column, value in zip(keys, key_values)}
        row["trials"] = len(group)
        for column, status in STATUS_COUNTS.items():
            row[column] = int((group["status"] == status).sum())
        included = group[group["status"].isin(AGGREGATED_STATUSES)]
        for name in names:
            mean, half_width, n = mean_and_ci95(included[name].tolist())
            row[f"{name} mean"], row[f"{name} ci95"] = mean, half_width
            if n != len(group):
                row[f"{name} n"] = n  # trials whose value entered the mean
        rows.append(row)
    return rows


def code_versions(storage: str, sweep: str) -> dict[str, int]:
    """``version@commit`` -> number of summary rows it produced (rows written before provenance: ``unknown``)."""
    from collections import Counter

    frame = _load(storage, sweep, "summary")
    text = lambda column: [v if isinstance(v, str) else None for v in frame[column]] if column in frame else [None] * len(frame)  # noqa: E731
    return dict(Counter(f"{version}@{(commit or 'no-git')[:12]}" if version else "unknown"
                        for version, commit in zip(text(VERSION_COLUMN), text(COMMIT_COLUMN))))


def write_summary_files(storage: str, sweep: str, rows: list[dict[str, Any]]) -> tuple[str, str]:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.DataFrame(rows)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    parquet = write_bytes_atomically(storage, f"{sweep}/summary.parquet", buffer.getvalue())
    csv = write_bytes_atomically(storage, f"{sweep}/summary.csv", frame.to_csv(index=False).encode())
    return parquet, csv


def print_summary(storage: str, sweep: str, group_by=None, metrics=None, analysis: str | None = None) -> list[dict[str, Any]]:
    if analysis:
        rows = run_analysis(storage, sweep, analysis)
        print(f"{analysis}:")
        print(format_table(rows))
        return rows
    rows = summarize(storage, sweep, group_by, metrics)
    print(format_table(rows))
    print(f"means and 95% CIs over {' and '.join(AGGREGATED_STATUSES)} trials; diverged and failed trials have no metric values")
    versions = code_versions(storage, sweep)
    if len(versions) > 1:
        shown = ", ".join(f"{version} ({count} trials)" for version, count in versions.items())
        print(f"note: these rows come from {len(versions)} versions of the code: {shown}")
    for path in write_summary_files(storage, sweep, rows):
        print(f"wrote {path}")
    return rows


def run_analysis(storage: str, sweep: str, name: str) -> list[dict[str, Any]]:
    """``Experiment.analyses[name](table)`` on the sweep's rows, as printable rows."""
    from dynagen.platform.registry import get

    table = read_results(storage, sweep)
    experiments = sorted(set(table["experiment"].to_pylist()))
    experiment = get(experiments[0])
    if name not in experiment.analyses:
        raise UsageError(f"analysis: unknown {name!r} for {experiment.name}; allowed: {', '.join(experiment.analyses) or '(none)'}")
    result = experiment.analyses[name](table)
    if hasattr(result, "to_pylist"):
        return result.to_pylist()
    if hasattr(result, "to_dict"):
        return result.to_dict(orient="records")
    return list(result)


def plot_curves(storage: str, sweep: str, metrics: Sequence[str] | None = None, group_by: Sequence[str] | None = None) -> list[str]:
    """One PNG per metric under ``<storage>/<sweep>/plots/``: the metric against step, one line per
    group (mean over the group's trials at each step) with its 95 % CI band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = _load(storage, sweep, "step")
    keys = grouping_columns(steps, group_by)
    paths = []
    for name in metric_columns(steps, metrics):
        figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
        groups = steps.groupby(keys, dropna=False, sort=True) if keys else [((), steps)]
        plotted: list[float] = []
        for key_values, group in groups:
            key_values = key_values if isinstance(key_values, tuple) else (key_values,)
            label = ", ".join(f"{c[len(CONFIG_PREFIX):]}={v}" for c, v in zip(keys, key_values)) or sweep
            curve = [(step, *mean_and_ci95(values[name].tolist())) for step, values in group.groupby("step", sort=True)]
            curve = [point for point in curve if point[3] > 0]
            if not curve:
                continue
            xs, means, widths = zip(*[(s, m, 0.0 if math.isnan(w) else w) for s, m, w, _ in curve])
            axes.plot(xs, means, label=label)
            plotted.extend(means)
            axes.fill_between(xs, [m - w for m, w in zip(means, widths)], [m + w for m, w in zip(means, widths)], alpha=0.12)
        axes.set_xlabel("step")
        axes.set_ylabel(name)
        axes.set_title(f"{sweep}: {name} (mean ± 95% CI over seeds)")
        # Metrics that fall by orders of magnitude (divergences, losses) are only readable in log scale.
        if plotted and min(plotted) > 0 and max(plotted) > 100 * min(plotted):
            axes.set_yscale("log")
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        figure.tight_layout()
        with tempfile.TemporaryFile() as handle:
            figure.savefig(handle, format="png")
            handle.seek(0)
            safe = name.replace("/", "_")
            paths.append(write_bytes_atomically(storage, f"{sweep}/plots/{safe}.png", handle.read()))
        plt.close(figure)
    return paths
