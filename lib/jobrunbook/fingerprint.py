"""Error fingerprints: one key for every occurrence of the same error.

Task errors and log lines carry what varies between occurrences (task ids,
hosts, ports, counts, quoted values, the file:line of a panic). The
fingerprint replaces those with placeholders so that 10,000
``dial tcp 10.0.0.5:5432: connect: connection refused`` from different hosts
are one group, while different errors stay apart. The inspector and the log
source use this same function, so their groups line up.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["fingerprint", "MAX_FINGERPRINT_CHARS"]

MAX_FINGERPRINT_CHARS = 300

# Order matters: the wider shapes go first so that their digits are not
# eaten by the plain-number rule.
_RULES: list[tuple[re.Pattern[str], str]] = [
    # panic [/go/src/app/main.go:303]: ... -> the site varies with every build
    (re.compile(r"panic \[[^\]\s]*:\d+\]"), "panic [<loc>]"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), "<time>"),
    (re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    # quoted values: "tiff", 'x', `x`
    (re.compile(r'"(?:[^"\\]|\\.)*"'), '"<v>"'),
    (re.compile(r"'(?:[^'\\]|\\.)*'"), "'<v>'"),
    (re.compile(r"`[^`]*`"), "`<v>`"),
    # hosts: IPv4 and [IPv6] with optional port, host:port
    (re.compile(r"\[[0-9a-fA-F:.]*:[0-9a-fA-F:.]*\](?::\d+)?"), "<addr>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<addr>"),
    (re.compile(r"\b((?:[a-zA-Z][\w-]*\.)+[a-zA-Z][\w-]*):\d{2,5}\b"), r"\1:<port>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b"), "<hex>"),
]
# HTTP status codes are the error, not a detail: 429 and 503 stay apart.
_STATUS = re.compile(r"\b(status(?: code)?|HTTP(?:/\d(?:\.\d)?)?|code)[ =:]+([1-5]\d\d)\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![A-Za-z<])\d+(?:\.\d+)?")
_SPACE = re.compile(r"\s+")
_KEEP = "\x00"


@lru_cache(maxsize=65536)
def _normalise(text: str) -> str:
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    # protect status codes from the number rule, then restore them
    text = _STATUS.sub(lambda m: m.group(1) + " " + m.group(2).translate(_PROTECT), text)
    text = _NUMBER.sub("<n>", text)
    text = text.translate(_UNPROTECT)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > MAX_FINGERPRINT_CHARS:
        text = text[: MAX_FINGERPRINT_CHARS - 1] + "…"
    return text


_PROTECT = str.maketrans("0123456789", "\uE000\uE001\uE002\uE003\uE004\uE005\uE006\uE007\uE008\uE009")
_UNPROTECT = {v: k for k, v in _PROTECT.items()}


def fingerprint(error: str | bytes | None) -> str:
    """Return the normalised form of one error message.

    Bytes that are not UTF-8 are replaced rather than rejected, so a corrupt
    error text still lands in a group. An empty error gives ``"(no error)"``.
    """
    if error is None:
        return "(no error)"
    if isinstance(error, bytes):
        error = error.decode("utf-8", errors="replace")
    error = error.strip()
    if not error:
        return "(no error)"
    return _normalise(error[:4096])
