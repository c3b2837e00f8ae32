"""Decoding and encoding asynq's protobuf messages.

``decode_task`` never raises on bad bytes: it returns ``None`` and the caller
counts the anomaly. Unknown fields (newer asynq releases) are tolerated by
protobuf itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from jobrunbook.asynq import asynq_pb2

__all__ = ["TaskMessage", "decode_task", "encode_task", "decode_server", "decode_worker", "asynq_time"]


def asynq_time(ts: float | int | None) -> str | None:
    """Unix seconds as asynq's JSON shows a time (``2026-11-29T19:26:26Z``); 0 (unset in asynq) is None."""
    from jobrunbook.clock import iso

    return iso(int(ts), timespec="seconds") if ts else None


@dataclass(slots=True)
class TaskMessage:
    """The fields of asynq's TaskMessage (field numbers in asynq.proto)."""

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


_FIELDS = ("type", "payload", "id", "queue", "retry", "retried", "error_msg", "timeout", "deadline",
           "unique_key", "last_failed_at", "retention", "completed_at", "group_key")


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
        group_key=pb.group_key, headers=dict(pb.headers),
    )


def encode_task(msg: TaskMessage) -> bytes:
    """Serialise a TaskMessage the way asynq's Go code does (proto3, default values omitted)."""
    pb = asynq_pb2.TaskMessage(**{name: getattr(msg, name) for name in _FIELDS})
    if msg.headers:
        pb.headers.update(msg.headers)
    return pb.SerializeToString(deterministic=True)


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
