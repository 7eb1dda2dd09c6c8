"""The results store: one Parquet dataset per sweep (or single run), partitioned by experiment.

Layout (``storage`` is a local path or a ``s3://`` / ``gs://`` URI, resolved by pyarrow)::

    <storage>/<sweep>/results/experiment=<name>/<trial>-steps-<first>-<last>.parquet   per-step rows
    <storage>/<sweep>/results/experiment=<name>/<trial>-summary.parquet                 one summary row

Every trial writes its own files, each atomically (a hidden temp file, then a rename), so readers
never see half a file and concurrent trials never contend. Rows share one set of columns::

    sweep_id, trial_id, status, reason, kind, seed, step, wall_time, dynagen_version, git_commit, config.<field>..., <metric>...

``kind`` is ``step`` or ``summary``; ``status`` is ``running`` on step rows and, on summary rows,
``completed`` (the last step, or the scheduler's ``max_t``, reached), ``stopped`` (early, by the
scheduler; ``step`` is the one it reached), ``diverged`` (non-finite state; ``reason`` says where, and the
row holds no metric values) or ``error`` (``reason``: the error's last line; no metric values); summary rows name the code that
produced them (``dynagen_version``, ``git_commit``: platform/provenance.py; null on step rows). Metric columns are the union
over trials (missing values are null); files may differ in which metric columns they hold, so
readers unify by name: pandas ``pd.read_parquet(<dir>)``, DuckDB ``read_parquet('<dir>/**/*.parquet',
hive_partitioning=true, union_by_name=true)``, polars ``pl.concat([pl.read_parquet(f,
hive_partitioning=True) for f in files], how="diagonal_relaxed")``. :func:`read_results` does
the same with pyarrow and drops per-step rows repeated after a restart from a checkpoint.

Compaction (:func:`compact_results`, run when a sweep or a single run ends) merges the files of
finished trials (``completed``, ``stopped``, ``diverged``: never run again, even by ``--resume``;
``error`` trials are rerun by a resume and stay as they are) into one ``part-<generation>-*.parquet``
per experiment, then writes ``_manifest-<generation>.json`` (parts and the files they replace),
then deletes the replaced files. :func:`read_results` follows the newest manifest: its parts, plus
every file it does not list; a listing that a concurrent compaction overtook (a file gone) is read
again, so readers never see a row twice nor miss one. Once a compaction has finished the directory
holds each row once for the readers above (they skip ``_`` files). One compactor at a time: the
sweep's driver.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from dynagen.platform.configs import UsageError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

STATUSES = ("running", "completed", "stopped", "diverged", "error")
FINAL_STATUSES = ("completed", "stopped", "diverged")  # a trial that ended so is never run again, not even by --resume
MANIFEST = re.compile(r"_manifest-(\d{9})\.json")
FIXED_COLUMNS = ("sweep_id", "trial_id", "status", "reason", "kind", "seed", "step", "wall_time", "dynagen_version", "git_commit")
CONFIG_PREFIX = "config."


class StorageError(ValueError):
    """Storage that cannot be resolved or written (the CLI turns it into a one-line error)."""


def default_storage() -> str:
    return os.environ.get("DYNAGEN_STORAGE") or "./runs"


def is_uri(storage: str) -> bool:
    return "://" in storage and not storage.startswith("file://")


def resolve_storage(storage: str | None = None) -> tuple["pafs.FileSystem", str, str]:
    """``(filesystem, base path inside it, canonical string)``; local paths become absolute."""
    import pyarrow.fs as pafs

    storage = storage or default_storage()
    if storage.startswith("file://"):
        storage = storage[len("file://") :]
    if is_uri(storage):
        try:
            filesystem, path = pafs.FileSystem.from_uri(storage)
        except Exception as error:  # pyarrow raises ArrowInvalid / OSError for unknown schemes, bad buckets
            raise StorageError(f"storage: cannot open {storage!r} ({_first_line(error)})") from None
        return filesystem, path.rstrip("/"), storage.rstrip("/")
    path = os.path.abspath(os.path.expanduser(storage))
    return pafs.LocalFileSystem(), path, path


def check_storage(storage: str | None = None) -> str:
    """Resolve ``storage`` and prove it is writable (create it, write and delete a probe)."""
    filesystem, base, canonical = resolve_storage(storage)
    probe = f"{base}/.dynagen-probe-{uuid.uuid4().hex[:8]}"
    try:
        filesystem.create_dir(base, recursive=True)
        with filesystem.open_output_stream(probe) as handle:
            handle.write(b"ok")
        filesystem.delete_file(probe)
    except Exception as error:
        raise StorageError(f"storage: cannot write to {canonical!r} ({_first_line(error)})") from None
    return canonical


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def join(*parts: str) -> str:
    return "/".join(part.rstrip("/") for part in parts)


def results_dir(storage: str | None, sweep_id: str) -> tuple["pafs.FileSystem", str]:
    from dynagen.platform.names import inside

    filesystem, base, canonical = resolve_storage(storage)
    inside(canonical, sweep_id, field="sweep")
    return filesystem, join(base, sweep_id, "results")


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become ``a.b`` keys; lists become JSON strings (one scalar per column)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = value
    return flat


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The float-valued entries of a metrics dict, fixed column names excluded."""
    out = {}
    for key, value in metrics.items():
        if key in FIXED_COLUMNS or key.startswith(CONFIG_PREFIX) or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) or type(value).__name__ in ("float32", "float64", "int32", "int64"):
            out[key] = float(value)
    return out


def _table(rows: list[dict[str, Any]]) -> "pa.Table":
    import pyarrow as pa

    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    metric_names = [c for c in columns if c not in FIXED_COLUMNS and not c.startswith(CONFIG_PREFIX)]
    config_names = [c for c in columns if c.startswith(CONFIG_PREFIX)]
    arrays, fields = [], []
    types = {"sweep_id": pa.string(), "trial_id": pa.string(), "status": pa.string(), "reason": pa.string(), "kind": pa.string(),
             "seed": pa.int64(), "step": pa.int64(), "wall_time": pa.float64(), "dynagen_version": pa.string(), "git_commit": pa.string()}
    for name in [*FIXED_COLUMNS, *config_names, *metric_names]:
        values = [row.get(name) for row in rows]
        if name in types:
            array = pa.array(values, type=types[name])
        elif name in metric_names:
            array = pa.array(values, type=pa.float64())
        else:
            array = pa.array(values)
        arrays.append(array)
        fields.append(pa.field(name, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _fsync(path: str, directory: bool = False) -> None:
    descriptor = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_atomically(filesystem: "pafs.FileSystem", target: str, write) -> str:
    """``write(temporary_path)`` (a hidden file in the target's folder) then a rename onto ``target``: readers never
    see a partial file. On a local disk the file is fsynced before the rename and the folder after it, so a crash
    leaves the old file or the new one; the temp file is removed on any error."""
    import pyarrow.fs as pafs

    directory, _, filename = target.rpartition("/")
    filesystem.create_dir(directory, recursive=True)
    temporary = join(directory, f".{filename}.{uuid.uuid4().hex[:8]}.tmp")
    local = isinstance(filesystem, pafs.LocalFileSystem)
    try:
        write(temporary)
        if local:
            _fsync(temporary)
        filesystem.move(temporary, target)
        if local:
            _fsync(directory, directory=True)
    except BaseException:
        try:
            filesystem.delete_file(temporary)
        except Exception:
            pass
        raise
    return target


def write_rows_atomically(filesystem: "pafs.FileSystem", directory: str, filename: str, rows: list[dict[str, Any]]) -> str:
    import pyarrow.parquet as pq

    return _write_atomically(filesystem, join(directory, filename), lambda path: pq.write_table(_table(rows), path, filesystem=filesystem))


def write_bytes_atomically(storage: str | None, relative_path: str, data: bytes) -> str:
    """Write ``<storage>/<relative_path>`` atomically (local or URI storage); returns its canonical path."""
    filesystem, base, canonical = resolve_storage(storage)

    def write(path: str) -> None:
        with filesystem.open_output_stream(path) as handle:
            handle.write(data)

    _write_atomically(filesystem, join(base, relative_path), write)
    return join(canonical, relative_path)


def copy_file_atomically(source: str | Path, target_uri: str) -> str:
    """Upload the local file ``source`` to ``target_uri`` (any storage) through the same atomic writer."""
    import pyarrow.fs as pafs

    filesystem, target = pafs.FileSystem.from_uri(target_uri)

    def write(path: str) -> None:
        with open(source, "rb") as reader, filesystem.open_output_stream(path) as handle:
            for block in iter(lambda: reader.read(1 << 20), b""):
                handle.write(block)

    return _write_atomically(filesystem, target, write)


class ResultsWriter:
    """One trial's rows: per-step rows buffered (flushed every ``flush_rows`` rows or
    ``flush_seconds``), then one summary row."""

    def __init__(
        self,
        storage: str | None,
        sweep_id: str,
        experiment: str,
        trial_id: str,
        config: Mapping[str, Any],
        seed: int,
        flush_rows: int = 200,
        flush_seconds: float = 30.0,
    ):
        self.filesystem, root = results_dir(storage, sweep_id)
        self.directory = join(root, f"experiment={experiment}")
        self.sweep_id, self.trial_id, self.seed = sweep_id, trial_id, int(seed)
        self.config_columns = {f"{CONFIG_PREFIX}{k}": v for k, v in flatten(config).items()}
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._buffer: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()

    def _row(self, kind: str, status: str, step: int, metrics: Mapping[str, Any], reason: str | None = None) -> dict[str, Any]:
        return {"sweep_id": self.sweep_id, "trial_id": self.trial_id, "status": status, "reason": reason, "kind": kind,
                "seed": self.seed, "step": int(step), "wall_time": time.time(),
                **self.config_columns, **numeric_metrics(metrics)}

    def log_step(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._buffer.append(self._row("step", "running", step, metrics))
        if len(self._buffer) >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            first, last = self._buffer[0]["step"], self._buffer[-1]["step"]
            write_rows_atomically(self.filesystem, self.directory, f"{self.trial_id}-steps-{first:09d}-{last:09d}.parquet", self._buffer)
            self._buffer = []
        self._last_flush = time.monotonic()

    def write_summary(self, status: str, step: int, metrics: Mapping[str, Any], reason: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status: unknown {status!r}; allowed: {', '.join(STATUSES)}")
        from dynagen.platform.provenance import summary_columns

        self.flush()
        row = self._row("summary", status, step, metrics, reason) | summary_columns()
        write_rows_atomically(self.filesystem, self.directory, f"{self.trial_id}-summary.parquet", [row])


def read_summary(storage: str | None, sweep_id: str, experiment: str, trial_id: str) -> dict[str, Any] | None:
    """The summary row a trial wrote (in its own file, or in a compacted part), or None."""
    import pyarrow.compute as pc

    filesystem, root = results_dir(storage, sweep_id)
    path = join(root, f"experiment={experiment}", f"{trial_id}-summary.parquet")
    if filesystem.get_file_info(path).type.name != "NotFound":
        return _read_results_file(filesystem, path).to_pylist()[0]  # a damaged one refused in one line
    manifest = _latest_manifest(filesystem, root)
    if manifest is None or trial_id not in manifest["trials"].get(experiment, ()):
        return None
    table = _read_files(filesystem, [join(root, part) for part in manifest["parts"] if part.startswith(f"experiment={experiment}/")])
    rows = [] if table is None else table.filter(pc.and_(pc.equal(table["trial_id"], trial_id), pc.equal(table["kind"], "summary"))).to_pylist()
    return rows[0] if rows else None


def _parquet_files(filesystem: "pafs.FileSystem", root: str) -> Iterable[tuple[str, str]]:
    """``(path relative to root, experiment)`` for every finished Parquet file under ``root`` (hidden temp
    files skipped)."""
    import pyarrow.fs as pafs

    for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        name = info.path.rsplit("/", 1)[-1]
        if info.type != pafs.FileType.File or name.startswith(".") or not name.endswith(".parquet"):
            continue
        relative = info.path[len(root) :].strip("/")
        partition = relative.split("/")[0]
        yield relative, partition.split("=", 1)[1] if partition.startswith("experiment=") else ""


def _manifests(filesystem: "pafs.FileSystem", root: str) -> list[tuple[int, str]]:
    import pyarrow.fs as pafs

    found = []
    for info in filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        match = MANIFEST.fullmatch(info.path.rsplit("/", 1)[-1])
        if match:
            found.append((int(match.group(1)), info.path))
    return sorted(found)


def _latest_manifest(filesystem: "pafs.FileSystem", root: str, manifests: list[tuple[int, str]] | None = None) -> dict[str, Any] | None:
    manifests = _manifests(filesystem, root) if manifests is None else manifests
    if not manifests:
        return None
    with filesystem.open_input_stream(manifests[-1][1]) as handle:
        return json.loads(handle.read().decode())


def _read_files(filesystem: "pafs.FileSystem", paths: list[str], experiments: list[str] | None = None) -> "pa.Table | None":
    """The files' rows as one table (schemas unified by name; an ``experiment`` column if ``experiments``)."""
    import pyarrow as pa

    tables = []
    for index, path in enumerate(paths):
        table = _read_results_file(filesystem, path)
        if experiments is not None:
            table = table.append_column("experiment", pa.array([experiments[index]] * table.num_rows, pa.string()))
        tables.append(table)
    if not tables:
        return None
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ResultsError(f"results: files under {paths[0].rsplit('/', 2)[0]} have clashing column types ({_first_line(error)[:160]}); "
                           f"allowed: one type per column, as dynagen writes them") from None


class _Overtaken(Exception):
    """A compaction finished while the files were being listed: list again."""


def _current_files(filesystem: "pafs.FileSystem", root: str) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
    """The files a reader reads now: the newest manifest's parts and every file it does not replace. Raises
    :class:`_Overtaken` if a newer manifest appeared during the listing (files it replaced may be gone)."""
    manifests = _manifests(filesystem, root)
    manifest = _latest_manifest(filesystem, root, manifests)
    files = list(_parquet_files(filesystem, root))
    if _manifests(filesystem, root)[-1:] != manifests[-1:]:  # a compactor writes its manifest before deleting
        raise _Overtaken()
    if manifest is not None:
        replaced, parts = set(manifest["replaced"]), set(manifest["parts"])
        # parts of no manifest yet (a compaction under way) repeat rows of files listed here
        files = [(r, e) for r, e in files if r in parts or (r not in replaced and not _is_part(r))]
    return files, manifest


def _is_part(relative: str) -> bool:
    return relative.rsplit("/", 1)[-1].startswith("part-")


def read_results(storage: str | None, sweep_id: str, kind: str | None = None, dedupe: bool = True, attempts: int = 10) -> "pa.Table":
    """The sweep's rows as one pyarrow table (schemas unified; an ``experiment`` column from the
    partition). With ``dedupe``, per-step rows written twice (a restart from a checkpoint repeats
    the steps after it) keep only the latest write. A listing overtaken by a concurrent compaction (a
    newer manifest, a file gone) is made again, up to ``attempts`` times."""
    import pyarrow as pa
    import pyarrow.compute as pc

    filesystem, root = results_dir(storage, sweep_id)
    for attempt in range(attempts):
        try:
            files, _ = _current_files(filesystem, root)
            table = _read_files(filesystem, [join(root, r) for r, _ in files], experiments=[e for _, e in files])
            break
        except (_Overtaken, FileNotFoundError):
            if attempt == attempts - 1:
                raise
    if table is None:
        raise FileNotFoundError(f"sweep: no results for {sweep_id!r} under {root}")
    if kind is not None:
        table = table.filter(pc.equal(table["kind"], kind))
    if dedupe and table.num_rows:
        frame = table.to_pandas()
        steps = frame[frame["kind"] == "step"].sort_values("wall_time").drop_duplicates(["trial_id", "step"], keep="last")
        frame = frame[frame["kind"] != "step"]
        import pandas as pd

        frame = pd.concat([steps, frame]).sort_values(["trial_id", "kind", "step"], kind="stable").reset_index(drop=True)
        table = pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False)
    return table


def compact_results(storage: str | None, sweep_id: str) -> int:
    """Merge the files of the sweep's finished trials not yet compacted into one new part per experiment, then
    write the manifest, then delete the files it replaces (see the module docstring); idempotent: returns the
    number of files replaced, 0 when there was nothing to do. Rows are kept as written (restart duplicates
    included: readers drop them)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    filesystem, root = results_dir(storage, sweep_id)
    files, manifest = _current_files(filesystem, root)  # one compactor at a time: nothing overtakes it
    manifest = manifest or {"generation": 0, "parts": [], "replaced": [], "trials": {}}
    _delete(filesystem, root, manifest["replaced"])  # left behind if the last compaction stopped after its manifest
    generation = manifest["generation"] + 1
    parts, replaced, trials = list(manifest["parts"]), [], {k: set(v) for k, v in manifest["trials"].items()}
    by_experiment: dict[str, list[str]] = {}
    for relative, experiment in files:
        if relative not in manifest["parts"]:
            by_experiment.setdefault(experiment, []).append(relative)
    for experiment, relatives in sorted(by_experiment.items()):
        table = _read_files(filesystem, [join(root, r) for r in relatives])
        summaries = table.filter(pc.equal(table["kind"], "summary")).select(["trial_id", "status"]).to_pylist()
        finished = {row["trial_id"] for row in summaries if row["status"] in FINAL_STATUSES} - trials.get(experiment, set())
        if not finished:
            continue
        rows = table.filter(pc.is_in(table["trial_id"], value_set=pa.array(sorted(finished), pa.string())))
        part = f"experiment={experiment}/part-{generation:09d}-{uuid.uuid4().hex[:8]}.parquet"
        _write_atomically(filesystem, join(root, part), lambda path: pq.write_table(rows, path, filesystem=filesystem))
        parts.append(part)
        replaced += [r for r in relatives if _trial_of(r) in finished]
        trials[experiment] = trials.get(experiment, set()) | finished
    if not replaced:
        return 0
    old_manifests = _manifests(filesystem, root)
    newest = {"generation": generation, "parts": parts, "replaced": sorted(replaced), "trials": {k: sorted(v) for k, v in trials.items()}}
    write_bytes_atomically(storage, join(sweep_id, "results", f"_manifest-{generation:09d}.json"), json.dumps(newest).encode())
    _delete(filesystem, root, replaced)
    for _, path in old_manifests:  # the newest lists every part they listed
        filesystem.delete_file(path)
    return len(replaced)


def _delete(filesystem: "pafs.FileSystem", root: str, relatives: Iterable[str]) -> None:
    for relative in relatives:
        try:
            filesystem.delete_file(join(root, relative))
        except FileNotFoundError:
            pass


def _trial_of(relative: str) -> str:
    """The trial a file belongs to: files are named ``<trial>-steps-<first>-<last>.parquet`` / ``<trial>-summary.parquet``."""
    return re.sub(r"-(steps-\d+-\d+|summary)\.parquet$", "", relative.rsplit("/", 1)[-1])


class ResultsError(UsageError):
    """A results file that cannot be read as the store's rows (damaged, foreign, inconsistent)."""


def _read_results_file(filesystem: "pafs.FileSystem", path: str) -> "pa.Table":
    """One Parquet file of the store, refused in one line if damaged or without the store's columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, filesystem=filesystem)
    except FileNotFoundError:
        raise  # gone since it was listed (a compaction): the reader lists again
    except (pa.ArrowException, OSError, ValueError) as error:
        raise ResultsError(f"results: {path} is not a readable Parquet file ({_first_line(error)[:160]}); "
                           "allowed: files dynagen wrote (remove or move this one)") from None
    missing = [column for column in ("trial_id", "kind", "step") if column not in table.column_names]
    if missing:
        raise ResultsError(f"results: {path} has no {', '.join(missing)} column; allowed: files dynagen wrote "
                           f"(columns {', '.join(FIXED_COLUMNS)}, config.*, metrics)")
    return table


def list_sweeps(storage: str | None = None) -> list[str]:
    import pyarrow.fs as pafs

    filesystem, base, _ = resolve_storage(storage)
    found = []
    for info in filesystem.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
        if info.type == pafs.FileType.Directory:
            name = info.path.rsplit("/", 1)[-1]
            if filesystem.get_file_info(join(info.path, "results")).type == pafs.FileType.Directory:
                found.append(name)
    return sorted(found)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a local file (checkpoints and network files in evaluation manifests)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
