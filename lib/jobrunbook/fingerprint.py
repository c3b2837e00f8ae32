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
from collections.abc import Callable
from functools import lru_cache

__all__ = ["fingerprint", "MAX_FINGERPRINT_CHARS"]

MAX_FINGERPRINT_CHARS = 300

# Each rule carries a cheap guard that is true whenever the pattern could
# match, so a message skips the rules that cannot apply (the email and host
# shapes are costly to try at every position; the aggregate of a million
# failed tasks calls this once per distinct error text). Order matters: the
# wider shapes go first so that their digits are not eaten by the number rule.


def _hex_word(m: re.Match[str]) -> str:
    word = m.group(0)
    # a run of hex letters and digits of 8+ chars, with at least one of each
    if word.isdigit() or not any(c.isdigit() for c in word):
        return word
    return "<hex>"


_RULES: list[tuple[Callable[[str], bool], re.Pattern[str], object]] = [
    # panic [/go/src/app/main.go:303]: ... -> the site varies with every build
    (lambda t: "panic [" in t, re.compile(r"panic \[[^\]\s]*:\d+\]"), "panic [<loc>]"),
    (lambda t: t.count("-") >= 4,
     re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (lambda t: t.count("-") >= 2 and ":" in t,
     re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), "<time>"),
    (lambda t: "@" in t, re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    # quoted values: "tiff", 'x', `x`
    (lambda t: '"' in t, re.compile(r'"(?:[^"\\]|\\.)*"'), '"<v>"'),
    (lambda t: "'" in t, re.compile(r"'(?:[^'\\]|\\.)*'"), "'<v>'"),
    (lambda t: "`" in t, re.compile(r"`[^`]*`"), "`<v>`"),
    # hosts: IPv4 and [IPv6] with optional port, host:port
    (lambda t: "[" in t and ":" in t, re.compile(r"\[[0-9a-fA-F:.]*:[0-9a-fA-F:.]*\](?::\d+)?"), "<addr>"),
    (lambda t: t.count(".") >= 3, re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<addr>"),
    (lambda t: "." in t and ":" in t, re.compile(r"\b((?:[a-zA-Z][\w-]*\.)+[a-zA-Z][\w-]*):\d{1,5}\b"),
     r"\1:<port>"),
    (lambda t: "0x" in t, re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (lambda t: True, re.compile(r"\b[0-9a-fA-F]{8,}\b"), _hex_word),
]
# HTTP status codes are the error, not a detail: 429 and 503 stay apart.
_STATUS = re.compile(r"\b(status(?: code)?|HTTP(?:/\d(?:\.\d)?)?|code)[ =:]+([1-5]\d\d)\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![A-Za-z<])\d+(?:\.\d+)?")
# the shapes that can match text without a digit (all-letter hex uuids, [::], emails, quotes)
_NO_DIGIT_RULES = [_RULES[i] for i in (1, 3, 4, 5, 6, 7)]
_DIGIT = re.compile(r"\d")
_KEEP = "\x00"


@lru_cache(maxsize=65536)
def _normalise(text: str) -> str:
    if _DIGIT.search(text) is not None:
        for applies, pattern, repl in _RULES:
            if applies(text):
                text = pattern.sub(repl, text)
        # protect status codes from the number rule, then restore them
        low = text.lower()
        if "status" in low or "http" in low or "code" in low:
            text = _STATUS.sub(_protect_status, text)
            text = _NUMBER.sub("<n>", text).translate(_UNPROTECT)
        else:
            text = _NUMBER.sub("<n>", text)
    else:
        for applies, pattern, repl in _NO_DIGIT_RULES:
            if applies(text):
                text = pattern.sub(repl, text)
    text = " ".join(text.split())
    if len(text) > MAX_FINGERPRINT_CHARS:
        text = text[: MAX_FINGERPRINT_CHARS - 1] + "…"
    return text


def _protect_status(m: re.Match[str]) -> str:
    return m.group(1) + " " + m.group(2).translate(_PROTECT)


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
