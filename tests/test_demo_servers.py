"""The demo's worker is a live asynq server: asynq:servers/asynq:workers as asynq's heartbeater writes them."""

from __future__ import annotations

import re
import socket
import time

from jobrunbook.asynq import asynq_pb2
from jobrunbook.asynq.inspector import Inspector
from jobrunbook.asynq.messages import decode_task
from jobrunbook.demo import start_demo

QUEUES = ("critical", "default", "low")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TTL = 10  # asynq: twice the 5 s heartbeat interval


def active_tasks(client) -> dict[str, asynq_pb2.TaskMessage]:
    """The tasks in the queues' active lists, decoded from their hashes."""
    out = {}
    for q in QUEUES:
        for tid in client.lrange(f"asynq:{{{q}}}:active", 0, -1):
            out[tid.decode()] = decode_task(client.hget(f"asynq:{{{q}}}:t:{tid.decode()}", "msg"))
    return out


def server_keys(client) -> list[bytes]:
    return sorted(client.scan_iter("asynq:servers*")) + sorted(client.scan_iter("asynq:workers*"))


def assert_one_live_server(demo, client, now: float):
    """The inspector sees exactly the demo's worker, busy with exactly the active tasks; returns it."""
    servers = Inspector(client, clock=lambda: now).servers()
    assert len(servers) == 1, servers
    s = servers[0]
    assert (s.host, s.pid) == (socket.gethostname(), demo.log.pid)  # the pid of the worker's log lines
    assert UUID4.match(s.server_id)
    assert s.queues == {"critical": 6, "default": 3, "low": 1}
    assert (s.strict_priority, s.status) == (False, "active")
    assert s.concurrency >= 1
    active = active_tasks(client)
    assert active, "the demo should be running something"
    assert s.active_worker_count == len(active) == len(s.workers)
    assert {w.task_id: (w.task_type, w.queue) for w in s.workers} == {
        tid: (m.type, m.queue) for tid, m in active.items()}
    assert all(w.started_at <= w.deadline for w in s.workers)
    # the raw hash: WorkerInfo keyed by task id, payload and identity as asynq writes them
    raw = client.hgetall(f"asynq:workers:{{{s.host}:{s.pid}:{s.server_id}}}")
    assert {k.decode() for k in raw} == set(active)
    for tid, data in raw.items():
        w = asynq_pb2.WorkerInfo()
        w.ParseFromString(data)
        m = active[tid.decode()]
        assert (w.host, w.pid, w.server_id, w.task_id) == (s.host, s.pid, s.server_id, tid.decode())
        assert w.task_payload == m.payload
        if m.timeout:
            assert w.deadline.seconds - w.start_time.seconds in (m.timeout, m.timeout - 1)
    return s


def assert_expiry(client, s, beat: float):
    """Both zset scores are the beat's expiry (unix s), and both keys expire then: asynq's SETEX/EXPIRE ttl."""
    skey = f"asynq:servers:{{{s.host}:{s.pid}:{s.server_id}}}"
    wkey = f"asynq:workers:{{{s.host}:{s.pid}:{s.server_id}}}"
    assert client.type(skey) == b"string" and client.type(wkey) == b"hash"
    assert client.zscore("asynq:servers", skey) == client.zscore("asynq:workers", wkey) == int(beat + TTL)
    for key in (skey, wkey):
        assert abs(client.pexpiretime(key) / 1000 - (beat + TTL)) < 0.01
        assert 0 < client.pttl(key) <= TTL * 1000


def test_replayed_demo_is_one_live_server(tmp_path):
    before = time.time()
    with start_demo("mixed", 5, tmp_path, live=False, prometheus=False) as demo:
        client = demo.client()
        now = time.time()
        s = assert_one_live_server(demo, client, now)
        info = asynq_pb2.ServerInfo()
        info.ParseFromString(client.get(f"asynq:servers:{{{s.host}:{s.pid}:{s.server_id}}}"))
        assert before - 30 * 60 - 1 < info.start_time.seconds < before  # started within the window, after a crash
        assert_expiry(client, s, demo.worker.heartbeat.last_beat)
        assert before <= demo.worker.heartbeat.last_beat <= now  # the end of the window: now

        # the worker killed mid-incident left its entries to expire: stale members, keys gone, another id and pid
        members = {m.decode(): score for m, score in client.zrange("asynq:servers", 0, -1, withscores=True)}
        assert len(members) == 2
        (dead, score), = ((m, sc) for m, sc in members.items() if s.server_id not in m)
        host, pid, sid = dead[len("asynq:servers:{"):-1].split(":", 2)
        assert UUID4.match(sid) and sid != s.server_id and int(pid) != s.pid
        assert score < now and not client.exists(dead)
        crash = demo.timeline.crashes[0]
        assert crash < score <= crash + TTL
        assert client.zscore("asynq:workers", f"asynq:workers:{{{host}:{pid}:{sid}}}") == score

        # a graceful shutdown clears it all, as asynq's ClearServerState
        demo.stop_worker()
        assert Inspector(client).servers() == []
        assert not client.exists(f"asynq:servers:{{{s.host}:{s.pid}:{s.server_id}}}",
                                 f"asynq:workers:{{{s.host}:{s.pid}:{s.server_id}}}")
        assert [m.decode() for m in client.zrange("asynq:servers", 0, -1)] == [dead]  # the crashed one stays


def test_deploy_clears_the_old_server(tmp_path):
    with start_demo("bad-deploy", 2, tmp_path, live=False, prometheus=False, window_minutes=4,
                    onset_minutes=2) as demo:
        client = demo.client()
        s = assert_one_live_server(demo, client, time.time())
        # the restart for the deploy was graceful: nothing of the old server is left
        assert server_keys(client) == sorted([b"asynq:servers", f"asynq:servers:{{{s.host}:{s.pid}:{s.server_id}}}".encode(),
                                              b"asynq:workers", f"asynq:workers:{{{s.host}:{s.pid}:{s.server_id}}}".encode()])
        assert client.zcard("asynq:servers") == client.zcard("asynq:workers") == 1


def test_history_in_the_past_leaves_only_expired_entries(tmp_path):
    now = time.time() - 3600  # a window that ended an hour ago: that server's keys expired long since
    with start_demo("validation", 4, tmp_path, now=now, live=False, prometheus=False, window_minutes=2,
                    onset_minutes=1) as demo:
        client = demo.client()
        assert Inspector(client).servers() == []
        assert server_keys(client) == [b"asynq:servers", b"asynq:workers"]
        assert client.zrange("asynq:servers", 0, -1, withscores=True)[0][1] == int(now + TTL)
        # on that clock it was live (scored after now); its data is gone, as a real expired server's is
        assert client.zcount("asynq:servers", now, "+inf") == 1
        assert Inspector(client, clock=lambda: now).servers() == []


def test_live_ticks_refresh_the_server(tmp_path):
    with start_demo("rate-limited", 3, tmp_path, live=True, tick_seconds=0.2, prometheus=False,
                    window_minutes=2, onset_minutes=1) as demo:
        client = demo.client()
        first = demo.worker.heartbeat.last_beat
        deadline = time.monotonic() + 20
        seen_change = False
        while time.monotonic() < deadline:
            with demo._lock:  # between two ticks: Redis is as the last beat wrote it
                beat = demo.worker.heartbeat.last_beat
                if beat >= first + 1.5 and active_tasks(client):
                    now = time.time()
                    assert now - beat < 5
                    s = assert_one_live_server(demo, client, now)
                    assert_expiry(client, s, beat)
                    seen_change = True
                    break
            time.sleep(0.2)
        assert seen_change, "the live worker did not beat again while running a task"
        sid = s.server_id
        assert demo.worker.heartbeat.server_id == sid  # the same server: no new id per beat
        demo.stop_worker()
        time.sleep(0.5)  # no tick writes it back
        assert server_keys(client) == []
        assert Inspector(client).servers() == []
