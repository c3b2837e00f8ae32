"""Paths from the user, made absolute once at the edge (flags, settings, the demo).

A path the user types is relative to where they stand; the notebooks run in
the run directory, so nothing relative may travel further than the edge.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["absolute", "absolute_log_source", "LOG_SOURCE_PREFIXES"]

# log sources that name a container or deployment, not a file
LOG_SOURCE_PREFIXES = ("docker:", "k8s:", "kubectl:", "command:")


def absolute(path: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """``path`` with ``~`` expanded, relative to ``base`` (default: the working directory), made absolute."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = Path(base or os.getcwd()) / p
    return Path(os.path.normpath(p))


def absolute_log_source(source: str, base: str | os.PathLike | None = None) -> str:
    """A log source as ``jobrunbook run`` takes it: a file (made absolute), or docker:/k8s:/command: as is."""
    if not source or source.startswith(LOG_SOURCE_PREFIXES):
        return source
    if source.startswith("file:"):
        return "file:" + str(absolute(source[5:], base))
    return str(absolute(source, base))
