"""The dynagen.* namespace mapping works for wheel installs, not only the editable one tests run on."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_platform_folder_never_shadows_the_stdlib_module():
    assert not (ROOT / "platform" / "__init__.py").exists()
    import platform

    assert Path(platform.__file__).parent != ROOT / "platform"


def test_wheel_maps_the_three_folders_into_dynagen(tmp_path):
    # Build from a copy of the sources: setuptools leaves a build/ folder behind that later builds reuse.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "runs", "__pycache__", "*.egg-info"))
    # A new model package is discovered, not listed: a copy of one ships without editing pyproject.toml.
    shutil.copytree(source / "models" / "gantk", source / "models" / "newcomer")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("dynagen-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "dynagen/platform/cli.py" in names
    assert "dynagen/platform/__init__.py" not in names
    assert "dynagen/models/srvp/model.py" in names
    assert "dynagen/models/pde/model.py" in names
    assert "dynagen/models/gantk/experiment.py" in names
    assert "dynagen/models/newcomer/experiment.py" in names
    assert "dynagen/search_spaces/activations.yaml" in names
    assert "dynagen/deploy/slurm/dynagen.sbatch" in names  # `dynagen slurm submit` finds its job script
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "dynagen = dynagen.platform.cli:main" in text
    for experiment in ("srvp", "pde", "gan-ntk"):
        assert f"{experiment} = dynagen.models." in text
