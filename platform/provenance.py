"""What produced a run: ``provenance.json`` in every run and trial folder.

Two numbers in one results table can only be compared when one knows what produced each: the code (dynagen's
version, its git commit and whether the checkout had uncommitted changes), the libraries, the machine, the
command line, the config (as a hash of the resolved config) and the data. Everything here is read without
importing the heavy libraries (versions from ``importlib.metadata``, GPUs from ``nvidia-smi``), so writing it
costs milliseconds in a worker that has not imported torch or jax yet.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform as stdlib_platform  # this module lives in dynagen.platform; the name is the stdlib's
import re
import shutil
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

PROVENANCE_FILE = "provenance.json"
PACKAGES = ("torch", "jax", "jaxlib", "neural-tangents", "ray", "numpy", "pyarrow")
# Summary-row columns naming the code that produced a row (platform/results.py)
VERSION_COLUMN, COMMIT_COLUMN = "dynagen_version", "git_commit"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    if shutil.which("git") is None:
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code() -> dict[str, Any]:
    """dynagen's version and, when it runs from a git checkout (an editable install), the commit and dirty flag."""
    root = Path(__file__).resolve().parents[1]  # platform/ sits at the checkout's root
    commit = _git(root, "rev-parse", "HEAD") if (root / ".git").exists() else None
    dirty = None
    if commit is not None:
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
        dirty = bool(status) if status is not None else None
    return {"dynagen": _version("dynagen"), "git_commit": commit, "git_dirty": dirty}


def _gpus() -> dict[str, Any] | None:
    """Name, count, driver and CUDA version of the GPUs ``nvidia-smi`` sees, or None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        listing = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [line.split(", ") for line in listing.stdout.strip().splitlines() if line.strip()]
    if listing.returncode != 0 or not rows:
        return None
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header.stdout)
    return {"names": [row[0] for row in rows], "count": len(rows), "driver": rows[0][-1], "cuda": cuda.group(1) if cuda else None}


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """The libraries and the machine (the same for every run of this process)."""
    return {
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in PACKAGES},
        "os": f"{stdlib_platform.system()} {stdlib_platform.release()} ({stdlib_platform.machine()})",
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "gpus": _gpus(),
    }


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the resolved config as canonical JSON: equal configs, equal hashes."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def started(command: list[str], config: Mapping[str, Any], data_source: str, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The document written when a run starts (``end_time`` null). A resumed run keeps what its earlier
    sessions recorded under ``earlier_sessions``."""
    document = {**code(), **environment(), "command": list(command), "config_sha256": config_hash(config),
                "data_source": data_source, "start_time": _now(), "end_time": None, "status": None}
    if previous:
        earlier = [*previous.get("earlier_sessions", []), {k: v for k, v in previous.items() if k != "earlier_sessions"}]
        document["earlier_sessions"] = earlier
    return document


def ended(document: Mapping[str, Any], status: str) -> dict[str, Any]:
    return {**document, "end_time": _now(), "status": status}


def summary_columns() -> dict[str, str | None]:
    """The code columns of a summary row."""
    found = code()
    return {VERSION_COLUMN: found["dynagen"], COMMIT_COLUMN: found["git_commit"]}
