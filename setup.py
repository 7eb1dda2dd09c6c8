"""Package discovery for the ``dynagen`` namespace (the rest of the build is declared in pyproject.toml).

The repository's top-level folders are mapped into ``dynagen`` by ``package-dir`` (pyproject.toml);
``find_packages`` finds every package under models/ (and deploy/), so a new ``models/<name>/`` (with its
``__init__.py``) ships without editing a list. platform/ has no ``__init__.py`` on purpose (it would
shadow the stdlib ``platform`` from the repository root), so it is named here.
"""

from setuptools import find_namespace_packages, find_packages, setup

MODELS = [f"dynagen.{name}" for name in find_packages(include=["models", "models.*"])]
# deploy/'s folders hold only data (the SLURM job script), so they are found as namespace packages.
DEPLOY = [f"dynagen.{name}" for name in find_namespace_packages(include=["deploy", "deploy.*"])]

setup(packages=["dynagen.platform", "dynagen.search_spaces", *MODELS, *DEPLOY])
