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


def _table(storage: str, sweep: str, kind: str | None = None):
    """The sweep's rows (pyarrow), or a usage error listing the sweeps that have results."""
    try:
        return read_results(storage, sweep, kind=kind)
    except FileNotFoundError:
        from dynagen.platform.results import list_sweeps

        allowed = ", ".join(list_sweeps(storage)) or "(none)"
        raise UsageError(f"sweep: no results for {sweep!r} under {storage}; allowed: {allowed}") from None


def _load(storage: str, sweep: str, kind: str):
    return _table(storage, sweep, kind).to_pandas()


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
        if isinstance(rows, str):  # an analysis with nothing to show says why in one line
            print(f"{analysis}: {rows}")
            return []
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


# Where `dynagen evaluate --checkpoint <run or trial folder>` writes by default (cli.cmd_evaluate: <run>/eval).
EVALUATION_FILE = ("eval", "metrics.json")
# A sweep trial's checkpoints are in Tune's folder for it, <sweep>/tune_trial_<trial id>_<index>_<params>_<date>
# (the trainable is launch.tune_trial), its artifacts in <sweep>/trials/<trial id>: an evaluation is in either.
TUNE_FOLDER_PREFIX = "tune_trial_"


def _folder_trial(name: str, wanted: set[str]) -> str | None:
    """The trial of ``wanted`` a sweep folder belongs to: ``trials/<id>``, or Tune's ``tune_trial_<id>_<index>_...``
    (a trial id is some leading words of the rest), or None."""
    if name in wanted:
        return name
    if not name.startswith(TUNE_FOLDER_PREFIX):
        return None
    words = name[len(TUNE_FOLDER_PREFIX):].split("_")
    return next((trial_id for k in range(1, len(words)) if (trial_id := "_".join(words[:k])) in wanted), None)


def trial_evaluations(storage: str, sweep: str, trial_ids) -> dict[str, dict[str, Any]]:
    """Trial id -> the ``metrics.json`` (metrics and evaluation manifest) that ``dynagen evaluate`` wrote for the
    trial: ``eval/metrics.json`` in its folder ``<sweep>/trials/<id>/`` or in Tune's folder holding its checkpoints
    (``--checkpoint`` given either); trials nobody evaluated are absent."""
    import json

    import pyarrow.fs as pafs

    from dynagen.platform.results import join, resolve_storage

    filesystem, base, _ = resolve_storage(storage)
    folders = {info.path.rsplit("/", 1)[-1]: info.path
               for parent in (join(base, sweep), join(base, sweep, "trials"))
               for info in filesystem.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
               if info.type == pafs.FileType.Directory}
    wanted = {str(trial_id) for trial_id in trial_ids}
    by_trial: dict[str, list[str]] = {}  # one pass over the folders: a large sweep has thousands
    for name, path in sorted(folders.items()):
        owner = _folder_trial(name, wanted)
        if owner is not None:
            by_trial.setdefault(owner, []).append(path)
    found: dict[str, dict[str, Any]] = {}
    for trial_id, candidates in by_trial.items():
        for folder in candidates:
            path = join(folder, *EVALUATION_FILE)
            try:
                with filesystem.open_input_stream(path) as handle:
                    document = json.loads(handle.read())
            except FileNotFoundError:
                continue
            except ValueError as error:
                raise UsageError(f"evaluation: {path} is damaged ({error}); allowed: a metrics.json written by dynagen evaluate") from None
            if isinstance(document, dict):
                found[str(trial_id)] = document
                break
    return found


def run_analysis(storage: str, sweep: str, name: str) -> "list[dict[str, Any]] | str":
    """``Experiment.analyses[name](table, evaluations)`` on the sweep's rows and its trials' evaluations
    (:func:`trial_evaluations`), as printable rows, or one line saying why there are none."""
    from dynagen.platform.registry import get

    table = _table(storage, sweep)
    experiments = sorted(set(table["experiment"].to_pylist()))
    experiment = get(experiments[0])
    if name not in experiment.analyses:
        raise UsageError(f"analysis: unknown {name!r} for {experiment.name}; allowed: {', '.join(experiment.analyses) or '(none)'}")
    trial_ids = sorted(set(table["trial_id"].to_pylist()) - {None})
    result = experiment.analyses[name](table, trial_evaluations(storage, sweep, trial_ids))
    if isinstance(result, str):
        return result
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


# --------------------------------------------------------------------------------------------
# report.html: one self-contained page to hand a collaborator
# --------------------------------------------------------------------------------------------

IMAGE_TYPES = {".png": "image/png", ".gif": "image/gif"}
IMAGES_PER_RUN = 4  # the latest image of each kind (flow_*, samples_*...), at most this many kinds


def _html_table(rows: list[dict[str, Any]]) -> str:
    import html

    if not rows:
        return "<p>(no rows)</p>"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline_image(data: bytes, suffix: str, title: str) -> str:
    import base64
    import html

    encoded = base64.b64encode(data).decode()
    return (f'<figure><img alt="{html.escape(title)}" src="data:{IMAGE_TYPES[suffix]};base64,{encoded}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def run_images(run_dir, exclude: set[str] = frozenset()) -> list[Any]:
    """The latest image of each kind a run wrote (``plots/flow_00000300.png`` is kind ``plots/flow``), by kind;
    ``exclude``: file names left out (the metric plots ``dynagen report`` writes into a single run's plots/)."""
    import re
    from pathlib import Path

    latest: dict[str, Any] = {}
    for path in sorted(Path(run_dir).rglob("*")):
        if path.suffix not in IMAGE_TYPES or path.name in exclude or "tensorboard" in path.parts or "eval" in path.parts:
            continue
        kind = re.sub(r"[_-]?\d+$", "", str(path.relative_to(run_dir).with_suffix("")))
        if kind not in latest or path.stat().st_mtime >= latest[kind].stat().st_mtime:
            latest[kind] = path
    return [latest[kind] for kind in sorted(latest)][:IMAGES_PER_RUN]


def _provenance_rows(folders) -> list[dict[str, Any]]:
    """One row per distinct (code, libraries, machine) among the runs' provenance.json files."""
    import json

    from dynagen.platform.provenance import PROVENANCE_FILE

    counts: dict[tuple, dict[str, Any]] = {}
    for folder in folders:
        try:
            document = json.loads((folder / PROVENANCE_FILE).read_text())
        except FileNotFoundError:
            continue
        packages = ", ".join(f"{name} {version}" for name, version in document.get("packages", {}).items() if version)
        gpus = document.get("gpus") or {}
        row = {"dynagen": document.get("dynagen"), "commit": (document.get("git_commit") or "")[:12],
               "dirty": document.get("git_dirty"), "python": document.get("python"), "packages": packages,
               "host": document.get("host"), "cpus": document.get("cpu_count"),
               "gpus": f"{gpus.get('count')} x {gpus['names'][0]}" if gpus else "none", "data": document.get("data_source")}
        key = tuple(row.values())
        entry = counts.setdefault(key, {**row, "runs": 0, "first start": document.get("start_time"), "last end": None})
        entry["runs"] += 1
        entry["first start"] = min(filter(None, [entry["first start"], document.get("start_time")]), default=None)
        entry["last end"] = max(filter(None, [entry["last end"], document.get("end_time")]), default=None)
    return list(counts.values())


REPORT_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:right}th{background:#eef}
figure{display:inline-block;margin:0 1em 1em 0}img{max-width:560px;border:1px solid #ddd}figcaption{font-size:12px;color:#555}
h2{border-bottom:1px solid #ddd;padding-bottom:4px}"""


def write_report(storage: str, name: str, metrics: Sequence[str] | None = None, group_by: Sequence[str] | None = None,
                 plots: Sequence[str] = (), mode: str = "min") -> str:
    """``<storage>/<name>/report.html``: one self-contained page (images inlined as base64, no external
    resources). For a sweep: the comparison table with 95 % CIs, the metric plots, the experiment's analyses
    (e.g. GAN(TK)²'s finite <-> infinite agreement), per group the best trial's latest images, and a provenance
    summary; for a single run: its final metrics, curves, images and provenance. ``mode``: whether the first
    metric's best is its min or max. Returns its path."""
    import html
    import json
    from pathlib import Path

    import pyarrow.fs as pafs

    from dynagen.platform.registry import UnknownExperiment, get
    from dynagen.platform.results import join, resolve_storage

    filesystem, base, canonical = resolve_storage(storage)
    folder = Path(join(base, name))  # run and trial folders are read locally (images, provenance)
    local = isinstance(filesystem, pafs.LocalFileSystem)
    trials_dir = folder / "trials"
    is_sweep = local and trials_dir.is_dir()
    summary = _load(storage, name, "summary")
    experiment_name = str(summary["experiment"].iloc[0])
    if metrics:  # a metric only logged per step (no final value) has a plot but no column in the table
        metrics = [m for m in metrics if m in metric_columns(summary, None)] or None
    sections = [f"<h1>{html.escape(name)}</h1><p>{'sweep' if is_sweep else 'run'} of <b>{html.escape(experiment_name)}</b>, "
                f"{len(summary)} trial{'s' if len(summary) != 1 else ''}; means and 95% CIs over completed and stopped trials</p>"]
    rows = summarize(storage, name, group_by, metrics)
    sections.append("<h2>Comparison</h2>" + _html_table(rows))
    if not is_sweep and local and (folder / "metrics.json").is_file():
        final = json.loads((folder / "metrics.json").read_text())
        sections.append("<h2>Final metrics</h2>" + _html_table([{"metric": k, "value": v} for k, v in sorted(final.items())]))
    figures = []
    for path in plots:
        with filesystem.open_input_stream(base + path[len(canonical):]) as handle:
            figures.append(_inline_image(handle.read(), ".png", Path(path).stem))
    sections.append("<h2>Metrics</h2>" + "".join(figures))
    try:
        analyses = list(get(experiment_name).analyses)
    except UnknownExperiment:  # rows of an experiment this installation does not have: no analyses to run
        analyses = []
    for analysis in analyses:
        try:
            result = run_analysis(storage, name, analysis)
            shown = f"<p>{html.escape(result)}</p>" if isinstance(result, str) else _html_table(result)
            sections.append(f"<h2>Analysis: {html.escape(analysis)}</h2>" + shown)
        except Exception as error:  # an analysis that does not apply to this sweep (e.g. no infinite-width trials)
            sections.append(f"<h2>Analysis: {html.escape(analysis)}</h2><p>not available: {html.escape(str(error))}</p>")
    if local:
        if is_sweep:
            keys = grouping_columns(summary, group_by)
            metric = next(iter(metric_columns(summary, metrics)), None)
            done = summary[summary["status"].isin(AGGREGATED_STATUSES)]
            groups = done.groupby(keys, dropna=False, sort=True) if keys else [((), done)]
            blocks = []
            for key_values, group in groups:
                key_values = key_values if isinstance(key_values, tuple) else (key_values,)
                label = ", ".join(f"{c[len(CONFIG_PREFIX):]}={v}" for c, v in zip(keys, key_values)) or name
                best = group.sort_values(metric, ascending=mode == "min").iloc[0] if metric else group.iloc[0]
                images = run_images(trials_dir / str(best["trial_id"]))
                title = f"{label}: best trial {best['trial_id']}" + (f" ({metric} {best[metric]:.4g})" if metric else "")
                blocks.append(f"<h3>{html.escape(title)}</h3>" + "".join(
                    _inline_image(p.read_bytes(), p.suffix, str(p.relative_to(trials_dir))) for p in images))
            sections.append("<h2>Samples: the best trial of each group</h2>" + "".join(blocks))
            run_folders = sorted(p for p in trials_dir.iterdir() if p.is_dir())
        else:
            sections.append("<h2>Samples</h2>" + "".join(_inline_image(p.read_bytes(), p.suffix, str(p.relative_to(folder)))
                                                        for p in run_images(folder, {Path(p).name for p in plots})))
            run_folders = [folder]
        sections.append("<h2>Provenance</h2>" + _html_table(_provenance_rows(run_folders)))
    document = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(name)}: dynagen report</title>"
                f"<style>{REPORT_STYLE}</style></head><body>{''.join(sections)}</body></html>")
    return write_bytes_atomically(storage, f"{name}/report.html", document.encode())
