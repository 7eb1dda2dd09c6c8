"""``dynagen slurm``: run a dynagen command on a Ray cluster that one SLURM job brings up.

``dynagen slurm submit [sbatch options] -- dynagen sweep NAME ...`` checks the command here (a bad
search space fails now, not after hours in the queue), then submits the packaged job script
``deploy/slurm/dynagen.sbatch`` (README: "Running on a SLURM cluster") with the command as its arguments. The
script starts Ray across the allocation and calls back into two job-side subcommands:

* ``wait-nodes HOST...``: waits, bounded, until every node of the allocation has joined Ray;
* ``run -- dynagen ...``: runs the command; a sweep whose Tune state exists is resumed.

Model-agnostic, and light at import (argparse only): ray and the sweep module load in the job.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from importlib import resources
from pathlib import Path

from dynagen.platform.cli import OneLineErrors, at_least
from dynagen.platform.configs import UsageError

TEMPLATE = "slurm/dynagen.sbatch"  # in the dynagen.deploy package data (the repository's deploy/)
DEFAULT_LOG_DIR = "slurm-logs"


def template_path() -> Path:
    return Path(str(resources.files("dynagen.deploy") / TEMPLATE))


class SlurmParser(OneLineErrors):
    """With ``passthrough=True`` (``submit``, ``run``): the options it does not know are sbatch's and
    everything after ``--`` is the dynagen command, kept as given."""

    def __init__(self, *args, passthrough: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.passthrough = passthrough

    def parse_known_args(self, args=None, namespace=None):
        if not self.passthrough:
            return super().parse_known_args(args, namespace)
        args = list(sys.argv[1:] if args is None else args)
        split = args.index("--") if "--" in args else len(args)
        namespace, sbatch_options = super().parse_known_args(args[:split], namespace)
        namespace.sbatch_options, namespace.command = sbatch_options, args[split + 1 :]
        return namespace, []


# --------------------------------------------------------------------------------------------
# On the login node
# --------------------------------------------------------------------------------------------


def check_command(command: list[str]) -> argparse.Namespace:
    """Parse (and for a sweep, load and validate) the dynagen command the job will run."""
    from dynagen.platform.cli import build_parser

    if not command or Path(command[0]).name != "dynagen":
        raise UsageError(f"command: expected `-- dynagen COMMAND ...` after the sbatch options, got {' '.join(command) or 'nothing'!r}; "
                         "allowed: dynagen sweep, dynagen train")
    args = build_parser().parse_args(command[1:])  # a bad flag: one line, exit code 2
    if args.command not in ("sweep", "train"):
        raise UsageError(f"command: dynagen {args.command} does not need a cluster; allowed: dynagen sweep, dynagen train")
    if args.command == "sweep":
        from dynagen.platform.sweep import load_sweep_spec

        args.spec = load_sweep_spec(args.search_space, overrides=args.set or [], num_samples=args.num_samples, seeds=args.seeds)
    return args


def sbatch_command(args: argparse.Namespace) -> list[str]:
    """The sbatch call for ``submit``'s arguments (the command checked first)."""
    checked = check_command(args.command)
    name = checked.spec.name if checked.command == "sweep" else checked.experiment
    # Ours first: sbatch takes the last of a repeated option, so the user's own win.
    return ["sbatch", "--parsable", f"--job-name=dynagen-{name}", f"--output={Path(args.log_dir).resolve()}/%x-%j.out",
            *args.sbatch_options, str(template_path()), *args.command]


def cmd_submit(args: argparse.Namespace) -> None:
    command = sbatch_command(args)
    if args.dry_run:
        print(shlex.join(command))
        return
    if shutil.which("sbatch") is None:
        raise UsageError("sbatch: not found on PATH; allowed: a machine with the SLURM client commands (or --dry-run)")
    Path(args.log_dir).mkdir(parents=True, exist_ok=True)
    # The job finds dynagen and ray where this dynagen is installed (on the shared filesystem).
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "DYNAGEN_BIN": sysconfig.get_path("scripts")})
    if result.returncode != 0:
        raise UsageError(f"sbatch: {result.stderr.strip() or f'exit code {result.returncode}'}")
    job_id = result.stdout.strip().split(";")[0]
    job = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    log = next((item.partition("=")[2] for item in job.split() if item.startswith("StdOut=")), "(see scontrol show job)")
    print(f"submitted job {job_id}: {shlex.join(args.command)}\nlog: {log}")


def cmd_template(args: argparse.Namespace) -> None:
    print(template_path())


# --------------------------------------------------------------------------------------------
# Inside the job (called by the job script)
# --------------------------------------------------------------------------------------------


def cmd_wait_nodes(args: argparse.Namespace) -> None:
    import ray

    ray.init(address=os.environ["RAY_ADDRESS"], logging_level="warning", log_to_driver=False)
    deadline = time.monotonic() + args.timeout
    try:
        while True:
            joined = sorted(node["NodeManagerHostname"] for node in ray.nodes() if node["Alive"])
            if len(joined) >= len(args.hosts):
                print(f"dynagen-slurm: all {len(joined)} Ray node(s) joined: {ray.cluster_resources()}", flush=True)
                return
            if time.monotonic() > deadline:
                missing = [host for host in args.hosts if not any(name.split(".")[0] == host.split(".")[0] for name in joined)]
                print(f"dynagen-slurm: error: only {len(joined)} of {len(args.hosts)} nodes joined Ray within {args.timeout} s "
                      f"(missing: {', '.join(missing) or '?'}); their `ray start` output is in this log", file=sys.stderr, flush=True)
                raise SystemExit(1)
            time.sleep(1)
    finally:
        ray.shutdown()


def with_resume(command: list[str]) -> list[str]:
    """``command`` with ``--resume`` added when it is a sweep whose Tune state already exists."""
    checked = check_command(command)
    if checked.command != "sweep" or checked.resume:
        return command
    from ray import tune

    from dynagen.platform.results import join, resolve_storage

    _, _, storage = resolve_storage(checked.storage)
    state = join(storage, checked.spec.name)
    if not tune.Tuner.can_restore(state):
        return command
    print(f"dynagen-slurm: sweep state found in {state}: resuming it", flush=True)
    return [*command, "--resume"]


def cmd_run(args: argparse.Namespace) -> None:
    from dynagen.platform.cli import main

    # The job script starts this in the background, where bash leaves SIGINT ignored; the script's
    # SIGINT before the time limit must stop the command (Tune then saves the sweep and returns).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.sbatch_options:
        raise UsageError(f"run: unexpected {shlex.join(args.sbatch_options)} before `--`; allowed: dynagen slurm run -- dynagen COMMAND ...")
    raise SystemExit(main(with_resume(args.command)[1:]))


def add_slurm_command(commands) -> None:
    """``dynagen slurm ...``, registered by platform/cli.py."""
    slurm = commands.add_parser("slurm", help="run a sweep or training on a Ray cluster inside one SLURM job")
    sub = slurm.add_subparsers(dest="slurm_command", required=True, metavar="SUBCOMMAND", parser_class=SlurmParser)

    submit = sub.add_parser("submit", passthrough=True, allow_abbrev=False,
                            usage="dynagen slurm submit [--log-dir DIR] [--dry-run] [sbatch options] -- dynagen sweep NAME ...",
                            help="submit the job script with a dynagen command (sbatch options pass through)")
    submit.add_argument("--log-dir", default=DEFAULT_LOG_DIR, metavar="DIR",
                        help=f"job logs as DIR/<job name>-<job id>.out (default: ./{DEFAULT_LOG_DIR})")
    submit.add_argument("--dry-run", action="store_true", help="check the command and print the sbatch call instead of submitting")
    submit.set_defaults(handler=cmd_submit)

    template = sub.add_parser("template", help="print the path of the packaged job script (to use with sbatch directly)")
    template.set_defaults(handler=cmd_template)

    wait = sub.add_parser("wait-nodes", help="(in the job) wait until every node has joined Ray at $RAY_ADDRESS")
    wait.add_argument("hosts", nargs="+", metavar="HOST")
    wait.add_argument("--timeout", type=at_least(1), default=300, metavar="S")
    wait.set_defaults(handler=cmd_wait_nodes)

    run = sub.add_parser("run", passthrough=True, allow_abbrev=False, usage="dynagen slurm run -- dynagen COMMAND ...",
                         help="(in the job) run the command; a sweep whose state exists is resumed")
    run.set_defaults(handler=cmd_run)
