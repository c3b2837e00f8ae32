"""The hosts and URLs the failing errors name, matched to the configured health URLs.

A health check aims at what the evidence names: ``dial tcp 10.0.4.7:5432``,
``Post "https://api.partner-b.com/hooks"``, ``lookup mail.internal: no such
host``. Each is matched to the configured health URLs (``JOBRUNBOOK_HEALTH_URLS``,
``name=url``) by host, or by the name appearing in the error; what matches
nothing is said with how to configure it, never replaced by a placeholder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Endpoint", "named_endpoints", "health_checks", "postgres_address"]

_URL = re.compile(r"\bhttps?://[^\s\"'`<>]+", re.I)
_DIAL = re.compile(r"\bdial (?:tcp|udp)[46]? (\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})\b")
_LOOKUP = re.compile(r"\blookup ([A-Za-z0-9_.-]+\.[A-Za-z0-9_-]+)(?: on \S+)?: no such host")
_HOST_PORT = re.compile(r"\b((?:[A-Za-z][A-Za-z0-9-]*\.)+[A-Za-z]{2,}):(\d{1,5})\b")
_PG_WORDS = re.compile(r"postgres|\bpq: |pgx|sql: |ledger", re.I)
_KIND_BY_PORT = {5432: "postgres", 6432: "postgres", 6379: "redis", 443: "http", 80: "http", 8080: "http"}


@dataclass(frozen=True)
class Endpoint:
    """One place a failing error names: ``host``, ``port`` (None when unsaid), ``url`` (when the error has one)."""

    host: str
    port: int | None = None
    url: str = ""
    kind: str = ""  # postgres | redis | http | "" (unknown)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host


def _guess(host: str, port: int | None, text: str, url: str) -> str:
    if url:
        return "http"
    if port in _KIND_BY_PORT:
        return _KIND_BY_PORT[port]
    return "postgres" if _PG_WORDS.search(text) else ""


def named_endpoints(errors: list[str], known: dict[str, str] | None = None) -> list[Endpoint]:
    """Every host the ``errors`` name, in order of first mention, one entry per address; ``known`` maps
    addresses (``host:port``, e.g. the probes' targets) to their kind, which wins over a guess."""
    out: dict[str, Endpoint] = {}
    known = known or {}

    def _kind(host: str, port: int | None, text: str, url: str) -> str:
        return known.get(f"{host}:{port}") or _guess(host, port, text, url)

    for text in errors:
        for m in _URL.finditer(text):
            url = m.group(0).rstrip(".,;:)")
            parts = urlsplit(url)
            if parts.hostname:
                try:
                    port = parts.port
                except ValueError:
                    port = None
                e = Endpoint(parts.hostname, port, url, _kind(parts.hostname, port, text, url))
                out.setdefault(e.address, e)
        # the address a URL's host resolved to is that host again: said once, by its name
        for m in ([] if _URL.search(text) else _DIAL.finditer(text)):
            host, port = m.group(1).strip("[]"), int(m.group(2))
            e = Endpoint(host, port, "", _kind(host, port, text, ""))
            out.setdefault(e.address, e)
        for m in _LOOKUP.finditer(text):
            e = Endpoint(m.group(1), None, "", _kind(m.group(1), None, text, ""))
            out.setdefault(e.address, e)
        for m in _HOST_PORT.finditer(text):
            if any(m.group(1) == e.host for e in out.values()):
                continue
            e = Endpoint(m.group(1), int(m.group(2)), "", _kind(m.group(1), int(m.group(2)), text, ""))
            out.setdefault(e.address, e)
    return list(out.values())


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def health_checks(errors: list[str], health_urls: dict[str, str], known: dict[str, str] | None = None
                  ) -> tuple[list[str], str]:
    """The configured health URLs the ``errors`` point to, and a note on what is missing.

    Matched: the same host as an address the errors name (HTTP ones, or any with no known kind), or the
    health URL's name in an error. The errors name no host: every configured URL (they may be what the
    tasks call). Named hosts no health URL matches are said, with how to configure one.
    """
    named = [e for e in named_endpoints(errors, known) if e.kind in ("http", "")]
    hosts = {e.host.lower() for e in named}
    text = " ".join(errors).lower()
    matched = [url for name, url in health_urls.items()
               if _host(url) in hosts or (len(name) >= 3 and name.lower() in text)]
    unmatched = [e.address for e in named if not any(_host(u) == e.host.lower() for u in matched)]
    if matched:
        note = (f"no health URL configured for {', '.join(unmatched[:3])}: add it to JOBRUNBOOK_HEALTH_URLS "
                "(name=url,...)" if unmatched else "")
        return matched[:3], note
    if named:
        return [], (f"the errors name {', '.join(e.address for e in named[:3])}, and no configured health URL is "
                    "for it: add its health URL to JOBRUNBOOK_HEALTH_URLS (name=url,...)")
    if health_urls:
        return list(health_urls.values())[:3], ("the errors name no host, so these are all the health URLs "
                                                "configured in JOBRUNBOOK_HEALTH_URLS")
    return [], ("the errors name no host and no health URL is configured: set JOBRUNBOOK_HEALTH_URLS "
                "(name=url,...) to the health URL of the API these tasks call")


def postgres_address(errors: list[str], dsn_host: str | None = None, dsn_port: str | int | None = None,
                     known: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(host, port) of the Postgres the errors dial: the configured one when they dial it, else the first
    address the errors name that is a Postgres (port 5432 or the words of a Postgres error); None if none."""
    pgs = [e for e in named_endpoints(errors, known) if e.kind == "postgres" and e.port]
    if dsn_host and any(e.host == dsn_host and str(e.port) == str(dsn_port) for e in pgs):
        return str(dsn_host), str(dsn_port)
    return (pgs[0].host, str(pgs[0].port)) if pgs else None
