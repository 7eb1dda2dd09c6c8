"""The GPU acceptance check (benchmarks/gpu_check.py) run on the CPU at its tiny sizes, so that it does not rot: its
table says which cases ran, that their loss fell, that the resumed run started from the checkpoint and that the
evaluation ran; cases whose libraries do not import are skipped with the reason. A node where neural-tangents does
not import (jax 0.11 is too new for it) is made by a ``neural_tangents`` package that raises on import, ahead of the
installed one on PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check(tmp_path: Path, *args: str, pythonpath: str = "") -> tuple[subprocess.CompletedProcess, dict[str, dict[str, str]], str]:
    out = tmp_path / "table.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [pythonpath, str(ROOT)])), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out", str(out), *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=900)
    text = out.read_text()
    assert text in done.stdout  # the file holds the table that was printed
    lines = text.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("case ")):]  # header, rule, one row per case
    cells = [[cell.strip() for cell in line.split(" | ")] for line in (table[0], *table[2:])]
    return done, {row[0]: dict(zip(cells[0], row)) for row in cells[1:]}, text


def test_the_cases_run_on_the_cpu_and_missing_libraries_are_skipped_with_the_reason(tmp_path):
    broken = tmp_path / "broken" / "neural_tangents"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('neural-tangents 0.6.5 needs an older jax (made by the test)')\n")
    done, rows, text = _gpu_check(tmp_path, "--device", "cpu", "--cases", "srvp-ray", "pde-local", "gan-ntk-500",
                                  pythonpath=str(broken.parent))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "cpu, tiny sizes" in text and "ran: srvp-ray, pde-local; skipped: gan-ntk-500 (neural-tangents does not import" in text
    for case in ("srvp-ray", "pde-local"):  # Ray Train and --local, SRVP and PDE
        row = rows[case]
        assert row["status"] == "ok" and row["device"] == "cpu"
        assert row["loss first -> last"].endswith("(down)")
        first, last = (float(value) for value in row["loss first -> last"].split(" (")[0].split(" -> "))
        assert last < first
        assert row["resumed at"].endswith("(ok)") and int(row["resumed at"].split()[1]) >= (30 if case == "srvp-ray" else 150)
        assert row["evaluation"].endswith("metrics on cpu") and int(row["evaluation"].split()[0]) > 0
        assert float(row["it/s"]) > 0 and float(row["frames/s"]) > float(row["it/s"])  # several frames per clip
    assert rows["gan-ntk-500"]["status"] == "skipped"
    assert "neural-tangents does not import (ImportError: neural-tangents 0.6.5 needs an older jax" in rows["gan-ntk-500"]["notes"]
    assert "neural-tangents: missing:" in text


def test_asked_for_cuda_where_there_is_none_every_case_is_skipped_with_the_reason(tmp_path):
    done, rows, text = _gpu_check(tmp_path, "--device", "cuda", "--cases", "srvp-ray", "gan-ntk-10000")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ran: nothing" in text
    assert rows["srvp-ray"]["status"] == "skipped" and rows["srvp-ray"]["notes"] == "torch sees no CUDA device"
    assert rows["gan-ntk-10000"]["status"] == "skipped"
    assert rows["gan-ntk-10000"]["notes"] == "jax sees no GPU (its backend here is the CPU)"


def test_the_gan_cases_run_on_the_cpu(tmp_path):
    # GAN(TK)²'s step timing and the vectorised-seeds comparison (both programs of a group, and which one
    # vectorise_seeds picks on this backend)
    done, rows, text = _gpu_check(tmp_path, "--device", "cpu", "--cases", "gan-ntk-500", "gan-ntk-seeds")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ran: gan-ntk-500, gan-ntk-seeds" in text
    assert rows["gan-ntk-500"]["status"] == "ok" and float(rows["gan-ntk-500"]["it/s"]) > 0
    assert "inf_ipm N = M = 64" in rows["gan-ntk-500"]["notes"]
    seeds = rows["gan-ntk-seeds"]
    assert seeds["status"] == "ok" and seeds["steps"] == "2 x 2 seeds" and float(seeds["it/s"]) > 0
    assert "seed by seed" in seeds["notes"] and seeds["notes"].endswith("cpu: make demo's groups (2 seeds x 300 steps) seed by seed")
