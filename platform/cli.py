"""``dynagen``: train, sweep, results, report, evaluate, import, list.

Imports are lazy (argparse and the registry only at module level) so ``dynagen --help`` answers
in about a second; torch, jax, ray and pyarrow are imported by the command that needs them.
Bad input ends in one line on stderr, ``dynagen: error: <field>: <what is wrong>; allowed: ...``,
and exit code 2, never a traceback: the commands check their inputs before Ray starts or anything is
written, and :func:`main` turns the errors of damaged input files that surface later (YAML, Parquet,
text encodings, zip and pickle) into that one line too. A run or sweep that ran and failed exits with 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from dynagen.platform.configs import UsageError
from dynagen.platform.names import check_name

EXIT_USAGE = 2
EXIT_FAILED = 1  # the command ran, but a run diverged or trials failed
TRACKER_NAMES = ("mlflow", "wandb")  # platform/trackers.py (not imported here: `dynagen --help` stays fast)


def _experiment(name: str):
    from dynagen.platform.registry import UnknownExperiment, get

    try:
        return get(name)
    except UnknownExperiment as error:
        raise UsageError(error.args[0]) from None


def _storage(storage: str | None) -> str:
    from dynagen.platform.results import StorageError, check_storage

    try:
        return check_storage(storage)
    except StorageError as error:
        raise UsageError(str(error)) from None


def _tracker(kind: str | None, storage: str) -> str | None:
    """``--tracker``: its package must be installed, and MLflow's default store is a local folder."""
    import importlib.util

    if kind is None:
        return None
    if importlib.util.find_spec(kind) is None:
        raise UsageError(f"tracker: {kind} is not installed; allowed: pip install 'dynagen[trackers]'")
    if kind == "mlflow" and "://" in storage and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise UsageError("tracker: mlflow's default store is <storage>/mlruns, a local folder; allowed: a local --storage, or MLFLOW_TRACKING_URI")
    return kind


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1][:200] if lines else ''}"


TIMINGS_PREFIX = "time/"  # seconds per phase of a run (GAN(TK)²'s Timings, a trial's start-up): one line under the table


def _print_metrics(metrics: dict[str, float], title: str) -> None:
    """The metrics as a table; the ``time/*`` seconds folded into one line after it (all of them stay in metrics.json
    and the summary row): the console's final table is about the results."""
    from dynagen.platform.configs import format_table

    timings = {key.removeprefix(TIMINGS_PREFIX): float(value) for key, value in sorted(metrics.items()) if key.startswith(TIMINGS_PREFIX)}
    rows = [{"metric": key, "value": float(value)} for key, value in sorted(metrics.items()) if not key.startswith(TIMINGS_PREFIX)]
    print(f"\n{title}")
    if rows:
        print(format_table(rows))
    if timings:
        print(f"{TIMINGS_PREFIX}* (s): " + " | ".join(f"{name} {value:.3g}" for name, value in timings.items()))


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from dynagen.platform.configs import build_config

    experiment = _experiment(args.experiment)
    for field, value in (("name", args.name), ("resume", args.resume)):
        if value is not None:
            check_name(value, field)
    storage = _storage(args.storage)
    base = None
    if args.resume:
        from dynagen.platform.run import RunNotFound, read_run_config

        try:
            saved = read_run_config(storage, args.resume)
        except RunNotFound as error:
            raise UsageError(f"resume: no run {args.resume!r} under {storage}") from error
        if saved.pop("experiment", experiment.name) != experiment.name:
            raise UsageError(f"resume: run {args.resume!r} is not a {experiment.name} run")
        base = saved
    config = build_config(experiment, args.preset, args.config, args.set or [], base=base)
    try:
        if args.local:
            from dynagen.platform.launch import train_locally

            result = train_locally(experiment, config, storage=storage, name=args.name, resume=args.resume,
                                   checkpoint_every=args.checkpoint_every, use_gpu=args.gpu, cpus=args.cpus_per_worker,
                                   verbose=args.verbose, show_progress=True, tracker=_tracker(args.tracker, storage))
        else:
            from dynagen.platform.launch import run_training

            result = run_training(
                experiment, config, workers=args.workers, use_gpu=args.gpu, storage=storage, name=args.name,
                resume=args.resume, checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep,
                max_failures=args.max_failures, cpus_per_worker=args.cpus_per_worker or 1, verbose=args.verbose,
                tracker=_tracker(args.tracker, storage),
            )
            print(f"latest checkpoint: {result.checkpoint_path}")
    except (UsageError, KeyboardInterrupt):
        raise
    except Exception as error:  # the run started and failed: its summary row says so, and so does the exit code
        where = "error.txt in its run folder" if args.local else ("Ray's log above" if args.verbose else "logs/ in its run folder")
        print(f"dynagen: {experiment.name} run failed: {_first_line(error)} (traceback: {where})", file=sys.stderr)
        return EXIT_FAILED
    if result.status == "diverged":
        print(f"dynagen: {experiment.name} run diverged: {result.reason} (run dir {result.run_dir}; no final metrics)", file=sys.stderr)
        return EXIT_FAILED
    _print_metrics(result.metrics, f"final metrics ({experiment.name}, run dir {result.run_dir})")
    return 0


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


def _check_evaluate_options(evaluation, options: dict[str, Any]) -> None:
    """Options are the fields of the experiment's typed ``EvaluateOptions``: unknown names and bad values
    are one-line usage errors."""
    from dynagen.platform.configs import validate

    allowed = list(evaluation.options.model_fields)
    for key in options:
        if key not in allowed:
            raise UsageError(f"option: unknown {key!r}; allowed: {', '.join(allowed) or '(none)'}")
    validate(evaluation.options, options)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from dynagen.platform.checkpoints import CHECKPOINT_FILE, find_checkpoint, load_state, run_dir_of
    from dynagen.platform.configs import build_config, parse_assignment
    from dynagen.platform.results import write_bytes_atomically

    experiment = _experiment(args.experiment)
    if experiment.evaluate is None:
        raise UsageError(f"experiment: {experiment.name} has no evaluate function")
    options = dict(parse_assignment(text, "--option") for text in args.option or [])
    if args.samples is not None:
        options["samples"] = args.samples
    _check_evaluate_options(experiment.evaluate, options)
    path = Path(args.checkpoint)
    if not path.exists():
        raise UsageError(f"checkpoint: no such file or folder: {path}")
    checkpoint = find_checkpoint(path)
    if checkpoint is None:
        raise UsageError(f"checkpoint: no {CHECKPOINT_FILE} in {path} or its checkpoint_* folders")
    from dynagen.platform.backends import backend_of
    from dynagen.platform.configs import validate

    state = backend_of(experiment).loaded(load_state(checkpoint))  # never runs code from the file
    saved = dict(state.get("_config") or {})  # every launch path saves it (docs/platform.md, "Checkpoints")
    saved.pop("experiment", None)
    try:
        validate(experiment.config, saved)
    except UsageError as error:
        raise UsageError(f"checkpoint: {checkpoint} is not a {experiment.name} checkpoint (its config: {error}); "
                         f"allowed: a checkpoint of a {experiment.name} run") from None
    missing = [key for key in experiment.checkpoint_keys if key not in state]
    if missing:
        raise UsageError(f"checkpoint: {checkpoint} has no {', '.join(map(repr, missing))}; allowed: a {experiment.name} "
                         f"checkpoint holding {', '.join(experiment.checkpoint_keys)}")
    config = build_config(experiment, args.preset, args.config, args.set or [], base=saved)
    out_dir = Path(args.out) if args.out else run_dir_of(checkpoint) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    from dynagen.platform.registry import MANIFEST_KEY
    from dynagen.platform.results import file_sha256

    result = _evaluate_with_progress(experiment, config, state, out_dir, options)
    manifest = dict(result.pop(MANIFEST_KEY, None) or {})
    metrics = {key: float(value) for key, value in result.items()}
    manifest["checkpoint"] = {"path": str(checkpoint.resolve()), "sha256": file_sha256(checkpoint), "step": state.get("_step"),
                              "imported_from": state.get("imported_from")}
    document = {**metrics, MANIFEST_KEY: manifest}
    write_bytes_atomically(str(out_dir), "metrics.json", json.dumps(document, indent=2, default=str).encode())
    _print_metrics(metrics, f"evaluation of {checkpoint} -> {out_dir / 'metrics.json'}")
    if experiment.published is not None:
        print_comparison(experiment.published(config, metrics, manifest), f"measured | published ({experiment.name} paper)")


def _evaluate_with_progress(experiment, config, state, out_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The experiment's evaluate function, its phases (``progress(phase, done, total)``: batches, clips, windows)
    shown by the console's progress display (platform/console.py): a live bar on a terminal, on a pipe a line at
    most every few seconds and the final count."""
    from dynagen.platform import console
    from dynagen.platform.context import Progress

    label = f"{experiment.name} evaluate"
    progress = Progress(label, None, console.PIPE_EVERY_S, display=console.ProgressDisplay(label))
    try:
        return dict(experiment.evaluate(config, state, out_dir, progress=progress.phase, **options))
    finally:
        progress.close()


def print_comparison(rows, title: str) -> None:
    """The paper's figures beside measured ones: ``metric | measured | published | comparable? | why``."""
    from dynagen.platform.configs import format_table

    cell = lambda v: "-" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)  # noqa: E731
    print(f"\n{title}")
    print(format_table([{"metric": r["metric"], "measured": cell(r["measured"]), "published": cell(r["published"]),
                         "comparable?": "yes" if r["comparable"] else "no", "why": r["why"]} for r in rows]))


# --------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------

def cmd_import(args: argparse.Namespace) -> None:
    """A model trained elsewhere, read by the experiment's importer, as a run folder `dynagen train` would write:
    ``config.yaml`` and ``checkpoint/state.pt``. Written in a hidden temp folder renamed at the end, so a
    refused source leaves nothing behind."""
    import shutil
    import tempfile

    from dynagen.platform.checkpoints import checkpoint_state, save_state_atomically
    from dynagen.platform.run import run_dir_for, write_run_config

    experiment = _experiment(args.experiment)
    if not experiment.importers:
        raise UsageError(f"experiment: {experiment.name} has no importer")
    source_format = args.format or next(iter(experiment.importers))
    if source_format not in experiment.importers:
        raise UsageError(f"format: unknown {source_format!r}; allowed: {', '.join(experiment.importers)}")
    if args.name is not None:
        check_name(args.name, "name")
    storage = _storage(args.storage)
    from dynagen.platform.launch import new_run_name
    from dynagen.platform.results import is_uri

    if is_uri(storage):
        raise UsageError("storage: import writes a local run folder; allowed: a local storage path")
    name = args.name or new_run_name(experiment, "import")
    run_dir, _ = run_dir_for(storage, name)
    if run_dir.exists():
        raise UsageError(f"name: run {name!r} already exists in {run_dir.parent}; allowed: a new run name")
    config, state = experiment.importers[source_format](Path(args.source), weights=args.weights)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{name}.import-"))
    try:
        config_dict = config.model_dump(mode="json")
        write_run_config(str(run_dir.parent), staging.name, experiment, config_dict)
        save_state_atomically(checkpoint_state(state, int(state["_step"]), config_dict), staging / "checkpoint")
        staging.rename(run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"imported {args.source} -> {run_dir}\nevaluate: dynagen evaluate {experiment.name} --checkpoint {run_dir}")


# --------------------------------------------------------------------------------------------
# list, sweep, results, report
# --------------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> None:
    from dynagen.platform.configs import describe_fields, format_table
    from dynagen.platform.registry import names

    selected = [args.experiment] if args.experiment else names()
    for name in selected:
        try:
            experiment = _experiment(name)
        except UsageError:
            raise
        except Exception as error:  # a model that does not import is listed, not fatal
            print(f"{name}: cannot be loaded ({type(error).__name__}: {error})\n")
            continue
        print(f"{experiment.name}  [backend: {experiment.backend}]  {experiment.description}".rstrip())
        for preset, values in experiment.presets.items():
            print(f"  preset {preset}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        if args.experiment or args.fields:
            rows = [{"field": f, "type": t, "default": d} for f, t, d in describe_fields(experiment.config)]
            print("  " + format_table(rows).replace("\n", "\n  "))
        print()


def cmd_sweep(args: argparse.Namespace) -> int:
    from dynagen.platform.sweep import load_sweep_spec, run_sweep

    spec = load_sweep_spec(args.search_space, overrides=args.set or [], num_samples=args.num_samples, seeds=args.seeds)
    storage = _storage(args.storage)
    grid = run_sweep(spec, storage=storage, resume=args.resume, max_concurrent=args.max_concurrent, verbose=args.verbose,
                     tracker=_tracker(args.tracker, storage))
    failed = [result for result in grid if result.error is not None]
    if not failed:
        return 0
    shown = ", ".join(f"{result.path}/error.txt" for result in failed[:3]) + (f" (+{len(failed) - 3} more)" if len(failed) > 3 else "")
    print(f"dynagen: sweep {spec.name}: {len(failed)} of {len(grid)} trials failed; errors in {shown}", file=sys.stderr)
    return EXIT_FAILED


def cmd_results(args: argparse.Namespace) -> None:
    from dynagen.platform.analysis import print_summary

    check_name(args.sweep, "sweep")
    print_summary(_storage(args.storage), args.sweep, group_by=args.group_by, metrics=args.metric, analysis=args.analysis)


def cmd_report(args: argparse.Namespace) -> None:
    from dynagen.platform.analysis import plot_curves, write_report

    check_name(args.sweep, "sweep")
    storage = _storage(args.storage)
    plots = plot_curves(storage, args.sweep, metrics=args.metric, group_by=args.group_by)
    print(f"plots: {', '.join(plots)}")
    print(f"report: {write_report(storage, args.sweep, metrics=args.metric, group_by=args.group_by, plots=plots, mode=args.mode)}")


# --------------------------------------------------------------------------------------------
# argument parsing
# --------------------------------------------------------------------------------------------


class OneLineErrors(argparse.ArgumentParser):
    """argparse's errors as one line (``dynagen: error: ...``, exit code 2) without the usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"dynagen: error: {message.removeprefix('argument ')} (see `{self.prog} --help`)\n")


def at_least(low: int):
    """An argparse type: an integer >= ``low``, named in the error like every other bad input."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an integer >= {low}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"got {value}; allowed: >= {low}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(prog="dynagen", description="Distributed experiments for generative models of dynamical systems, on Ray.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineErrors)
    storage_help = "results/checkpoint storage: a path or s3:// / gs:// URI (default: $DYNAGEN_STORAGE or ./runs)"

    def config_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--preset", help="named preset of the experiment (see `dynagen list`)")
        sub.add_argument("--config", metavar="FILE.yaml", help="YAML mapping of config values")
        sub.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config value (repeatable; nested keys as a.b)")

    train = commands.add_parser("train", help="train one run (Ray Train; --local for in-process)")
    train.add_argument("experiment")
    config_options(train)
    train.add_argument("--workers", type=at_least(1), default=1, help="Ray Train workers (DDP ranks); the global batch is split across them")
    train.add_argument("--gpu", action="store_true", help="one GPU per worker (with --local: train on this machine's GPU)")
    train.add_argument("--cpus-per-worker", type=at_least(1), metavar="N",
                       help="CPU cores reserved per worker, and its torch/XLA threads (default 1; with --local: all cores unless set)")
    train.add_argument("--storage", help=storage_help)
    train.add_argument("--name", help="run name (default: <experiment>-<time>)")
    train.add_argument("--resume", metavar="RUN", help="continue run RUN from its latest checkpoint")
    train.add_argument("--checkpoint-every", type=at_least(1), default=100, metavar="N", help="checkpoint every N steps (default 100)")
    train.add_argument("--keep", type=at_least(1), default=3, metavar="K", help="keep the last K checkpoints (default 3)")
    train.add_argument("--max-failures", type=at_least(0), default=0, metavar="F", help="restarts from the latest checkpoint after worker failures")
    train.add_argument("--local", action="store_true", help="run in this process without Ray")
    train.add_argument("-v", "--verbose", action="store_true", help="show Ray's, Tune's and the libraries' output (default: in the run's logs/)")
    train.add_argument("--tracker", choices=TRACKER_NAMES, help="also send the run to MLflow (local store) or W&B (offline)")
    train.set_defaults(handler=cmd_train)

    sweep = commands.add_parser("sweep", help="hyperparameter sweep from a search-space YAML (Ray Tune + Optuna)")
    sweep.add_argument("search_space", help="a YAML file, or the name of a packaged search space")
    sweep.add_argument("--resume", action="store_true", help="restore an interrupted sweep; finished trials are not rerun")
    sweep.add_argument("--max-concurrent", type=at_least(1), metavar="N", help="override the spec's max_concurrent")
    sweep.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a fixed config value, or pin a searched axis to one value (repeatable)")
    sweep.add_argument("--num-samples", type=at_least(1), metavar="N", help="override the spec's num_samples")
    sweep.add_argument("--seeds", type=at_least(0), nargs="+", metavar="S", help="override the spec's seeds")
    sweep.add_argument("--storage", help=storage_help)
    sweep.add_argument("-v", "--verbose", action="store_true", help="show Ray's, Tune's and the libraries' output (default: in the sweep's logs/)")
    sweep.add_argument("--tracker", choices=TRACKER_NAMES, help="one MLflow/W&B run per trial, grouped by the sweep")
    sweep.set_defaults(handler=cmd_sweep)

    results = commands.add_parser("results", help="aggregate a sweep: mean and 95%% CI over seeds per group")
    results.add_argument("sweep")
    results.add_argument("--group-by", nargs="+", metavar="KEY", help="config keys to group by (default: varied keys except seed)")
    results.add_argument("--metric", nargs="+", metavar="M", help="metrics to aggregate (default: all)")
    results.add_argument("--analysis", metavar="NAME", help="print the experiment's named analysis table")
    results.add_argument("--storage", help=storage_help)
    results.set_defaults(handler=cmd_results)

    report = commands.add_parser("report", help="PNG plots of metric curves per group, and one self-contained report.html")
    report.add_argument("sweep", metavar="SWEEP_OR_RUN")
    report.add_argument("--mode", choices=("min", "max"), default="min", help="whether the first metric is best at its min (default) or max")
    report.add_argument("--metric", nargs="+", metavar="M", help="metrics to plot (default: all)")
    report.add_argument("--group-by", nargs="+", metavar="KEY")
    report.add_argument("--storage", help=storage_help)
    report.set_defaults(handler=cmd_report)

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a checkpoint, print and save metrics",
        description="Evaluate a checkpoint (loaded with torch.load(weights_only=True): it never runs code). Options naming "
                    "TorchScript networks (srvp: lpips=FILE, fvd=FILE) run that file's code by design: use trusted files only.")
    evaluate.add_argument("experiment")
    evaluate.add_argument("--checkpoint", required=True, metavar="PATH", help="state.pt, a checkpoint folder or a run folder")
    evaluate.add_argument("--samples", type=at_least(1), metavar="N", help="samples per test video (best-of-N where the experiment samples)")
    evaluate.add_argument("--option", action="append", metavar="KEY=VALUE",
                          help="an option of the experiment's evaluate function, e.g. n_test=100 (repeatable; see its docs); "
                               "TorchScript files (lpips=, fvd=) are programs and run when loaded")
    config_options(evaluate)
    evaluate.add_argument("--out", metavar="DIR", help="output folder (default: <run dir>/eval)")
    evaluate.set_defaults(handler=cmd_evaluate)

    importing = commands.add_parser("import", help="a model trained elsewhere (e.g. released weights) as a run folder")
    importing.add_argument("experiment")
    importing.add_argument("source", metavar="DIR", help="the folder to import (layout: the experiment's importer docs)")
    importing.add_argument("--weights", metavar="FILE", help="weights file name inside DIR (default: the importer's)")
    importing.add_argument("--format", metavar="NAME", help="which of the experiment's importers (default: its first)")
    importing.add_argument("--name", help="run name (default: <experiment>-<time>-import)")
    importing.add_argument("--storage", help=storage_help)
    importing.set_defaults(handler=cmd_import)

    listing = commands.add_parser("list", help="experiments, presets and config fields")
    listing.add_argument("experiment", nargs="?")
    listing.add_argument("--fields", action="store_true", help="show every experiment's config fields")
    listing.set_defaults(handler=cmd_list)

    from dynagen.platform.slurm import add_slurm_command  # argparse only: ray loads inside the job

    add_slurm_command(commands)
    return parser


def _data_errors() -> dict[type, str]:
    """Errors that mean "this input file is damaged or not what it should be", by the library that raises them
    (only libraries this process already imported: looking them up imports nothing)."""
    import json as json_module
    import pickle
    import zipfile

    errors: dict[type, str] = {UnicodeDecodeError: "text in another encoding", json_module.JSONDecodeError: "malformed JSON",
                               zipfile.BadZipFile: "a damaged zip archive", pickle.UnpicklingError: "a pickle (never unpickled)"}
    if "yaml" in sys.modules:
        errors[sys.modules["yaml"].YAMLError] = "malformed YAML"
    if "pyarrow" in sys.modules:
        errors[sys.modules["pyarrow"].ArrowException] = "a damaged or inconsistent Parquet/Arrow file"
    return errors


def describe_data_error(error: BaseException) -> str | None:
    """One line for an error raised by reading a damaged input, or None for any other error (a bug: its traceback)."""
    for kind, what in _data_errors().items():
        if isinstance(error, kind):
            return f"input: {what} ({_first_line(error)}); allowed: the files dynagen writes, or valid YAML/Parquet input"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # bad flags: one line, exit code 2 (OneLineErrors)
    try:
        code = args.handler(args) or 0
        sys.stdout.flush()  # inside the try: a reader gone before the last buffered line is a BrokenPipeError here
        return code
    except UsageError as error:
        print(f"dynagen: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader went away (`dynagen list | head`): nothing left to say, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit would raise again
        return 141  # 128 + SIGPIPE, as a shell reports a writer killed by the signal
    except Exception as error:
        described = describe_data_error(error)
        if described is None:
            raise
        print(f"dynagen: error: {described}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dynagen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
