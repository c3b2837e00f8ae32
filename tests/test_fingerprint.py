"""The error fingerprint: variants of one error collapse, different errors stay apart."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from jobrunbook.fingerprint import MAX_FINGERPRINT_CHARS, fingerprint

octet = st.integers(0, 255)
ip = st.tuples(octet, octet, octet, octet).map(lambda t: ".".join(map(str, t)))
port = st.integers(1, 65535)
number = st.integers(0, 10**12)
word = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
path = st.lists(word, min_size=1, max_size=5).map(lambda p: "/" + "/".join(p) + ".go")
uuids = st.uuids().map(str)

TEMPLATES = [
    lambda v: f"dial tcp {v['ip']}:{v['port']}: connect: connection refused",
    lambda v: f"lookup user: dial tcp {v['ip']}:{v['port']}: connect: connection refused",
    lambda v: f"dial tcp {v['ip']}:{v['port']}: i/o timeout",
    lambda v: f"capture order {v['n']}: invalid amount_cents -{v['m']} for currency USD",
    lambda v: f"panic [{v['path']}:{v['n']}]: runtime error: index out of range [{v['m']}] with length {v['m']}",
    lambda v: f'image:resize: unsupported decoder for format "{v["word"]}"',
    lambda v: f"lookup user {v['uuid']}: record not found",
    lambda v: f"task {v['uuid']} failed after {v['n']} attempts",
    lambda v: f"unexpected status 429 Too Many Requests (request {v['uuid']})",
    lambda v: f"unexpected status 503 Service Unavailable (request {v['uuid']})",
    lambda v: f"POST https://api.partner.example:{v['port']}/v1/hooks: context deadline exceeded",
]
values = st.fixed_dictionaries({"ip": ip, "port": port, "n": number, "m": number, "path": path, "word": word,
                                "uuid": uuids})


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(range(len(TEMPLATES))), values, values)
def test_variants_of_one_error_collapse(i, a, b):
    assert fingerprint(TEMPLATES[i](a)) == fingerprint(TEMPLATES[i](b))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(range(len(TEMPLATES))), st.sampled_from(range(len(TEMPLATES))), values, values)
def test_different_errors_stay_apart(i, j, a, b):
    if i != j:
        assert fingerprint(TEMPLATES[i](a)) != fingerprint(TEMPLATES[j](b))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400) | st.binary(max_size=400))
def test_any_input_gives_a_bounded_string(error):
    fp = fingerprint(error)
    assert isinstance(fp, str) and 0 < len(fp) <= MAX_FINGERPRINT_CHARS


def test_fixed_cases():
    assert fingerprint("unexpected status 429 Too Many Requests") != fingerprint("unexpected status 503 Service Unavailable")
    assert fingerprint("HTTP 429") != fingerprint("HTTP 503")
    assert fingerprint("dial tcp 10.0.0.5:5432: connect: connection refused") != fingerprint(
        "dial tcp 10.0.0.5:5432: i/o timeout")
    assert fingerprint("context deadline exceeded") == "context deadline exceeded"
    assert fingerprint("asynq: task lease expired") == "asynq: task lease expired"
    assert fingerprint('handler not found for task "payment:capture"') == 'handler not found for task "<v>"'
    assert fingerprint(f"id {uuid.uuid4()}") == fingerprint(f"id {uuid.uuid4()}") == "id <uuid>"
    assert fingerprint("id abcdefab-abcd-abcd-abcd-abcdefabcdef gone") == "id <uuid> gone"  # all-letter hex uuid
    assert fingerprint("[::]:80 refused") == "<addr> refused"
    assert fingerprint("deadbeef12 and 12345678 and abcdefab") == "<hex> and <n> and abcdefab"
    assert fingerprint("mail to a.b@example.com bounced at 2026-11-29T19:26:26Z") == "mail to <email> bounced at <time>"
    assert fingerprint("  a \t b\n") == "a b"
    assert fingerprint(b"caf\xe9 down") == "caf\ufffd down"
    assert fingerprint(None) == fingerprint("") == fingerprint("  ") == "(no error)"
