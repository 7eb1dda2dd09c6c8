"""``neural_tangents`` without TensorFlow: its ``experimental`` subpackage is loaded on first use only.

neural-tangents 0.6.5's ``__init__`` runs ``from . import experimental``, whose only content
(``empirical_ntk_fn_tf``: NTKs of TensorFlow models through jax2tf / tf2jax) imports TensorFlow: 4-5 s
of every process that imports neural_tangents (every sweep trial), for code dynagen never calls.

Python looks a module up in ``sys.modules`` before loading it (the import system's module cache), so
a placeholder put there first is what ``from . import experimental`` binds; its module-level
``__getattr__`` (PEP 562) imports the real subpackage, TensorFlow included, at its first attribute
access, so ``nt.experimental.empirical_ntk_fn_tf`` still works for whoever asks for it.
(``importlib.util.LazyLoader`` cannot do this: the import system reads ``__spec__`` of the cached
module, which makes a lazy module load at once.) Import neural_tangents through this module.
"""

from __future__ import annotations

import importlib
import sys
import types

EXPERIMENTAL = "neural_tangents.experimental"


def _defer_experimental() -> None:
    if "neural_tangents" in sys.modules or EXPERIMENTAL in sys.modules:
        return  # already imported (its experimental part with it): nothing left to save
    placeholder = types.ModuleType(EXPERIMENTAL, "neural_tangents.experimental, imported on first attribute access")

    def __getattr__(attribute: str):
        if attribute.startswith("__"):  # inspect / pickle probe __file__, __path__...: not a use, no TensorFlow
            raise AttributeError(attribute)
        if sys.modules.get(EXPERIMENTAL) is placeholder:
            del sys.modules[EXPERIMENTAL]
        return getattr(importlib.import_module(EXPERIMENTAL), attribute)

    placeholder.__getattr__ = __getattr__
    sys.modules[EXPERIMENTAL] = placeholder


_defer_experimental()

import neural_tangents  # noqa: E402  (after the placeholder is in place)
from neural_tangents import stax  # noqa: E402

__all__ = ["neural_tangents", "stax"]
