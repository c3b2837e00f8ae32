"""Decoding and encoding asynq's protobuf messages, keeping every byte jobrunbook does not change.

``decode_task`` never raises on bad bytes: it returns ``None`` and the caller
counts the anomaly. The decoded ``TaskMessage`` keeps the bytes it came from
(``raw``), and ``encode_task`` of such a message rewrites on the wire only the
fields whose value changed: fields asynq added later (15 ``headers`` in
v0.26), fields no release knows yet, and the order Go wrote them in (Go
writes a map's entries in random order) stay byte for byte. A message built
from scratch is serialised as Go writes it: fields in number order, default
values omitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from google.protobuf.message import DecodeError

from jobrunbook.asynq import asynq_pb2

__all__ = ["TaskMessage", "decode_task", "encode_task", "decode_server", "decode_worker", "asynq_time",
           "wire_fields", "HEADERS_FIELD"]

HEADERS_FIELD = 15  # map<string, string> headers, asynq v0.26.0+


def asynq_time(ts: float | int | None) -> str | None:
    """Unix seconds as asynq's JSON shows a time (``2026-11-29T19:26:26Z``); 0 (unset in asynq) is None."""
    from jobrunbook.clock import iso

    return iso(int(ts), timespec="seconds") if ts else None


@dataclass(slots=True)
class TaskMessage:
    """The fields of asynq's TaskMessage (field numbers in asynq.proto), and the bytes it was decoded from."""

    type: str
    id: str
    queue: str
    payload: bytes = b""
    retry: int = 0
    retried: int = 0
    error_msg: str = ""
    timeout: int = 0
    deadline: int = 0
    unique_key: str = ""
    last_failed_at: int = 0
    retention: int = 0
    completed_at: int = 0
    group_key: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes = field(default=b"", repr=False, compare=False)  # as read from Redis ("" = built here)


_FIELDS = ("type", "payload", "id", "queue", "retry", "retried", "error_msg", "timeout", "deadline",
           "unique_key", "last_failed_at", "retention", "completed_at", "group_key")
_NUMBERS = {f.name: f.number for f in asynq_pb2.TaskMessage.DESCRIPTOR.fields}


def decode_task(data: bytes | None) -> TaskMessage | None:
    """Decode the ``msg`` field of a task hash; ``None`` when the bytes are not a TaskMessage."""
    if not data:
        return None
    pb = asynq_pb2.TaskMessage()
    try:
        pb.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return None
    if not pb.type and not pb.id:
        return None
    return TaskMessage(
        type=pb.type, id=pb.id, queue=pb.queue, payload=pb.payload, retry=pb.retry, retried=pb.retried,
        error_msg=pb.error_msg, timeout=pb.timeout, deadline=pb.deadline, unique_key=pb.unique_key,
        last_failed_at=pb.last_failed_at, retention=pb.retention, completed_at=pb.completed_at,
        group_key=pb.group_key, headers=dict(pb.headers), raw=bytes(data),
    )


def _build(msg: TaskMessage) -> bytes:
    pb = asynq_pb2.TaskMessage(**{name: getattr(msg, name) for name in _FIELDS})
    if msg.headers:
        pb.headers.update(msg.headers)
    return pb.SerializeToString(deterministic=True)


def read_varint(buf: bytes, i: int) -> tuple[int, int]:
    """A protobuf varint at ``buf[i]``: (value, index after it)."""
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def wire_fields(buf: bytes) -> list[tuple[int, bytes]]:
    """The message's fields in wire order: (field number, the field's bytes, tag included).

    Raises ValueError on bytes that are not a protobuf message.
    """
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(buf)
    try:
        while i < n:
            start = i
            tag, i = read_varint(buf, i)
            wire = tag & 7
            if wire == 0:
                _, i = read_varint(buf, i)
            elif wire == 2:
                size, i = read_varint(buf, i)
                i += size
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            else:
                raise ValueError(f"wire type {wire} at byte {start}")
            if i > n or tag >> 3 == 0:
                raise ValueError(f"truncated field at byte {start}")
            out.append((tag >> 3, buf[start:i]))
    except IndexError:
        raise ValueError("truncated message") from None
    return out


def _field_bytes(name: str, msg: TaskMessage) -> bytes:
    """The wire bytes of one field of ``msg`` alone (b"" when it holds its default value)."""
    one = TaskMessage(type="", id="", queue="")
    if name == "headers":
        one.headers = msg.headers
    else:
        setattr(one, name, getattr(msg, name))
    return _build(one)


def encode_task(msg: TaskMessage) -> bytes:
    """Serialise a TaskMessage as asynq's Go code does; a decoded one keeps every byte it did not change."""
    if not msg.raw:
        return _build(msg)
    before = decode_task(msg.raw)
    try:
        parts = wire_fields(msg.raw)
    except ValueError:
        parts = None
    if before is None or parts is None:
        return _build(msg)
    changed = [f.name for f in fields(TaskMessage) if f.name != "raw" and getattr(msg, f.name) != getattr(before, f.name)]
    if not changed:
        return msg.raw
    for name in changed:
        number = _NUMBERS[name]
        new = _field_bytes(name, msg)
        at = next((k for k, (num, _) in enumerate(parts) if num == number), None)
        parts = [p for p in parts if p[0] != number]
        if not new:
            continue
        if at is None:  # absent before: where Go puts it, in field-number order
            at = next((k for k, (num, _) in enumerate(parts) if num > number), len(parts))
        parts.insert(at, (number, new))
    return b"".join(b for _, b in parts)


def decode_server(data: bytes) -> asynq_pb2.ServerInfo | None:
    pb = asynq_pb2.ServerInfo()
    try:
        pb.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return None
    return pb


def decode_worker(data: bytes) -> asynq_pb2.WorkerInfo | None:
    pb = asynq_pb2.WorkerInfo()
    try:
        pb.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError):
        return None
    return pb
