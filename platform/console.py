"""What a researcher sees: a short header, progress, one line per ended trial, the final table.

Everything else (Ray's, Tune's, Ray Train's, TensorFlow's, XLA's and absl's messages) goes to log files in the
run or sweep folder, ``<folder>/logs/``; ``dynagen ... -v`` shows it on the console as before:

* the driver: Ray's Python loggers (``ray``, ``ray.tune``, ``ray.train``...) write to ``logs/driver.log``, Ray is
  started with ``log_to_driver=False`` (workers' output is not forwarded) and Tune's own reporter is silent
  (``RAY_AIR_NEW_OUTPUT=0`` with ``verbose=0``: the legacy reporter honours ``verbose=0``, the new one still prints
  its configuration box);
* a worker (a Ray Train rank, a Tune trial) points its file descriptors 1 and 2 at ``logs/<rank or trial>.log``
  while it trains (:func:`output_to`): Python's and C++ libraries' output lands there alike.

Progress crosses the process boundary as a small file: rank 0's :class:`~dynagen.platform.context.Progress`
writes ``progress.json`` into the run folder at most once a second, and the driver's :class:`RunMonitor` shows
it: a live bar on a terminal (tqdm), on a pipe one line at most every :data:`PIPE_EVERY_S` seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

LOG_DIR = "logs"
DRIVER_LOG = "driver.log"
TRIAL_LOG = "trial.log"  # a Tune trial's output, in its run folder's logs/
PROGRESS_FILE = "progress.json"
PIPE_EVERY_S = 10.0  # on a pipe (CI logs, `| tee`), a progress line at most this often
RAY_LOGGERS = ("ray", "absl", "jax", "tensorflow")


def log_path(folder: Path, name: str) -> Path:
    return Path(folder) / LOG_DIR / name


@contextlib.contextmanager
def quiet_driver(folder: Path) -> Iterator[Path]:
    """While the block runs: the driver's Python logging (Ray's, Tune's, absl's...) into ``<folder>/logs/driver.log``
    and Tune's reporter silent; entered before Ray starts, which then runs with ``configure_logging=False`` (it
    clears the "ray" logger's handlers; its records then propagate to the root logger's file handler). Everything
    is put back afterwards (``cli.main`` may run in a longer-lived process: a notebook, the tests)."""
    import ray  # noqa: F401  (importing Ray sets up the "ray" logger: replaced below, restored after)

    path = log_path(folder, DRIVER_LOG)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in RAY_LOGGERS]
    saved = root.handlers[:], [(logger.handlers[:], logger.propagate) for logger in loggers], os.environ.get("RAY_AIR_NEW_OUTPUT")
    root.handlers = [handler]
    for logger in loggers:
        logger.handlers, logger.propagate = [], True
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield path
    finally:
        root.handlers = saved[0]
        for logger, (handlers, propagate) in zip(loggers, saved[1]):
            logger.handlers, logger.propagate = handlers, propagate
        if saved[2] is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved[2]
        handler.close()


def tune_loggers() -> list[Any]:
    """Tune's logger callbacks, without its TensorBoard one: that one writes per-trial event files into Ray's
    session folder and makes Tune suggest ``tensorboard --logdir`` there, while the runs' own TensorBoard logs
    are in their run folders (``<run>/tensorboard``). The JSON and CSV loggers stay (Tune's ResultGrid reads
    their files); ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS`` stops Tune adding the three defaults itself."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    return [JsonLoggerCallback(), CSVLoggerCallback()]


@contextlib.contextmanager
def output_to(path: Path | None) -> Iterator[Any]:
    """This process's stdout and stderr (file descriptors 1 and 2, so C++ libraries' output too) appended to
    ``path`` while the block runs; None: unchanged (``-v``). Yields a stream on the original stdout (the
    console) for what should still be seen there."""
    if path is None:
        yield sys.stdout
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    with open(path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield terminal
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)
            terminal.close()


# --------------------------------------------------------------------------------------------
# Progress: the text of one line, and the driver's view of a run's progress file
# --------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_text(state: Mapping[str, Any]) -> str:
    """``step 50/300 | sinkhorn 0.2 | ... | 81.8 steps/s | ETA 0:00:03`` (and the phase running, if any); a state
    without a step (``dynagen evaluate``: a phase outside training) shows the phase alone."""
    total = state.get("total")
    parts = [] if state.get("step") is None else [f"step {state['step']}{f'/{total}' if total else ''}"]
    parts += [f"{k} {v:.4g}" for k, v in list(state.get("metrics", {}).items())[:4]]
    if state.get("steps_per_s"):
        parts.append(f"{state['steps_per_s']:.2f} steps/s")
    if state.get("eta_s") is not None and not state.get("final"):
        parts.append(f"ETA {duration(state['eta_s'])}")
    phase = state.get("phase")
    if phase:
        eta = f", ETA {duration(phase['eta_s'])}" if phase.get("eta_s") is not None else ""
        parts.append(f"{phase['name']} {phase['done']}/{phase['total']}{eta}")
    return " | ".join(parts)


class ProgressDisplay:
    """Shows progress states: a tqdm bar on a terminal, else a line at most every ``every_s`` seconds (and the
    final state always)."""

    def __init__(self, label: str, every_s: float = PIPE_EVERY_S, terminal: bool | None = None, stream: Any = None):
        self.label, self.every_s = label, every_s
        self.stream = stream
        self.terminal = (stream or sys.stdout).isatty() if terminal is None else terminal
        self._bar = None
        self._last_print = 0.0
        self._last_text = ""
        self._pending: Mapping[str, Any] | None = None  # the last state given, if not yet written (pipe)

    def show(self, state: Mapping[str, Any]) -> None:
        text = progress_text(state)
        self._pending = state
        if self.terminal:
            from tqdm import tqdm

            # the bar counts steps; a state without one (a phase outside training) counts the phase's items
            phase = state.get("phase") or {}
            done, total, unit = ((state["step"], state.get("total"), "step") if state.get("step") is not None
                                 else (phase.get("done", 0), phase.get("total"), "item"))
            if self._bar is None:
                self._bar = tqdm(total=total or None, desc=self.label, unit=unit, dynamic_ncols=True, leave=True,
                                 file=self.stream or sys.stderr)
            self._bar.total = total or self._bar.total
            self._bar.n = min(done, self._bar.total) if self._bar.total else done
            # the step count is the bar's own; a phase's text stays whole (its ETA)
            postfix = text if state.get("step") is None else (text.split(" | ", 1)[1] if " | " in text else "")
            self._bar.set_postfix_str(postfix, refresh=True)
            return
        now = time.monotonic()
        if text == self._last_text or (not state.get("final") and now - self._last_print < self.every_s):
            return
        self._write(text, now)

    def _write(self, text: str, now: float) -> None:
        self._last_print, self._last_text, self._pending = now, text, None
        # a stream's write, not print(): Ray Train's patched print() would echo the line twice on the driver
        stream = self.stream or sys.stdout
        stream.write(f"[{self.label}] {text}\n")
        stream.flush()

    def close(self) -> None:
        """The bar closed; on a pipe, the last state shown if the rate limit held it back (an evaluation's final
        count, the state a failed run stopped at)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._pending is not None and progress_text(self._pending) != self._last_text:
            self._write(progress_text(self._pending), time.monotonic())
        self._pending = None


def write_progress(run_dir: Path, state: Mapping[str, Any]) -> None:
    from dynagen.platform.results import write_bytes_atomically

    write_bytes_atomically(str(run_dir), PROGRESS_FILE, json.dumps(state).encode())


def read_progress(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / PROGRESS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class RunMonitor:
    """A driver thread showing a run's ``progress.json`` (written by its rank 0) while the run trains."""

    def __init__(self, run_dir: Path, label: str, poll_s: float = 1.0):
        self.run_dir, self.poll_s = Path(run_dir), poll_s
        self.display = ProgressDisplay(label)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="dynagen-progress")
        self._seen: str | None = None

    def __enter__(self) -> "RunMonitor":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()  # the final state
        self.display.close()

    def _poll(self) -> None:
        state = read_progress(self.run_dir)
        if state is not None and json.dumps(state) != self._seen:
            self._seen = json.dumps(state)
            self.display.show(state)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._poll()


def header(lines: Mapping[str, Any]) -> None:
    """``key: value | key: value`` on one line, the Nones left out."""
    print(" | ".join(f"{key} {value}" for key, value in lines.items() if value is not None), flush=True)


# --------------------------------------------------------------------------------------------
# Sweeps: a live status, one line per ended trial
# --------------------------------------------------------------------------------------------

_live_bars: list[Any] = []


def say(text: str) -> None:
    """One line on the console, above a live bar if one is showing."""
    if _live_bars:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        print(text, flush=True)


STATUS_ORDER = ("done", "running", "pending", "failed", "stopped")
ENDED_AS = {"completed": "done", "stopped": "stopped", "diverged": "failed", "error": "failed"}  # summary status -> shown as


def sweep_status_text(counts: Mapping[str, int], best: str | None, eta_s: float | None) -> str:
    parts = [f"{name} {counts.get(name, 0)}" for name in STATUS_ORDER]
    if best:
        parts.append(f"best {best}")
    if eta_s is not None:
        parts.append(f"ETA {duration(eta_s)}")
    return " | ".join(parts)


def _sweep_status_class():
    import ray.tune

    class SweepStatus(ray.tune.Callback):
        """The sweep's status on the driver: trials done / running / pending / failed / stopped, the best value of
        the sweep's metric so far and an ETA (from the mean duration of ended trials): a live bar on a terminal,
        on a pipe a line at most every ``every_s`` seconds when it changed."""

        def __init__(self, total: int, metric: str, mode: str, outcomes: Mapping[str, Any], every_s: float = 30.0,
                     runs_per_trial: int = 1):
            self.total, self.metric, self.mode, self.every_s = total, metric, mode, every_s
            # trial id -> status, or a vectorised group's statuses (one per seed), filled by the SummaryCallback (platform/run.py)
            self.outcomes = outcomes
            self.runs_per_trial = runs_per_trial  # runs (seeds) per Tune trial: the counts are of runs
            self.terminal = sys.stderr.isatty()
            self._bar = None
            self._start = time.monotonic()
            self._last_print = time.monotonic()
            self._last_text = ""

        def _counts(self, trials) -> dict[str, int]:
            counts = dict.fromkeys(STATUS_ORDER, 0)
            for trial in trials:
                outcome = self.outcomes.get(trial.trial_id)
                if outcome is not None:
                    for status in (outcome,) if isinstance(outcome, str) else outcome:
                        counts[ENDED_AS[status]] += 1
                elif trial.status in ("RUNNING", "PAUSED"):
                    counts["running"] += self.runs_per_trial
                else:
                    counts["pending"] += self.runs_per_trial
            counts["pending"] += max(self.total - len(trials) * self.runs_per_trial, 0)
            return counts

        def _best(self, trials) -> str | None:
            values = [t.last_result.get(self.metric) for t in trials if t.status == "TERMINATED" and t.last_result]
            values = [float(v) for v in values if isinstance(v, (int, float)) and v == v]
            if not values:
                return None
            return f"{self.metric} {(min if self.mode == 'min' else max)(values):.4g}"

        def on_step_end(self, iteration, trials, **info):
            counts = self._counts(trials)
            ended = counts["done"] + counts["failed"] + counts["stopped"]
            elapsed = time.monotonic() - self._start
            eta = elapsed / ended * (self.total - ended) if ended else None
            text = sweep_status_text(counts, self._best(trials), eta)
            if self.terminal:
                from tqdm import tqdm

                if self._bar is None:
                    self._bar = tqdm(total=self.total, desc="sweep", unit="trial", dynamic_ncols=True, file=sys.stderr)
                    _live_bars.append(self._bar)
                self._bar.n = ended
                self._bar.set_postfix_str(text, refresh=True)
                return
            now = time.monotonic()
            changed = text.split(" | ETA")[0]  # a new ETA alone is no news
            if changed != self._last_text and now - self._last_print >= self.every_s:
                self._last_print, self._last_text = now, changed
                say(f"[sweep] {text}")

        def on_experiment_end(self, trials, **info):
            if self._bar is not None:
                self._bar.close()
                _live_bars.remove(self._bar)
                self._bar = None

    return SweepStatus


def sweep_status(total: int, metric: str, mode: str, outcomes: Mapping[str, Any], runs_per_trial: int = 1):
    """The sweep's live status over ``total`` runs (Tune trials x ``runs_per_trial``)."""
    return _sweep_status_class()(total, metric, mode, outcomes, runs_per_trial=runs_per_trial)
