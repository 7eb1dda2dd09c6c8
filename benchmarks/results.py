"""Results at scale: ``dynagen results`` on N synthetic trials, before and after compaction.

Each trial is written through the real :class:`ResultsWriter` as a sweep trial writes it: 100 step
rows (two metrics) in flushes of ``--flush-rows`` rows, then its summary row, so a trial leaves
``100 / flush_rows + 1`` files. Per N: files written, seconds of ``dynagen results SWEEP --metric loss``
(the console script, start-up included) on the small files (up to ``--uncompacted-up-to`` trials: it
grows with the file count), seconds of :func:`compact_results`, files left, and ``dynagen results``
again on the compacted dataset.

    python -m benchmarks.results [--trials 100 1000 10000] [--flush-rows 50]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dynagen.platform.results import ResultsWriter, compact_results

DYNAGEN = str(Path(sys.executable).with_name("dynagen"))
STEPS = 100


def write_trials(storage: str, sweep: str, n: int, flush_rows: int) -> None:
    for index in range(n):
        activation = ("relu", "gelu", "erf", "sigmoid")[index % 4]
        seed = index // 4
        config = {"activation": activation, "lr": 0.1, "width": 128, "seed": seed}
        writer = ResultsWriter(storage, sweep, "toy", f"trial-{index:05d}", config, seed, flush_rows=flush_rows, flush_seconds=1e9)
        for step in range(STEPS):
            writer.log_step(step, {"loss": 1.0 / (step + 1) + 0.01 * seed, "sinkhorn": 0.5 / (step + 1)})
        writer.write_summary("completed", STEPS - 1, {"loss": 0.01 + 0.01 * seed, "sinkhorn": 0.005})


def time_results(storage: str, sweep: str) -> float:
    start = time.perf_counter()
    subprocess.run([DYNAGEN, "results", sweep, "--storage", storage, "--metric", "loss"], check=True, capture_output=True)
    return time.perf_counter() - start


def count_files(storage: str, sweep: str) -> int:
    return sum(1 for _ in (Path(storage) / sweep / "results").rglob("*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--flush-rows", type=int, default=50)
    parser.add_argument("--uncompacted-up-to", type=int, default=2000, help="time `results` on the small files up to this N")
    args = parser.parse_args()
    print(f"{'trials':>7} {'files':>7} {'write s':>8} {'results s':>10} {'compact s':>10} {'files after':>11} {'results s after':>16}")
    for n in args.trials:
        with tempfile.TemporaryDirectory(prefix="dynagen-results-bench-") as storage:
            start = time.perf_counter()
            write_trials(storage, "bench", n, args.flush_rows)
            write_s, files = time.perf_counter() - start, count_files(storage, "bench")
            before = f"{time_results(storage, 'bench'):>10.1f}" if n <= args.uncompacted_up_to else f"{'-':>10}"
            start = time.perf_counter()
            compact_results(storage, "bench")
            compact_s = time.perf_counter() - start
            after = time_results(storage, "bench")
            print(f"{n:>7} {files:>7} {write_s:>8.1f} {before} {compact_s:>10.1f} {count_files(storage, 'bench'):>11} {after:>16.1f}", flush=True)


if __name__ == "__main__":
    main()
