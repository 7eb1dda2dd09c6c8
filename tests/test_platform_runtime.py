"""A process's thread environment (platform/runtime.py): dynagen's XLA flags go in front of the user's own, and a
real XLA honours both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_limiting_threads_keeps_the_users_xla_flags_and_xla_honours_them(tmp_path):
    dump = tmp_path / "xla-dump"
    code = ("import os; from dynagen.platform.runtime import limit_threads\n"
            "limit_threads(1); limit_threads(1)  # a reused trial process applies it again\n"
            "print(os.environ['XLA_FLAGS']); import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
                              "XLA_FLAGS": f"--xla_dump_to={dump}"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[0] == f"--xla_cpu_multi_thread_eigen=false --xla_dump_to={dump}"  # each once
    assert any(path.name.endswith(".txt") for path in dump.iterdir())  # XLA read the user's flag behind dynagen's
