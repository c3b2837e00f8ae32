"""The run directory's JSON records, written atomically: status.json, params.json, alert.json, findings.

A leaf module: the run engine, the findings, the report and the service all
read and write these files, and none of them has to reach into another's
package for it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobrunbook._exceptions import NotFound

__all__ = ["write_json", "read_status", "write_status"]


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_status(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "status.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"no status.json in {run_dir}", hint="is it a run directory?") from None


def write_status(run_dir: Path, status: Mapping[str, Any]) -> None:
    write_json(Path(run_dir) / "status.json", dict(status))
