"""GPU acceptance check: one command on a GPU machine, one table (also written to a file), in at most 8 minutes.

Cases, each in its own process (its peak memory is its own, a crash or a timeout ends only that case):

* ``srvp-local`` / ``pde-local``: ``dynagen train --local --gpu`` of the full-size ``smmnist`` / ``wave`` models
  (SRVP with AMP; the PDE config has no AMP switch), a few hundred steps; then ``--resume`` with more steps on the
  GPU, then ``dynagen evaluate --option device=cuda``;
* ``srvp-ray`` / ``pde-ray``: the same through Ray Train with one GPU worker, where Ray is installed;
* ``gan-ntk-500`` / ``gan-ntk-10000``: GAN(TK)² inf_ipm generator steps at N = M = 500 and 10,000 (the timing of
  benchmarks/gan_ntk.py), where JAX sees a GPU and neural-tangents imports;
* ``gan-ntk-seeds``: the steps of 8 seeds of one ``make demo`` configuration (relu, width 128, N = M = 128) as one
  vmapped program against seed by seed (models/gantk/flow.py: ``vectorise_seeds`` says which a vectorised sweep uses
  on this backend; this case measures whether it should).

Per case: it/s and frames/s (between the run's logged steps, start-up and validations left out), peak GPU memory,
first -> last training loss, the step the resumed run started from, and the evaluation. A case whose libraries are
missing is skipped, with the reason in the table.

Built for a bare GPU node: this module imports only the standard library until a case runs. What it finds (torch
and CUDA, jax and its backend, neural-tangents, Ray, pydantic, dynagen ...) is probed in subprocesses and listed
above the table. Wheels in an optional ``.whl/`` folder of the checkout are installed with ``pip --no-index`` into a
temporary folder first; where ``dynagen`` itself is not installed, the checkout is linked there (no build needed).
README, "GPU acceptance check".

    python -m benchmarks.gpu_check [--device auto|cuda|cpu] [--size full|tiny] [--out FILE] [--cases NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
DEFAULT_OUT = ROOT / "runs" / "gpu_check.txt"
BUDGET_S = 8 * 60

# module -> distribution name; probed in this order
PACKAGES = {"torch": "torch", "jax": "jax", "neural_tangents": "neural-tangents", "ray": "ray", "pydantic": "pydantic",
            "optuna": "optuna", "geomloss": "geomloss", "pyarrow": "pyarrow", "dynagen.platform.cli": "dynagen"}
PROBE = r"""
import importlib, importlib.metadata, json, sys
module, dist = sys.argv[1], sys.argv[2]
importlib.import_module(module)
info = {"version": importlib.metadata.version(dist)}
if module == "torch":
    import torch
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
elif module == "jax":
    import jax
    info["gpu"] = str(jax.devices()[0].device_kind) if jax.default_backend() == "gpu" else None
elif module == "ray":
    import ray.train, ray.tune  # Ray Train and Tune, not only the core
elif dist == "dynagen":
    from dynagen.platform.registry import names
    info["version"] += " (experiments: " + ", ".join(names()) + ")"
print(json.dumps(info))
"""

# Sizes of the training cases. full: the papers' smmnist / wave models at their global batch (128), short runs and
# light validations; tiny: the CPU presets shrunk further, so that the test suite runs every case on 2 cores.
TRAINING = {
    "full": {
        "srvp": {"preset": "smmnist", "steps": 300, "more": 50, "loss": "train/loss",
                 "set": ["amp=true", "log_every=30", "val_interval=1000000", "n_iter_test=2", "n_samples_test=10"],
                 "evaluate": ["--samples", "5", "--option", "n_test=64"]},
        "pde": {"preset": "wave", "steps": 400, "more": 50, "loss": "loss",
                "set": ["epochs=null", "n_sequences=40", "log_every=30"], "evaluate": []},
    },
    "tiny": {
        "srvp": {"preset": "smmnist-cpu", "steps": 30, "more": 10, "loss": "train/loss",
                 "set": ["batch_size=4", "log_every=5", "val_interval=1000", "n_iter_test=1", "n_samples_test=2"],
                 "evaluate": ["--samples", "2", "--option", "n_test=4", "--option", "batch_size=4"]},
        # the wave models' loss plateaus for ~100 steps before it falls (measured at wave-cpu: 0.81 at step 0, 0.90 at 80,
        # 0.48 at 149)
        "pde": {"preset": "wave-cpu", "steps": 150, "more": 10, "loss": "loss",
                "set": ["n_sequences=10", "batch_size=16", "log_every=10"], "evaluate": []},
    },
}
GAN_STEPS = {"full": 20, "tiny": 2}
GAN_SIZES = {"full": {"gan-ntk-500": 500, "gan-ntk-10000": 10_000}, "tiny": {"gan-ntk-500": 64, "gan-ntk-10000": 128}}
# gan-ntk-seeds: seeds of one configuration, particles (ηt/N = 2 as make demo's), generator steps timed
GAN_SEEDS = {"full": {"seeds": 8, "n": 128, "steps": 100}, "tiny": {"seeds": 2, "n": 16, "steps": 2}}
CASES = ("srvp-local", "srvp-ray", "pde-local", "pde-ray", "gan-ntk-500", "gan-ntk-10000", "gan-ntk-seeds")
CASE_TIMEOUT_S = {"full": 150, "tiny": 300}
COLUMNS = ("case", "device", "status", "wall s", "steps", "it/s", "frames/s", "peak GPU MiB", "loss first -> last", "resumed at",
           "evaluation", "notes")


# --------------------------------------------------------------------------------------------
# What this node has
# --------------------------------------------------------------------------------------------


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else "no output"


def probe(module: str, env: dict[str, str]) -> dict:
    """``{"version", "gpu"?}`` of an importable module, else ``{"error": its last line}``; in a subprocess, so that
    this process never imports the heavy libraries (and jax preallocates nothing here)."""
    done = subprocess.run([sys.executable, "-c", PROBE, module, PACKAGES[module]], capture_output=True, text=True, cwd=ROOT,
                          env={**env, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}, timeout=120)
    if done.returncode != 0:
        return {"error": _last_line(done.stderr)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def install_wheels(site: Path, wheels: list[str]) -> str | None:
    """The carried wheels into ``site`` (``pip --no-index --no-deps``: nothing from the network); None, or why not."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--disable-pip-version-check", "--target", str(site), *wheels], capture_output=True, text=True)
    return None if done.returncode == 0 else _last_line(done.stderr or done.stdout)


def link_checkout(site: Path) -> None:
    """dynagen importable from this checkout without building it (a bare node may have no setuptools to build with):
    the folders pyproject.toml maps into the ``dynagen`` namespace (``package-dir``), linked under ``site``, and a
    dist-info holding its entry points, through which the registry finds the experiments."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package, folder in project["tool"]["setuptools"]["package-dir"].items():
        link = site.joinpath(*package.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(ROOT / folder, target_is_directory=True)
    info = site / f"dynagen-{project['project']['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: dynagen\nVersion: {project['project']['version']}\n")
    groups = {"console_scripts": project["project"]["scripts"], **project["project"]["entry-points"]}
    (info / "entry_points.txt").write_text("".join(f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
                                                   for group, points in groups.items()))


def find_packages(site: Path, env: dict[str, str]) -> tuple[dict[str, dict], list[str]]:
    """Probe every package, after installing the carried wheels and (where it is not installed) linking dynagen into
    ``site``."""
    notes = []
    wheels = sorted(str(path) for path in WHEELS.glob("*.whl"))
    if wheels:
        problem = install_wheels(site, wheels)
        notes.append(f"{len(wheels)} wheels from .whl/ " + (f"not installed: {problem}" if problem else f"installed into {site}"))
    found = {module: probe(module, env) for module in PACKAGES}
    dynagen = found["dynagen.platform.cli"]
    if "error" in dynagen and "'dynagen'" in dynagen["error"]:  # not installed (a missing dependency is another error)
        try:
            link_checkout(site)
        except (ImportError, OSError) as error:  # tomllib is Python 3.11+; a file system without symbolic links
            notes.append(f"dynagen is not installed and the checkout could not be linked: {error}")
        else:
            notes.append(f"dynagen is not installed: the checkout is linked into {site}")
            found["dynagen.platform.cli"] = probe("dynagen.platform.cli", env)
    return found, notes


def skip_reason(case: str, device: str, found: dict[str, dict]) -> str | None:
    """Why ``case`` cannot run with what this node has, or None."""
    def missing(module: str) -> str | None:
        return f"{PACKAGES[module]} does not import ({found[module]['error']})" if "error" in found[module] else None

    needs = ["dynagen.platform.cli"] + (["jax", "neural_tangents"] if case.startswith("gan") else ["torch"])
    needs += ["ray"] if case.endswith("-ray") else []
    for module in needs:
        if missing(module):
            return missing(module)
    if device == "cuda" and case.startswith("gan") and not found["jax"].get("gpu"):
        return "jax sees no GPU (its backend here is the CPU)"
    if device == "cuda" and not case.startswith("gan") and not found["torch"].get("gpu"):
        return "torch sees no CUDA device"
    return None


# --------------------------------------------------------------------------------------------
# One case, in its own process
# --------------------------------------------------------------------------------------------


class CaseFailed(Exception):
    pass


class GpuMemoryPeak:
    """The GPU's peak memory.used above its level at the start, read from ``nvidia-smi`` every 0.2 s: a Ray Train
    worker's allocations are in another process, so the whole GPU is watched (CUDA contexts included)."""

    def __init__(self):
        self.start = self.peak = self._used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    @staticmethod
    def _used() -> float:
        try:
            done = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"],
                                  capture_output=True, text=True)
        except OSError:  # no nvidia-smi: the column shows nan
            return float("nan")
        return float(done.stdout.strip().splitlines()[0]) if done.returncode == 0 and done.stdout.strip() else float("nan")

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._used())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak - self.start


def _dynagen(*args: str) -> None:
    from dynagen.platform import cli

    print(f"$ dynagen {' '.join(args)}", flush=True)
    code = cli.main(list(args))
    if code != 0:
        raise CaseFailed(f"dynagen {args[0]} exited with {code} (see the case's log)")


def _step_rows(storage: str, name: str):
    from dynagen.platform.results import read_results

    return read_results(storage, name, kind="step").to_pandas().sort_values("wall_time")


def training_case(case: str, device: str, size: str, storage: str) -> dict:
    """Train, resume with more steps, evaluate: through the CLI, on ``device``, locally or on Ray Train."""
    import torch

    from dynagen.platform.run import read_run_config

    experiment, where = case.split("-")
    spec = TRAINING[size][experiment]
    name, on_gpu = f"gpu-check-{case}", device == "cuda"
    # On the CPU one thread each: torch's default (all cores) made the local case 50 times slower on a shared 2-core machine
    launch = (["--local"] if where == "local" else ["--workers", "1"]) + (["--gpu"] if on_gpu else ["--cpus-per-worker", "1"])
    sets = [arg for value in spec["set"] for arg in ("--set", value)]
    watch = GpuMemoryPeak() if on_gpu and where == "ray" else None
    _dynagen("train", experiment, *launch, "--preset", spec["preset"], *sets, "--set", f"steps={spec['steps']}",
             "--checkpoint-every", str(spec["steps"]), "--storage", storage, "--name", name)
    if watch is not None:
        peak, peak_source = watch.stop(), "nvidia-smi"
    elif on_gpu:
        peak, peak_source = torch.cuda.max_memory_allocated() / 2**20, "torch allocator"
    else:
        peak, peak_source = None, None
    rows = _step_rows(storage, name)
    config = read_run_config(storage, name)
    timed = rows.iloc[1:-1] if len(rows) >= 4 else rows  # the first and last logged steps carry validations (SRVP)
    seconds = timed["wall_time"].iloc[-1] - timed["wall_time"].iloc[0]
    it_per_s = (timed["step"].iloc[-1] - timed["step"].iloc[0]) / seconds if seconds > 0 else float("nan")
    frames = config["seq_len"] if experiment == "srvp" else config["nt_cond"] + config["nt_pred"]
    losses = rows[spec["loss"]].dropna()

    resumed_after = time.time()
    _dynagen("train", experiment, *launch, "--resume", name, "--set", f"steps={spec['steps'] + spec['more']}",
             "--checkpoint-every", str(spec["steps"]), "--storage", storage)
    resumed_at = int(_step_rows(storage, name).query("wall_time >= @resumed_after")["step"].min())

    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    out = Path(storage) / name / "eval"
    _dynagen("evaluate", experiment, "--checkpoint", str(Path(storage) / name), *spec["evaluate"], "--option", f"device={device}",
             "--out", str(out))
    metrics = {key: value for key, value in json.loads((out / "metrics.json").read_text()).items() if not key.startswith("_")}
    evaluation = f"{len(metrics)} metrics on {device}" + (f", {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if on_gpu else "")
    return {"steps": f"{spec['steps']}+{spec['more']}", "it/s": it_per_s, "frames/s": it_per_s * config["batch_size"] * frames,
            "peak GPU MiB": peak, "loss_first": float(losses.iloc[0]), "loss_last": float(losses.iloc[-1]),
            "resumed_at": resumed_at, "resume_expected": spec["steps"], "evaluation": evaluation,
            "notes": ", ".join(filter(None, [f"batch {config['batch_size']}", "amp" if config.get("amp") and on_gpu else None,
                                             f"peak: {peak_source}" if peak_source else None]))}


def gan_case(case: str, size: str) -> dict:
    import jax

    from benchmarks.gan_ntk import time_step

    n = GAN_SIZES[size][case]
    ms, compile_s, peak = time_step("inf_ipm", n, GAN_STEPS[size])
    on_gpu = jax.default_backend() == "gpu"
    return {"steps": str(GAN_STEPS[size]), "it/s": 1000 / ms, "frames/s": None, "peak GPU MiB": peak if on_gpu else None,
            "evaluation": "-", "notes": f"inf_ipm N = M = {n}, compile {compile_s:.1f} s, {jax.default_backend()}"}


def seeds_case(size: str) -> dict:
    """Generator steps per second of a group of seeds, vmapped and seed by seed (one compiled program each)."""
    import jax

    from dynagen.models.gantk.experiment import GanNtkConfig
    from dynagen.models.gantk.flow import ParticleFlow, SeedFlows, vectorise_seeds
    from dynagen.models.gantk.targets import make_problem

    spec = GAN_SEEDS[size]
    flows, states = [], []
    for seed in range(spec["seeds"]):
        config = GanNtkConfig(arch="relu", loss="ipm", width=128, n_particles=spec["n"], n_targets=spec["n"],
                              lr=2.0 * spec["n"], lr_d=0.25, nb_d_steps=4, reset_d=True, seed=seed)
        source, targets = make_problem(config)
        flows.append(ParticleFlow(config, jax.numpy.asarray(targets.astype("float32"))))
        states.append(flows[-1].init(source.astype("float32"), jax.random.PRNGKey(seed)))
    rate = {}
    for vectorised in (True, False):
        group = SeedFlows(flows, states, vectorised=vectorised)
        jax.block_until_ready(group.advance(1))  # compiles
        start = time.perf_counter()
        jax.block_until_ready(group.advance(spec["steps"]))
        rate[vectorised] = spec["steps"] / (time.perf_counter() - start)
    backend = jax.default_backend()
    return {"steps": f"{spec['steps']} x {spec['seeds']} seeds", "it/s": rate[True], "frames/s": None, "peak GPU MiB": None,
            "evaluation": "-", "notes": f"vmapped {rate[True]:.1f} it/s, seed by seed {rate[False]:.1f} it/s "
            f"({rate[True] / rate[False]:.2f}x); {backend}: make demo's groups (2 seeds x 300 steps) "
            f"{'vmapped' if vectorise_seeds(backend, 2, 300) else 'seed by seed'}"}


def run_case(case: str, device: str, size: str, storage: str) -> dict:
    if case == "gan-ntk-seeds":
        return seeds_case(size)
    if case.startswith("gan"):
        return gan_case(case, size)
    return training_case(case, device, size, storage)


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def _cell(row: dict, column: str) -> str:
    if column == "loss first -> last":
        if "loss_first" not in row:
            return "-"
        return f"{row['loss_first']:.4g} -> {row['loss_last']:.4g} ({'down' if row['loss_last'] < row['loss_first'] else 'NOT down'})"
    if column == "resumed at":
        if "resumed_at" not in row:
            return "-"
        return f"step {row['resumed_at']} ({'ok' if row['resumed_at'] >= row['resume_expected'] else 'NOT from the checkpoint'})"
    value = row.get(column)
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def format_table(rows: list[dict]) -> str:
    cells = [[_cell(row, column) for column in COLUMNS] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(COLUMNS)]
    lines = [" | ".join(column.ljust(width) for column, width in zip(COLUMNS, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(line.rstrip() for line in lines)


def check(row: dict) -> str | None:
    """What a case that ran got wrong, or None: the loss must go down and the resume start from the checkpoint."""
    if "loss_first" in row and not row["loss_last"] < row["loss_first"]:
        return "loss did not decrease"
    if "resumed_at" in row and row["resumed_at"] < row["resume_expected"]:
        return f"resumed at step {row['resumed_at']}, before the checkpoint of step {row['resume_expected']}"
    return None


def write_atomically(path: Path, text: str) -> None:
    """Temp file + rename, as everything dynagen writes (platform/results.py's writer needs dynagen importable,
    which this script must not)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto", help="auto: cuda where torch sees a GPU")
    parser.add_argument("--size", choices=("full", "tiny"), help="default: full on cuda, tiny on cpu")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where the table is written (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--storage", help="keep the runs here (default: a temporary folder, removed)")
    parser.add_argument("--run-case", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_case:  # one case, in this (child) process
        Path(args.result).write_text(json.dumps(run_case(args.run_case, args.device, args.size, args.storage)))
        return 0

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="dynagen-gpu-check-"))
    site = work / "site"
    storage = Path(args.storage).resolve() if args.storage else work / "runs"
    logs = args.out.resolve().parent / f"{args.out.stem}_logs"  # kept: a failed case's log outlives the runs
    for folder in (storage, logs):
        folder.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # an embedded Ray on this node
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), str(ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    try:
        found, notes = find_packages(site, env)
        device = args.device if args.device != "auto" else ("cuda" if found["torch"].get("gpu") else "cpu")
        size = args.size or ("full" if device == "cuda" else "tiny")
        rows = []
        for case in args.cases:
            row = {"case": case, "device": device}
            reason = skip_reason(case, device, found)
            left = BUDGET_S - (time.monotonic() - started)
            if reason is None and left < 30:
                reason = f"the {BUDGET_S // 60}-minute budget is spent"
            if reason is not None:
                rows.append({**row, "status": "skipped", "notes": reason})
                continue
            log, result = logs / f"{case}.log", work / f"{case}.json"
            command = [sys.executable, "-m", "benchmarks.gpu_check", "--run-case", case, "--device", device, "--size", size,
                       "--storage", str(storage), "--result", str(result)]
            print(f"{case}: running on {device} ({size}), log {log}", flush=True)
            case_started = time.monotonic()
            with open(log, "w") as stream:
                try:
                    code = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                          timeout=min(CASE_TIMEOUT_S[size], left)).returncode
                except subprocess.TimeoutExpired:
                    code = None
            row["wall s"] = time.monotonic() - case_started
            if code is None or code != 0 or not result.exists():
                why = "timed out" if code is None else f"exit {code}: {_last_line(log.read_text(errors='replace'))}"
                rows.append({**row, "status": "failed", "notes": why})
                continue
            measured = json.loads(result.read_text())
            problem = check(measured)
            rows.append({**row, **measured, "status": "FAILED" if problem else "ok",
                         "notes": "; ".join(filter(None, [problem, measured.get("notes")]))})
        lines = [f"dynagen GPU acceptance check: {device}, {size} sizes, {time.monotonic() - started:.0f} s, python {sys.version.split()[0]}"]
        for module, info in found.items():
            what = f"{info['version']}" + (f" (GPU: {info['gpu']})" if info.get("gpu") else "") if "error" not in info else f"missing: {info['error']}"
            lines.append(f"  {PACKAGES[module]}: {what}")
        lines += [f"  {note}" for note in notes]
        ran = [row["case"] for row in rows if row["status"] in ("ok", "FAILED")]
        skipped = [f"{row['case']} ({row['notes']})" for row in rows if row["status"] == "skipped"]
        lines.append(f"  ran: {', '.join(ran) or 'nothing'}; skipped: {'; '.join(skipped) or 'nothing'}")
        text = "\n".join(lines + ["", format_table(rows)]) + "\n"
        print(text, end="")
        write_atomically(args.out.resolve(), text)
        print(f"table written to {args.out}")
        return 1 if any(row["status"] in ("failed", "FAILED") for row in rows) else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
