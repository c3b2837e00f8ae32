"""``report.pdf`` for the post-incident review: the report printed by headless Chromium.

The page's print stylesheet (``@media print`` in templates/report.css) keeps
tables, charts and commands whole and starts each section on a new page.
Chromium is found on PATH (``chromium``, ``chromium-browser``, ``google-chrome``)
or named by ``$JOBRUNBOOK_CHROMIUM``; without it nothing is printed and the
caller records why (the run never fails for it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["find_chromium", "print_pdf", "PdfSkipped"]

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# what a headless browser on a closed network needs not to try (and not to wait for)
_QUIET = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
          "--disable-background-networking", "--disable-component-update", "--disable-extensions")


class PdfSkipped(Exception):
    """No PDF was printed; the message says why (for status.json)."""


def find_chromium() -> str | None:
    named = os.environ.get("JOBRUNBOOK_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    return next((p for p in (shutil.which(n) for n in _NAMES) if p), None)


def print_pdf(html: str | os.PathLike, pdf: str | os.PathLike | None = None, *, timeout: float = 120.0) -> Path:
    """Print the page ``html`` to ``pdf`` (default: beside it, .pdf); PdfSkipped when it cannot."""
    html = Path(html).resolve()
    out = Path(pdf) if pdf else html.with_suffix(".pdf")
    binary = find_chromium()
    if binary is None:
        raise PdfSkipped("no Chromium on PATH (Debian: apt-get install chromium; or set $JOBRUNBOOK_CHROMIUM)")
    tmp_out = out.with_name(f".{out.name}.tmp")
    with tempfile.TemporaryDirectory(prefix="jobrunbook-pdf-", ignore_cleanup_errors=True) as profile:
        cmd = [binary, *_QUIET, f"--user-data-dir={profile}", "--no-pdf-header-footer",
               f"--print-to-pdf={tmp_out}", html.as_uri()]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout,
                                  start_new_session=True)
        except subprocess.TimeoutExpired:
            tmp_out.unlink(missing_ok=True)
            raise PdfSkipped(f"Chromium did not print the report in {timeout:.0f} s") from None
        except OSError as exc:
            raise PdfSkipped(f"Chromium could not start: {exc.strerror}") from None
    if proc.returncode != 0 or not tmp_out.is_file() or tmp_out.stat().st_size == 0:
        tmp_out.unlink(missing_ok=True)
        last = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise PdfSkipped(f"Chromium printed no PDF (exit {proc.returncode}: {last[0][:200]})")
    os.replace(tmp_out, out)
    return out
