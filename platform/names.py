"""User-given names that become paths: one validator, one resolver.

A run id, ``--name``, a sweep's ``name:``, the sweep argument of ``results``/``report`` and a packaged
search-space name each become one path component under a root (the storage root, the package's
search-space folder). Shared clusters pass such names between people and scripts, so a name is
letters, digits, ``.``, ``_`` and ``-`` only, starting with a letter, digit or ``_`` (a leading ``.`` would hide it
among the platform's temp files, a leading ``-`` reads as an option), at most :data:`MAX_LENGTH` characters (so
never ``.`` or ``..``), and the path it makes is checked to lie inside its root after resolution (symbolic links
included, for local roots).
"""

from __future__ import annotations

import os
import re

from dynagen.platform.configs import UsageError

MAX_LENGTH = 128
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
ALLOWED = f"letters, digits, '.', '_' and '-' (first a letter, digit or '_'), 1 to {MAX_LENGTH} characters"


def name_problem(name: object) -> str | None:
    """What makes ``name`` no safe single path component (``<problem>; allowed: ...``), or None."""
    if not isinstance(name, str) or not name:
        return f"got {name!r}; allowed: {ALLOWED}"
    shown = name if len(name) <= 40 else f"{name[:37]}..."
    if len(name) > MAX_LENGTH:
        return f"{len(name)} characters ({shown!r}); allowed: {ALLOWED}"
    if name in (".", "..") or not _NAME.fullmatch(name):
        return f"got {shown!r}; allowed: {ALLOWED}"
    return None


def check_name(name: object, field: str) -> str:
    """``name`` if it is a safe single path component, else a :class:`UsageError` naming ``field``."""
    problem = name_problem(name)
    if problem is not None:
        raise UsageError(f"{field}: {problem}")
    return name


def inside(root: str, *names: str, field: str) -> str:
    """``root/name/...`` for validated names, proven to stay inside ``root`` (a local path or a URI's path)."""
    for name in names:
        check_name(name, field)
    path = "/".join([root.rstrip("/"), *names])
    if "://" not in root:
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
        if os.path.commonpath([real_root, real]) != real_root:
            raise UsageError(f"{field}: {'/'.join(names)!r} resolves outside {root} (a symbolic link?); allowed: paths inside it")
    return path
