"""The run directory: its name and its layout (its JSON records: jobrunbook.record).

    outputs/<UTC YYYYmmddTHHMMSSZ>-<alertname>-<queue>-<fp8>/
        alert.json  params.json  status.json  report.html  rca.md
        notebooks/NN_<section>.ipynb  findings/NN_<section>.json  charts/*.png

The name is made only of ``[A-Za-z0-9._-]`` whatever the labels hold.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

from jobrunbook._exceptions import ConfigError, NotFound

__all__ = [
    "make_run_id",
    "safe_component",
    "create_run_dir",
    "discover_notebooks",
    "RUN_STATES",
    "SECTION_STATES",
]

RUN_STATES = ("queued", "running", "done", "failed", "resolved")
SECTION_STATES = ("pending", "running", "ok", "degraded", "failed", "timeout", "skipped")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NOTEBOOK = re.compile(r"^(\d\d)_([A-Za-z0-9_]+)\.ipynb$")


def safe_component(text: str, *, limit: int = 40, fallback: str = "none") -> str:
    """Reduce any string to ``[A-Za-z0-9._-]`` (no leading dot, no ``..``), at most ``limit`` chars."""
    ascii_text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode()
    out = _UNSAFE.sub("_", ascii_text).strip("._-")
    out = re.sub(r"\.{2,}", ".", out)[:limit].strip("._-")
    return out or fallback


def make_run_id(alertname: str, queue: str, fingerprint: str, *, now: datetime) -> str:
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    fp = safe_component(fingerprint, limit=8, fallback="00000000")
    return f"{stamp}-{safe_component(alertname)}-{safe_component(queue)}-{fp}"


def create_run_dir(outputs_dir: Path, run_id: str) -> Path:
    """Create ``outputs_dir/run_id`` and its sub-directories; a clash gets a ``.2``, ``.3`` suffix."""
    if _UNSAFE.search(run_id) or run_id.startswith("."):
        raise ConfigError(f"unsafe run id {run_id!r}")
    outputs_dir = Path(outputs_dir)
    outputs_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 100):
        path = outputs_dir / (run_id if n == 1 else f"{run_id}.{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        for sub in ("notebooks", "findings", "charts"):
            (path / sub).mkdir()
        return path
    raise ConfigError(f"too many runs named {run_id} in {outputs_dir}")


def discover_notebooks(notebooks_dir: Path) -> list[tuple[str, Path]]:
    """``[("00_alert", path), ...]`` sorted by number, from ``notebooks_dir/NN_<section>.ipynb``."""
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise NotFound(f"notebooks directory {notebooks_dir} does not exist", hint="--notebooks DIR")
    found = sorted((p.name[:-6], p) for p in notebooks_dir.iterdir() if _NOTEBOOK.match(p.name))
    if not found:
        raise NotFound(f"no NN_<section>.ipynb notebook in {notebooks_dir}", hint=f"ls {notebooks_dir}")
    return found
