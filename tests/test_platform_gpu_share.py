"""Many trials per GPU: what a trial process with a fractional ``resources.gpu`` is given (README, "Many trials per
GPU"). The session's Ray has one logical GPU (tests/conftest.py), so Ray really schedules the shares; there is no
CUDA device here, so torch's per-process fraction is checked only where one is visible."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dynagen.platform import registry
from dynagen.platform.results import read_results
from dynagen.platform.runtime import gpu_memory_fraction, gpu_share_problem, jax_gpu_memory_env
from dynagen.platform.sweep import load_sweep_spec, run_sweep
from tests.experiments import TOY, TOY_JAX

registry.register(TOY)
registry.register(TOY_JAX)
ROOT = Path(__file__).resolve().parents[1]


def test_a_share_limits_the_allocators_to_most_of_it_and_whole_gpus_are_left_alone():
    assert gpu_memory_fraction(0.25) == pytest.approx(0.225) and gpu_memory_fraction(0.5) == pytest.approx(0.45)
    assert 4 * gpu_memory_fraction(0.25) < 1  # four packed trials leave room for their CUDA contexts
    assert [gpu_memory_fraction(share) for share in (0, 1, 2)] == [None, None, None]
    assert jax_gpu_memory_env(0.5) == {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45", "XLA_CLIENT_MEM_FRACTION": "0.45",
                                       "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}
    assert jax_gpu_memory_env(1) == {} and jax_gpu_memory_env(0) == {}
    assert [gpu_share_problem(gpu) for gpu in (0, 0.1, 0.5, 1, 2, 8)] == [None] * 6
    assert "got 1.5; allowed:" in gpu_share_problem(1.5) and "got 2.5; allowed:" in gpu_share_problem(2.5)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


def test_jax_is_limited_before_its_import_and_a_process_that_imported_it_unlimited_is_refused():
    limited = _python("import os; from dynagen.platform.backends import BACKENDS; limit = BACKENDS['jax'].limit_gpu_memory\n"
                      "print(limit(0.5)); import jax; print(limit(0.5))  # the reused process: same share\n"
                      "print(os.environ['XLA_PYTHON_CLIENT_MEM_FRACTION'], os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'])")
    assert limited.returncode == 0, limited.stderr
    assert limited.stdout.split() == ["0.45", "0.45", "0.45", "true"]
    late = _python("import jax; from dynagen.platform.backends import BACKENDS; BACKENDS['jax'].limit_gpu_memory(0.5)")
    assert late.returncode != 0 and "jax was imported in this process before its GPU share 0.5" in late.stderr


@pytest.mark.parametrize("experiment", ["toy-jax", "toy"])
def test_each_trial_of_a_fractional_gpu_sweep_is_given_its_share(ray_cluster, tmp_path, experiment):
    # Two trials at half a GPU each, both at once on the one (logical) GPU; each in a process Ray started for it.
    spec_file = tmp_path / "half_gpu.yaml"
    spec_file.write_text(yaml.safe_dump({
        "experiment": experiment, "fixed": {"steps": 4, "log_every": 2, "report_gpu_share": True}, "seeds": [0, 1], "metric": "loss",
        "resources": {"cpu": 1, "gpu": 0.5}, "max_concurrent": 2, "checkpoint_every": 0}))
    storage = str(tmp_path / "runs")
    run_sweep(load_sweep_spec(str(spec_file)), storage=storage)
    summary = read_results(storage, "half_gpu", kind="summary").to_pandas()
    assert len(summary) == 2 and set(summary["status"]) == {"completed"}
    assert (summary["ray_gpu"] == 0.5).all()  # Ray placed each trial on half of the GPU
    if experiment == "toy-jax":
        assert (summary["xla_mem_fraction"] == 0.45).all() and (summary["xla_preallocate"] == 1).all()
    else:  # torch: its allocator is limited where CUDA is there; jax's environment is not touched
        import torch

        expected = 0.45 if torch.cuda.is_available() else math.nan
        assert summary["cuda_memory_fraction"].tolist() == pytest.approx([expected] * 2, nan_ok=True)
        assert summary["xla_mem_fraction"].isna().all()
