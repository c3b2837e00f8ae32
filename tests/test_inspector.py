"""The inspector against asynq's own Inspector output (fixtures) and hand-built keys."""

from __future__ import annotations

import base64
import json

import pytest
from _asynq_helpers import generated_at, put_task, truth
from conftest import SNAPSHOTS, load_fixture_snapshot
from jobrunbook._exceptions import ConfigError, NotFound
from jobrunbook.asynq import asynq_pb2, keys
from jobrunbook.asynq.inspector import Inspector
from jobrunbook.asynq.messages import decode_task

# calendar-sensitive (daily counters, expiries, windows, deadlines): `make test-dates` runs these under faketime
pytestmark = pytest.mark.dates

T0 = 1795980000  # 2026-11-29T19:20:00Z


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_counts_memory_history_and_tasks_match_asynq(rclient, name):
    load_fixture_snapshot(rclient, name)
    want = truth(name)
    ins = Inspector(rclient, clock=lambda: generated_at(name))
    assert ins.queues() == sorted(q["queue"] for q in want["queues"])
    for q in want["queues"]:
        info = ins.queue_info(q["queue"]).to_dict()
        assert {k: info[k] for k in q["counts"]} == q["counts"]
        hist = ins.history(q["queue"], days=len(q["history"]))
        assert [{"date": d.date, "processed": d.processed, "failed": d.failed} for d in hist.days] == q["history"]
        assert (hist.processed_total, hist.failed_total) == (q["counts"]["processed_total"], q["counts"]["failed_total"])
        for state, tasks in q["tasks"].items():
            got = [t.to_dict() for t in ins.list_tasks(q["queue"], state, size=1000, raw_payload=True)]
            assert len(got) == len(tasks)
            # v0.26.0's JSON also carries the payload's bytes: the task's own, byte for byte
            shown = [k for k in (tasks[0] if tasks else {}) if k != "payload_b64"]
            assert [{k: t[k] for k in shown} for t in got] == [{k: t[k] for k in shown} for t in tasks]
            for t, w in zip(got, tasks, strict=True):
                assert t["anomaly"] is None
                if "payload_b64" in w:
                    raw = decode_task(rclient.hget(keys.task_key(q["queue"], t["id"]), "msg")).payload
                    assert base64.b64decode(w["payload_b64"]) == raw and t["payload_size"] == len(raw)
                # asynq v0.26's headers (field 15): every task of headers/ has them, read back as sent
                if name == "v0.26/headers":
                    assert set(t["headers"]) == {"tenant", "traceparent"}
                else:
                    assert t["headers"] == {}


def test_paging_get_task_and_redaction(rclient):
    load_fixture_snapshot(rclient, "mixed")
    want = truth("mixed")["queues"][0]
    ins = Inspector(rclient, clock=lambda: generated_at("mixed"))
    pages = [ins.list_tasks("critical", "retry", page=p, size=7) for p in range(5)]
    assert [t.id for page in pages for t in page] == [t["id"] for t in want["tasks"]["retry"]]
    assert [len(p) for p in pages] == [7, 7, 7, 7, 2]
    first = want["tasks"]["archived"][0]
    task = ins.get_task("critical", first["id"])
    assert task.state == "archived" and task.last_err == first["last_err"]
    assert task.archived_at is not None and task.next_process_at is None
    # redacted by default: keys kept, no value shown
    assert task.payload == {k: "***" for k in first["payload"]}
    assert "example.com" not in json.dumps(task.to_dict())
    assert ins.get_task("critical", first["id"], raw_payload=True).payload == first["payload"]
    assert task.payload_size == len(json.dumps(first["payload"], separators=(",", ":")))
    retry = want["tasks"]["retry"][0]
    assert ins.get_task("critical", retry["id"]).next_process_at == retry["next_process_at"]
    with pytest.raises(NotFound, match="not found in queue 'critical'"):
        ins.get_task("critical", "no-such-id")


def test_unknown_queue_names_the_known_ones(rclient):
    load_fixture_snapshot(rclient, "bad-deploy")
    ins = Inspector(rclient)
    for call in (lambda: ins.queue_info("emails"), lambda: ins.list_tasks("emails", "retry"),
                 lambda: ins.history("emails"), lambda: ins.health("emails"), lambda: ins.failures("emails")):
        with pytest.raises(NotFound) as exc:
            call()
        assert "'emails'" in str(exc.value) and "critical, default" in str(exc.value)
    with pytest.raises(ConfigError, match="unknown state"):
        ins.list_tasks("default", "failed")


def test_hand_built_states_latency_paused_groups(rclient):
    now = T0 + 100
    for i in range(3):
        put_task(rclient, "q", f"p{i}", "pending", pending_since=str((T0 + i) * 10**9))
    put_task(rclient, "q", "a0", "active")
    put_task(rclient, "q", "s0", "scheduled", score=T0 + 500)
    put_task(rclient, "q", "g0", "aggregating", group="batch1")
    put_task(rclient, "q", "g1", "aggregating", group="batch1")
    put_task(rclient, "q", "c0", "completed", score=T0 + 900)
    rclient.set(keys.paused_key("q"), T0)
    rclient.set(keys.processed_key("q", __import__("datetime").datetime.utcfromtimestamp(now)), 10)
    ins = Inspector(rclient, clock=lambda: now)
    info = ins.queue_info("q")
    assert (info.pending, info.active, info.scheduled, info.completed, info.aggregating, info.groups) == (3, 1, 1, 1, 2, 1)
    assert info.size == 8 and info.paused and info.processed_today == 10
    assert info.latency_seconds == pytest.approx(100)  # oldest pending (p0, the list's tail) since T0
    assert info.memory_usage_bytes > 0
    # pending in dequeue order: the first pushed first
    assert [t.id for t in ins.list_tasks("q", "pending")] == ["p0", "p1", "p2"]
    assert [t.id for t in ins.list_tasks("q", "pending", page=1, size=2)] == ["p2"]
    assert [t.id for t in ins.list_tasks("q", "aggregating", group="batch1")] == ["g0", "g1"]
    with pytest.raises(ConfigError, match="group"):
        ins.list_tasks("q", "aggregating")
    assert ins.list_tasks("q", "scheduled")[0].next_process_at == "2026-11-29T19:28:20Z"
    assert ins.get_task("q", "p1").state == "pending"


def test_history_days_ratio_and_utc(rclient):
    import datetime as dt

    now = dt.datetime(2026, 3, 2, 0, 30, tzinfo=dt.timezone.utc)
    put_task(rclient, "q", "x", "retry", score=T0)
    rclient.set(keys.processed_key("q", now), 40)
    rclient.set(keys.failed_key("q", now), 10)
    rclient.set(keys.processed_key("q", now - dt.timedelta(days=2)), 5)
    rclient.set(keys.processed_total_key("q"), 100)
    rclient.set(keys.failed_total_key("q"), 20)
    h = Inspector(rclient, clock=now.timestamp).history("q", days=3)
    assert [d.date for d in h.days] == ["2026-03-02", "2026-03-01", "2026-02-28"]
    assert [d.failure_ratio for d in h.days] == [0.25, None, 0.0]
    assert h.failure_ratio_total == 0.2
    with pytest.raises(ConfigError):
        Inspector(rclient).history("q", days=0)


def test_anomalies_in_task_lists(rclient):
    put_task(rclient, "q", "good", "retry", score=T0 + 1, error="boom")
    put_task(rclient, "q", "corrupt", "retry", score=T0 + 2, msg=b"\xff\x00garbage")
    rclient.zadd(keys.state_key("q", "retry"), {"gone": T0 + 3})
    put_task(rclient, "q", "liar", "retry", score=T0 + 4)
    rclient.hset(keys.task_key("q", "liar"), "state", "archived")
    # a real message with a field number asynq may add later (99, varint) appended
    msg = put_task(rclient, "q", "future", "retry", score=T0 + 5, error="later")
    rclient.hset(keys.task_key("q", "future"), "msg", msg + b"\x98\x06\x07")
    tasks = {t.id: t for t in Inspector(rclient).list_tasks("q", "retry")}
    assert tasks["good"].anomaly is None and tasks["good"].last_err == "boom"
    assert tasks["corrupt"].anomaly == "corrupt msg"
    assert tasks["gone"].anomaly == "missing hash"
    assert tasks["liar"].anomaly == "state field says archived"
    assert tasks["future"].anomaly is None and tasks["future"].last_err == "later"
    pb = asynq_pb2.TaskMessage.FromString(msg + b"\x98\x06\x07")
    assert pb.SerializeToString().endswith(b"\x98\x06\x07")  # the unknown field was there, and kept


def test_servers_and_workers(rclient):
    now = T0
    info = asynq_pb2.ServerInfo(host="worker-1", pid=42, server_id="sid-1", concurrency=10,
                                queues={"default": 3, "critical": 6}, status="active", active_worker_count=1)
    info.start_time.seconds = T0 - 3600
    rclient.set(keys.server_info_key("worker-1", 42, "sid-1"), info.SerializeToString())
    rclient.zadd(keys.ALL_SERVERS, {keys.server_info_key("worker-1", 42, "sid-1"): now + 30})
    stale = asynq_pb2.ServerInfo(host="old", pid=1, server_id="x")
    rclient.set(keys.server_info_key("old", 1, "x"), stale.SerializeToString())
    rclient.zadd(keys.ALL_SERVERS, {keys.server_info_key("old", 1, "x"): now - 30})
    w = asynq_pb2.WorkerInfo(host="worker-1", pid=42, server_id="sid-1", task_id="t1", task_type="report:generate",
                             queue="default")
    w.start_time.seconds = T0 - 5
    rclient.hset(keys.workers_key("worker-1", 42, "sid-1"), mapping={"t1": w.SerializeToString(), "bad": b"\xff"})
    servers = Inspector(rclient, clock=lambda: now).servers()
    assert len(servers) == 1
    s = servers[0]
    assert (s.host, s.pid, s.concurrency, s.queues, s.status) == ("worker-1", 42, 10, {"default": 3, "critical": 6}, "active")
    assert s.started_at == "2026-11-29T18:20:00Z"
    assert [(x.task_id, x.task_type, x.queue) for x in s.workers] == [("t1", "report:generate", "default")]
    assert rclient.zcard(keys.ALL_SERVERS) == 2  # read-only: the stale entry is left alone
